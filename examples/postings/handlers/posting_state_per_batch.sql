-- Set-based handlers for the posting_state projection (W1): the same rows as the per-event
-- handlers in posting_state.sql (and the seed's rebuild_posting_state), written once per
-- posting per batch instead of once per event. See README "Set-based handlers".
--
-- :events is the batch: the events after the last checkpoint up to the batch's end that pass
-- the filter, with the columns position, stream, type, data, metadata and timestamp. The
-- statement must give the same result whatever the batch boundaries are, so it merges each
-- posting's events of this batch (in position order) into the row the earlier batches left:
--   * step: from the posting's last event (initial_step for posting_created, else
--     next_execution_order);
--   * conversation: from its last conversation_completed / script_execution_completed event,
--     else unchanged (9144 for a new posting);
--   * outputs and history: the earlier ones, then this batch's in position order.

-- per batch
INSERT INTO {{posting_state_projection}} AS p
       (posting_id, current_step, current_conversation_id, current_status, outputs, conversation_history, last_updated)
SELECT b.posting_id,
       b.step,
       coalesce(b.conversation_id, cur.current_conversation_id, 9144),
       'pending',
       coalesce(cur.outputs, '{}') || b.outputs,
       coalesce(cur.conversation_history, '[]') || b.history,
       now()
  FROM (SELECT e.stream::int AS posting_id,
               (array_agg(CASE WHEN e.type = 'posting_created'
                               THEN coalesce((e.data->>'initial_step')::int, 1)
                               ELSE (e.data->>'next_execution_order')::int END
                          ORDER BY e.position DESC))[1] AS step,
               (array_agg((e.data->>'next_conversation_id')::int ORDER BY e.position DESC)
                  FILTER (WHERE e.type <> 'posting_created'))[1] AS conversation_id,
               coalesce(jsonb_object_agg(e.data->>'conversation_id', e.data->>'output' ORDER BY e.position)
                  FILTER (WHERE e.type <> 'posting_created'), '{}') AS outputs,
               coalesce(jsonb_agg(jsonb_build_object('conversation_id', e.data->>'conversation_id',
                                                     'timestamp', e.timestamp,
                                                     'output_preview', left(e.data->>'output', 100))
                                  ORDER BY e.position)
                  FILTER (WHERE e.type <> 'posting_created'), '[]') AS history
          FROM :events AS e
         WHERE e.type IN ('posting_created', 'conversation_completed', 'script_execution_completed')
         GROUP BY e.stream) AS b
  LEFT JOIN {{posting_state_projection}} AS cur ON cur.posting_id = b.posting_id
ON CONFLICT (posting_id) DO UPDATE
   SET current_step = EXCLUDED.current_step,
       current_conversation_id = EXCLUDED.current_conversation_id,
       current_status = EXCLUDED.current_status,
       outputs = EXCLUDED.outputs,
       conversation_history = EXCLUDED.conversation_history,
       last_updated = EXCLUDED.last_updated;
