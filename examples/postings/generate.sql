-- W1 "postings": fills execution_events with :n postings x 15 events, exactly like the W1
-- generator, then fills the LIVE posting_state_projection with correct rows and corrupts a few of
-- them to simulate a projection bug (the thing a rebuild repairs).
--
--   psql -v ON_ERROR_STOP=1 -f schema.sql
--   psql -v ON_ERROR_STOP=1 -v n=2000 -f generate.sql      (n defaults to 2000)
--
-- Starts by emptying both tables, so it can be run again without schema.sql.
\set QUIET on
set client_min_messages = warning;
\if :{?n}
\else
  \set n 2000
\endif

truncate execution_events restart identity;
truncate posting_state_projection;

-- :n postings, 15 events each: 1 posting_created + 14 conversation_completed. Postings interleave
-- (all step-1 events, then all step-2 events, ...): the worst case for write locality.
-- About 1% of postings (posting_id % 97 = 0) have their step-7 event invalidated.
insert into execution_events (event_timestamp, aggregate_type, aggregate_id, aggregate_version, event_type, event_data, invalidated)
select now() - interval '1 day' + (g.i * interval '1 ms'),
       'posting', p::text, s,
       case when s = 1 then 'posting_created' else 'conversation_completed' end,
       case when s = 1 then jsonb_build_object('initial_step', 1)
            else jsonb_build_object('conversation_id', 9000 + s, 'output', repeat('out ', 20) || p || '/' || s,
                                    'next_conversation_id', 9001 + s, 'next_execution_order', s + 1) end,
       (p % 97 = 0 and s = 7)
from generate_series(1, :n) p, generate_series(1, 15) s,
     lateral (select (s - 1) * :n + p as i) g
order by s, p;

-- The correct projection rows, computed set-based (same rows as the seed's rebuild_posting_state).
insert into posting_state_projection (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
select aggregate_id::int,
       coalesce((array_agg((event_data->>'next_execution_order')::int order by event_id desc) filter (where event_type='conversation_completed'))[1], 1),
       coalesce((array_agg((event_data->>'next_conversation_id')::int order by event_id desc) filter (where event_type='conversation_completed'))[1], 9144),
       'pending',
       coalesce(jsonb_object_agg(event_data->>'conversation_id', event_data->>'output') filter (where event_type='conversation_completed'), '{}'),
       coalesce(jsonb_agg(jsonb_build_object('conversation_id', event_data->>'conversation_id','timestamp', event_timestamp,'output_preview', left(event_data->>'output',100)) order by event_id) filter (where event_type='conversation_completed'), '[]'),
       now()
from execution_events
where aggregate_type='posting' and coalesce(invalidated,false)=false
group by aggregate_id;

-- The "bug": every 50th posting lost its step and outputs. compare.sql counts these rows; the
-- check in reproject.toml ("every posting has a step >= 1") would refuse them.
update posting_state_projection
   set current_step = 0, outputs = '{}'
 where posting_id % 50 = 0;

analyze execution_events;
analyze posting_state_projection;

\echo generated :n postings (15 events each) and corrupted every 50th row of posting_state_projection
