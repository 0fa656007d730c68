//! End-to-end tests: the real binary against a real PostgreSQL (see harness.rs). One test
//! binary, as ripgrep does: faster to build, one place to look.

mod harness;
mod tally;

mod config_errors;
mod dependencies;
mod failures;
mod inspect;
mod lifecycle;
mod server_loop;
mod workloads;
