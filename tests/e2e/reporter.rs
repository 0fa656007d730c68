//! The library's typed reports: a program's `Reporter` sees each step and warning as a
//! variant with its data, in the order the rebuild takes them, and a repeated wait as typed
//! rounds and a typed summary.

use crate::config::{Config as TestConfig, Projection};
use crate::harness::{Project, TestDb};
use reproject::commands::{self, Engine, RebuildOptions};
use reproject::progress::{Cancel, Reporter, Step, Waiting, Warning};
use reproject::{Config, Db};
use std::sync::Mutex;

/// Everything a reporter was told, in order.
#[derive(Debug, Clone)]
enum Told {
    Step(Step),
    Warning(Warning),
    Waiting {
        key: String,
        reason: Warning,
    },
    WaitOver {
        key: String,
        summary: Option<Warning>,
    },
}

#[derive(Default)]
struct Recorder {
    told: Mutex<Vec<Told>>,
    /// Set at the first round of a wait: the test then lets the blocking session go.
    waited: tokio::sync::Notify,
}

impl Recorder {
    fn told(&self) -> Vec<Told> {
        self.told.lock().unwrap().clone()
    }
}

impl Reporter for Recorder {
    fn step(&self, step: &Step) {
        self.told.lock().unwrap().push(Told::Step(step.clone()));
    }
    fn warn(&self, warning: &Warning) {
        self.told
            .lock()
            .unwrap()
            .push(Told::Warning(warning.clone()));
    }
    fn waiting(&self, wait: &Waiting<'_>) {
        self.told.lock().unwrap().push(Told::Waiting {
            key: wait.key.to_string(),
            reason: wait.reason.clone(),
        });
        self.waited.notify_one();
    }
    fn wait_over(&self, key: &str, summary: Option<&Warning>) {
        self.told.lock().unwrap().push(Told::WaitOver {
            key: key.to_string(),
            summary: summary.cloned(),
        });
    }
}

/// `customers`, and `receipts` that read them.
fn project() -> Project {
    TestConfig::events("events")
        .projection(Projection::new("customers"))
        .projection(Projection::new("receipts"))
        .file(
            "customers.sql",
            "-- on named\nINSERT INTO {{customers}} AS c (id, name) VALUES (:stream, :data->>'name')\nON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;\n",
        )
        .file(
            "receipts.sql",
            "-- on ordered\nINSERT INTO {{receipts}} (order_id, customer_name)\nSELECT :data->>'order', name FROM {{customers}} WHERE id = :stream;\n",
        )
        .write()
}

