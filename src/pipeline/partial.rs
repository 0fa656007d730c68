//! Partial rebuilds (`rebuild --streams`, `--streams-where`, `--from-position`, `--from-time`):
//! what each mode may rebuild, the rows it takes from the live tables, and when.
//!
//! The rebuild itself is the ordinary one (rebuild.rs); this module holds the hooks of a
//! partial [`Scope`](crate::pipeline::rebuild_scope::Scope), which the rebuild calls for every
//! run (a full rebuild's do nothing): [`resolve`] turns the request into a [`Partial`] recorded in the run's options (so `swap` and
//! `--resume` continue with the same selection), [`seed`] fills the rebuild tables with the rows
//! that are not rebuilt, [`source`] narrows the events read, and [`at_swap`] makes the rows that
//! were not rebuilt identical to the live ones inside the swap transaction. docs/guide/partial-rebuilds.md
//! states the guarantees; the reasons are written here.

use crate::apply::sql::Projector;
use crate::error::{Context, Error, Result};
use crate::model::config::{Config, Ordering};
use crate::model::ident::{quote, TableName};
use crate::pipeline::plan::Plan;
use crate::pipeline::Engine;
use crate::progress::{PartialCopy, Reporter, Step, Warning};
use crate::read::ordering::{Cut, SETTLE_WAIT};
use crate::read::source::{Bound, Cursor, EventSource, StreamFilter};
use crate::state::fence;
use crate::state::locks::LockClass;
use crate::state::runs::{self, PartialSwap, RunOptions, RunTable};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, GenericClient};

/// What was asked on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum PartialRequest {
    /// `--streams ID,...`
    Streams(Vec<String>),
    /// `--streams-where SQL`: a predicate over the event rows.
    StreamsWhere(String),
    /// `--from-position N`
    FromPosition(i64),
    /// `--from-time T`
    FromTime(DateTime<Utc>),
}

/// A resolved partial rebuild, as recorded in `runs.options.partial`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Partial {
    /// Rebuild the rows of these streams; every other row is the live one at the swap.
    Streams {
        /// The selected streams; `--streams-where` is resolved to this list once, at the start,
        /// so the selection cannot change under a running rebuild (or between it and a resume).
        streams: Vec<String>,
        /// The `--streams-where` predicate the list came from, for the record.
        streams_where: Option<String>,
        /// Projection → its `stream_key` column.
        keys: BTreeMap<String, String>,
        /// Set when the rows of the other streams were copied in one snapshot with the live
        /// position (this): the rebuild then replays the selected streams' events up to it and
        /// every event after it, and nothing is copied at the swap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
    /// The live rows inserted by events up to `position` are kept; later events are replayed.
    FromPosition {
        /// N: every event up to it is in the kept rows.
        position: i64,
        /// The `--from-time` that resolved to `position`, for the record.
        from_time: Option<String>,
        /// Projection → its `position_column`.
        columns: BTreeMap<String, String>,
    },
}

impl Partial {
    /// The partial rebuild a run records, if it is one.
    pub fn of_run(options: &RunOptions) -> Result<Option<Partial>> {
        match &options.partial {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                Error::runtime("the run's recorded partial-rebuild options cannot be read")
                    .caused_by_error(e)
                    .with_hint("run `reproject rebuild` again")
            }),
        }
    }

    /// Recorded in the run's options (and so shown by `history`).
    pub fn to_option(&self) -> RunOptions {
        RunOptions {
            partial: Some(serde_json::to_value(self).expect("a partial rebuild serializes")),
            ..RunOptions::default()
        }
    }

    /// Where the run's checkpoint starts: `--from-position` skips what the copied rows hold.
    pub fn start_position(&self) -> Option<i64> {
        match self {
            Partial::FromPosition { position, .. } => Some(*position),
            Partial::Streams { .. } => None,
        }
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        match self {
            Partial::Streams {
                streams,
                streams_where,
                since,
                ..
            } => {
                let shown: Vec<&str> = streams.iter().take(5).map(String::as_str).collect();
                let more = if streams.len() > 5 {
                    format!(" and {} more", streams.len() - 5)
                } else {
                    String::new()
                };
                let from = streams_where
                    .as_ref()
                    .map(|w| format!(" (selected by `{w}`)"))
                    .unwrap_or_default();
                let since = match since {
                    Some(p) => format!(" (the other streams' rows taken at the live position {p})"),
                    None => String::new(),
                };
                format!(
                    "partial rebuild of {} stream(s){from}: {}{more}{since}",
                    streams.len(),
                    shown.join(", ")
                )
            }
            Partial::FromPosition {
                position,
                from_time,
                ..
            } => match from_time {
                Some(t) => format!(
                    "partial rebuild from position {position} (the last event before {t}): live rows up to it are kept, later events replayed"
                ),
                None => format!(
                    "partial rebuild from position {position}: live rows up to it are kept, later events replayed"
                ),
            },
        }
    }

    /// The filter on the events a stream rebuild replays.
    fn selected(&self) -> Option<StreamFilter> {
        match self {
            Partial::Streams { streams, since, .. } => Some(StreamFilter {
                streams: streams.clone(),
                exclude: false,
                since: *since,
            }),
            Partial::FromPosition { .. } => None,
        }
    }
}

