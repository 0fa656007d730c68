//! Reading events in global order, in batches, from any table or SQL `source` whose columns
//! are mapped by the config's `[events]` expressions, each payload and time role read
//! according to how it is stored (`Encodings`, detected by validate.rs).

use crate::error::{Context, Error, Result};
use crate::model::config::{EventsConfig, Expr, Ordering};
use crate::model::ident::TableName;
use crate::model::{Encodings, Payload, Resolved};
pub use crate::model::{Event, RawJsonb};
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

/// Where reading stands. Stored as a run's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Cursor {
    /// `xid8` mode: the transaction id of the last applied event; None in the other modes.
    pub tx: Option<u64>,
    /// Position modes: every position up to and including this one is applied and final.
    /// `xid8` mode: the position of the last applied event. None: nothing applied yet.
    pub position: Option<i64>,
}

impl Cursor {
    /// A cursor of the position modes.
    pub fn at(position: Option<i64>) -> Cursor {
        Cursor { tx: None, position }
    }

    /// For messages: `position 42`, `transaction 1234 position 42`, `start`.
    pub fn describe(&self) -> String {
        crate::progress::At::from(*self).to_string()
    }
}

impl From<Cursor> for crate::progress::At {
    fn from(c: Cursor) -> Self {
        crate::progress::At {
            transaction: c.tx,
            position: c.position,
        }
    }
}

/// How far events may be read right now without skipping one that commits later; computed by
/// [`crate::read::ordering::Cut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Every position up to and including this one is final (gap-aware, serialized).
    UpTo(i64),
    /// Every transaction below this id has ended, so its rows are final (`xid8`).
    BelowTx(u64),
}

impl Bound {
    /// Whether `at` already holds everything this bound allows; for `BelowTx` only reading
    /// can tell, so this is false.
    pub fn reached_by(&self, at: &Cursor) -> bool {
        match self {
            Bound::UpTo(p) => at.position.is_some_and(|at| at >= *p),
            Bound::BelowTx(_) => false,
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        crate::progress::UpTo::from(*self).to_string()
    }
}

impl From<Bound> for crate::progress::UpTo {
    fn from(b: Bound) -> Self {
        match b {
            Bound::UpTo(p) => crate::progress::UpTo::Position(p),
            Bound::BelowTx(tx) => crate::progress::UpTo::TransactionsBelow(tx),
        }
    }
}

/// Where the checkpoint goes after a batch: in the position modes to the bound once the range
/// is exhausted (past trailing events the filter excludes: every position up to the bound is
/// final), else to the last event read; in `xid8` mode always to the last event read, because
/// a later transaction may still bring lower positions.
pub fn next_cursor(from: &Cursor, upto: &Bound, last: Option<&Event>, exhausted: bool) -> Cursor {
    match upto {
        Bound::UpTo(p) if exhausted => Cursor::at(Some(*p)),
        Bound::UpTo(_) => Cursor::at(last.map(|e| e.position).or(from.position)),
        Bound::BelowTx(_) => last.map_or(*from, |e| Cursor {
            tx: e.tx,
            position: Some(e.position),
        }),
    }
}

/// How many events a range holds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counts {
    /// Events that pass the filter: these are replayed.
    pub events: i64,
    /// Events the filter excludes (e.g. invalidated ones).
    pub excluded: i64,
    /// Lowest position in the range.
    pub first_position: Option<i64>,
    /// Highest position in the range.
    pub last_position: Option<i64>,
}

