//! One error type for the whole library.
//!
//! An on-call engineer reads these at night, so every error says what went wrong (`message`),
//! why (`causes`, outermost first) and, where we know it, what to do (`hint`). The `kind`
//! decides the process exit code; the binary maps it, the library never exits.

use std::fmt;

/// What class of failure this is. Each kind has one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Unexpected failure at run time: a handler error, a lost connection. Exit 1.
    Runtime,
    /// Bad arguments or configuration; nothing was written. Exit 2.
    Config,
    /// A health check refused the swap; the rebuilt tables are kept. Exit 3.
    HealthCheck,
    /// The swap would not keep the live table's definition, grants or dependents intact, so
    /// it was refused (rolled back); the rebuilt tables are kept. Exit 4.
    Fidelity,
    /// Another run holds the projection, or the swap could not get its locks. Exit 75.
    Busy,
    /// Stopped by Ctrl-C or SIGTERM. Exit 130.
    Interrupted,
}

impl ErrorKind {
    /// The process exit code documented in the README for this kind of failure.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Runtime => 1,
            ErrorKind::Config => 2,
            ErrorKind::HealthCheck => 3,
            ErrorKind::Fidelity => 4,
            ErrorKind::Busy => 75,
            ErrorKind::Interrupted => 130,
        }
    }
}

/// An error with its context chain and an optional hint.
#[derive(Debug, Clone)]
pub struct Error {
    /// Decides the exit code.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
    /// Why, outermost first.
    pub causes: Vec<String>,
    /// What to do about it, when known.
    pub hint: Option<String>,
    /// The database's SQLSTATE, when the error came from the database: decides retries.
    pub sqlstate: Option<String>,
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            causes: Vec::new(),
            hint: None,
            sqlstate: None,
        }
    }

    /// A usage or config error (exit 2).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A runtime failure (exit 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }

    /// Busy: locks not obtained or another run active (exit 75).
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, message)
    }

    /// Stopped on request (exit 130).
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Interrupted, message)
    }

    /// A health check refused the swap (exit 3).
    pub fn health_check(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::HealthCheck, message)
    }

    /// The swap would not keep the table intact (exit 4).
    pub fn fidelity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fidelity, message)
    }

    /// Adds a cause below the message (e.g. the database's own words).
    pub fn caused_by(mut self, cause: impl fmt::Display) -> Self {
        self.causes.push(cause.to_string());
        self
    }

    /// Sets the hint: what to do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Wraps this error in a higher-level message; the old message becomes the first cause.
    pub fn context(mut self, message: impl Into<String>) -> Self {
        let inner = std::mem::replace(&mut self.message, message.into());
        self.causes.insert(0, inner);
        self
    }
}

impl Error {
    /// Errors that a retry of the same work can get past: serialization failure, deadlock,
    /// lock timeout. Everything else (a handler's own error) would fail the same way again.
    pub fn is_transient(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some("40001" | "40P01" | "55P03"))
    }

    /// Whether the connection to the server was lost (closed, terminated by an administrator,
    /// a server shutdown or crash, a failed reconnect): the work can continue on a new
    /// connection from its last commit. By the text, because the error may have been rebuilt
    /// with more context on its way up.
    pub fn is_connection_loss(&self) -> bool {
        if matches!(self.kind, ErrorKind::Busy | ErrorKind::Interrupted) {
            return false;
        }
        const LOST: &[&str] = &[
            "[SQLSTATE 57P01]", // admin_shutdown (pg_terminate_backend, smart/fast shutdown)
            "[SQLSTATE 57P02]", // crash_shutdown
            "[SQLSTATE 57P03]", // cannot_connect_now (starting up, shutting down)
            "[SQLSTATE 25P03]", // idle_in_transaction_session_timeout ended the session
            "[SQLSTATE 25P04]", // transaction_timeout (PostgreSQL 17) ended the session
            "[SQLSTATE 08",     // connection exceptions
            "connection closed",
            "error communicating with the server",
        ];
        self.message.starts_with("cannot connect to PostgreSQL")
            || std::iter::once(&self.message)
                .chain(self.causes.iter())
                .any(|t| LOST.iter().any(|pattern| t.contains(pattern)))
    }

    /// The message and its causes without the `error:` prefix, for storing in the state schema.
    pub fn plain(&self) -> String {
        let mut text = self.message.clone();
        for cause in &self.causes {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        text
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        for cause in &self.causes {
            write!(f, "\n  caused by: {cause}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Renders a database error with the server's detail, hint and position when it has them:
/// the bare `Display` of tokio-postgres says only "db error".
pub fn describe_pg(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (hint: {hint})"));
        }
        text.push_str(&format!(" [SQLSTATE {}]", db.code().code()));
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(err: &tokio_postgres::Error) -> Option<&str> {
    err.as_db_error().map(|db| db.code().code())
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        let kind = if err.is_closed() {
            ErrorKind::Runtime
        } else {
            match sqlstate(&err) {
                // query_canceled: our own cancel on Ctrl-C.
                Some("57014") => ErrorKind::Interrupted,
                _ => ErrorKind::Runtime,
            }
        };
        // The server's own words (message, detail, hint, SQLSTATE) are the message: a context
        // added on the way up pushes them down as the first cause, never an empty layer.
        let mut out = Error::new(kind, describe_pg(&err));
        out.sqlstate = sqlstate(&err).map(String::from);
        out
    }
}

/// Attaches context to database results without a closure at every call site.
pub trait Context<T> {
    /// Replaces the message, keeping the original as the first cause.
    fn context(self, message: impl Into<String>) -> Result<T>;
    /// As [`Context::context`], with the message built only on error.
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, tokio_postgres::Error> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::from(e).context(message))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::from(e).context(f()))
    }
}

