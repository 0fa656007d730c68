#!/usr/bin/env bash
#
# scripts/bench/stores.sh [--sizes "N 2N 4N"] [--stores "emmett marten"] [--bin PATH] [--output FILE] [--debug]
#
# Rebuild time on the stock layouts of two stores, as their installers create them and
# appended the way they append, at three sizes (default 50000 100000 200000 events):
#   emmett  `emt_messages` (read in transaction-id order, no index in that order), ten events
#           per appending transaction, positions from its sequence;
#   marten  `mt_events` (a default installation: no metadata columns), ten events per append,
#           positions reserved from `mt_events_sequence` by a separate command first (its Rich
#           append mode). The config names that sequence (`position_sequence`, as the preset
#           does), so a rebuild from the first event starts at once: positions begin at the
#           sequence's start value.
# For each: reproject with per-event handlers, reproject with set-based (`-- per batch`)
# handlers, and the set-based floor in the same run: one hand-written
# `INSERT … SELECT … GROUP BY` over the events (what a table built in one statement costs). Each
# result is compared with the floor's rows. Then the targets, as ratios within this run:
#   growth: time at the largest size within 1.15x of (largest / smallest) times the time at the
#           smallest, for every method;
#   per-event on a stock layout within 3x of the floor at the largest size.
#
# Uses DATABASE_URL if set, else a throwaway server (scripts/lib/pg.sh). The release build
# (`cargo build --release`) unless --debug. Prints a markdown table; --output FILE also writes
# it there (with the machine). Exits 0 whether or not the targets are met: they are
# reported, not enforced (numbers from a loaded machine are noise).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

sizes="50000 100000 200000"
stores="emmett marten"
bin=""
output=""
profile=release
while (($#)); do
    case $1 in
    --sizes) sizes=$2 && shift 2 ;;
    --stores) stores=$2 && shift 2 ;;
    # Another build of reproject (an older commit's, to compare in one run on one server).
    --bin) bin=$2 && shift 2 ;;
    --output) output=$2 && shift 2 ;;
    --debug) profile=debug && shift ;;
    *) echo "stores.sh: unknown option $1" >&2 && exit 2 ;;
    esac
done

for store in $stores; do
    case $store in
    emmett | marten) ;;
    *) echo "stores.sh: unknown store \`$store\` in --stores (known: emmett marten)" >&2 && exit 2 ;;
    esac
done
if [[ -n $bin && ! -x $bin ]]; then
    echo "stores.sh: --bin $bin is not an executable file" >&2 && exit 2
fi

# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh
pg_start
if [[ $profile == release ]]; then
    cargo build --release --quiet
else
    cargo build --quiet
fi
bin=${bin:-target/$profile/reproject}
dir=$(mktemp -d)
trap 'rm -rf "$dir"; pg_stop' EXIT

now() { date +%s.%N; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.3f", e - s }'; }

# The projection: per stream, how many deposits and their sum.
cat >"$dir/per_event.sql" <<'EOF'
-- on Deposited
INSERT INTO {{balances}} AS b (stream, n, total) VALUES (:stream, 1, (:data->>'amount')::bigint)
ON CONFLICT (stream) DO UPDATE SET n = b.n + 1, total = b.total + EXCLUDED.total;
EOF
cat >"$dir/set_based.sql" <<'EOF'
-- per batch
INSERT INTO {{balances}} AS b (stream, n, total)
SELECT e.stream, count(*), sum((e.data->>'amount')::bigint)
  FROM :events AS e
 WHERE e.type = 'Deposited'
 GROUP BY e.stream
ON CONFLICT (stream) DO UPDATE SET n = b.n + EXCLUDED.n, total = b.total + EXCLUDED.total;
EOF

config() { # store handlers-file
    case $1 in
    emmett) printf '[events]\npreset = "emmett"\n' ;;
    # The Marten preset's keys, spelt out: a default installation has no `headers` column.
    marten) printf '[events]\ntable = "mt_events"\nposition = "seq_id"\nstream = "stream_id"\ntype = "type"\ndata = "data"\ntimestamp = "\\"timestamp\\""\nfilter = "is_archived = false"\ngap_age = "5s"\nposition_sequence = "mt_events_sequence"\n' ;;
    esac
    printf '\n[[projection]]\nname = "balances"\ntables = ["balances"]\nhandlers = "%s"\n' "$2"
}

layout() { # store events
    local n=$2
    case $1 in
    emmett) cat <<EOF
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
EOF
        ;;
    marten) cat <<EOF
CREATE SEQUENCE mt_events_sequence;
CREATE TABLE mt_streams (
  id uuid NOT NULL PRIMARY KEY, type varchar NULL, version bigint NULL,
  timestamp timestamptz DEFAULT now() NOT NULL, snapshot jsonb NULL, snapshot_version integer NULL,
  created timestamptz DEFAULT now() NOT NULL, tenant_id varchar DEFAULT '*DEFAULT*',
  is_archived bool DEFAULT FALSE);
CREATE TABLE mt_events (
  seq_id bigint NOT NULL PRIMARY KEY, id uuid NOT NULL, stream_id uuid REFERENCES mt_streams ON DELETE CASCADE,
  version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
  timestamp timestamptz DEFAULT now() NOT NULL, tenant_id varchar DEFAULT '*DEFAULT*',
  mt_dotnet_type varchar NULL, is_archived bool DEFAULT FALSE,
  CONSTRAINT pk_mt_events_stream_and_version UNIQUE (stream_id, version));
