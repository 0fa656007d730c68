//! What goes to stderr besides the data: tracing's log events (`-v`, `-vv`), the reporter's
//! steps and warnings, the final error. As text (coloured on a terminal, written around the
//! progress bar so neither breaks the other), or with `--log-format json` as one JSON object
//! per line, for containers and journald, with no progress bar at all.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people (coloured on a terminal).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, and fields.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether stderr gets JSON lines (`--log-format json`).
pub fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// The progress bar on screen, if any: text log lines are written around it (suspended while
/// the line is written), so a `-v` line never lands inside the bar.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Registers the bar now on screen (None: none is).
pub fn set_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Writes `text` (whole lines) to stderr, around the progress bar if one is on screen.
pub fn write_stderr(text: &[u8]) {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text);
        let _ = err.flush();
    };
    match bar {
        Some(bar) if !bar.is_finished() => bar.suspend(write),
        _ => write(),
    }
}

/// Sets up tracing: `-v` info (phases, batches, lock waits), `-vv` debug (reproject's
/// statements with their timings, and every SQL statement the PostgreSQL client sends);
/// `RUST_LOG` overrides.
pub fn init(verbose: u8, format: LogFormat) {
    let _ = FORMAT.set(format);
    let default = match verbose {
        0 => "warn",
        1 => "reproject=info,warn",
        // The client's record of each statement it prepares or sends as text; not of each
        // execution (`tokio_postgres::query`), which would print every event's data.
        _ => {
            "reproject=debug,tokio_postgres::prepare=debug,tokio_postgres::simple_query=debug,info"
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(JsonLayer).init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(|| BarWriter)
                    // tracing's own colours follow the same rule: none in files, pipes, or
                    // with NO_COLOR.
                    .with_ansi(super::style::enabled())
                    .with_target(false),
            )
            .init(),
    }
}

/// tracing's text lines, written around the progress bar.
struct BarWriter;

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_stderr(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One JSON line on stderr: `timestamp` (RFC 3339, UTC), `level` (`ERROR`, `WARN`, `INFO`,
/// `DEBUG`, `TRACE`), `message`, then `fields`.
pub fn json_line(level: &str, message: &str, fields: serde_json::Map<String, serde_json::Value>) {
    // timestamp, level and message first, whatever the fields are called: the line is read by
    // people too (`kubectl logs`, `journalctl`).
    let mut text = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
    .to_string();
    text.pop();
    for (key, value) in [("level", level), ("message", message)] {
        text.push_str(&format!(",{}:{}", json_str(key), json_str(value)));
    }
    for (key, value) in fields {
        if !matches!(key.as_str(), "timestamp" | "level" | "message") {
            text.push_str(&format!(",{}:{value}", json_str(&key)));
        }
    }
    text.push_str("}\n");
    write_stderr(text.as_bytes());
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A notice of the binary itself (an interruption): a text line, or a JSON line at `WARN`.
pub fn notice(text: &str) {
    line("WARN", "", text);
}

/// A line of the binary's own on stderr: `label` and `text` (`note: `, `warning: `), or a
/// JSON line at `level` with the text alone.
pub fn line(level: &str, label: &str, text: &str) {
    if json() {
        json_line(level, text, serde_json::Map::new());
    } else {
        write_stderr(format!("{}\n", super::style::paint(&format!("{label}{text}"))).as_bytes());
    }
}

/// The error a command ended with, on stderr: `error:` / `caused by:` / `hint:` text, or one
/// JSON line at `ERROR` with `kind`, `exit_code`, `causes`, `hint` and `sqlstate`.
pub fn error(err: &reproject::Error) {
    if json() {
        let serde_json::Value::Object(fields) = serde_json::json!({
            "kind": err.kind.name(),
            "exit_code": err.kind.exit_code(),
            "causes": err.causes,
            "hint": err.hint,
            "sqlstate": err.sqlstate,
        }) else {
            unreachable!("an object")
        };
        json_line("ERROR", &err.message, fields);
    } else {
        write_stderr(format!("{}\n", super::style::paint(&err.to_string())).as_bytes());
    }
}

/// tracing events as JSON lines ([`json_line`]), with `target` and the event's fields.
struct JsonLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JsonLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut map = fields.map;
        map.insert("target".into(), meta.target().into());
        json_line(meta.level().as_str(), &fields.message, map);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    map: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.map.insert(field.name().into(), text.into());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.map.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.map.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.map.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.map.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.map.insert(field.name().into(), value.into());
    }
}
