//! All SQL of the campaigns service, one file per aggregate: tests and
//! their workflow writes ([`workflow`]), campaigns, the outbox, and the
//! people side (users, remediations, notifications, worklogs). Each read
//! that crosses a set is one statement; each transition one transaction.

pub mod campaigns;
pub mod history;
pub mod integrations;
pub mod outbox;
pub mod people;
pub mod workflow;

use purple_api::common::v1::Outcome;
use purple_runtime::Database;
use sqlx::{Row, any::AnyRow};

use crate::domain::{Milestones, State, TestRow};

/// The campaigns database.
#[derive(Clone, Debug)]
pub struct CampaignStore {
    db: Database,
}

impl CampaignStore {
    /// The store over the campaigns database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database, for transactions.
    pub fn db(&self) -> &Database {
        &self.db
    }
}

/// The columns [`test_row`] reads, for tests aliased `t`.
macro_rules! test_columns {
    () => {
        "t.test_id, t.technique_id, t.template_id, t.campaign_id, t.title, t.state, t.outcome, \
         t.retest_of, t.chain_id, t.version, t.red_assignee_id, t.blue_assignee_id, t.executed_at, \
         t.detected_at, t.validated_at, t.red_notes, t.blue_notes, t.rejection_reason, t.created_at, \
         t.updated_at, t.last_executed_at, t.red_started_at, t.blue_started_at, t.blue_completed_at, \
         t.cancelled_at"
    };
}
pub(crate) use test_columns;

/// How many columns [`test_row`] reads.
pub const TEST_COLUMN_COUNT: usize = 25;

/// A test from the columns of [`test_columns!`], starting at column 0.
pub fn test_row(row: &AnyRow) -> Result<TestRow, sqlx::Error> {
    let state: String = row.try_get(5)?;
    let outcome: Option<String> = row.try_get(6)?;
    Ok(TestRow {
        test_id: row.try_get(0)?,
        technique_id: row.try_get(1)?,
        template_id: row.try_get(2)?,
        campaign_id: row.try_get(3)?,
        title: row.try_get(4)?,
        state: State::from_key(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?}").into()))?,
        outcome: outcome.as_deref().and_then(Outcome::from_key),
        retest_of: row.try_get(7)?,
        chain_id: row.try_get(8)?,
        version: row.try_get(9)?,
        red_assignee_id: row.try_get(10)?,
        blue_assignee_id: row.try_get(11)?,
        executed_at: row.try_get(12)?,
        detected_at: row.try_get(13)?,
        validated_at: row.try_get(14)?,
        red_notes: row.try_get(15)?,
        blue_notes: row.try_get(16)?,
        rejection_reason: row.try_get(17)?,
        created_at: row.try_get(18)?,
        updated_at: row.try_get(19)?,
        last_executed_at: row.try_get(20)?,
        milestones: Milestones {
            red_started_at: row.try_get(21)?,
            blue_started_at: row.try_get(22)?,
            blue_completed_at: row.try_get(23)?,
            cancelled_at: row.try_get(24)?,
        },
    })
}

/// A test from the JSON array of the columns of [`test_columns!`], in
/// their order (a packed read).
pub fn test_row_json(row: &[serde_json::Value]) -> Result<TestRow, sqlx::Error> {
    use serde_json::Value;
    let bad = |i: usize| sqlx::Error::Decode(format!("test column {i} of a packed row").into());
    if row.len() != TEST_COLUMN_COUNT {
        return Err(bad(row.len()));
    }
    let text = |i: usize| -> Result<String, sqlx::Error> {
        row[i].as_str().map(str::to_owned).ok_or_else(|| bad(i))
    };
    let opt_text = |i: usize| -> Result<Option<String>, sqlx::Error> {
        match &row[i] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(bad(i)),
        }
    };
    let int = |i: usize| -> Result<i64, sqlx::Error> { row[i].as_i64().ok_or_else(|| bad(i)) };
    let at = |i: usize| -> Result<Option<purple_runtime::time::Micros>, sqlx::Error> {
        match &row[i] {
            Value::Null => Ok(None),
            v => v
                .as_i64()
                .map(|m| Some(purple_runtime::time::Micros::from_micros(m)))
                .ok_or_else(|| bad(i)),
        }
    };
    let state = text(5)?;
    let outcome = opt_text(6)?;
    Ok(TestRow {
        test_id: text(0)?,
        technique_id: text(1)?,
        template_id: text(2)?,
        campaign_id: opt_text(3)?,
        title: text(4)?,
        state: State::from_key(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?}").into()))?,
        outcome: outcome.as_deref().and_then(Outcome::from_key),
        retest_of: opt_text(7)?,
        chain_id: text(8)?,
        version: int(9)?,
        red_assignee_id: text(10)?,
        blue_assignee_id: text(11)?,
        executed_at: at(12)?,
        detected_at: at(13)?,
        validated_at: at(14)?,
        red_notes: text(15)?,
        blue_notes: text(16)?,
        rejection_reason: text(17)?,
        created_at: at(18)?.ok_or_else(|| bad(18))?,
        updated_at: at(19)?.ok_or_else(|| bad(19))?,
        last_executed_at: at(20)?,
        milestones: Milestones {
            red_started_at: at(21)?,
            blue_started_at: at(22)?,
            blue_completed_at: at(23)?,
            cancelled_at: at(24)?,
        },
    })
}
