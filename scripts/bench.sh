#!/usr/bin/env bash
#
# scripts/bench.sh: how fast `reproject rebuild` is, against the hand-written alternatives, in
# one run on one server.
#
#   scripts/bench.sh                      # W1 with 100,000 postings (1.5 M events) + shop
#   scripts/bench.sh --postings 20000
#   scripts/bench.sh --postings 200 --output /tmp/bench.md     # smoke test (CI)
#
# On a throwaway PostgreSQL with DEFAULT durability settings (fsync and synchronous_commit on;
# PG_FAST is ignored), or on DATABASE_URL if set (the user must be allowed to CREATE DATABASE):
#
#  W1 "postings" (examples/postings): N postings x 15 events. Methods, each timed on its own,
#  after a CHECKPOINT, on the same data, each checked to produce the same rows (without
#  last_updated) as the seed's function:
#    (a) the seed's rebuild_posting_state, one call per posting from a client (psql running a
#        script of `select rebuild_posting_state_reference(i);` lines in autocommit: one
#        transaction per posting, one round trip each)
#    (b) the same function for all postings in one statement (examples/postings/reference.sql);
#        its rows are the reference for every other method
#    (c) hand-written set-based INSERT ... SELECT ... GROUP BY (scripts/bench/w1-set-based.sql)
#    (d) a per-event PL/pgSQL loop in the server, one UPSERT per event into an UNLOGGED table
#        (scripts/bench/w1-event-loop.sql)
#    reproject rebuild --yes, end to end (clone, replay, catch-up, checks, swap), release build,
#        with examples/postings/reproject.toml (plain per-event handlers)
#    the same with `build_unlogged = true` (UNLOGGED rebuild table, SET LOGGED before the swap)
#    reproject rebuild --yes with the SET-BASED handlers (examples/postings/
#        reproject-per-batch.toml: one `-- per batch` statement, each row written once per
#        batch; the way the docs recommend for speed), the same with all events in one
#        batch (each row written once), and the same with build_unlogged
#  W1 swaps under readers: on W1 with min(N, 2000) postings, 16 pgbench clients read the live
#    table in a loop while reproject rebuilds and swaps it K times: reader errors, reader
#    latency percentiles, and the swaps' lock wait and hold (p50, p99, max) from reproject.runs
#  shop (examples/shop, 4 dependent projections), at about the same number of events:
#    set-based SQL (scripts/bench/shop-set-based.sql; also the expected rows) and
#    reproject rebuild --yes with examples/shop/reproject.toml
#
# Prints a table (wall time, events/s, time ratio to each baseline, WAL written, server and
# client CPU, peak RSS of reproject, the swap's lock wait and hold) and writes it, with the
# machine description, into the section of docs/internals/benchmark-log.md marked for this N (the rest of
# that file, the analysis, is kept).
#
# Options:
#   --postings N          W1 size (default 100000)
#   --shop-customers M    shop size (default: N * 4 / 3, about as many events as W1)
#   --no-client-loop      skip baseline (a) (the slowest: ~2 min at N = 100000)
#   --no-shop             skip the shop workload
#   --no-unlogged         skip the second reproject run with build_unlogged = true
#   --swap-rounds K       rebuild + swap rounds under 16 readers (default 5; 0 skips)
#   --batch-size B        passed to `reproject rebuild --batch-size` (default: reproject's own)
#   --set-batch-size S    passed to the set-based runs' `--set-batch-size` (default: reproject's)
#   --jobs J              stream lanes at a time in the extra set-based run with `--jobs`
#                         (default 2, the machine's cores here; 1 skips that run)
#   --only-set-based      W1 only: (b) (the reference rows), (c) and reproject with the set-based
#                         handlers; for large N (e.g. --postings 1000000 = 15 M events), where
#                         the per-event methods would take hours
#   --output FILE         write the results section into FILE instead of docs/internals/benchmark-log.md
#   --no-write            print only
#   --debug               use the debug build (for a quick smoke test, e.g. in CI, where the
#                         release build would take minutes; its numbers mean nothing)
#
# Not a timed test: nothing here asserts a time. It fails (exit 1) only when a method produces
# different rows or a step fails. Needs psql, GNU time (/usr/bin/time; apt-get install time),
# cargo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Default durability settings: that is what the numbers are about.
export PG_FAST=0
# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh
# psql (libpq) reads these, reproject does not; with them set the two would see different
# sessions (timestamps in conversation_history are rendered in the session's TimeZone).
unset PGTZ PGOPTIONS PGDATESTYLE PGCLIENTENCODING

die() {
    printf '\nbench.sh: FAILED: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '3,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}
say() { printf '==> %s\n' "$*" >&2; }

POSTINGS=100000
SHOP=""
CLIENT_LOOP=1
RUN_SHOP=1
RUN_UNLOGGED=1
SWAP_ROUNDS=5
BATCH_SIZE=""
SET_BATCH_SIZE=""
ONLY_SET_BASED=0
PROFILE=release
OUTPUT=docs/internals/benchmark-log.md
while (($#)); do
    case $1 in
        --postings) POSTINGS=${2:-}; shift 2 ;;
        --shop-customers) SHOP=${2:-}; shift 2 ;;
        --no-client-loop) CLIENT_LOOP=0; shift ;;
        --no-shop) RUN_SHOP=0; shift ;;
        --no-unlogged) RUN_UNLOGGED=0; shift ;;
        --swap-rounds) SWAP_ROUNDS=${2:-}; shift 2 ;;
        --batch-size) BATCH_SIZE=${2:-}; shift 2 ;;
        --set-batch-size) SET_BATCH_SIZE=${2:-}; shift 2 ;;
        --jobs) JOBS=${2:-}; shift 2 ;;
        --only-set-based) ONLY_SET_BASED=1; CLIENT_LOOP=0; RUN_SHOP=0; RUN_UNLOGGED=0; SWAP_ROUNDS=0; shift ;;
        --output) OUTPUT=${2:-}; shift 2 ;;
        --no-write) OUTPUT=""; shift ;;
        --debug) PROFILE=debug; shift ;;
        -h | --help) usage 0 ;;
        *) printf 'bench.sh: unknown argument %s\n\n' "$1" >&2; usage 2 ;;
    esac
