//! Poison events in `reproject run` are parked, not crash-looped: the group that failed on an
//! event waits just before it (recorded in `reproject.parked_events`) while the runner serves
//! the others; `reproject skip` and `reproject retry` decide, and the runner acts on the
//! decision exactly once. A restarted runner waits on the parked event without trying it.

use crate::harness::TestDb;
use crate::live::{three_projections, wait_for, CAUGHT_UP};
use crate::metrics::{get, sample, wait_for_sample};
use crate::pgserver::free_port;
use crate::tally;

/// `tally`, `big` (reads `tally`) and `kinds` kept live from position 100, then 100 new events
/// of which 150's amount is not a number: `tally`'s handler fails on it (SQLSTATE 22P02).
async fn poisoned() -> (TestDb, crate::harness::Project) {
    let db = tally::db(100).await;
    let p = three_projections(&db, "").await;
    p.reproject(&db, "run --once --from-position head")
        .await
        .ok();
    tally::append(&db, 100).await;
    db.exec("UPDATE events SET data = '{\"amount\": \"forty-two\"}' WHERE id = 150")
        .await;
    (db, p)
}

fn checkpoint(name: &str) -> String {
    format!("SELECT position FROM reproject.live_checkpoints WHERE projection = '{name}'")
}

/// A running runner parks the poison event: it stays up, `kinds` keeps going, `/health` and
/// `/metrics` say `tally, big` are parked, `parked` lists the event; `skip` refuses what is not
/// parked, and once decided the runner applies the rest without that event, exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_event_is_parked_then_skipped_while_the_runner_runs() {
    let (db, p) = poisoned().await;
    let port = free_port();
    let runner = p.spawn(
        &db,
        format!(
            "run --metrics-addr 127.0.0.1:{port} --batch-size 30 --status-every 1s --max-poll-interval 200ms"
        )
        .as_str(),
    );
    let body = wait_for_sample(port, "reproject_parked_events{projection=\"tally\"}", 1.0).await;
    assert_eq!(
        sample(&body, "reproject_parked_events{projection=\"big\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "reproject_parked_events{projection=\"kinds\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "reproject_projection_up{projection=\"tally\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "reproject_checkpoint_position{projection=\"tally\"}"),
        Some(149.0),
        "the events before the poison one are committed"
    );
    wait_for_sample(
        port,
        "reproject_events_applied_total{projection=\"kinds\"}",
        100.0,
    )
    .await;
    let (status, health) = get(port, "/health").await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health.contains("parked: tally, big: event at position 150 (type `added`, stream `s0`)"),
        "{health}"
    );

    let list = p.reproject(&db, "parked --json").await.ok().json();
    let events = list["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{list}");
    let e = &events[0];
    assert_eq!(e["projections"], serde_json::json!(["tally", "big"]));
    assert_eq!(e["position"], 150);
    assert_eq!(e["stream"], "s0");
    assert_eq!(e["event_type"], "added");
    assert_eq!(e["sqlstate"], "22P02");
    assert_eq!(e["times_seen"], 1);
    assert!(e["decision"].is_null(), "{e}");
    assert!(e["error"].as_str().unwrap().contains("forty-two"), "{e}");
    p.reproject(&db, "parked")
        .await
        .ok()
        .stdout_has("150 [pending] tally, big")
        .stdout_has("reproject skip tally 150");

    // Refusals: nothing is decided.
    p.reproject(&db, "skip nosuch 150 --reason x")
        .await
        .code(2)
        .stderr_has("projection `nosuch` is not in");
    p.reproject(&db, "skip tally 151 --reason x")
        .await
        .code(2)
        .stderr_has("no event at position 151 is parked for `tally`")
        .stderr_has("parked for `tally`: position(s) 150");
    p.reproject(&db, "skip kinds 150 --reason x")
        .await
        .code(2)
        .stderr_has("no event at position 150 is parked for `kinds`");
    p.reproject(&db, "skip tally 150")
        .await
        .code(2)
        .stderr_has("--reason");
    db.assert_int(
        "SELECT count(*) FROM reproject.parked_events WHERE decision IS NOT NULL",
        0,
    )
    .await;

    // The other group goes on while this one waits.
    tally::append(&db, 20).await;
    wait_for(&db, &format!("SELECT ({}) = 220", checkpoint("kinds")), 30).await;
    assert_eq!(db.int(&checkpoint("tally")).await, 149, "still waiting");
    // The alive line (every 1 s here) must have come round while the group waits: on a fast
    // machine all of the above can take less than that (seen on PostgreSQL 17).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    p.reproject(
        &db,
        &[
            "skip",
            "big",
            "150",
            "--reason",
            "amount is not a number",
            "--initiated-by",
            "oncall",
        ],
    )
    .await
    .ok()
    .stdout_has("skip decided");
    p.reproject(&db, "retry tally 150")
        .await
        .code(2)
        .stderr_has("already decided: skip by oncall");
    wait_for(&db, CAUGHT_UP, 30).await;
    assert_eq!(db.int(&checkpoint("big")).await, 220);
    // The truth without event 150: every other event applied once.
    db.exec("UPDATE events SET bad = true WHERE id = 150").await;
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_int("SELECT n::bigint FROM kinds", 120).await;

    let list = p.reproject(&db, "parked --all --json").await.ok().json();
    let e = &list["events"][0];
    assert_eq!(e["decision"], "skip", "{list}");
    assert_eq!(e["decided_by"], "oncall");
    assert_eq!(e["reason"], "amount is not a number");
    assert_eq!(e["outcome"], "skipped");
    assert!(e["acted_at"].is_string(), "{e}");
    let open = p.reproject(&db, "parked --json").await.ok().json();
    assert_eq!(open["events"], serde_json::json!([]), "{open}");
    p.reproject(&db, "skip tally 150 --reason again")
        .await
        .code(2)
        .stderr_has("it was, and is closed: skipped");

    wait_for_sample(port, "reproject_parked_events{projection=\"tally\"}", 0.0).await;
    assert_eq!(get(port, "/health").await, (200, "ok\n".to_string()));
    let out = runner.stop().await;
    out.ok()
        .stderr_has("parked tally, big at the event at position 150")
        .stderr_has("`reproject skip tally 150 --reason")
        .stderr_has("tally → big parked at 149 (event 150")
        .stderr_has("skipped the parked event at position 150 for tally, big, as decided");
    db.drop().await;
}

