//! Applying events to one generation of tables: the live tables (for `run`) or the `_rebuild`
//! clones. For each event, the handlers of every projection run in dependency order, so a
//! projection that reads another sees it exactly as it was at that event, as it would live.
//!
//! The statements of a batch are pipelined: all are sent before the first answer is awaited.
//! The server still runs them one after another, in order, in the batch's transaction, so the
//! result is the same as sending them one by one, without a network round trip per statement.

use crate::config::Config;
use crate::error::{describe_pg, Context, Error, Result};
use crate::handlers::{param_types, Section, TableRef};
use crate::ident::TableName;
use crate::source::Event;
use crate::validate::Resolved;
use futures_util::future::maybe_done;
use std::collections::{BTreeSet, HashMap};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// How many statements are in flight at once; bounds memory for large batches.
const PIPELINE_DEPTH: usize = 1024;

/// Which physical table each `{{table}}` reference means for this generation.
pub struct Target<'a> {
    pub config: &'a Config,
    pub resolved: &'a Resolved,
    /// Projections being rebuilt: their tables resolve to the rebuild clones.
    pub rebuilding: &'a BTreeSet<usize>,
}

impl Target<'_> {
    /// The table a `{{written}}` reference resolves to.
    pub fn physical(&self, written: &str) -> TableName {
        let owner = self
            .config
            .owner_of(written)
            .expect("references are checked at load");
        let live = self.resolved.live(owner);
        if self.rebuilding.contains(&owner.projection) {
            crate::ident::rebuild_table(live)
        } else {
            live.clone()
        }
    }
}

struct PreparedStatement {
    statement: Statement,
    line: usize,
}

struct PreparedProjection {
    name: String,
    file: String,
    by_type: HashMap<String, Vec<PreparedStatement>>,
}

/// The handlers of a set of projections, prepared on one connection.
pub struct Projector {
    projections: Vec<PreparedProjection>,
}

impl Projector {
    /// Prepares the handlers of `order` (projection indexes, topological order) against the
    /// tables of `target`, on `client`. The statements are only valid on that connection.
    pub async fn prepare(
        client: &Client,
        target: &Target<'_>,
        order: &[usize],
    ) -> Result<Projector> {
        let handlers: Vec<(String, String, &[Section])> = order
            .iter()
            .map(|&i| {
                let p = &target.config.projections[i];
                (
                    p.name.clone(),
                    p.handlers.path.display().to_string(),
                    p.handlers.sections.as_slice(),
                )
            })
            .collect();
        Projector::prepare_sections(client, &handlers, |r| {
            Ok(target.physical(&r.written).quoted())
        })
        .await
    }

    /// Prepares handler sections that need not be the config's (e.g. the recorded handlers of
    /// an older generation): (projection, file label, sections), in application order, with
    /// `resolve` naming the physical table of each `{{table}}` reference.
    pub async fn prepare_sections(
        client: &Client,
        handlers: &[(String, String, &[Section])],
        resolve: impl Fn(&TableRef) -> Result<String>,
    ) -> Result<Projector> {
        let mut projections = Vec::new();
        for (name, file, sections) in handlers {
            let mut by_type: HashMap<String, Vec<PreparedStatement>> = HashMap::new();
            for section in sections.iter() {
                let mut prepared = Vec::new();
                for st in &section.statements {
                    let mut failed = None;
                    let sql = st.render(|r| {
                        resolve(r).unwrap_or_else(|e| {
                            failed.get_or_insert(e);
                            String::new()
                        })
                    });
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    let statement = client
                        .prepare_typed(&sql, &param_types())
                        .await
                        .with_context(|| {
                            format!(
                                "{file}:{}: projection `{name}`: cannot prepare the handler",
                                st.line
                            )
                        })?;
                    prepared.push(PreparedStatement {
                        statement,
                        line: st.line,
                    });
                }
                for t in &section.event_types {
                    let copies = prepared
                        .iter()
                        .map(|ps| PreparedStatement {
                            statement: ps.statement.clone(),
                            line: ps.line,
                        })
                        .collect();
                    by_type.insert(t.clone(), copies);
                }
            }
            projections.push(PreparedProjection {
                name: name.clone(),
                file: file.clone(),
                by_type,
            });
        }
        Ok(Projector { projections })
    }

