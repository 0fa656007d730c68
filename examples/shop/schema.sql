-- reproject example "shop": an event table with its own column names and four projection tables
-- that depend on each other. Idempotent: drops everything first.
--   psql -v ON_ERROR_STOP=1 -f schema.sql
\set QUIET on
set client_min_messages = warning;

drop table if exists shop_events, shop_customers, shop_orders, shop_order_summary, shop_customer_stats cascade;

-- The event store. Column roles (see reproject.toml): seq = position, stream_id = stream,
-- kind = type, body = data, meta = metadata, occurred_at = timestamp.
-- Streams are 'customer-<id>' and 'order-<id>'.
create table shop_events (
  seq bigserial primary key,
  stream_id text not null,
  kind text not null,
  body jsonb not null,
  meta jsonb not null default '{}',
  occurred_at timestamptz not null default now()
);
create index on shop_events (stream_id, seq);

-- projection "customers": one row per customer, with the current name
create table shop_customers (
  customer_id int primary key,
  name text not null,
  email text not null,
  registered_at timestamptz not null,
  renamed_at timestamptz,                    -- time of the last rename, null if never renamed
  rename_count int not null default 0
);

-- projection "orders": one row per order and its status ('placed', 'paid', 'cancelled')
create table shop_orders (
  order_id int primary key,
  customer_id int not null,
  amount numeric(12,2) not null,
  status text not null,
  channel text,                              -- from the event metadata: web, app, phone
  placed_at timestamptz not null,
  paid_at timestamptz,                       -- kept when a paid order is cancelled (refund)
  cancelled_at timestamptz,
  last_event text not null,                  -- type of the last event applied to this order
  last_seq bigint not null                   -- position of that event in shop_events
);
create index on shop_orders (customer_id);

-- projection "order_summary": orders with the customer's current name (reads shop_customers)
create table shop_order_summary (
  order_id int primary key,
  customer_id int not null,
  customer_name text not null,
  amount numeric(12,2) not null,
  status text not null
);
create index on shop_order_summary (customer_id);

-- projection "customer_stats": per customer, orders placed / paid / cancelled and the amount
-- spent (paid orders not cancelled); reads shop_orders
create table shop_customer_stats (
  customer_id int primary key,
  orders_placed int not null default 0,
  orders_paid int not null default 0,        -- orders ever paid, including later refunds
  orders_cancelled int not null default 0,
  total_spent numeric(12,2) not null default 0,
  last_order_at timestamptz
);
