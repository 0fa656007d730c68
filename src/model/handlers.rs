//! Handler files: the SQL a projection runs for each event type.
//!
//! ```sql
//! -- on posting_created
//! INSERT INTO {{posting_state_projection}} (posting_id) VALUES (:stream::int);
//!
//! -- on conversation_completed, script_execution_completed
//! UPDATE {{posting_state_projection}} SET current_step = (:data->>'next')::int
//! WHERE posting_id = :stream::int;
//! ```
//!
//! A small lexer (strings, quoted identifiers, dollar quotes and comments are skipped) splits
//! each section into statements, turns `:param` into positional parameters and `{{table}}`
//! into a placeholder resolved per generation (live table or `_rebuild` clone). Every
//! statement is prepared with the same six typed parameters, so a statement may use any
//! subset of them.
//!
//! A file may instead hold one `-- per batch` section: set-based statements that run once per
//! batch, reading the batch's events from `:events` (a subquery with the columns `position`,
//! `stream`, `type`, `data`, `metadata`, `timestamp`), so each row is written once per batch
//! instead of once per event (apply/sql.rs runs them; source.rs builds the subquery).

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio_postgres::types::Type;

/// The values bound to every handler statement, in positional order `$1..$6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `:position` (`$1`, bigint).
    Position,
    /// `:stream` (`$2`, text).
    Stream,
    /// `:type` (`$3`, text).
    Type,
    /// `:data` (`$4`, jsonb).
    Data,
    /// `:metadata` (`$5`, jsonb).
    Metadata,
    /// `:timestamp` (`$6`, timestamptz).
    Timestamp,
}

impl Param {
    /// Every parameter, in positional order.
    pub const ALL: [Param; 6] = [
        Param::Position,
        Param::Stream,
        Param::Type,
        Param::Data,
        Param::Metadata,
        Param::Timestamp,
    ];

    fn from_name(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The name handlers write after the colon.
    pub fn name(self) -> &'static str {
        match self {
            Param::Position => "position",
            Param::Stream => "stream",
            Param::Type => "type",
            Param::Data => "data",
            Param::Metadata => "metadata",
            Param::Timestamp => "timestamp",
        }
    }

    /// `$1`-based index used in the prepared statement.
    pub fn index(self) -> usize {
        Param::ALL.iter().position(|p| *p == self).unwrap() + 1
    }
}

/// Types of `$1..$6`, in order; see [`Param`].
pub fn param_types() -> [Type; 6] {
    [
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::JSONB,
        Type::JSONB,
        Type::TIMESTAMPTZ,
    ]
}

/// A `{{table}}` reference inside a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// As written between the braces, trimmed.
    pub written: String,
    /// Line in the handler file.
    pub line: usize,
    /// True when the statement writes to it (INSERT INTO, UPDATE, DELETE FROM, …).
    pub writes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Sql(String),
    Table(usize), // index into Statement::tables
    /// `:events`: the batch's events, in a `-- per batch` section.
    Events,
}

/// One SQL statement of a section, as a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Line in the handler file where the statement starts (1-based).
    pub line: usize,
    parts: Vec<Part>,
    /// The `{{table}}` references, in order.
    pub tables: Vec<TableRef>,
    /// Uses a per-event `:param`.
    params: bool,
}

impl Statement {
    /// Produces the SQL text with each table reference replaced by `resolve(written)`.
    /// `:events` (only in `-- per batch` sections) renders as an empty relation; use
    /// [`Statement::render_pieces`] to put a batch in its place.
    pub fn render(&self, resolve: impl FnMut(&TableRef) -> String) -> String {
        self.render_pieces(resolve).join(EMPTY_EVENTS)
    }

    /// The SQL text split at each `:events`, tables resolved: joining the pieces with a batch's
    /// events subquery gives the statement for that batch.
    pub fn render_pieces(&self, mut resolve: impl FnMut(&TableRef) -> String) -> Vec<String> {
        let mut pieces = vec![String::new()];
        for part in &self.parts {
            let out = pieces.last_mut().expect("never empty");
            match part {
                Part::Sql(text) => out.push_str(text),
                Part::Table(i) => out.push_str(&resolve(&self.tables[*i])),
                Part::Events => pieces.push(String::new()),
            }
        }
        pieces
    }

    /// Whether the statement reads `:events`.
    pub fn reads_events(&self) -> bool {
        self.parts.contains(&Part::Events)
    }