/// The SQL to read one event table, built once from the config.
#[derive(Debug, Clone)]
pub struct EventSource {
    /// The event table, or with a `source` query the table its appends insert into: the
    /// table whose writers gap-aware ordering watches, named in messages.
    pub table: TableName,
    /// What reading selects from: the quoted table, or `(source) AS events`.
    pub(crate) from: String,
    pub(crate) position: String,
    /// `xid8` mode: the transaction id expression, as xid8.
    pub(crate) tx: Option<String>,
    pub(crate) ordering: Ordering,
    /// Where positions come from, for gap-aware ordering to know where they begin
    /// (read/ordering.rs `SequenceStart`).
    pub(crate) position_origin: PositionOrigin,
    encodings: Encodings,
    select: String,
    filter: String,
    /// The columns of `:events` (position, stream, type, data, metadata, timestamp).
    events_columns: String,
    /// Whether `[events]` maps a `timestamp` role (else `events_columns` reads it as NULL).
    has_timestamp: bool,
    /// The `stream` role, for [`StreamFilter`].
    stream: String,
    /// The `type` role, for [`EventSource::in_ranges_sql`].
    event_type: String,
    /// A partial rebuild reads only (or all but) some streams (pipeline/partial.rs).
    streams: Option<StreamFilter>,
    /// A stream lane (pipeline/lanes.rs): only the events whose stream hashes to lane `.0` of
    /// `.1`.
    lane: Option<(i32, i32)>,
}

/// Where the positions of an event table are drawn from, as far as the config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionOrigin {
    /// `events.position_sequence` (or the preset's): this sequence.
    Sequence(TableName),
    /// The position is this plain column of the event table: its serial or identity sequence,
    /// or the sequence its default calls, if any.
    Column(String),
    /// Neither (an expression, or a `source` query): unknown.
    Unknown,
}

impl PositionOrigin {
    /// From the config: the named sequence (unqualified: in the event table's schema), else
    /// the position when it is a bare column of the table read (not of a `source` query).
    pub fn of(events: &EventsConfig, table: &TableName) -> PositionOrigin {
        let parse = |text: &str| crate::model::ident::parse_table_ref(text).ok();
        if let Some(seq) = events
            .position_sequence
            .as_ref()
            .and_then(|e| parse(&e.sql))
        {
            let schema = seq.schema.unwrap_or_else(|| table.schema.clone());
            return PositionOrigin::Sequence(TableName::new(schema, seq.name));
        }
        match parse(&events.position.sql) {
            Some(col) if col.schema.is_none() && events.source.is_none() => {
                PositionOrigin::Column(col.name)
            }
            _ => PositionOrigin::Unknown,
        }
    }
}

/// Restricts reading to the events of some streams, or to the events of all other streams.
#[derive(Debug, Clone)]
pub struct StreamFilter {
    /// The streams (as text, the `stream` role's value).
    pub streams: Vec<String>,
    /// Read the events of every stream *not* in `streams` instead.
    pub exclude: bool,
    /// Only up to this position: every event after it is read, whatever its stream.
    pub since: Option<i64>,
}

pub(crate) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

pub(crate) fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Parses an xid8 read as text.
fn parse_tx(text: Option<String>) -> Result<Option<u64>> {
    text.map(|t| {
        t.parse::<u64>()
            .map_err(|_| Error::runtime(format!("unexpected transaction id `{t}`")))
    })
    .transpose()
}

/// What the events are read from: the quoted table, or the `source` query as a subquery.
pub fn from_clause(events: &EventsConfig, table: &TableName) -> String {
    match &events.source {
        Some(source) => format!("({}\n) AS events", source.sql),
        None => table.quoted(),
    }
}

/// Bytes of a bytea payload as jsonb in binary form (version 1, then the text), after checking
/// they are UTF-8 JSON.
fn json_from_bytes(
    bytes: Option<Vec<u8>>,
    key: &str,
    position: i64,
    source: &TableName,
) -> Result<Option<RawJsonb>> {
    let Some(bytes) = bytes else { return Ok(None) };
    let why = match std::str::from_utf8(&bytes) {
        Err(e) => Some(format!("not UTF-8 ({e})")),
        Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text)
            .err()
            .map(|e| format!("not JSON ({e})")),
    };
    if let Some(why) = why {
        return Err(Error::runtime(format!(
            "the event at position {position} of `{source}`: `events.{key}` is bytea but {why}"
        ))
        .with_hint("reproject reads bytea payloads that hold UTF-8 JSON; a store that serializes otherwise (e.g. Commanded's default Erlang term serializer) must be configured to write JSON"));
    }
    let mut raw = Vec::with_capacity(bytes.len() + 1);
    raw.push(1);
    raw.extend_from_slice(&bytes);
    Ok(Some(RawJsonb(raw)))
}

