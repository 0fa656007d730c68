-- Handlers for the order_summary projection (table shop_order_summary): each order with the
-- customer's current name. It READS shop_customers, so reproject infers that order_summary
-- depends on the customers projection, whose handlers therefore run first for every event.
-- It never writes shop_customers.

-- on order_placed
INSERT INTO {{shop_order_summary}} (order_id, customer_id, customer_name, amount, status)
SELECT (:data->>'order_id')::int, c.customer_id, c.name, (:data->>'amount')::numeric, 'placed'
  FROM {{shop_customers}} c
 WHERE c.customer_id = (:data->>'customer_id')::int;

-- on order_paid
UPDATE {{shop_order_summary}} SET status = 'paid' WHERE order_id = (:data->>'order_id')::int;

-- on order_cancelled
UPDATE {{shop_order_summary}} SET status = 'cancelled' WHERE order_id = (:data->>'order_id')::int;

-- on customer_renamed
-- shop_customers already holds the new name here (customers runs before order_summary)
UPDATE {{shop_order_summary}} s
   SET customer_name = c.name
  FROM {{shop_customers}} c
 WHERE c.customer_id = (:data->>'customer_id')::int
   AND s.customer_id = c.customer_id;
