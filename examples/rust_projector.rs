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
//! The SQL handlers write each posting's row once per event. This code folds a batch's events
//! per posting in memory and writes each row once per batch, in one statement per batch (an
//! insert of the postings that have no row yet, an update that appends to the others), without
//! reading the rows back. The engine does the rest (batches,
//! the checkpoint in the batch's transaction, catch-up, checks, the final tail under the swap
//! lock, the swap), so the result is exactly once like for SQL handlers.
//!
//! History timestamps are rendered in UTC, as PostgreSQL renders them with `TimeZone = UTC`
//! (the SQL handlers use the session's TimeZone).

use reproject::commands::{self, Engine, RebuildOptions};
use reproject::progress::{Cancel, Reporter, Step, Warning};
use reproject::Config;
use reproject::Db;
use reproject::Event;
use reproject::{Batch, BoxFuture, RustProjection};
use reproject::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// What one batch does to one posting, folded in memory from the batch's events. It is both
/// the row to insert when the posting has none yet (`step`, `conversation`, `outputs`,
/// `history` as the handlers would leave a new row) and the change to an existing row.
#[derive(Debug, Default)]
struct Change {
    /// The step after the batch: every handled event sets it.
    step: Option<i32>,
    /// The conversation after the batch; on an existing row only if `conversation_set`.
    conversation: Option<i32>,
    conversation_set: bool,
    /// A `posting_created` in the batch: an existing row goes back to `pending`.
    created: bool,
    /// Outputs added by the batch (`outputs || this`: later keys win, as in the handlers).
    outputs: Map<String, Value>,
    /// History entries appended by the batch, in order.
    history: Vec<Value>,
}

/// The `posting_state` projection.
struct PostingState;

impl RustProjection for PostingState {
    fn apply<'a>(&'a self, batch: &'a Batch<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let table = batch.table("posting_state_projection")?.quoted();
            // Fold the batch per posting, in the order postings first appear.
            let mut ids: Vec<i32> = Vec::new();
            let mut changes: HashMap<i32, Change> = HashMap::new();
            for event in batch.events {
                let ty = event.event_type.as_deref().unwrap_or("");
                if !matches!(
                    ty,
                    "posting_created" | "conversation_completed" | "script_execution_completed"
                ) {
                    continue;
                }
                let id = posting_id(event)?;
                let data: Value = match &event.data {
                    Some(d) => d.parse().map_err(|e| bad_event(event, e))?,
                    None => Value::Null,
                };
                let change = changes.entry(id).or_insert_with(|| {
                    ids.push(id);
                    Change {
                        // A posting first created by this batch starts in conversation 9144.
                        conversation: Some(9144),
                        ..Change::default()
                    }
                });
                if ty == "posting_created" {
                    change.step = Some(int(&data["initial_step"]).unwrap_or(1));
                    change.created = true;
                    continue;
                }
                let Some(conversation_id) = text(&data["conversation_id"]) else {
                    return Err(bad_event(event, "no `conversation_id`"));
                };
                let output = text(&data["output"]);
                change.history.push(json!({
                    "conversation_id": conversation_id,
                    "timestamp": event.timestamp.map(|t| pg_json_utc(&t)),
                    "output_preview": output.as_ref().map(|o| o.chars().take(100).collect::<String>()),
                }));
                change.outputs.insert(conversation_id, json!(output));
                change.step = int(&data["next_execution_order"]);
                change.conversation = int(&data["next_conversation_id"]);
                change.conversation_set = true;
            }
            if ids.is_empty() {
                return Ok(());
            }
            let mut step = Vec::new();
            let mut conversation = Vec::new();
            let mut conversation_set = Vec::new();
            let mut created = Vec::new();
            let mut outputs = Vec::new();
            let mut history = Vec::new();
            for id in &ids {
                let c = changes.remove(id).expect("every id has a change");
                step.push(c.step);
                conversation.push(c.conversation);
                conversation_set.push(c.conversation_set);
                created.push(c.created);
                outputs.push(Value::Object(c.outputs));
                history.push(Value::Array(c.history));
            }
            // One statement per batch, whatever its size, and nothing read back: postings
            // without a row get the folded row (the INSERT); the others get the change applied
            // in place (the UPDATE, which does not see the rows the INSERT adds: a statement
            // reads the table as it was when it started).
            batch
                .client
                .execute(
                    &format!(
                        "WITH b AS ( \
                           SELECT * FROM unnest($1::int[], $2::int[], $3::int[], $4::bool[], $5::bool[], $6::jsonb[], $7::jsonb[]) \
                             AS b(id, step, conversation, conversation_set, created, outputs, history)), \
                         inserted AS ( \
                           INSERT INTO {table} (posting_id, current_step, current_conversation_id, \
                                  current_status, outputs, conversation_history, last_updated) \
                           SELECT id, step, conversation, 'pending', outputs, history, now() FROM b \
                           ON CONFLICT (posting_id) DO NOTHING) \
                         UPDATE {table} AS p SET \
                           current_step = b.step, \
                           current_conversation_id = CASE WHEN b.conversation_set THEN b.conversation ELSE p.current_conversation_id END, \
                           current_status = CASE WHEN b.created THEN 'pending' ELSE p.current_status END, \
                           outputs = p.outputs || b.outputs, \
                           conversation_history = p.conversation_history || b.history, \
                           last_updated = now() \
                         FROM b WHERE p.posting_id = b.id"
                    ),
                    &[
                        &ids,
                        &step,
                        &conversation,
                        &conversation_set,
                        &created,
                        &outputs,
                        &history,
                    ],
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
    fn step(&self, step: &Step) {
        eprintln!("step: {step}");
    }
    fn warn(&self, warning: &Warning) {
        eprintln!("warning: {warning}");
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
    let outcome = commands::rebuild(&engine, opts).await?;
    println!(
        "run {}: {} ({} events applied)",
        outcome.run_id.unwrap_or_default(),
        outcome.status,
        outcome.events_applied
    );
    Ok(())
}
