//! End-to-end tests: the real binary against a real PostgreSQL (see harness.rs). One test
//! binary, as ripgrep does: faster to build, one place to look.

mod balances;
mod config;
mod harness;
mod pgserver;
mod tally;

mod config_errors;
mod connect_env;
mod conventions;
mod dependencies;
mod dependents;
mod deploy;
mod docs;
mod external;
mod failures;
mod fencing;
mod fidelity;
mod init;
mod inspect;
mod lanes;
mod lifecycle;
mod live;
mod live_restart;
mod lockhold;
mod ordering;
mod partial;
mod per_batch;
mod preflight;
mod presets;
mod reshape;
mod rollback;
mod rust_projection;
mod scope;
mod server_loop;
mod split;
mod standby;
mod tls;
mod unlogged;
mod workloads;
mod write_guard;
