//! Readers during swaps: readers that query through views (on the primary, and on a hot
//! standby), and readers on a streaming standby of a primary the test starts itself.

use crate::harness::TestDb;
use crate::pgserver::PgServer;
use crate::tally;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the readers saw: SQLSTATE (or "connection") of every error, and the longest
/// transaction.
#[derive(Default, Debug)]
struct Seen {
    errors: Vec<String>,
    worst: Duration,
    transactions: u64,
}

async fn connect(config: &tokio_postgres::Config) -> Option<tokio_postgres::Client> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// `readers` sessions on `config`, each running `script` (one short transaction) over and
/// over with a pause of `pause` between, until `stop`. A session that fails reconnects.
fn spawn_readers(
    config: tokio_postgres::Config,
    readers: usize,
    scripts: &'static [&'static str],
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..readers)
        .map(|i| {
            let config = config.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut client = None;
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    if client.is_none() {
                        client = connect(&config).await;
                        if client.is_none() {
                            seen.errors.push("connect".into());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                    let c = client.as_ref().unwrap();
                    let started = Instant::now();
                    n += 1;
                    match c.batch_execute(scripts[n % scripts.len()]).await {
                        Ok(()) => {
                            seen.transactions += 1;
                            seen.worst = seen.worst.max(started.elapsed());
                        }
                        Err(e) => {
                            seen.errors.push(
                                e.code()
                                    .map_or("connection".to_string(), |c| c.code().to_string()),
                            );
                            if c.is_closed() {
                                client = None;
                            } else {
                                let _ = c.batch_execute("ROLLBACK").await;
                            }
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
                seen
            })
        })
        .collect()
}

async fn collect(handles: Vec<tokio::task::JoinHandle<Seen>>) -> Seen {
    let mut all = Seen::default();
    for h in handles {
        let s = h.await.unwrap();
        all.errors.extend(s.errors);
        all.worst = all.worst.max(s.worst);
        all.transactions += s.transactions;
    }
    all
}

const VIEWS: &str = "CREATE VIEW tally_v AS SELECT stream, n, total FROM tally;
                     CREATE VIEW tally_vv AS SELECT stream, total FROM tally_v;";

/// A reader of a view locks the view, then the table. The swap used to lock the table first:
/// when its lock attempt waited behind a long query for longer than `deadlock_timeout`,
/// readers that had locked the view and queued for the table formed a cycle with it, and one
/// side got "deadlock detected" (40P01). Locking the views first, in the order readers do,
/// makes that cycle impossible.
#[tokio::test(flavor = "multi_thread")]
async fn readers_through_views_never_deadlock_with_the_swap() {
    let db = tally::db(200).await;
    db.exec(VIEWS).await;
    db.exec(&format!(
        "ALTER DATABASE {} SET deadlock_timeout = '20ms'",
        db.name
    ))
    .await;
    let config = tokio_postgres::Config::from_str(&db.url).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The long reader the swap waits behind, longer than deadlock_timeout.
    let long = spawn_readers(
        config.clone(),
        1,
        &["BEGIN; SELECT count(*) FROM tally; SELECT pg_sleep(0.3); COMMIT"],
        Duration::from_millis(5),
        stop.clone(),
    );
    let readers = spawn_readers(
        config,
        6,
        &[
            "SELECT sum(n) FROM tally_v",
            "SELECT sum(total) FROM tally_vv",
        ],
        Duration::from_millis(2),
        stop.clone(),
    );
    let project = tally::project();
    // Swaps, and rollbacks (which lock the same relations), each waiting behind the long
    // reader.
    for i in 0..6 {
        let command = if i % 3 == 2 { "rollback" } else { "rebuild" };
        project
            .reproject(&db, &[command, "--yes", "--lock-timeout", "1s"])
            .await
            .ok();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = collect(readers).await;
    let long = collect(long).await;
    eprintln!(
        "view readers: {} transactions, errors {:?}, worst {:?}; long reader errors {:?}",
        seen.transactions, seen.errors, seen.worst, long.errors
    );
    assert!(seen.transactions > 0);
    assert!(
        seen.errors.is_empty() && long.errors.is_empty(),
        "readers failed: {:?} {:?}",
        seen.errors,
        long.errors
    );
    assert_eq!(tally::expected_differences(&db, "tally").await, 0);
    db.drop().await;
}

/// The figures of one series of swaps with readers on a standby.
struct StandbyRun {
    seen: Seen,
    /// The longest stall recorded for a swap (`runs.standbys`), ms.
    recorded_stall: i64,
    /// The most a standby was behind when a swap began to wait for it, bytes.
    behind: i64,
    /// The largest replay lag sampled on the primary (`pg_stat_replication`): bytes, ms.
    lag_bytes: i64,
    lag_ms: i64,
    swaps: usize,
    /// pg_stat_database_conflicts on the standby.
    conflicts: String,
    /// What each rebuild printed on stderr (its warnings say when it locked without the
    /// standby caught up), for the failure message.
    rebuilds: Vec<String>,
}

/// Samples the standbys' replay lag on the primary every 50 ms until `stop`: the largest
/// (bytes, ms) seen.
fn sample_lag(
    primary: tokio_postgres::Config,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(i64, i64)> {
    tokio::spawn(async move {
        let client = connect(&primary)
            .await
            .expect("cannot connect to the primary");
        let mut worst = (0i64, 0i64);
        while !stop.load(Ordering::Relaxed) {
            if let Ok(rows) = client
                .query(
                    "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, \
                            coalesce(extract(epoch FROM replay_lag) * 1000, 0)::bigint FROM pg_stat_replication",
                    &[],
                )
                .await
            {
                for r in rows {
                    worst = (worst.0.max(r.get(0)), worst.1.max(r.get(1)));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    })
}

/// `swaps` rebuilds of `tally` (each a bulk replay of `events` events, the WAL the standby must
/// replay) with readers on the standby, reading the table and through views, the standby's
/// replay paused for `paused` from the start of each rebuild.
async fn swaps_with_standby_readers(
    primary: &PgServer,
    standby: &PgServer,
    events: i64,
    swaps: usize,
    paused: Duration,
    extra: &[&str],
    binary: Option<&str>,
) -> StandbyRun {
    let db = TestDb::new_on(primary.admin()).await;
    tally::setup(&db, events).await;
    db.exec(VIEWS).await;
    // Autovacuum truncating the end of the new table takes ACCESS EXCLUSIVE outside the swap,
    // and a standby replays it like the swap's lock (docs/concepts/how-a-rebuild-works.md, "Readers on hot standbys"): the
    // setting the docs recommend, carried over by every swap.
    db.exec("ALTER TABLE tally SET (vacuum_truncate = false)")
        .await;
    let mut on_standby = standby.admin();
    on_standby.dbname(&db.name);
    // Wait for the standby to have the database and the views.
    let started = Instant::now();
    loop {
        if let Some(c) = connect(&on_standby).await {
            if c.batch_execute("SELECT 1 FROM tally_vv").await.is_ok() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the standby did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers = spawn_readers(
        on_standby,
        4,
        &[
            // Views first, as a query of a view locks them: a transaction that holds the
            // table and then reads a view of it can deadlock with any order of the swap's
            // locks (docs/concepts/how-a-rebuild-works.md, "Readers on hot standbys").
            "BEGIN; SELECT sum(total) FROM tally_vv; SELECT sum(n) FROM tally; COMMIT",
            "BEGIN; SELECT sum(n) FROM tally_v; SELECT pg_sleep(0.02); SELECT count(*) FROM tally; COMMIT",
            "SELECT sum(n) FROM tally",
        ],
        Duration::from_millis(2),
        stop.clone(),
    );
    let lag = sample_lag(primary.admin(), stop.clone());
    let project = tally::project();
    let admin = connect(&standby.admin())
        .await
        .expect("cannot connect to the standby");
    // WAL keeps coming, as from an application writing: a standby that is behind then reads
    // the swap's lock records from WAL received long ago (with nothing after them, it would
    // count their grace period from when it reached them).
    db.exec("CREATE TABLE filler (x int)").await;
    let writer = spawn_readers(
        tokio_postgres::Config::from_str(&db.url).unwrap(),
        1,
        &["INSERT INTO filler SELECT generate_series(1, 500)"],
        Duration::from_millis(50),
        stop.clone(),
    );
    let on_primary = connect(&primary.admin())
        .await
        .expect("cannot connect to the primary");
    let mut rebuilds = Vec::new();
    for _ in 0..swaps {
        // Start each round with the standby caught up: replay must not stop while it holds
        // the last swap's locks.
        let target: String = on_primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        loop {
            let caught_up: bool = on_primary
                .query_one(
                    "SELECT coalesce(bool_and(replay_lsn >= $1::text::pg_lsn), true) FROM pg_stat_replication",
                    &[&target],
                )
                .await
                .unwrap()
                .get(0);
            if caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The standby falls behind: its replay stops while the rebuild writes (as behind a long
        // query, or a slow disk) and resumes `paused` later, by when the rebuild has reached the
        // swap. The WAL it then replays was received longer ago than its
        // max_standby_streaming_delay.
        admin
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        let resume = {
            let admin = standby.admin();
            tokio::spawn(async move {
                tokio::time::sleep(paused).await;
                let c = connect(&admin)
                    .await
                    .expect("cannot connect to the standby");
                c.batch_execute("SELECT pg_wal_replay_resume()")
                    .await
                    .unwrap();
            })
        };
        let mut args = vec!["rebuild", "--yes"];
        args.extend_from_slice(extra);
        match binary {
            None => {
                let out = project.reproject(&db, &args).await;
                rebuilds.push(out.stderr.clone());
                out.ok();
            }
            Some(bin) => {
                // Another build (the measurement's "before"), with the harness's environment.
                let mut cmd = crate::harness::command(&db, &project.config(), &args);
                let cmd = cmd.as_std_mut();
                let mut other = std::process::Command::new(bin);
                other.args(cmd.get_args());
                for (k, v) in cmd.get_envs() {
                    match v {
                        Some(v) => other.env(k, v),
                        None => other.env_remove(k),
                    };
                }
                let out = other.output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        resume.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = collect(readers).await;
    collect(writer).await;
    // The standby's own count of the queries it cancelled, by kind of conflict.
    let conflicts: String = admin
        .query_one(
            "SELECT format('lock %s, snapshot %s, buffer pin %s, deadlock %s', confl_lock, confl_snapshot, confl_bufferpin, confl_deadlock) \
             FROM pg_stat_database_conflicts WHERE datname = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    let (lag_bytes, lag_ms) = lag.await.unwrap();
    let recorded_stall = db
        .int("SELECT coalesce(max((e->>'stall_ms')::bigint), -1) FROM reproject.runs r, \
              jsonb_array_elements(CASE jsonb_typeof(to_jsonb(r)->'standbys') WHEN 'array' THEN to_jsonb(r)->'standbys' ELSE '[]' END) e")
        .await;
    let behind = db
        .int(
            "SELECT coalesce(max((s->>'behind_bytes')::bigint), -1) FROM reproject.runs, \
              jsonb_array_elements(lock_attempts) a, jsonb_array_elements(a->'blockers') b, \
              jsonb_array_elements(b->'standbys') s WHERE b->>'action' = 'waited for standbys'",
        )
        .await;
    db.drop().await;
    StandbyRun {
        seen,
        recorded_stall,
        behind,
        lag_bytes,
        lag_ms,
        swaps,
        conflicts,
        rebuilds,
    }
}

/// A primary and a hot standby of it. The standby waits 3 s for its readers before cancelling
/// them (the default 30 s would make the test long; 1 s was too short on a loaded 2-core
/// machine, where replaying the WAL that arrived with the swap's lock alone took that long),
/// still below the 5 s the tests pause the standby's replay for, so a lock that reaches a
/// standby that is behind still finds its grace period spent; and sends feedback so that the pruning of
/// the rebuild's dead rows does not cancel its readers (snapshot conflicts): what is left are
/// the conflicts of the swap's locks, which feedback does not prevent.
fn start_pair() -> Option<(PgServer, PgServer)> {
    let primary = PgServer::start_primary("")?;
    let standby = PgServer::start_standby(
        &primary,
        "standby1",
        "max_standby_streaming_delay = 3s\nhot_standby_feedback = on\nlog_recovery_conflict_waits = on\n",
    );
    Some((primary, standby))
}

fn print(label: &str, run: &StandbyRun) {
    let mut codes = run.seen.errors.clone();
    codes.sort();
    codes.dedup();
    eprintln!(
        "{label}: {} swaps, {} standby reader transactions, {} reader errors {:?}, worst reader stall {} ms, \
         recorded stall {} ms, most behind before a swap {} bytes, largest replay lag {} bytes / {} ms, standby conflicts: {}",
        run.swaps,
        run.seen.transactions,
        run.seen.errors.len(),
        codes,
        run.seen.worst.as_millis(),
        run.recorded_stall,
        run.behind,
        run.lag_bytes,
        run.lag_ms,
        run.conflicts
    );
}

/// Readers on a hot standby during swaps: the swap's locks are replayed there. With the standby
/// behind when the swap locks, the lock arrives with the standby's grace period spent and the
/// readers holding the table are cancelled at once (`--standby-wait 0` shows it, see the
/// measurement below). The swap waits for the standby to catch up before locking (so the lock
/// arrives with the whole grace period, and the standby waits for its short readers instead
/// of cancelling them) and measures its replay of the commit, recorded in `runs.standbys`.
#[tokio::test(flavor = "multi_thread")]
async fn hot_standby_readers_get_no_errors_during_swaps() {
    let Some((primary, standby)) = start_pair() else {
        eprintln!("SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) on this machine");
        return;
    };
    let run = swaps_with_standby_readers(
        &primary,
        &standby,
        20_000,
        5,
        Duration::from_secs(5),
        &[],
        None,
    )
    .await;
    print("standby readers", &run);
    assert!(run.seen.transactions > 0);
    assert!(
        run.seen.errors.is_empty(),
        "standby readers failed: {:?}\nwhat the rebuilds printed:\n{}\nthe standby's log about conflicts:\n{}",
        run.seen.errors,
        run.rebuilds.join("\n----\n"),
        standby.log_lines(&["conflict", "recovery", "cancel"])
    );
    assert!(
        run.recorded_stall >= 0,
        "no swap recorded the standby's replay"
    );
    assert!(
        run.behind >= 0,
        "no lock attempt recorded the wait for the standby"
    );
    // Bounded: far below max_standby_streaming_delay (30 s), the wait before cancelling.
    assert!(
        run.seen.worst < Duration::from_secs(5),
        "a standby reader waited {:?}",
        run.seen.worst
    );
}

/// The measurement in docs/internals/benchmark-log.md ("Swaps with hot-standby readers"): the same series
/// without waiting for the standby (`--standby-wait 0`) and with it, on one pair of servers.
/// `scripts/test.sh --test e2e standby::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_swaps_with_hot_standby_readers() {
    let Some((primary, standby)) = start_pair() else {
        eprintln!("SKIPPED: no PostgreSQL server binaries on this machine");
        return;
    };
    let events = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let swaps = std::env::var("SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let paused = Duration::from_secs(5);
    // BEFORE_BIN: a reproject binary built before these changes, measured first.
    if let Ok(before) = std::env::var("BEFORE_BIN") {
        let run = swaps_with_standby_readers(
            &primary,
            &standby,
            events,
            swaps,
            paused,
            &[],
            Some(&before),
        )
        .await;
        print("before (old lock order, no wait for standbys)", &run);
    }
    let without = swaps_with_standby_readers(
        &primary,
        &standby,
        events,
        swaps,
        paused,
        &["--standby-wait", "0"],
        None,
    )
    .await;
    print("--standby-wait 0", &without);
    let with =
        swaps_with_standby_readers(&primary, &standby, events, swaps, paused, &[], None).await;
    print("--standby-wait 30s (default)", &with);
}