/// The events a partial rebuild reads: with `--streams`, only the selected streams' events.
pub fn source(base: EventSource, partial: &Partial) -> EventSource {
    base.with_streams(partial.selected())
}

/// Checks the request against the config and the database and resolves it (stream list,
/// position). Reads only; used by `--dry-run` too.
pub async fn resolve(
    engine: &Engine<'_>,
    plan: &Plan,
    request: &PartialRequest,
) -> Result<Partial> {
    let config = engine.config;
    let resolved = engine.validate().await?;
    let client = engine.db.get().await?;
    let client = &**client;
    let source = EventSource::new(&config.events, &resolved);
    match request {
        PartialRequest::Streams(_) | PartialRequest::StreamsWhere(_) => {
            let keys = declared(config, &resolved, plan, client, Declared::StreamKey).await?;
            let (streams, streams_where) = match request {
                PartialRequest::Streams(list) => {
                    let mut streams: Vec<String> = list
                        .iter()
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    streams.sort();
                    streams.dedup();
                    if streams.is_empty() {
                        return Err(Error::config("--streams names no stream")
                            .with_hint("e.g. `--streams posting-1,posting-2`"));
                    }
                    (streams, None)
                }
                PartialRequest::StreamsWhere(sql) => (
                    streams_where(client, &source, sql).await?,
                    Some(sql.clone()),
                ),
                _ => unreachable!(),
            };
            if let Ordering::Xid8 { .. } = config.events.ordering {
                for &i in &plan.order {
                    if live_position_source(client, config, i).await?.is_some() {
                        return Err(Error::config(format!(
                            "projection `{}`: `--streams` with `ordering = \"xid8\"` is refused for a projection whose live tables are kept by `reproject run` or a `handover` projector",
                            config.projections[i].name
                        ))
                        .caused_by("the rows taken from the live tables would have to be brought to the swap's (transaction id, position) cut, and a live checkpoint of one position is no such cut")
                        .with_hint("rebuild the projection fully"));
                    }
                }
            }
            // The rows copied under the swap lock are brought to the swap position with the
            // events since the live position; that position must be one for the whole run.
            let mut kinds = BTreeMap::new();
            for &i in &plan.order {
                let kind = live_position_source(client, config, i).await?;
                kinds.insert(config.projections[i].name.clone(), kind);
            }
            let known: Vec<_> = kinds.iter().filter(|(_, k)| k.is_some()).collect();
            if !known.is_empty() && known.len() < kinds.len() {
                let unknown: Vec<_> = kinds
                    .iter()
                    .filter(|(_, k)| k.is_none())
                    .map(|(n, _)| format!("`{n}`"))
                    .collect();
                return Err(Error::config(format!(
                    "cannot rebuild these projections' streams in one run: the live position of {} is known ({}), that of {} is not",
                    known.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                    known.iter().filter_map(|(_, k)| k.as_deref()).collect::<Vec<_>>().join(", "),
                    unknown.join(", ")
                ))
                .with_hint("rebuild them in separate runs (`reproject rebuild PROJECTION --streams ...`)"));
            }
            Ok(Partial::Streams {
                streams,
                streams_where,
                keys,
                since: None,
            })
        }
        PartialRequest::FromPosition(_) | PartialRequest::FromTime(_) => {
            let flag = match request {
                PartialRequest::FromTime(_) => "--from-time",
                _ => "--from-position",
            };
            if let Ordering::Xid8 { .. } = config.events.ordering {
                return Err(Error::config(format!(
                    "{flag} is refused with `ordering = \"xid8\"`: events are applied in (transaction id, position) order, so the events up to a position are not a prefix of what was applied, and the live tables' state at a position is not defined"
                ))
                .with_hint("rebuild fully"));
            }
            let columns =
                declared(config, &resolved, plan, client, Declared::PositionColumn).await?;
            for &i in &plan.order {
                append_only(config, i)?;
            }
            let (position, from_time) = match request {
                PartialRequest::FromPosition(n) => (*n, None),
                PartialRequest::FromTime(t) => {
                    let p = resolve_time(client, config, &resolved, &source, t).await?;
                    engine.reporter.step(&Step::FromTime {
                        time: t.to_rfc3339(),
                        position: p,
                    });
                    (p, Some(t.to_rfc3339()))
                }
                _ => unreachable!(),
            };
            if position < 0 {
                return Err(Error::config(format!(
                    "{flag}: position {position} is negative"
                )));
            }
            let head = source.head(client).await?;
            if head.is_none_or(|h| position > h) {
                return Err(Error::config(format!(
                    "{flag}: position {position} is past the last event ({})",
                    head.map_or("the event table is empty".to_string(), |h| format!(
                        "position {h}"
                    ))
                )));
            }
            for &i in &plan.order {
                live_reached(client, config, &resolved, i, &columns, position).await?;
            }
            // The rebuild starts after N and never reads below it again: every event up to N
            // must be final (gap-aware: no transaction can still commit a position ≤ N). A
            // check that records nothing: `plan` and the dry run make it too.
            let mut cut = Cut::for_runner(&source, &[]);
            let bound = cut
                .settle(
                    client,
                    &Cursor::default(),
                    &engine.cancel,
                    engine.reporter,
                    SETTLE_WAIT,
                )
                .await?;
            if !matches!(bound, Some(Bound::UpTo(b)) if b >= position) {
                return Err(Error::busy(format!(
                    "{flag}: events at or below position {position} may still be committed by open transactions (proven final: {})",
                    bound.map_or("none".to_string(), |b| b.describe())
                ))
                .with_hint("try again when the writing transactions have ended"));
            }
            Ok(Partial::FromPosition {
                position,
                from_time,
                columns,
            })
        }
    }
}

