use crate::error::{Error, ErrorKind};
use crate::model::config::*;
use std::fs;
use tempfile::TempDir;

/// The `[events]` table with the four required roles, on lines 1 to 6.
const EVENTS: &str = "\
[events]
table = \"events\"
position = \"seq\"
stream = \"stream_id\"
type = \"kind\"
data = \"body\"
";

/// A handler file that writes only to `{{t}}`.
const WRITES_T: &str = "-- on e\nINSERT INTO {{t}} VALUES (:stream);\n";

/// A temporary directory holding the config file and its handler files.
struct Dir(TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    /// Writes a file relative to the directory, creating parent directories.
    fn file(&self, name: &str, text: &str) -> &Dir {
        let path = self.0.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn config_path(&self) -> PathBuf {
        self.0.path().join("reproject.toml")
    }

    fn parse(&self, text: &str) -> Result<Config> {
        Config::parse(&self.config_path(), text)
    }

    fn ok(&self, text: &str) -> Config {
        self.parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Parses text that must fail with a config error; returns the whole rendered error.
    fn fail(&self, text: &str) -> String {
        let err = self.parse(text).expect_err("config should be rejected");
        assert_config_error(&err);
        err.to_string()
    }

    /// `path:line` of the config file, as errors print it.
    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.config_path().display())
    }
}

fn assert_config_error(err: &Error) {
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert_eq!(err.kind.exit_code(), 2);
}

/// A `[[projection]]` table; tables are written as TOML literal strings.
fn projection(name: &str, tables: &[&str], handlers: &str) -> String {
    let tables: Vec<String> = tables.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "\n[[projection]]\nname = \"{name}\"\ntables = [{}]\nhandlers = \"{handlers}\"\n",
        tables.join(", ")
    )
}

/// A config with one projection `p` owning `t` whose handler file is `h.sql`, plus `extra`
/// lines appended to the projection table.
fn one_projection(extra: &str) -> String {
    format!("{EVENTS}{}{extra}", projection("p", &["t"], "h.sql"))
}

fn contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected `{needle}` in:\n{haystack}"
    );
}

// ---------------------------------------------------------------------------------------------
// A valid config

#[test]
fn minimal_config_parses_required_event_roles_with_lines() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&one_projection(""));
    assert_eq!(config.path, dir.config_path());
    let ev = &config.events;
    assert_eq!(
        ev.table,
        ConfigTableRef {
            schema: None,
            name: "events".into()
        }
    );
    assert_eq!(ev.table_line, 2);
    assert_eq!((ev.position.sql.as_str(), ev.position.line), ("seq", 3));
    assert_eq!((ev.stream.sql.as_str(), ev.stream.line), ("stream_id", 4));
    assert_eq!(
        (ev.event_type.sql.as_str(), ev.event_type.line),
        ("kind", 5)
    );
    assert_eq!((ev.data.sql.as_str(), ev.data.line), ("body", 6));
    assert!(ev.metadata.is_none());
    assert!(ev.timestamp.is_none());
    assert!(ev.filter.is_none());
}

#[test]
fn optional_event_roles_parse_with_lines() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!(
        "{EVENTS}metadata = \"meta\"\ntimestamp = \"occurred_at\"\nfilter = \"kind <> 'x'\"\n{}",
        projection("p", &["t"], "h.sql")
    );
    let ev = dir.ok(&text).events;
    let meta = ev.metadata.unwrap();
    assert_eq!((meta.sql.as_str(), meta.line), ("meta", 7));
    let ts = ev.timestamp.unwrap();
    assert_eq!((ts.sql.as_str(), ts.line), ("occurred_at", 8));
    let filter = ev.filter.unwrap();
    assert_eq!((filter.sql.as_str(), filter.line), ("kind <> 'x'", 9));
}

#[test]
fn event_expressions_are_trimmed() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("\"seq\"", "\"  seq \"");
    assert_eq!(dir.ok(&text).events.position.sql, "seq");
}

#[test]
fn multi_line_event_expression_line_is_where_the_value_starts() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("\"body\"", "\"\"\"\nbody\n|| '{}'\"\"\"");
    let data = dir.ok(&text).events.data;
    assert_eq!(data.line, 6);
    assert_eq!(data.sql, "body\n|| '{}'");
}

#[test]
fn minimal_projection_has_tables_handlers_and_default_tolerance() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&one_projection(""));
    assert_eq!(config.projections.len(), 1);
    let p = &config.projections[0];
    assert_eq!(p.name, "p");
    // Lines 1-6 are [events], 7 is blank, 8 is [[projection]].
    assert_eq!(p.line, 9);
    assert_eq!(p.tables.len(), 1);
    assert_eq!(p.tables[0].table.schema, None);
    assert_eq!(p.tables[0].table.name, "t");
    assert_eq!(p.tables[0].line, 10);
    let handlers = p.handlers().expect("SQL handlers");
    assert_eq!(handlers.path, dir.0.path().join("h.sql"));
    assert_eq!(handlers.source, WRITES_T);
    assert_eq!(handlers.sections.len(), 1);
    assert_eq!(handlers.sections[0].event_types, vec!["e"]);
    assert_eq!(p.recorded_source(), Some(WRITES_T));
    assert!(p.depends_on.is_empty());
    assert!(p.declared_depends_on.is_empty());
    assert!(p.checks.is_empty());
    assert_eq!(p.row_count_tolerance, DEFAULT_ROW_COUNT_TOLERANCE);
    assert_eq!(DEFAULT_ROW_COUNT_TOLERANCE, 10.0);
}

#[test]
fn projection_tables_on_separate_lines_get_their_own_lines() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!(
        "{EVENTS}\n[[projection]]\nname = \"p\"\ntables = [\n  \"t\",\n  \"u\",\n]\nhandlers = \"h.sql\"\n"
    );
    let p = &dir.ok(&text).projections[0];
    let lines: Vec<_> = p
        .tables
        .iter()
        .map(|t| (t.table.name.as_str(), t.line))
        .collect();
    assert_eq!(lines, vec![("t", 11), ("u", 12)]);
}

#[test]
fn handler_paths_are_relative_to_the_config_directory() {
    let dir = Dir::new();
    dir.file("handlers/p.sql", WRITES_T);
    let config = dir.ok(&format!(
        "{EVENTS}{}",
        projection("p", &["t"], "handlers/p.sql")
    ));
    assert_eq!(
        config.projections[0].handlers().unwrap().path,
        dir.0.path().join("handlers").join("p.sql")
    );
}

#[test]
fn projections_keep_their_order_and_projection_index_finds_them() {
    let dir = Dir::new();
    dir.file("b.sql", "-- on e\nINSERT INTO {{tb}} VALUES (1);\n");
    dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
    let config = dir.ok(&format!(
        "{EVENTS}{}{}",
        projection("b", &["tb"], "b.sql"),
        projection("a", &["ta"], "a.sql")
    ));
    let names: Vec<_> = config.projections.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["b", "a"]);
    assert_eq!(config.projection_index("b"), Some(0));
    assert_eq!(config.projection_index("a"), Some(1));
    assert_eq!(config.projection_index("c"), None);
}

