-- Prints one number: the rows that differ between the four live shop projection tables and the
-- bench_shop_* tables of shop-set-based.sql (rows in one table but not the other, both ways,
-- counting duplicates), summed over the four tables.
select (select count(*) from ((table shop_customers except all table bench_shop_customers)
                              union all (table bench_shop_customers except all table shop_customers)) d)
     + (select count(*) from ((table shop_orders except all table bench_shop_orders)
                              union all (table bench_shop_orders except all table shop_orders)) d)
     + (select count(*) from ((table shop_order_summary except all table bench_shop_order_summary)
                              union all (table bench_shop_order_summary except all table shop_order_summary)) d)
     + (select count(*) from ((table shop_customer_stats except all table bench_shop_customer_stats)
                              union all (table bench_shop_customer_stats except all table shop_customer_stats)) d);
