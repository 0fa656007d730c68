//! The documentation is part of what is tested: its links and anchors resolve, its TOML samples
//! parse, the flags the command reference names exist, user pages carry no project-internal
//! words, and the README's five-minute example runs as written against a real server.

use crate::harness::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of the book, as (path relative to the root, text).
fn pages() -> Vec<(PathBuf, String)> {
    let mut out = vec![(PathBuf::from("README.md"), read(&root().join("README.md")))];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // Documentation waiting to be merged into the pages (each piece says where):
                // its links point where they will resolve once it is there.
                if !path.ends_with("docs/pending") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "md") {
                let rel = path.strip_prefix(root()).unwrap().to_path_buf();
                out.push((rel, read(&path)));
            }
        }
    }
    out.sort();
    assert!(out.len() > 10, "the book has pages: {out:?}");
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines outside fenced code blocks, with their numbers (1-based).
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The fenced code blocks of one language, in order.
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(info)) => {
                if info.trim() == lang {
                    current = Some((i + 1, String::new()));
                } else {
                    // another language's block: skip to its end
                    current = Some((0, String::new()));
                }
            }
            (Some(_), Some(_)) => {
                let (line_no, body) = current.take().unwrap();
                if line_no > 0 {
                    out.push((line_no, body));
                }
            }
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a page offers, with GitHub's `-1`, `-2` suffixes for repeated headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose(text) {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some(heading) = rest.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        let base = anchor(heading);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Markdown link targets on one line of prose, code spans left out.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '`' => in_code = !in_code,
            ']' if !in_code && chars.get(i + 1) == Some(&'(') => {
                let rest: String = chars[i + 2..].iter().collect();
                if let Some(end) = rest.find(')') {
                    out.push(rest[..end].to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let pages = pages();
    let texts: BTreeMap<PathBuf, &String> = pages.iter().map(|(p, t)| (p.clone(), t)).collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for (page, text) in &pages {
        for (line_no, line) in prose(text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, fragment) = match target.split_once('#') {
                    Some((p, f)) => (p, Some(f)),
                    None => (target.as_str(), None),
                };
                let dest = if path.is_empty() {
                    page.clone()
                } else {
                    normalize(&page.parent().unwrap().join(path))
                };
                if !root().join(&dest).exists() {
                    broken.push(format!(
                        "{}:{line_no}: {target}: no such file",
                        page.display()
                    ));
                    continue;
                }
                if let Some(fragment) = fragment {
                    let Some(dest_text) = texts.get(&dest) else {
                        broken.push(format!(
                            "{}:{line_no}: {target}: an anchor into a file that is not a page",
                            page.display()
                        ));
                        continue;
                    };
                    if !anchors(dest_text).contains(fragment) {
                        broken.push(format!(
                            "{}:{line_no}: {target}: no heading with anchor #{fragment}",
                            page.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_link_checker_finds_a_broken_anchor() {
    // The checker above must be able to fail: a page with a dangling anchor is found.
    let text = "# Title\n\n## A section\n\nSee [x](#a-section) and [y](#no-such).\n";
    let have = anchors(text);
    assert!(have.contains("a-section") && have.contains("title"));
    let targets = link_targets(prose(text)[4].1);
    assert_eq!(targets, vec!["#a-section", "#no-such"]);
    assert!(!have.contains("no-such"));
    assert_eq!(
        anchor("Set-based handlers: `-- per batch` (the fast way)"),
        "set-based-handlers----per-batch-the-fast-way"
    );
}

#[test]
fn user_pages_carry_no_project_internal_words() {
    // Contributors' pages (docs/internals) may speak of the project's history; users' may not.
    // "session" alone is a database word (a session advisory lock); a work session is numbered.
    let words = [
        (" seed ", "the founding documents"),
        ("seed's", "the founding documents"),
        ("W1", "a workload code name"),
        ("issue #", "an issue number"),
    ];
    let mut found = Vec::new();
    for (page, text) in pages() {
        if page.starts_with("docs/internals") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            for (word, what) in words {
                if line.contains(word) {
                    found.push(format!("{}:{}: {what}: {line}", page.display(), i + 1));
                }
            }
            let lower = line.to_lowercase();
            for (j, _) in lower.match_indices("session ") {
                if lower[j + 8..].starts_with(|c: char| c.is_ascii_digit()) {
                    found.push(format!(
                        "{}:{}: a work session: {line}",
                        page.display(),
                        i + 1
                    ));
                }
            }
            // issue references such as #14 (but not anchors, which follow `](` or `/`)
            let bytes = line.as_bytes();
            for (j, _) in line.match_indices('#') {
                let digit_follows = bytes.get(j + 1).is_some_and(|b| b.is_ascii_digit());
                let word_before = j > 0 && (bytes[j - 1] == b' ' || bytes[j - 1] == b'(');
                if digit_follows && word_before {
                    found.push(format!(
                        "{}:{}: an issue number: {line}",
                        page.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "internal words in user docs:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_toml_sample_parses() {
    let mut parsed = 0;
    let mut errors = Vec::new();
    for (page, text) in pages() {
        for (line_no, body) in blocks(&text, "toml") {
            parsed += 1;
            if let Err(e) = body.parse::<toml::Table>() {
                errors.push(format!("{}:{line_no}: {e}", page.display()));
            }
        }
    }
    assert!(parsed >= 10, "only {parsed} TOML samples found");
    assert!(
        errors.is_empty(),
        "TOML samples that do not parse:\n{}",
        errors.join("\n")
    );
}

#[test]
fn every_flag_in_the_command_reference_exists() {
    let reference = read(&root().join("docs/reference/commands.md"));
    let mut help = String::new();
    for command in [
        "--help",
        "init",
        "check",
        "gaps",
        "parked",
        "skip",
        "retry",
        "plan",
        "rebuild",
        "swap",
        "run",
        "rollback",
        "cleanup",
        "cancel",
        "status",
        "history",
        "completions",
        "man",
    ] {
        let args: &[&str] = if command == "--help" {
            &["--help"]
        } else {
            &[command, "--help"]
        };
        let out = std::process::Command::new(binary())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "reproject {command} --help failed");
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let flags = long_flags(&reference);
    assert!(
        flags.len() > 20,
        "only {} flags found: {flags:?}",
        flags.len()
    );
    let missing: Vec<_> = flags
        .iter()
        .filter(|f| {
            // the whole flag: `--lock-budget` is not found inside `--lock-budget-max`
            !help.match_indices(f.as_str()).any(|(i, _)| {
                !help[i + f.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "flags documented but not in any --help: {missing:?}"
    );
}

/// The `--long-flags` of a text, as written in code spans.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for span in text.split('`').skip(1).step_by(2) {
        for word in span.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '=') {
            let flag: String = word
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if flag.starts_with("--") && flag.len() > 3 && !flag.starts_with("---") {
                out.insert(flag);
            }
        }
    }
    out
}

