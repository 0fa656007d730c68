#!/usr/bin/env bash
#
# scripts/test.sh [cargo test args...]
#
# Runs `cargo test --all-targets` against a PostgreSQL server: the one in DATABASE_URL if set,
# else a throwaway server started here and removed afterwards (see scripts/lib/pg.sh). The
# tests create their own databases on that server, so it must allow CREATE DATABASE.
#
#   scripts/test.sh                      # everything
#   scripts/test.sh rebuild -- --nocapture
#   PG_FAST=0 scripts/test.sh            # keep fsync on (it is off by default here)
#
# Exits with cargo's status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The throwaway server's data is deleted at exit, so durability only costs time here.
export PG_FAST=${PG_FAST:-1}

# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh
pg_start

printf '==> cargo test --all-targets%s against %s\n' "${*:+ $*}" "$(pg_redact_url "$DATABASE_URL")"
rc=0
# The examples (library, rust_projector) are run by tests as ordinary binaries; `cargo test`
# builds examples only as test harnesses.
cargo build --quiet --examples
cargo test --all-targets "$@" || rc=$?
# The doc tests (the library example in src/lib.rs) and the docs themselves, once, when the
# whole suite runs: `--all-targets` leaves doc tests out.
if ((rc == 0 && $# == 0)); then
    cargo test --doc --quiet || rc=$?
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet || rc=$?
fi
if ((rc != 0)); then
    printf 'test.sh: cargo test failed (exit %s)\n' "$rc" >&2
fi
exit "$rc"
