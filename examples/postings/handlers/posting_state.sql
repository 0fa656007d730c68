-- Handlers for the posting_state projection (W1). They give exactly the rows of the seed's
-- rebuild_posting_state function (see reference.sql), one event at a time:
--   * a posting starts at step 1 (or initial_step), conversation 9144, status 'pending',
--     no outputs, empty history
--   * posting_created sets the step from initial_step and the status back to 'pending'
--   * conversation_completed and script_execution_completed add the output under its
--     conversation id, move step and conversation on, and append a history entry
-- Any other event type is skipped. Invalidated events never reach these handlers (the filter in
-- reproject.toml drops them).

-- on posting_created
INSERT INTO {{posting_state_projection}} AS p
       (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
VALUES (:stream::int, coalesce((:data->>'initial_step')::int, 1), 9144, 'pending', '{}', '[]', now())
ON CONFLICT (posting_id) DO UPDATE
   SET current_step = EXCLUDED.current_step,
       current_status = 'pending',
       last_updated = now();

-- on conversation_completed, script_execution_completed
INSERT INTO {{posting_state_projection}} AS p
       (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
VALUES (:stream::int,
        (:data->>'next_execution_order')::int,
        (:data->>'next_conversation_id')::int,
        'pending',
        jsonb_build_object(:data->>'conversation_id', :data->>'output'),
        jsonb_build_array(jsonb_build_object('conversation_id', :data->>'conversation_id',
                                             'timestamp', :timestamp::timestamptz,
                                             'output_preview', left(:data->>'output', 100))),
        now())
ON CONFLICT (posting_id) DO UPDATE
   SET outputs = p.outputs || EXCLUDED.outputs,
       current_conversation_id = EXCLUDED.current_conversation_id,
       current_step = EXCLUDED.current_step,
       conversation_history = p.conversation_history || EXCLUDED.conversation_history,
       last_updated = now();
