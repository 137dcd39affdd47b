//! The tests table and what the workflow writes around it: batch creation,
//! reads, transitions, detection results, the per-technique tallies kept
//! on write, score inputs (now and as of a past instant), retest chains and
//! stale tests.

use std::collections::{BTreeMap, HashMap};

use purple_api::common::v1::Outcome;
use purple_runtime::{
    WriteTx,
    db::{PerBackend, Stmt},
    packed,
    paging::Page,
    time::Micros,
};
use serde::Serialize;
use sqlx::{Any, Row};

use super::{CampaignStore, test_columns, test_row};
use crate::domain::{DetectionResult, Rejection, State, TestRow};

/// Filters of the test list ("" and None: any).
#[derive(Clone, Debug, Default)]
pub struct TestFilter {
    pub technique_id: String,
    pub state: Option<State>,
    pub campaign_id: String,
    /// Red or blue assignee.
    pub assignee_id: String,
}

const INSERT_TESTS: &str = "
    INSERT INTO tests (test_id, technique_id, template_id, campaign_id, title, state, outcome, retest_of,
                       chain_id, version, red_assignee_id, blue_assignee_id, executed_at, detected_at,
                       validated_at, red_notes, blue_notes, rejection_reason, created_at, updated_at)
    SELECT json_extract(value, '$.test_id'), json_extract(value, '$.technique_id'),
           json_extract(value, '$.template_id'), json_extract(value, '$.campaign_id'),
           json_extract(value, '$.title'), json_extract(value, '$.state'), NULL,
           json_extract(value, '$.retest_of'), json_extract(value, '$.chain_id'), 1,
           json_extract(value, '$.red_assignee_id'), json_extract(value, '$.blue_assignee_id'),
           NULL, NULL, NULL, '', '', '',
           CAST(json_extract(value, '$.created_at') AS BIGINT), CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1)";

/// Tests by id as one row ([`packed!`]), a JSON array of each test's
/// columns of [`test_columns!`].
macro_rules! tests_by_ids_packed {
    ($agg:literal, $array:literal) => {
        concat!(
            "SELECT CAST(",
            $agg,
            "(",
            $array,
            "(",
            test_columns!(),
            ")) AS TEXT) FROM tests t WHERE t.test_id IN (SELECT value FROM json_each($1))"
        )
    };
}
const TESTS_BY_IDS: PerBackend = PerBackend {
    sqlite: tests_by_ids_packed!("json_group_array", "json_array"),
    postgres: tests_by_ids_packed!("json_agg", "json_build_array"),
};

/// Tests changed since a horizon (`$1`, a change mark), as one row: their
/// ids separated by `$2` (a newline: stored ids hold no control
/// character), and the horizon to ask from next time (test_changes,
/// migration 0011). SQLite: the next mark (writers are serialised).
const TEST_CHANGES_SQLITE: &str = "
    SELECT (SELECT COALESCE(MAX(change_mark), 0) + 1 FROM test_changes),
           (SELECT string_agg(test_id, $2) FROM test_changes WHERE change_mark >= $1)";
/// PostgreSQL: the oldest transaction still running for this statement's
/// snapshot; every mark below it is final, any at or above it may commit
/// later and is asked again next time.
const TEST_CHANGES_POSTGRES: &str = "
    SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT),
           (SELECT string_agg(test_id, $2) FROM test_changes WHERE change_mark >= $1)";
const TEST_CHANGES: PerBackend = PerBackend {
    sqlite: TEST_CHANGES_SQLITE,
    postgres: TEST_CHANGES_POSTGRES,
};

/// Keyset page: `$6` 1 when the page starts after (`$7` created_at, `$8`
/// test id).
const LIST_TESTS: &str = concat!(
    "SELECT ",
    test_columns!(),
    " FROM tests t
     WHERE ($1 = '' OR t.technique_id = $1) AND ($2 = '' OR t.state = $2)
       AND ($3 = '' OR t.campaign_id = $3)
       AND ($4 = '' OR t.red_assignee_id = $4 OR t.blue_assignee_id = $4)
       AND ($6 = 0 OR t.created_at < $7 OR (t.created_at = $7 AND t.test_id < $8))
     ORDER BY t.created_at DESC, t.test_id DESC LIMIT $5"
);