    /// Whether the statement uses a per-event parameter (`:stream`, `:data`, …).
    pub fn uses_params(&self) -> bool {
        self.params
    }
}

/// What `:events` renders as outside a batch (a statement shown or checked on its own): the
/// same columns as a batch, no rows.
pub const EMPTY_EVENTS: &str =
    "(SELECT NULL::bigint AS position, NULL::text AS stream, NULL::text AS type, \
     NULL::jsonb AS data, NULL::jsonb AS metadata, NULL::timestamptz AS \"timestamp\" WHERE false)";

/// The statements run for one or more event types, or (`per_batch`) once per batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The event types the section handles; empty for a `-- per batch` section.
    pub event_types: Vec<String>,
    /// A `-- per batch` section: set-based statements over `:events`.
    pub per_batch: bool,
    /// Line of the section's header.
    pub line: usize,
    /// The statements, run in order for each event.
    pub statements: Vec<Statement>,
}

/// A parsed handler file.
#[derive(Debug, Clone)]
pub struct HandlerFile {
    /// The file (empty for a Rust projection).
    pub path: PathBuf,
    /// The sections, in file order.
    pub sections: Vec<Section>,
    /// The file's text, kept so each run can record exactly which handlers built a table.
    pub source: String,
}

impl HandlerFile {
    /// Reads and parses a handler file; errors name the file and line.
    pub fn load(path: &Path) -> Result<HandlerFile> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read handler file `{}`", path.display()))
                .caused_by_error(e)
        })?;
        let sections = parse(&source).map_err(|(line, why)| {
            let err = Error::config(format!("{}:{line}: {why}", path.display()));
            if why.contains("-- on") {
                err.with_hint("a section starts with a line `-- on EVENT_TYPE[, EVENT_TYPE...]`")
            } else {
                err
            }
        })?;
        Ok(HandlerFile {
            path: path.to_path_buf(),
            sections,
            source,
        })
    }

    /// Event type → index of the section that handles it.
    pub fn by_type(&self) -> BTreeMap<&str, usize> {
        let mut map = BTreeMap::new();
        for (i, section) in self.sections.iter().enumerate() {
            for t in &section.event_types {
                map.insert(t.as_str(), i);
            }
        }
        map
    }

    /// Whether the file is one `-- per batch` section (set-based handlers).
    pub fn per_batch(&self) -> bool {
        self.sections.iter().any(|s| s.per_batch)
    }

    /// How a section is headed, for messages: `-- on a, b` or `-- per batch`.
    pub fn header(section: &Section) -> String {
        if section.per_batch {
            "-- per batch".into()
        } else {
            format!("-- on {}", section.event_types.join(", "))
        }
    }

    /// Every `{{table}}` reference of the file.
    pub fn table_refs(&self) -> impl Iterator<Item = &TableRef> {
        self.sections
            .iter()
            .flat_map(|s| s.statements.iter())
            .flat_map(|st| st.tables.iter())
    }
}

/// Parses a single SQL statement with `{{table}}` references (used for checks).
pub fn parse_single(sql: &str) -> std::result::Result<Statement, String> {
    let mut statements = split_statements(sql, 1).map_err(|(_, why)| why)?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err("empty SQL".into()),
        n => Err(format!("expected one statement, found {n}")),
    }
}

/// Parses SQL text of one or more statements with `{{table}}` references (a `redefine`
/// file): the statements, or the line and reason of the first problem.
pub fn parse_statements(sql: &str) -> std::result::Result<Vec<Statement>, (usize, String)> {
    split_statements(sql, 1)
}

type ParseError = (usize, String);

/// A section header line.
#[derive(Debug, PartialEq, Eq)]
enum Header<'a> {
    /// `-- on a, b`: the event types, as written.
    On(&'a str),
    /// `-- per batch`.
    PerBatch,
}

/// Returns the section header if `line` is `-- on a, b` or `-- per batch`.
fn section_header(line: &str) -> Option<Header<'_>> {
    let rest = line.trim().strip_prefix("--")?.trim_start();
    let (word, types) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if word.eq_ignore_ascii_case("on") {
        Some(Header::On(types.trim()))
    } else if word.eq_ignore_ascii_case("per") && types.trim().eq_ignore_ascii_case("batch") {
        Some(Header::PerBatch)
    } else {
        None
    }
}