/// Rebuilding `customers` alone: the reader left out is a typed warning naming both; the
/// steps come as variants in the rebuild's order with the run's data; the swap, held off by
/// a session that reads `customers`, reports typed lock rounds naming the table and a typed
/// summary once it has the locks.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_reports_typed_steps_in_order_and_typed_warnings() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE events (id bigserial PRIMARY KEY, stream text, type text, data jsonb);
         CREATE TABLE customers (id text PRIMARY KEY, name text);
         CREATE TABLE receipts (order_id text PRIMARY KEY, customer_name text);
         INSERT INTO events (stream, type, data)
           SELECT 'c' || i, 'named', jsonb_build_object('name', 'n' || i) FROM generate_series(1, 40) i;",
    )
    .await;
    let p = project();
    let config = Config::load(&p.config()).unwrap();
    let recorder = Recorder::default();
    let engine = Engine {
        config: &config,
        db: Db::new(&db.url).unwrap(),
        reporter: &recorder,
        cancel: Cancel::new(),
    };

    // A reader of `customers` holds the swap's locks off until the first round is reported.
    let reader = db.client().await;
    reader
        .batch_execute("BEGIN; LOCK TABLE customers IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let release = async {
        // Bounded, so a rebuild that never waits fails its assertions instead of hanging.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            recorder.waited.notified(),
        )
        .await;
        reader.batch_execute("COMMIT").await.unwrap();
    };
    let opts = RebuildOptions {
        projections: vec!["customers".into()],
        ..RebuildOptions::default()
    };
    let (outcome, ()) = tokio::join!(commands::rebuild(&engine, &opts), release);
    let outcome = outcome.unwrap();
    assert_eq!(outcome.status, "swapped");
    let run_id = outcome.run_id.unwrap();
    let told = recorder.told();

    // The reader left out, by variant and fields.
    assert!(
        told.iter().any(|t| matches!(t,
            Told::Warning(Warning::DependentNotRebuilt { projection, reads })
                if projection == "receipts" && reads == "customers")),
        "{told:#?}"
    );

    // The steps, in order, with their data.
    let steps: Vec<&Step> = told
        .iter()
        .filter_map(|t| match t {
            Told::Step(s) => Some(s),
            _ => None,
        })
        .collect();
    let at = |what: &str, found: fn(&Step) -> bool| {
        steps
            .iter()
            .position(|s| found(s))
            .unwrap_or_else(|| panic!("no {what} step in {steps:#?}"))
    };
    let cloning = at("cloning", |s| matches!(s, Step::Cloning { .. }));
    let replaying = at("replaying", |s| matches!(s, Step::Replaying { .. }));
    let checks = at("checks", |s| matches!(s, Step::RunningChecks));
    let vacuum = at("vacuum", |s| matches!(s, Step::Vacuuming));
    let swapping = at("swapping", |s| matches!(s, Step::Swapping { .. }));
    assert!(
        cloning < replaying && replaying < checks && checks < vacuum && vacuum < swapping,
        "{steps:#?}"
    );
    match steps[cloning] {
        Step::Cloning {
            run_id: id,
            tables,
            projections,
        } => {
            assert_eq!((*id, *tables), (run_id, 1));
            assert_eq!(projections, &["customers"]);
        }
        _ => unreachable!(),
    }
    match steps[replaying] {
        Step::Replaying { events, tables, .. } => {
            assert_eq!(*events, 40);
            assert_eq!(tables.len(), 1);
            assert!(tables[0].ends_with("customers_rebuild"), "{tables:?}");
        }
        _ => unreachable!(),
    }
    assert!(matches!(steps[swapping], Step::Swapping { tables: 1 }));
    // Each line is what the binary prints for it.
    assert_eq!(
        steps[cloning].to_string(),
        format!("run {run_id}: cloning 1 table(s) of customers")
    );
    assert_eq!(steps[cloning].event(), "cloning");

    // The held-off swap: typed rounds that name the table, then the summary.
    let rounds: Vec<&Warning> = told
        .iter()
        .filter_map(|t| match t {
            Told::Waiting { key, reason } if key.contains("customers") => Some(reason),
            _ => None,
        })
        .collect();
    assert!(!rounds.is_empty(), "{told:#?}");
    for round in &rounds {
        match round {
            Warning::LockTimedOut {
                tables, attempt, ..
            } => {
                assert!(*attempt >= 1);
                assert!(
                    tables.iter().any(|t| t.ends_with("customers")),
                    "{tables:?}"
                );
            }
            other => panic!("a lock round reported as {other:?}"),
        }
    }
    let summary = told
        .iter()
        .find_map(|t| match t {
            Told::WaitOver { key, summary } if key.contains("customers") => Some(summary.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no summary in {told:#?}"));
    match summary {
        Some(Warning::LocksTaken { attempts, .. }) => {
            assert_eq!(attempts as usize, rounds.len() + 1)
        }
        other => panic!("the wait ended with {other:?}"),
    }
    // The summary comes after the last round and before the swap's end.
    let last_round = told
        .iter()
        .rposition(|t| matches!(t, Told::Waiting { .. }))
        .unwrap();
    let over = told
        .iter()
        .position(|t| matches!(t, Told::WaitOver { .. }))
        .unwrap();
    assert!(last_round < over);
    db.assert_text("SELECT name FROM customers WHERE id = 'c40'", Some("n40"))
        .await;
    drop(engine);
    db.drop().await;
}