impl<T> Context<T> for Result<T> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.context(message))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_loss_is_told_by_its_text_whatever_the_context() {
        let lost = |cause: &str| Error::runtime("cannot read events").caused_by(cause);
        assert!(lost("connection closed").is_connection_loss());
        assert!(lost(
            "FATAL: terminating connection due to administrator command [SQLSTATE 57P01]"
        )
        .is_connection_loss());
        assert!(lost(
            "FATAL: terminating connection due to idle-in-transaction timeout [SQLSTATE 25P03]"
        )
        .is_connection_loss());
        assert!(Error::runtime("cannot connect to PostgreSQL at u@h:5432/d").is_connection_loss());
        assert!(!lost("ERROR: division by zero [SQLSTATE 22012]").is_connection_loss());
        assert!(!lost("ERROR: deadlock detected [SQLSTATE 40P01]").is_connection_loss());
        // Our own Ctrl-C and a busy projection are never "lost connections".
        assert!(!Error::interrupted("stopped")
            .caused_by("connection closed")
            .is_connection_loss());
        assert!(!Error::busy("locked")
            .caused_by("connection closed")
            .is_connection_loss());
    }

    #[test]
    fn display_has_causes_and_hint() {
        let err = Error::config("bad key")
            .caused_by("unknown field `tabel`")
            .with_hint("did you mean `table`?");
        assert_eq!(
            err.to_string(),
            "error: bad key\n  caused by: unknown field `tabel`\n  hint: did you mean `table`?"
        );
        assert_eq!(err.kind.exit_code(), 2);
    }

    #[test]
    fn a_postgres_error_under_context_is_one_layer_with_its_own_words() {
        let pg = "port=notanumber"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        let words = describe_pg(&pg);
        let err = Error::from(pg).context("cannot connect");
        assert_eq!(err.message, "cannot connect");
        assert_eq!(err.causes, vec![words.clone()]);
        assert!(!words.is_empty() && words != "database error", "{words}");
        // A `?` first (the error as it is), a context later: still one layer.
        let pg = "port=y".parse::<tokio_postgres::Config>().unwrap_err();
        let err: Result<()> = Err(Error::from(pg));
        let err = err.context("outer").unwrap_err();
        assert_eq!(err.causes.len(), 1, "{err}");
    }

    #[test]
    fn context_pushes_message_down() {
        let err = Error::runtime("inner").context("outer");
        assert_eq!(err.message, "outer");
        assert_eq!(err.causes, vec!["inner".to_string()]);
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(ErrorKind::Runtime.exit_code(), 1);
        assert_eq!(ErrorKind::Config.exit_code(), 2);
        assert_eq!(ErrorKind::HealthCheck.exit_code(), 3);
        assert_eq!(ErrorKind::Fidelity.exit_code(), 4);
        assert_eq!(ErrorKind::Busy.exit_code(), 75);
        assert_eq!(ErrorKind::Interrupted.exit_code(), 130);
    }
}