#[derive(Clone, Copy)]
enum Declared {
    StreamKey,
    PositionColumn,
}

impl Declared {
    fn key(self) -> &'static str {
        match self {
            Declared::StreamKey => "stream_key",
            Declared::PositionColumn => "position_column",
        }
    }
}

/// Each projection's declared column, checked to be a column of every one of its tables.
async fn declared(
    config: &Config,
    resolved: &crate::model::Resolved,
    plan: &Plan,
    client: &impl GenericClient,
    what: Declared,
) -> Result<BTreeMap<String, String>> {
    let file = config.path.display();
    let mut out = BTreeMap::new();
    for &i in &plan.order {
        let p = &config.projections[i];
        let column = match what {
            Declared::StreamKey => &p.stream_key,
            Declared::PositionColumn => &p.position_column,
        };
        let Some(column) = column else {
            let (flag, hint) = match what {
                Declared::StreamKey => (
                    "--streams",
                    format!("declare `stream_key = \"COLUMN\"` under projection `{}` in {file}: a column of each of its tables holding the stream of the events that write the row; or rebuild it fully", p.name),
                ),
                Declared::PositionColumn => (
                    "--from-position",
                    format!("declare `position_column = \"COLUMN\"` under projection `{}` in {file} if its tables are append-only and each row holds the position of the event that inserted it; otherwise rebuild fully", p.name),
                ),
            };
            return Err(Error::config(format!(
                "{file}:{}: projection `{}` declares no `{}`, which {flag} needs",
                p.line,
                p.name,
                what.key()
            ))
            .caused_by(match what {
                Declared::StreamKey => "without it reproject cannot tell which rows belong to the selected streams",
                Declared::PositionColumn => "without it the live tables' state at a position cannot be reconstructed: rows changed by later events are indistinguishable from rows written before",
            })
            .with_hint(hint));
        };
        for table in &resolved.tables[i] {
            if !has_column(client, table, &column.name).await? {
                return Err(Error::config(format!(
                    "{file}:{}: projection `{}`: `{} = \"{}\"` is not a column of table `{table}`",
                    column.line,
                    p.name,
                    what.key(),
                    column.name
                ))
                .with_hint(format!(
                    "the column must exist in every table of the projection ({})",
                    resolved.tables[i]
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        out.insert(p.name.clone(), column.name.clone());
    }
    Ok(out)
}

async fn has_column(client: &impl GenericClient, table: &TableName, column: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attname = $2 AND attnum > 0 AND NOT attisdropped)",
            &[&table.quoted(), &column],
        )
        .await
        .with_context(|| format!("cannot read the columns of `{table}`"))?;
    Ok(row.get(0))
}

/// `--streams-where`: the streams of the events the predicate selects, now.
async fn streams_where(
    client: &impl GenericClient,
    source: &EventSource,
    sql: &str,
) -> Result<Vec<String>> {
    let query = format!(
        "SELECT coalesce(array_agg(s ORDER BY s), '{{}}') FROM (SELECT DISTINCT {}::text AS s FROM {} WHERE ({sql}\n)) x WHERE s IS NOT NULL",
        source.stream_expr(),
        source.from
    );
    let row = client.query_one(&query, &[]).await.map_err(|e| {
        Error::config(format!("--streams-where `{sql}` cannot be evaluated on the events"))
            .caused_by(crate::error::describe_pg(&e))
            .with_db_state(&e)
            .with_source(e)
            .with_hint("the predicate may use the columns of `events.table` (or of the `events.source` query's output), as the `[events]` expressions do")
    })?;
    let streams: Vec<String> = row.get(0);
    if streams.is_empty() {
        return Err(
            Error::config(format!("--streams-where `{sql}` selects no event"))
                .with_hint("nothing to rebuild; check the predicate with `SELECT … WHERE <it>` on the event table"),
        );
    }
    Ok(streams)
}

/// Where the live tables' position is recorded, if anywhere: `reproject run`'s checkpoint, or a
/// `handover` projector's. Returns a description for messages.
async fn live_position_source(
    client: &impl GenericClient,
    config: &Config,
    i: usize,
) -> Result<Option<String>> {
    let p = &config.projections[i];
    if crate::state::live_checkpoints::exists(client).await? {
        if let Some(cp) =
            crate::state::live_checkpoints::read(client, std::slice::from_ref(&p.name))
                .await?
                .first()
        {
            if runner_keeps(client, cp).await? {
                return Ok(Some("`reproject run`".into()));
            }
        }
    }
    Ok(p.handover
        .as_ref()
        .map(|h| format!("handover `{}`", h.table)))
}

/// Whether a live checkpoint says where the live tables are: a runner holds the projection
/// now, or a runner (or its start) set it last. One the swap set that no runner has moved
/// since only says where the tables were at that swap: the application's own projector may
/// have changed them since, so it is not taken as the live position.
async fn runner_keeps(
    client: &impl GenericClient,
    cp: &crate::state::live_checkpoints::LiveCheckpoint,
) -> Result<bool> {
    Ok(cp.set_by == "run"
        || cp.set_by == "start"
        || crate::state::live_checkpoints::runner_up(client, &cp.projection).await?)
}

/// Refuses a projection whose handlers can change a row after inserting it: only then are the
/// live rows up to a position exactly the tables' state at that position.
fn append_only(config: &Config, i: usize) -> Result<()> {
    let p = &config.projections[i];
    for section in p.sections() {
        for st in &section.statements {
            if !st.tables.iter().any(|t| t.writes) {
                continue;
            }
            let sql = st.render(|t| t.written.clone());
            let upper = strip_comments(&sql).to_uppercase();
            let words: Vec<&str> = upper.split_whitespace().collect();
            let insert = words.first() == Some(&"INSERT");
            let upsert = words
                .windows(2)
                .any(|w| w[0] == "DO" && w[1].starts_with("UPDATE"));
            if !insert || upsert {
                return Err(Error::config(format!(
                    "{}:{}: projection `{}`: --from-position needs append-only tables, and this statement {}",
                    p.handler_path().display(),
                    st.line,
                    p.name,
                    if upsert { "updates rows it conflicts with (ON CONFLICT … DO UPDATE)" } else { "is not an INSERT" }
                ))
                .caused_by("a later event can change or remove a row written before the position, so the live rows no longer show the state at that position")
                .with_hint("rebuild fully, or use `--streams` (with `stream_key`) to rebuild only some rows"));
            }
        }
    }
    Ok(())
}

/// The SQL without `--` and `/* */` comments (for [`append_only`]'s look at the first word).
fn strip_comments(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r);
            out.push(' ');
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r);
            out.push(' ');
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// `--from-time T`: the last position whose timestamp is before T.
async fn resolve_time(
    client: &impl GenericClient,
    config: &Config,
    resolved: &crate::model::Resolved,
    source: &EventSource,
    t: &DateTime<Utc>,
) -> Result<i64> {
    let roles = EventSource::roles(&config.events, &resolved.encodings);
    let Some(ts) = roles.iter().find(|r| r.key == "timestamp") else {
        return Err(Error::config(
            "--from-time needs `events.timestamp`, which the config does not map",
        )
        .with_hint("map `timestamp` in `[events]`, or use --from-position"));
    };
    let row = client
        .query_one(
            &format!(
                "SELECT max({})::bigint FROM {} WHERE {} < $1",
                source.position, source.from, ts.read
            ),
            &[t],
        )
        .await
        .with_context(|| format!("cannot find the last event before {}", t.to_rfc3339()))?;
    row.get::<_, Option<i64>>(0).ok_or_else(|| {
        Error::config(format!(
            "--from-time {}: no event is older; a rebuild from there is a full rebuild",
            t.to_rfc3339()
        ))
        .with_hint("run `reproject rebuild` without --from-time")
    })
}

/// Refuses a position the live tables cannot be shown to have reached: the rows up to it are
/// the state there only if the live projector applied every event up to it.
async fn live_reached(
    client: &impl GenericClient,
    config: &Config,
    resolved: &crate::model::Resolved,
    i: usize,
    columns: &BTreeMap<String, String>,
    position: i64,
) -> Result<()> {
    let p = &config.projections[i];
    if crate::state::live_checkpoints::exists(client).await? {
        let checkpoints =
            crate::state::live_checkpoints::read(client, std::slice::from_ref(&p.name)).await?;
        let mut trusted = None;
        for cp in &checkpoints {
            if runner_keeps(client, cp).await? {
                trusted = Some(cp);
            }
        }
        if let Some(cp) = trusted {
            if cp.position.is_some_and(|at| at >= position) {
                return Ok(());
            }
            return Err(Error::config(format!(
                "--from-position {position}: projection `{}`'s live tables are at {} (`reproject run`'s checkpoint), before it",
                p.name,
                cp.position.map_or("the start".to_string(), |at| format!("position {at}"))
            ))
            .with_hint("choose a position the live tables have reached, or rebuild fully"));
        }
    }
    let column = quote(&columns[&p.name]);
    let mut highest: Option<i64> = None;
    for table in &resolved.tables[i] {
        let row = client
            .query_one(
                &format!("SELECT max({column})::bigint FROM {}", table.quoted()),
                &[],
            )
            .await
            .with_context(|| format!("cannot read the highest `{column}` of `{table}`"))?;
        highest = highest.max(row.get(0));
    }
    if highest.is_some_and(|h| h >= position) {
        return Ok(());
    }
    Err(Error::config(format!(
        "--from-position {position}: projection `{}`'s live tables hold no row written at or after it (highest `{}`: {})",
        p.name,
        columns[&p.name],
        highest.map_or("none".to_string(), |h| h.to_string())
    ))
    .caused_by("nothing shows that the live projector has applied every event up to that position, so the live rows up to it may not be the state there")
    .with_hint("choose a position at or below the highest one in the live tables, or rebuild fully"))
}

/// The columns an `INSERT … SELECT` can copy (generated columns are computed, not written).
async fn copy_columns(client: &Client, table: &TableName) -> Result<String> {
    let rows = client
        .query(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 \
             AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            &[&table.quoted()],
        )
        .await
        .with_context(|| format!("cannot read the columns of `{table}`"))?;
    Ok(rows
        .iter()
        .map(|r| quote(r.get::<_, &str>(0)))
        .collect::<Vec<_>>()
        .join(", "))
}

/// The rows of `table` a partial rebuild takes from live (not rebuilt), as a WHERE clause over
/// the table's columns; `$1` is the stream list.
fn kept_rows(partial: &Partial, projection: &str) -> String {
    match partial {
        Partial::Streams { keys, .. } => format!(
            "NOT coalesce({}::text = ANY($1::text[]), false)",
            quote(&keys[projection])
        ),
        Partial::FromPosition {
            position, columns, ..
        } => format!("{} <= {position}", quote(&columns[projection])),
    }
}

fn stream_param(partial: &Partial) -> Vec<String> {
    match partial {
        Partial::Streams { streams, .. } => streams.clone(),
        Partial::FromPosition { .. } => Vec::new(),
    }
}

/// Copies the kept rows of `live` into `rebuild`; returns how many.
async fn copy_kept(client: &Client, partial: &Partial, t: &RunTable) -> Result<u64> {
    let columns = copy_columns(client, &t.live).await?;
    let sql = format!(
        "INSERT INTO {} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {} WHERE {} AND cardinality($1::text[]) >= 0",
        t.rebuild.quoted(),
        t.live.quoted(),
        kept_rows(partial, &t.projection)
    );
    client
        .execute(&sql, &[&stream_param(partial)])
        .await
        .with_context(|| {
            format!(
                "cannot copy the rows that are not rebuilt from `{}` to `{}`",
                t.live, t.rebuild
            )
        })
}

/// Fills the new rebuild tables with the rows that are not rebuilt, in one transaction that
/// also marks the run as seeded (so a resume after a crash seeds exactly once). With
/// `--from-position` these are the final rows up to the position; with `--streams` they are
/// an early copy, so that the health checks see whole tables, and are replaced at the swap.
///
/// With `--streams`, when every projection of the run has the same recorded live position
/// (`reproject run`, `handover`), whose writers commit it with their rows, the copy and that
/// position are read in one REPEATABLE READ snapshot: the copied rows are then exactly the
/// state at that position, the run records it (`since`), and replays the selected streams'
/// events up to it and every event after it, so nothing is copied under the swap's locks.
/// Returns the partial rebuild as recorded.
pub async fn seed(
    client: &Client,
    config: &Config,
    run_id: i64,
    partial: &Partial,
    tables: &[RunTable],
    reporter: &dyn Reporter,
) -> Result<Partial> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .context("cannot begin")?;
    let result = async {
        // First, so the snapshot is taken after it (see state/fence.rs).
        fence::prove(client, LockClass::Projection, &run_projections(tables)).await?;
        let mut partial = partial.clone();
        if let Partial::Streams { since, .. } = &mut partial {
            if !matches!(config.events.ordering, Ordering::Xid8 { .. }) {
                let (found, projections) = live_positions(client, config, tables).await?;
                let first = found.first().and_then(|f| f.1);
                if found.len() == projections && found.iter().all(|f| f.1 == first) {
                    *since = first;
                }
            }
        }
        let mut copied = 0;
        for t in tables {
            copied += copy_kept(client, &partial, t).await?;
        }
        let options = RunOptions {
            partial_seeded: Some(true),
            ..partial.to_option()
        };
        runs::merge_options(client, run_id, &options).await?;
        Ok((copied, partial))
    }
    .await;
    let (copied, partial) = crate::db::tx::finish(client, result).await?;
    let copy = match &partial {
        Partial::Streams {
            since: Some(since), ..
        } => PartialCopy::AtLivePosition(*since),
        Partial::Streams { .. } => PartialCopy::Early,
        Partial::FromPosition { .. } => PartialCopy::FromPosition,
    };
    reporter.step(&Step::PartialSeeded {
        rebuild: partial.describe(),
        copied,
        copy,
    });
    Ok(partial)
}

/// For `swap` and `--resume`: seeds a run whose seeding did not commit.
pub async fn ensure_seeded(
    client: &Client,
    config: &Config,
    run: &runs::Run,
    partial: Partial,
    tables: &[RunTable],
    reporter: &dyn Reporter,
) -> Result<Partial> {
    if run.options.partial_seeded == Some(true) {
        return Ok(partial);
    }
    seed(client, config, run.id, &partial, tables, reporter).await
}

/// Before the swap's locks: says how many rows will be copied while they are held.
pub async fn before_lock(
    client: &Client,
    partial: &Partial,
    tables: &[RunTable],
    reporter: &dyn Reporter,
) -> Result<()> {
    let Partial::Streams { since, .. } = partial else {
        return Ok(());
    };
    let mut kept = 0i64;
    let mut rebuilt = 0i64;
    for t in tables {
        let kept_sql = kept_rows(partial, &t.projection);
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {} WHERE {kept_sql}), (SELECT count(*) FROM {} WHERE NOT ({kept_sql}))",
                    t.live.quoted(),
                    t.rebuild.quoted(),
                ),
                &[&stream_param(partial)],
            )
            .await
            .with_context(|| format!("cannot count the rows of `{}` by stream", t.live))?;
        kept += row.get::<_, i64>(0);
        rebuilt += row.get::<_, i64>(1);
    }
    if rebuilt == 0 {
        // Either the selected streams' events write no row, or `stream_key` does not hold the
        // event's stream as text (then the swap would replace the rebuilt rows by live ones).
        reporter.warn(&Warning::PartialNoSelectedRows {
            tables: tables.iter().map(|t| t.rebuild.to_string()).collect(),
        });
    }
    if since.is_none() {
        reporter.warn(&Warning::PartialCompareUnderLock { rows: kept });
    }
    Ok(())
}

