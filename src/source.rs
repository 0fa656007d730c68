//! Reading events in global order, in batches, from any table (or, later, SQL source) whose
//! columns are mapped by the config's `[events]` expressions.

use crate::config::{EventsConfig, Expr};
use crate::error::{Context, Result};
use crate::ident::TableName;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use std::error::Error as StdError;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::GenericClient;

/// A jsonb value kept in PostgreSQL's binary form: read from the event table and bound to
/// handler statements without parsing or re-serialising it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJsonb(pub Vec<u8>);

impl<'a> FromSql<'a> for RawJsonb {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawJsonb(raw.to_vec()))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
}

impl ToSql for RawJsonb {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
    tokio_postgres::types::to_sql_checked!();
}

impl RawJsonb {
    /// The JSON text (binary jsonb is a version byte followed by the text).
    pub fn text(&self) -> &str {
        std::str::from_utf8(self.0.get(1..).unwrap_or_default()).unwrap_or("")
    }
}

/// One event as handlers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub position: i64,
    pub stream: Option<String>,
    pub event_type: Option<String>,
    pub data: Option<RawJsonb>,
    pub metadata: Option<RawJsonb>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// How many events a range holds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counts {
    /// Events that pass the filter: these are replayed.
    pub events: i64,
    /// Events the filter excludes (e.g. invalidated ones).
    pub excluded: i64,
    pub first_position: Option<i64>,
    pub last_position: Option<i64>,
}

/// The SQL to read one event table, built once from the config.
#[derive(Debug, Clone)]
pub struct EventSource {
    pub table: TableName,
    position: String,
    select: String,
    filter: String,
}

/// A role of the `[events]` mapping and the SQL type reproject reads it as.
pub struct Role<'a> {
    pub key: &'static str,
    pub expr: &'a Expr,
    pub sql_type: &'static str,
}

impl EventSource {
    pub fn new(events: &EventsConfig, table: &TableName) -> EventSource {
        let opt = |e: &Option<Expr>, ty: &str| match e {
            Some(e) => format!("({})::{ty}", e.sql),
            None => format!("NULL::{ty}"),
        };
        let select = format!(
            "({})::bigint, ({})::text, ({})::text, {}, {}, {}",
            events.position.sql,
            events.stream.sql,
            events.event_type.sql,
            format_args!("({})::jsonb", events.data.sql),
            opt(&events.metadata, "jsonb"),
            opt(&events.timestamp, "timestamptz"),
        );
        EventSource {
            table: table.clone(),
            position: format!("({})", events.position.sql),
            select,
            filter: events
                .filter
                .as_ref()
                .map(|f| format!("({})", f.sql))
                .unwrap_or_else(|| "true".into()),
        }
    }

    /// Every mapped role with the type it is read as, for validation.
    pub fn roles(events: &EventsConfig) -> Vec<Role<'_>> {
        let mut roles = vec![
            Role {
                key: "position",
                expr: &events.position,
                sql_type: "bigint",
            },
            Role {
                key: "stream",
                expr: &events.stream,
                sql_type: "text",
            },
            Role {
                key: "type",
                expr: &events.event_type,
                sql_type: "text",
            },
            Role {
                key: "data",
                expr: &events.data,
                sql_type: "jsonb",
            },
        ];
        if let Some(e) = &events.metadata {
            roles.push(Role {
                key: "metadata",
                expr: e,
                sql_type: "jsonb",
            });
        }
        if let Some(e) = &events.timestamp {
            roles.push(Role {
                key: "timestamp",
                expr: e,
                sql_type: "timestamptz",
            });
        }
        if let Some(e) = &events.filter {
            roles.push(Role {
                key: "filter",
                expr: e,
                sql_type: "boolean",
            });
        }
        roles
    }

    /// The highest position in the table (filtered or not), or None when it is empty.
    pub async fn head(&self, client: &impl GenericClient) -> Result<Option<i64>> {
        let sql = format!(
            "SELECT max({})::bigint FROM {}",
            self.position,
            self.table.quoted()
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .with_context(|| format!("cannot read the last event position of `{}`", self.table))?;
        Ok(row.get(0))
    }

    /// Events with `after < position <= upto` that pass the filter, in order, at most `limit`.
    pub async fn read_batch(
        &self,
        client: &impl GenericClient,
        after: Option<i64>,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {pos} > $1::bigint AND {pos} <= $2::bigint AND {} ORDER BY {pos} LIMIT $3::bigint",
            self.select,
            self.table.quoted(),
            self.filter,
            pos = self.position,
        );
        let rows = client
            .query(&sql, &[&after.unwrap_or(i64::MIN), &upto, &limit])
            .await
            .with_context(|| {
                format!(
                    "cannot read events of `{}` after position {}",
                    self.table,
                    after.map_or("start".into(), |p| p.to_string())
                )
            })?;
        Ok(rows
            .iter()
            .map(|r| Event {
                position: r.get(0),
                stream: r.get(1),
                event_type: r.get(2),
                data: r.get(3),
                metadata: r.get(4),
                timestamp: r.get(5),
            })
            .collect())
    }

    /// Counts the events of a range, and those the filter excludes.
    pub async fn count(
        &self,
        client: &impl GenericClient,
        after: Option<i64>,
        upto: i64,
    ) -> Result<Counts> {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE {f}), count(*) FILTER (WHERE NOT coalesce({f}, false)), \
             min({pos}) FILTER (WHERE {f})::bigint, max({pos}) FILTER (WHERE {f})::bigint \
             FROM {} WHERE {pos} > $1::bigint AND {pos} <= $2::bigint",
            self.table.quoted(),
            f = self.filter,
            pos = self.position,
        );
        let row = client
            .query_one(&sql, &[&after.unwrap_or(i64::MIN), &upto])
            .await
            .with_context(|| format!("cannot count the events of `{}`", self.table))?;
        Ok(Counts {
            events: row.get(0),
            excluded: row.get(1),
            first_position: row.get(2),
            last_position: row.get(3),
        })
    }
}
