//! The history interchange format (docs/formats/history.md): NDJSON, one
//! record per line, each with a `kind`. Reading keeps every record's line
//! number for the refusals; unknown fields and kinds are refused, so a
//! typo never silently drops a value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    User(UserRecord),
    Campaign(CampaignRecord),
    Test(Box<TestRecord>),
    DetectionResult(ResultRecord),
    Remediation(RemediationRecord),
    Worklog(WorklogRecord),
}

/// An optional field given as `null` reads as absent.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A person who works tests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// The id their tokens will carry as subject (a login or an e-mail).
    pub user_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub display_name: String,
    /// admin, purple_lead, red_tech, blue_tech or viewer.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// A campaign, optionally recurring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRecord {
    pub campaign_id: String,
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// The ATT&CK group it was generated from, if any.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub threat_actor_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleRecord>,
}

/// How a campaign recurs: an interval or a UTC cron expression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

/// A test with every instant of its life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRecord {
    pub test_id: String,
    pub technique_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub title: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub red_assignee_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub blue_assignee_id: String,
    /// planned, red_in_progress, red_complete, blue_in_progress,
    /// blue_complete, validated or cancelled.
    pub state: String,
    /// blocked, detected, logged or not_detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The test this one retests (any test of the chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retest_of: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub red_started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub red_notes: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub blue_notes: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rejections: Vec<RejectionRecord>,
}

/// A rejection, and what it voided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionRecord {
    /// red or blue.
    pub side: String,
    pub at: DateTime<Utc>,
    pub reason: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub actor_id: String,
    /// The voided execution (a red rejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voided_executed_at: Option<DateTime<Utc>>,
    /// The voided blue completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voided_completed_at: Option<DateTime<Utc>>,
    /// The voided completion's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voided_outcome: Option<String>,
}

/// Whether a detection rule fired on a test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRecord {
    pub test_id: String,
    /// sigma or elastic; empty: the id in any source.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub source: String,
    pub rule_id: String,
    pub triggered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub notes: String,
}

/// The fix a validated logged or not-detected test called for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationRecord {
    pub remediation_id: String,
    pub test_id: String,
    /// open, in_progress or completed.
    pub state: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub assignee_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub notes: String,
    pub opened_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// Time spent on a test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklogRecord {
    pub worklog_id: String,
    pub test_id: String,
    pub user_id: String,
    pub minutes: i64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub note: String,
    pub logged_at: DateTime<Utc>,
}

/// A record and the line it came from (1-based).
#[derive(Clone, Debug, PartialEq)]
pub struct Lined<T> {
    pub line: usize,
    pub record: T,
}

/// A line that is not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// The longest line accepted: a record with long notes fits many times.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Every record of an NDJSON text, or every line that is not one (blank
/// lines are skipped). Stops collecting errors after `max_errors`.
pub fn read(text: &str, max_errors: usize) -> Result<Vec<Lined<Record>>, Vec<LineError>> {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            errors.push(LineError {
                line: number,
                reason: format!("longer than {MAX_LINE_BYTES} bytes"),
            });
        } else {
            match serde_json::from_str::<Record>(line) {
                // JSON spells a NUL byte only as an escape; PostgreSQL
                // cannot store one, so it is the line's fault, said here
                // with its field rather than by the database at commit.
                Ok(record) => match nul_field(line) {
                    Some(field) => errors.push(LineError {
                        line: number,
                        reason: format!(
                            "{field} holds a NUL byte (\\u0000), which cannot be stored"
                        ),
                    }),
                    None => records.push(Lined {
                        line: number,
                        record,
                    }),
                },
                Err(err) => errors.push(LineError {
                    line: number,
                    reason: format!("not a history record: {err}"),
                }),
            }
        }
        if errors.len() >= max_errors {
            break;
        }
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(errors)
    }
}