/// Inside the swap transaction, with the live tables locked and the final tail applied (the
/// run is at `at`): replaces the rows that are not rebuilt with the live ones. The live rows
/// are at the live position when `reproject run` or a `handover` projector records one: the
/// events of the other streams since then are applied to them, so every row is at `at` (the
/// position the swap hands over). Without a recorded live position the rows are taken as they
/// are, as the application's projector left them.
#[allow(clippy::too_many_arguments)]
pub async fn at_swap(
    client: &Client,
    config: &Config,
    run_id: i64,
    partial: &Partial,
    tables: &[RunTable],
    source: &EventSource,
    projector: &Projector,
    at: &Cursor,
    max_events: i64,
    reporter: &dyn Reporter,
) -> Result<()> {
    let Partial::Streams { streams, since, .. } = partial else {
        return Ok(());
    };
    if let Some(since) = since {
        // Copied with the live position and brought to the swap position by the replay.
        reporter.step(&Step::PartialRowsFromLive {
            since: *since,
            at: (*at).into(),
        });
        return Ok(());
    }
    let started = Instant::now();
    let live = live_position(client, config, tables).await?;
    let mut kept = Kept::default();
    for t in tables {
        kept.add(sync_kept(client, partial, t).await?);
    }
    let mut others = 0i64;
    if let Some((from, what)) = live {
        if at.position.is_some_and(|p| from.is_some_and(|f| f > p))
            || (at.position.is_none() && from.is_some())
        {
            return Err(Error::runtime(format!(
                "run {run_id}: the live tables are ahead of the rebuild ({what} is at {}, the rebuild at {}); nothing was swapped",
                Cursor::at(from).describe(),
                at.describe()
            ))
            .with_hint("run `reproject swap`: it catches up first"));
        }
        if let Some(to) = at.position.filter(|p| from.is_none_or(|f| f < *p)) {
            let others_source = source.clone().with_streams(Some(StreamFilter {
                streams: streams.clone(),
                exclude: true,
                since: None,
            }));
            let after = Cursor::at(from);
            let upto = Bound::UpTo(to);
            let pending = others_source.count(client, &after, &upto).await?.events;
            if pending > max_events {
                return Err(Error::runtime(format!(
                    "run {run_id}: the live tables are at {} ({what}), {pending} event(s) of the other streams behind the rebuild, more than --max-tail-events {max_events}; nothing was swapped",
                    after.describe()
                ))
                .with_hint("let the live projector catch up, then run `reproject swap`"));
            }
            // apply_next, not apply: set-based projections read the batch by its bounds.
            let mut from = after;
            loop {
                let step = projector
                    .apply_next(client, &others_source, &from, &upto, 1000, None)
                    .await?;
                // Inside the swap's transaction, which locked the live tables on purpose.
                crate::apply::write_guard::check(
                    client,
                    projector.writes(),
                    &from,
                    &step.to,
                    false,
                )
                .await?;
                from = step.to;
                others += step.events;
                if step.exhausted || step.events == 0 {
                    break;
                }
            }
        }
    }
    let ms = started.elapsed().as_millis() as i64;
    runs::merge_options(
        client,
        run_id,
        &RunOptions {
            partial_swap: Some(PartialSwap {
                rows_kept: kept.rows,
                rows_deleted: kept.deleted,
                rows_inserted: kept.inserted,
                copy_ms: ms,
                other_stream_events: others,
            }),
            ..RunOptions::default()
        },
    )
    .await?;
    reporter.step(&Step::PartialRowsSynced {
        rows: kept.rows,
        compared: Duration::from_millis(ms as u64),
        deleted: kept.deleted,
        inserted: kept.inserted,
        applied: others,
    });
    Ok(())
}