#[test]
fn the_flag_check_can_fail() {
    let flags = long_flags("`reproject rebuild --no-such-flag` and `--yes`, `--batch-size N`");
    assert_eq!(
        flags.into_iter().collect::<Vec<_>>(),
        vec!["--batch-size", "--no-such-flag", "--yes"]
    );
}

/// The README's five-minute example, its SQL and TOML taken from the README itself.
#[tokio::test]
async fn the_readme_five_minute_example_runs_as_written() {
    let readme = read(&root().join("README.md"));
    let start = readme
        .find("## Five minutes on your own event table")
        .expect("the README has its five-minute section");
    let end = start + readme[start..].find("\n## Commands").unwrap();
    let section = &readme[start..end];
    let sql = blocks(section, "sql");
    let toml = blocks(section, "toml");
    assert_eq!(
        (sql.len(), toml.len()),
        (2, 1),
        "schema, handlers and config"
    );
    let (schema, handlers, config) = (&sql[0].1, &sql[1].1, &toml[0].1);
    assert!(config.contains("handlers = \"balances.sql\""));

    let db = TestDb::new().await;
    db.exec(schema).await;
    // Three accounts' events, and a live table as a buggy projector left it: acct-1 was
    // credited twice for one deposit.
    db.exec(
        "INSERT INTO account_events (account_id, kind, body) VALUES
           ('acct-1', 'opened', '{}'), ('acct-2', 'opened', '{}'),
           ('acct-1', 'deposited', '{\"amount\": 100}'),
           ('acct-2', 'deposited', '{\"amount\": 50}'),
           ('acct-1', 'withdrawn', '{\"amount\": 30}'),
           ('acct-3', 'opened', '{}'),
           ('acct-3', 'deposited', '{\"amount\": 7}');
         INSERT INTO account_balances VALUES ('acct-1', 170), ('acct-2', 50), ('acct-3', 7);
         GRANT SELECT ON account_balances TO PUBLIC;",
    )
    .await;
    let truth = "SELECT count(*) FROM (
           SELECT account_id, sum(CASE kind WHEN 'deposited' THEN (body->>'amount')::bigint
                                            WHEN 'withdrawn' THEN -(body->>'amount')::bigint
                                            ELSE 0 END) AS balance
             FROM account_events GROUP BY account_id) t
         FULL JOIN account_balances b USING (account_id)
        WHERE t.balance IS DISTINCT FROM b.balance";
    db.assert_int(truth, 1).await;

    let p = Project::new(config, &[("balances.sql", handlers)]);
    p.reproject(&db, "plan")
        .await
        .ok()
        .stdout_has("balances")
        .stdout_has("account_balances");
    p.reproject(
        &db,
        &[
            "rebuild",
            "--yes",
            "--reason",
            "balance bug fixed in the deposit handler",
        ][..],
    )
    .await
    .ok();
    db.assert_int_because(truth, 0, "the rebuilt table equals the events' truth")
        .await;
    db.assert_int(
        "SELECT count(*) FROM information_schema.role_table_grants
          WHERE table_name = 'account_balances' AND grantee = 'PUBLIC'",
        1,
    )
    .await;
    p.reproject(&db, "status").await.ok().stdout_has("balances");
    p.reproject(&db, "history")
        .await
        .ok()
        .stdout_has("balance bug fixed in the deposit handler");
    p.reproject(&db, "rollback --yes").await.ok();
    db.assert_int_because(
        "SELECT balance FROM account_balances WHERE account_id = 'acct-1'",
        170,
        "rollback puts the previous table back",
    )
    .await;
    p.reproject(&db, "cleanup --yes").await.ok();
    db.drop().await;
}