/// One test, read before the transaction that changes it (whose update
/// checks the version read) or, for a retest, in it.
const TEST: &str = concat!(
    "SELECT ",
    test_columns!(),
    " FROM tests t WHERE t.test_id = $1"
);

const UPDATE_TEST: &str = "
    UPDATE tests SET state = $3, outcome = $4, executed_at = $5, detected_at = $6, validated_at = $7,
           red_notes = $8, blue_notes = $9, rejection_reason = $10, updated_at = $11,
           last_executed_at = $12, red_started_at = $13, blue_started_at = $14,
           blue_completed_at = $15, cancelled_at = $16, version = version + 1
    WHERE test_id = $1 AND version = $2";

const INSERT_REJECTION: &str = "
    INSERT INTO test_rejections (test_id, side, rejected_at, reason, actor_id, voided_executed_at,
                                 voided_completed_at, voided_outcome)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";

/// A rejected submission's detection results stop counting.
const VOID_RESULTS: &str = "DELETE FROM detection_results WHERE test_id = $1";

const SET_EFFECTIVE: &str = "
    INSERT INTO chain_effective (chain_id, technique_id, test_id, validated_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (chain_id) DO UPDATE SET technique_id = excluded.technique_id,
           test_id = excluded.test_id, validated_at = excluded.validated_at";

const UPSERT_RESULTS: &str = "
    INSERT INTO detection_results (test_id, source, rule_id, triggered, triggered_at, notes, recorded_at)
    SELECT json_extract(value, '$.test_id'), json_extract(value, '$.source'), json_extract(value, '$.rule_id'),
           CAST(json_extract(value, '$.triggered') AS BIGINT), CAST(json_extract(value, '$.triggered_at') AS BIGINT),
           json_extract(value, '$.notes'), $2
    FROM json_each($1) WHERE true
    ON CONFLICT (test_id, source, rule_id) DO UPDATE SET triggered = excluded.triggered,
           triggered_at = excluded.triggered_at, notes = excluded.notes, recorded_at = excluded.recorded_at";

const STATES_OF: &str =
    "SELECT test_id, state FROM tests WHERE test_id IN (SELECT value FROM json_each($1))";

/// Counts as they stood at `$2` (a test counts from its creation; a
/// cancelled test's updated_at is its cancellation, cancelled being final)
/// per requested technique, given the CTE `req`.
macro_rules! counts_cte {
    () => {
        "counts AS (
            SELECT technique_id,
                   SUM(CASE WHEN created_at <= $2
                             AND NOT (state = 'cancelled' AND COALESCE(cancelled_at, updated_at) <= $2)
                            THEN 1 ELSE 0 END) AS total,
                   SUM(CASE WHEN state = 'validated' AND validated_at <= $2 THEN 1 ELSE 0 END) AS validated,
                   SUM(CASE WHEN state = 'cancelled' AND COALESCE(cancelled_at, updated_at) <= $2
                            THEN 1 ELSE 0 END) AS cancelled
            FROM tests WHERE technique_id IN (SELECT technique_id FROM req)
            GROUP BY technique_id
         )"
    };
}

/// The effective tests' count and outcome tallies, over rows with an
/// `outcome` column.
macro_rules! outcome_sums {
    () => {
        "COUNT(*) AS n,
         SUM(CASE WHEN outcome = 'blocked' THEN 1 ELSE 0 END) AS blocked,
         SUM(CASE WHEN outcome = 'detected' THEN 1 ELSE 0 END) AS detected,
         SUM(CASE WHEN outcome = 'logged' THEN 1 ELSE 0 END) AS logged,
         SUM(CASE WHEN outcome = 'not_detected' THEN 1 ELSE 0 END) AS not_detected"
    };
}