/// What [`sync_kept`] did.
#[derive(Debug, Default, Clone, Copy)]
struct Kept {
    /// Rows that are not rebuilt, now identical to live.
    rows: i64,
    /// Rows of the early copy that no longer matched a live row.
    deleted: i64,
    /// Live rows the early copy lacked.
    inserted: i64,
}

impl Kept {
    fn add(&mut self, other: Kept) {
        self.rows += other.rows;
        self.deleted += other.deleted;
        self.inserted += other.inserted;
    }
}

/// Makes the rows of `t.rebuild` that are not rebuilt equal to those of `t.live`, as multisets
/// of rows compared by their text form (every column's output; generated columns included),
/// writing only the difference: the early copy is mostly current, and each row written under
/// the lock makes it longer (measured on 1M rows: a full delete and re-insert took 2.4 times
/// as long as this comparison). Rows are located by `ctid`, which cannot change while the
/// tables are locked.
async fn sync_kept(client: &Client, partial: &Partial, t: &RunTable) -> Result<Kept> {
    let columns = copy_columns(client, &t.live).await?;
    if columns != copy_columns(client, &t.rebuild).await? {
        // The live table's structure changed since the clone: the swap's fingerprint check,
        // next in this transaction, refuses it (exit 4) with the details.
        return Ok(Kept::default());
    }
    let kept = kept_rows(partial, &t.projection);
    let diff = format!(
        "CREATE TEMP TABLE reproject_partial_diff ON COMMIT DROP AS          SELECT coalesce(l.n, 0) - coalesce(r.n, 0) AS d, l.tids AS live_tids, r.tids AS rebuild_tids          FROM (SELECT x::text AS t, count(*) AS n, array_agg(x.ctid) AS tids FROM {live} x WHERE {kept} GROUP BY 1) l          FULL JOIN (SELECT x::text AS t, count(*) AS n, array_agg(x.ctid) AS tids FROM {rebuild} x WHERE {kept} GROUP BY 1) r USING (t)          WHERE coalesce(l.n, 0) <> coalesce(r.n, 0) AND cardinality($1::text[]) >= 0",
        live = t.live.quoted(),
        rebuild = t.rebuild.quoted(),
    );
    let context = || format!("cannot compare `{}` with `{}`", t.rebuild, t.live);
    client
        .execute(&diff, &[&stream_param(partial)])
        .await
        .with_context(context)?;
    // Deleted first: an added row may take the unique key of a removed one.
    let deleted = client
        .execute(
            &format!(
                "DELETE FROM {} WHERE ctid = ANY (ARRAY(SELECT unnest(rebuild_tids[1:-d]) FROM reproject_partial_diff WHERE d < 0))",
                t.rebuild.quoted()
            ),
            &[],
        )
        .await
        .with_context(context)?;
    let inserted = client
        .execute(
            &format!(
                "INSERT INTO {} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {}                  WHERE ctid = ANY (ARRAY(SELECT unnest(live_tids[1:d]) FROM reproject_partial_diff WHERE d > 0))",
                t.rebuild.quoted(),
                t.live.quoted()
            ),
            &[],
        )
        .await
        .with_context(context)?;
    client
        .batch_execute("DROP TABLE reproject_partial_diff")
        .await
        .with_context(context)?;
    let rows = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE {kept} AND cardinality($1::text[]) >= 0",
                t.rebuild.quoted()
            ),
            &[&stream_param(partial)],
        )
        .await
        .with_context(context)?
        .get(0);
    Ok(Kept {
        rows,
        deleted: deleted as i64,
        inserted: inserted as i64,
    })
}