/// Parses a handler file's text into sections.
pub fn parse(text: &str) -> std::result::Result<Vec<Section>, ParseError> {
    let mut sections: Vec<Section> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // (header line, types (empty: per batch), body start line, body)
    let mut current: Option<(usize, Vec<String>, usize, String)> = None;
    let mut preamble = String::new();

    let finish = |current: Option<(usize, Vec<String>, usize, String)>,
                  sections: &mut Vec<Section>|
     -> std::result::Result<(), ParseError> {
        if let Some((line, types, body_line, body)) = current {
            let statements = split_statements(&body, body_line)?;
            let per_batch = types.is_empty();
            let header = if per_batch {
                "-- per batch".to_string()
            } else {
                format!("-- on {}", types.join(", "))
            };
            if statements.is_empty() {
                return Err((line, format!("section `{header}` has no SQL")));
            }
            for st in &statements {
                if per_batch && st.uses_params() {
                    return Err((
                        st.line,
                        "a `-- per batch` statement runs once per batch: it reads the events from `:events` (columns position, stream, type, data, metadata, timestamp), not from per-event parameters such as `:stream`".into(),
                    ));
                }
                if !per_batch && st.reads_events() {
                    return Err((
                        st.line,
                        format!("`:events` is the batch of a `-- per batch` section; section `{header}` runs once per event (use :position, :stream, :type, :data, :metadata, :timestamp)"),
                    ));
                }
            }
            sections.push(Section {
                event_types: types,
                per_batch,
                line,
                statements,
            });
        }
        Ok(())
    };

    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        if let Some(Header::PerBatch) = section_header(raw) {
            if let Some(first) = sections
                .first()
                .map(|s| s.line)
                .or(current.as_ref().map(|c| c.0))
            {
                return Err((
                    lineno,
                    format!("a `-- per batch` section must be the only section of its file (a section starts at line {first}): a projection is either per event or per batch"),
                ));
            }
            current = Some((lineno, Vec::new(), lineno + 1, String::new()));
        } else if let Some(Header::On(types)) = section_header(raw) {
            if let Some((first, _, _, _)) = current.as_ref().filter(|c| c.1.is_empty()) {
                return Err((
                    lineno,
                    format!("a `-- per batch` section (line {first}) must be the only section of its file: a projection is either per event or per batch"),
                ));
            }
            finish(current.take(), &mut sections)?;
            let types: Vec<String> = types
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            if types.is_empty() {
                return Err((lineno, "`-- on` names no event type".into()));
            }
            for t in &types {
                if let Some(first) = seen.insert(t.clone(), lineno) {
                    return Err((
                        lineno,
                        format!("event type `{t}` already has a section at line {first}"),
                    ));
                }
            }
            current = Some((lineno, types, lineno + 1, String::new()));
        } else if let Some((_, _, _, body)) = current.as_mut() {
            body.push_str(raw);
            body.push('\n');
        } else {
            preamble.push_str(raw);
            preamble.push('\n');
        }
    }
    finish(current.take(), &mut sections)?;

    let stray = split_statements(&preamble, 1)?;
    if let Some(first) = stray.first() {
        return Err((
            first.line,
            "SQL before the first `-- on EVENT_TYPE` (or `-- per batch`) line belongs to no section".into(),
        ));
    }
    if sections.is_empty() {
        return Err((
            1,
            "no `-- on EVENT_TYPE` (or `-- per batch`) section found".into(),
        ));
    }
    Ok(sections)
}