done
[[ $POSTINGS =~ ^[1-9][0-9]*$ ]] || die "--postings must be a positive integer, got '$POSTINGS'"
SHOP=${SHOP:-$((POSTINGS * 4 / 3 > 0 ? POSTINGS * 4 / 3 : 1))}
[[ $SHOP =~ ^[1-9][0-9]*$ ]] || die "--shop-customers must be a positive integer, got '$SHOP'"
[[ $SWAP_ROUNDS =~ ^[0-9]+$ ]] || die "--swap-rounds must be a number, got '$SWAP_ROUNDS'"
[[ -z $BATCH_SIZE || $BATCH_SIZE =~ ^[1-9][0-9]*$ ]] || die "--batch-size must be a positive integer"
[[ -z $SET_BATCH_SIZE || $SET_BATCH_SIZE =~ ^[1-9][0-9]*$ ]] || die "--set-batch-size must be a positive integer"
JOBS=${JOBS:-2}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, got '$JOBS'"
# The command line as run, for the report.
ARGS_SHOWN="--postings $POSTINGS --shop-customers $SHOP${BATCH_SIZE:+ --batch-size $BATCH_SIZE}"
[[ -z $SET_BATCH_SIZE ]] || ARGS_SHOWN="$ARGS_SHOWN --set-batch-size $SET_BATCH_SIZE"
ARGS_SHOWN="$ARGS_SHOWN --jobs $JOBS"
((ONLY_SET_BASED)) && ARGS_SHOWN="$ARGS_SHOWN --only-set-based"
((CLIENT_LOOP)) || ARGS_SHOWN="$ARGS_SHOWN --no-client-loop"
((RUN_SHOP)) || ARGS_SHOWN="$ARGS_SHOWN --no-shop"
((RUN_UNLOGGED)) || ARGS_SHOWN="$ARGS_SHOWN --no-unlogged"
ARGS_SHOWN="$ARGS_SHOWN --swap-rounds $SWAP_ROUNDS"
[[ $PROFILE == release ]] || ARGS_SHOWN="$ARGS_SHOWN --debug"

PSQL=$(pg_find_tool psql) || die "psql not found (Debian/Ubuntu: apt-get install postgresql-client)"
TIME=/usr/bin/time
if ! "$TIME" -v true >/dev/null 2>&1; then
    die "GNU time is needed at $TIME for the peak RSS (Debian/Ubuntu: apt-get install time)"
fi

say "building reproject ($PROFILE)"
if [[ $PROFILE == release ]]; then
    cargo build --release --quiet --bin reproject
else
    cargo build --quiet --bin reproject
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/reproject
[[ -x $BIN ]] || die "cargo build did not produce $BIN"

pg_start
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/reproject-bench.XXXXXX")
trap 'pg_stop; rm -rf "$LOG_DIR"' EXIT

# DATABASE_URL with its database replaced (URL or key=value conninfo), as in demo.sh.
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

SERVER_URL=$DATABASE_URL
URL=""
q() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$URL" "$@" </dev/null; }
q1() { q -tA "$@" | sed '/^[[:space:]]*$/d' | tail -n 1; }

fresh_db() {
    URL=$(db_url_for "$1")
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$SERVER_URL" -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" </dev/null ||
        die "cannot create database $1 (the user needs CREATE DATABASE)"
}

