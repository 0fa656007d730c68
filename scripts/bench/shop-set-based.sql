-- The set-based baseline of scripts/bench.sh for the shop workload: the four projection tables
-- computed from shop_events with hand-written SQL, the same statements examples/shop/generate.sql
-- uses to fill the live tables, written into bench_shop_* tables. They are also the expected
-- rows reproject's rebuild is checked against (shop-compare.sql).
\set QUIET on
set client_min_messages = warning;
drop table if exists bench_shop_customers, bench_shop_orders, bench_shop_order_summary, bench_shop_customer_stats;
create table bench_shop_customers (like shop_customers including all);
create table bench_shop_orders (like shop_orders including all);
create table bench_shop_order_summary (like shop_order_summary including all);
create table bench_shop_customer_stats (like shop_customer_stats including all);

insert into bench_shop_customers (customer_id, name, email, registered_at, renamed_at, rename_count)
select (r.body->>'customer_id')::int, coalesce(n.name, r.body->>'name'), r.body->>'email',
       r.occurred_at, n.at, coalesce(n.renames, 0)
  from shop_events r
  left join (select stream_id,
                    (array_agg(body->>'name' order by seq desc))[1] as name,
                    (array_agg(occurred_at order by seq desc))[1] as at,
                    count(*)::int as renames
               from shop_events where kind = 'customer_renamed'
              group by stream_id) n on n.stream_id = r.stream_id
 where r.kind = 'customer_registered';

insert into bench_shop_orders (order_id, customer_id, amount, status, channel, placed_at, paid_at, cancelled_at, last_event, last_seq)
select (p.body->>'order_id')::int, (p.body->>'customer_id')::int, (p.body->>'amount')::numeric,
       (array_agg(case e.kind when 'order_placed' then 'placed' when 'order_paid' then 'paid' else 'cancelled' end order by e.seq desc))[1],
       p.meta->>'channel', p.occurred_at,
       max(e.occurred_at) filter (where e.kind = 'order_paid'),
       max(e.occurred_at) filter (where e.kind = 'order_cancelled'),
       (array_agg(e.kind order by e.seq desc))[1],
       max(e.seq)
  from shop_events p
  join shop_events e on e.stream_id = p.stream_id and e.kind in ('order_placed', 'order_paid', 'order_cancelled')
 where p.kind = 'order_placed'
 group by p.seq;

insert into bench_shop_order_summary (order_id, customer_id, customer_name, amount, status)
select o.order_id, o.customer_id, c.name, o.amount, o.status
  from bench_shop_orders o join bench_shop_customers c on c.customer_id = o.customer_id;

insert into bench_shop_customer_stats (customer_id, orders_placed, orders_paid, orders_cancelled, total_spent, last_order_at)
select c.customer_id, count(o.order_id), count(o.paid_at), count(o.cancelled_at),
       coalesce(sum(o.amount) filter (where o.paid_at is not null and o.cancelled_at is null), 0),
       max(o.placed_at)
  from bench_shop_customers c left join bench_shop_orders o on o.customer_id = c.customer_id
 group by c.customer_id;
