-- The reference result for W1: the seed's own function rebuild_posting_state (from the seed's
-- Pattern 1, with its two bugs fixed: the undeclared loop variable and the count starting NULL),
-- copied VERBATIM; the only changes are its name (rebuild_posting_state_reference) and the table
-- its INSERT targets (posting_state_reference instead of posting_state_projection), so it never
-- touches the table reproject manages. It defines the semantics the handlers must reproduce.
--
-- Creates posting_state_reference and fills it with one call per posting. compare.sql includes
-- this file. Run: psql -v ON_ERROR_STOP=1 -f reference.sql
\set QUIET on
set client_min_messages = warning;

drop table if exists posting_state_reference;
create table posting_state_reference (like posting_state_projection including all);

CREATE OR REPLACE FUNCTION rebuild_posting_state_reference(p_posting_id INT)
RETURNS TABLE (rebuild_time_ms NUMERIC, events_replayed INT, final_step INT, final_conversation_id INT)
LANGUAGE plpgsql AS $$
DECLARE
    event RECORD;
    v_start_time TIMESTAMPTZ;
    v_events_count INT := 0;
    v_outputs JSONB := '{}'::jsonb;
    v_conversation_history JSONB := '[]'::jsonb;
    v_current_step INT := 1;
    v_current_conversation_id INT := 9144;
    v_current_status TEXT := 'pending';
BEGIN
    v_start_time := clock_timestamp();
    FOR event IN
        SELECT * FROM execution_events
        WHERE aggregate_type = 'posting' AND aggregate_id = p_posting_id::text
          AND COALESCE(invalidated, FALSE) = FALSE
        ORDER BY event_id ASC
    LOOP
        v_events_count := v_events_count + 1;
        CASE event.event_type
            WHEN 'conversation_completed', 'script_execution_completed' THEN
                v_outputs := v_outputs || jsonb_build_object(event.event_data->>'conversation_id', event.event_data->>'output');
                v_current_conversation_id := (event.event_data->>'next_conversation_id')::INT;
                v_current_step := (event.event_data->>'next_execution_order')::INT;
                v_conversation_history := v_conversation_history || jsonb_build_object(
                    'conversation_id', event.event_data->>'conversation_id',
                    'timestamp', event.event_timestamp,
                    'output_preview', LEFT(event.event_data->>'output', 100));
            WHEN 'posting_created' THEN
                v_current_step := COALESCE((event.event_data->>'initial_step')::INT, 1);
                v_current_status := 'pending';
        END CASE;
    END LOOP;
    INSERT INTO posting_state_reference (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
    VALUES (p_posting_id, v_current_step, v_current_conversation_id, v_current_status, v_outputs, v_conversation_history, NOW())
    ON CONFLICT (posting_id) DO UPDATE SET current_step = EXCLUDED.current_step, current_conversation_id = EXCLUDED.current_conversation_id,
        current_status = EXCLUDED.current_status, outputs = EXCLUDED.outputs, conversation_history = EXCLUDED.conversation_history, last_updated = EXCLUDED.last_updated;
    RETURN QUERY SELECT EXTRACT(EPOCH FROM (clock_timestamp() - v_start_time)) * 1000, v_events_count, v_current_step, v_current_conversation_id;
END; $$;

-- One call per posting that has events, like the seed's batch tool (one call per posting id).
-- A posting whose events are ALL invalidated would still get a default row here (step 1,
-- conversation 9144) while the handlers write none; W1 never produces such a posting.
do $$
begin
  perform rebuild_posting_state_reference(p)
     from (select distinct aggregate_id::int as p
             from execution_events
            where aggregate_type = 'posting'
            order by 1) ids;
end $$;