# --- measuring -----------------------------------------------------------------------------
now() { printf '%s\n' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# CPU seconds the server used so far: the postmaster, its live children (checkpointer, WAL
# writer, ...) and the children it has reaped (every backend that disconnected), from /proc.
# Only for a server this script started; empty otherwise.
POSTMASTER=""
if [[ -n ${_PG_TMPDIR:-} && -r ${_PG_TMPDIR}/data/postmaster.pid ]]; then
    POSTMASTER=$(head -n 1 "${_PG_TMPDIR}/data/postmaster.pid")
fi
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
server_cpu() {
    [[ -n $POSTMASTER && -r /proc/$POSTMASTER/stat ]] || return 0
    sleep 0.3 # let the postmaster reap the backends that just ended
    local f total=0
    for f in /proc/[0-9]*/stat; do
        # Fields after the command name, which is in parentheses and may hold spaces:
        # $2 = ppid, $12/$13 = utime/stime, $14/$15 = cutime/cstime.
        total=$((total + $(sed 's/^.*) //' "$f" 2>/dev/null | awk -v pm="$POSTMASTER" -v pid="${f//[^0-9]/}" '
            pid == pm { print $12 + $13 + $14 + $15; next }
            $2 == pm  { print $12 + $13; next }
            { print 0 }' || echo 0)))
    done
    awk -v t="$total" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t / hz }'
}

wal_lsn() { q1 -c "select pg_current_wal_lsn()"; }
wal_mb() { q1 -c "select round(pg_wal_lsn_diff('$2', '$1') / 1048576.0)"; }
checkpoint() { q -c "CHECKPOINT" 2>/dev/null || true; }

# One row of results per method, tab-separated:
#   workload, method, wall s, events, rows-check, WAL MB, server CPU s, client CPU s,
#   peak RSS MB, lock wait ms, lock hold ms
RESULTS=()
FAILED=0
M_START="" M_LSN="" M_CPU=""
begin_method() {
    say "$1"
    checkpoint
    M_LSN=$(wal_lsn)
    M_CPU=$(server_cpu)
    M_START=$(now)
}
# end_method: stops the clock and takes the server's measurements (before any checking).
M_WALL="" M_WAL="" M_SCPU=""
end_method() {
    local end cpu lsn
    end=$(now)
    M_WALL=$(elapsed "$M_START" "$end")
    cpu=$(server_cpu)
    lsn=$(wal_lsn)
    M_WAL=$(wal_mb "$M_LSN" "$lsn")
    M_SCPU=""
    if [[ -n $cpu && -n $M_CPU ]]; then
        M_SCPU=$(awk -v a="$M_CPU" -v b="$cpu" 'BEGIN { printf "%.1f", b - a }')
    fi
}
# record WORKLOAD METHOD EVENTS CHECK [CLIENT_CPU RSS_MB LOCK_WAIT LOCK_HOLD]: the row of the
# method end_method measured last.
record() {
    RESULTS+=("$1	$2	$M_WALL	$3	$4	$M_WAL	$M_SCPU	${5:-}	${6:-}	${7:-}	${8:-}")
    say "    $M_WALL s, $4"
    if [[ $4 != "same rows" && $4 != "reference" ]]; then
        FAILED=1
    fi
}

# Client CPU (user + sys) and peak RSS from a GNU time -v report.
time_cpu() { awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.1f", s }' "$1"; }
time_rss_mb() { awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$1"; }

# reproject against $URL with the given config; stderr goes to LOG with the seconds since the
# start in front of every line (that is the phase profile).
run_reproject() {
    local config=$1 log=$2 start
    shift 2
    start=$EPOCHREALTIME
    touch "$log.waits.on"
    sample_waits "$log.waits" &
    local sampler=$!
    DATABASE_URL=$URL "$TIME" -v -o "$log.time" "$BIN" --config "$config" "$@" </dev/null \
        2> >(while IFS= read -r line; do
            printf '%7.2f %s\n' "$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$line"
        done >"$log") >"$log.out" || {
        sleep 0.2
        sed 's/^/    /' "$log" >&2
        die "reproject $* exited with an error (above)"
    }
    sleep 0.2 # the process substitution may still be writing the log
    rm -f "$log.waits.on"
    wait "$sampler" || true
}

# What reproject's server connections are doing, sampled 5 times a second while it runs (the
# server-side half of the profile): running on CPU, waiting for the client (ClientRead: the
# server has nothing to do), waiting on WAL or data file I/O, on a lock... Writes "share state"
# lines, most frequent first, into FILE.
sample_waits() {
    local file=$1
    : >"$file.raw"
    while [[ -e $file.on ]]; do
        q -tA -c "select state || ': ' || coalesce(wait_event_type || '/' || wait_event, 'on CPU')
                    from pg_stat_activity
                   where application_name = 'reproject' and state <> 'idle'" >>"$file.raw" 2>/dev/null || true
        sleep 0.2
    done
    sort "$file.raw" | uniq -c | sort -rn |
        awk '{ n[NR] = $1; $1 = ""; l[NR] = $0; t += n[NR] } END { for (i = 1; i <= NR; i++) printf "%5.1f%% %s\n", 100 * n[i] / t, l[i] }' >"$file"
}

# lock_wait_ms and lock_hold_ms of the newest run, from `reproject history --json`, read with
# PostgreSQL's own JSON functions (no jq needed).
lock_times() {
    local config=$1 json
    json=$(DATABASE_URL=$URL "$BIN" --config "$config" history --json --limit 1 </dev/null) ||
        die "reproject history --json failed"
    # -c does not interpolate psql variables; a script does.
    q -tA -v j="$json" -f <(printf '%s\n' "select coalesce(r->>'lock_wait_ms', '-'), coalesce(r->>'lock_hold_ms', '-')
                                             from (select :'j'::jsonb -> 'runs' -> 0 as r) x") | tr '|' ' '
}

check_zero() {
    local n=$1
    [[ $n =~ ^[0-9]+$ ]] || die "a comparison did not print a count: $n"
    if ((n == 0)); then echo "same rows"; else echo "$n rows DIFFER"; fi
}

REBUILD_ARGS=(rebuild --yes --reason "scripts/bench.sh")
if [[ -n $BATCH_SIZE ]]; then
    REBUILD_ARGS+=(--batch-size "$BATCH_SIZE")
fi
SET_ARGS=("${REBUILD_ARGS[@]}")
if [[ -n $SET_BATCH_SIZE ]]; then
    SET_ARGS+=(--set-batch-size "$SET_BATCH_SIZE")
fi


# --- W1 ------------------------------------------------------------------------------------
W1_DB=reproject_bench_w1
fresh_db "$W1_DB"
say "W1: generating $POSTINGS postings"
GEN_START=$(now)
q -f examples/postings/schema.sql
q -v n="$POSTINGS" -f examples/postings/generate.sql >/dev/null
# Set the hint bits and the visibility map once, so no method pays for that on its first read.
q -c "VACUUM (ANALYZE) execution_events"
W1_EVENTS=$(q1 -c "select count(*) from execution_events where coalesce(invalidated, false) = false and aggregate_type = 'posting'")
W1_ALL=$(q1 -c "select count(*) from execution_events")
W1_TABLE_MB=$(q1 -c "select round(pg_total_relation_size('execution_events') / 1048576.0)")
say "    $W1_ALL events ($W1_EVENTS replayed, the rest invalidated), ${W1_TABLE_MB} MB, in $(elapsed "$GEN_START" "$(now)") s"

compare_w1() { check_zero "$(q1 -v a="$1" -v b=bench_w1_reference -f scripts/bench/w1-compare.sql)"; }

# (b) first: its rows are the reference for every other method.
begin_method "W1 (b): the seed's function for all postings in one statement"
q -f examples/postings/reference.sql
end_method
record W1 "(b) seed function, all postings in one statement" "$W1_EVENTS" "reference"
q -c "ALTER TABLE posting_state_reference RENAME TO bench_w1_reference"

if ((CLIENT_LOOP)); then
    # The function of reference.sql writes into posting_state_reference: give it a fresh one.
    q -c "CREATE TABLE posting_state_reference (LIKE posting_state_projection INCLUDING ALL)"
    q -tA -c "select 'select rebuild_posting_state_reference(' || p || ');'
                from (select distinct aggregate_id::int as p from execution_events
                       where aggregate_type = 'posting' order by 1) ids" >"$LOG_DIR/client-loop.sql"
    begin_method "W1 (a): the seed's function once per posting from a client, one transaction each"
    "$TIME" -v -o "$LOG_DIR/client-loop.time" "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$URL" \
        -f "$LOG_DIR/client-loop.sql" </dev/null >/dev/null || die "the client loop failed"
    end_method
    c=$(compare_w1 posting_state_reference)
    record W1 "(a) seed function, one call + commit per posting from a client" "$W1_EVENTS" "$c" \
        "$(time_cpu "$LOG_DIR/client-loop.time")"
    q -c "DROP TABLE posting_state_reference"
fi

begin_method "W1 (c): hand-written set-based SQL"
q -f scripts/bench/w1-set-based.sql
end_method
record W1 "(c) hand-written set-based INSERT ... SELECT ... GROUP BY" "$W1_EVENTS" "$(compare_w1 bench_w1_set_based)"
q -c "DROP TABLE bench_w1_set_based"

W1_PROFILE=""
W1_JOBS_PROFILE=""
if ((!ONLY_SET_BASED)); then
begin_method "W1 (d): per-event PL/pgSQL loop in the server"
q -f scripts/bench/w1-event-loop.sql
end_method
record W1 "(d) per-event PL/pgSQL loop, one UPSERT per event (UNLOGGED table)" "$W1_EVENTS" "$(compare_w1 bench_w1_event_loop)"
q -c "DROP TABLE bench_w1_event_loop"

W1_CONFIG=examples/postings/reproject.toml
begin_method "W1: reproject rebuild (per-event handlers of examples/postings)"
run_reproject "$W1_CONFIG" "$LOG_DIR/w1-reproject.log" "${REBUILD_ARGS[@]}"
end_method
c=$(compare_w1 posting_state_projection)
read -r WAIT HOLD < <(lock_times "$W1_CONFIG")
record W1 "reproject rebuild, per-event handlers (examples/postings)" "$W1_EVENTS" "$c" \
    "$(time_cpu "$LOG_DIR/w1-reproject.log.time")" "$(time_rss_mb "$LOG_DIR/w1-reproject.log.time")" "$WAIT" "$HOLD"
W1_PROFILE=$(cat "$LOG_DIR/w1-reproject.log"; printf '\nreproject'"'"'s server connections, sampled every 0.2 s (state: wait event):\n'; cat "$LOG_DIR/w1-reproject.log.waits")

# The same handlers in --jobs stream lanes at a time (the example declares `stream_key`).
if ((JOBS > 1)); then
    begin_method "W1: reproject rebuild, per-event handlers, --jobs $JOBS"
    run_reproject "$W1_CONFIG" "$LOG_DIR/w1-jobs.log" "${REBUILD_ARGS[@]}" --jobs "$JOBS"
    end_method
    c=$(compare_w1 posting_state_projection)
    read -r WAIT HOLD < <(lock_times "$W1_CONFIG")
    record W1 "reproject rebuild, per-event handlers, --jobs $JOBS (stream lanes at a time)" "$W1_EVENTS" "$c" \
        "$(time_cpu "$LOG_DIR/w1-jobs.log.time")" "$(time_rss_mb "$LOG_DIR/w1-jobs.log.time")" "$WAIT" "$HOLD"
    W1_JOBS_PROFILE=$(cat "$LOG_DIR/w1-jobs.log"; printf '\nreproject'"'"'s server connections, sampled every 0.2 s (state: wait event):\n'; cat "$LOG_DIR/w1-jobs.log.waits")
fi

fi

# The set-based handlers (the docs' recommendation for speed): one INSERT ... SELECT ...
# GROUP BY per batch of up to --set-batch-size events (default 1,000,000).
W1_SET_CONFIG=examples/postings/reproject-per-batch.toml
begin_method "W1: reproject rebuild (set-based handlers, examples/postings/reproject-per-batch.toml)"
run_reproject "$W1_SET_CONFIG" "$LOG_DIR/w1-set.log" "${SET_ARGS[@]}"
end_method
c=$(compare_w1 posting_state_projection)
read -r WAIT HOLD < <(lock_times "$W1_SET_CONFIG")
record W1 "reproject rebuild, set-based handlers (examples/postings/reproject-per-batch.toml)" "$W1_EVENTS" "$c" \
    "$(time_cpu "$LOG_DIR/w1-set.log.time")" "$(time_rss_mb "$LOG_DIR/w1-set.log.time")" "$WAIT" "$HOLD"
W1_SET_PROFILE=$(cat "$LOG_DIR/w1-set.log"; printf '\nreproject'"'"'s server connections, sampled every 0.2 s (state: wait event):\n'; cat "$LOG_DIR/w1-set.log.waits")

# The same with several stream lanes at a time (docs/guide/handlers.md, "Stream lanes"): the example declares
# `stream_key`, so its replay is split by posting; `--jobs` lanes run at once on their own
# connections.
W1_SET_JOBS_PROFILE=""
if ((JOBS > 1)); then
    begin_method "W1: reproject rebuild, set-based handlers, --jobs $JOBS"
    run_reproject "$W1_SET_CONFIG" "$LOG_DIR/w1-set-jobs.log" "${SET_ARGS[@]}" --jobs "$JOBS"
    end_method
    c=$(compare_w1 posting_state_projection)
    read -r WAIT HOLD < <(lock_times "$W1_SET_CONFIG")
    record W1 "reproject rebuild, set-based handlers, --jobs $JOBS (stream lanes at a time)" "$W1_EVENTS" "$c" \
        "$(time_cpu "$LOG_DIR/w1-set-jobs.log.time")" "$(time_rss_mb "$LOG_DIR/w1-set-jobs.log.time")" "$WAIT" "$HOLD"
    W1_SET_JOBS_PROFILE=$(cat "$LOG_DIR/w1-set-jobs.log"; printf '\nreproject'"'"'s server connections, sampled every 0.2 s (state: wait event):\n'; cat "$LOG_DIR/w1-set-jobs.log.waits")
fi

# The same with every event in one batch (--set-batch-size above the number of events): each
# row is written once, as by the hand-written set-based SQL, at the price of one long
# transaction (docs/guide/handlers.md, "Set-based handlers").
ONE_BATCH=$((W1_EVENTS + 1))
begin_method "W1: reproject rebuild, set-based handlers, one batch (--set-batch-size $ONE_BATCH)"
run_reproject "$W1_SET_CONFIG" "$LOG_DIR/w1-set-one.log" "${REBUILD_ARGS[@]}" --set-batch-size "$ONE_BATCH"
end_method
c=$(compare_w1 posting_state_projection)
read -r WAIT HOLD < <(lock_times "$W1_SET_CONFIG")
record W1 "reproject rebuild, set-based handlers, all events in one batch" "$W1_EVENTS" "$c" \
    "$(time_cpu "$LOG_DIR/w1-set-one.log.time")" "$(time_rss_mb "$LOG_DIR/w1-set-one.log.time")" "$WAIT" "$HOLD"
W1_SET_ONE_PROFILE=$(cat "$LOG_DIR/w1-set-one.log")

W1_UNLOGGED_PROFILE=""
if ((RUN_UNLOGGED)); then
    W1_SET_UNLOGGED_CONFIG=$LOG_DIR/postings-per-batch-unlogged.toml
    sed "s|^handlers = \"handlers/|handlers = \"$PWD/examples/postings/handlers/|" "$W1_SET_CONFIG" >"$W1_SET_UNLOGGED_CONFIG"
    printf 'build_unlogged = true\n' >>"$W1_SET_UNLOGGED_CONFIG"
    begin_method "W1: reproject rebuild, set-based handlers, build_unlogged = true"
    run_reproject "$W1_SET_UNLOGGED_CONFIG" "$LOG_DIR/w1-set-unlogged.log" "${SET_ARGS[@]}"
    end_method
    c=$(compare_w1 posting_state_projection)
    p=$(q1 -c "select relpersistence from pg_class where oid = 'posting_state_projection'::regclass")
    [[ $p == p ]] || c="live table not LOGGED ($p)"
    read -r WAIT HOLD < <(lock_times "$W1_SET_UNLOGGED_CONFIG")
    record W1 "reproject rebuild, set-based handlers, build_unlogged = true" "$W1_EVENTS" "$c" \
        "$(time_cpu "$LOG_DIR/w1-set-unlogged.log.time")" "$(time_rss_mb "$LOG_DIR/w1-set-unlogged.log.time")" "$WAIT" "$HOLD"


    # The same config with `build_unlogged = true` in its (only) projection; the handlers by
    # absolute path, since the copy lives elsewhere.
    W1_UNLOGGED_CONFIG=$LOG_DIR/postings-unlogged.toml
    sed "s|^handlers = \"handlers/|handlers = \"$PWD/examples/postings/handlers/|" "$W1_CONFIG" >"$W1_UNLOGGED_CONFIG"
    printf 'build_unlogged = true\n' >>"$W1_UNLOGGED_CONFIG"
    begin_method "W1: reproject rebuild with build_unlogged = true"
    run_reproject "$W1_UNLOGGED_CONFIG" "$LOG_DIR/w1-unlogged.log" "${REBUILD_ARGS[@]}"
    end_method
    c=$(compare_w1 posting_state_projection)
    p=$(q1 -c "select relpersistence from pg_class where oid = 'posting_state_projection'::regclass")
    [[ $p == p ]] || c="live table not LOGGED ($p)"
    read -r WAIT HOLD < <(lock_times "$W1_UNLOGGED_CONFIG")
    record W1 "reproject rebuild, per-event handlers, build_unlogged = true" "$W1_EVENTS" "$c" \
        "$(time_cpu "$LOG_DIR/w1-unlogged.log.time")" "$(time_rss_mb "$LOG_DIR/w1-unlogged.log.time")" "$WAIT" "$HOLD"
    W1_UNLOGGED_PROFILE=$(cat "$LOG_DIR/w1-unlogged.log")

    if ((JOBS > 1)); then
        begin_method "W1: reproject rebuild with build_unlogged = true, --jobs $JOBS"
        run_reproject "$W1_UNLOGGED_CONFIG" "$LOG_DIR/w1-unlogged-jobs.log" "${REBUILD_ARGS[@]}" --jobs "$JOBS"
        end_method
        c=$(compare_w1 posting_state_projection)
        p=$(q1 -c "select relpersistence from pg_class where oid = 'posting_state_projection'::regclass")
        [[ $p == p ]] || c="live table not LOGGED ($p)"
        read -r WAIT HOLD < <(lock_times "$W1_UNLOGGED_CONFIG")
        record W1 "reproject rebuild, per-event handlers, build_unlogged = true, --jobs $JOBS" "$W1_EVENTS" "$c" \
            "$(time_cpu "$LOG_DIR/w1-unlogged-jobs.log.time")" "$(time_rss_mb "$LOG_DIR/w1-unlogged-jobs.log.time")" "$WAIT" "$HOLD"
    fi
fi

"$PSQL" -X -q -d "$SERVER_URL" -c "DROP DATABASE IF EXISTS $W1_DB WITH (FORCE)" </dev/null || true

# --- swaps under readers ----------------------------------------------------------------------
READERS_REPORT=""
if ((SWAP_ROUNDS > 0)); then
    PGBENCH=$(pg_find_tool pgbench) || die "pgbench not found (it comes with the PostgreSQL server or contrib package)"
    RP=$((POSTINGS < 2000 ? POSTINGS : 2000))
    fresh_db "$W1_DB"
    say "swaps under readers: W1 with $RP postings, $SWAP_ROUNDS rebuild + swap rounds, 16 readers"
    q -f examples/postings/schema.sql
    q -v n="$RP" -f examples/postings/generate.sql >/dev/null
    q -c "VACUUM (ANALYZE) execution_events"
    q -f examples/postings/reference.sql
    # One round alone first: it sizes the readers' run (and is not counted).
    t0=$(now)
    DATABASE_URL=$URL "$BIN" --config "$W1_SET_CONFIG" "${SET_ARGS[@]}" </dev/null >/dev/null 2>"$LOG_DIR/readers-warmup.log" ||
        { cat "$LOG_DIR/readers-warmup.log" >&2; die "the warm-up rebuild failed"; }
    ROUND_S=$(elapsed "$t0" "$(now)")
    FIRST_RUN=$(q1 -c "select max(id) + 1 from reproject.runs")
    # The readers start 2 s before the first round and run for five times the rounds' time
    # alone (16 readers on 2 CPUs slow a round down 3-4x); rounds stop early if the readers end
    # first (reported), and the readers are not stopped early (pgbench has no clean stop).
    READ_S=$(awk -v r="$ROUND_S" -v k="$SWAP_ROUNDS" 'BEGIN { printf "%d", 5 * r * k + 6 }')
    printf '\\set p random(1, %s)\nSELECT current_step, current_status, outputs FROM posting_state_projection WHERE posting_id = :p;\n' "$RP" >"$LOG_DIR/read.sql"
    (cd "$LOG_DIR" && "$PGBENCH" -n -c 16 -j 2 -T "$READ_S" -f read.sql --log --log-prefix=readers "$URL" \
        >"$LOG_DIR/pgbench.out" 2>&1; echo "$?" >"$LOG_DIR/pgbench.rc") &
    READERS=$!
    sleep 2
    ROUNDS_DONE=0
    for ((i = 1; i <= SWAP_ROUNDS; i++)); do
        [[ -e $LOG_DIR/pgbench.rc ]] && break
        DATABASE_URL=$URL "$BIN" --config "$W1_SET_CONFIG" "${SET_ARGS[@]}" \
            </dev/null >/dev/null 2>>"$LOG_DIR/readers-rounds.log" ||
            { cat "$LOG_DIR/readers-rounds.log" >&2; die "rebuild round $i under readers failed"; }
        ROUNDS_DONE=$i
    done
    ROUNDS_END=$(now)
    wait "$READERS" || true
    READERS_END=$(now)
    PGBENCH_RC=$(cat "$LOG_DIR/pgbench.rc")
    ABORTED=$(grep -c 'aborted' "$LOG_DIR/pgbench.out" || true)
    FAILED_TX=$(awk -F': ' '/number of failed transactions/ { split($2, a, " "); print a[1] }' "$LOG_DIR/pgbench.out")
    TX=$(awk -F': ' '/number of transactions actually processed/ { split($2, a, "/"); print a[1] }' "$LOG_DIR/pgbench.out")
    # pgbench's per-transaction logs: "client tx latency_us script epoch_s epoch_us".
    cat "$LOG_DIR"/readers.* >"$LOG_DIR/readers.all" 2>/dev/null || : >"$LOG_DIR/readers.all"
    pctl() { sort -n | awk 'function at(q,  i) { i = int(NR * q + 0.5); if (i < 1) i = 1; return v[i] / 1000 }
        { v[NR] = $1 } END { if (NR == 0) { print "– – – –"; exit }
        printf "%.2f %.2f %.2f %.2f\n", at(0.5), at(0.99), at(0.999), v[NR] / 1000 }'; }
    read -r R50 R99 R999 RMAX < <(awk '{ print $3 }' "$LOG_DIR/readers.all" | pctl)
    # The queries that ended in the second after a swap transaction began (swapped_at is its
    # now(): before the lock wait): those are the ones a swap's locks can hold up.
    q -tA -c "select extract(epoch from swapped_at) from reproject.runs
               where id >= $FIRST_RUN and status = 'swapped'" >"$LOG_DIR/swaps.epoch"
    read -r S50 S99 S999 SMAX < <(awk 'NR == FNR { if ($1 != "") s[++n] = $1; next }
        { t = $5 + $6 / 1e6; for (i = 1; i <= n; i++) if (t >= s[i] && t <= s[i] + 1) { print $3; next } }' \
        "$LOG_DIR/swaps.epoch" "$LOG_DIR/readers.all" | pctl)
    SWAP_Q=$(awk 'NR == FNR { if ($1 != "") s[++n] = $1; next }
        { t = $5 + $6 / 1e6; for (i = 1; i <= n; i++) if (t >= s[i] && t <= s[i] + 1) { c++; next } } END { print c + 0 }' \
        "$LOG_DIR/swaps.epoch" "$LOG_DIR/readers.all")
    LOCKS=$(q1 -c "with r as (select lock_wait_ms w, lock_hold_ms h from reproject.runs
                                where id >= $FIRST_RUN and status = 'swapped')
                   select count(*) || ' ' ||
                          coalesce(percentile_disc(0.5) within group (order by w)::text, '–') || ' ' ||
                          coalesce(percentile_disc(0.99) within group (order by w)::text, '–') || ' ' ||
                          coalesce(max(w)::text, '–') || ' ' ||
                          coalesce(percentile_disc(0.5) within group (order by h)::text, '–') || ' ' ||
                          coalesce(percentile_disc(0.99) within group (order by h)::text, '–') || ' ' ||
                          coalesce(max(h)::text, '–') from r")
    read -r SWAPS W50 W99 WMAX H50 H99 HMAX <<<"$LOCKS"
    ATTEMPTS=$(q1 -c "select coalesce(sum(jsonb_array_length(lock_attempts)), 0) from reproject.runs where id >= $FIRST_RUN")
    # The swapping attempt's lock_hold_ms is taken before the COMMIT, the run's after it: the
    # difference is the commit (a synchronous one: the WAL flush) while the locks are held.
    COMMITS=$(q1 -c "with c as (select lock_hold_ms - (lock_attempts -> -1 ->> 'lock_hold_ms')::bigint c
                                  from reproject.runs where id >= $FIRST_RUN and status = 'swapped')
                     select coalesce(percentile_disc(0.5) within group (order by c)::text, '–') || ' ' ||
                            coalesce(percentile_disc(0.99) within group (order by c)::text, '–') || ' ' ||
                            coalesce(max(c)::text, '–') from c")
    read -r C50 C99 CMAX <<<"$COMMITS"
    # Where the hold went: the swapping attempt's steps (src/laps.rs), p50 and max per step.
    STEPS=$(q1 -c "with s as (select e.key, e.value::numeric v
                                from reproject.runs r, jsonb_each(r.lock_attempts -> -1 -> 'steps') e
                               where r.id >= $FIRST_RUN and r.status = 'swapped')
                   select coalesce(string_agg(key || ' ' || p50 || ' / ' || mx, '; ' order by p50 desc), '–')
                     from (select key, percentile_disc(0.5) within group (order by v) p50, max(v) mx
                             from s group by key) x")
    RC=$(check_zero "$(q1 -v a=posting_state_projection -v b=posting_state_reference -f scripts/bench/w1-compare.sql)")
    if awk -v a="$ROUNDS_END" -v b="$READERS_END" 'BEGIN { exit !(a < b) }'; then
        OVERLAP="every round ran while the readers read"
    else
        OVERLAP="the readers stopped before the last round ended"
    fi
    say "    $SWAPS swaps ($ROUNDS_DONE rounds; $OVERLAP), lock hold p50 $H50 ms p99 $H99 ms; readers: $TX queries, ${FAILED_TX:-0} failed, $ABORTED aborted, p99 $R99 ms"
    if [[ $PGBENCH_RC != 0 || ${FAILED_TX:-0} != 0 || $ABORTED != 0 ]]; then
        FAILED=1
        say "    reader errors:"
        sed 's/^/    /' "$LOG_DIR/pgbench.out" >&2
    fi
    [[ $RC == "same rows" ]] || FAILED=1
    READERS_REPORT=$(
        cat <<EOF
#### Swaps under 16 concurrent readers (W1 with $RP postings)

$SWAPS swaps of \`posting_state_projection\` ($SWAP_ROUNDS rounds of \`reproject rebuild --yes\` with the set-based handlers asked, $ROUNDS_DONE run; one round alone took ${ROUND_S} s; $OVERLAP), while \`pgbench -n -c 16 -j 2 -T $READ_S\` ran \`SELECT current_step, current_status, outputs FROM posting_state_projection WHERE posting_id = <random>\` in a loop. Rows after the last swap: $RC.

| | p50 | p99 | p99.9 | max |
|---|---:|---:|---:|---:|
| reader query latency, ms (all ${TX:-?} queries) | $R50 | $R99 | $R999 | $RMAX |
| … of the $SWAP_Q queries that ended within 1 s after a swap began | $S50 | $S99 | $S999 | $SMAX |
| swap lock wait, ms ($SWAPS swaps) | $W50 | $W99 | – | $WMAX |
| swap lock hold, ms ($SWAPS swaps) | $H50 | $H99 | – | $HMAX |
| … of which the COMMIT, ms | $C50 | $C99 | – | $CMAX |

Reader errors: ${FAILED_TX:-0} failed queries, $ABORTED aborted clients (pgbench exit status $PGBENCH_RC). Lock attempts recorded: $ATTEMPTS for $SWAPS swaps.

Steps of the hold (ms, p50 / max over the swaps, from each swapping attempt's \`steps\`): $STEPS.
EOF
    )
    "$PSQL" -X -q -d "$SERVER_URL" -c "DROP DATABASE IF EXISTS $W1_DB WITH (FORCE)" </dev/null || true
fi

# --- shop ----------------------------------------------------------------------------------
SHOP_EVENTS=""
SHOP_PROFILE=""
if ((RUN_SHOP)); then
    SHOP_DB=reproject_bench_shop
    fresh_db "$SHOP_DB"
    say "shop: generating $SHOP customers"
    q -f examples/shop/schema.sql
    q -v n="$SHOP" -f examples/shop/generate.sql >/dev/null
    q -c "VACUUM (ANALYZE) shop_events"
    SHOP_EVENTS=$(q1 -c "select count(*) from shop_events")
    say "    $SHOP_EVENTS events"

    begin_method "shop: hand-written set-based SQL"
    q -f scripts/bench/shop-set-based.sql
    end_method
    record shop "hand-written set-based SQL (4 tables)" "$SHOP_EVENTS" "reference"

    SHOP_CONFIG=examples/shop/reproject.toml
    begin_method "shop: reproject rebuild (4 projections, 2 waves)"
    run_reproject "$SHOP_CONFIG" "$LOG_DIR/shop-reproject.log" "${REBUILD_ARGS[@]}"
    end_method
    c=$(check_zero "$(q1 -f scripts/bench/shop-compare.sql)")
    read -r WAIT HOLD < <(lock_times "$SHOP_CONFIG")
    record shop "reproject rebuild, per-event handlers (examples/shop)" "$SHOP_EVENTS" "$c" \
        "$(time_cpu "$LOG_DIR/shop-reproject.log.time")" "$(time_rss_mb "$LOG_DIR/shop-reproject.log.time")" "$WAIT" "$HOLD"
    SHOP_PROFILE=$(cat "$LOG_DIR/shop-reproject.log"; printf '\nreproject'"'"'s server connections, sampled every 0.2 s (state: wait event):\n'; cat "$LOG_DIR/shop-reproject.log.waits")
    "$PSQL" -X -q -d "$SERVER_URL" -c "DROP DATABASE IF EXISTS $SHOP_DB WITH (FORCE)" </dev/null || true
fi

# --- report --------------------------------------------------------------------------------
PG_VERSION=$("$PSQL" -X -tA -d "$SERVER_URL" -c "show server_version" </dev/null)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo "?")
MEM_GB=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo 2>/dev/null || echo "?")
SETTINGS=$("$PSQL" -X -tA -d "$SERVER_URL" -F '=' -c "select name, current_setting(name) from pg_settings
    where name in ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_wal_size', 'wal_level')
    order by name" </dev/null | paste -sd ' ' -)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    COMMIT="$COMMIT (with uncommitted changes)"
fi

# wall time of a method by its label prefix within a workload
wall_of() {
    local row
    for row in "${RESULTS[@]}"; do
        IFS=$'\t' read -r w m t _ <<<"$row"
        if [[ $w == "$1" && $m == "$2"* ]]; then
            echo "$t"
            return
        fi
    done
}
ratio() {
    [[ -n $2 ]] || { echo "–"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "–" }'
}

W1_A=$(wall_of W1 "(a)")
W1_B=$(wall_of W1 "(b)")
W1_C=$(wall_of W1 "(c)")
W1_D=$(wall_of W1 "(d)")
SHOP_SET=$(wall_of shop "hand-written")

table() {
    echo "| workload | method | wall s | events/s | ÷ (a) | ÷ (b) | ÷ (c) | ÷ (d) | rows | WAL MB | server CPU s | client CPU s | peak RSS MB | lock wait ms | lock hold ms |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    local row w m t ev chk wal scpu ccpu rss lw lh rate ra rb rc rd
    for row in "${RESULTS[@]}"; do
        IFS=$'\t' read -r w m t ev chk wal scpu ccpu rss lw lh <<<"$row"
        rate=$(awk -v e="$ev" -v t="$t" 'BEGIN { if (t > 0) printf "%.0f", e / t; else print "–" }')
        if [[ $w == W1 ]]; then
            ra=$(ratio "$t" "$W1_A") rb=$(ratio "$t" "$W1_B") rc=$(ratio "$t" "$W1_C") rd=$(ratio "$t" "$W1_D")
        else
            ra="–" rb="–" rc=$(ratio "$t" "$SHOP_SET") rd="–"
        fi
        echo "| $w | $m | $t | $rate | $ra | $rb | $rc | $rd | $chk | $wal | ${scpu:-–} | ${ccpu:-–} | ${rss:-–} | ${lw:-–} | ${lh:-–} |"
    done
}

SHOP_DETAILS=""
if [[ -n $SHOP_PROFILE ]]; then
    fence='```'
    SHOP_DETAILS=$(printf "\n<details><summary>reproject's log (seconds since start), shop</summary>\n\n%s\n%s\n%s\n</details>\n" "$fence" "$SHOP_PROFILE" "$fence")
fi

SET_DETAILS=""
if [[ -n $W1_SET_PROFILE ]]; then
    fence='```'
    SET_DETAILS=$(printf "\n<details><summary>reproject's log (seconds since start), W1 with set-based handlers</summary>\n\n%s\n%s\n%s\n</details>\n\n<details><summary>reproject's log, W1 with set-based handlers, one batch</summary>\n\n%s\n%s\n%s\n</details>\n" "$fence" "$W1_SET_PROFILE" "$fence" "$fence" "$W1_SET_ONE_PROFILE" "$fence")
    if [[ -n $W1_SET_JOBS_PROFILE ]]; then
        SET_DETAILS+=$(printf "\n\n<details><summary>reproject's log, W1 with set-based handlers, --jobs %s</summary>\n\n%s\n%s\n%s\n</details>\n" "$JOBS" "$fence" "$W1_SET_JOBS_PROFILE" "$fence")
    fi
fi

JOBS_DETAILS=""
if [[ -n $W1_JOBS_PROFILE ]]; then
    fence='```'
    JOBS_DETAILS=$(printf "\n<details><summary>reproject's log (seconds since start), W1 per-event handlers, --jobs %s</summary>\n\n%s\n%s\n%s\n</details>\n" "$JOBS" "$fence" "$W1_JOBS_PROFILE" "$fence")
fi

UNLOGGED_DETAILS=""
if [[ -n $W1_UNLOGGED_PROFILE ]]; then
    fence='```'
    UNLOGGED_DETAILS=$(printf "\n<details><summary>reproject's log (seconds since start), W1 with build_unlogged = true</summary>\n\n%s\n%s\n%s\n</details>\n" "$fence" "$W1_UNLOGGED_PROFILE" "$fence")
fi

SECTION=$(
    cat <<EOF
<!-- bench:postings=$POSTINGS (written by scripts/bench.sh; running it again replaces this section) -->
### W1 with $POSTINGS postings ($W1_EVENTS events replayed, ${W1_TABLE_MB} MB event table)${SHOP_EVENTS:+, shop with $SHOP customers ($SHOP_EVENTS events)}

- run: $DATE, \`scripts/bench.sh $ARGS_SHOWN\` at commit $COMMIT, $PROFILE build
- machine: $(nproc 2>/dev/null || echo "?") CPUs ($CPU_MODEL), ${MEM_GB} GB memory, load average $LOAD_START at the start, $LOAD at the end (the machine is shared with other work)
- PostgreSQL $PG_VERSION: $SETTINGS

$(table)

"÷ (x)" is this method's wall time divided by baseline (x)'s (below 1 = faster). For the shop,
"÷ (c)" is against the shop's set-based SQL. "rows" compares each method's rows with the seed
function's (W1, without last_updated) or with the set-based SQL's (shop). WAL MB is the WAL the
server wrote during the method, server CPU the CPU time of all PostgreSQL processes, client CPU
the user + system time of psql or reproject.

<details><summary>reproject's log (seconds since start), W1</summary>

\`\`\`
$W1_PROFILE
\`\`\`
</details>
$SHOP_DETAILS
$JOBS_DETAILS
$SET_DETAILS
$UNLOGGED_DETAILS
$READERS_REPORT
<!-- /bench:postings=$POSTINGS -->
EOF
)

printf '\n%s\n' "$SECTION"

if [[ -n $OUTPUT ]]; then
    mkdir -p "$(dirname "$OUTPUT")"
    touch "$OUTPUT"
    # Replace this N's section, or append it; everything else in the file stays.
    begin="<!-- bench:postings=$POSTINGS "
    end="<!-- /bench:postings=$POSTINGS -->"
    tmp=$(mktemp)
    printf '%s\n' "$SECTION" >"$LOG_DIR/section.md"
    awk -v begin="$begin" -v end="$end" -v section="$LOG_DIR/section.md" '
        function put() { while ((getline l < section) > 0) print l; close(section); done = 1 }
        index($0, begin) == 1 { skipping = 1; put(); next }
        skipping && $0 == end { skipping = 0; next }
        skipping { next }
        { print }
        END { if (!done) { print ""; put() } }' "$OUTPUT" >"$tmp"
    cat "$tmp" >"$OUTPUT"
    rm -f "$tmp"
    say "wrote the results into $OUTPUT"
fi

if ((FAILED)); then
    die "some method did not produce the reference rows (see the table)"
fi
say "done"
