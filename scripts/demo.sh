#!/usr/bin/env bash
#
# scripts/demo.sh: a real blue/green rebuild of the example projections, end to end.
#
#   1. start a throwaway PostgreSQL (or use DATABASE_URL) and build reproject
#   2. create a fresh demo database
#   3. postings: generate events and a live projection with some rows corrupted on purpose,
#      plan, rebuild (which swaps the repaired tables in), verify against the reference,
#      status, history, rollback, cleanup
#   4. shop: generate, plan (shows the waves), rebuild, status
#   5. drop the demo database
#
# Environment:
#   DEMO_POSTINGS=2000   number of postings to generate (:n of examples/postings/generate.sql)
#   DEMO_SHOP_CUSTOMERS=1000  number of shop customers (:n of examples/shop/generate.sql)
#   DEMO_DB=reproject_demo
#   KEEP_DEMO_DB=1       keep the demo database at the end (only useful with DATABASE_URL, as a
#                        throwaway server is deleted anyway)
#   DATABASE_URL         use this server (needs CREATE DATABASE) instead of a throwaway one
#
# Any failing step fails the demo, with reproject's own exit code where it was reproject
# (1 runtime, 2 usage/config, 3 health check refused the swap, 75 busy, 130 interrupted).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh

DEMO_POSTINGS=${DEMO_POSTINGS:-2000}
DEMO_SHOP_CUSTOMERS=${DEMO_SHOP_CUSTOMERS:-1000}
DEMO_DB=${DEMO_DB:-reproject_demo}
KEEP_DEMO_DB=${KEEP_DEMO_DB:-0}

# psql (libpq) reads these from the environment, reproject (tokio-postgres) does not: with them
# set, the two would see different sessions (compare.sql renders timestamps in the session's
# TimeZone, so a PGTZ would show every row as different).
unset PGTZ PGOPTIONS PGDATESTYLE PGCLIENTENCODING

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    local rc=$1
    shift
    printf '\ndemo.sh: FAILED: %s\n' "$*" >&2
    exit "$rc"
}

# The database names go into SQL unquoted and the count into psql variables: validate them.
[[ $DEMO_POSTINGS =~ ^[1-9][0-9]*$ ]] || die 2 "DEMO_POSTINGS must be a positive integer, got '$DEMO_POSTINGS'"
[[ $DEMO_SHOP_CUSTOMERS =~ ^[1-9][0-9]*$ ]] ||
    die 2 "DEMO_SHOP_CUSTOMERS must be a positive integer, got '$DEMO_SHOP_CUSTOMERS'"
[[ $DEMO_DB =~ ^[a-z_][a-z0-9_]*$ ]] || die 2 "DEMO_DB must be a plain lower-case identifier, got '$DEMO_DB'"

