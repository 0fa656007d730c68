//! A projection written in Rust, rebuilt and swapped by the engine: the W1 `posting_state`
//! projection of examples/postings, as Rust code instead of SQL handlers.
//!
//! ```sh
//! psql -f examples/postings/schema.sql && psql -v n=2000 -f examples/postings/generate.sql
//! cargo run --example rust_projector -- examples/postings/reproject_rust.toml "$DATABASE_URL"
//! ```
//!
//! Options after the two arguments: `--max-events N` stops after N events (the run is
//! `paused`), `--resume` continues the unfinished run from its checkpoint.
//!
//! The SQL handlers write each posting's row once per event. This code writes it once per
//! batch: it reads the rows of the batch's postings in one query, folds the batch's events into
//! them in memory, and upserts them all in one statement. The engine does the rest (batches,
//! the checkpoint in the batch's transaction, catch-up, checks, the final tail under the swap
//! lock, the swap), so the result is exactly once like for SQL handlers.
//!
//! History timestamps are rendered in UTC, as PostgreSQL renders them with `TimeZone = UTC`
//! (the SQL handlers use the session's TimeZone).

use reproject::config::Config;
use reproject::db::Db;
use reproject::engine::{self, Engine, RebuildOptions};
use reproject::progress::{Cancel, Reporter};
use reproject::projection::{Batch, BoxFuture, RustProjection};
use reproject::source::Event;
use reproject::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// A posting's row, as the handlers in examples/postings/handlers/posting_state.sql build it.
#[derive(Debug, Clone)]
struct Posting {
    step: Option<i32>,
    conversation: Option<i32>,
    status: Option<String>,
    outputs: Map<String, Value>,
    history: Vec<Value>,
}

/// The `posting_state` projection.
struct PostingState;

impl RustProjection for PostingState {
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let table = batch.table("posting_state_projection")?.quoted();
            // The batch's postings, in the order they first appear.
            let mut ids: Vec<i32> = Vec::new();
            let mut events: Vec<(i32, &Event)> = Vec::new();
            for event in batch.events {
                if !matches!(
                    event.event_type.as_deref(),
                    Some(
                        "posting_created" | "conversation_completed" | "script_execution_completed"
                    )
                ) {
                    continue;
                }
                let id = posting_id(event)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
                events.push((id, event));
            }
            if ids.is_empty() {
                return Ok(());
            }
            // Their rows as they are now (written by earlier batches, in this generation).
            let mut rows: HashMap<i32, Posting> = HashMap::new();
            for row in batch
                .client
                .query(
                    &format!(
                        "SELECT posting_id, current_step, current_conversation_id, current_status, \
                                outputs, conversation_history FROM {table} WHERE posting_id = ANY($1)"
                    ),
                    &[&ids],
                )
                .await?
            {
                let outputs: Option<Value> = row.get(4);
                let history: Option<Value> = row.get(5);
                rows.insert(
                    row.get(0),
                    Posting {
                        step: row.get(1),
                        conversation: row.get(2),
                        status: row.get(3),
                        outputs: match outputs {
                            Some(Value::Object(m)) => m,
                            _ => Map::new(),
                        },
                        history: match history {
                            Some(Value::Array(a)) => a,
                            _ => Vec::new(),
                        },
                    },
                );
            }
            for (id, event) in events {
                let data: Value = match &event.data {
                    Some(d) => d.parse().map_err(|e| bad_event(event, e))?,
                    None => Value::Null,
                };
                let row = rows.get_mut(&id);
                if event.event_type.as_deref() == Some("posting_created") {
                    let step = Some(int(&data["initial_step"]).unwrap_or(1));
                    match row {
                        Some(r) => {
                            r.step = step;
                            r.status = Some("pending".into());
                        }
                        None => {
                            rows.insert(
                                id,
                                Posting {
                                    step,
                                    conversation: Some(9144),
                                    status: Some("pending".into()),
                                    outputs: Map::new(),
                                    history: Vec::new(),
                                },
                            );
                        }
                    }
                    continue;
                }
                // conversation_completed, script_execution_completed
                let Some(conversation_id) = text(&data["conversation_id"]) else {
                    return Err(bad_event(event, "no `conversation_id`"));
                };
                let output = text(&data["output"]);
                let entry = json!({
                    "conversation_id": conversation_id,
                    "timestamp": event.timestamp.map(|t| pg_json_utc(&t)),
                    "output_preview": output.as_ref().map(|o| o.chars().take(100).collect::<String>()),
                });
                let next_step = int(&data["next_execution_order"]);
                let next_conversation = int(&data["next_conversation_id"]);
                let row = rows.entry(id).or_insert_with(|| Posting {
                    step: None,
                    conversation: None,
                    // A posting first seen here starts pending; an existing one keeps its status.
                    status: Some("pending".into()),
                    outputs: Map::new(),
                    history: Vec::new(),
                });
                row.outputs.insert(conversation_id, json!(output));
                row.step = next_step;
                row.conversation = next_conversation;
                row.history.push(entry);
            }
            // One upsert for the whole batch, each posting once.
            let mut step = Vec::new();
            let mut conversation = Vec::new();
            let mut status = Vec::new();
            let mut outputs = Vec::new();
            let mut history = Vec::new();
            for id in &ids {
                let r = rows[id].clone();
                step.push(r.step);
                conversation.push(r.conversation);
                status.push(r.status);
                outputs.push(Value::Object(r.outputs));
                history.push(Value::Array(r.history));
            }
            batch
                .client
                .execute(
                    &format!(
                        "INSERT INTO {table} (posting_id, current_step, current_conversation_id, \
                                current_status, outputs, conversation_history, last_updated) \
                         SELECT *, now() FROM unnest($1::int[], $2::int[], $3::int[], $4::text[], $5::jsonb[], $6::jsonb[]) \
                         ON CONFLICT (posting_id) DO UPDATE SET \
                           current_step = EXCLUDED.current_step, \
                           current_conversation_id = EXCLUDED.current_conversation_id, \
                           current_status = EXCLUDED.current_status, \
                           outputs = EXCLUDED.outputs, \
                           conversation_history = EXCLUDED.conversation_history, \
                           last_updated = now()"
                    ),
                    &[&ids, &step, &conversation, &status, &outputs, &history],
                )
                .await?;
            Ok(())
        })
    }

    fn version(&self) -> String {
        "posting_state 1".into()
    }
}

