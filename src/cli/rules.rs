//! `purple rules`: lists the detection rules a running server holds, so a
//! blue tech can name the rule that fired in a detection result.

use std::fmt::Write;

use clap::Args;
use purple_api::ingest::v1::{
    DetectionRule, ListDetectionRulesRequest, ingest_service_client::IngestServiceClient,
};

use super::{ServerArg, status_error};

/// Lists detection rules, one per line: source, rule id, status, title.
#[derive(Args, Debug)]
pub struct RulesArgs {
    /// Only rules mapped directly to this ATT&CK id (e.g. T1059.001).
    #[arg(long)]
    technique: Option<String>,
    /// Only this source: sigma or elastic.
    #[arg(long)]
    source: Option<String>,
    /// Include disabled (deprecated) rules.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// Runs the command: every page, printed as one table.
pub async fn run(args: RulesArgs, client: &super::ClientArgs) -> anyhow::Result<()> {
    let mut client = IngestServiceClient::new(args.server.connect(client).await?);
    let mut rules = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_detection_rules(ListDetectionRulesRequest {
                source: args.source.clone().unwrap_or_default(),
                enabled: (!args.all).then_some(true),
                technique_id: args.technique.clone().unwrap_or_default(),
                status: String::new(),
                page_size: 1_000,
                page_token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        rules.extend(page.rules);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    print!("{}", render(&rules));
    Ok(())
}

/// The table: a header, one line per rule, and the count.
fn render(rules: &[DetectionRule]) -> String {
    let id_width = rules
        .iter()
        .map(|r| r.rule_id.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<7}  {:<id_width$}  {:<12}  title",
        "source", "rule_id", "status"
    );
    for r in rules {
        let status = if r.enabled {
            r.status.clone()
        } else {
            format!("{} (off)", r.status)
        };
        let _ = writeln!(
            out,
            "{:<7}  {:<id_width$}  {:<12}  {}",
            r.source, r.rule_id, status, r.title
        );
    }
    let _ = writeln!(out, "{} rule(s)", rules.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_ids_and_marks_disabled_rules() {
        let rule = |id: &str, enabled: bool| DetectionRule {
            rule_id: id.into(),
            source: "sigma".into(),
            title: format!("rule {id}"),
            status: "stable".into(),
            enabled,
            ..Default::default()
        };
        let text = render(&[rule("a", true), rule("0123456789", false)]);
        assert_eq!(
            text,
            "source   rule_id     status        title\n\
             sigma    a           stable        rule a\n\
             sigma    0123456789  stable (off)  rule 0123456789\n\
             2 rule(s)\n"
        );
    }
}