/// The live position of each of the run's projections that has one recorded (`reproject
/// run`'s checkpoint, or the `handover` row), with what recorded it, and how many projections
/// the run has.
async fn live_positions(
    client: &Client,
    config: &Config,
    tables: &[RunTable],
) -> Result<(Vec<(String, Option<i64>, String)>, usize)> {
    let mut names: Vec<String> = tables.iter().map(|t| t.projection.clone()).collect();
    names.dedup();
    let mut found: Vec<(String, Option<i64>, String)> = Vec::new();
    let checkpoints = if crate::state::live_checkpoints::exists(client).await? {
        crate::state::live_checkpoints::read(client, &names).await?
    } else {
        Vec::new()
    };
    for name in &names {
        if let Some(cp) = checkpoints.iter().find(|c| &c.projection == name) {
            if runner_keeps(client, cp).await? {
                found.push((
                    name.clone(),
                    cp.position,
                    "`reproject run`'s checkpoint".into(),
                ));
                continue;
            }
        }
        let Some(h) = config
            .projection_index(name)
            .and_then(|i| config.projections[i].handover.as_ref())
        else {
            continue;
        };
        let table = match &h.table.schema {
            Some(s) => format!("{}.{}", quote(s), quote(&h.table.name)),
            None => quote(&h.table.name),
        };
        let row = client
            .query_opt(
                &format!(
                    "SELECT {}::bigint FROM {table} WHERE {}::text = $1::text",
                    quote(&h.position_column),
                    quote(&h.key_column)
                ),
                &[&h.key],
            )
            .await
            .with_context(|| format!("cannot read the hand-over checkpoint in `{}`", h.table))?;
        let position = row.and_then(|r| r.get::<_, Option<i64>>(0));
        found.push((
            name.clone(),
            position,
            format!("the hand-over checkpoint in `{}`", h.table),
        ));
    }
    Ok((found, names.len()))
}