// ---------------------------------------------------------------------------------------------
// TOML shape: unknown and missing keys

#[test]
fn unknown_key_in_events_names_key_and_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!(
        "{EVENTS}tabel = \"x\"\n{}",
        projection("p", &["t"], "h.sql")
    );
    let err = dir.parse(&text).unwrap_err();
    assert_config_error(&err);
    assert_eq!(
        err.message,
        format!("invalid config file `{}`", dir.config_path().display())
    );
    let shown = err.to_string();
    assert!(shown.starts_with("error: invalid config file"), "{shown}");
    contains(&shown, "\n  caused by: TOML parse error at line 7");
    contains(&shown, "unknown field `tabel`");
}

#[test]
fn unknown_key_in_projection_names_key_and_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("handler = \"h.sql\"\n");
    let shown = dir.fail(&text);
    contains(&shown, "TOML parse error at line 12");
    contains(&shown, "unknown field `handler`");
}

#[test]
fn misspelled_projection_table_is_an_unknown_key() {
    let dir = Dir::new();
    let text = format!("{EVENTS}\n[[projections]]\nname = \"p\"\n");
    let shown = dir.fail(&text);
    contains(&shown, "line 8");
    contains(&shown, "unknown field `projections`");
}

#[test]
fn missing_required_event_key_is_named() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("data = \"body\"\n", "");
    contains(&dir.fail(&text), "missing field `data`");
}

#[test]
fn missing_event_type_key_is_named() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("type = \"kind\"\n", "");
    contains(&dir.fail(&text), "missing field `type`");
}

#[test]
fn missing_required_projection_key_is_named() {
    let dir = Dir::new();
    let text = format!("{EVENTS}\n[[projection]]\nname = \"p\"\nhandlers = \"h.sql\"\n");
    contains(&dir.fail(&text), "missing field `tables`");
}

#[test]
fn a_projection_without_handlers_is_a_rust_projection() {
    let dir = Dir::new();
    let text = format!("{EVENTS}\n[[projection]]\nname = \"p\"\ntables = [\"t\"]\n");
    let config = dir.ok(&text);
    assert!(matches!(config.projections[0].kind, ProjectionKind::Rust));
    assert!(config.projections[0].sections().is_empty());
    assert_eq!(config.projections[0].recorded_source(), None);
    assert!(config.rust_projection("p").is_none());
}

/// `[events]` on lines 1-6, then a projection `p` owning `t` from line 8 with `extra` lines.
fn external(extra: &str) -> String {
    format!("{EVENTS}\n[[projection]]\nname = \"p\"\ntables = [\"t\"]\n{extra}\n")
}

#[test]
fn a_command_projection_has_no_handlers_and_resolves_its_program() {
    let dir = Dir::new();
    dir.file("bin/replay.sh", "#!/bin/sh\n");
    dir.file("replay.py", "print('v1')\n");
    let config = dir.ok(&external(
        "command = [\"python3\", \"replay.py\", \"--fast\"]\ncommand_timeout = 60",
    ));
    let p = &config.projections[0];
    let c = p.command().expect("a command");
    assert_eq!(c.argv, vec!["python3", "replay.py", "--fast"]);
    assert_eq!(
        c.program,
        PathBuf::from("python3"),
        "a bare name is looked up in PATH"
    );
    assert_eq!(c.dir, dir.0.path());
    assert_eq!(c.timeout, Some(std::time::Duration::from_secs(60)));
    assert_eq!(c.line, 11);
    assert!(p.handlers().is_none() && p.sections().is_empty());
    // The recorded "handler source" holds the script, so a changed projector changes the digest.
    assert!(c.source.contains("print('v1')"), "{}", c.source);
    assert_eq!(p.recorded_source(), Some(c.source.as_str()));
    assert_eq!(p.handler_path(), c.program);
    let config = dir.ok(&external("command = [\"bin/replay.sh\"]"));
    assert_eq!(
        config.projections[0].command().unwrap().program,
        dir.0.path().join("bin/replay.sh"),
        "a path is relative to the config file's directory"
    );
    assert_eq!(
        config.projections[0].command().unwrap().display(),
        "bin/replay.sh"
    );
}

#[test]
fn command_mistakes_are_named_with_their_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    contains(
        &dir.fail(&external("handlers = \"h.sql\"\ncommand = [\"sh\"]")),
        &format!(
            "{}: projection `p` has both `handlers` and `command`",
            dir.at(11)
        ),
    );
    contains(
        &dir.fail(&external("command = []")),
        &format!("{}: projection `p`: `command` is empty", dir.at(11)),
    );
    contains(
        &dir.fail(&external("command = [\"python3 replay.py\"]")),
        "is one program name with spaces; the command runs without a shell",
    );
    contains(
        &dir.fail(&external("command = [\"./missing.sh\"]")),
        "missing.sh` does not exist",
    );
    contains(
        &dir.fail(&external("command = [\"sh\"]\ncommand_timeout = 0")),
        &format!(
            "{}: projection `p`: `command_timeout` is a number of seconds",
            dir.at(12)
        ),
    );
    contains(
        &dir.fail(&external("handlers = \"h.sql\"\ncommand_timeout = 5")),
        "`command_timeout` is only used with `command`",
    );
    let xid8 = EVENTS.replace(
        "data = \"body\"\n",
        "data = \"body\"\nordering = \"xid8\"\ntransaction_id = \"tx\"\n",
    );
    let text =
        format!("{xid8}\n[[projection]]\nname = \"p\"\ntables = [\"t\"]\ncommand = [\"sh\"]\n");
    contains(
        &dir.fail(&text),
        &format!("{}: projection `p`: an external projector (`command`) cannot be used with `events.ordering = \"xid8\"`", dir.at(13)),
    );
}

#[test]
fn empty_event_expression_is_rejected_with_its_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("\"stream_id\"", "\"   \"");
    let shown = dir.fail(&text);
    contains(&shown, &format!("{}: `events.stream` is empty", dir.at(4)));
}

// ---------------------------------------------------------------------------------------------
// Projections

#[test]
fn no_projections_is_an_error_with_hint() {
    let dir = Dir::new();
    let err = dir.parse(EVENTS).unwrap_err();
    assert_config_error(&err);
    contains(&err.message, "no projections defined");
    contains(&err.message, &dir.config_path().display().to_string());
    contains(err.hint.as_deref().unwrap(), "[[projection]]");
}

#[test]
fn duplicate_projection_name_names_the_first_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    dir.file("h2.sql", "-- on e\nINSERT INTO {{u}} VALUES (1);\n");
    let text = format!(
        "{EVENTS}{}{}",
        projection("p", &["t"], "h.sql"),
        projection("p", &["u"], "h2.sql")
    );
    // First `name` on line 9, the second on line 14.
    let shown = dir.fail(&text);
    contains(
        &shown,
        &format!(
            "{}: projection `p` is defined twice (first at line 9)",
            dir.at(14)
        ),
    );
}