/// A role of the `[events]` mapping, the SQL type reproject reads it as and the expression
/// that reads it.
pub struct Role<'a> {
    /// The config key (`position`, `data`, …).
    pub key: &'static str,
    /// The expression as configured.
    pub expr: &'a Expr,
    /// The SQL type it is read as.
    pub sql_type: &'static str,
    /// The SQL that reads it.
    pub read: String,
}

impl EventSource {
    /// Reads the events `events` describes from the resolved tables. A preset's keys are
    /// read as validation completed them for this database (`resolved.events`, the same
    /// config with the optional columns the table has); `events` is the config's mapping.
    pub fn new(events: &EventsConfig, resolved: &Resolved) -> EventSource {
        let events = if events.preset.is_some() {
            &resolved.events
        } else {
            events
        };
        let table = &resolved.events_table;
        let enc = resolved.encodings;
        let tx = match &events.ordering {
            Ordering::Xid8 { transaction_id } => Some(enc.transaction_id.read(&transaction_id.sql)),
            _ => None,
        };
        let select = format!(
            "{}::text, ({})::bigint, ({})::text, ({})::text, {}, {}, {}",
            tx.as_deref().unwrap_or("NULL"),
            events.position.sql,
            events.stream.sql,
            events.event_type.sql,
            enc.data.read(&events.data.sql),
            events
                .metadata
                .as_ref()
                .map_or_else(|| "NULL::jsonb".to_string(), |e| enc.metadata.read(&e.sql)),
            events.timestamp.as_ref().map_or_else(
                || "NULL::timestamptz".to_string(),
                |e| enc.timestamp.read(&e.sql)
            ),
        );
        let events_columns = format!(
            "({})::bigint AS position, ({})::text AS stream, ({})::text AS type, {} AS data, {} AS metadata, {} AS \"timestamp\"",
            events.position.sql,
            events.stream.sql,
            events.event_type.sql,
            enc.data.read_json(&events.data.sql),
            events
                .metadata
                .as_ref()
                .map_or_else(|| "NULL::jsonb".to_string(), |e| enc.metadata.read_json(&e.sql)),
            events.timestamp.as_ref().map_or_else(
                || "NULL::timestamptz".to_string(),
                |e| enc.timestamp.read(&e.sql)
            ),
        );
        EventSource {
            events_columns,
            has_timestamp: events.timestamp.is_some(),
            table: table.clone(),
            from: from_clause(events, table),
            position: format!("({})", events.position.sql),
            tx,
            ordering: events.ordering.clone(),
            position_origin: PositionOrigin::of(events, table),
            encodings: enc,
            select,
            filter: events
                .filter
                .as_ref()
                .map(|f| format!("({})", f.sql))
                .unwrap_or_else(|| "true".into()),
            stream: format!("({})", events.stream.sql),
            event_type: format!("({})", events.event_type.sql),
            streams: None,
            lane: None,
        }
    }

    /// The same source, reading only the events of stream lane `lane` of `lanes`: those
    /// whose stream hashes to it. Every event falls in exactly one lane (a NULL stream hashes
    /// as the empty string), so the lanes of a range partition it. `hashtext` has been the
    /// same function since PostgreSQL 8.4; the stream is hashed as text in the "C" collation,
    /// so no collation changes the split.
    pub fn in_lane(&self, lane: i32, lanes: i32) -> EventSource {
        let mut source = self.clone();
        source.lane = Some((lane, lanes));
        source
    }

    /// ` AND <the lane predicate>`, or nothing outside a lane. Numbers only: no parameters.
    fn lane_clause(&self) -> String {
        match self.lane {
            None => String::new(),
            Some((lane, lanes)) => format!(
                " AND mod(hashtext(coalesce(({})::text COLLATE \"C\", ''))::bigint + 2147483648, {lanes}) = {lane}",
                self.stream
            ),
        }
    }

    /// The same source, reading only the events `filter` selects (None: every event).
    pub fn with_streams(mut self, filter: Option<StreamFilter>) -> EventSource {
        self.streams = filter;
        self
    }