/// Splits a section body into statements, lexing just enough SQL to find `;`, `:param` and
/// `{{table}}` outside strings, quoted identifiers, dollar quotes and comments.
pub(crate) fn split_statements(
    body: &str,
    first_line: usize,
) -> std::result::Result<Vec<Statement>, ParseError> {
    let chars: Vec<char> = body.chars().collect();
    let mut statements = Vec::new();
    let mut line = first_line;
    let mut i = 0;

    let mut parts: Vec<Part> = Vec::new();
    let mut tables: Vec<TableRef> = Vec::new();
    let mut sql = String::new();
    let mut start_line: Option<usize> = None;
    let mut params = false;
    // Recent keywords, upper-cased, to tell whether a table reference is written to.
    let mut words: Vec<String> = Vec::new();

    macro_rules! flush_sql {
        () => {
            if !sql.is_empty() {
                parts.push(Part::Sql(std::mem::take(&mut sql)));
            }
        };
    }

    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // Comments: kept out of statement text, never start a statement.
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let open = line;
            let mut depth = 0;
            loop {
                match (chars.get(i), chars.get(i + 1)) {
                    (Some('/'), Some('*')) => {
                        depth += 1;
                        i += 2;
                    }
                    (Some('*'), Some('/')) => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    (Some(ch), _) => {
                        if *ch == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    (None, _) => return Err((open, "unterminated /* comment".into())),
                }
            }
            sql.push(' ');
            continue;
        }
        if c == '\n' {
            line += 1;
            sql.push(c);
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            sql.push(c);
            i += 1;
            continue;
        }
        if start_line.is_none() && c != ';' {
            start_line = Some(line);
        }
        match c {
            ';' => {
                flush_sql!();
                if let Some(l) = start_line.take() {
                    statements.push(Statement {
                        line: l,
                        parts: std::mem::take(&mut parts),
                        tables: std::mem::take(&mut tables),
                        params: std::mem::take(&mut params),
                    });
                }
                parts.clear();
                words.clear();
                i += 1;
            }
            '\'' => {
                // E'...' strings honour backslash escapes.
                let escapes = matches!(sql.chars().last(), Some('e' | 'E'))
                    && !sql
                        .chars()
                        .rev()
                        .nth(1)
                        .is_some_and(|p| p.is_alphanumeric() || p == '_');
                let open = line;
                sql.push(c);
                i += 1;
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err((open, "unterminated string literal".into()));
                    };
                    sql.push(ch);
                    i += 1;
                    if ch == '\n' {
                        line += 1;
                    }
                    if escapes && ch == '\\' {
                        if let Some(&esc) = chars.get(i) {
                            sql.push(esc);
                            i += 1;
                        }
                        continue;
                    }
                    if ch == '\'' {
                        if chars.get(i) == Some(&'\'') {
                            sql.push('\'');
                            i += 1;
                            continue;
                        }
                        break;
                    }
                }
                words.push(String::new());
            }
            '"' => {
                let open = line;
                let mut ident = String::new();
                sql.push(c);
                i += 1;
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err((open, "unterminated quoted identifier".into()));
                    };
                    sql.push(ch);
                    i += 1;
                    if ch == '"' {
                        if chars.get(i) == Some(&'"') {
                            sql.push('"');
                            ident.push('"');
                            i += 1;
                            continue;
                        }
                        break;
                    }
                    ident.push(ch);
                }
                words.push(ident);
            }
            '$' if next.is_some_and(|n| n == '$' || n.is_alphabetic() || n == '_') => {
                // Dollar quote: $tag$ ... $tag$
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                if chars.get(j) != Some(&'$') {
                    sql.push(c);
                    i += 1;
                    continue;
                }
                let tag: String = chars[i..=j].iter().collect();
                let open = line;
                sql.push_str(&tag);
                i = j + 1;
                loop {
                    if i >= chars.len() {
                        return Err((open, format!("unterminated dollar quote {tag}")));
                    }
                    if chars[i..].starts_with(&tag.chars().collect::<Vec<_>>()) {
                        sql.push_str(&tag);
                        i += tag.chars().count();
                        break;
                    }
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    sql.push(chars[i]);
                    i += 1;
                }
                words.push(String::new());
            }
            '{' if next == Some('{') => {
                let open = line;
                let mut j = i + 2;
                let mut inner = String::new();
                while j + 1 < chars.len() && !(chars[j] == '}' && chars[j + 1] == '}') {
                    if chars[j] == '\n' {
                        return Err((open, "`{{` without `}}` on the same line".into()));
                    }
                    inner.push(chars[j]);
                    j += 1;
                }
                if j + 1 >= chars.len() {
                    return Err((open, "`{{` without `}}`".into()));
                }
                let written = inner.trim().to_string();
                if written.is_empty() {
                    return Err((open, "empty `{{}}` table reference".into()));
                }
                flush_sql!();
                tables.push(TableRef {
                    written,
                    line: open,
                    writes: is_write_target(&words),
                });
                parts.push(Part::Table(tables.len() - 1));
                words.push("{{table}}".into());
                i = j + 2;
            }
            ':' if next == Some(':') => {
                sql.push_str("::");
                i += 2;
            }
            ':' if next.is_some_and(|n| n.is_alphabetic() || n == '_') => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                if name.eq_ignore_ascii_case("events") {
                    flush_sql!();
                    parts.push(Part::Events);
                    words.push("{{table}}".into());
                    i = j;
                    continue;
                }
                let Some(param) = Param::from_name(&name.to_lowercase()) else {
                    return Err((
                        line,
                        format!(
                            "unknown parameter `:{name}`; known: :position, :stream, :type, :data, :metadata, :timestamp (and :events in a `-- per batch` section)"
                        ),
                    ));
                };
                params = true;
                sql.push_str(&format!("${}", param.index()));
                words.push(String::new());
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '$')
                {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                sql.push_str(&word);
                words.push(word.to_uppercase());
                i = j;
            }
            _ => {
                sql.push(c);
                if !c.is_whitespace() {
                    words.push(c.to_string());
                }
                i += 1;
            }
        }
    }
    flush_sql!();
    if let Some(l) = start_line {
        statements.push(Statement {
            line: l,
            parts,
            tables,
            params,
        });
    }
    // Drop surrounding whitespace of each statement's first and last text part.
    for st in &mut statements {
        if let Some(Part::Sql(first)) = st.parts.first_mut() {
            *first = first.trim_start().to_string();
        }
        if let Some(Part::Sql(last)) = st.parts.last_mut() {
            *last = last.trim_end().to_string();
        }
    }
    Ok(statements)
}

