//! Fencing: a process that lost its guard (the advisory lock and claim row of
//! [`crate::state::locks`]) must not write again. Its lock session can end (terminated by an
//! administrator, a network cut, a pooler) while its other connections carry on; a second
//! process then takes the guard and works on the same tables. So every transaction that writes
//! generation tables, checkpoints, lanes, a run's status, the swap or the rollback proves,
//! inside that transaction, that this process still holds the guard: [`prove`].
//!
//! The proof (`reproject.fence()`, sql/015_fence.sql) reads this process's claim rows
//! `FOR KEY SHARE` and requires that each claim's
//! server session still holds the advisory lock (`pg_locks`). A take-over changes the claim's
//! token, a key column (sql/015_fence.sql), so it waits for the proving transaction to end:
//! there is no window between proof and commit. The holder's heartbeat changes no key column
//! and is not held up, even by a long transaction (a set-based lane, a partial copy). It costs
//! one round trip (a simple query, no prepare) per transaction, and a row lock on the claim
//! row (one tuple header write; a multixact when several lanes prove at once).
//!
//! Which claims this process holds is kept here, process-wide: a claim belongs to the process
//! (its token, host and pid are in the row), and every write site names the projections it
//! writes for, so it needs nothing else passed down.

use crate::db::tx::Fence;
use crate::error::{Context, Error, Result};
use crate::model::ident::literal;
use crate::state::locks::LockClass;
use std::sync::Mutex;
use tokio_postgres::{Client, SimpleQueryMessage};

struct Held {
    class: LockClass,
    projection: String,
    token: String,
    /// Set by the heartbeat once the lock session is gone or the claim was taken over.
    lost: bool,
}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Records the claims taken with `token` (state/locks.rs).
pub(crate) fn register(class: LockClass, projections: &[String], token: &str) {
    let mut held = HELD.lock().unwrap();
    for p in projections {
        held.push(Held {
            class,
            projection: p.clone(),
            token: token.to_string(),
            lost: false,
        });
    }
}

/// Forgets the claims of `token` (its locks were released).
pub(crate) fn unregister(token: &str) {
    HELD.lock().unwrap().retain(|h| h.token != token);
}

/// Marks the claims of `token` lost: the heartbeat saw the lock session end or the claim go.
pub(crate) fn mark_lost(token: &str) {
    for h in HELD.lock().unwrap().iter_mut() {
        if h.token == token {
            h.lost = true;
        }
    }
}

/// The error of a process that no longer holds the guard of `projection`.
pub fn lost(class: LockClass, projection: &str) -> Error {
    let (what, hint) = match class {
        LockClass::Projection => (
            "its rebuild, swap or rollback",
            "run `reproject status` to see which process holds it now and where the run stands; once none does, `reproject rebuild --resume` continues a rebuild from its last committed batch (`reproject swap` or `reproject rollback` can simply be run again)",
        ),
        LockClass::Runner => (
            "its live runner",
            "run `reproject status` to see which process keeps it live now; once none does, start `reproject run` again: it continues from the live checkpoint",
        ),
    };
    Error::runtime(format!(
        "lost the guard of projection `{projection}` ({what}): its lock session ended or another process took the claim over; another process may be running it now; nothing was written after that, the transaction in progress was rolled back"
    ))
    .with_hint(hint)
}

/// Proves, inside the caller's open transaction, that this process still holds the guard of
/// `class` for every projection in `projections`; the claim rows stay share-locked until the
/// transaction ends. On failure the caller rolls back and stops (no retry: another process
/// may own the run now).
pub async fn prove(client: &Client, class: LockClass, projections: &[String]) -> Result<()> {
    // Every claim this process holds for each projection goes to the server, which keeps
    // the one of its database: a process (a test binary, an application using the library)
    // can hold the same projection name in several databases, and a runner that took its
    // locks again holds the old claim until it drops it (a claim marked lost is left out).
    let mut names = Vec::with_capacity(projections.len());
    let mut tokens = Vec::with_capacity(projections.len());
    {
        let held = HELD.lock().unwrap();
        for p in projections {
            let mut any = false;
            for h in held
                .iter()
                .filter(|h| h.class == class && &h.projection == p && !h.lost)
            {
                names.push(literal(p));
                tokens.push(literal(&h.token));
                any = true;
            }
            if !any {
                return Err(lost(class, p));
            }
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    // A simple query (one round trip, no prepare) of the function of sql/015_fence.sql.
    let sql = format!(
        "SELECT reproject.fence({}, ARRAY[{}]::text[], ARRAY[{}]::text[])",
        class.key(),
        names.join(", "),
        tokens.join(", ")
    );
    let rows = client
        .simple_query(&sql)
        .await
        .context("cannot prove that this process still holds its guard (reproject.claims)")?;
    let proven: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    if let Some(missing) = projections.iter().find(|p| !proven.contains(&p.as_str())) {
        return Err(lost(class, missing));
    }
    Ok(())
}

impl<'a> Fence<'a> {
    /// The guard of a rebuild, swap or rollback of `projections`, for [`crate::db::tx::run`].
    pub(crate) fn projections(projections: &'a [String]) -> Self {
        Fence {
            prove: |client, projections| {
                Box::pin(prove(client, LockClass::Projection, projections))
            },
            projections,
        }
    }
}
