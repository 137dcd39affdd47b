//! All SQL of the metrics service. Each metric is one statement, the same
//! text on SQLite and PostgreSQL: MTTD, MTTR and the trend over the
//! milestones kept per test and per remediation, rejection rates over the
//! marks kept per test (both refreshed in the transaction that appends
//! their events) and, without a filter, over the marks' per-day counts
//! (kept by a trigger on the log, metrics migration 0007).
//!
//! Every metric statement but the unfiltered rejection rates
//! (`REJECTIONS_BY_DAY`, its own binds) binds: `$1` window start, `$2`
//! window end (exclusive), `$3` campaign id or '', `$4` technique ids as a
//! JSON array, `$5` 1 when the technique filter applies. Durations are computed in
//! microseconds and returned in seconds as double precision. For the
//! percentiles a statement returns each group's durations in ascending
//! order, one sort inside one aggregate (`string_agg … ORDER BY`, the same
//! text on both backends); the continuous percentiles are taken from that
//! list (`domain::DurationStats::of_sorted`). Window functions over every
//! group's rows, the first way, were SQLite's largest cost at the year
//! scale (it materialises them).

use std::collections::BTreeSet;

use purple_runtime::{
    Database,
    db::Stmt,
    paging::Page,
    time::{MICROS_PER_DAY, Micros},
};
use sqlx::{Row, any::AnyRow};

use crate::domain::{DurationStats, Filter, NewEvent, Rejections, Week};

/// The filter on campaign and techniques, for events aliased `e`.
macro_rules! event_filter {
    () => {
        " AND ($3 = '' OR e.campaign_id = $3) \
          AND ($5 = 0 OR e.technique_id IN (SELECT value FROM json_each($4)))"
    };
}

/// Count, mean (seconds) and the ascending durations (microseconds,
/// comma-separated) of `m` per group `g` of the CTE `durations`.
macro_rules! duration_stats {
    () => {
        "stats AS (
            SELECT g, COUNT(*) AS n, AVG(CAST(m AS DOUBLE PRECISION) / 1000000.0) AS mean,
                   string_agg(CAST(m AS TEXT), ',' ORDER BY m) AS sorted
            FROM durations WHERE m IS NOT NULL GROUP BY g
        )"
    };
}

const INSERT_EVENTS: &str = "
    INSERT INTO events (event_id, kind, occurred_at, recorded_at, test_id, technique_id,
                        campaign_id, remediation_id, outcome, side, actor_id, attributes)
    SELECT json_extract(value, '$.event_id'), json_extract(value, '$.kind'),
           CAST(json_extract(value, '$.occurred_at') AS BIGINT), $2,
           json_extract(value, '$.test_id'), json_extract(value, '$.technique_id'),
           json_extract(value, '$.campaign_id'), json_extract(value, '$.remediation_id'),
           json_extract(value, '$.outcome'), json_extract(value, '$.side'),
           json_extract(value, '$.actor_id'), json_extract(value, '$.attributes')
    FROM json_each($1)
    WHERE true
    ON CONFLICT (event_id) DO NOTHING";

/// The milestones of the tests the appended events (`$1`, their test ids)
/// touch, rebuilt from the log: the latest of each kind by position in the
/// log (docs/design.md §5). Rows are written in id order, so two appends
/// touching the same tests lock them in the same order.
const REFRESH_TESTS: &str = "
    INSERT INTO test_milestones (test_id, technique_id, campaign_id, validated_at, hit, detect_micros)
    SELECT test_id,
           MAX(CASE WHEN kind = 'test.validated' THEN technique_id END),
           MAX(CASE WHEN kind = 'test.validated' THEN campaign_id END),
           MAX(CASE WHEN kind = 'test.validated' THEN occurred_at END),
           COALESCE(MAX(CASE WHEN kind = 'test.validated' AND outcome IN ('blocked', 'detected') THEN 1 END), 0),
           MAX(CASE WHEN kind = 'test.detected' THEN occurred_at END)
             - MAX(CASE WHEN kind = 'test.red_executed' THEN occurred_at END)
    FROM (
        SELECT test_id, kind, occurred_at, outcome, technique_id, campaign_id,
               ROW_NUMBER() OVER (PARTITION BY test_id, kind ORDER BY seq DESC) AS rn
        FROM events
        WHERE test_id IN (SELECT value FROM json_each($1))
          AND kind IN ('test.validated', 'test.detected', 'test.red_executed')
    ) latest
    WHERE rn = 1
    GROUP BY test_id
    ORDER BY test_id
    ON CONFLICT (test_id) DO UPDATE SET
        technique_id = excluded.technique_id, campaign_id = excluded.campaign_id,
        validated_at = excluded.validated_at, hit = excluded.hit,
        detect_micros = excluded.detect_micros";