#[test]
fn projection_name_with_a_space_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!("{EVENTS}{}", projection("my proj", &["t"], "h.sql"));
    let shown = dir.fail(&text);
    contains(&shown, &dir.at(9));
    contains(&shown, "projection name `my proj` must be non-empty");
}

#[test]
fn empty_projection_name_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    for name in ["", "   "] {
        let text = format!("{EVENTS}{}", projection(name, &["t"], "h.sql"));
        contains(&dir.fail(&text), "projection name `` must be non-empty");
    }
}

#[test]
fn projection_names_allow_letters_digits_underscore_and_dash() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!("{EVENTS}{}", projection("Order_Stats-2", &["t"], "h.sql"));
    assert_eq!(dir.ok(&text).projections[0].name, "Order_Stats-2");
}

#[test]
fn projection_with_no_tables_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!("{EVENTS}{}", projection("p", &[], "h.sql"));
    contains(
        &dir.fail(&text),
        &format!("{}: projection `p` lists no tables", dir.at(10)),
    );
}

#[test]
fn table_listed_by_two_projections_names_both() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nSELECT 1;\n");
    dir.file("b.sql", "-- on e\nSELECT 2;\n");
    let text = format!(
        "{EVENTS}{}{}",
        projection("a", &["shared"], "a.sql"),
        projection("b", &["Shared"], "b.sql")
    );
    let shown = dir.fail(&text);
    contains(
        &shown,
        &format!(
            "{}: table `shared` is listed by projections `a` and `b`",
            dir.at(15)
        ),
    );
}

#[test]
fn table_listed_twice_by_one_projection_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!("{EVENTS}{}", projection("p", &["t", "t"], "h.sql"));
    contains(&dir.fail(&text), "projection `p` lists table `t` twice");
}

#[test]
fn same_table_name_in_two_schemas_belongs_to_two_projections() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{a.t}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{b.t}} VALUES (1);\n");
    let config = dir.ok(&format!(
        "{EVENTS}{}{}",
        projection("a", &["a.t"], "a.sql"),
        projection("b", &["b.t"], "b.sql")
    ));
    assert_eq!(
        config.projections[1].tables[0].table.schema.as_deref(),
        Some("b")
    );
}

#[test]
fn quoted_name_with_a_dot_is_not_the_same_table_as_a_schema_qualified_one() {
    // `"a.b"` is table `a.b` (search path); `a.b` is table `b` in schema `a`: two tables.
    let dir = Dir::new();
    dir.file("x.sql", "-- on e\nSELECT 1;\n");
    dir.file("y.sql", "-- on e\nSELECT 2;\n");
    let text = format!(
        "{EVENTS}{}{}",
        projection("x", &["\"a.b\""], "x.sql"),
        projection("y", &["a.b"], "y.sql")
    );
    dir.ok(&text);
}

// ---------------------------------------------------------------------------------------------
// depends_on

#[test]
fn declared_dependency_is_recorded() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{tb}} VALUES (1);\n");
    let config = dir.ok(&format!(
        "{EVENTS}{}{}depends_on = [\"a\"]\n",
        projection("a", &["ta"], "a.sql"),
        projection("b", &["tb"], "b.sql")
    ));
    let b = &config.projections[1];
    assert_eq!(b.declared_depends_on, BTreeSet::from(["a".to_string()]));
    assert_eq!(b.depends_on, BTreeSet::from(["a".to_string()]));
    assert!(config.projections[0].depends_on.is_empty());
}

#[test]
fn depends_on_unknown_projection_names_it_and_lists_known_ones() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{tb}} VALUES (1);\n");
    let text = format!(
        "{EVENTS}{}{}depends_on = [\"nope\"]\n",
        projection("a", &["ta"], "a.sql"),
        projection("b", &["tb"], "b.sql")
    );
    let err = dir.parse(&text).unwrap_err();
    assert_config_error(&err);
    assert_eq!(
        err.message,
        format!(
            "{}: projection `b` depends on unknown projection `nope`",
            dir.at(17)
        )
    );
    assert_eq!(err.hint.as_deref(), Some("known projections: a, b"));
}

#[test]
fn depends_on_itself_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let shown = dir.fail(&one_projection("depends_on = [\"p\"]\n"));
    contains(
        &shown,
        &format!("{}: projection `p` depends on itself", dir.at(12)),
    );
}

// ---------------------------------------------------------------------------------------------
// Handler files

#[test]
fn missing_handler_file_names_the_path() {
    let dir = Dir::new();
    let err = dir
        .parse(&format!(
            "{EVENTS}{}",
            projection("p", &["t"], "missing.sql")
        ))
        .unwrap_err();
    assert_config_error(&err);
    assert_eq!(
        err.message,
        format!("{}: projection `p`: bad handlers", dir.at(11))
    );
    contains(
        &err.to_string(),
        &format!(
            "caused by: cannot read handler file `{}`",
            dir.0.path().join("missing.sql").display()
        ),
    );
}

#[test]
fn handler_syntax_error_names_file_and_line() {
    let dir = Dir::new();
    dir.file("h.sql", "-- on e\nSELECT 1;\n\nSELECT :nope;\n");
    let err = dir.parse(&one_projection("")).unwrap_err();
    assert_config_error(&err);
    let handler = dir.0.path().join("h.sql");
    let shown = err.to_string();
    contains(
        &shown,
        &format!("{}: projection `p`: bad handlers", dir.at(11)),
    );
    contains(
        &shown,
        &format!(
            "caused by: {}:4: unknown parameter `:nope`",
            handler.display()
        ),
    );
    // The section hint is for section errors only; an unknown parameter is not one.
    assert!(!shown.contains("hint:"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// {{table}} references and inferred dependencies

#[test]
fn reference_to_a_table_no_projection_owns_is_rejected() {
    let dir = Dir::new();
    dir.file(
        "h.sql",
        "-- on e\nINSERT INTO {{t}} SELECT * FROM {{nobody}};\n",
    );
    let shown = dir.fail(&one_projection(""));
    let handler = dir.0.path().join("h.sql");
    contains(
        &shown,
        &format!(
            "{}:2: projection `p`: `{{{{nobody}}}}` names no table of any projection",
            handler.display()
        ),
    );
}

#[test]
fn unqualified_reference_owned_in_two_schemas_is_ambiguous() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{a.t}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{b.t}} VALUES (1);\n");
    dir.file("c.sql", "-- on e\nINSERT INTO {{c}} SELECT * FROM {{t}};\n");
    let text = format!(
        "{EVENTS}{}{}{}",
        projection("a", &["a.t"], "a.sql"),
        projection("b", &["b.t"], "b.sql"),
        projection("c", &["c"], "c.sql")
    );
    let shown = dir.fail(&text);
    contains(&shown, "projection `c`: `{{t}}` is ambiguous");
}

#[test]
fn qualified_reference_resolves_to_its_schema() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{a.t}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{b.t}} VALUES (1);\n");
    dir.file(
        "c.sql",
        "-- on e\nINSERT INTO {{c}} SELECT * FROM {{ a.t }};\n",
    );
    let config = dir.ok(&format!(
        "{EVENTS}{}{}{}",
        projection("a", &["a.t"], "a.sql"),
        projection("b", &["b.t"], "b.sql"),
        projection("c", &["c"], "c.sql")
    ));
    assert_eq!(
        config.projections[2].depends_on,
        BTreeSet::from(["a".to_string()])
    );
}

