-- reproject example "shop": writes the events of :n customers (about 5 orders each) into
-- shop_events in a realistic, interleaved order, then fills the four LIVE projection tables with
-- correct rows computed set-based from the events (what the handlers must reproduce).
--
--   psql -v ON_ERROR_STOP=1 -f schema.sql
--   psql -v ON_ERROR_STOP=1 -v n=1000 -f generate.sql      (n defaults to 1000)
--
-- Deterministic: the same :n always gives the same events and rows. Starts by emptying all
-- tables, so it can be run again without schema.sql.
--
-- The story of each customer c (registered 7 minutes after customer c - 1):
--   * customer_registered; every 3rd customer also logs in (customer_logged_in: no projection
--     handles it, so every projection skips it)
--   * 3 to 7 orders, 5 hours apart: order_placed, then, by order id,
--       id % 10 = 3: order_cancelled 45 minutes later, never paid
--       id % 10 = 7: left unpaid
--       otherwise:   order_paid 10 minutes later; id % 20 = 9 is also cancelled (refunded) 2 days later
--   * every 7th customer is renamed 7 hours after registering (some orders before, most after),
--     every 21st again 3 days after registering
\set QUIET on
set client_min_messages = warning;
\if :{?n}
\else
  \set n 1000
\endif

truncate shop_events restart identity;
truncate shop_customers, shop_orders, shop_order_summary, shop_customer_stats;

create temp table gen_customers as
select c as customer_id,
       (array['Ada','Bo','Chen','Dana','Emil','Fatou','Goran','Hana','Ines','Jonas','Kemal','Lea'])[1 + c % 12] as first_name,
       (array['Smith','Okafor','Novak','Tanaka','Silva','Berg','Haddad','Kowalski','Moreau'])[1 + (c / 12) % 9] as last_name,
       timestamptz '2024-03-01 08:00:00+00' + c * interval '7 minutes' as registered_at,
       3 + c % 5 as n_orders
  from generate_series(1, :n) c;

create temp table gen_orders as
select row_number() over (order by placed_at, customer_id, j)::int as order_id, *
  from (select c.customer_id, j,
               c.registered_at + j * interval '5 hours' + (c.customer_id * 13 % 240) * interval '1 minute' as placed_at,
               round((c.customer_id * 37 + j * 101) % 500 + 5 + ((c.customer_id + j) % 100) / 100.0, 2) as amount,
               (array['web','app','phone'])[1 + (c.customer_id + j) % 3] as channel,
               1 + (c.customer_id + j) % 4 as items
          from gen_customers c, generate_series(1, c.n_orders) j) o;

-- kind_rank only breaks ties between events with the same time
insert into shop_events (stream_id, kind, body, meta, occurred_at)
select stream_id, kind, body, meta, at
  from (
    select 'customer-' || customer_id as stream_id, 'customer_registered' as kind,
           jsonb_build_object('customer_id', customer_id, 'name', first_name || ' ' || last_name,
                              'email', lower(first_name) || '.' || customer_id || '@example.com') as body,
           jsonb_build_object('source', 'signup-form') as meta,
           registered_at as at, 1 as kind_rank, customer_id as tie
      from gen_customers
    union all
    select 'customer-' || customer_id, 'customer_logged_in', jsonb_build_object('customer_id', customer_id),
           jsonb_build_object('source', 'web'), registered_at + interval '2 minutes', 2, customer_id
      from gen_customers where customer_id % 3 = 0
    union all
    select 'customer-' || customer_id, 'customer_renamed',
           jsonb_build_object('customer_id', customer_id, 'name', first_name || ' ' || last_name || '-Lind'),
           jsonb_build_object('source', 'support', 'agent', 'agent-' || customer_id % 4),
           registered_at + interval '7 hours', 3, customer_id
      from gen_customers where customer_id % 7 = 0
    union all
    select 'customer-' || customer_id, 'customer_renamed',
           jsonb_build_object('customer_id', customer_id, 'name', first_name || ' ' || 'Lind'),
           jsonb_build_object('source', 'self-service'),
           registered_at + interval '3 days', 3, customer_id
      from gen_customers where customer_id % 21 = 0
    union all
    select 'order-' || order_id, 'order_placed',
           jsonb_build_object('order_id', order_id, 'customer_id', customer_id, 'amount', amount, 'items', items),
           jsonb_build_object('source', 'checkout', 'channel', channel, 'correlation_id', 'cart-' || order_id),
           placed_at, 4, order_id
      from gen_orders
    union all
    select 'order-' || order_id, 'order_paid',
           jsonb_build_object('order_id', order_id, 'method', (array['card','invoice','paypal'])[1 + order_id % 3]),
           jsonb_build_object('source', 'payments', 'correlation_id', 'cart-' || order_id),
           placed_at + interval '10 minutes', 5, order_id
      from gen_orders where order_id % 10 not in (3, 7)
    union all
    select 'order-' || order_id, 'order_cancelled',
           jsonb_build_object('order_id', order_id, 'reason', 'customer request'),
           jsonb_build_object('source', 'support', 'correlation_id', 'cart-' || order_id),
           placed_at + interval '45 minutes', 6, order_id
      from gen_orders where order_id % 10 = 3
    union all
    select 'order-' || order_id, 'order_cancelled',
           jsonb_build_object('order_id', order_id, 'reason', 'refund'),
           jsonb_build_object('source', 'support', 'correlation_id', 'cart-' || order_id),
           placed_at + interval '2 days', 6, order_id
      from gen_orders where order_id % 20 = 9
  ) e
 order by at, kind_rank, tie;

-- The live projection tables, computed set-based from the events.
-- customers: the registration, overridden by the last rename
insert into shop_customers (customer_id, name, email, registered_at, renamed_at, rename_count)
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

-- orders: the placement, plus its payment and cancellation (at most one of each per order)
insert into shop_orders (order_id, customer_id, amount, status, channel, placed_at, paid_at, cancelled_at, last_event, last_seq)
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

-- order_summary: every order with its customer's current name
insert into shop_order_summary (order_id, customer_id, customer_name, amount, status)
select o.order_id, o.customer_id, c.name, o.amount, o.status
  from shop_orders o join shop_customers c on c.customer_id = o.customer_id;

-- customer_stats: every customer, with or without orders
insert into shop_customer_stats (customer_id, orders_placed, orders_paid, orders_cancelled, total_spent, last_order_at)
select c.customer_id, count(o.order_id), count(o.paid_at), count(o.cancelled_at),
       coalesce(sum(o.amount) filter (where o.paid_at is not null and o.cancelled_at is null), 0),
       max(o.placed_at)
  from shop_customers c left join shop_orders o on o.customer_id = c.customer_id
 group by c.customer_id;

analyze shop_events, shop_customers, shop_orders, shop_order_summary, shop_customer_stats;

\echo generated :n customers and their orders into shop_events, and filled the four shop_ projection tables
