//! Transactions: begin, prove the guard, do the work, commit or roll back, and try the whole
//! transaction again after a transient error. Every batch, lane, checkpoint move and status
//! change runs through here, so the exactly-once rule (a batch commits with its checkpoint or
//! not at all) and the retry policy live in one place.
//!
//! The guard's proof (state/fence.rs) is taken right after BEGIN when the work names a
//! [`Fence`]; work that proves later in its transaction (a batch proves after applying, so a
//! take-over waits for the proof only briefly) calls `fence::prove` itself.
//!
//! This module knows neither the guard nor the run's record: the state schema, which uses
//! these transactions, gives the proof ([`Fence`], made by `Fence::projections` in
//! state/fence.rs) and the fault record ([`Faults`], `runs::RunFaults`), so imports point
//! from `state` to `db` only.

use crate::error::{Context, Result};
use crate::model::BoxFuture;
use crate::progress::{Reporter, Warning};
use std::future::Future;
use std::time::Duration;
use tokio_postgres::Client;

/// The guard a transaction proves right after BEGIN: `prove` over the claims of
/// `projections` (state/fence.rs makes these).
#[derive(Clone, Copy)]
pub(crate) struct Fence<'a> {
    /// Fails unless this process still holds the guard of every projection.
    pub prove: for<'c> fn(&'c Client, &'c [String]) -> BoxFuture<'c, Result<()>>,
    pub projections: &'a [String],
}

/// Where a retry is recorded, as a fault the run survived (state/runs.rs: `RunFaults`).
pub(crate) trait Faults: Sync {
    /// Records the fault `detail` of `kind`; best effort (a failure is only logged).
    fn record<'a>(&'a self, kind: &'a str, detail: &'a str) -> BoxFuture<'a, ()>;
}

/// Starts a transaction; `context` says which one when BEGIN fails.
pub(crate) async fn begin(client: &Client, context: &str) -> Result<()> {
    client
        .batch_execute("BEGIN")
        .await
        .with_context(|| context.to_string())
}

/// How a transaction that did its work ends: the work decides whether what it wrote stays
/// (a live batch that found its checkpoint moved writes nothing).
pub(crate) enum End<T> {
    Commit(T),
    RollBack(T),
}

impl<T> End<T> {
    /// What the work returned, however its transaction ends.
    pub(crate) fn into_inner(self) -> T {
        match self {
            End::Commit(v) | End::RollBack(v) => v,
        }
    }
}

/// Ends the transaction the result came from: commits on success, rolls back on failure
/// (keeping the first error).
pub(crate) async fn finish<T>(client: &Client, result: Result<T>) -> Result<T> {
    end(client, result.map(End::Commit)).await
}

/// Ends the transaction the result came from as the work decided; rolls back on failure
/// (keeping the first error).
pub(crate) async fn end<T>(client: &Client, result: Result<End<T>>) -> Result<T> {
    match result {
        Ok(end) => {
            let (statement, failed, v) = match end {
                End::Commit(v) => ("COMMIT", "cannot commit", v),
                End::RollBack(v) => ("ROLLBACK", "cannot roll back", v),
            };
            let started = std::time::Instant::now();
            client.batch_execute(statement).await.context(failed)?;
            tracing::debug!("{statement} in {} ms", started.elapsed().as_millis());
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Runs `work` in one transaction: BEGIN (`context` names it if that fails), the proof of
/// `fence` if any, the work, then COMMIT, or ROLLBACK when the proof or the work failed.
pub(crate) async fn run<T, Fut>(
    client: &Client,
    context: &str,
    fence: Option<Fence<'_>>,
    work: impl FnOnce() -> Fut,
) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let started = std::time::Instant::now();
    begin(client, context).await?;
    let result = match fence {
        Some(f) => match (f.prove)(client, f.projections).await {
            Ok(()) => work().await,
            Err(e) => Err(e),
        },
        None => work().await,
    };
    let ok = result.is_ok();
    let ended = finish(client, result).await;
    // `-vv`: each transaction's whole duration (BEGIN to COMMIT), named by its context.
    tracing::debug!(
        "transaction ({}) {} in {} ms",
        context.strip_prefix("cannot ").unwrap_or(context),
        if ok && ended.is_ok() {
            "committed"
        } else {
            "rolled back"
        },
        started.elapsed().as_millis()
    );
    ended
}

/// One batch of a replay: `work` in its own transaction, which ends as the work decides
/// ([`End`]; tried again after a transient error when `retry` is given; `what` names the batch
/// in the warning) when `own_transaction`, else in the caller's transaction, which commits or
/// rolls back everything at once (the work's decision is then the caller's to act on).
pub(crate) async fn batch<T, Fut>(
    client: &Client,
    own_transaction: bool,
    retry: Option<&Retry<'_>>,
    what: impl Fn() -> String,
    work: impl Fn() -> Fut,
) -> Result<T>
where
    Fut: Future<Output = Result<End<T>>>,
{
    let once = || async {
        let started = std::time::Instant::now();
        begin(client, "cannot begin a batch").await?;
        let ended = end(client, work().await).await;
        tracing::debug!("batch transaction: {} ms", started.elapsed().as_millis());
        ended
    };
    match retry {
        _ if !own_transaction => work().await.map(End::into_inner),
        Some(retry) => retry.transient(what, once).await,
        None => once().await,
    }
}

/// How many times a transaction is tried again after a transient error before the run fails.
pub(crate) const TRANSIENT_RETRIES: u32 = 5;

/// The pause before retry `attempt` (1-based) after a transient error: growing, with a
/// per-process offset so two processes do not retry in lockstep.
fn transient_pause(attempt: u32) -> Duration {
    Duration::from_millis(50 * (1 << attempt) + u64::from(std::process::id() % 50))
}

/// Who hears of a retry: the user (a warning) and the run's history (a fault it survived).
pub(crate) struct Retry<'a> {
    pub faults: &'a dyn Faults,
    pub reporter: &'a dyn Reporter,
}

impl Retry<'_> {
    /// Runs `attempt` (one whole transaction, e.g. [`run`]) and runs it again after a transient
    /// error (serialization failure, deadlock, lock timeout: `Error::is_transient`, by
    /// SQLSTATE), up to [`TRANSIENT_RETRIES`] times, with a growing pause. A rolled-back
    /// transaction wrote nothing, its checkpoint included, so the retry is still exactly once.
    /// `what` names the work in the warning ("batch after position 12").
    pub(crate) async fn transient<T, Fut>(
        &self,
        what: impl Fn() -> String,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = 0u32;
        loop {
            match attempt().await {
                Err(e) if e.is_transient() && tries < TRANSIENT_RETRIES => {
                    tries += 1;
                    let pause = transient_pause(tries);
                    let warning = Warning::TransientRetry {
                        what: what(),
                        attempt: tries,
                        attempts: TRANSIENT_RETRIES,
                        retry_in: pause,
                        error: e.causes.first().unwrap_or(&e.message).clone(),
                    };
                    self.reporter.warn(&warning);
                    let detail = warning.to_string();
                    self.faults.record("transient_retry", &detail).await;
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }
}
