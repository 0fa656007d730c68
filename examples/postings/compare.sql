-- Compares the live posting_state_projection with the seed function's result.
-- Recomputes posting_state_reference first (reference.sql), then prints, as its LAST line, one
-- row with one column `mismatches`: the number of postings whose row differs between the two
-- tables or exists in only one of them. last_updated is not compared (it is now()).
--
--   psql -v ON_ERROR_STOP=1 -tA -f compare.sql | tail -1      -> 0 after a correct rebuild
--
-- Right after generate.sql it reports the corrupted rows (every 50th posting: n / 50).
-- conversation_history holds timestamps rendered as JSON text in the session's TimeZone, so
-- the rebuild and this script must run with the same TimeZone setting.
\ir reference.sql

select count(*) as mismatches
  from posting_state_projection p
  full join posting_state_reference r on r.posting_id = p.posting_id
 where (p.posting_id, p.current_step, p.current_conversation_id, p.current_status, p.outputs, p.conversation_history)
       is distinct from
       (r.posting_id, r.current_step, r.current_conversation_id, r.current_status, r.outputs, r.conversation_history);
