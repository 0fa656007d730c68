//! The reshape file a projection declares (`reshape = "shapes/balances_v2.sql"`): DDL
//! statements with the handlers' `{{table}}` templating, run on the projection's own clones.

use crate::error::{Error, Result};
use crate::model::handlers::Statement;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A parsed reshape file.
#[derive(Debug, Clone)]
pub struct ReshapeFile {
    /// The file, as the config names it (joined to the config's directory).
    pub path: PathBuf,
    /// The file's text, recorded with the run.
    pub source: String,
    /// The statements, in file order.
    pub statements: Vec<Statement>,
}

impl ReshapeFile {
    /// Reads and parses a reshape file; errors name the file and line.
    pub fn load(path: &Path) -> Result<ReshapeFile> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read reshape file `{}`", path.display())).caused_by(e)
        })?;
        Self::parse(path, &source)
    }

    /// Parses the text of a reshape file read from `path`.
    pub fn parse(path: &Path, source: &str) -> Result<ReshapeFile> {
        let statements = crate::model::handlers::split_statements(source, 1)
            .map_err(|(line, why)| Error::config(format!("{}:{line}: {why}", path.display())))?;
        if statements.is_empty() {
            return Err(Error::config(format!(
                "{}: the reshape file has no statements",
                path.display()
            ))
            .with_hint("write the DDL that gives the rebuilt tables their new shape, e.g. `ALTER TABLE {{balances}} ADD COLUMN currency text`"));
        }
        for st in &statements {
            if st.uses_params() || st.reads_events() {
                return Err(Error::config(format!(
                    "{}:{}: a reshape statement runs once, on the empty rebuilt table: it takes no event parameters (`:name`)",
                    path.display(),
                    st.line
                ))
                .with_hint("write a cast as `::type`; `:name` is a handler parameter"));
            }
        }
        Ok(ReshapeFile {
            path: path.to_path_buf(),
            source: source.to_string(),
            statements,
        })
    }

    /// The SHA-256 of the file's text, hex: what a run records and a later run compares.
    pub fn hash(&self) -> String {
        hash(&self.source)
    }

    /// Where a statement is, for messages: `file:line`.
    pub fn at(&self, statement: &Statement) -> String {
        format!("{}:{}", self.path.display(), statement.line)
    }
}

/// `create = { "table" = "file.sql" }`: a table the projection lists under `tables` that may not
/// exist live yet, and the DDL that makes it (`CREATE TABLE {{table}} (…)`, then indexes,
/// comments, grants). Kept apart from `reshape`, which is a change applied to a LIKE copy of a
/// live table and proven as "old table + change": a new table has no old one, so its DDL is a
/// whole definition, run instead of the LIKE clone while the table does not exist, and compared
/// with the live table (never run again) once it does.
#[derive(Debug, Clone)]
pub struct TableDefinition {
    /// The table as the key names it.
    pub table: crate::model::ident::ConfigTableRef,
    /// The key as written.
    pub key: String,
    /// Line of the entry in the config file.
    pub line: usize,
    /// The statements (parsed like a reshape file: `{{table}}` references, no parameters).
    pub file: ReshapeFile,
}

/// The SHA-256 of a reshape file's text, hex.
pub fn hash(source: &str) -> String {
    Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_their_tables() {
        let f = ReshapeFile::parse(
            Path::new("shapes/v2.sql"),
            "-- new currency\nALTER TABLE {{balances}} ADD COLUMN currency text NOT NULL;\n\nCREATE INDEX ON {{ balances }} (currency);\nCOMMENT ON COLUMN {{balances}}.currency IS 'ISO ''code''';\n",
        )
        .unwrap();
        assert_eq!(f.statements.len(), 3);
        assert_eq!(f.statements[0].line, 2);
        assert_eq!(f.statements[1].line, 4);
        assert_eq!(f.statements[1].tables[0].written, "balances");
        let sql = f.statements[2].render(|_| "\"public\".\"balances_rebuild\"".into());
        assert_eq!(
            sql.trim(),
            "COMMENT ON COLUMN \"public\".\"balances_rebuild\".currency IS 'ISO ''code'''"
        );
        assert_eq!(f.hash().len(), 64);
    }

    #[test]
    fn parameters_and_empty_files_are_refused() {
        let e = ReshapeFile::parse(
            Path::new("v2.sql"),
            "ALTER TABLE {{b}} ADD COLUMN x int;\nUPDATE {{b}} SET x = :position;",
        )
        .unwrap_err();
        assert!(e.message.starts_with("v2.sql:2: "), "{}", e.message);
        let e = ReshapeFile::parse(Path::new("v2.sql"), "-- nothing\n").unwrap_err();
        assert!(e.message.contains("no statements"), "{}", e.message);
    }
}