/// The marks of the tests the appended events (`$1`) touch, dropped and
/// rebuilt from the log (two statements).
const DROP_MARKS: &str =
    "DELETE FROM test_marks WHERE test_id IN (SELECT value FROM json_each($1))";
const INSERT_MARKS: &str = "
    INSERT INTO test_marks (test_id, mark, occurred_at, seq, prev_at, technique_id, campaign_id)
    SELECT test_id, mark, occurred_at, seq,
           LAG(occurred_at) OVER (PARTITION BY test_id, mark ORDER BY occurred_at, seq),
           technique_id, campaign_id
    FROM (
        SELECT test_id, substr(kind, 6) AS mark, occurred_at, seq, technique_id, campaign_id
        FROM events
        WHERE test_id IN (SELECT value FROM json_each($1))
          AND kind IN ('test.validated', 'test.rejected', 'test.red_executed', 'test.blue_completed')
        UNION ALL
        SELECT test_id, 'rejected:' || side, occurred_at, seq, technique_id, campaign_id
        FROM events
        WHERE test_id IN (SELECT value FROM json_each($1))
          AND kind = 'test.rejected' AND side IN ('red', 'blue')
    ) marks";

/// The milestones of the remediations the appended events (`$1`) touch.
const REFRESH_REMEDIATIONS: &str = "
    INSERT INTO remediation_milestones (remediation_id, technique_id, campaign_id, opened_at, completed_at)
    SELECT remediation_id,
           MAX(CASE WHEN kind = 'remediation.completed' THEN technique_id END),
           MAX(CASE WHEN kind = 'remediation.completed' THEN campaign_id END),
           MAX(CASE WHEN kind = 'remediation.opened' THEN occurred_at END),
           MAX(CASE WHEN kind = 'remediation.completed' THEN occurred_at END)
    FROM events
    WHERE remediation_id IN (SELECT value FROM json_each($1))
      AND kind IN ('remediation.opened', 'remediation.completed')
    GROUP BY remediation_id
    ORDER BY remediation_id
    ON CONFLICT (remediation_id) DO UPDATE SET
        technique_id = excluded.technique_id, campaign_id = excluded.campaign_id,
        opened_at = excluded.opened_at, completed_at = excluded.completed_at";

/// Over tests validated in the window with outcome blocked or detected:
/// the milestones (aliased `e` for the filter) hold each one's detect time.
const MTTD: &str = concat!(
    "WITH durations AS (
        SELECT 0 AS g, e.detect_micros AS m
        FROM test_milestones e
        WHERE e.validated_at >= $1 AND e.validated_at < $2 AND e.hit = 1",
    event_filter!(),
    "),",
    duration_stats!(),
    "SELECT COALESCE(MAX(n), 0) AS n, MAX(mean) AS mean, MAX(sorted) AS sorted FROM stats"
);

/// Over remediations completed in the window: completed minus opened.
const MTTR: &str = concat!(
    "WITH durations AS (
        SELECT 0 AS g, e.completed_at - e.opened_at AS m
        FROM remediation_milestones e
        WHERE e.completed_at >= $1 AND e.completed_at < $2",
    event_filter!(),
    "),",
    duration_stats!(),
    "SELECT COALESCE(MAX(n), 0) AS n, MAX(mean) AS mean, MAX(sorted) AS sorted FROM stats"
);

/// The marks a rejection rate counts.
macro_rules! rejection_marks {
    () => {
        "('validated', 'rejected', 'rejected:red', 'red_executed', 'rejected:blue', 'blue_completed')"
    };
}

/// Distinct tests per mark in a window without a filter: every mark in the
/// window less the repeats (marks whose previous one for their test is in
/// the window too; metrics migration 0007). The marks in the window are the
/// kept counts of the whole days in it (`$3` first day, `$4` day after the
/// last) and the marks of its partial ends (`[$1, $5)` and `[$6, $2)`),
/// each a range of an index. A mark with none has no row.
const REJECTIONS_BY_DAY: &str = concat!(
    "SELECT mark, CAST(SUM(n) AS BIGINT) FROM (
        SELECT mark, n FROM mark_days
        WHERE mark IN ",
    rejection_marks!(),
    " AND day >= $3 AND day < $4
        UNION ALL
        SELECT mark, COUNT(*) FROM test_marks
        WHERE mark IN ",
    rejection_marks!(),
    " AND occurred_at >= $1 AND occurred_at < $5
        GROUP BY mark
        UNION ALL
        SELECT mark, COUNT(*) FROM test_marks
        WHERE mark IN ",
    rejection_marks!(),
    " AND occurred_at >= $6 AND occurred_at < $2
        GROUP BY mark
        UNION ALL
        SELECT mark, -COUNT(*) FROM test_marks
        WHERE mark IN ",
    rejection_marks!(),
    " AND prev_at >= $1 AND prev_at < $2 AND occurred_at < $2
        GROUP BY mark
    ) parts
    GROUP BY mark"
);

