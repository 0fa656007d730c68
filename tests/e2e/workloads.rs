//! The example workloads, rebuilt end to end.

use crate::harness::{differing_rows, example, reproject, TestDb};

/// W1 with 2,000 postings: the rebuilt and swapped projection equals, row for row, what the
/// seed's `rebuild_posting_state` produces (outputs, steps, conversation ids, status, history).
#[tokio::test(flavor = "multi_thread")]
async fn w1_rebuild_equals_the_seed_reference_function() {
    let db = TestDb::new().await;
    db.psql(&example("postings/schema.sql"), &[]).await;
    db.psql(&example("postings/generate.sql"), &[("n", "2000")])
        .await;
    let config = example("postings/reproject.toml");
    // The live table starts corrupted (every 50th posting), so the comparison can fail.
    let before = db.psql(&example("postings/compare.sql"), &[]).await;
    assert_eq!(before.trim().lines().last(), Some("40"));

    let out = reproject(&db, &config, &["rebuild", "--yes", "--reason", "repair W1"]).await;
    out.ok().stdout_has("run 1: swapped");
    let after = db.psql(&example("postings/compare.sql"), &[]).await;
    assert_eq!(
        after.trim().lines().last(),
        Some("0"),
        "rows differ from the reference function"
    );

    // The history records exactly what happened.
    let history = reproject(&db, &config, &["history", "--json"]).await;
    let runs = history.ok().json()["runs"].clone();
    let run = &runs[0];
    assert_eq!(run["status"], "swapped");
    assert_eq!(run["reason"], "repair W1");
    assert_eq!(run["initiated_by"], "tester");
    assert_eq!(
        run["events_applied"], 29_980,
        "30,000 events less 20 invalidated"
    );
    assert_eq!(run["target_position"], 30_000);
    assert_eq!(run["swap_position"], 30_000);
    assert_eq!(run["rows_before"]["posting_state_projection"], 2000);
    assert_eq!(run["rows_after"]["posting_state_projection"], 2000);
    let checks = run["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    assert!(run["lock_wait_ms"].is_i64() && run["lock_hold_ms"].is_i64());
    assert!(run["finished_at"].is_string());
    db.drop().await;
}

/// The shop example: waves and order, and a rebuild that reproduces the (correct) live tables.
#[tokio::test(flavor = "multi_thread")]
async fn shop_plan_shows_waves_and_rebuild_reproduces_live_tables() {
    let db = TestDb::new().await;
    db.psql(&example("shop/schema.sql"), &[]).await;
    db.psql(&example("shop/generate.sql"), &[("n", "300")])
        .await;
    let config = example("shop/reproject.toml");

    let plan = reproject(&db, &config, &["plan", "--json"]).await;
    let plan = plan.ok().json();
    assert_eq!(
        plan["waves"],
        serde_json::json!([["customers", "orders"], ["order_summary", "customer_stats"]])
    );
    assert_eq!(
        plan["order"],
        serde_json::json!(["customers", "orders", "order_summary", "customer_stats"])
    );
    let summary = plan["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "order_summary")
        .unwrap();
    assert_eq!(
        summary["depends_on"],
        serde_json::json!(["customers"]),
        "inferred from {{shop_customers}}"
    );
    assert!(plan["events_to_replay"].as_i64().unwrap() > 1000);

    reproject(&db, &config, &["rebuild", "--yes"]).await.ok();
    for (table, cols) in [
        ("shop_customers", "*"),
        ("shop_orders", "*"),
        ("shop_order_summary", "*"),
        ("shop_customer_stats", "*"),
    ] {
        assert_eq!(
            differing_rows(&db, table, &format!("{table}_old"), cols).await,
            0,
            "{table} differs from the live table it replaced"
        );
    }
    db.drop().await;
}

/// The library example (examples/library.rs) runs against a real database: plan, then
/// rebuild and swap, recorded like a CLI run.
#[tokio::test(flavor = "multi_thread")]
async fn the_library_example_rebuilds_and_swaps() {
    let db = crate::tally::db(120).await;
    db.exec("UPDATE tally SET total = 0").await;
    let p = crate::tally::project();
    // scripts/test.sh builds the examples (`cargo build --examples`) next to the binary.
    let bin = std::path::Path::new(crate::harness::binary());
    let example = bin.parent().unwrap().join("examples").join("library");
    assert!(
        example.exists(),
        "{} is missing: run `cargo build --examples` (scripts/test.sh does)",
        example.display()
    );
    let out = tokio::process::Command::new(&example)
        .arg(p.config())
        .arg(&db.url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("order: tally"), "{stdout}");
    assert!(stdout.contains("events to replay: 120"), "{stdout}");
    assert!(
        stdout.contains("run 1: swapped (120 events applied, last progress report 120)"),
        "{stdout}"
    );
    assert!(stderr.contains("step: running health checks"), "{stderr}");
    assert_eq!(crate::tally::expected_differences(&db, "tally").await, 0);
    db.assert_text(
        "SELECT initiated_by FROM reproject.runs",
        Some("library-example"),
    )
    .await;
    db.drop().await;
}
