//! The commands, step by step. Each command is a function over an [`Engine`]: it validates,
//! takes its locks, records what it does in the state schema, and reports progress through
//! the [`Reporter`](crate::Reporter). Nothing here prints or exits.

pub(crate) mod cleanup;
pub(crate) mod gaps;
pub(crate) mod init;
pub(crate) mod inspect;
pub(crate) mod live_handlers;
pub(crate) mod parked;
pub(crate) mod rebuild;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod scope;

pub use crate::apply::sql::DEFAULT_SET_BATCH_SIZE;
pub use crate::pipeline::partial::{Partial, PartialRequest};
pub use crate::pipeline::preview::{
    mode_error as preview_mode_error, PlannedPreview, PlannedView, Preview,
};
pub use crate::pipeline::swap::window::SwapWindow;
pub use crate::pipeline::swap::LockPolicy;
pub use crate::pipeline::{run_tables, Engine};
/// A late event as `gaps` reports it.
pub use crate::state::late_events::LateEvent;
/// A parked event of the live runner, and an operator's decision on it.
pub use crate::state::parked_events::{Decision, ParkedEvent};
/// Where a run stands and the phase it is in, as the outcomes and reports carry them.
pub use crate::state::runs::{Phase, RunStatus};
pub use cleanup::{cleanup, CleanupEntry, CleanupOptions, CleanupReport, KeptEntry};
pub use gaps::{gaps, unrepaired_error, GapsOptions, GapsReport, Repair};
pub use init::{init, Starter};
pub use inspect::{
    history, plan, plan_with_preview, status, HistoryOptions, HistoryReport, LaneStatus,
    PlanReport, ProjectionStatus, RunnerStatus, StatusReport,
};
pub use parked::{decide, parked, ParkedReport};
pub use rebuild::{rebuild, swap, OutcomeStatus, RebuildOptions, RebuildOutcome, SwapOptions};
pub use rollback::{cancel, rollback, RollbackOptions, RollbackReport};
pub use run::{
    notify_sql, print_notify_sql, run, GroupOutcome, RunOptions, RunOutcome, StartAt, StopOnError,
    NOTIFY_CHANNEL,
};

use crate::model::config::Config;
use sha2::{Digest, Sha256};

/// `run 3 (a, b); run 4 (c)`: runs named in a message that asks to pick one.
fn run_list(runs: &[crate::state::runs::Run]) -> String {
    runs.iter()
        .map(|r| format!("run {} ({})", r.id, r.projections.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// sha256 of a projection's handler file (of a Rust projection's version), so a later `swap`
/// can tell whether the handlers that would catch up are the ones that built the tables.
pub fn handler_digest(config: &Config, projection: usize) -> String {
    let p = &config.projections[projection];
    let digest = match p.recorded_source() {
        Some(source) => Sha256::digest(source.as_bytes()),
        None => {
            Sha256::digest(crate::model::projection::version_tag(config, projection).as_bytes())
        }
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a run records as the handlers that built a projection's tables: the SQL handler file,
/// or null for a Rust projection, so that a rollback never takes "no handlers" for handlers
/// that apply nothing (pipeline/old_generation.rs).
pub fn handler_source(config: &Config, projection: usize) -> serde_json::Value {
    let p = &config.projections[projection];
    match p.recorded_source() {
        Some(source) => serde_json::Value::String(source.to_string()),
        None => serde_json::Value::Null,
    }
}

/// Who started a command (when `--initiated-by` is not given): `$USER` / `$LOGNAME`, else the
/// operating-system account of the process. Containers, systemd units and tmux often set
/// neither variable, so the account comes from the password database (the numeric uid when
/// the uid has no entry, as in many containers): never "unknown".
pub fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(os_account)
}

/// The name of the process's effective uid in the password database, else `uid N`.
pub fn os_account() -> String {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `pwd` and `result` are out-parameters; `buf` outlives the call and its
        // length is passed, so getpwuid_r writes only inside it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
            let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
            let name = name.to_string_lossy().trim().to_string();
            if !name.is_empty() {
                return name;
            }
        }
        return format!("uid {uid}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_os_account_is_never_unknown() {
        let account = super::os_account();
        assert!(!account.is_empty() && account != "unknown", "{account}");
    }
}
