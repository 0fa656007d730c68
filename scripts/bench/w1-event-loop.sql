-- The per-event PL/pgSQL baseline of scripts/bench.sh: one loop in the server over the W1
-- events in order, one UPSERT per event into an UNLOGGED table (as measured in the performance
-- notes). The statements are the handlers of examples/postings/handlers/posting_state.sql with
-- :stream, :data and :timestamp replaced by the loop's record: what a user writes first,
-- without leaving the server.
\set QUIET on
set client_min_messages = warning;
drop table if exists bench_w1_event_loop;
create unlogged table bench_w1_event_loop (like posting_state_projection including all);

do $$
declare
    ev record;
begin
    for ev in
        select aggregate_id, event_type, event_data, event_timestamp
          from execution_events
         where coalesce(invalidated, false) = false and aggregate_type = 'posting'
         order by event_id
    loop
        if ev.event_type = 'posting_created' then
            insert into bench_w1_event_loop as p
                   (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
            values (ev.aggregate_id::int, coalesce((ev.event_data->>'initial_step')::int, 1), 9144, 'pending', '{}', '[]', now())
            on conflict (posting_id) do update
               set current_step = excluded.current_step,
                   current_status = 'pending',
                   last_updated = now();
        elsif ev.event_type in ('conversation_completed', 'script_execution_completed') then
            insert into bench_w1_event_loop as p
                   (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
            values (ev.aggregate_id::int,
                    (ev.event_data->>'next_execution_order')::int,
                    (ev.event_data->>'next_conversation_id')::int,
                    'pending',
                    jsonb_build_object(ev.event_data->>'conversation_id', ev.event_data->>'output'),
                    jsonb_build_array(jsonb_build_object('conversation_id', ev.event_data->>'conversation_id',
                                                         'timestamp', ev.event_timestamp,
                                                         'output_preview', left(ev.event_data->>'output', 100))),
                    now())
            on conflict (posting_id) do update
               set outputs = p.outputs || excluded.outputs,
                   current_conversation_id = excluded.current_conversation_id,
                   current_step = excluded.current_step,
                   conversation_history = p.conversation_history || excluded.conversation_history,
                   last_updated = now();
        end if;
    end loop;
end $$;