/// `--stop-on-error all` still exits 1, with the event parked; restarted runners wait on it
/// without trying it again (`times_seen` stays 1) and `run --once` exits 1 naming it; a retry
/// before the fix fails again (recorded) and parks it anew; after the fix, a retry applies it.
#[tokio::test(flavor = "multi_thread")]
async fn restarted_runners_wait_and_a_retry_applies_it_after_the_fix() {
    let (db, p) = poisoned().await;
    p.reproject(&db, "run --once --batch-size 30 --stop-on-error all")
        .await
        .code(1)
        .stderr_has("stopped the runner on a handler error (--stop-on-error all)")
        .stderr_has("reproject skip tally 150");
    let attempts = "SELECT sum(times_seen)::bigint FROM reproject.parked_events";
    db.assert_int(attempts, 1).await;
    for _ in 0..2 {
        p.reproject(&db, "run --once --batch-size 30")
            .await
            .code(1)
            .stderr_has("tally, big wait on the parked event at position 150")
            .stderr_has("caught up, but tally, big wait(s) on a parked event")
            .stderr_has("reproject retry tally 150");
    }
    db.assert_int_because(attempts, 1, "a restarted runner does not try it again")
        .await;
    assert_eq!(db.int(&checkpoint("tally")).await, 149);
    assert_eq!(db.int(&checkpoint("kinds")).await, 200);

    // Retried before the cause is fixed: it fails again, and waits again.
    p.reproject(&db, &["retry", "tally", "150", "--reason", "try again"])
        .await
        .ok()
        .stdout_has("retry decided");
    p.reproject(&db, "run --once --batch-size 30")
        .await
        .code(1)
        .stderr_has("retrying event at position 150")
        .stderr_has("parked tally, big at the event at position 150");
    let list = p.reproject(&db, "parked --all --json").await.ok().json();
    let events = list["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{list}");
    assert!(events[0]["decision"].is_null(), "open first: {list}");
    assert_eq!(events[1]["decision"], "retry");
    assert_eq!(events[1]["reason"], "try again");
    assert_eq!(events[1]["outcome"], "failed again");

    db.exec("UPDATE events SET data = '{\"amount\": 42}' WHERE id = 150")
        .await;
    p.reproject(&db, "retry tally 150").await.ok();
    let o = p.reproject(&db, "run --once --json").await.ok().json();
    assert_eq!(o["events_applied"], 51, "150..200 for tally and big: {o}");
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.assert_text(
        "SELECT string_agg(coalesce(outcome, 'open'), ', ' ORDER BY id) FROM reproject.parked_events",
        Some("failed again, applied"),
    )
    .await;
    p.reproject(&db, "parked --all")
        .await
        .ok()
        .stdout_has("150 [failed again] tally, big")
        .stdout_has("150 [applied] tally, big");
    p.reproject(&db, "run --once").await.ok();
    db.drop().await;
}