#[test]
fn writing_another_projections_table_names_both_projections() {
    for write in [
        "INSERT INTO {{ta}} VALUES (1)",
        "UPDATE {{ta}} SET x = 1",
        "DELETE FROM {{ta}}",
    ] {
        let dir = Dir::new();
        dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
        dir.file(
            "b.sql",
            &format!("-- on e\nINSERT INTO {{{{tb}}}} VALUES (1);\n{write};\n"),
        );
        let err = dir
            .parse(&format!(
                "{EVENTS}{}{}",
                projection("a", &["ta"], "a.sql"),
                projection("b", &["tb"], "b.sql")
            ))
            .unwrap_err();
        assert_config_error(&err);
        assert_eq!(
            err.message,
            format!(
                "{}:3: projection `b` writes to `ta`, which belongs to projection `a`",
                dir.0.path().join("b.sql").display()
            ),
            "{write}"
        );
        contains(err.hint.as_deref().unwrap(), "only write its own");
    }
}

#[test]
fn truncating_another_projections_table_in_a_list_is_rejected() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nTRUNCATE {{tb}}, {{ta}};\n");
    let err = dir
        .parse(&format!(
            "{EVENTS}{}{}",
            projection("a", &["ta"], "a.sql"),
            projection("b", &["tb"], "b.sql")
        ))
        .expect_err("b truncates a's table");
    contains(&err.message, "projection `b` writes to `ta`");
}

#[test]
fn reading_another_projections_table_infers_a_dependency() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
    dir.file(
        "b.sql",
        "-- on e\nINSERT INTO {{tb}} SELECT x FROM {{ta}} WHERE id = :stream;\n",
    );
    let config = dir.ok(&format!(
        "{EVENTS}{}{}",
        projection("a", &["ta"], "a.sql"),
        projection("b", &["tb"], "b.sql")
    ));
    let b = &config.projections[1];
    assert_eq!(b.depends_on, BTreeSet::from(["a".to_string()]));
    assert!(b.declared_depends_on.is_empty());
    assert!(config.projections[0].depends_on.is_empty());
}

#[test]
fn declared_and_inferred_dependencies_are_merged() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{tb}} VALUES (1);\n");
    dir.file(
        "c.sql",
        "-- on e\nINSERT INTO {{tc}} SELECT * FROM {{ta}};\n",
    );
    let config = dir.ok(&format!(
        "{EVENTS}{}{}{}depends_on = [\"b\"]\n",
        projection("a", &["ta"], "a.sql"),
        projection("b", &["tb"], "b.sql"),
        projection("c", &["tc"], "c.sql")
    ));
    let c = &config.projections[2];
    assert_eq!(c.declared_depends_on, BTreeSet::from(["b".to_string()]));
    assert_eq!(
        c.depends_on,
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
}

#[test]
fn reading_its_own_table_infers_no_dependency() {
    let dir = Dir::new();
    dir.file(
        "h.sql",
        "-- on e\nINSERT INTO {{t}} SELECT count(*) FROM {{t}};\n",
    );
    assert!(dir.ok(&one_projection("")).projections[0]
        .depends_on
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// row_count_tolerance

#[test]
fn row_count_tolerance_is_read() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    for (value, expected) in [("2.5", 2.5), ("0.0", 0.0), ("100.0", 100.0), ("5", 5.0)] {
        let config = dir.ok(&one_projection(&format!("row_count_tolerance = {value}\n")));
        assert_eq!(
            config.projections[0].row_count_tolerance, expected,
            "{value}"
        );
    }
}

#[test]
fn row_count_tolerance_out_of_range_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    for (value, shown) in [
        ("-1.0", "-1"),
        ("101.0", "101"),
        ("nan", "NaN"),
        ("inf", "inf"),
    ] {
        let text = one_projection(&format!("row_count_tolerance = {value}\n"));
        contains(
            &dir.fail(&text),
            &format!(
                "{}: projection `p`: `row_count_tolerance` is a percentage from 0 to 100, got {shown}",
                dir.at(12)
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

#[test]
fn check_parses_with_name_line_and_table_reference() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&one_projection(
        "checks = [{ name = \"n\", sql = \"SELECT true FROM {{t}}\" }]\n",
    ));
    let checks = &config.projections[0].checks;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].name, "n");
    assert_eq!(checks[0].line, 12);
    assert_eq!(checks[0].sql.tables.len(), 1);
    assert_eq!(checks[0].sql.tables[0].written, "t");
    assert_eq!(
        checks[0].sql.render(|r| format!("<{}>", r.written)),
        "SELECT true FROM <t>"
    );
}

#[test]
fn checks_on_separate_lines_get_their_own_lines() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&one_projection(
        "checks = [\n  { name = \"one\", sql = \"SELECT true\" },\n  { name = \"two\", sql = \"SELECT false\" },\n]\n",
    ));
    let checks: Vec<_> = config.projections[0]
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.line))
        .collect();
    assert_eq!(checks, vec![("one", 13), ("two", 14)]);
}

#[test]
fn check_without_a_name_is_numbered() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&one_projection("checks = [{ sql = \"SELECT true\" }]\n"));
    assert_eq!(config.projections[0].checks[0].name, "check 1");
    let config = dir.ok(&one_projection(
        "checks = [{ name = \"n\", sql = \"SELECT true\" }, { sql = \"SELECT true\" }]\n",
    ));
    assert_eq!(config.projections[0].checks[1].name, "check 2");
}

#[test]
fn check_with_two_statements_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let shown = dir.fail(&one_projection(
        "checks = [{ name = \"n\", sql = \"SELECT true; SELECT false\" }]\n",
    ));
    contains(
        &shown,
        &format!(
            "{}: projection `p`: check `n`: expected one statement, found 2",
            dir.at(12)
        ),
    );
}

#[test]
fn empty_check_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let shown = dir.fail(&one_projection("checks = [{ sql = \"  \" }]\n"));
    contains(&shown, "check `check 1`: empty SQL");
}

#[test]
fn check_referencing_an_unknown_table_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let shown = dir.fail(&one_projection(
        "checks = [{ name = \"n\", sql = \"SELECT true FROM {{nobody}}\" }]\n",
    ));
    contains(
        &shown,
        &format!(
            "{}: check `n` of projection `p`: `{{{{nobody}}}}` names no table",
            dir.at(12)
        ),
    );
}

#[test]
fn check_may_read_another_projections_table() {
    let dir = Dir::new();
    dir.file("a.sql", "-- on e\nINSERT INTO {{ta}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{tb}} VALUES (1);\n");
    let config = dir.ok(&format!(
        "{EVENTS}{}{}checks = [{{ sql = \"SELECT count(*) > 0 FROM {{{{tb}}}} JOIN {{{{ta}}}} USING (id)\" }}]\n",
        projection("a", &["ta"], "a.sql"),
        projection("b", &["tb"], "b.sql")
    ));
    assert_eq!(config.projections[1].checks.len(), 1);
}

