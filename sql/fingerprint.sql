-- The catalog fingerprint of one table ($1: the table as regclass text), by name, never by
-- OID: everything an application can observe about a table except its rows. Two tables with
-- equal fingerprints are interchangeable for every reader, writer, view and replica.
-- Run by src/db/catalog/fingerprint.rs, read into the types of src/model/fingerprint.rs (whose
-- fields are these keys); kept as SQL so it can be read and run by hand.
WITH t AS (
    SELECT c.* FROM pg_class c WHERE c.oid = to_regclass($1)
), acl AS (
    SELECT a.privilege_type,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
           a.is_grantable
    FROM t, aclexplode(coalesce(t.relacl, acldefault('r', t.relowner))) a
)
SELECT jsonb_build_object(
  'owner', pg_get_userbyid(t.relowner),
  'persistence', t.relpersistence,
  'tablespace', (SELECT spcname FROM pg_tablespace WHERE oid = t.reltablespace),
  'reloptions', (SELECT coalesce(jsonb_agg(o ORDER BY o), '[]') FROM unnest(t.reloptions) o),
  'toast_reloptions', (SELECT coalesce(jsonb_agg(o ORDER BY o), '[]')
                       FROM pg_class tc, unnest(tc.reloptions) o WHERE tc.oid = t.reltoastrelid),
  'comment', obj_description(t.oid, 'pg_class'),
  'row_security', t.relrowsecurity,
  'force_row_security', t.relforcerowsecurity,
  'replica_identity', t.relreplident,
  -- A partitioned table: its key and its partitions' bounds (each partition is proven on its
  -- own, by name, when it is exchanged); a partition: its bound.
  'partition_key', pg_get_partkeydef(t.oid),
  'partitions', (SELECT coalesce(jsonb_agg(pg_get_expr(c.relpartbound, c.oid) ORDER BY pg_get_expr(c.relpartbound, c.oid)), '[]')
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = t.oid AND c.relispartition),
  'partition_bound', CASE WHEN t.relispartition THEN pg_get_expr(t.relpartbound, t.oid) END,
  'acl', (SELECT coalesce(jsonb_agg(jsonb_build_object('grantee', grantee, 'privilege', privilege_type,
                                                      'grantable', is_grantable)
                                    ORDER BY grantee, privilege_type), '[]') FROM acl),
  'columns', (SELECT jsonb_agg(jsonb_build_object(
                  'name', a.attname,
                  'type', format_type(a.atttypid, a.atttypmod),
                  'not_null', a.attnotnull,
                  'default', pg_get_expr(d.adbin, d.adrelid),
                  'identity', a.attidentity,
                  'generated', a.attgenerated,
                  'collation', (SELECT collname FROM pg_collation WHERE oid = a.attcollation),
                  'storage', a.attstorage,
                  'statistics', a.attstattarget,
                  'comment', col_description(t.oid, a.attnum),
                  'acl', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                      'grantee', CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
                                      'privilege', x.privilege_type, 'grantable', x.is_grantable)
                                      ORDER BY x.grantee, x.privilege_type), '[]')
                          FROM aclexplode(a.attacl) x)
              ) ORDER BY a.attnum)
              FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped),
  'constraints', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                      'name', con.conname,
                      'type', con.contype,
                      -- A foreign key re-created by a swap is NOT VALID until validated after
                      -- the commit; its meaning is the same.
                      'definition', replace(pg_get_constraintdef(con.oid), ' NOT VALID', ''),
                      'comment', obj_description(con.oid, 'pg_constraint')
                  ) ORDER BY con.conname), '[]')
                  FROM pg_constraint con WHERE con.conrelid = t.oid),
  'indexes', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                  'name', ic.relname,
                  'definition', pg_get_indexdef(i.indexrelid),
                  'replica_identity', i.indisreplident,
                  'clustered', i.indisclustered,
                  'comment', obj_description(i.indexrelid, 'pg_class')
              ) ORDER BY ic.relname), '[]')
              FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = t.oid),
  'statistics', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'name', s.stxname, 'definition', pg_get_statisticsobjdef(s.oid)) ORDER BY s.stxname), '[]')
                 FROM pg_statistic_ext s WHERE s.stxrelid = t.oid),
  'policies', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'name', p.polname, 'command', p.polcmd, 'permissive', p.polpermissive,
                   'roles', (SELECT jsonb_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END
                                              ORDER BY CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END)
                             FROM unnest(p.polroles) r),
                   'using', pg_get_expr(p.polqual, p.polrelid),
                   'check', pg_get_expr(p.polwithcheck, p.polrelid)
               ) ORDER BY p.polname), '[]')
               FROM pg_policy p WHERE p.polrelid = t.oid),
  'triggers', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'name', tg.tgname, 'definition', pg_get_triggerdef(tg.oid), 'enabled', tg.tgenabled
               ) ORDER BY tg.tgname), '[]')
               -- A partition's clones of its parent's triggers belong to the parent's.
               FROM pg_trigger tg WHERE tg.tgrelid = t.oid AND NOT tg.tgisinternal AND tg.tgparentid = 0),
  'publications', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'publication', pub.pubname,
                       'columns', (SELECT jsonb_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                                   WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs)),
                       'where', pg_get_expr(pr.prqual, pr.prrelid)
                   ) ORDER BY pub.pubname), '[]')
                   FROM pg_publication_rel pr JOIN pg_publication pub ON pub.oid = pr.prpubid
                   WHERE pr.prrelid = t.oid),
  'sequences', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'name', s.relname, 'column', a.attname, 'kind', d.deptype
                ) ORDER BY s.relname), '[]')
                FROM pg_depend d
                JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                  AND d.refobjid = t.oid AND d.deptype IN ('a', 'i')),
  'referenced_by', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'table', con.conrelid::regclass::text, 'name', con.conname,
                        'definition', replace(pg_get_constraintdef(con.oid), ' NOT VALID', '')
                    ) ORDER BY con.conrelid::regclass::text, con.conname), '[]')
                    FROM pg_constraint con WHERE con.confrelid = t.oid AND con.conrelid <> t.oid),
  'views', (SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object(
                'name', v.oid::regclass::text, 'kind', v.relkind, 'options', v.reloptions,
                'definition', pg_get_viewdef(v.oid), 'populated', v.relispopulated)), '[]')
            FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = t.oid AND v.oid <> t.oid)
)
FROM t