/// Two poison events in one batch: skipping the first, the rest of the batch fails on the
/// second. The careful pass commits up to it with the skip acted on in the same transaction
/// (the first is skipped once, never applied), and parks the second.
#[tokio::test(flavor = "multi_thread")]
async fn a_skip_whose_batch_fails_further_on_is_acted_on_once() {
    let (db, p) = poisoned().await;
    db.exec("UPDATE events SET data = '{\"amount\": \"sixty\"}' WHERE id = 160")
        .await;
    p.reproject(&db, "run --once --batch-size 30")
        .await
        .code(1)
        .stderr_has("event at position 150");
    p.reproject(&db, "skip tally 150 --reason first").await.ok();
    p.reproject(&db, "run --once --batch-size 30")
        .await
        .code(1)
        .stderr_has("skipping event at position 150")
        .stderr_has("parked tally, big at the event at position 160");
    assert_eq!(db.int(&checkpoint("tally")).await, 159);
    db.assert_text(
        "SELECT string_agg(position || ' ' || coalesce(outcome, 'open'), ', ' ORDER BY position) FROM reproject.parked_events",
        Some("150 skipped, 160 open"),
    )
    .await;
    p.reproject(&db, "skip tally 160 --reason second")
        .await
        .ok();
    p.reproject(&db, "run --once").await.ok();
    db.exec("UPDATE events SET bad = true WHERE id IN (150, 160)")
        .await;
    assert_eq!(
        tally::expected_differences(&db, "tally").await,
        0,
        "every event but the two skipped, once"
    );
    db.drop().await;
}

/// `reproject retry` refuses what it cannot decide, naming it, and records nothing: a
/// projection the config does not have, an event that is not parked for the projection (the
/// hint names what is), a projection with nothing parked, an event already closed.
#[tokio::test(flavor = "multi_thread")]
async fn retry_refuses_an_unknown_projection_and_an_event_that_is_not_parked() {
    let (db, p) = poisoned().await;
    p.reproject(&db, "run --once --batch-size 30")
        .await
        .code(1)
        .stderr_has("parked tally, big at the event at position 150");
    p.reproject(&db, "retry nosuch 150")
        .await
        .code(2)
        .stderr_has("cannot retry: projection `nosuch` is not in");
    p.reproject(&db, "retry tally 151")
        .await
        .code(2)
        .stderr_has("cannot retry: no event at position 151 is parked for `tally`")
        .stderr_has("parked for `tally`: position(s) 150");
    p.reproject(&db, "retry kinds 150")
        .await
        .code(2)
        .stderr_has("cannot retry: no event at position 150 is parked for `kinds`")
        .stderr_has("nothing is parked for `kinds`");
    db.assert_int(
        "SELECT count(*) FROM reproject.parked_events WHERE decision IS NOT NULL",
        0,
    )
    .await;

    // Closed (skipped and acted on): refused, saying how it was closed.
    p.reproject(&db, "skip tally 150 --reason x").await.ok();
    p.reproject(&db, "run --once").await.ok();
    p.reproject(&db, "retry big 150")
        .await
        .code(2)
        .stderr_has("no event at position 150 is parked for `big` (it was, and is closed: skipped");
    db.drop().await;
}

/// A rebuild replays every event, also one the live runner was told to skip: when a handler
/// fails on it, the hint says that the runner skipped it, when and why. A failure on an event
/// nobody skipped keeps the ordinary hint.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_failing_on_an_event_the_runner_skipped_says_so() {
    let (db, p) = poisoned().await;
    p.reproject(&db, "run --once --batch-size 30")
        .await
        .code(1)
        .stderr_has("parked tally, big at the event at position 150");

    // Parked, not decided: the ordinary hint.
    let out = p.reproject(&db, "rebuild --yes").await;
    out.code(1)
        .stderr_has("projection `tally` failed on event at position 150")
        .stderr_has("hint: fix the handler (or the event), then run the rebuild again");
    assert!(!out.stderr.contains("skip"), "{}", out.stderr);

    p.reproject(
        &db,
        &[
            "skip",
            "tally",
            "150",
            "--reason",
            "amount is not a number",
            "--initiated-by",
            "oncall",
        ],
    )
    .await
    .ok();
    p.reproject(&db, "run --once")
        .await
        .ok()
        .stderr_has("skipped the parked event at position 150");
    let acted = db
        .text("SELECT to_char(acted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM reproject.parked_events WHERE outcome = 'skipped'")
        .await
        .expect("the skip was acted on");

    let out = p.reproject(&db, "rebuild --yes").await;
    out.code(1)
        .stderr_has("projection `tally` failed on event at position 150")
        .stderr_has(&format!(
            "hint: the live runner skipped this event at position 150 for tally, big on {acted} UTC (reason: amount is not a number, decided by oncall)"
        ))
        .stderr_has("a replay applies every event, skipped ones too");
    db.drop().await;
}
