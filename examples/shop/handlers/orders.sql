-- Handlers for the orders projection (table shop_orders).
-- Body of order_placed has order_id, customer_id, amount and items, the bodies of order_paid and
-- order_cancelled have the order_id only (plus method or reason). The sales channel comes from
-- the event metadata. last_event and last_seq record the type and position of the last event
-- applied to the order.

-- on order_placed
INSERT INTO {{shop_orders}} (order_id, customer_id, amount, status, channel, placed_at, paid_at, cancelled_at, last_event, last_seq)
VALUES ((:data->>'order_id')::int, (:data->>'customer_id')::int, (:data->>'amount')::numeric,
        'placed', :metadata->>'channel', :timestamp, NULL, NULL, :type, :position);

-- on order_paid
UPDATE {{shop_orders}}
   SET status = 'paid', paid_at = :timestamp, last_event = :type, last_seq = :position
 WHERE order_id = (:data->>'order_id')::int;

-- on order_cancelled
UPDATE {{shop_orders}}
   SET status = 'cancelled', cancelled_at = :timestamp, last_event = :type, last_seq = :position
 WHERE order_id = (:data->>'order_id')::int;
