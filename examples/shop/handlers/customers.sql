-- Handlers for the customers projection (table shop_customers).
-- Body of customer_registered: customer_id, name, email. Body of customer_renamed: customer_id, name.

-- on customer_registered
INSERT INTO {{shop_customers}} (customer_id, name, email, registered_at, renamed_at, rename_count)
VALUES ((:data->>'customer_id')::int, :data->>'name', :data->>'email', :timestamp, NULL, 0);

-- on customer_renamed
UPDATE {{shop_customers}}
   SET name = :data->>'name',
       renamed_at = :timestamp,
       rename_count = rename_count + 1
 WHERE customer_id = (:data->>'customer_id')::int;