    /// Applies `events` in order, inside the caller's transaction on the preparing connection.
    /// On failure, names the projection, the event and the statement; the caller rolls back.
    pub async fn apply(&self, tx: &Client, events: &[Event]) -> Result<()> {
        // What runs, in order: (event, projection, statement).
        let mut work: Vec<(usize, usize, usize)> = Vec::new();
        let mut params: Vec<[&(dyn ToSql + Sync); 6]> = Vec::with_capacity(events.len());
        for (e, ev) in events.iter().enumerate() {
            params.push([
                &ev.position,
                &ev.stream,
                &ev.event_type,
                &ev.data,
                &ev.metadata,
                &ev.timestamp,
            ]);
            let Some(ty) = ev.event_type.as_deref() else {
                continue;
            };
            for (p, proj) in self.projections.iter().enumerate() {
                if let Some(sts) = proj.by_type.get(ty) {
                    for s in 0..sts.len() {
                        work.push((e, p, s));
                    }
                }
            }
        }
        for chunk in work.chunks(PIPELINE_DEPTH) {
            let mut futures: Vec<_> = chunk
                .iter()
                .map(|&(e, p, s)| {
                    let st =
                        &self.projections[p].by_type[events[e].event_type.as_deref().unwrap()][s];
                    Box::pin(maybe_done(tx.execute(&st.statement, &params[e][..])))
                })
                .collect();
            // Send every request before awaiting any answer, in order: the first poll of a
            // tokio-postgres future queues its request on the connection.
            for f in futures.iter_mut() {
                let _ = futures_util::poll!(f.as_mut());
            }
            for (k, f) in futures.iter_mut().enumerate() {
                f.as_mut().await;
                let result = match f.as_mut().take_output() {
                    Some(r) => r,
                    None => continue,
                };
                if let Err(err) = result {
                    let (e, p, s) = chunk[k];
                    return Err(self.handler_error(&events[e], p, s, &err));
                }
            }
        }
        Ok(())
    }

    fn handler_error(&self, ev: &Event, p: usize, s: usize, err: &tokio_postgres::Error) -> Error {
        let proj = &self.projections[p];
        let ty = ev.event_type.as_deref().unwrap_or("");
        let line = proj.by_type[ty][s].line;
        let kind_err = Error::from(clone_pg(err));
        let mut out = Error::new(
            kind_err.kind,
            format!(
                "projection `{}` failed on event at position {} (type `{ty}`, stream `{}`)",
                proj.name,
                ev.position,
                ev.stream.as_deref().unwrap_or("")
            ),
        )
        .caused_by(format!("{}:{line}: {}", proj.file, describe_pg(err)));
        if let Some(data) = &ev.data {
            let text = data.text();
            let preview: String = text.chars().take(300).collect();
            out = out.caused_by(format!(
                "event data: {preview}{}",
                if text.chars().count() > 300 {
                    "…"
                } else {
                    ""
                }
            ));
        }
        out.with_hint("fix the handler (or the event), then run the rebuild again; nothing of the failed batch was kept")
    }

    /// Projection names in application order.
    pub fn names(&self) -> Vec<&str> {
        self.projections.iter().map(|p| p.name.as_str()).collect()
    }
}

/// tokio-postgres errors are not Clone; keep only what decides the error kind.
fn clone_pg(err: &tokio_postgres::Error) -> PgKind {
    PgKind {
        closed: err.is_closed(),
        code: err.as_db_error().map(|d| d.code().code().to_string()),
    }
}

struct PgKind {
    closed: bool,
    code: Option<String>,
}

impl From<PgKind> for Error {
    fn from(k: PgKind) -> Error {
        if !k.closed && k.code.as_deref() == Some("57014") {
            Error::interrupted("interrupted")
        } else {
            Error::runtime("handler failed")
        }
    }
}

/// Makes sure statements exist on the connection before a long replay: a quick sanity check
/// that `SET` commands in the session did not break them.
pub async fn session_setup(client: &Client) -> Result<()> {
    // The rebuild is restartable from its last checkpoint, so losing the last few commits in
    // a server crash costs a re-run of those batches, never correctness: skip the WAL flush
    // wait on every batch commit.
    // Reading is gap-safe only if every read takes a snapshot after the bound it reads up to
    // was computed (see ordering.rs): never let a server default of REPEATABLE READ or
    // SERIALIZABLE pin one snapshot for a whole batch or the swap transaction.
    client
        .batch_execute(
            "SET synchronous_commit = off; SET default_transaction_isolation = 'read committed'",
        )
        .await
        .context("cannot configure the replay session")
}