# DATABASE_URL with its database replaced by NAME. Handles URLs
# (postgres://user:pw@host:port/db?sslmode=...) and key=value conninfo strings (where a later
# dbname= overrides an earlier one).
db_url_for() {
    local name=$1 url=$DATABASE_URL
    if [[ $url != *://* ]]; then
        printf '%s dbname=%s\n' "$url" "$name"
        return 0
    fi
    local query="" base scheme rest authority
    base=${url%%\?*}
    if [[ $base != "$url" ]]; then
        query="?${url#*\?}"
    fi
    scheme=${base%%://*}
    rest=${base#*://}
    authority=${rest%%/*}
    printf '%s://%s/%s%s\n' "$scheme" "$authority" "$name" "$query"
}

# A shell-ish rendering of a command line, to show what is run.
show_cmd() {
    local out="\$" arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then
            out="$out $arg"
        else
            out="$out '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s\n' "$out"
}

exit_meaning() {
    case $1 in
        1) echo "runtime failure" ;;
        2) echo "usage or config error" ;;
        3) echo "a health check refused the swap" ;;
        75) echo "busy" ;;
        130) echo "interrupted" ;;
        *) echo "unexpected exit code" ;;
    esac
}

# reproject against the demo database with the current example's config. stdin is closed so
# a command that unexpectedly wants confirmation fails instead of hanging CI.
CONFIG=""
reproject() {
    show_cmd reproject --config "$CONFIG" "$@"
    local rc=0
    DATABASE_URL=$DEMO_URL "$BIN" --config "$CONFIG" "$@" </dev/null || rc=$?
    if ((rc != 0)); then
        die "$rc" "'reproject $*' exited with $rc ($(exit_meaning "$rc"))"
    fi
}

# psql on the demo database: no ~/.psqlrc, stop at the first error.
demo_psql() {
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DEMO_URL" "$@" </dev/null
}

load_sql() {
    local file=$1
    shift
    [[ -f $file ]] || die 1 "$file is missing"
    show_cmd psql -v ON_ERROR_STOP=1 "$@" -f "$file"
    demo_psql "$@" -f "$file" || die 1 "psql -f $file failed"
}

# Run a compare.sql (its last output row is the number of rows of the live projection that
# differ from the reference) and set MISMATCHES.
MISMATCHES=""
count_mismatches() {
    local file=$1 out
    [[ -f $file ]] || die 1 "$file is missing"
    show_cmd psql -tA -f "$file"
    out=$(demo_psql -tA -f "$file") || die 1 "psql -f $file failed"
    MISMATCHES=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]')
    [[ $MISMATCHES =~ ^[0-9]+$ ]] ||
        die 1 "$file should end with a row holding the mismatch count; its output was: $out"
}

# --- 1 -----------------------------------------------------------------------------------
step "Starting PostgreSQL and building reproject"
pg_start
PSQL=$(pg_find_tool psql) || die 2 "psql not found (Debian/Ubuntu: apt-get install postgresql-client)"
show_cmd cargo build --quiet
cargo build --quiet
BIN=${CARGO_TARGET_DIR:-target}/debug/reproject
[[ -x $BIN ]] || die 1 "cargo build did not produce $BIN"
note "binary: $BIN"

# --- 2 -----------------------------------------------------------------------------------
step "Creating a fresh database $DEMO_DB"
DEMO_URL=$(db_url_for "$DEMO_DB")
note "server: $(pg_redact_url "$DATABASE_URL")"
note "demo database: $(pg_redact_url "$DEMO_URL")"
# Separate -c's run as separate statements: DROP/CREATE DATABASE refuse a transaction block.
# (client_min_messages: no NOTICE when the database does not exist yet.)
"$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $DEMO_DB WITH (FORCE)" \
    -c "CREATE DATABASE $DEMO_DB" </dev/null ||
    die 1 "could not create database $DEMO_DB (the user needs CREATE DATABASE)"

# --- 3 -----------------------------------------------------------------------------------
CONFIG=examples/postings/reproject.toml
step "Postings: loading the schema and generating $DEMO_POSTINGS postings"
load_sql examples/postings/schema.sql -v n="$DEMO_POSTINGS"
load_sql examples/postings/generate.sql -v n="$DEMO_POSTINGS"

step "Postings: the live projection before the rebuild (a simulated bug corrupted some rows)"
count_mismatches examples/postings/compare.sql
note "$MISMATCHES rows differ from the reference"
if ((MISMATCHES == 0)); then
    note "(note: expected some corrupted rows here; the rebuild below still runs)"
fi

step "Postings: plan"
reproject plan

step "Postings: rebuild into shadow tables and swap them in"
reproject rebuild --yes --reason "demo: repair corrupted rows"

step "Postings: verifying the rebuilt projection against the reference"
count_mismatches examples/postings/compare.sql
if ((MISMATCHES != 0)); then
    die 1 "$MISMATCHES rows still differ from the reference after the rebuild"
fi
note "0 rows differ: the projection is repaired"

step "Postings: status and history"
reproject status
reproject history

step "Postings: rollback (the previous tables become live again)"
reproject rollback --yes
reproject status
count_mismatches examples/postings/compare.sql
if ((MISMATCHES > 0)); then
    note "$MISMATCHES rows differ again: the old, corrupted tables are live, as expected after a rollback"
else
    note "0 rows differ (expected the corrupted rows to be back after the rollback)"
fi

step "Postings: cleanup of the tables left behind"
reproject cleanup
reproject cleanup --yes

# --- 4 -----------------------------------------------------------------------------------
CONFIG=examples/shop/reproject.toml
step "Shop: loading the schema and generating the events of $DEMO_SHOP_CUSTOMERS customers"
load_sql examples/shop/schema.sql -v n="$DEMO_SHOP_CUSTOMERS"
load_sql examples/shop/generate.sql -v n="$DEMO_SHOP_CUSTOMERS"

step "Shop: plan (dependent projections are rebuilt in waves)"
reproject plan

step "Shop: rebuild"
reproject rebuild --yes --reason "demo: shop"

if [[ -f examples/shop/compare.sql ]]; then
    step "Shop: verifying the rebuilt projections against the reference"
    count_mismatches examples/shop/compare.sql
    if ((MISMATCHES != 0)); then
        die 1 "$MISMATCHES rows differ from the reference after the shop rebuild"
    fi
    note "0 rows differ"
fi

step "Shop: status"
reproject status

# --- 5 -----------------------------------------------------------------------------------
if [[ $KEEP_DEMO_DB == 1 ]]; then
    step "Keeping database $DEMO_DB (KEEP_DEMO_DB=1): $(pg_redact_url "$DEMO_URL")"
else
    step "Dropping database $DEMO_DB"
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" \
        -c "DROP DATABASE IF EXISTS $DEMO_DB WITH (FORCE)" </dev/null ||
        die 1 "could not drop database $DEMO_DB"
fi

step "Demo finished: all steps succeeded"