/// Counts, effective-test outcomes and triggered rules per requested
/// technique, given the CTEs `req` and `eff`.
macro_rules! aggregate_ctes {
    () => {
        concat!(
            counts_cte!(),
            ",
         outcomes AS (
            SELECT technique_id, ",
            outcome_sums!(),
            ", MAX(validated_at) AS latest
            FROM eff GROUP BY technique_id
         ),
         rules AS (
            SELECT technique_id, string_agg(rule_key, ',' ORDER BY rule_key) AS rule_ids FROM (
                SELECT DISTINCT eff.technique_id, dr.source || ':' || dr.rule_id AS rule_key
                FROM eff JOIN detection_results dr ON dr.test_id = eff.test_id AND dr.triggered = 1
            ) fired GROUP BY technique_id
         )"
        )
    };
}

/// The final select over `req`, `counts`, `outcomes` and `rules`.
macro_rules! aggregate_select {
    () => {
        "SELECT req.technique_id, COALESCE(c.total, 0), COALESCE(c.validated, 0), COALESCE(c.cancelled, 0),
                COALESCE(o.n, 0), COALESCE(o.blocked, 0), COALESCE(o.detected, 0), COALESCE(o.logged, 0),
                COALESCE(o.not_detected, 0), o.latest, COALESCE(r.rule_ids, '')
         FROM req
         LEFT JOIN counts c ON c.technique_id = req.technique_id
         LEFT JOIN outcomes o ON o.technique_id = req.technique_id
         LEFT JOIN rules r ON r.technique_id = req.technique_id"
    };
}

/// Score inputs now: the tallies kept on write. `$1` technique ids.
/// Packed ([`packed!`]): one row for every technique asked.
macro_rules! aggregate_now {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT ",
            $open,
            "req.value, COALESCE(t.total, 0), COALESCE(t.validated, 0),
                COALESCE(t.cancelled, 0), COALESCE(t.effective, 0), COALESCE(t.blocked, 0),
                COALESCE(t.detected, 0), COALESCE(t.logged, 0), COALESCE(t.not_detected, 0),
                t.latest_validated_at, t.triggered_rule_ids",
            $close,
            "
             FROM (SELECT DISTINCT value FROM json_each($1)) req
             LEFT JOIN technique_tallies t ON t.technique_id = req.value"
        )
    };
}
const AGGREGATE_NOW: PerBackend = packed!(aggregate_now);

/// Moves the counts of tests and cancelled tests of techniques by the
/// deltas given (`$1` rows of technique_id, total, cancelled, sorted by
/// technique so that concurrent writers lock tally rows in one order). A
/// validation moves the rest by the trigger of migration 0014.
const BUMP_TALLIES: &str = "
    INSERT INTO technique_tallies (technique_id, total, validated, cancelled, effective, blocked, detected,
                                   logged, not_detected, latest_validated_at, triggered_rule_ids)
    SELECT json_extract(value, '$.technique_id'), CAST(json_extract(value, '$.total') AS BIGINT), 0,
           CAST(json_extract(value, '$.cancelled') AS BIGINT), 0, 0, 0, 0, 0, NULL, ''
    FROM json_each($1) WHERE true
    ON CONFLICT (technique_id) DO UPDATE SET total = technique_tallies.total + excluded.total,
           cancelled = technique_tallies.cancelled + excluded.cancelled";

/// Locks (creating if need be) the tally rows of techniques, so that the
/// rebuild that follows, new statements, sees every transaction that
/// touched them before: on PostgreSQL a validation's trigger (migration
/// 0014) and a rebuild cannot interleave. (SQLite writers are serialised
/// already.) `$1` technique ids, sorted.
const LOCK_TALLIES: &str = "
    INSERT INTO technique_tallies (technique_id, total, validated, cancelled, effective, blocked, detected,
                                   logged, not_detected, latest_validated_at, triggered_rule_ids)
    SELECT value, 0, 0, 0, 0, 0, 0, 0, 0, NULL, '' FROM json_each($1) WHERE true
    ON CONFLICT (technique_id) DO UPDATE SET technique_id = excluded.technique_id";

/// The rule counts of techniques (migration 0014), dropped before they are
/// counted again. `$1` technique ids.
const CLEAR_RULE_COUNTS: &str =
    "DELETE FROM technique_rule_counts WHERE technique_id IN (SELECT value FROM json_each($1))";