#[test]
fn unknown_key_inside_a_check_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let shown = dir.fail(&one_projection(
        "checks = [{ sql = \"SELECT true\", nme = \"x\" }]\n",
    ));
    contains(&shown, "TOML parse error at line 12");
    contains(&shown, "unknown field `nme`");
}

// ---------------------------------------------------------------------------------------------
// Table names

#[test]
fn events_table_with_schema_parses() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("\"events\"", "\"Shop.Events\"");
    assert_eq!(
        dir.ok(&text).events.table,
        ConfigTableRef {
            schema: Some("shop".into()),
            name: "events".into()
        }
    );
}

#[test]
fn quoted_table_names_keep_case_and_spaces() {
    let dir = Dir::new();
    dir.file(
        "h.sql",
        "-- on e\nINSERT INTO {{\"Odd Name\"}} VALUES (1);\n",
    );
    let text = format!(
        "{EVENTS}{}",
        projection("p", &["\"My Schema\".\"Odd Name\""], "h.sql")
    )
    .replace("\"events\"", "'\"Shop\".\"Event Log\"'");
    let config = dir.ok(&text);
    assert_eq!(
        config.events.table,
        ConfigTableRef {
            schema: Some("Shop".into()),
            name: "Event Log".into()
        }
    );
    assert_eq!(
        config.projections[0].tables[0].table,
        ConfigTableRef {
            schema: Some("My Schema".into()),
            name: "Odd Name".into()
        }
    );
}

#[test]
fn over_long_events_table_name_is_rejected_with_its_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let long = "x".repeat(64);
    let text = one_projection("").replace("\"events\"", &format!("\"{long}\""));
    let shown = dir.fail(&text);
    contains(
        &shown,
        &format!("{}: `events.table`: invalid table name `{long}`", dir.at(2)),
    );
}

#[test]
fn over_long_projection_table_name_is_rejected_with_its_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let long = "x".repeat(64);
    let text = format!("{EVENTS}{}", projection("p", &[&long], "h.sql"));
    let shown = dir.fail(&text);
    contains(
        &shown,
        &format!(
            "{}: projection `p`: invalid table name `{long}`",
            dir.at(10)
        ),
    );
}

#[test]
fn sixty_three_byte_table_name_is_accepted() {
    let dir = Dir::new();
    let name = "x".repeat(63);
    dir.file(
        "h.sql",
        &format!("-- on e\nINSERT INTO {{{{{name}}}}} VALUES (1);\n"),
    );
    let config = dir.ok(&format!("{EVENTS}{}", projection("p", &[&name], "h.sql")));
    assert_eq!(config.projections[0].tables[0].table.name, name);
}

#[test]
fn over_long_table_name_error_mentions_truncation() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("\"events\"", &format!("\"{}\"", "x".repeat(64)));
    contains(&dir.fail(&text), "truncate");
}

#[test]
fn table_name_with_bad_characters_is_rejected() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = format!("{EVENTS}{}", projection("p", &["t; drop table x"], "h.sql"));
    contains(&dir.fail(&text), "invalid table name `t; drop table x`");
}

// ---------------------------------------------------------------------------------------------
// owner_of

/// Projections `a` (owning `a.t` and `x`), `b` (owning `b.t`) and `c` (owning `"Odd Name"`).
fn owners_config(dir: &Dir) -> Config {
    dir.file("a.sql", "-- on e\nINSERT INTO {{a.t}} VALUES (1);\n");
    dir.file("b.sql", "-- on e\nINSERT INTO {{b.t}} VALUES (1);\n");
    dir.file("c.sql", "-- on e\nSELECT 1;\n");
    dir.ok(&format!(
        "{EVENTS}{}{}{}",
        projection("a", &["a.t", "x"], "a.sql"),
        projection("b", &["b.t"], "b.sql"),
        projection("c", &["\"Odd Name\""], "c.sql")
    ))
}

fn owner(projection: usize, table: usize) -> TableOwner {
    TableOwner { projection, table }
}

#[test]
fn owner_of_finds_an_unqualified_unique_name_in_any_schema() {
    let dir = Dir::new();
    let config = owners_config(&dir);
    assert_eq!(config.owner_of("x"), Ok(owner(0, 1)));
    assert_eq!(
        config.owner_of(" X "),
        Ok(owner(0, 1)),
        "folded and trimmed"
    );
}

#[test]
fn owner_of_finds_a_qualified_name_in_its_schema() {
    let dir = Dir::new();
    let config = owners_config(&dir);
    assert_eq!(config.owner_of("a.t"), Ok(owner(0, 0)));
    assert_eq!(config.owner_of("b.t"), Ok(owner(1, 0)));
    assert_eq!(config.owner_of("B.T"), Ok(owner(1, 0)));
}

#[test]
fn owner_of_matches_quoted_names_exactly() {
    let dir = Dir::new();
    let config = owners_config(&dir);
    assert_eq!(config.owner_of("\"Odd Name\""), Ok(owner(2, 0)));
    let why = config.owner_of("\"odd name\"").unwrap_err();
    contains(&why, "names no table of any projection");
}

#[test]
fn owner_of_unknown_table_says_it_names_no_table() {
    let dir = Dir::new();
    let config = owners_config(&dir);
    let why = config.owner_of("nobody").unwrap_err();
    assert_eq!(
        why,
        "`{{nobody}}` names no table of any projection; braces name a projection's table (list it under `tables` of the projection that writes it), a table read from elsewhere is named without braces"
    );
    contains(&config.owner_of("c.t").unwrap_err(), "names no table");
}

#[test]
fn owner_of_unqualified_name_owned_twice_is_ambiguous() {
    let dir = Dir::new();
    let config = owners_config(&dir);
    let why = config.owner_of("t").unwrap_err();
    assert_eq!(
        why,
        "`{{t}}` is ambiguous: several projections own a table of that name; qualify it with its schema"
    );
}

#[test]
fn owner_of_invalid_name_is_an_error() {
    let dir = Dir::new();
    let config = owners_config(&dir);
    contains(&config.owner_of("a.b.c").unwrap_err(), "invalid table name");
    contains(&config.owner_of("t; x").unwrap_err(), "invalid table name");
}

// ---------------------------------------------------------------------------------------------
// Ordering safety and hand-over

#[test]
fn ordering_defaults_to_gap_aware() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&one_projection(""));
    assert!(matches!(config.events.ordering, Ordering::GapAware { .. }));
}