/// The one live position of the run's projections (and what recorded it), None when none is
/// recorded; an error when only some are, or they differ (one run has one position).
async fn live_position(
    client: &Client,
    config: &Config,
    tables: &[RunTable],
) -> Result<Option<(Option<i64>, String)>> {
    let (found, projections) = live_positions(client, config, tables).await?;
    match found.as_slice() {
        [] => Ok(None),
        [(_, p, what), rest @ ..] => {
            if found.len() < projections || rest.iter().any(|(_, q, _)| q != p) {
                return Err(Error::runtime(format!(
                    "the live positions of the projections of this run differ ({}); a partial swap needs one",
                    found
                        .iter()
                        .map(|(n, p, _)| format!("`{n}` at {}", Cursor::at(*p).describe()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_hint("run `reproject swap` once the live projectors agree, or rebuild the projections in separate runs"));
            }
            Ok(Some((*p, what.clone())))
        }
    }
}

/// `--dry-run`: how many events the partial rebuild would replay.
pub async fn dry_run_steps(
    engine: &Engine<'_>,
    plan: &Plan,
    partial: &Partial,
) -> Result<Vec<String>> {
    let resolved = engine.validate().await?;
    let client = engine.db.get().await?;
    let client: &Client = &client;
    let base = EventSource::new(&engine.config.events, &resolved);
    // What `seed` would find: one recorded live position for every projection of the run.
    let mut partial = partial.clone();
    if let Partial::Streams { since, .. } = &mut partial {
        if !matches!(engine.config.events.ordering, Ordering::Xid8 { .. }) {
            let tables = crate::pipeline::run_tables(engine.config, &resolved, &plan.order);
            let (found, projections) = live_positions(client, engine.config, &tables).await?;
            let first = found.first().and_then(|f| f.1);
            if found.len() == projections && found.iter().all(|f| f.1 == first) {
                *since = first;
            }
        }
    }
    let Some(head) = base.head(client).await? else {
        return Ok(vec![partial.describe()]);
    };
    let all = base
        .count(client, &Cursor::default(), &Bound::UpTo(head))
        .await?;
    let filtered = source(base, &partial);
    let from = Cursor::at(partial.start_position());
    let selected = filtered.count(client, &from, &Bound::UpTo(head)).await?;
    let mut steps = vec![partial.describe()];
    steps.push(format!(
        "replays {} of the {} event(s) up to position {head}{}",
        selected.events,
        all.events,
        match &partial {
            Partial::Streams { since: None, .. } => " (the selected streams' events)".to_string(),
            Partial::Streams {
                since: Some(since), ..
            } => format!(
                " (the selected streams' events up to the live position {since}, and every event after it)"
            ),
            Partial::FromPosition { position, .. } => format!(" (those after position {position})"),
        }
    ));
    steps.push(match &partial {
        Partial::Streams { since: None, .. } => "copies every row of the other streams from the live tables into the rebuild tables now (for the checks), and compares them with the live rows again under the swap's locks, after the final tail, writing the difference".to_string(),
        Partial::Streams { since: Some(since), .. } => format!("copies every row of the other streams from the live tables in one snapshot with their live position {since}; nothing is copied under the swap's locks"),
        Partial::FromPosition { .. } => "copies the live rows up to the position into the rebuild tables before the replay".to_string(),
    });
    Ok(steps)
}

/// The projections of a run's tables, once each.
fn run_projections(tables: &[RunTable]) -> Vec<String> {
    let mut names: Vec<String> = tables.iter().map(|t| t.projection.clone()).collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recorded_options_round_trip() {
        let p = Partial::Streams {
            streams: vec!["a".into(), "b".into()],
            streams_where: None,
            keys: BTreeMap::from([("tally".to_string(), "stream".to_string())]),
            since: Some(300),
        };
        let options = p.to_option().to_json();
        assert_eq!(options["partial"]["mode"], "streams");
        assert_eq!(options["partial"]["since"], 300);
        let read = RunOptions::from_json(options);
        assert_eq!(Partial::of_run(&read).unwrap(), Some(p));
        assert_eq!(
            Partial::of_run(&RunOptions::from_json(json!({}))).unwrap(),
            None
        );
    }

    #[test]
    fn comments_do_not_hide_the_statement() {
        assert_eq!(
            strip_comments("-- note\n/* x */ INSERT INTO t").trim(),
            "INSERT INTO t"
        );
    }

    #[test]
    fn kept_rows_are_the_complement_or_the_prefix() {
        let s = Partial::Streams {
            streams: vec!["a".into()],
            streams_where: None,
            keys: BTreeMap::from([("p".to_string(), "k".to_string())]),
            since: None,
        };
        assert_eq!(
            kept_rows(&s, "p"),
            "NOT coalesce(\"k\"::text = ANY($1::text[]), false)"
        );
        let f = Partial::FromPosition {
            position: 7,
            from_time: None,
            columns: BTreeMap::from([("p".to_string(), "pos".to_string())]),
        };
        assert_eq!(kept_rows(&f, "p"), "\"pos\" <= 7");
        assert_eq!(f.start_position(), Some(7));
    }
}
