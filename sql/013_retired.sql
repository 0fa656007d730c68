-- A swap renames the `_old` table of the previous swap to `x_retired_<run>` inside its
-- transaction and drops it right after the commit. If the process dies (or the drop fails) in
-- between, the retired table stays. It used to stay registered as `old`, which made `cleanup`
-- describe it as a rollback point; it is now a kind of its own, with the run whose swap
-- retired it, so `cleanup` can say that nothing depends on it and the next swap or rollback of
-- the projection drops it.
ALTER TABLE reproject.helper_tables DROP CONSTRAINT helper_tables_kind_check;
ALTER TABLE reproject.helper_tables ADD CONSTRAINT helper_tables_kind_check
    CHECK (kind IN ('rebuild', 'old', 'rolled_back', 'retired'));
ALTER TABLE reproject.helper_tables ADD COLUMN retired_by bigint;

-- Retired tables left by earlier versions: registered as `old` under a name that is not the
-- `_old` name their run recorded. The swap that retired one is the first later swap of its
-- projection (every swap retires the `_old` table before it).
UPDATE reproject.helper_tables h SET kind = 'retired',
    retired_by = (SELECT min(r.id) FROM reproject.runs r
                  WHERE h.projection = ANY (r.projections) AND r.id > h.run_id AND r.swapped_at IS NOT NULL)
WHERE h.kind = 'old' AND h.run_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM reproject.run_tables t
    WHERE t.run_id = h.run_id AND t.table_schema = h.table_schema AND t.old_name = h.table_name);