#[test]
fn ordering_modes_parse() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let with = |extra: &str| {
        dir.ok(&format!(
            "{EVENTS}{extra}{}",
            projection("p", &["t"], "h.sql")
        ))
        .events
        .ordering
    };
    assert!(matches!(
        with("ordering = \"serialized\"\n"),
        Ordering::Serialized
    ));
    assert!(matches!(
        with("ordering = \"gap-aware\"\n"),
        Ordering::GapAware { .. }
    ));
    match with("ordering = \"xid8\"\ntransaction_id = \" tx \"\n") {
        Ordering::Xid8 { transaction_id } => {
            assert_eq!(
                (transaction_id.sql.as_str(), transaction_id.line),
                ("tx", 8)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_ordering_is_an_error_with_its_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let err = dir.fail(&format!(
        "{EVENTS}ordering = \"timer\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!("{}: unknown `events.ordering = \"timer\"`", dir.at(7)),
    );
    contains(
        &err,
        "\"gap-aware\" (the default), \"xid8\" or \"serialized\"",
    );
}

#[test]
fn xid8_needs_a_transaction_id_and_only_xid8_takes_one() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let err = dir.fail(&format!(
        "{EVENTS}ordering = \"xid8\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!(
            "{}: `events.ordering = \"xid8\"` needs `events.transaction_id`",
            dir.at(7)
        ),
    );
    let err = dir.fail(&format!(
        "{EVENTS}ordering = \"serialized\"\ntransaction_id = \"tx\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(&err, &format!("{}: `events.transaction_id` is only used with `events.ordering = \"xid8\"` (ordering is \"serialized\")", dir.at(8)));
    let err = dir.fail(&format!(
        "{EVENTS}transaction_id = \"tx\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(&err, "(ordering is \"gap-aware\")");
}

#[test]
fn handover_parses_and_checks_the_transaction_id_column_against_the_mode() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let handover = "handover = { table = \"app.checkpoints\", key_column = \"name\", key = \"tally\", position_column = \"pos\" }\n";
    let config = dir.ok(&one_projection(handover));
    let h = config.projections[0].handover.as_ref().unwrap();
    assert_eq!(h.table.to_string(), "app.checkpoints");
    assert_eq!(
        (
            h.key_column.as_str(),
            h.key.as_str(),
            h.position_column.as_str()
        ),
        ("name", "tally", "pos")
    );
    assert!(h.transaction_id_column.is_none());
    assert_eq!(h.line, 12);

    // xid8 mode: a position alone is no cut.
    let xid8 = format!(
        "{EVENTS}ordering = \"xid8\"\ntransaction_id = \"tx\"\n{}{handover}",
        projection("p", &["t"], "h.sql")
    );
    contains(
        &dir.fail(&xid8),
        "the hand-over needs `transaction_id_column`",
    );
    let ok = xid8.replace(
        "position_column = \"pos\"",
        "position_column = \"pos\", transaction_id_column = \"tx\"",
    );
    let config = dir.ok(&ok);
    let h = config.projections[0].handover.as_ref().unwrap();
    assert_eq!(h.transaction_id_column.as_deref(), Some("tx"));

    // Other modes refuse it.
    let err = dir.fail(&one_projection(&handover.replace(
        "position_column = \"pos\"",
        "position_column = \"pos\", transaction_id_column = \"tx\"",
    )));
    contains(&err, &format!("{}: projection `p`: `handover.transaction_id_column` is only used with `events.ordering = \"xid8\"`", dir.at(12)));
    // And unknown keys are refused as everywhere.
    let err = dir.fail(&one_projection(&handover.replace("key = ", "kee = ")));
    contains(&err, "unknown field `kee`");
}

// ---------------------------------------------------------------------------------------------
// Presets

#[test]
fn a_preset_alone_fills_every_events_key() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&format!(
        "[events]\npreset = \"emmett\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    let ev = &config.events;
    assert_eq!(ev.table.to_string(), "emt_messages");
    assert_eq!(ev.table_line, 2, "preset values carry the preset's line");
    assert_eq!(ev.position.sql, "global_position");
    assert_eq!(ev.stream.sql, "stream_id");
    assert_eq!(ev.event_type.sql, "message_type");
    assert_eq!(ev.data.sql, "message_data");
    assert_eq!(ev.metadata.as_ref().unwrap().sql, "message_metadata");
    assert_eq!(ev.timestamp.as_ref().unwrap().sql, "created");
    assert_eq!(
        ev.filter.as_ref().unwrap().sql,
        "partition = 'emt:default' AND is_archived = false",
        "before validation: the filter of every installation (`message_kind` is optional)"
    );
    let using = ev.preset.as_ref().unwrap();
    assert_eq!((using.name(), using.line), ("emmett", 2));
    assert!(using.supplied("filter") && using.supplied("table") && !using.supplied("source"));
    match &ev.ordering {
        Ordering::Xid8 { transaction_id } => assert_eq!(transaction_id.sql, "transaction_id"),
        other => panic!("expected xid8, got {other:?}"),
    }
}

#[test]
fn every_preset_parses_alone() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    for preset in presets::PRESETS {
        let text = format!(
            "[events]\npreset = \"{}\"\n{}",
            preset.name,
            projection("p", &["t"], "h.sql")
        );
        dir.parse(&text)
            .unwrap_or_else(|e| panic!("preset {}: {e}", preset.name));
    }
}

#[test]
fn explicit_keys_override_the_preset_key_by_key() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&format!(
        "[events]\npreset = \"marten\"\ntable = \"tenant1.mt_events\"\nfilter = \"is_archived = false and tenant_id = 'acme'\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    let ev = &config.events;
    assert_eq!(ev.table.to_string(), "tenant1.mt_events");
    assert_eq!(ev.table_line, 3);
    let filter = ev.filter.as_ref().unwrap();
    assert_eq!(
        (filter.sql.as_str(), filter.line),
        ("is_archived = false and tenant_id = 'acme'", 4)
    );
    assert_eq!(
        (ev.position.sql.as_str(), ev.position.line),
        ("seq_id", 2),
        "keys not written come from the preset"
    );
    assert_eq!(
        ev.metadata.as_ref().unwrap().sql,
        "jsonb_strip_nulls(jsonb_build_object('tenant_id', tenant_id))",
        "Marten's metadata before validation: only what every installation has"
    );
    let using = ev.preset.as_ref().unwrap();
    assert!(using.supplied("metadata") && using.supplied("position"));
    assert!(!using.supplied("filter") && !using.supplied("table"));
}

#[test]
fn a_presets_metadata_and_filter_take_the_optional_columns_present() {
    let marten = presets::find("marten").unwrap();
    let all = |_: &str| true;
    assert_eq!(
        marten.metadata_sql(&all).unwrap(),
        "coalesce(headers, '{}'::jsonb) || jsonb_strip_nulls(jsonb_build_object('tenant_id', tenant_id, 'correlation_id', correlation_id, 'causation_id', causation_id, 'user_name', user_name))"
    );
    assert_eq!(
        marten.filter_sql(&all).unwrap(),
        "(is_archived = false) AND (is_skipped = false)"
    );
    let only_skipped = |c: &str| c == "is_skipped";
    assert_eq!(
        marten.metadata_sql(&only_skipped).unwrap(),
        "jsonb_strip_nulls(jsonb_build_object('tenant_id', tenant_id))"
    );
    let emmett = presets::find("emmett").unwrap();
    assert_eq!(
        emmett.filter_sql(&all).unwrap(),
        "(partition = 'emt:default' AND is_archived = false) AND (message_kind = 'E')"
    );
    let spatie = presets::find("spatie").unwrap();
    assert_eq!(spatie.filter_sql(&all), None);
    assert_eq!(spatie.metadata_sql(&all).unwrap(), "meta_data");
}

#[test]
fn another_ordering_drops_the_presets_transaction_id() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&format!(
        "[events]\npreset = \"emmett\"\nordering = \"gap-aware\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    assert!(matches!(config.events.ordering, Ordering::GapAware { .. }));
    let config = dir.ok(&format!(
        "[events]\npreset = \"emmett\"\nordering = \"xid8\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    assert!(matches!(config.events.ordering, Ordering::Xid8 { .. }));
}

#[test]
fn gap_age_is_a_duration_of_gap_aware_ordering_that_the_marten_preset_sets() {
    use std::time::Duration;
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let ordering = |events: &str| {
        dir.ok(&format!("{events}{}", projection("p", &["t"], "h.sql")))
            .events
            .ordering
    };
    let age = |o: Ordering| match o {
        Ordering::GapAware { gap_age } => gap_age,
        other => panic!("{other:?}"),
    };
    assert_eq!(age(ordering(EVENTS)), Duration::ZERO, "no age by default");
    assert_eq!(
        age(ordering(&format!("{EVENTS}gap_age = \"1500ms\"\n"))),
        Duration::from_millis(1500)
    );
    assert_eq!(
        age(ordering("[events]\npreset = \"marten\"\n")),
        Duration::from_secs(5),
        "Marten reserves positions before the inserting transaction"
    );
    assert_eq!(
        age(ordering(
            "[events]\npreset = \"marten\"\ngap_age = \"0s\"\n"
        )),
        Duration::ZERO,
        "a written key wins"
    );
    assert!(
        matches!(
            ordering("[events]\npreset = \"marten\"\nordering = \"serialized\"\n"),
            Ordering::Serialized
        ),
        "another ordering drops the preset's gap_age"
    );
    let err = dir.fail(&format!(
        "{EVENTS}gap_age = \"soon\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!(
            "{}: `events.gap_age = \"soon\"` is not a duration",
            dir.at(7)
        ),
    );
    let err = dir.fail(&format!(
        "{EVENTS}ordering = \"serialized\"\ngap_age = \"5s\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!(
            "{}: `events.gap_age` is only used with `events.ordering = \"gap-aware\"` (ordering is \"serialized\")",
            dir.at(8)
        ),
    );
}

#[test]
fn position_sequence_is_the_marten_presets_and_only_for_gap_aware_ordering() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let sequence = |events: &str| {
        dir.ok(&format!("{events}{}", projection("p", &["t"], "h.sql")))
            .events
            .position_sequence
            .map(|e| e.sql)
    };
    assert_eq!(sequence(EVENTS), None, "none by default");
    assert_eq!(
        sequence("[events]\npreset = \"marten\"\n").as_deref(),
        Some("mt_events_sequence")
    );
    assert_eq!(
        sequence(&format!("{EVENTS}position_sequence = \"app.seq\"\n")).as_deref(),
        Some("app.seq")
    );
    assert_eq!(
        sequence("[events]\npreset = \"marten\"\ntable = \"other\"\n"),
        None,
        "the preset's sequence goes with the preset's table"
    );
    assert_eq!(
        sequence("[events]\npreset = \"marten\"\nordering = \"serialized\"\n"),
        None,
        "another ordering drops it"
    );
    let err = dir.fail(&format!(
        "{EVENTS}ordering = \"serialized\"\nposition_sequence = \"s\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!(
            "{}: `events.position_sequence` is only used with `events.ordering = \"gap-aware\"` (ordering is \"serialized\")",
            dir.at(8)
        ),
    );
    let err = dir.fail(&format!(
        "{EVENTS}position_sequence = \"a b\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(&err, "`events.position_sequence`: invalid table name `a b`");
}

#[test]
fn unknown_preset_names_the_known_ones_with_its_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let err = dir.fail(&format!(
        "[events]\n\npreset = \"martin\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!("{}: unknown `events.preset = \"martin\"`", dir.at(3)),
    );
    contains(
        &err,
        "known presets: execution-events, message-db, marten, emmett",
    );
}

#[test]
fn missing_key_without_preset_names_the_events_table_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let text = one_projection("").replace("position = \"seq\"\n", "");
    let err = dir.fail(&text);
    contains(
        &err,
        &format!("{}: `[events]` is missing field `position`", dir.at(1)),
    );
    contains(&err, "preset");
}

#[test]
fn a_source_reads_a_query_and_needs_the_table_appends_write() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let base = "[events]\nsource = \"SELECT * FROM a JOIN b USING (id)\"\nposition = \"seq\"\nstream = \"s\"\ntype = \"t\"\ndata = \"d\"\n";
    let config = dir.ok(&format!(
        "{base}lock_table = \"app.a\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    let ev = &config.events;
    assert_eq!(
        ev.source.as_ref().unwrap().sql,
        "SELECT * FROM a JOIN b USING (id)"
    );
    assert_eq!(ev.source.as_ref().unwrap().line, 2);
    assert_eq!((ev.table.to_string().as_str(), ev.table_line), ("app.a", 7));

    let err = dir.fail(&format!("{base}{}", projection("p", &["t"], "h.sql")));
    contains(
        &err,
        &format!("{}: `events.source` needs `events.lock_table`", dir.at(2)),
    );
    let err = dir.fail(&format!(
        "{base}lock_table = \"a\"\ntable = \"a\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!(
            "{}: `events.table` and `events.source` are mutually exclusive",
            dir.at(2)
        ),
    );
    let err = dir.fail(&format!(
        "{EVENTS}lock_table = \"a\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(
        &err,
        &format!(
            "{}: `events.lock_table` is only used with `events.source`",
            dir.at(7)
        ),
    );
}

#[test]
fn a_written_table_or_source_replaces_the_presets_as_a_whole() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    // eventuous reads a source; a table written in the config takes its place.
    let config = dir.ok(&format!(
        "[events]\npreset = \"eventuous\"\ntable = \"my_messages\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    assert!(config.events.source.is_none());
    assert_eq!(config.events.table.to_string(), "my_messages");
    assert_eq!(config.events.position.sql, "global_position");
    // marten reads a table; a source written in the config needs its own lock_table.
    let err = dir.fail(&format!(
        "[events]\npreset = \"marten\"\nsource = \"SELECT * FROM mt_events\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    contains(&err, "`events.source` needs `events.lock_table`");
    let config = dir.ok(&format!(
        "[events]\npreset = \"eventuous\"\n{}",
        projection("p", &["t"], "h.sql")
    ));
    assert_eq!(config.events.table.to_string(), "eventuous.messages");
    assert!(config
        .events
        .source
        .as_ref()
        .unwrap()
        .sql
        .contains("JOIN eventuous.streams"));
}

#[test]
fn partial_rebuild_declarations_parse_with_their_lines() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    // Lines 8-11 are the projection; the extra keys are lines 12 and 13.
    let config = dir.ok(&one_projection(
        "stream_key = \" posting_id \"\nposition_column = \"event_position\"\n",
    ));
    let p = &config.projections[0];
    let key = p.stream_key.as_ref().unwrap();
    assert_eq!((key.name.as_str(), key.line), ("posting_id", 12));
    let pos = p.position_column.as_ref().unwrap();
    assert_eq!((pos.name.as_str(), pos.line), ("event_position", 13));
    assert!(dir.ok(&one_projection("")).projections[0]
        .stream_key
        .is_none());
    let err = dir.fail(&one_projection("stream_key = \"  \"\n"));
    contains(
        &err,
        &format!("{}: projection `p`: `stream_key` is empty", dir.at(12)),
    );
}

#[test]
fn redefine_entries_name_a_dependent_and_load_its_statements() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T).file(
        "shapes/v.sql",
        "CREATE VIEW public.v AS SELECT * FROM {{t}};\nGRANT SELECT ON public.v TO PUBLIC;\n",
    );
    let config = dir
        .parse(&format!(
            "{EVENTS}\n[[projection]]\nname = \"p\"\ntables = [\"t\"]\nhandlers = \"h.sql\"\n\
             redefine = {{ \"public.v\" = \"shapes/v.sql\" }}\n"
        ))
        .unwrap();
    let r = &config.projections[0].redefine;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].key, "public.v");
    assert_eq!(r[0].line, 12);
    assert_eq!(r[0].statements.len(), 2);
    assert_eq!(r[0].statements[0].tables[0].written, "t");
    assert!(r[0].path.ends_with("shapes/v.sql"));

    // Event parameters mean nothing at the swap.
    dir.file(
        "shapes/v.sql",
        "CREATE VIEW public.v AS SELECT :stream AS s;\n",
    );
    let err = dir
        .parse(&format!(
            "{EVENTS}\n[[projection]]\nname = \"p\"\ntables = [\"t\"]\nhandlers = \"h.sql\"\n\
             redefine = {{ \"public.v\" = \"shapes/v.sql\" }}\n"
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message
            .contains("shapes/v.sql:1: projection `p`: redefinition of `public.v`"),
        "{}",
        err.message
    );
}

// ---------------------------------------------------------------------------------------------
// reshape

#[test]
fn reshape_is_read_relative_to_the_config_and_its_typos_are_unknown_keys() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T).file(
        "shapes/v2.sql",
        "ALTER TABLE {{t}} ADD COLUMN c text;\nDROP INDEX {{t_by_c}};\n",
    );
    let config = dir.ok(&one_projection("reshape = \"shapes/v2.sql\"\n"));
    let reshape = config.projections[0].reshape.as_ref().unwrap();
    assert_eq!(reshape.statements.len(), 2);
    assert!(reshape.path.ends_with("shapes/v2.sql"));
    let shown = dir.fail(&one_projection("reshap = \"shapes/v2.sql\"\n"));
    contains(&shown, "unknown field `reshap`");
    let shown = dir.fail(&one_projection("reshape = \"shapes/missing.sql\"\n"));
    contains(
        &shown,
        &format!("{}: projection `p`: bad reshape file", dir.at(12)),
    );
}

#[test]
fn reshape_refuses_another_projections_table_naming_file_and_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T)
        .file("o.sql", "-- on e\nINSERT INTO {{o}} VALUES (:stream);\n")
        .file(
            "v2.sql",
            "ALTER TABLE {{t}} ADD COLUMN c text;\n\nALTER TABLE {{o}} ADD COLUMN c text;\n",
        );
    let text = format!(
        "{}reshape = \"v2.sql\"\n{}",
        one_projection(""),
        projection("other", &["o"], "o.sql")
    );
    let shown = dir.fail(&text);
    contains(
        &shown,
        "v2.sql:3: projection `p`: the reshape names `{{o}}`, a table of projection `other`",
    );
}

// retire

#[test]
fn retire_lists_tables_with_their_lines_and_refuses_a_bad_name() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    let config = dir.ok(&one_projection(
        "retire = [\"t_log\", \"audit.t_old_log\"]\n",
    ));
    let retired: Vec<String> = config.projections[0]
        .retire
        .iter()
        .map(|t| format!("{}@{}", t.table, t.line))
        .collect();
    assert_eq!(retired, ["t_log@12", "audit.t_old_log@12"]);
    let shown = dir.fail(&one_projection("retire = [\"a.b.c\"]\n"));
    contains(
        &shown,
        &format!("{}: projection `p`: `retire`:", dir.at(12)),
    );
}

// create

/// Projection `p` with tables `t` and `t_log`, `t_log` defined by `log.sql`.
fn adding_log() -> String {
    format!(
        "{EVENTS}{}create = {{ t_log = \"log.sql\" }}\n",
        projection("p", &["t", "t_log"], "h.sql")
    )
}

#[test]
fn create_defines_a_listed_table_with_its_file_and_line() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    dir.file(
        "log.sql",
        "CREATE TABLE {{t_log}} (id bigint PRIMARY KEY);\nCREATE INDEX ON {{t_log}} (id);\n",
    );
    let config = dir.ok(&adding_log());
    let defs = &config.projections[0].create;
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].table.to_string(), "t_log");
    assert_eq!(defs[0].file.statements.len(), 2);
    assert_eq!(config.projections[0].reshaped_tables(), [0]);
}

