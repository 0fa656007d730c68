-- Prints one number: the postings whose row differs between tables :a and :b (W1 layout), or
-- that exist in only one of them. last_updated is not compared (it is now()). Same test as
-- examples/postings/compare.sql, against a stored reference instead of recomputing it.
--   psql -tA -v a=posting_state_projection -v b=bench_w1_reference -f w1-compare.sql
select count(*)
  from :"a" p
  full join :"b" r on r.posting_id = p.posting_id
 where (p.posting_id, p.current_step, p.current_conversation_id, p.current_status, p.outputs, p.conversation_history)
       is distinct from
       (r.posting_id, r.current_step, r.current_conversation_id, r.current_status, r.outputs, r.conversation_history);
