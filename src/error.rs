//! One error type for the whole library.
//!
//! An on-call engineer reads these at night, so every error says what went wrong (`message`),
//! why (`causes`, outermost first) and, where we know it, what to do (`hint`). The `kind`
//! decides the process exit code; the binary maps it, the library never exits.
//!
//! A library user decides by what is typed, never by the words: [`kind`](Details::kind)
//! (an [`ErrorKind`], one per exit code), [`reason`](Details::reason) (a [`Reason`], where a
//! caller acts on it), [`Error::sqlstate`]; an `Error` dereferences to its [`Details`]. Where the error came from another library's error (a
//! `tokio_postgres::Error`, an `std::io::Error`, …) that error is kept as the
//! [`source`](std::error::Error::source), so the chain can be walked and downcast:
//!
//! ```
//! use std::error::Error as _;
//!
//! let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
//! let err = reproject::Error::config("cannot read config file `x.toml`").caused_by_error(io);
//! let source = err.source().expect("the io::Error");
//! let io = source.downcast_ref::<std::io::Error>().expect("kept as it was");
//! assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
//! // Display is unchanged: the source's words are the cause.
//! assert_eq!(err.to_string(), "error: cannot read config file `x.toml`\n  caused by: no such file");
//! ```

use std::fmt;
use std::sync::Arc;

/// The original error kept as [`Error`]'s source (shared, so an `Error` stays `Clone`).
type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What class of failure this is. Each kind has one documented exit code
/// ([`ErrorKind::exit_code`]). Non-exhaustive: a later version may add a kind (and its exit
/// code), so a `match` needs a `_` arm (treat an unknown kind as a runtime failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The user answered no to a confirmation prompt; nothing was changed. Exit 5.
    Declined,
    /// `reproject gaps`: events were found committed at positions already passed as final
    /// gaps, and not all of them were repaired. Exit 6.
    LateEvents,
    /// Another run holds the projection, or the swap could not get its locks. Exit 75.
    Busy,
    /// Stopped by Ctrl-C or SIGTERM. Exit 130.
    Interrupted,
}

impl ErrorKind {
    /// A stable name for the kind, for machine-readable output (`--json`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Runtime => "runtime",
            ErrorKind::Config => "config",
            ErrorKind::HealthCheck => "health_check",
            ErrorKind::Fidelity => "fidelity",
            ErrorKind::Declined => "declined",
            ErrorKind::LateEvents => "late_events",
            ErrorKind::Busy => "busy",
            ErrorKind::Interrupted => "interrupted",
        }
    }

    /// The process exit code documented in docs/reference/exit-codes.md for this kind of failure.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Runtime => 1,
            ErrorKind::Config => 2,
            ErrorKind::HealthCheck => 3,
            ErrorKind::Fidelity => 4,
            ErrorKind::Declined => 5,
            ErrorKind::LateEvents => 6,
            ErrorKind::Busy => 75,
            ErrorKind::Interrupted => 130,
        }
    }
}

/// Why an error happened, where the caller decides what to do next by it. Set where the error
/// is made, so no caller has to read the message to tell; [`Error::is_connection_loss`] reads
/// it. Non-exhaustive: a later version may add reasons, so a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// `rebuild --resume` found no unfinished run of the selection to continue.
    NothingToResume,
    /// No connection to the server could be made (refused, timed out, TLS or authentication
    /// failed, the pool stayed busy).
    CannotConnect,
    /// An established connection was closed or broke under a statement.
    ConnectionLost,
    /// The run to continue was interrupted before its clone committed: it has no tables and
    /// no progress, so there is nothing of it to continue (a new run starts over).
    CloneNotCommitted,
    /// A projection's handler failed on the event at `position` (a handler error, not a lost
    /// connection): what the live runner parks, and what a replay looks up among the events
    /// the runner was told to skip.
    HandlerFailed {
        /// The event's position in the global order.
        position: i64,
    },
}

/// An error with its context chain and an optional hint.
///
/// Its `Display` is what the binary prints: `error: MESSAGE`, one `caused by: …` line per
/// cause, then `hint: …`. [`source`](std::error::Error::source) is the original error it was
/// made from, when there is one (see the module documentation).
///
/// The fields are in a box ([`Details`], reached through `Deref`: `err.kind`, `err.hint`), so
/// an `Error` is one pointer wide and every `Result` of the library stays small however much
/// an error carries.
#[derive(Debug, Clone)]
pub struct Error(Box<Details>);