/// Per technique and rule key, how many effective tests triggered it.
/// Grouped by the key itself, as the trigger does. `$1` technique ids.
const COUNT_RULES: &str = "
    INSERT INTO technique_rule_counts (technique_id, rule_key, n)
    SELECT ce.technique_id, dr.source || ':' || dr.rule_id, COUNT(*)
    FROM chain_effective ce JOIN detection_results dr ON dr.test_id = ce.test_id AND dr.triggered = 1
    WHERE ce.technique_id IN (SELECT value FROM json_each($1))
    GROUP BY ce.technique_id, dr.source || ':' || dr.rule_id";

/// Recomputes the tallies of techniques from their tests and chains. `$1`
/// technique ids, `$2` now.
const REFRESH_TALLIES: &str = concat!(
    "WITH req AS (SELECT DISTINCT value AS technique_id FROM json_each($1)),
     eff AS (
        SELECT ce.technique_id, t.test_id, t.outcome, t.validated_at
        FROM chain_effective ce JOIN tests t ON t.test_id = ce.test_id
        WHERE ce.technique_id IN (SELECT technique_id FROM req)
     ),",
    aggregate_ctes!(),
    " INSERT INTO technique_tallies (technique_id, total, validated, cancelled, effective, blocked, detected,
                                     logged, not_detected, latest_validated_at, triggered_rule_ids) ",
    aggregate_select!(),
    " WHERE true
     ON CONFLICT (technique_id) DO UPDATE SET total = excluded.total, validated = excluded.validated,
         cancelled = excluded.cancelled, effective = excluded.effective, blocked = excluded.blocked,
         detected = excluded.detected, logged = excluded.logged, not_detected = excluded.not_detected,
         latest_validated_at = excluded.latest_validated_at, triggered_rule_ids = excluded.triggered_rule_ids"
);

/// The select list of a past as_of's score inputs, over `req`, `counts`
/// (`c`) and the chain history's outcomes (`o`).
/// Opened and closed as [`packed!`] does on each backend.
macro_rules! as_of_select {
    ($open:literal, $close:literal) => {
        concat!(
            " SELECT ",
            $open,
            "req.technique_id, COALESCE(c.total, 0),
                COALESCE(c.validated, 0), COALESCE(c.cancelled, 0), COALESCE(o.n, 0),
                COALESCE(o.blocked, 0), COALESCE(o.detected, 0), COALESCE(o.logged, 0),
                COALESCE(o.not_detected, 0), o.latest, COALESCE(o.rule_ids, '')",
            $close,
            "
          FROM req LEFT JOIN counts c ON c.technique_id = req.technique_id "
        )
    };
}

/// The chain history rows effective at `$2`, aggregated: outcome tallies,
/// the latest validation and every row's triggered rules (repeated across
/// tests: the caller keeps each once). Follows a SELECT; completed by a
/// technique condition.
macro_rules! history_outcomes {
    () => {
        concat!(
            outcome_sums!(),
            ", MAX(valid_from) AS latest, string_agg(NULLIF(rule_keys, ''), ',') AS rule_ids
             FROM chain_history
             WHERE valid_from <= $2 AND (valid_to IS NULL OR valid_to > $2) AND technique_id "
        )
    };
}

/// Score inputs as of a past instant, from the chains' history kept on
/// write (migration 0012): each chain's row whose interval holds `$2`.
/// `$1` technique ids, `$2` as_of. SQLite: one grouped pass over the
/// covering index.
const AGGREGATE_AS_OF_SQLITE: &str = concat!(
    "WITH req AS (SELECT DISTINCT value AS technique_id FROM json_each($1)),",
    counts_cte!(),
    ", outcomes AS (SELECT technique_id, ",
    history_outcomes!(),
    "IN (SELECT technique_id FROM req) GROUP BY technique_id)",
    as_of_select!("CAST(json_group_array(json_array(", ")) AS TEXT)"),
    "LEFT JOIN outcomes o ON o.technique_id = req.technique_id"
);

/// PostgreSQL: the same per technique (LATERAL), which spares a sort of
/// every row's rule keys by technique (82 → 52 ms at 50,000 tests).
const AGGREGATE_AS_OF_POSTGRES: &str = concat!(
    "WITH req AS (SELECT DISTINCT value AS technique_id FROM json_each($1)),",
    counts_cte!(),
    as_of_select!("", ""),
    "LEFT JOIN LATERAL (SELECT ",
    history_outcomes!(),
    "= req.technique_id) o ON true"
);
const AGGREGATE_AS_OF: PerBackend = PerBackend {
    sqlite: AGGREGATE_AS_OF_SQLITE,
    postgres: AGGREGATE_AS_OF_POSTGRES,
};

