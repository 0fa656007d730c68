//! `reproject run --metrics-addr`: Prometheus metrics and a health check scraped over real
//! HTTP from a running runner, and the periodic alive line (`--status-every`).

use crate::live::{wait_for, CAUGHT_UP};
use crate::pgserver::free_port;
use crate::tally;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` on 127.0.0.1:`port`: the status code and the body.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the metrics port {port}: {e}"));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status, body.to_string())
}

/// The value of the sample `series` (name and labels) in a `/metrics` body.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `series` has value `want`, or panics after 20 s with the last body.
pub async fn wait_for_sample(port: u16, series: &str, want: f64) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    // The runner listens once it has read its config: until then the port refuses.
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let (status, body) = get(port, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        if sample(&body, series) == Some(want) {
            return body;
        }
        assert!(
            Instant::now() < until,
            "{series} never became {want}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The counters and lag follow the events: an uncommitted append holds the runner back (lag
/// in events and seconds), its commit lets it catch up (lag 0, every event counted once);
/// `/health` is 200; the alive line is printed every second; SIGTERM still exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_follow_the_runner() {
    let (db, p) = tally::fixture(200).await;
    let port = free_port();
    let runner = p.spawn(
        &db,
        format!(
            "run --from-position head --metrics-addr 127.0.0.1:{port} --status-every 1s --max-poll-interval 200ms"
        )
        .as_str(),
    );
    wait_for(&db, CAUGHT_UP, 30).await;
    let body = wait_for_sample(
        port,
        "reproject_checkpoint_position{projection=\"tally\"}",
        200.0,
    )
    .await;
    assert!(
        body.contains("# TYPE reproject_events_applied_total counter"),
        "{body}"
    );
    assert_eq!(sample(&body, "reproject_runner_up"), Some(1.0), "{body}");
    assert_eq!(
        sample(
            &body,
            "reproject_events_applied_total{projection=\"tally\"}"
        ),
        Some(0.0)
    );
    assert_eq!(get(port, "/health").await, (200, "ok\n".to_string()));
    assert_eq!(get(port, "/nowhere").await.0, 404);

    // An open transaction holds position 201: the 50 events committed after it wait for it
    // (the head the runner sees is 251, so it is 51 events behind).
    let holder = db.client().await;
    holder
        .batch_execute(
            "BEGIN; INSERT INTO events (stream, type, data, at) VALUES ('s1', 'added', '{\"amount\": 1}', now() - interval '1 hour')",
        )
        .await
        .unwrap();
    tally::append(&db, 50).await;
    let body = wait_for_sample(port, "reproject_lag_events{projection=\"tally\"}", 51.0).await;
    assert_eq!(
        sample(&body, "reproject_checkpoint_position{projection=\"tally\"}"),
        Some(200.0)
    );
    let age = sample(&body, "reproject_lag_seconds{projection=\"tally\"}").expect("lag in seconds");
    assert!(
        (0.0..600.0).contains(&age),
        "the age of event 202, appended now: {body}"
    );

    holder.batch_execute("COMMIT").await.unwrap();
    let body = wait_for_sample(
        port,
        "reproject_events_applied_total{projection=\"tally\"}",
        51.0,
    )
    .await;
    let body = if sample(&body, "reproject_lag_events{projection=\"tally\"}") == Some(0.0) {
        body
    } else {
        wait_for_sample(port, "reproject_lag_events{projection=\"tally\"}", 0.0).await
    };
    assert_eq!(
        sample(&body, "reproject_checkpoint_position{projection=\"tally\"}"),
        Some(251.0)
    );
    assert!(
        sample(
            &body,
            "reproject_last_batch_timestamp_seconds{projection=\"tally\"}"
        )
        .is_some_and(|t| t > 1.7e9),
        "{body}"
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let out = runner.stop().await;
    out.ok()
        .stderr_has("serving metrics on http://127.0.0.1:")
        .stderr_has("alive: tally at 251, lag 0 events");
    db.drop().await;
}

/// An address it cannot listen on is refused before anything is applied, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_metrics_port_is_refused() {
    let (db, p) = tally::fixture(10).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    p.reproject(
        &db,
        format!("run --from-position head --metrics-addr 127.0.0.1:{port}").as_str(),
    )
    .await
    .code(2)
    .stderr_has(&format!(
        "cannot listen on --metrics-addr `127.0.0.1:{port}`"
    ));
    assert_eq!(
        db.int("SELECT (to_regclass('reproject.live_checkpoints') IS NULL)::int::bigint")
            .await,
        1,
        "refused before the runner touched the database"
    );
    db.drop().await;
}

/// A projection parked on a handler error: `/health` answers 503 naming it and the event,
/// its error counter and up gauge say so, and the independent projection keeps counting.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_projection_fails_the_health_check() {
    let db = tally::db(100).await;
    let p = crate::live::three_projections(&db, "").await;
    p.reproject(&db, "run --once --from-position head")
        .await
        .ok();
    tally::append(&db, 100).await;
    db.exec("UPDATE events SET data = '{\"amount\": \"forty-two\"}' WHERE id = 150")
        .await;
    let port = free_port();
    let runner = p.spawn(
        &db,
        format!("run --metrics-addr 127.0.0.1:{port} --batch-size 30").as_str(),
    );
    let body = wait_for_sample(
        port,
        "reproject_events_applied_total{projection=\"kinds\"}",
        100.0,
    )
    .await;
    let body = if sample(&body, "reproject_errors_total{projection=\"tally\"}") == Some(1.0) {
        body
    } else {
        wait_for_sample(port, "reproject_errors_total{projection=\"tally\"}", 1.0).await
    };
    assert_eq!(
        sample(&body, "reproject_errors_total{projection=\"big\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "reproject_projection_up{projection=\"tally\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "reproject_projection_up{projection=\"kinds\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "reproject_checkpoint_position{projection=\"tally\"}"),
        Some(149.0)
    );
    assert_eq!(
        sample(
            &body,
            "reproject_events_applied_total{projection=\"tally\"}"
        ),
        Some(49.0),
        "the events before the failing one count: {body}"
    );
    let (status, health) = get(port, "/health").await;
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("parked: tally, big:"), "{health}");
    assert!(health.contains("position 150"), "{health}");
    let out = runner.stop().await;
    out.ok();
    db.drop().await;
}
