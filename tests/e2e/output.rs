//! What people on call read on stderr: a swap waiting for its locks says so once and sums it
//! up instead of repeating itself, `-v` / `-vv` show phases, batches and statements (and
//! nothing of that without them), and `--log-format json` makes every stderr line a JSON object.

use crate::lockhold::{hold_share_lock, wait_for_swap_phase};
use crate::tally;
use std::time::Duration;

/// Lines of `text` containing `needle`.
fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// A session holds a lock on the live table while the swap asks for its locks again and
/// again: a log (stderr is not a terminal here) gets the first attempt, then one summary with
/// the number of attempts, the time and the blocking session, not a line per attempt.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_lock_attempts_collapse_into_one_summary() {
    let (db, p) = tally::fixture(300).await;
    let blocker = hold_share_lock(&db).await;
    let child = p.spawn(&db, "rebuild --yes --lock-budget 60s");
    wait_for_swap_phase(&db).await;
    // Slices of 100, 200, 400, 800, 1000 ms with pauses between: several attempts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let out = child.output().await;
    out.ok();
    let err = &out.stderr;
    let summary: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("took the locks on "))
        .collect();
    assert_eq!(summary.len(), 1, "one summary:\n{err}");
    let summary = summary[0];
    assert!(
        summary.starts_with("warning: took the locks on "),
        "{summary}"
    );
    assert!(
        summary.contains("long-report"),
        "names the blocker: {summary}"
    );
    assert!(summary.contains("postgres@"), "names its user: {summary}");
    let attempts: u32 = summary
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count: {summary}"));
    assert!(attempts >= 3, "several attempts were made: {summary}");
    // The first attempt is logged; the others are not, one by one (a reminder at most every
    // 10 s, and the whole wait took about 4).
    let repeats = count(err, "could not lock");
    assert!(
        (1..=2).contains(&repeats) && repeats < attempts as usize,
        "{repeats} lines for {attempts} attempts:\n{err}"
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);

    // The same wait in JSON lines: its first round and its summary, each one object.
    p.reproject(&db, "rebuild --yes --no-swap").await.ok();
    let blocker = hold_share_lock(&db).await;
    let child = p.spawn(&db, "--log-format json swap --yes");
    wait_for_swap_phase(&db).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let out = child.output().await;
    out.ok();
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    assert_eq!(kinds("waiting"), 1, "{}", out.stderr);
    assert_eq!(kinds("wait_over"), 1, "{}", out.stderr);
    let over = lines.iter().find(|l| l["kind"] == "wait_over").unwrap();
    assert_eq!(over["level"], "WARN", "{over}");
    assert!(
        over["message"].as_str().unwrap().contains("long-report"),
        "{over}"
    );
    // Typed: the round and the summary by their `event`, with their data.
    let round = lines.iter().find(|l| l["kind"] == "waiting").unwrap();
    assert_eq!(round["event"], "lock_timed_out", "{round}");
    assert_eq!(round["data"]["attempt"], 1, "{round}");
    assert!(
        round["data"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().ends_with("tally")),
        "{round}"
    );
    assert_eq!(over["event"], "locks_taken", "{over}");
    assert!(over["data"]["attempts"].as_u64().unwrap() >= 2, "{over}");
    assert!(
        over["data"]["blockers"][0]
            .as_str()
            .unwrap()
            .contains("long-report"),
        "{over}"
    );
    db.drop().await;
}

/// `-v`: the phases with their durations and every batch; `-vv`: the statements with their
/// timings; without them (and with `-q`) none of it.
#[tokio::test(flavor = "multi_thread")]
async fn verbose_levels_show_phases_batches_and_statements() {
    let (db, p) = tally::fixture(1200).await;
    let out = p
        .reproject(&db, "-v rebuild --yes --batch-size 500 --no-swap")
        .await;
    out.ok()
        .stderr_has("batch after start: 500 event(s) up to position 500 in ")
        .stderr_has("batch after position 1000: 200 event(s) up to position 1200 in ")
        .stderr_has("run 1: phase checks (phase ")
        .stderr_has(" ms)");
    assert_eq!(count(&out.stderr, "COMMIT in "), 0, "{}", out.stderr);

    let out = p.reproject(&db, "-vv swap --yes").await;
    out.ok()
        .stderr_has("LOCK TABLE ")
        .stderr_has("granted in ")
        .stderr_has("COMMIT in ")
        .stderr_has("committed under the locks on ")
        // The client's own record of each statement it sends.
        .stderr_has("executing");

    for args in ["rebuild --yes --batch-size 500", "-q rebuild --yes"] {
        let out = p.reproject(&db, args).await;
        out.ok();
        assert_eq!(
            count(&out.stderr, "batch after"),
            0,
            "{args}:\n{}",
            out.stderr
        );
        assert_eq!(count(&out.stderr, "phase "), 0, "{args}:\n{}", out.stderr);
        assert_eq!(
            count(&out.stderr, "LOCK TABLE"),
            0,
            "{args}:\n{}",
            out.stderr
        );
    }
    db.drop().await;
}

/// Every stderr line is a JSON object with `timestamp`, `level` and `message`: log events,
/// steps, warnings, progress, and the error a command ends with.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let (db, p) = tally::fixture(600).await;
    let parse = |stderr: &str| -> Vec<serde_json::Value> {
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}"))
            })
            .collect();
        for l in &lines {
            for field in ["timestamp", "level", "message"] {
                assert!(l[field].is_string(), "no {field}: {l}");
            }
            // RFC 3339, UTC.
            assert!(l["timestamp"].as_str().unwrap().ends_with('Z'), "{l}");
        }
        lines
    };
    let out = p
        .reproject(&db, "--log-format json -v rebuild --yes --batch-size 200")
        .await;
    out.ok();
    let lines = parse(&out.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "step" && l["level"] == "INFO"),
        "a step:\n{}",
        out.stderr
    );
    // Each step names its kind in `event`, with its fields in `data`.
    let cloning = lines
        .iter()
        .find(|l| l["event"] == "cloning")
        .unwrap_or_else(|| panic!("no cloning step:\n{}", out.stderr));
    assert_eq!(cloning["kind"], "step", "{cloning}");
    assert_eq!(cloning["data"]["run_id"], 1, "{cloning}");
    assert_eq!(cloning["data"]["projections"][0], "tally", "{cloning}");
    let replaying = lines
        .iter()
        .find(|l| l["event"] == "replaying")
        .unwrap_or_else(|| panic!("no replaying step:\n{}", out.stderr));
    assert_eq!(replaying["data"]["events"], 600, "{replaying}");
    assert_eq!(replaying["data"]["up_to"]["position"], 600, "{replaying}");
    for event in ["running_checks", "vacuuming", "swapping"] {
        assert!(
            lines.iter().any(|l| l["event"] == event),
            "no {event}:\n{}",
            out.stderr
        );
    }
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .starts_with("batch after position 200: 200 event(s)")
            && l["events"] == 200),
        "a batch with its fields:\n{}",
        out.stderr
    );
    // stdout keeps the result as text; nothing of it on stderr.
    out.stdout_has("swapped");

    let out = p.reproject(&db, "--log-format json plan no_such").await;
    out.code(2);
    let lines = parse(&out.stderr);
    let last = lines.last().expect("the error");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["kind"], "config", "{last}");
    assert_eq!(last["exit_code"], 2, "{last}");
    assert!(
        last["message"].as_str().unwrap().contains("no_such"),
        "{last}"
    );
    db.drop().await;
}