/// Whether the keywords before a table reference make it the target of a write. Walks back
/// over modifiers (`IF EXISTS`, `ONLY`, `TABLE`) and over earlier items of a table list
/// (`TRUNCATE {{a}}, {{b}}`), then looks at the statement keyword.
fn is_write_target(words: &[String]) -> bool {
    let mut rest = words
        .iter()
        .rev()
        .map(String::as_str)
        .skip_while(|w| matches!(*w, "IF" | "EXISTS" | "ONLY" | "TABLE" | "," | "{{table}}"));
    match rest.next() {
        Some("INTO" | "UPDATE" | "TRUNCATE" | "COPY" | "DROP" | "ALTER") => true,
        Some("FROM") => rest.next() == Some("DELETE"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(st: &Statement) -> String {
        st.render(|t| format!("<{}>", t.written))
    }

    #[test]
    fn a_per_batch_section_reads_events_and_splits_there() {
        let text = "\
-- set-based
-- per batch
INSERT INTO {{t}} AS t (k, n)
SELECT e.stream, count(*) FROM :events AS e WHERE e.type = ':events' GROUP BY 1
ON CONFLICT (k) DO UPDATE SET n = t.n + EXCLUDED.n;
DELETE FROM {{t}} WHERE k IN (SELECT stream FROM :Events x WHERE x.type = 'gone');
";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 1);
        assert!(sections[0].per_batch);
        assert!(sections[0].event_types.is_empty());
        let st = &sections[0].statements[0];
        assert!(st.reads_events() && !st.uses_params());
        let pieces = st.render_pieces(|r| format!("<{}>", r.written));
        assert_eq!(
            pieces.len(),
            2,
            "split at the one :events outside the string"
        );
        assert!(pieces[0].ends_with("count(*) FROM "));
        assert!(pieces[1].starts_with(" AS e WHERE e.type = ':events'"));
        assert!(st.tables[0].writes);
        assert!(render(st).contains(EMPTY_EVENTS));
        assert_eq!(
            sections[0].statements[1]
                .render_pieces(|_| "x".into())
                .len(),
            2
        );
    }

    #[test]
    fn per_batch_and_per_event_sections_do_not_mix() {
        let err = |text: &str| parse(text).unwrap_err();
        let (line, why) = err("-- per batch\nINSERT INTO {{t}} VALUES (:stream);\n");
        assert_eq!(line, 2);
        assert!(why.contains("runs once per batch"), "{why}");
        let (line, why) = err("-- on a\nINSERT INTO {{t}} SELECT * FROM :events e;\n");
        assert_eq!(line, 2);
        assert!(why.contains("`:events` is the batch"), "{why}");
        let (line, why) = err("-- on a\nSELECT 1;\n-- per batch\nSELECT 1;\n");
        assert_eq!(line, 3);
        assert!(why.contains("only section"), "{why}");
        let (line, why) = err("-- per batch\nSELECT 1;\n-- on a\nSELECT 1;\n");
        assert_eq!(line, 3);
        assert!(why.contains("only section"), "{why}");
        // `-- per batches` or `-- per event` are comments, not headers.
        assert!(section_header("-- per batches").is_none());
        assert_eq!(section_header("  --  PER   Batch "), Some(Header::PerBatch));
    }

    #[test]
    fn sections_statements_params_and_tables() {
        let text = "\
-- handlers for postings
-- on posting_created
INSERT INTO {{posting_state_projection}} (posting_id, step) VALUES (:stream::int, 1)
ON CONFLICT (posting_id) DO NOTHING;

-- on conversation_completed, script_execution_completed
UPDATE {{posting_state_projection}} SET step = (:data->>'next')::int -- trailing comment
WHERE posting_id = :stream::int;
SELECT 1 FROM {{ other }} WHERE x = ':not_a_param' AND y = $q$ ;{{no}} $q$;
";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].event_types, vec!["posting_created"]);
        assert_eq!(sections[0].line, 2);
        assert_eq!(
            render(&sections[0].statements[0]),
            "INSERT INTO <posting_state_projection> (posting_id, step) VALUES ($2::int, 1)\nON CONFLICT (posting_id) DO NOTHING"
        );
        assert!(sections[0].statements[0].tables[0].writes);
        assert_eq!(
            sections[1].event_types,
            vec!["conversation_completed", "script_execution_completed"]
        );
        let s = &sections[1].statements;
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].line, 7);
        assert!(render(&s[0])
            .starts_with("UPDATE <posting_state_projection> SET step = ($4->>'next')::int"));
        assert!(s[0].tables[0].writes);
        assert_eq!(s[1].line, 9);
        assert!(!s[1].tables[0].writes, "a SELECT reads");
        assert_eq!(
            render(&s[1]),
            "SELECT 1 FROM <other> WHERE x = ':not_a_param' AND y = $q$ ;{{no}} $q$"
        );
    }

    #[test]
    fn write_detection() {
        for (sql, writes) in [
            ("DELETE FROM {{t}} WHERE true", true),
            ("DELETE FROM ONLY {{t}}", true),
            ("TRUNCATE {{t}}", true),
            ("UPDATE ONLY {{t}} SET a = 1", true),
            ("INSERT INTO {{t}} SELECT * FROM {{u}}", true),
            ("SELECT * FROM {{u}} JOIN {{v}} ON true", false),
            ("UPDATE {{a}} SET x = (SELECT y FROM {{b}})", true),
            ("TRUNCATE TABLE ONLY {{t}}", true),
            ("DROP TABLE IF EXISTS {{t}}", true),
            ("ALTER TABLE ONLY {{t}} ADD COLUMN x int", true),
            ("SELECT * FROM {{u}} FOR UPDATE OF {{u}}", false),
            ("DELETE FROM {{t}} USING {{u}}", true),
        ] {
            let sections = parse(&format!("-- on e\n{sql};")).unwrap();
            let st = &sections[0].statements[0];
            assert_eq!(st.tables[0].writes, writes, "{sql}");
        }
        let sections = parse("-- on e\nUPDATE {{a}} SET x = (SELECT y FROM {{b}});").unwrap();
        assert!(!sections[0].statements[0].tables[1].writes);
        let sections = parse("-- on e\nTRUNCATE {{a}}, {{b}};").unwrap();
        assert!(
            sections[0].statements[0].tables[1].writes,
            "every table of a TRUNCATE list"
        );
        let sections = parse("-- on e\nDELETE FROM {{a}} USING {{b}};").unwrap();
        assert!(!sections[0].statements[0].tables[1].writes, "USING reads");
        let sections = parse("-- on e\nSELECT 1 FROM {{a}}, {{b}};").unwrap();
        assert!(!sections[0].statements[0].tables[1].writes);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("SELECT 1;\n-- on e\nSELECT 2;").unwrap_err().0, 1);
        let (line, why) = parse("-- on e\n\nSELECT :nope;").unwrap_err();
        assert_eq!(line, 3);
        assert!(why.contains(":nope"), "{why}");
        let (line, why) = parse("-- on a\nSELECT 1;\n-- on b, a\nSELECT 2;").unwrap_err();
        assert_eq!(line, 3);
        assert!(why.contains("line 1"), "{why}");
        assert_eq!(parse("-- on a\nSELECT 'x;\n").unwrap_err().0, 2);
        assert!(parse("-- on a\n-- only a comment\n").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn escaped_strings_and_casts() {
        let sections = parse("-- on e\nSELECT E'it\\'s;', :timestamp::date, arr[1:2];").unwrap();
        assert_eq!(
            render(&sections[0].statements[0]),
            "SELECT E'it\\'s;', $6::date, arr[1:2]"
        );
    }
}