CREATE INDEX idx_mt_events_stream_id ON mt_events (stream_id);
INSERT INTO mt_streams (id, type, version)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(s), 12, '0'))::uuid, 'Account', 0 FROM generate_series(0, 999) s;
DO \$\$
DECLARE
  seqs bigint[];
BEGIN
  FOR t IN 0 .. $n / 10 - 1 LOOP
    -- Rich append: the positions first, on their own (committed) command...
    SELECT array_agg(nextval('mt_events_sequence')) INTO seqs FROM generate_series(1, 10);
    COMMIT;
    -- ...then the append that uses them.
    INSERT INTO mt_events (seq_id, id, stream_id, version, data, type, mt_dotnet_type)
    SELECT seqs[i], gen_random_uuid(),
           ('00000000-0000-0000-0000-' || lpad(to_hex((t * 10 + i) % 1000), 12, '0'))::uuid,
           t * 10 + i, jsonb_build_object('amount', i), 'Deposited', 'Bench.Deposited, Bench'
      FROM generate_series(1, 10) i;
    COMMIT;
  END LOOP;
END
\$\$;
EOF
        ;;
    esac
}

# The floor: the same rows in one statement.
floor_sql() {
    case $1 in
    emmett) echo "INSERT INTO balances_floor SELECT stream_id, count(*), sum((message_data->>'amount')::bigint) FROM emt_messages WHERE message_kind <> 'C' AND message_type = 'Deposited' GROUP BY stream_id" ;;
    marten) echo "INSERT INTO balances_floor SELECT stream_id::text, count(*), sum((data->>'amount')::bigint) FROM mt_events WHERE is_archived = false AND type = 'Deposited' GROUP BY stream_id" ;;
    esac
}

declare -A t
rows=()
for store in $stores; do
    config "$store" per_event.sql >"$dir/$store-per-event.toml"
    config "$store" set_based.sql >"$dir/$store-set-based.toml"
    for n in $sizes; do
        db="stores_bench_${store}_$n"
        url="${DATABASE_URL%/*}/$db"
        psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        layout "$store" "$n" | psql -X -q -v ON_ERROR_STOP=1 -d "$url"
        psql -X -q -v ON_ERROR_STOP=1 -d "$url" \
            -c "CREATE TABLE balances (stream text PRIMARY KEY, n int NOT NULL, total bigint NOT NULL)" \
            -c "CREATE TABLE balances_floor (LIKE balances INCLUDING ALL)" -c "VACUUM ANALYZE" -c "CHECKPOINT"
        s=$(now)
        psql -X -q -v ON_ERROR_STOP=1 -d "$url" -c "$(floor_sql "$store")"
        t[$store,floor,$n]=$(secs "$s" "$(now)")
        for method in per-event set-based; do
            psql -X -q -d "$url" -c "CHECKPOINT"
            s=$(now)
            "$bin" --quiet --database-url "$url" --config "$dir/$store-$method.toml" rebuild --yes >/dev/null
            t[$store,$method,$n]=$(secs "$s" "$(now)")
            diff=$(psql -X -qAt -d "$url" -c "SELECT count(*) FROM ((TABLE balances EXCEPT TABLE balances_floor) UNION ALL (TABLE balances_floor EXCEPT TABLE balances)) d")
            if [[ $diff != 0 ]]; then
                echo "stores.sh: $store $method at $n events: $diff rows differ from the floor's" >&2
                exit 1
            fi
            psql -X -q -d "$url" -c "DROP TABLE IF EXISTS balances_old"
        done
        rows+=("| $store | $n | ${t[$store,floor,$n]} | ${t[$store,per-event,$n]} | ${t[$store,set-based,$n]} |")
        psql -X -q -d "$DATABASE_URL" -c "DROP DATABASE $db"
    done
done

read -r -a sz <<<"$sizes"
small=${sz[0]}
large=${sz[${#sz[@]} - 1]}
verdict() { awk -v r="$1" -v lim="$2" 'BEGIN { printf "%.2f (target <= %.2f: %s)", r, lim, (r <= lim ? "met" : "NOT met") }'; }
{
    echo "Stock layouts, $(date -u +%Y-%m-%d), $(nproc) cores, $(pg_server_version 2>/dev/null || psql -X -qAt -d "$DATABASE_URL" -c 'SHOW server_version'), $profile build"
    echo
    echo "| store | events | floor (s) | per-event (s) | set-based (s) |"
    echo "|---|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
    echo
    for store in $stores; do
        for method in floor per-event set-based; do
            r=$(awk -v a="${t[$store,$method,$large]}" -v b="${t[$store,$method,$small]}" -v k="$large" -v j="$small" 'BEGIN { printf "%.3f", a / (b * k / j) }')
            echo "- $store $method: time at $large / ($large/$small x time at $small) = $(verdict "$r" 1.15)"
        done
        r=$(awk -v a="${t[$store,per-event,$large]}" -v b="${t[$store,floor,$large]}" 'BEGIN { printf "%.3f", a / b }')
        echo "- $store per-event / floor at $large events = $(verdict "$r" 3)"
    done
} | tee "${output:-/dev/null}"
