//! The README is a contract with a newcomer: its settings table lists
//! every flag of `purple serve` (which `purple` alone takes too) with the
//! binary's environment variable and default, and nothing the binary does
//! not have. On a mismatch the test prints the rows the code defines.

use std::collections::BTreeMap;

use clap::CommandFactory;

/// (flag, environment, default) as the README writes them.
type Row = (String, String, String);

fn code_rows() -> BTreeMap<String, Row> {
    let command = purple::cli::Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("a serve subcommand")
        .clone();
    let top: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut rows = BTreeMap::new();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_global_set() || matches!(long, "help" | "version") {
            continue;
        }
        assert!(
            top.iter().any(|t| t == long),
            "`purple --{long}` must work as `purple serve --{long}` does"
        );
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let default = if defaults.iter().all(String::is_empty) {
            String::new()
        } else {
            format!("`{}`", defaults.join(","))
        };
        let flag = format!("`--{long}`");
        rows.insert(flag.clone(), (flag, env, default));
    }
    rows
}

fn readme_rows() -> BTreeMap<String, Row> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Settings\n")
        .nth(1)
        .expect("a Settings section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            // A default that is not code (`unset`, `all`, …) means none.
            let default = if cells[2].starts_with('`') {
                cells[2].to_owned()
            } else {
                String::new()
            };
            (
                cells[0].to_owned(),
                (cells[0].to_owned(), cells[1].to_owned(), default),
            )
        })
        .collect()
}

#[test]
fn the_settings_table_matches_the_binary() {
    let (code, readme) = (code_rows(), readme_rows());
    if code != readme {
        let mut expected = String::new();
        for (flag, env, default) in code.values() {
            expected.push_str(&format!("| {flag} | {env} | {default} | |\n"));
        }
        let missing: Vec<&String> = code.keys().filter(|k| !readme.contains_key(*k)).collect();
        let extra: Vec<&String> = readme.keys().filter(|k| !code.contains_key(*k)).collect();
        let differ: Vec<(&Row, &Row)> = code
            .iter()
            .filter_map(|(k, v)| readme.get(k).filter(|r| *r != v).map(|r| (v, r)))
            .collect();
        panic!(
            "README settings table and `purple serve --help` disagree\n\
             missing from the README: {missing:?}\nnot in the binary: {extra:?}\n\
             different (code, README): {differ:#?}\nthe code's rows:\n{expected}"
        );
    }
}