/// What an [`Error`] carries; an `Error` dereferences to it.
#[derive(Debug, Clone)]
pub struct Details {
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
    /// Why, when a caller acts on it (see [`Reason`]).
    pub reason: Option<Reason>,
    /// The error this one was made from, if any: [`std::error::Error::source`].
    source: Option<Source>,
}

impl std::ops::Deref for Error {
    type Target = Details;
    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Details {
            kind,
            message: message.into(),
            causes: Vec::new(),
            hint: None,
            sqlstate: None,
            reason: None,
            source: None,
        }))
    }

    /// The fields, moved out of the box.
    pub fn into_details(self) -> Details {
        *self.0
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

    /// Adds `err`'s words as a cause (as [`Error::caused_by`]) and keeps `err` itself as the
    /// [`source`](std::error::Error::source).
    pub fn caused_by_error(self, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        let cause = err.to_string();
        self.caused_by(cause).with_source(err)
    }

    /// Keeps `err`, the error this one reports, as its [`source`](std::error::Error::source);
    /// the message and causes are left as they are.
    pub fn with_source(mut self, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(err));
        self
    }

    /// Sets the hint: what to do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets why this error happened (see [`Reason`]).
    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Takes the SQLSTATE and connection state of the database error this error reports, for
    /// the sites that describe `err` in their own words rather than converting it.
    pub fn with_db_state(mut self, err: &tokio_postgres::Error) -> Self {
        self.sqlstate = sqlstate(err).map(String::from);
        if connection_lost(err) {
            self.reason = Some(Reason::ConnectionLost);
        }
        self
    }

    /// Takes the SQLSTATE, reason and source of `inner`, an error this one reports in its own
    /// words.
    pub fn with_state_of(mut self, inner: &Error) -> Self {
        self.sqlstate = inner.sqlstate.clone();
        self.reason = inner.reason;
        if inner.source.is_some() {
            self.source = inner.source.clone();
        }
        self
    }

    /// The database's SQLSTATE, when the error came from the database.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
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
    /// connection from its last commit. By the SQLSTATE and the connection state recorded
    /// where the error was made, which survive any context added on the way up.
    pub fn is_connection_loss(&self) -> bool {
        if matches!(self.kind, ErrorKind::Busy | ErrorKind::Interrupted) {
            return false;
        }
        matches!(
            self.reason,
            Some(Reason::CannotConnect | Reason::ConnectionLost)
        ) || self.sqlstate().is_some_and(|code| {
            matches!(
                code,
                "57P01" // admin_shutdown (pg_terminate_backend, smart/fast shutdown)
                    | "57P02" // crash_shutdown
                    | "57P03" // cannot_connect_now (starting up, shutting down)
                    | "25P03" // idle_in_transaction_session_timeout ended the session
                    | "25P04" // transaction_timeout (PostgreSQL 17) ended the session
            ) || code.starts_with("08") // connection exceptions
        })
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

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

/// Whether `err` means the connection is gone: tokio-postgres closed it, or reading or writing
/// the socket failed (its source is then the I/O error).
pub fn connection_lost(err: &tokio_postgres::Error) -> bool {
    err.is_closed()
        || (err.as_db_error().is_none()
            && std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>()))
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
        Error::new(kind, describe_pg(&err))
            .with_db_state(&err)
            .with_source(err)
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

    fn coded(code: &str) -> Error {
        let mut e = Error::runtime("cannot read events");
        e.sqlstate = Some(code.to_string());
        e
    }

    #[test]
    fn connection_loss_is_told_by_sqlstate_and_reason_whatever_the_context() {
        for code in [
            "57P01", "57P02", "57P03", "25P03", "25P04", "08006", "08003",
        ] {
            assert!(coded(code).is_connection_loss(), "{code}");
            assert!(
                coded(code)
                    .context("outer")
                    .context("outermost")
                    .is_connection_loss(),
                "{code}"
            );
        }
        for code in ["22012", "40P01", "40001", "57014", "23505"] {
            assert!(!coded(code).is_connection_loss(), "{code}");
        }
        let lost = Error::runtime("x").with_reason(Reason::ConnectionLost);
        assert!(lost.clone().context("outer").is_connection_loss());
        assert!(Error::runtime("x")
            .with_reason(Reason::CannotConnect)
            .is_connection_loss());
        assert!(!Error::config("x")
            .with_reason(Reason::NothingToResume)
            .is_connection_loss());
        // Rebuilt in other words, the state is carried over explicitly.
        assert!(Error::runtime("y")
            .with_state_of(&lost)
            .is_connection_loss());
        assert!(Error::runtime("y")
            .with_state_of(&coded("57P01"))
            .is_connection_loss());
        // The text decides nothing: a handler's error quoting these words is not a lost
        // connection, and a lost one says so whatever its words.
        let words = Error::runtime("cannot connect to PostgreSQL at u@h:5432/d")
            .caused_by("connection closed")
            .caused_by("FATAL: terminating connection [SQLSTATE 57P01]");
        assert!(!words.is_connection_loss());
        // Our own Ctrl-C and a busy projection are never "lost connections".
        let mut stopped = Error::interrupted("stopped").with_reason(Reason::ConnectionLost);
        assert!(!stopped.is_connection_loss());
        stopped.sqlstate = Some("57P01".into());
        assert!(!stopped.is_connection_loss());
        assert!(!Error::busy("locked")
            .with_reason(Reason::ConnectionLost)
            .is_connection_loss());
    }

    #[test]
    fn transient_is_told_by_sqlstate() {
        for code in ["40001", "40P01", "55P03"] {
            assert!(coded(code).context("outer").is_transient(), "{code}");
        }
        assert!(!coded("22012").is_transient());
        assert!(!Error::runtime("x")
            .caused_by("ERROR: deadlock detected [SQLSTATE 40P01]")
            .is_transient());
    }

    #[test]
    fn a_database_error_keeps_its_sqlstate_and_connection_state() {
        // A client error (not from the server): no SQLSTATE, connection not lost.
        let pg = "port=notanumber"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        assert!(!connection_lost(&pg));
        let err = Error::runtime("x").with_db_state(&pg);
        assert_eq!(err.sqlstate(), None);
        assert_eq!(err.reason, None);
        assert!(!Error::from(pg).is_connection_loss());
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
    fn the_original_error_is_the_source_under_any_context() {
        use std::error::Error as _;
        let pg = "port=notanumber"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        let words = pg.to_string();
        let err = Error::from(pg).context("cannot connect").context("outer");
        let source = err.source().expect("a source");
        let pg = source
            .downcast_ref::<tokio_postgres::Error>()
            .expect("the tokio_postgres::Error");
        assert_eq!(pg.to_string(), words);
        // Carried over to an error that reports it in other words.
        let other = Error::runtime("x").with_state_of(&err);
        assert!(other
            .source()
            .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
            .is_some());
        // None where there was no other error.
        assert!(Error::runtime("x").caused_by("words").source().is_none());
        // The words of a kept error are a cause, as with caused_by: Display is unchanged.
        let io = std::io::Error::other("disk on fire");
        let err = Error::runtime("cannot write").caused_by_error(io);
        assert_eq!(
            err.to_string(),
            "error: cannot write\n  caused by: disk on fire"
        );
        assert!(err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some());
    }

    #[test]
    fn context_pushes_message_down() {
        let err = Error::runtime("inner").context("outer");
        assert_eq!(err.message, "outer");
        assert_eq!(err.causes, vec!["inner".to_string()]);
    }

    /// clippy's `result_large_err` refuses an `Err` of 128 bytes or more in every function
    /// that returns one; the boxed fields keep `Error` one pointer wide (it was 120 bytes
    /// before, too close to add anything).
    #[test]
    fn an_error_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
        assert_eq!(
            std::mem::size_of::<Result<()>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(ErrorKind::Runtime.exit_code(), 1);
        assert_eq!(ErrorKind::Config.exit_code(), 2);
        assert_eq!(ErrorKind::HealthCheck.exit_code(), 3);
        assert_eq!(ErrorKind::Fidelity.exit_code(), 4);
        assert_eq!(ErrorKind::Declined.exit_code(), 5);
        assert_eq!(ErrorKind::Busy.exit_code(), 75);
        assert_eq!(ErrorKind::Interrupted.exit_code(), 130);
    }
}