/// Distinct tests per mark in a filtered window: the marks whose previous
/// instant for their test is before the window, counted per mark (one
/// index range each); a mark with none has no row.
const REJECTIONS: &str = concat!(
    "SELECT e.mark, COUNT(*)
     FROM test_marks e
     WHERE e.mark IN ",
    rejection_marks!(),
    " AND e.occurred_at >= $1 AND e.occurred_at < $2 AND (e.prev_at IS NULL OR e.prev_at < $1)",
    event_filter!(),
    " GROUP BY e.mark"
);

/// `$6` is the Monday 00:00 UTC of the window's first week.
const TREND: &str = concat!(
    "WITH RECURSIVE weeks (ws) AS (
        SELECT CAST($6 AS BIGINT)
        UNION ALL
        SELECT ws + 604800000000 FROM weeks WHERE ws + 604800000000 < $2
    ),
    placed AS (
        SELECT e.hit, e.detect_micros,
               $6 + ((e.validated_at - $6) / 604800000000) * 604800000000 AS g
        FROM test_milestones e
        WHERE e.validated_at >= $1 AND e.validated_at < $2",
    event_filter!(),
    "),
    durations AS (
        SELECT g, detect_micros AS m FROM placed WHERE hit = 1
    ),",
    duration_stats!(),
    ",
    counts AS (
        SELECT g, COUNT(*) AS validated, CAST(SUM(hit) AS BIGINT) AS hits FROM placed GROUP BY g
    ),
    prior AS (
        SELECT COUNT(*) AS n FROM test_milestones e
        WHERE e.validated_at < $1",
    event_filter!(),
    ")
    SELECT w.ws,
           COALESCE(c.validated, 0) AS validated,
           (SELECT n FROM prior)
             + CAST(SUM(COALESCE(c.validated, 0)) OVER (ORDER BY w.ws) AS BIGINT) AS cumulative,
           COALESCE(c.hits, 0) AS hits,
           COALESCE(s.n, 0) AS n, s.mean, s.sorted
    FROM weeks w
    LEFT JOIN counts c ON c.g = w.ws
    LEFT JOIN stats s ON s.g = w.ws
    ORDER BY w.ws"
);

/// Keyset page: `$7` 1 when the page starts after (`$8` occurred_at,
/// `$9` seq).
const AUDIT: &str = "
    SELECT event_id, kind, occurred_at, test_id, technique_id, campaign_id, remediation_id,
           outcome, side, actor_id, attributes, seq
    FROM events
    WHERE ($1 = '' OR test_id = $1) AND ($2 = '' OR technique_id = $2) AND ($3 = '' OR kind = $3)
      AND occurred_at >= $4 AND occurred_at < $5
      AND ($7 = 0 OR occurred_at < $8 OR (occurred_at = $8 AND seq < $9))
    ORDER BY occurred_at DESC, seq DESC
    LIMIT $6";

/// A stored event, as the audit trail returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Deduplication key.
    pub event_id: String,
    /// Wire name.
    pub kind: String,
    /// When.
    pub occurred_at: Micros,
    /// The test.
    pub test_id: Option<String>,
    /// The technique.
    pub technique_id: Option<String>,
    /// The campaign.
    pub campaign_id: Option<String>,
    /// The remediation.
    pub remediation_id: Option<String>,
    /// Outcome key.
    pub outcome: Option<String>,
    /// Side.
    pub side: Option<String>,
    /// Actor.
    pub actor_id: Option<String>,
    /// JSON object text.
    pub attributes: String,
    /// Position in the log: the tie-breaker of the audit order.
    pub seq: i64,
}

/// Audit trail filters.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Test id or ''.
    pub test_id: String,
    /// Technique id or ''.
    pub technique_id: String,
    /// Kind or ''.
    pub kind: String,
    /// Inclusive start.
    pub from: Micros,
    /// Exclusive end.
    pub to: Micros,
}

/// The event log's SQL.
#[derive(Clone, Debug)]
pub struct EventStore {
    db: Database,
}