    /// A query of the events (that pass the filter) whose position lies in one of the ranges
    /// `ranges` returns (a query with the columns `reproject_from`, `reproject_to` and
    /// `reproject_tag`): position, stream, type and the range's tag, by position. Names
    /// unlikely to clash with the event table's columns, which the join sees unqualified.
    pub fn in_ranges_sql(&self, ranges: &str) -> String {
        format!(
            "SELECT ({pos})::bigint, ({stream})::text, ({ty})::text, r.reproject_tag \
             FROM {from} JOIN ({ranges}) r \
               ON {pos} BETWEEN r.reproject_from AND r.reproject_to \
             WHERE {filter} ORDER BY 1, 4",
            pos = self.position,
            stream = self.stream,
            ty = self.event_type,
            from = self.from,
            filter = self.filter,
        )
    }

    /// The `stream` role as an SQL expression over the event rows.
    pub fn stream_expr(&self) -> &str {
        &self.stream
    }

    /// Every mapped role with the type it is read as, for validation.
    pub fn roles<'a>(events: &'a EventsConfig, enc: &Encodings) -> Vec<Role<'a>> {
        let role = |key, expr: &'a Expr, sql_type: &'static str| Role {
            key,
            expr,
            sql_type,
            read: format!("({})::{sql_type}", expr.sql),
        };
        let mut roles = vec![
            role("position", &events.position, "bigint"),
            role("stream", &events.stream, "text"),
            role("type", &events.event_type, "text"),
            Role {
                read: enc.data.read(&events.data.sql),
                ..role("data", &events.data, enc.data.sql_type())
            },
        ];
        if let Some(e) = &events.metadata {
            roles.push(Role {
                read: enc.metadata.read(&e.sql),
                ..role("metadata", e, enc.metadata.sql_type())
            });
        }
        if let Some(e) = &events.timestamp {
            roles.push(Role {
                read: enc.timestamp.read(&e.sql),
                ..role("timestamp", e, "timestamptz")
            });
        }
        if let Ordering::Xid8 { transaction_id } = &events.ordering {
            roles.push(Role {
                read: enc.transaction_id.read(&transaction_id.sql),
                ..role("transaction_id", transaction_id, "xid8")
            });
        }
        if let Some(e) = &events.filter {
            roles.push(role("filter", e, "boolean"));
        }
        roles
    }

    /// The highest position in the table (filtered or not), or None when it is empty.
    pub async fn head(&self, client: &impl GenericClient) -> Result<Option<i64>> {
        let sql = format!("SELECT max({})::bigint FROM {}", self.position, self.from);
        let row = client
            .query_one(&sql, &[])
            .await
            .with_context(|| format!("cannot read the last event position of `{}`", self.table))?;
        Ok(row.get(0))
    }

    /// Whether `[events]` maps a `timestamp` role.
    pub fn has_timestamp(&self) -> bool {
        self.has_timestamp
    }

    /// How old, in seconds, the first event (that passes the filter) after `position` is: how
    /// far behind in time a reader at `position` is. None without a `timestamp` role, or when
    /// no event follows `position`.
    pub async fn age_after(
        &self,
        client: &impl GenericClient,
        position: Option<i64>,
    ) -> Result<Option<f64>> {
        if !self.has_timestamp {
            return Ok(None);
        }
        let sql = format!(
            "SELECT extract(epoch FROM clock_timestamp() - e.\"timestamp\")::float8 FROM (SELECT {} FROM {} WHERE {} > $1 AND {} ORDER BY {} LIMIT 1) e",
            self.events_columns, self.from, self.position, self.filter, self.position
        );
        let row = client
            .query_opt(&sql, &[&position.unwrap_or(i64::MIN)])
            .await
            .with_context(|| {
                format!(
                    "cannot read the age of the oldest unapplied event of `{}`",
                    self.table
                )
            })?;
        Ok(row.and_then(|r| r.get::<_, Option<f64>>(0)))
    }

    /// The lowest position in the event table, or None when it is empty.
    pub async fn first(&self, client: &impl GenericClient) -> Result<Option<i64>> {
        let sql = format!("SELECT min({})::bigint FROM {}", self.position, self.from);
        let row = client
            .query_one(&sql, &[])
            .await
            .with_context(|| format!("cannot read the first event position of `{}`", self.table))?;
        Ok(row.get(0))
    }

    /// The events after `after` up to `upto`, as a WHERE clause and its parameters ($1..), and
    /// the ORDER BY of reading order.
    fn range(&self, after: &Cursor, upto: &Bound) -> (String, String, Params) {
        let (mut clause, order, mut params) = self.window(after, upto);
        if let Some(f) = &self.streams {
            // A NULL stream is in no list: excluded by a stream list, kept by its complement.
            let selected = format!(
                "{}coalesce({}::text = ANY(${}::text[]), false)",
                if f.exclude { "NOT " } else { "" },
                self.stream,
                params.len() + 1
            );
            params.push(Box::new(f.streams.clone()));
            clause = match f.since {
                None => format!("{clause} AND {selected}"),
                Some(since) => {
                    params.push(Box::new(since));
                    format!(
                        "{clause} AND ({} > ${}::bigint OR {selected})",
                        self.position,
                        params.len()
                    )
                }
            };
        }
        (format!("{clause}{}", self.lane_clause()), order, params)
    }

    /// The position (or transaction id) window of [`Self::range`].
    fn window(&self, after: &Cursor, upto: &Bound) -> (String, String, Params) {
        let pos = &self.position;
        match (upto, &self.tx) {
            (Bound::BelowTx(below), Some(tx)) => (
                // The lower bound on the transaction id alone is implied by the pair's, and
                // written out because it references no position: it narrows an index on the
                // transaction id, and it reaches into a `source` whose position is computed
                // per transaction (a window over the transaction id), where a condition on
                // the position cannot.
                format!(
                    "{tx} < $3::text::xid8 AND {tx} >= coalesce($1::text::xid8, '0'::xid8) \
                     AND ($1::text IS NULL OR ({tx}, {pos}) > ($1::text::xid8, $2::bigint))"
                ),
                format!("{tx}, {pos}"),
                vec![
                    Box::new(after.tx.map(|t| t.to_string())),
                    Box::new(after.position.unwrap_or(i64::MIN)),
                    Box::new(below.to_string()),
                ],
            ),
            (Bound::UpTo(upto), _) => (
                format!("{pos} > $1::bigint AND {pos} <= $2::bigint"),
                pos.clone(),
                vec![
                    Box::new(after.position.unwrap_or(i64::MIN)),
                    Box::new(*upto),
                ],
            ),
            (Bound::BelowTx(_), None) => {
                unreachable!("a transaction-id bound is only computed in xid8 mode")
            }
        }
    }

    /// The query of every event after `after` up to `upto` that passes the filter, in reading
    /// order, and its parameters: [`Self::read_batch`] adds a LIMIT, the one-pass read of the
    /// bulk replay (read/one_pass.rs) opens a cursor over it.
    pub(crate) fn ordered(&self, after: &Cursor, upto: &Bound) -> (String, Params) {
        let (range, order, params) = self.range(after, upto);
        let sql = format!(
            "SELECT {} FROM {} WHERE {range} AND {} ORDER BY {order}",
            self.select, self.from, self.filter,
        );
        (sql, params)
    }

    /// Events after `after` up to `upto` that pass the filter, in reading order, at most
    /// `limit`.
    pub async fn read_batch(
        &self,
        client: &impl GenericClient,
        after: &Cursor,
        upto: &Bound,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let (sql, mut params) = self.ordered(after, upto);
        let sql = format!("{sql} LIMIT ${}::bigint", params.len() + 1);
        params.push(Box::new(limit));
        let rows = client.query(&sql, &refs(&params)).await.with_context(|| {
            format!(
                "cannot read events of `{}` after {}",
                self.table,
                after.describe()
            )
        })?;
        self.decode(&rows)
    }

    /// Events from rows of [`Self::ordered`]'s columns.
    pub(crate) fn decode(&self, rows: &[tokio_postgres::Row]) -> Result<Vec<Event>> {
        let payload = |r: &tokio_postgres::Row, i: usize, kind: Payload, key: &str| match kind {
            Payload::Jsonb => Ok(r.get(i)),
            Payload::Bytea => json_from_bytes(r.get(i), key, r.get(1), &self.table),
        };
        rows.iter()
            .map(|r| {
                Ok(Event {
                    tx: parse_tx(r.get(0))?,
                    position: r.get(1),
                    stream: r.get(2),
                    event_type: r.get(3),
                    data: payload(r, 4, self.encodings.data, "data")?,
                    metadata: payload(r, 5, self.encodings.metadata, "metadata")?,
                    timestamp: r.get(6),
                })
            })
            .collect()
    }

    /// How far a batch of at most `limit` events after `after` (up to `upto`) reaches, without
    /// reading the events: the number of events and the cursor of the last one (None when
    /// there is none). Set-based handlers read the batch in the server through
    /// [`EventSource::events_between`].
    pub async fn batch_end(
        &self,
        client: &impl GenericClient,
        after: &Cursor,
        upto: &Bound,
        limit: i64,
    ) -> Result<(i64, Option<Cursor>)> {
        let (range, order, mut params) = self.range(after, upto);
        let last_first = if self.tx.is_some() {
            "t DESC, p DESC"
        } else {
            "p DESC"
        };
        let sql = format!(
            "SELECT count(*) OVER (), t::text, p FROM \
             (SELECT {} AS t, {}::bigint AS p FROM {} WHERE {range} AND {} ORDER BY {order} LIMIT ${}::bigint) s \
             ORDER BY {last_first} LIMIT 1",
            self.tx.as_deref().unwrap_or("NULL::xid8"),
            self.position,
            self.from,
            self.filter,
            params.len() + 1,
        );
        params.push(Box::new(limit));
        let row = client
            .query_opt(&sql, &refs(&params))
            .await
            .with_context(|| {
                format!(
                    "cannot find the end of the batch of `{}` after {}",
                    self.table,
                    after.describe()
                )
            })?;
        Ok(match row {
            None => (0, None),
            Some(r) => (
                r.get(0),
                Some(Cursor {
                    tx: parse_tx(r.get(1))?,
                    position: Some(r.get(2)),
                }),
            ),
        })
    }

    /// `:events` for the events after `after` up to and including `to` (both cursors of this
    /// source) that pass the filter: a subquery with the values inlined, so the set-based
    /// statement is planned with them. Positions and transaction ids are numbers; the streams
    /// of a partial rebuild ([`StreamFilter`]) are quoted literals.
    pub fn events_between(&self, after: &Cursor, to: &Cursor) -> String {
        let pos = &self.position;
        let window = match &self.tx {
            Some(tx) => {
                let key = |c: &Cursor| {
                    format!(
                        "('{}'::xid8, ({})::bigint)",
                        c.tx.unwrap_or(0),
                        c.position.unwrap_or(0)
                    )
                };
                let lower = if after.position.is_some() {
                    format!(
                        "{tx} >= '{}'::xid8 AND ({tx}, {pos}) > {} AND ",
                        after.tx.unwrap_or(0),
                        key(after)
                    )
                } else {
                    String::new()
                };
                format!("{lower}({tx}, {pos}) <= {}", key(to))
            }
            None => {
                let lower = after
                    .position
                    .map(|p| format!("{pos} > ({p})::bigint AND "))
                    .unwrap_or_default();
                match to.position {
                    Some(p) => format!("{lower}{pos} <= ({p})::bigint"),
                    None => "false".into(),
                }
            }
        };
        // The same stream selection as `range` (a partial rebuild), with the values inlined.
        let streams = match &self.streams {
            None => String::new(),
            Some(f) => {
                let list: Vec<String> = f
                    .streams
                    .iter()
                    .map(|s| crate::model::ident::literal(s))
                    .collect();
                let selected = format!(
                    "{}coalesce({}::text = ANY(ARRAY[{}]::text[]), false)",
                    if f.exclude { "NOT " } else { "" },
                    self.stream,
                    list.join(", ")
                );
                match f.since {
                    None => format!(" AND {selected}"),
                    Some(since) => {
                        format!(" AND ({} > ({since})::bigint OR {selected})", self.position)
                    }
                }
            }
        };
        format!(
            "(SELECT {} FROM {} WHERE {window} AND {}{streams}{})",
            self.events_columns,
            self.from,
            self.filter,
            self.lane_clause()
        )
    }

    /// Whether this source can be read in stream lanes: not for a partial rebuild's stream
    /// selection (in `xid8` mode the lanes' cursors are (transaction id, position) pairs).
    pub fn lanes_possible(&self) -> bool {
        self.streams.is_none()
    }

    /// The last event (that passes the filter) after `after` up to `upto`, in reading order:
    /// where a plan of stream lanes over that range ends. None when there is none.
    pub async fn last_cursor(
        &self,
        client: &impl GenericClient,
        after: &Cursor,
        upto: &Bound,
    ) -> Result<Option<Cursor>> {
        let (range, _, params) = self.range(after, upto);
        let last_first = match &self.tx {
            Some(tx) => format!("{tx} DESC, {} DESC", self.position),
            None => format!("{} DESC", self.position),
        };
        let sql = format!(
            "SELECT ({})::text, ({})::bigint FROM {} WHERE {range} AND {} ORDER BY {last_first} LIMIT 1",
            self.tx.as_deref().unwrap_or("NULL::xid8"),
            self.position,
            self.from,
            self.filter,
        );
        let row = client
            .query_opt(&sql, &refs(&params))
            .await
            .with_context(|| format!("cannot read the last event of `{}` to replay", self.table))?;
        Ok(match row {
            None => None,
            Some(r) => Some(Cursor {
                tx: parse_tx(r.get(0))?,
                position: Some(r.get(1)),
            }),
        })
    }

    /// Counts the events of a range, and those the filter excludes.
    pub async fn count(
        &self,
        client: &impl GenericClient,
        after: &Cursor,
        upto: &Bound,
    ) -> Result<Counts> {
        let (range, _, params) = self.range(after, upto);
        let sql = format!(
            "SELECT count(*) FILTER (WHERE {f}), count(*) FILTER (WHERE NOT coalesce({f}, false)), \
             min({pos}) FILTER (WHERE {f})::bigint, max({pos}) FILTER (WHERE {f})::bigint \
             FROM {} WHERE {range}",
            self.from,
            f = self.filter,
            pos = self.position,
        );
        let row = client
            .query_one(&sql, &refs(&params))
            .await
            .with_context(|| format!("cannot count the events of `{}`", self.table))?;
        Ok(Counts {
            events: row.get(0),
            excluded: row.get(1),
            first_position: row.get(2),
            last_position: row.get(3),
        })
    }

    /// In `xid8` mode, refuses an event table with rows whose transaction id is NULL: they
    /// would never be below any cut, so they would be skipped silently.
    pub async fn check_transaction_ids(&self, client: &impl GenericClient) -> Result<()> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let sql = format!(
            "SELECT min({})::bigint, count(*) FROM {} WHERE {tx} IS NULL",
            self.position, self.from
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .with_context(|| format!("cannot check the transaction ids of `{}`", self.table))?;
        let n: i64 = row.get(1);
        if n > 0 {
            let first: Option<i64> = row.get(0);
            return Err(Error::config(format!(
                "{n} event(s) of `{}` have no transaction id (the first at position {}); `ordering = \"xid8\"` would never read them",
                self.table,
                first.map_or("NULL".into(), |p| p.to_string())
            ))
            .with_hint("fill the column and declare it NOT NULL DEFAULT pg_current_xact_id(), or use `ordering = \"gap-aware\"`"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TimeKind, TxKind};
    use tokio_postgres::types::Type;

    fn event(tx: Option<u64>, position: i64) -> Event {
        Event {
            tx,
            position,
            stream: None,
            event_type: None,
            data: None,
            metadata: None,
            timestamp: None,
        }
    }

    #[test]
    fn bytea_payloads_become_binary_jsonb_or_name_the_position() {
        let table = TableName::new("public".to_string(), "events".to_string());
        let ok = json_from_bytes(Some(b"{\"a\": 1}".to_vec()), "data", 7, &table)
            .unwrap()
            .unwrap();
        assert_eq!(ok.0[0], 1, "jsonb's binary format starts with its version");
        assert_eq!(ok.text(), "{\"a\": 1}");
        assert!(json_from_bytes(None, "data", 7, &table).unwrap().is_none());
        let err = json_from_bytes(Some(b"{\"a\":".to_vec()), "metadata", 7, &table).unwrap_err();
        assert!(err.message.contains("position 7"), "{err}");
        assert!(
            err.message
                .contains("`events.metadata` is bytea but not JSON"),
            "{err}"
        );
        let err = json_from_bytes(Some(vec![0x83, 0x6d]), "data", 8, &table).unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn storage_kinds_follow_the_column_type() {
        assert_eq!(Payload::of(&Type::BYTEA), Payload::Bytea);
        for ty in [Type::JSONB, Type::JSON, Type::TEXT] {
            assert_eq!(Payload::of(&ty), Payload::Jsonb);
        }
        assert_eq!(TimeKind::of(&Type::TIMESTAMP), TimeKind::Timestamp);
        assert_eq!(TimeKind::of(&Type::TIMESTAMPTZ), TimeKind::Timestamptz);
        assert_eq!(TimeKind::of(&Type::VARCHAR), TimeKind::Text);
        assert!(TimeKind::Timestamp.read("t").contains("AT TIME ZONE 'UTC'"));
        // No cast from bigint to xid8 exists: a bigint transaction id is read through text.
        assert_eq!(TxKind::of(&Type::INT8), TxKind::Bigint);
        assert_eq!(TxKind::of(&Type::XID8), TxKind::Xid8);
        assert_eq!(TxKind::Bigint.read("xact_id"), "((xact_id)::text::xid8)");
        assert_eq!(
            TxKind::Xid8.read("transaction_id"),
            "((transaction_id)::xid8)"
        );
    }

    #[test]
    fn position_modes_move_to_the_bound_once_the_range_is_exhausted() {
        let from = Cursor::at(Some(10));
        let last = event(None, 14);
        assert_eq!(
            next_cursor(&from, &Bound::UpTo(20), Some(&last), true),
            Cursor::at(Some(20)),
            "past trailing filtered events: every position up to the bound is final"
        );
        assert_eq!(
            next_cursor(&from, &Bound::UpTo(20), Some(&last), false),
            Cursor::at(Some(14))
        );
        assert_eq!(
            next_cursor(&from, &Bound::UpTo(20), None, true),
            Cursor::at(Some(20))
        );
    }

    #[test]
    fn xid8_mode_stays_at_the_last_event_read() {
        let from = Cursor {
            tx: Some(700),
            position: Some(50),
        };
        let last = event(Some(705), 42);
        assert_eq!(
            next_cursor(&from, &Bound::BelowTx(710), Some(&last), true),
            Cursor {
                tx: Some(705),
                position: Some(42)
            },
            "a lower position in a later transaction is after the checkpoint"
        );
        assert_eq!(next_cursor(&from, &Bound::BelowTx(710), None, true), from);
    }

    #[test]
    fn cursors_describe_themselves() {
        let b = Cursor {
            tx: Some(705),
            position: Some(42),
        };
        assert_eq!(b.describe(), "transaction 705 position 42");
        assert_eq!(Cursor::at(Some(7)).describe(), "position 7");
        assert_eq!(Cursor::default().describe(), "start");
    }

    #[test]
    fn only_position_bounds_are_known_to_be_reached() {
        assert!(Bound::UpTo(5).reached_by(&Cursor::at(Some(5))));
        assert!(!Bound::UpTo(5).reached_by(&Cursor::at(Some(4))));
        assert!(!Bound::UpTo(5).reached_by(&Cursor::default()));
        assert!(!Bound::BelowTx(5).reached_by(&Cursor {
            tx: Some(9),
            position: Some(9)
        }));
    }
}