#[test]
fn create_refuses_an_unlisted_table_another_name_and_a_file_without_create_table() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    dir.file("log.sql", "CREATE TABLE {{t_log}} (id bigint);\n");
    let shown = dir.fail(&one_projection("create = { t_log = \"log.sql\" }\n"));
    contains(
        &shown,
        "projection `p`: `create` defines `t_log`, which is not under `tables`",
    );

    dir.file(
        "log.sql",
        "CREATE TABLE {{t_log}} (id bigint);\nALTER TABLE {{t}} ADD COLUMN x int;\n",
    );
    contains(
        &dir.fail(&adding_log()),
        "log.sql:2: projection `p`: the definition of `t_log` names `{{t}}`; it may name only `{{t_log}}`",
    );

    dir.file("log.sql", "GRANT SELECT ON {{t_log}} TO PUBLIC;\n");
    contains(
        &dir.fail(&adding_log()),
        "projection `p`: the definition of `t_log` has no `CREATE TABLE {{t_log}}` statement",
    );

    dir.file(
        "log.sql",
        "CREATE TABLE {{t_log}} (id bigint CHECK (id > :position));\n",
    );
    contains(&dir.fail(&adding_log()), "takes no event parameters");
}

#[test]
fn a_reshape_may_not_name_a_table_under_create() {
    let dir = Dir::new();
    dir.file("h.sql", WRITES_T);
    dir.file("log.sql", "CREATE UNLOGGED TABLE {{t_log}} (id bigint);\n");
    dir.file("v2.sql", "ALTER TABLE {{t_log}} ADD COLUMN x int;\n");
    let shown = dir.fail(&format!("{}reshape = \"v2.sql\"\n", adding_log()));
    contains(
        &shown,
        "v2.sql:1: projection `p`: the reshape names `{{t_log}}`, a table under `create`",
    );
}