impl EventStore {
    /// The store over the metrics database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Appends events in one statement (an event id already stored is
    /// skipped) and refreshes the milestones and marks of the tests and
    /// the milestones of the remediations they touch, in one transaction:
    /// five statements at most (the marks' day counts are kept by a trigger
    /// of the first, metrics migration 0007). The last one carries the COMMIT.
    /// Returns how many events were new.
    pub async fn append(&self, events: &[NewEvent], now: Micros) -> Result<u64, sqlx::Error> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        let stored = self
            .db
            .stmt(INSERT_EVENTS)
            .bind_rows(events)
            .bind(now)
            .execute(&mut tx)
            .await?;
        let mut writes = Vec::with_capacity(4);
        let tests: BTreeSet<&str> = events.iter().filter_map(|e| e.test_id.as_deref()).collect();
        if !tests.is_empty() {
            writes.push(self.db.stmt(REFRESH_TESTS).bind_ids(&tests));
            writes.push(self.db.stmt(DROP_MARKS).bind_ids(&tests));
            writes.push(self.db.stmt(INSERT_MARKS).bind_ids(&tests));
        }
        let remediations: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e.remediation_id.as_deref())
            .collect();
        if !remediations.is_empty() {
            writes.push(self.db.stmt(REFRESH_REMEDIATIONS).bind_ids(&remediations));
        }
        tx.commit_with(writes).await?;
        Ok(stored.rows_affected())
    }

    fn filtered(&self, sql: &'static str, filter: &Filter) -> Stmt {
        self.db
            .stmt(sql)
            .bind(filter.from)
            .bind(filter.to)
            .bind(filter.campaign_id.clone())
            .bind_ids(&filter.technique_ids)
            .bind(i64::from(!filter.technique_ids.is_empty()))
    }

    /// MTTD over the window.
    pub async fn mttd(&self, filter: &Filter) -> Result<DurationStats, sqlx::Error> {
        let row = self
            .filtered(MTTD, filter)
            .fetch_one(self.db.pool())
            .await?;
        stats(&row, 0)
    }

    /// MTTR over the window.
    pub async fn mttr(&self, filter: &Filter) -> Result<DurationStats, sqlx::Error> {
        let row = self
            .filtered(MTTR, filter)
            .fetch_one(self.db.pool())
            .await?;
        stats(&row, 0)
    }

    /// Rejection counts over the window: from the day counts without a
    /// filter, from the marks alone with one.
    pub async fn rejections(&self, filter: &Filter) -> Result<Rejections, sqlx::Error> {
        let rows = if filter.campaign_id.is_empty() && filter.technique_ids.is_empty() {
            let ends = WindowDays::of(filter.from, filter.to);
            self.db
                .stmt(REJECTIONS_BY_DAY)
                .bind(filter.from)
                .bind(filter.to)
                .bind(ends.first_day)
                .bind(ends.end_day)
                .bind(ends.head_end)
                .bind(ends.tail_start)
                .fetch_all(self.db.pool())
                .await?
        } else {
            self.filtered(REJECTIONS, filter)
                .fetch_all(self.db.pool())
                .await?
        };
        let mut counts = Rejections::default();
        for row in &rows {
            let mark: String = row.try_get(0)?;
            let count: i64 = row.try_get(1)?;
            let slot = match mark.as_str() {
                "validated" => &mut counts.validated,
                "rejected" => &mut counts.rejected,
                "rejected:red" => &mut counts.red_rejected,
                "red_executed" => &mut counts.red_executed,
                "rejected:blue" => &mut counts.blue_rejected,
                "blue_completed" => &mut counts.blue_completed,
                other => {
                    return Err(sqlx::Error::Decode(
                        format!("unknown mark {other:?} in test_marks").into(),
                    ));
                }
            };
            *slot = count;
        }
        Ok(counts)
    }

    /// The weekly trend; `first_week` is the Monday of the window's start.
    pub async fn trend(
        &self,
        filter: &Filter,
        first_week: Micros,
    ) -> Result<Vec<Week>, sqlx::Error> {
        let rows = self
            .filtered(TREND, filter)
            .bind(first_week)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Week {
                    start: row.try_get(0)?,
                    validated: row.try_get(1)?,
                    cumulative_validated: row.try_get(2)?,
                    detections: row.try_get(3)?,
                    mttd: stats(row, 4)?,
                })
            })
            .collect()
    }

    /// A page of the audit trail, newest first.
    pub async fn audit(
        &self,
        query: &AuditQuery,
        page: &Page,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows = self
            .db
            .stmt(AUDIT)
            .bind(query.test_id.clone())
            .bind(query.technique_id.clone())
            .bind(query.kind.clone())
            .bind(query.from)
            .bind(query.to)
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.int(1))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    event_id: row.try_get(0)?,
                    kind: row.try_get(1)?,
                    occurred_at: row.try_get(2)?,
                    test_id: row.try_get(3)?,
                    technique_id: row.try_get(4)?,
                    campaign_id: row.try_get(5)?,
                    remediation_id: row.try_get(6)?,
                    outcome: row.try_get(7)?,
                    side: row.try_get(8)?,
                    actor_id: row.try_get(9)?,
                    attributes: row.try_get(10)?,
                    seq: row.try_get(11)?,
                })
            })
            .collect()
    }
}