/// The path of the first string of a JSON line that holds a NUL byte
/// (parsed again only when the line spells one).
fn nul_field(line: &str) -> Option<String> {
    if !line.contains("\\u0000") {
        return None;
    }
    fn walk(value: &serde_json::Value, path: &str) -> Option<String> {
        match value {
            serde_json::Value::String(s) if s.contains('\0') => Some(path.to_owned()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            serde_json::Value::Object(fields) => fields.iter().find_map(|(k, v)| {
                let path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(v, &path)
            }),
            _ => None,
        }
    }
    walk(&serde_json::from_str(line).ok()?, "")
}

/// One record as a line of NDJSON (with its newline).
pub fn line(record: &Record) -> String {
    let mut out = serde_json::to_string(record).expect("records serialize");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_mistakes_name_their_line() {
        let text = r#"{"kind":"user","user_id":"ada","role":"purple_lead"}

{"kind":"test","test_id":"t1","technique_id":"T1059","state":"planned","created_at":"2026-01-02T03:04:05.000006Z"}
"#;
        let records = read(text, 10).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].line, 3);
        let again = read(
            &records.iter().map(|r| line(&r.record)).collect::<String>(),
            10,
        )
        .unwrap();
        assert_eq!(again[1].record, records[1].record);

        let errors = read(
            "{\"kind\":\"user\",\"user_id\":\"a\",\"role\":\"admin\",\"rol\":1}\n{\"kind\":\"nope\"}\nnot json\n",
            10,
        )
        .unwrap_err();
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(errors[0].reason.contains("rol"), "{}", errors[0].reason);
    }

    #[test]
    fn a_nul_byte_is_refused_with_its_line_and_field_and_its_spelling_is_not() {
        let test = |notes: &str| {
            format!(
                r#"{{"kind":"test","test_id":"t1","technique_id":"T1059","state":"planned","created_at":"2026-01-02T03:04:05Z","red_notes":"{notes}"}}"#
            )
        };
        let text = format!("{}\n{}\n", test("a\\u0000b"), test("the text \\\\u0000"));
        let errors = read(&text, 10).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 1);
        assert!(
            errors[0].reason.starts_with("red_notes holds a NUL byte"),
            "{}",
            errors[0].reason
        );
        let kept = read(&test("the text \\\\u0000"), 10).unwrap();
        assert!(matches!(&kept[0].record, Record::Test(t) if t.red_notes == "the text \\u0000"));
    }
}

#[cfg(test)]
mod schema {
    use std::collections::BTreeSet;

    use super::*;

    /// Every field of every kind, as a fully filled record serializes it.
    fn fields_of(record: &Record) -> (String, BTreeSet<String>) {
        let value = serde_json::to_value(record).unwrap();
        let map = value.as_object().unwrap();
        (
            map["kind"].as_str().unwrap().to_owned(),
            map.keys().cloned().collect(),
        )
    }

    #[test]
    fn the_json_schema_names_every_field_of_every_kind() {
        let at = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = || "x".to_owned();
        let records = [
            Record::User(UserRecord {
                user_id: s(),
                display_name: s(),
                role: s(),
                created_at: Some(at),
            }),
            Record::Campaign(CampaignRecord {
                campaign_id: s(),
                name: s(),
                description: s(),
                threat_actor_id: s(),
                created_by: s(),
                created_at: at,
                schedule: Some(ScheduleRecord {
                    interval_seconds: Some(60),
                    cron: None,
                }),
            }),
            Record::Test(Box::new(TestRecord {
                test_id: s(),
                technique_id: s(),
                template_id: s(),
                campaign_id: Some(s()),
                title: s(),
                red_assignee_id: s(),
                blue_assignee_id: s(),
                state: s(),
                outcome: Some(s()),
                retest_of: Some(s()),
                created_at: at,
                red_started_at: Some(at),
                executed_at: Some(at),
                blue_started_at: Some(at),
                detected_at: Some(at),
                blue_completed_at: Some(at),
                validated_at: Some(at),
                cancelled_at: Some(at),
                red_notes: s(),
                blue_notes: s(),
                rejections: vec![RejectionRecord {
                    side: s(),
                    at,
                    reason: s(),
                    actor_id: s(),
                    voided_executed_at: Some(at),
                    voided_completed_at: Some(at),
                    voided_outcome: Some(s()),
                }],
            })),
            Record::DetectionResult(ResultRecord {
                test_id: s(),
                source: s(),
                rule_id: s(),
                triggered: true,
                triggered_at: Some(at),
                notes: s(),
            }),
            Record::Remediation(RemediationRecord {
                remediation_id: s(),
                test_id: s(),
                state: s(),
                assignee_id: s(),
                notes: s(),
                opened_at: at,
                started_at: Some(at),
                completed_at: Some(at),
            }),
            Record::Worklog(WorklogRecord {
                worklog_id: s(),
                test_id: s(),
                user_id: s(),
                minutes: 1,
                note: s(),
                logged_at: at,
            }),
        ];
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/formats/history.schema.json"))
                .unwrap();
        let kinds = schema["oneOf"].as_array().unwrap();
        assert_eq!(kinds.len(), records.len());
        for record in &records {
            let (kind, fields) = fields_of(record);
            let entry = kinds
                .iter()
                .find(|k| k["properties"]["kind"]["const"] == kind.as_str())
                .unwrap_or_else(|| panic!("{kind} is not in the schema"));
            let listed: BTreeSet<String> = entry["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(listed, fields, "{kind}");
        }
        let rejection = &kinds[2]["properties"]["rejections"]["items"]["properties"];
        assert_eq!(rejection.as_object().unwrap().len(), 7);
    }
}
