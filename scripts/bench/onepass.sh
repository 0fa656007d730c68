#!/usr/bin/env bash
#
# scripts/bench/onepass.sh [SIZES...]: the rebuild time of a per-event projection over an
# Emmett-like event table (transaction_id xid8 + global_position, appended in small
# transactions, no index in reading order), at each size (default: 50000 200000).
#
#   REPROJECT=path/to/reproject   the binary to measure (default: target/debug/reproject)
#   INDEX=1                       add the index in reading order before rebuilding
#
# Uses DATABASE_URL if set, else a throwaway server (scripts/lib/pg.sh). Prints one line per
# size: events, wall seconds of `rebuild --yes`, events/s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh
pg_start

bin=${REPROJECT:-target/debug/reproject}
sizes=("$@")
if ((${#sizes[@]} == 0)); then sizes=(50000 200000); fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"; pg_stop' EXIT

cat >"$dir/reproject.toml" <<'EOF'
[events]
preset = "emmett"

[[projection]]
name = "balances"
tables = ["balances"]
handlers = "balances.sql"
EOF
cat >"$dir/balances.sql" <<'EOF'
-- on Deposited
INSERT INTO {{balances}} AS b (stream, n, total) VALUES (:stream, 1, (:data->>'amount')::bigint)
ON CONFLICT (stream) DO UPDATE SET n = b.n + 1, total = b.total + EXCLUDED.total;
EOF

for n in "${sizes[@]}"; do
    db="onepass_bench_$n"
    url="${DATABASE_URL%/*}/$db"
    psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    # Emmett's layout (not partitioned here), appended ten events per transaction.
    psql -X -q -v ON_ERROR_STOP=1 -d "$url" <<EOF
CREATE SEQUENCE emt_global_message_position;
CREATE TABLE emt_messages (
  stream_id text NOT NULL, stream_position bigint NOT NULL,
  partition text NOT NULL DEFAULT 'emt:default', message_kind char(1) NOT NULL DEFAULT 'E',
  message_data jsonb NOT NULL, message_metadata jsonb NOT NULL DEFAULT '{}',
  message_schema_version text NOT NULL DEFAULT '1', message_type text NOT NULL,
  message_id text NOT NULL DEFAULT gen_random_uuid()::text, is_archived boolean NOT NULL DEFAULT false,
  global_position bigint DEFAULT nextval('emt_global_message_position'),
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), created timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stream_id, stream_position, partition, is_archived));
CREATE TABLE balances (stream text PRIMARY KEY, n int NOT NULL, total bigint NOT NULL);
DO \$\$
BEGIN
  FOR t IN 0 .. $n / 10 - 1 LOOP
    INSERT INTO emt_messages (stream_id, stream_position, message_type, message_data)
    SELECT 'acc-' || ((t * 10 + i) % 1000), t * 10 + i, 'Deposited', jsonb_build_object('amount', i)
    FROM generate_series(1, 10) i;
    COMMIT;
  END LOOP;
END
\$\$;
VACUUM ANALYZE emt_messages;
EOF
    if [[ ${INDEX:-0} == 1 ]]; then
        psql -X -q -d "$url" -c "CREATE INDEX ON emt_messages (transaction_id, global_position)"
    fi
    start=$(date +%s.%N)
    "$bin" --quiet --database-url "$url" --config "$dir/reproject.toml" rebuild --yes >/dev/null
    end=$(date +%s.%N)
    awk -v n="$n" -v s="$start" -v e="$end" 'BEGIN { printf "%d events: %.2f s, %.0f events/s\n", n, e - s, n / (e - s) }'
    psql -X -q -d "$DATABASE_URL" -c "DROP DATABASE $db"
done
