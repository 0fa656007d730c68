-- Baseline (c) of scripts/bench.sh: the hand-written set-based SQL for W1 (the same rows as the
-- seed's rebuild_posting_state), one INSERT ... SELECT ... GROUP BY into bench_w1_set_based.
-- Same statement as shared/workloads/w1-set-based.sql and examples/postings/generate.sql.
\set QUIET on
set client_min_messages = warning;
drop table if exists bench_w1_set_based;
create table bench_w1_set_based (like posting_state_projection including all);

insert into bench_w1_set_based (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
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
