-- Handlers for the customer_stats projection (table shop_customer_stats). order_paid and
-- order_cancelled carry only the order id, so the amount and the customer come from
-- shop_orders: reproject.toml declares depends_on = ["orders"] (the reference below would
-- infer it too), so the orders handlers have already applied the same event.

-- on customer_registered
INSERT INTO {{shop_customer_stats}} (customer_id) VALUES ((:data->>'customer_id')::int)
ON CONFLICT (customer_id) DO NOTHING;

-- on order_placed
INSERT INTO {{shop_customer_stats}} AS s (customer_id, orders_placed, last_order_at)
VALUES ((:data->>'customer_id')::int, 1, :timestamp)
ON CONFLICT (customer_id) DO UPDATE
   SET orders_placed = s.orders_placed + 1,
       last_order_at = greatest(s.last_order_at, EXCLUDED.last_order_at);

-- on order_paid
UPDATE {{shop_customer_stats}} s
   SET orders_paid = s.orders_paid + 1,
       total_spent = s.total_spent + o.amount
  FROM {{shop_orders}} o
 WHERE o.order_id = (:data->>'order_id')::int
   AND s.customer_id = o.customer_id;

-- on order_cancelled
-- a cancelled paid order is refunded: its amount leaves total_spent
UPDATE {{shop_customer_stats}} s
   SET orders_cancelled = s.orders_cancelled + 1,
       total_spent = s.total_spent - CASE WHEN o.paid_at IS NOT NULL THEN o.amount ELSE 0 END
  FROM {{shop_orders}} o
 WHERE o.order_id = (:data->>'order_id')::int
   AND s.customer_id = o.customer_id;
