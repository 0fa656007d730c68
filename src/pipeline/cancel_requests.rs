//! `reproject cancel` from another terminal or machine: while a rebuild runs, one poller reads
//! the run's cancel request and sets the engine's token, the same one Ctrl-C sets. Every loop
//! of the run watches that token (between batches, and in every wait), so none polls the
//! database itself.

use crate::pipeline::Engine;
use crate::progress::Warning;
use std::future::Future;
use std::time::Duration;

/// How often the poller looks for a request.
const POLL: Duration = Duration::from_secs(1);

/// Runs `work` while polling run `run_id`'s cancel requests on a pooled connection of its
/// own; a request sets `engine.cancel`. The poll never fails the work: an error (the server
/// gone, which the work notices too) is logged and the next poll tries again.
pub(crate) async fn watching<T>(
    engine: &Engine<'_>,
    run_id: i64,
    work: impl Future<Output = T>,
) -> T {
    let poll = async {
        loop {
            tokio::select! {
                _ = engine.cancel.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
            // SKIP LOCKED (runs::take_cancel_request): a batch of this run may hold the run's
            // row in a transaction that commits only after this poll returns.
            let taken = match engine.db.get().await {
                Ok(client) => crate::state::runs::take_cancel_request(&**client, run_id).await,
                Err(e) => Err(e),
            };
            match taken {
                Ok(Some(by)) => {
                    engine.reporter.warn(&Warning::CancelRequested { by });
                    engine.cancel.cancel();
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(
                    "could not read the cancel requests of run {run_id}: {}",
                    e.plain()
                ),
            }
        }
        // Cancelled: nothing left to watch; the work ends by itself.
        std::future::pending::<()>().await
    };
    tokio::select! {
        biased;
        out = work => out,
        () = poll => unreachable!("the poll never ends"),
    }
}
