-- W1 "postings": the event table and the projection table, exactly as in the W1 workload.
-- Idempotent: drops both tables first. Run: psql -v ON_ERROR_STOP=1 -f schema.sql
\set QUIET on
set client_min_messages = warning;

drop table if exists execution_events, posting_state_projection cascade;

-- The seed's event store layout (see docs on event stores: "seed layout used in our examples").
create table execution_events (
  event_id bigserial primary key,
  event_timestamp timestamptz not null default now(),
  aggregate_type text not null,
  aggregate_id text not null,
  aggregate_version int not null,
  event_type text not null,
  event_version int not null default 1,
  event_data jsonb not null,
  metadata jsonb not null default '{}',
  invalidated boolean default false,
  invalidation_reason text
);
create index on execution_events (aggregate_type, aggregate_id, event_id);

-- One row per posting; rebuilt by reproject from the handlers in handlers/posting_state.sql.
create table posting_state_projection (
  posting_id int primary key,
  current_step int,
  current_conversation_id int,
  current_status text,
  outputs jsonb,
  conversation_history jsonb,
  last_updated timestamptz
);