const RETEST_CHAIN: &str = concat!(
    "SELECT ",
    test_columns!(),
    ", (SELECT ce.test_id FROM chain_effective ce WHERE ce.chain_id = t.chain_id)
     FROM tests t WHERE t.chain_id = (SELECT x.chain_id FROM tests x WHERE x.test_id = $1)
     ORDER BY t.created_at, t.test_id"
);

/// Keyset page: `$3` 1 when the page starts after (`$4` validated_at, `$5`
/// chain id).
const STALE_TESTS: &str = concat!(
    "SELECT ",
    test_columns!(),
    " FROM chain_effective ce JOIN tests t ON t.test_id = ce.test_id
     WHERE ce.validated_at < $1
       AND ($3 = 0 OR ce.validated_at > $4 OR (ce.validated_at = $4 AND ce.chain_id > $5))
     ORDER BY ce.validated_at, ce.chain_id LIMIT $2"
);

const TRIGGERED_RULES_OF: &str = "
    SELECT test_id, source, rule_id FROM detection_results
    WHERE triggered = 1 AND test_id IN (SELECT value FROM json_each($1)) ORDER BY test_id, source, rule_id";

const RESULTS_OF: &str = "
    SELECT test_id, source, rule_id, triggered, triggered_at, notes FROM detection_results
    WHERE test_id IN (SELECT value FROM json_each($1)) ORDER BY test_id, source, rule_id";

/// A new test row as the batch insert reads it.
#[derive(Serialize)]
pub struct NewTestRow<'a> {
    pub test_id: &'a str,
    pub technique_id: &'a str,
    pub template_id: &'a str,
    pub campaign_id: Option<&'a str>,
    pub title: &'a str,
    pub state: &'static str,
    pub retest_of: Option<&'a str>,
    pub chain_id: &'a str,
    pub red_assignee_id: &'a str,
    pub blue_assignee_id: &'a str,
    pub created_at: Micros,
}

impl<'a> From<&'a TestRow> for NewTestRow<'a> {
    fn from(t: &'a TestRow) -> Self {
        NewTestRow {
            test_id: &t.test_id,
            technique_id: &t.technique_id,
            template_id: &t.template_id,
            campaign_id: t.campaign_id.as_deref(),
            title: &t.title,
            state: t.state.key(),
            retest_of: t.retest_of.as_deref(),
            chain_id: &t.chain_id,
            red_assignee_id: &t.red_assignee_id,
            blue_assignee_id: &t.blue_assignee_id,
            created_at: t.created_at,
        }
    }
}

/// How a write moves a technique's counts of tests and of cancelled ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TallyDelta {
    pub total: i64,
    pub cancelled: i64,
}

impl TallyDelta {
    /// The deltas of new tests: one more test each, per technique.
    pub fn of_new_tests(tests: &[TestRow]) -> BTreeMap<&str, TallyDelta> {
        let mut deltas: BTreeMap<&str, TallyDelta> = BTreeMap::new();
        for t in tests {
            deltas.entry(&t.technique_id).or_default().total += 1;
        }
        deltas
    }
}

#[derive(Serialize)]
struct BumpRow<'a> {
    technique_id: &'a str,
    total: i64,
    cancelled: i64,
}

#[derive(Serialize)]
struct ResultRow<'a> {
    test_id: &'a str,
    source: &'a str,
    rule_id: &'a str,
    triggered: i64,
    triggered_at: Option<Micros>,
    notes: &'a str,
}

/// One technique's test side of the score.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregate {
    pub technique_id: String,
    pub total: i64,
    pub validated: i64,
    pub cancelled: i64,
    pub effective: i64,
    pub blocked: i64,
    pub detected: i64,
    pub logged: i64,
    pub not_detected: i64,
    pub latest_validated_at: Option<Micros>,
    /// Distinct places in [`Aggregates::rules`], in the order of the
    /// rules' keys.
    pub triggered_rules: Vec<u32>,
}