/// The stream is the posting id (the handlers cast it with `:stream::int`).
fn posting_id(event: &Event) -> Result<i32> {
    event
        .stream
        .as_deref()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| bad_event(event, "the stream is not a posting id (an integer)"))
}

fn bad_event(event: &Event, why: impl std::fmt::Display) -> Error {
    Error::runtime(format!(
        "event at position {} (stream `{}`) cannot be applied",
        event.position,
        event.stream.as_deref().unwrap_or("")
    ))
    .caused_by(why)
}

/// `data->>'key'`: a string as is, any other JSON value as its text; null when missing.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `(data->>'key')::int`.
fn int(value: &Value) -> Option<i32> {
    text(value).and_then(|t| t.trim().parse().ok())
}

/// A timestamptz as PostgreSQL renders it in JSON with `TimeZone = UTC`:
/// `2024-05-01T10:00:00.123+00:00`, trailing zeros of the fraction dropped.
fn pg_json_utc(t: &chrono::DateTime<chrono::Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    let mut fraction = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    while fraction.ends_with('0') {
        fraction.pop();
    }
    format!("{}{fraction}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// Reports steps on stderr.
struct Log;

impl Reporter for Log {
    fn step(&self, message: &str) {
        eprintln!("step: {message}");
    }
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: rust_projector CONFIG DATABASE_URL [--max-events N] [--resume]");
        std::process::exit(2);
    };
    let (Some(config), Some(url)) = (args.first(), args.get(1)) else {
        usage()
    };
    let mut opts = RebuildOptions {
        reason: Some("posting_state rebuilt by the Rust projector example".into()),
        initiated_by: "rust-projector-example".into(),
        ..RebuildOptions::default()
    };
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--resume" => opts.resume = true,
            "--max-events" => {
                opts.max_events = Some(
                    rest.next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            _ => usage(),
        }
    }
    if let Err(err) = run(PathBuf::from(config), url, &opts).await {
        eprintln!("{err}");
        std::process::exit(err.kind.exit_code());
    }
}

async fn run(config: PathBuf, url: &str, opts: &RebuildOptions) -> Result<()> {
    let mut config = Config::load(&config)?;
    // The config declares posting_state (tables, checks) without handlers; this is its code.
    config.register("posting_state", PostingState)?;
    let engine = Engine {
        config: &config,
        db: Db::new(url)?,
        reporter: &Log,
        cancel: Cancel::new(),
    };
    let outcome = engine::rebuild(&engine, opts).await?;
    println!(
        "run {}: {} ({} events applied)",
        outcome.run_id.unwrap_or_default(),
        outcome.status,
        outcome.events_applied
    );
    Ok(())
}