/// A window `[from, to)` cut at UTC midnights: the whole days in it
/// (`first_day .. end_day`, counted from 1970-01-01) and its partial ends,
/// `[from, head_end)` and `[tail_start, to)`. A window within one day, or
/// across one midnight, has no whole day: its head is all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WindowDays {
    first_day: i64,
    end_day: i64,
    head_end: Micros,
    tail_start: Micros,
}

impl WindowDays {
    fn of(from: Micros, to: Micros) -> Self {
        let (from, to) = (from.as_micros(), to.as_micros());
        let first_day =
            from.div_euclid(MICROS_PER_DAY) + i64::from(from.rem_euclid(MICROS_PER_DAY) != 0);
        let end_day = to.div_euclid(MICROS_PER_DAY);
        match (
            first_day.checked_mul(MICROS_PER_DAY),
            end_day.checked_mul(MICROS_PER_DAY),
        ) {
            (Some(head_end), Some(tail_start)) if first_day < end_day => WindowDays {
                first_day,
                end_day,
                head_end: Micros::from_micros(head_end),
                tail_start: Micros::from_micros(tail_start),
            },
            _ => WindowDays {
                first_day: 0,
                end_day: 0,
                head_end: Micros::from_micros(to),
                tail_start: Micros::from_micros(to),
            },
        }
    }
}

/// Reads (count, mean, ascending durations) starting at column `at`.
fn stats(row: &AnyRow, at: usize) -> Result<DurationStats, sqlx::Error> {
    let count: i64 = row.try_get(at)?;
    if count == 0 {
        return Ok(DurationStats::default());
    }
    let sorted: String = row.try_get(at + 2)?;
    let micros = sorted
        .split(',')
        .map(str::parse::<i64>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Decode(format!("durations of a metric: {e}").into()))?;
    if micros.len() as i64 != count {
        return Err(sqlx::Error::Decode(
            format!("{} durations for a count of {count}", micros.len()).into(),
        ));
    }
    Ok(DurationStats::of_sorted(row.try_get(at + 1)?, &micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    fn of(from: i64, to: i64) -> WindowDays {
        WindowDays::of(Micros::from_micros(from), Micros::from_micros(to))
    }

    fn at(micros: i64) -> Micros {
        Micros::from_micros(micros)
    }

    #[test]
    fn a_window_is_cut_at_the_midnights_inside_it() {
        // 12:00 on day 100 to 06:00 on day 103: days 101 and 102 whole.
        let w = of(100 * DAY + DAY / 2, 103 * DAY + DAY / 4);
        assert_eq!(
            w,
            WindowDays {
                first_day: 101,
                end_day: 103,
                head_end: at(101 * DAY),
                tail_start: at(103 * DAY),
            }
        );
        // Aligned at both ends: no partial day.
        let w = of(100 * DAY, 102 * DAY);
        assert_eq!((w.first_day, w.end_day), (100, 102));
        assert_eq!((w.head_end, w.tail_start), (at(100 * DAY), at(102 * DAY)));
    }

    #[test]
    fn a_window_without_a_whole_day_is_all_head() {
        for (from, to) in [
            (100 * DAY + 1, 100 * DAY + 5),
            (100 * DAY + DAY / 2, 101 * DAY + DAY / 2),
            (100 * DAY, 100 * DAY + DAY - 1),
            (-DAY / 2, DAY / 2),
            (i64::MIN, i64::MIN + 1),
        ] {
            let w = of(from, to);
            assert_eq!(w.first_day, w.end_day, "{from}..{to}");
            assert_eq!((w.head_end, w.tail_start), (at(to), at(to)), "{from}..{to}");
        }
        // A midnight past the last instant: no overflow, all head.
        let w = of(i64::MAX - 5, i64::MAX);
        assert_eq!((w.head_end, w.tail_start), (Micros::MAX, Micros::MAX));
        // The widest window: every day whole but the two partial ends.
        let w = of(i64::MIN, i64::MAX);
        assert!(w.first_day < w.end_day);
        assert_eq!(w.head_end.as_micros() % DAY, 0);
    }
}
