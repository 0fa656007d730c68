#!/usr/bin/env bash
#
# scripts/bench/partition_hold.sh [--swaps N] BINARY...
#
# The swap's lock hold on a partitioned projection table: a hash-partitioned `balances` with 4
# and with 32 partitions, 300 events; each BINARY (reproject builds to compare, e.g. before
# and after a change) runs `rebuild --yes` in turn on the same database, N rounds (default 9),
# so load changes on a shared machine reach every binary alike. Prints each binary's
# `runs.lock_hold_ms` per swap and the median. From the second swap on, each swap also retires
# the previous `_old` generation with its partitions. Uses DATABASE_URL if set, else a
# throwaway server (scripts/lib/pg.sh). A measurement: it checks nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

swaps=9
while [[ ${1:-} == --* ]]; do
    case $1 in
    --swaps) swaps=$2 && shift 2 ;;
    *) echo "partition_hold.sh: unknown option $1" >&2 && exit 2 ;;
    esac
done
(($#)) || { echo "usage: partition_hold.sh [--swaps N] BINARY..." >&2 && exit 2; }

# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh
pg_start
dir=$(mktemp -d)
trap 'rm -rf "$dir"; pg_stop' EXIT

cat >"$dir/reproject.toml" <<'TOML'
[events]
table = "events"
position = "id"
stream = "stream"
type = "type"
data = "data"

[[projection]]
name = "balances"
tables = ["balances"]
handlers = "balances.sql"
TOML
cat >"$dir/balances.sql" <<'SQL'
-- on credited
INSERT INTO {{balances}} AS b (account, bucket, balance)
VALUES (:stream, (:data->>'bucket')::int, (:data->>'amount')::bigint)
ON CONFLICT (account, bucket) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
SQL

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "load at start: $(uptime)"
for n in 4 32; do
    db="partition_hold_$n"
    url="${DATABASE_URL%/*}/$db"
    psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    {
        echo "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);"
        echo "CREATE TABLE balances (account text NOT NULL, bucket int NOT NULL, balance bigint NOT NULL, PRIMARY KEY (account, bucket)) PARTITION BY HASH (account);"
        for ((i = 0; i < n; i++)); do
            echo "CREATE TABLE balances_h$i PARTITION OF balances FOR VALUES WITH (MODULUS $n, REMAINDER $i);"
        done
        echo "INSERT INTO events (stream, type, data) SELECT 'acct-' || (i % 40), 'credited', jsonb_build_object('amount', i, 'bucket', i % 35) FROM generate_series(1, 300) i;"
    } | psql -X -q -v ON_ERROR_STOP=1 -d "$url"
    declare -A holds=()
    for ((round = 1; round <= swaps; round++)); do
        for b in "$@"; do
            "$b" --quiet --database-url "$url" --config "$dir/reproject.toml" rebuild --yes >/dev/null
            holds[$b]+="$(psql -X -qAt -d "$url" -c "SELECT lock_hold_ms FROM reproject.runs ORDER BY id DESC LIMIT 1") "
        done
    done
    for b in "$@"; do
        # shellcheck disable=SC2086
        echo "partitions $n: $b: lock hold ms ${holds[$b]}; median $(printf '%s\n' ${holds[$b]} | median)"
    done
    unset holds
    psql -X -q -d "$DATABASE_URL" -c "DROP DATABASE $db"
done
echo "load at end: $(uptime)"