/// The test sides of a set of techniques and the rules they triggered,
/// each rule once however many techniques name it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregates {
    pub rows: Vec<Aggregate>,
    /// (source, rule id); source "" for results that named none.
    pub rules: Vec<(String, String)>,
}

/// Places rule keys in one table, allocating only for a key not seen yet.
#[derive(Default)]
struct RulePlaces {
    places: HashMap<String, u32>,
    rules: Vec<(String, String)>,
}

impl RulePlaces {
    /// The distinct rules of a comma-separated list of rule keys, as places,
    /// in the keys' order.
    fn of_keys(&mut self, keys: &str) -> Vec<u32> {
        let mut keys: Vec<&str> = keys.split(',').filter(|k| !k.is_empty()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter().map(|key| self.place(key)).collect()
    }

    fn place(&mut self, key: &str) -> u32 {
        if let Some(&place) = self.places.get(key) {
            return place;
        }
        let place = self.rules.len() as u32;
        self.rules.push(split_rule_key(key));
        self.places.insert(key.to_owned(), place);
        place
    }
}

/// A tally's rule key (`source:rule_id`), or a bare id written before
/// sources were kept, as (source, rule id).
fn split_rule_key(key: &str) -> (String, String) {
    match key.split_once(':') {
        Some((source, id)) => (source.to_owned(), id.to_owned()),
        None => (String::new(), key.to_owned()),
    }
}

impl CampaignStore {
    /// Inserts tests in one statement.
    pub async fn insert_tests(
        &self,
        tx: &mut WriteTx,
        tests: &[TestRow],
    ) -> Result<(), sqlx::Error> {
        if tests.is_empty() {
            return Ok(());
        }
        let rows: Vec<NewTestRow> = tests.iter().map(NewTestRow::from).collect();
        self.db
            .stmt(INSERT_TESTS)
            .bind_rows(&rows)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Tests by id, in one statement.
    pub async fn tests_by_ids(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, TestRow>, sqlx::Error> {
        let rows: Vec<Vec<serde_json::Value>> = self
            .db
            .stmt_for(TESTS_BY_IDS)
            .bind_ids(ids)
            .fetch_one_packed(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| super::test_row_json(row).map(|t| (t.test_id.clone(), t)))
            .collect()
    }

    /// The tests changed at or after `horizon` (committed and visible now)
    /// and the horizon to ask from next time, in one statement. A horizon
    /// of `i64::MAX` asks only where changes stand.
    pub async fn test_changes(&self, horizon: i64) -> Result<(i64, Vec<String>), sqlx::Error> {
        let row = self
            .db
            .stmt_for(TEST_CHANGES)
            .bind(horizon)
            .bind("\n".to_owned())
            .fetch_one(self.db.pool())
            .await?;
        let next: i64 = row.try_get(0)?;
        let changed: Option<String> = row.try_get(1)?;
        Ok((
            next,
            changed
                .as_deref()
                .unwrap_or("")
                .split('\n')
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }

    /// A filtered page of tests, newest first.
    pub async fn list_tests(
        &self,
        filter: &TestFilter,
        page: &Page,
    ) -> Result<Vec<TestRow>, sqlx::Error> {
        self.db
            .stmt(LIST_TESTS)
            .bind(filter.technique_id.clone())
            .bind(filter.state.map_or("", State::key))
            .bind(filter.campaign_id.clone())
            .bind(filter.assignee_id.clone())
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(test_row)
            .collect()
    }

    /// A test, read on the pool before the transaction whose versioned
    /// update refuses a concurrent change, or in the transaction itself.
    pub async fn test<'c, E>(
        &self,
        executor: E,
        test_id: &str,
    ) -> Result<Option<TestRow>, sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Any>,
    {
        self.db
            .stmt(TEST)
            .bind(test_id.to_owned())
            .fetch_optional(executor)
            .await?
            .as_ref()
            .map(test_row)
            .transpose()
    }

    /// Writes the test's new state if its version is still `version`;
    /// false when a concurrent transition got there first.
    pub async fn update_test(
        &self,
        tx: &mut WriteTx,
        after: &TestRow,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = self
            .db
            .stmt(UPDATE_TEST)
            .bind(after.test_id.clone())
            .bind(version)
            .bind(after.state.key())
            .bind(after.outcome.and_then(Outcome::key))
            .bind(after.executed_at)
            .bind(after.detected_at)
            .bind(after.validated_at)
            .bind(after.red_notes.clone())
            .bind(after.blue_notes.clone())
            .bind(after.rejection_reason.clone())
            .bind(after.updated_at)
            .bind(after.last_executed_at)
            .bind(after.milestones.red_started_at)
            .bind(after.milestones.blue_started_at)
            .bind(after.milestones.blue_completed_at)
            .bind(after.milestones.cancelled_at)
            .execute(&mut *tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a rejection.
    pub async fn insert_rejection(
        &self,
        tx: &mut WriteTx,
        r: &Rejection,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(INSERT_REJECTION)
            .bind(r.test_id.clone())
            .bind(r.side.clone())
            .bind(r.rejected_at)
            .bind(r.reason.clone())
            .bind(r.actor_id.clone())
            .bind(r.voided_executed_at)
            .bind(r.voided_completed_at)
            .bind(r.voided_outcome.and_then(Outcome::key))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Deletes a test's detection results (its submission was rejected).
    pub async fn void_results(&self, tx: &mut WriteTx, test_id: &str) -> Result<(), sqlx::Error> {
        self.db
            .stmt(VOID_RESULTS)
            .bind(test_id.to_owned())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Makes a validated test its chain's effective test.
    pub async fn set_effective(&self, tx: &mut WriteTx, test: &TestRow) -> Result<(), sqlx::Error> {
        self.db
            .stmt(SET_EFFECTIVE)
            .bind(test.chain_id.clone())
            .bind(test.technique_id.clone())
            .bind(test.test_id.clone())
            .bind(test.validated_at.unwrap_or(test.updated_at))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Upserts detection results in one statement.
    pub async fn upsert_results(
        &self,
        tx: &mut WriteTx,
        results: &[DetectionResult],
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        if results.is_empty() {
            return Ok(());
        }
        let rows: Vec<ResultRow> = results
            .iter()
            .map(|r| ResultRow {
                test_id: &r.test_id,
                source: &r.source,
                rule_id: &r.rule_id,
                triggered: i64::from(r.triggered),
                triggered_at: r.triggered_at,
                notes: &r.notes,
            })
            .collect();
        self.db
            .stmt(UPSERT_RESULTS)
            .bind_rows(&rows)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// The states of tests, by id.
    pub async fn states_of(
        &self,
        tx: &mut WriteTx,
        ids: &[String],
    ) -> Result<BTreeMap<String, String>, sqlx::Error> {
        self.db
            .stmt(STATES_OF)
            .bind_ids(ids)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// The statement that moves the counts of tests (`total`) and of
    /// cancelled tests of techniques by the deltas given (a new test, a
    /// retest or a cancellation changes nothing else in a tally), for a
    /// transaction to run with its commit ([`WriteTx::commit_with`]); none
    /// when there is nothing to move.
    pub fn bump_tallies_write(&self, deltas: &BTreeMap<&str, TallyDelta>) -> Option<Stmt> {
        if deltas.is_empty() {
            return None;
        }
        let rows: Vec<BumpRow> = deltas
            .iter()
            .map(|(technique_id, d)| BumpRow {
                technique_id,
                total: d.total,
                cancelled: d.cancelled,
            })
            .collect();
        Some(self.db.stmt(BUMP_TALLIES).bind_rows(&rows))
    }

    /// Recomputes the tallies and rule counts of techniques from their
    /// tests and chains inside the caller's write transaction, for writes
    /// that replace tests wholesale (the history import): four statements
    /// whatever the number of techniques.
    pub async fn refresh_tallies(
        &self,
        tx: &mut WriteTx,
        technique_ids: &[String],
    ) -> Result<(), sqlx::Error> {
        if technique_ids.is_empty() {
            return Ok(());
        }
        let mut ids = technique_ids.to_vec();
        ids.sort();
        ids.dedup();
        self.db
            .stmt(LOCK_TALLIES)
            .bind_ids(&ids)
            .execute(&mut *tx)
            .await?;
        for sql in [CLEAR_RULE_COUNTS, COUNT_RULES] {
            self.db.stmt(sql).bind_ids(&ids).execute(&mut *tx).await?;
        }
        // Every validation counts "now": a transaction that began before
        // another's validation but refreshes after it must still count it.
        self.db
            .stmt(REFRESH_TALLIES)
            .bind_ids(&ids)
            .bind(i64::MAX)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Score inputs per technique: now (the tallies kept on write) or as of
    /// a past instant (ranked at read time).
    pub async fn aggregate(
        &self,
        technique_ids: &[String],
        as_of: Option<Micros>,
    ) -> Result<Aggregates, sqlx::Error> {
        let stmt = match as_of {
            None => self.db.stmt_for(AGGREGATE_NOW).bind_ids(technique_ids),
            Some(at) => self
                .db
                .stmt_for(AGGREGATE_AS_OF)
                .bind_ids(technique_ids)
                .bind(at),
        };
        type Columns = (
            String,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            Option<i64>,
            Option<String>,
        );
        let mut places = RulePlaces::default();
        let rows = stmt
            .fetch_packed::<Columns, _>(self.db.pool())
            .await?
            .into_iter()
            .map(|c| Aggregate {
                technique_id: c.0,
                total: c.1,
                validated: c.2,
                cancelled: c.3,
                effective: c.4,
                blocked: c.5,
                detected: c.6,
                logged: c.7,
                not_detected: c.8,
                latest_validated_at: c.9.map(Micros::from_micros),
                triggered_rules: places.of_keys(c.10.as_deref().unwrap_or("")),
            })
            .collect();
        Ok(Aggregates {
            rows,
            rules: places.rules,
        })
    }

    /// The chain of a test, root first, and its effective test.
    pub async fn retest_chain(
        &self,
        test_id: &str,
    ) -> Result<(Vec<TestRow>, Option<String>), sqlx::Error> {
        let rows = self
            .db
            .stmt(RETEST_CHAIN)
            .bind(test_id.to_owned())
            .fetch_all(self.db.pool())
            .await?;
        let effective = match rows.first() {
            Some(row) => row.try_get(super::TEST_COLUMN_COUNT)?,
            None => None,
        };
        Ok((
            rows.iter().map(test_row).collect::<Result<_, _>>()?,
            effective,
        ))
    }

    /// Effective tests validated before `older_than`, oldest first.
    pub async fn stale_tests(
        &self,
        older_than: Micros,
        page: &Page,
    ) -> Result<Vec<TestRow>, sqlx::Error> {
        self.db
            .stmt(STALE_TESTS)
            .bind(older_than)
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(test_row)
            .collect()
    }

    /// Triggered rules per test, as (source, rule id).
    pub async fn triggered_rules(
        &self,
        test_ids: &[String],
    ) -> Result<BTreeMap<String, Vec<(String, String)>>, sqlx::Error> {
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for row in self
            .db
            .stmt(TRIGGERED_RULES_OF)
            .bind_ids(test_ids)
            .fetch_all(self.db.pool())
            .await?
        {
            out.entry(row.try_get(0)?)
                .or_default()
                .push((row.try_get(1)?, row.try_get(2)?));
        }
        Ok(out)
    }

    /// Every detection result of tests, by test.
    pub async fn results_of(
        &self,
        test_ids: &[String],
    ) -> Result<BTreeMap<String, Vec<DetectionResult>>, sqlx::Error> {
        let mut out: BTreeMap<String, Vec<DetectionResult>> = BTreeMap::new();
        for row in self
            .db
            .stmt(RESULTS_OF)
            .bind_ids(test_ids)
            .fetch_all(self.db.pool())
            .await?
        {
            let result = DetectionResult {
                test_id: row.try_get(0)?,
                source: row.try_get(1)?,
                rule_id: row.try_get(2)?,
                triggered: row.try_get::<i64, _>(3)? != 0,
                triggered_at: row.try_get(4)?,
                notes: row.try_get(5)?,
            };
            out.entry(result.test_id.clone()).or_default().push(result);
        }
        Ok(out)
    }
}
