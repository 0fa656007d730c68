//! The safe upper bound of reading: how far events may be read right now without skipping an
//! event whose transaction commits later. A rebuild asks its [`Cut`] before the bulk replay,
//! before every catch-up window and for the final tail under the swap lock; the checkpoint
//! never moves past what the cut allowed.
//!
//! # Why a bound at all
//! A sequence hands out positions when rows are inserted, not when transactions commit: A takes
//! 100, B takes 101, B commits first. A reader that records "done up to 101" never sees 100.
//!
//! # `xid8`
//! Every transaction that can still commit rows has an id at or above
//! `pg_snapshot_xmin(pg_current_snapshot())`, so the rows below it are final. Reading is in
//! (transaction id, position) order and the checkpoint is that pair (see `source::Cursor`).
//!
//! # `gap-aware`: the argument
//! Assumptions: positions are drawn with `nextval()` from a sequence that hands out increasing
//! values (`CACHE 1`, the default of serial and identity columns), inside the transaction that
//! inserts them, and are unique. `nextval()` takes a lock on the sequence that its transaction
//! holds until it ends (so does inserting into the event table, on the table).
//!
//! 1. One statement reads the highest visible position `H` (its snapshot is taken at its start,
//!    t0) and then, later in the same statement (t1 > t0), the set `L` of transactions of this
//!    database that hold a lock on a sequence or a write lock on the event table (or one of
//!    its partitions), prepared ones included (`pg_locks`). That pair is an [`Observation`].
//! 2. Take a transaction T that will ever commit a row at position p <= H. T drew p before H was
//!    drawn (increasing sequence), H was drawn before H's transaction committed, and that
//!    commit came before t0 (H is visible). So T held its sequence lock before t0. At t1 T is
//!    either still open, and then it still holds that lock and is in `L`, or it has ended:
//!    committed, and then every snapshot taken after t1 sees p, or rolled back, and then p stays
//!    empty for good.
//! 3. Hence once no member of `L` is open any more (seen at t2 as absent from a later `L`, whose
//!    members are identified by pid and virtual transaction id), every snapshot taken after t2
//!    shows the final contents of all positions <= H: the observation is *proven* and `H` is a
//!    safe bound. Gaps below it are permanent holes (rollbacks, unused sequence values) and are
//!    recorded in `reproject.gaps` with the observation as evidence.
//! 4. Positions need no proof where they are contiguous: if every position from the checkpoint
//!    c + 1 to q is present, nothing can be inserted at or below q any more (positions are
//!    unique). So the bound is the end of the contiguous run that starts at the higher of the
//!    checkpoint and the highest proven head; a gap holds it until an observation taken after
//!    the gap's upper neighbour was visible is proven.
//!
//! A transaction that starts drawing after the observation cannot matter: it draws positions
//! above H. Readers (reports, `pg_dump`) hold no such locks and never hold the bound back. No
//! timer passes a gap; a writer that stays open holds the bound at the first gap after its
//! position (it is named in the warnings), as a long transaction holds the `xid8` cut back.
//! The reads after a bound use newer snapshots (the session runs READ COMMITTED).
//!
//! # Where positions begin
//! A fresh run (no checkpoint) has nothing to count contiguous positions from, so its first
//! observation must be proven (and, with a `gap_age`, aged) before anything is read. Where
//! positions come from a sequence (`events.position_sequence`, a preset's, or the position
//! column's serial, identity or `DEFAULT nextval(...)` sequence), the sequence's start value
//! `S` says where they begin: no position below `S` can ever be drawn, so `S - 1` is a
//! checkpoint as good as one the run reached itself ([`start_floor`]). When the lowest visible
//! position is `S`, the run from it needs no proof; when it is above `S`, the hole from `S` is
//! an ordinary gap, proven (and recorded) like any other. That covers a writer that drew `S`
//! itself and has not committed: its position is not visible, so the lowest visible one is
//! above `S`. Only checked: a lowest visible position below `S` (the sequence's START changed
//! after drawing, or positions not drawn from it) gives no floor. Assumed, as for the whole
//! mode: positions are drawn from that sequence, increasing (a `RESTART` below values already
//! drawn breaks it, as it breaks uniqueness).
//!
//! # `gap-aware` with a `gap_age`
//! The argument above assumes positions are drawn inside the inserting transaction. Marten's
//! Rich append mode draws them with `nextval` on a separate, autocommitted command before that
//! transaction: between the two nothing holds a lock, so an observation can be proven while
//! a reserved position is still to be inserted. With `gap_age`, an observation proves its
//! gaps only once it is also at least `gap_age` old: every gap below its head existed when it
//! was made (the head was visible then), so each gap passed has been open at least that long.
//! Contiguous positions still need no proof, so the age costs nothing while no gap is open.
//! This narrows the window; it cannot close it (a writer may stall longer): every gap passed
//! is recorded and re-checked later (state/late_events.rs).
//!
//! # `serialized`
//! Writers commit in position order, so the highest position is the bound.

use crate::error::{Context, Error, Result};
use crate::model::config::Ordering;
use crate::progress::{Cancel, Reporter, Step, Warning};
use crate::read::source::{Bound, Cursor, EventSource, PositionOrigin};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How many unproven observations a cut keeps; more would only prove heads that a later,
/// kept observation proves too.
const MAX_PENDING: usize = 8;

/// How long [`Cut::settle`] waits, at most, for the gaps below the head to be proven before the
/// bulk replay starts with what is proven (the rest is caught up later or handed over).
pub const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// How often [`Cut::settle`] names the transactions it waits for.
const SETTLE_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The highest visible position and the transactions open right after it was read.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The highest position visible then.
    pub head: i64,
    /// `pid/virtual transaction id` of the writing transactions, `prepared/...` for prepared ones.
    pub open: BTreeSet<String>,
    /// The same transactions described (pid, application, state, start), keyed by `id`.
    pub details: Vec<Value>,
    /// When it was observed.
    pub observed_at: DateTime<Utc>,
    /// The same moment on the monotonic clock, for `gap_age`.
    pub seen: Instant,
}

impl Observation {
    /// The evidence recorded with a gap this observation proved (`gap_age`: how old it also
    /// had to be).
    fn evidence(&self, gap_age: Duration) -> Value {
        json!({
            "rule": if gap_age.is_zero() {
                "every transaction open when the head was observed has ended".to_string()
            } else {
                format!(
                    "every transaction open when the head was observed has ended, and the gap was at least {} old",
                    humantime::format_duration(gap_age)
                )
            },
            "observed_at": self.observed_at,
            "observed_head": self.head,
            "open_transactions": self.details,
            "proven_at": Utc::now(),
        })
    }

    /// The described transactions of this observation that are still open.
    fn still_open(&self, open_now: &BTreeSet<String>) -> Vec<&Value> {
        self.details
            .iter()
            .filter(|d| d["id"].as_str().is_some_and(|id| open_now.contains(id)))
            .collect()
    }
}

/// Observations not proven yet, oldest (and lowest head) first.
#[derive(Debug, Default)]
pub struct Pending {
    list: Vec<Observation>,
}

impl Pending {
    /// Removes every observation none of whose transactions is open any more and that is at
    /// least `gap_age` old, and returns them, lowest head first (the list is kept in that
    /// order).
    pub fn prove(&mut self, open_now: &BTreeSet<String>, gap_age: Duration) -> Vec<Observation> {
        let (proven, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|o| o.open.is_disjoint(open_now) && o.seen.elapsed() >= gap_age);
        self.list = pending;
        proven
    }

    /// Keeps an observation to prove later. Only a higher head is worth keeping: for the same
    /// head an older observation is proven no later than a newer one (whatever of the older
    /// set is still open is in the newer set too). When full, the newest is replaced.
    pub fn push(&mut self, obs: Observation) {
        if self.list.last().is_some_and(|last| last.head >= obs.head) {
            return;
        }
        if self.list.len() >= MAX_PENDING {
            self.list.pop();
        }
        self.list.push(obs);
    }

    /// The oldest pending observation.
    pub fn oldest(&self) -> Option<&Observation> {
        self.list.first()
    }

    /// How many observations are pending.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when none is pending.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Where the contiguous run of positions that needs no proof starts: after the checkpoint or
/// after the highest proven head, whichever is higher. None: nothing is known to be final yet
/// (a fresh run, whose first observation is not proven).
pub fn proof_base(checkpoint: Option<i64>, proven_head: Option<i64>) -> Option<i64> {
    checkpoint.max(proven_head)
}

/// The sequence positions are drawn from, as the catalog describes it (`pg_sequence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceStart {
    /// Its name, for messages.
    pub name: String,
    /// `seqstart`: the first value it hands out.
    pub start: i64,
    /// `seqincrement`.
    pub increment: i64,
    /// `seqcycle`: it wraps around, so values are not increasing.
    pub cycle: bool,
}

/// The checkpoint a fresh run may start counting contiguous positions from: the position just
/// below the sequence's start, when nothing can be drawn below it (an ascending sequence that
/// does not cycle) and the lowest visible position agrees (is not below the start). None: no
/// floor, the first observation must be proven as before.
pub fn start_floor(seq: &SequenceStart, lowest_visible: i64) -> Option<i64> {
    if seq.increment <= 0 || seq.cycle || lowest_visible < seq.start {
        return None;
    }
    seq.start.checked_sub(1)
}

/// What a gap-aware bound computation saw.
#[derive(Debug, Clone)]
pub struct Hold {
    /// The safe bound, if any position is known to be final.
    pub bound: Option<i64>,
    /// The highest visible position.
    pub head: Option<i64>,
    /// While held below the head: the transactions the oldest unproven observation waits for.
    pub waiting_for: Vec<Value>,
    /// While held below the head with none of them open: the gap is younger than this
    /// `gap_age`.
    pub aging: Option<Duration>,
}

impl Hold {
    /// What holds the bound, for warnings: the open transactions, or the gap's age.
    pub fn describe(&self) -> String {
        match (self.waiting_for.is_empty(), self.aging) {
            (true, Some(age)) => format!(
                "a writer that reserved its position earlier (the gap is passed once it is {} old, `events.gap_age`)",
                humantime::format_duration(age)
            ),
            _ => describe_open(&self.waiting_for),
        }
    }
}

/// The reading bound of one run (or of `reproject run`); keeps the observations that gap-aware
/// mode still has to prove.
pub struct Cut<'a> {
    source: &'a EventSource,
    /// The rebuild run whose gaps are recorded; None for the live runner, which has no run
    /// row: its gaps are recorded under `projections`.
    run_id: Option<i64>,
    /// The live runner's projections.
    projections: Vec<String>,
    pending: Pending,
    /// [`start_floor`], once looked up (None: not yet).
    floor: Option<Option<i64>>,
}

impl<'a> Cut<'a> {
    /// A cut for reading `source`, recording gaps under `run_id`.
    pub fn new(source: &'a EventSource, run_id: i64) -> Cut<'a> {
        Cut {
            source,
            run_id: Some(run_id),
            projections: Vec::new(),
            pending: Pending::default(),
            floor: None,
        }
    }

    /// The bound of `reproject run` keeping `projections` live: the same proof, its gaps
    /// recorded under the projections (state/late_events.rs re-checks them).
    pub fn for_runner(source: &'a EventSource, projections: &[String]) -> Cut<'a> {
        Cut {
            source,
            run_id: None,
            projections: projections.to_vec(),
            pending: Pending::default(),
            floor: None,
        }
    }

    /// How old a proven gap must also be before it is passed (zero outside gap-aware mode).
    fn gap_age(&self) -> Duration {
        match self.source.ordering {
            Ordering::GapAware { gap_age } => gap_age,
            _ => Duration::ZERO,
        }
    }

    /// For messages: `run 7`, or `the runner`.
    fn who(&self) -> String {
        self.run_id
            .map_or("the runner".into(), |id| format!("run {id}"))
    }

    /// The bound right now, without waiting. None when nothing can be read (an empty table, or
    /// no position proven final yet).
    pub async fn bound(&mut self, client: &Client, at: &Cursor) -> Result<Option<Bound>> {
        match &self.source.ordering {
            Ordering::Serialized => Ok(self.source.head(client).await?.map(Bound::UpTo)),
            Ordering::Xid8 { .. } => {
                let row = client
                    .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
                    .await
                    .context("cannot read the transaction snapshot")?;
                let text: String = row.get(0);
                let xmin = text
                    .parse::<u64>()
                    .map_err(|_| Error::runtime(format!("unexpected snapshot xmin `{text}`")))?;
                Ok(Some(Bound::BelowTx(xmin)))
            }
            Ordering::GapAware { .. } => {
                Ok(self.gap_aware(client, at).await?.bound.map(Bound::UpTo))
            }
        }
    }

    /// Like [`Cut::bound`], and in gap-aware mode also what holds the bound below the head
    /// (for `reproject run` to say why it lags).
    pub async fn bound_and_hold(
        &mut self,
        client: &Client,
        at: &Cursor,
    ) -> Result<(Option<Bound>, Option<Hold>)> {
        if let Ordering::GapAware { .. } = self.source.ordering {
            let hold = self.gap_aware(client, at).await?;
            return Ok((hold.bound.map(Bound::UpTo), Some(hold)));
        }
        Ok((self.bound(client, at).await?, None))
    }

    /// Like [`Cut::bound`], but in gap-aware mode first waits (up to `max_wait`, polling, and
    /// naming the transactions it waits for) until everything visible now is proven, so that
    /// the bulk replay does not stop at a gap that a writer in flight is about to fill. Never
    /// passes a gap without proof: after `max_wait` it returns what is proven.
    pub async fn settle(
        &mut self,
        client: &Client,
        at: &Cursor,
        cancel: &Cancel,
        reporter: &dyn Reporter,
        max_wait: Duration,
    ) -> Result<Option<Bound>> {
        if let Ordering::Xid8 { .. } = self.source.ordering {
            return self
                .settle_xid8(client, at, cancel, reporter, max_wait)
                .await;
        }
        if !matches!(self.source.ordering, Ordering::GapAware { .. }) {
            return self.bound(client, at).await;
        }
        let started = Instant::now();
        let mut reported = started;
        let mut pause = Duration::from_millis(10);
        let mut target = None;
        // Where the bound was first held, and by what.
        let mut held: Option<String> = None;
        // The reminders below are one repeated wait: an updating line on a terminal.
        let key = format!("{}: open transactions", self.who());
        let rounds = std::cell::Cell::new(0u32);
        let over = |summary: Option<&Warning>| {
            if rounds.get() > 0 {
                reporter.wait_over(&key, summary);
            }
        };
        loop {
            let hold = match self.gap_aware(client, at).await {
                Ok(hold) => hold,
                Err(e) => {
                    over(None);
                    return Err(e);
                }
            };
            let Some(head) = hold.head else {
                over(None);
                return Ok(None);
            };
            let target = *target.get_or_insert(head);
            if hold.bound.is_some_and(|b| b >= target) {
                if rounds.get() > 0 {
                    over(Some(&Warning::OpenTransactionsEnded {
                        run_id: self.run_id,
                        waited: started.elapsed(),
                        up_to: target,
                    }));
                } else if let Some(why) = &held {
                    // A short wait is said once, so that a rebuild slower than its events
                    // explains itself.
                    reporter.step(&Step::WaitedForPositions {
                        run_id: self.run_id,
                        waited: started.elapsed(),
                        held_at: why.clone(),
                        up_to: target,
                    });
                }
                return Ok(hold.bound.map(Bound::UpTo));
            }
            if held.is_none() {
                held = Some(format!(
                    "{} ({})",
                    hold.bound
                        .map_or("the start".into(), |b| format!("position {b}")),
                    hold.describe()
                ));
            }
            if cancel.is_cancelled() {
                over(None);
                return Err(Error::interrupted(format!(
                    "{}: cancelled while waiting for open transactions",
                    self.who()
                )));
            }
            if started.elapsed() >= max_wait {
                over(None);
                reporter.warn(&Warning::PositionsNotFinal {
                    bound: hold.bound,
                    by: hold.describe(),
                });
                return Ok(hold.bound.map(Bound::UpTo));
            }
            if reported.elapsed() >= SETTLE_REPORT_EVERY {
                reported = Instant::now();
                rounds.set(rounds.get() + 1);
                reporter.waiting(&crate::progress::Waiting {
                    key: &key,
                    attempt: rounds.get(),
                    elapsed: started.elapsed(),
                    reason: &Warning::HoldingAtGap {
                        bound: hold.bound,
                        head,
                        by: hold.describe(),
                    },
                });
            }
            Cancel::sleep(Some(cancel), pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// xid8 mode: the cut is the oldest transaction still running anywhere in the cluster, so
    /// one long transaction (even in another database) holds it back. Before the bulk replay,
    /// wait (up to `max_wait`, naming the oldest open transactions) until the cut has passed
    /// every transaction that wrote an event visible now; then replay what is below the cut.
    async fn settle_xid8(
        &mut self,
        client: &Client,
        at: &Cursor,
        cancel: &Cancel,
        reporter: &dyn Reporter,
        max_wait: Duration,
    ) -> Result<Option<Bound>> {
        let Some(tx) = self.source.tx.clone() else {
            return self.bound(client, at).await;
        };
        // ORDER BY, not max(): PostgreSQL 14 has no max(xid8).
        let newest: Option<String> = client
            .query_opt(
                &format!(
                    "SELECT ({tx})::text FROM {} WHERE {tx} IS NOT NULL ORDER BY {tx} DESC LIMIT 1",
                    self.source.from
                ),
                &[],
            )
            .await
            .context("cannot read the newest transaction id of the event table")?
            .and_then(|r| r.get(0));
        let newest = newest.and_then(|t| t.parse::<u64>().ok());
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let bound = self.bound(client, at).await?;
            let passed = match (&bound, newest) {
                (_, None) => true,
                (Some(Bound::BelowTx(cut)), Some(newest)) => *cut > newest,
                _ => false,
            };
            if passed {
                return Ok(bound);
            }
            if cancel.is_cancelled() {
                return Err(Error::interrupted(format!(
                    "{}: cancelled while waiting for open transactions",
                    self.who()
                )));
            }
            if started.elapsed() >= max_wait {
                let open: Vec<String> = client
                    .query(
                        "SELECT format('pid %s (database %s, application `%s`, %s, transaction started %s)', \
                                pid, datname, application_name, state, xact_start) \
                         FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
                         ORDER BY xact_start LIMIT 3",
                        &[],
                    )
                    .await
                    .context("cannot read pg_stat_activity")?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                reporter.warn(&Warning::OlderTransactionsOpen { open });
                return Ok(bound);
            }
            Cancel::sleep(Some(cancel), pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// One gap-aware step: observe, prove what can be proven, record the gaps passed.
    async fn gap_aware(&mut self, client: &Client, at: &Cursor) -> Result<Hold> {
        let now = self.observe(client).await?;
        let Some(now) = now else {
            return Ok(Hold {
                bound: at.position,
                head: None,
                waiting_for: Vec::new(),
                aging: None,
            });
        };
        let head = now.head;
        let gap_age = self.gap_age();
        let mut proven = self.pending.prove(&now.open, gap_age);
        if now.open.is_empty() && gap_age.is_zero() {
            // Nothing is open: the observation proves itself (with a `gap_age`, it must age
            // first, in the pending list).
            proven.push(now.clone());
        }
        let proven_head = proven.iter().map(|p| p.head).max();
        // From the start, the position below the sequence's start value is final already.
        let floor = match at.position {
            Some(_) => None,
            None => self.start_floor(client).await?,
        };
        let checkpoint = at.position.or(floor);
        let bound = match proof_base(checkpoint, proven_head) {
            None => None,
            Some(base) if base >= head => Some(base),
            Some(base) => Some(self.contiguous_end(client, base, head).await?),
        }
        // Nothing readable yet: as without a floor (the caller reads nothing either way).
        .filter(|b| at.position.is_some() || Some(*b) != floor);
        // The gaps passed lie below the highest proven head (above it positions are
        // contiguous). Each is recorded with the earliest observation that proves it: the
        // one that names the transactions that were open when the gap was seen. From the
        // floor, a hole at the start is such a gap.
        let mut after = checkpoint;
        for proof in &proven {
            if after.is_none_or(|a| a < proof.head) {
                self.record_gaps(client, after, proof.head, proof).await?;
                after = Some(proof.head);
            }
        }
        let held = bound.is_none_or(|b| b < head);
        let waiting_for = if held {
            self.pending.push(now.clone());
            self.pending
                .oldest()
                .map(|o| o.still_open(&now.open).into_iter().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Hold {
            bound,
            head: Some(head),
            waiting_for,
            aging: (held && !gap_age.is_zero()).then_some(gap_age),
        })
    }

    /// [`start_floor`] for this source, looked up once (the first time a fresh run observes
    /// a head): the sequence positions come from, and the lowest visible position.
    async fn start_floor(&mut self, client: &Client) -> Result<Option<i64>> {
        if let Some(floor) = self.floor {
            return Ok(floor);
        }
        let floor = match self.position_sequence(client).await? {
            None => None,
            Some(seq) => {
                let lowest: Option<i64> = client
                    .query_one(
                        &format!(
                            "SELECT min({pos})::bigint FROM {table}",
                            pos = self.source.position,
                            table = self.source.from
                        ),
                        &[],
                    )
                    .await
                    .with_context(|| {
                        format!("cannot read the lowest position of `{}`", self.source.table)
                    })?
                    .get(0);
                let floor = lowest.and_then(|l| start_floor(&seq, l));
                match (floor, lowest) {
                    (Some(_), Some(l)) if l == seq.start => tracing::info!(
                        "{}: positions begin at {l}, the start of `{}`: no gap lies below the first position",
                        self.who(),
                        seq.name
                    ),
                    (Some(_), Some(l)) => tracing::info!(
                        "{}: `{}` starts at {}, the lowest position is {l}: the hole below it is a gap like any other",
                        self.who(),
                        seq.name,
                        seq.start
                    ),
                    _ => tracing::info!(
                        "{}: `{}` (start {}, increment {}{}) does not say where the positions of `{}` begin (lowest {:?})",
                        self.who(),
                        seq.name,
                        seq.start,
                        seq.increment,
                        if seq.cycle { ", cycling" } else { "" },
                        self.source.table,
                        lowest
                    ),
                }
                floor
            }
        };
        self.floor = Some(floor);
        Ok(floor)
    }

    /// The sequence the positions are drawn from (source.rs `PositionOrigin`), if known. A
    /// column whose default or identity involves more than one sequence names none.
    async fn position_sequence(&self, client: &Client) -> Result<Option<SequenceStart>> {
        const OF: &str = "SELECT c.oid::regclass::text, s.seqstart, s.seqincrement, s.seqcycle              FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid";
        let rows = match &self.source.position_origin {
            PositionOrigin::Unknown => return Ok(None),
            PositionOrigin::Sequence(seq) => client
                .query(
                    &format!("{OF} WHERE s.seqrelid = to_regclass($1)"),
                    &[&seq.quoted()],
                )
                .await
                .with_context(|| format!("cannot read sequence `{seq}`"))?,
            // Serial and identity sequences depend on the column (pg_get_serial_sequence's
            // test); a `DEFAULT nextval('s')` makes the default depend on `s`.
            PositionOrigin::Column(column) => client
                .query(
                    &format!(
                        "WITH col AS (SELECT attrelid, attnum FROM pg_attribute                                       WHERE attrelid = to_regclass($1) AND attname = $2                                         AND attnum > 0 AND NOT attisdropped),                               seqs AS (SELECT d.objid AS seq FROM col JOIN pg_depend d                                          ON d.classid = 'pg_class'::regclass                                         AND d.refclassid = 'pg_class'::regclass                                         AND d.refobjid = col.attrelid AND d.refobjsubid = col.attnum                                         AND d.deptype IN ('a', 'i')                                        UNION                                        SELECT d.refobjid FROM col JOIN pg_attrdef ad                                          ON ad.adrelid = col.attrelid AND ad.adnum = col.attnum                                        JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass                                         AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass)                          {OF} JOIN seqs ON seqs.seq = s.seqrelid"
                    ),
                    &[&self.source.table.quoted(), column],
                )
                .await
                .with_context(|| {
                    format!(
                        "cannot read the sequence of `{}`.`{column}`",
                        self.source.table
                    )
                })?,
        };
        let [row] = rows.as_slice() else {
            return Ok(None);
        };
        Ok(Some(SequenceStart {
            name: row.get(0),
            start: row.get(1),
            increment: row.get(2),
            cycle: row.get(3),
        }))
    }

    /// Reads the head and then the open writing transactions, in one statement (see the module
    /// docs: the open set must be read after the snapshot that saw the head).
    async fn observe(&self, client: &Client) -> Result<Option<Observation>> {
        // pg_stat_activity (only used to describe the transactions) is cached for the rest of
        // a transaction once read, and the final tail runs inside the swap transaction.
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .context("cannot refresh the activity statistics")?;
        let sql = format!(
            "WITH open AS ( \
               SELECT DISTINCT l.pid, l.virtualtransaction, \
                      coalesce(l.pid::text, 'prepared') || '/' || l.virtualtransaction AS id \
               FROM pg_locks l \
               WHERE l.granted AND l.locktype = 'relation' \
                 AND l.pid IS DISTINCT FROM pg_backend_pid() \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND (l.relation IN (SELECT oid FROM pg_class WHERE relkind = 'S') \
                      OR (l.relation IN (SELECT relid FROM pg_partition_tree({regclass}::regclass)) \
                          AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')))) \
             SELECT (SELECT max({pos})::bigint FROM {table}), \
                    coalesce(array_agg(o.id ORDER BY o.id), '{{}}'), \
                    coalesce(jsonb_agg(jsonb_build_object('id', o.id, 'pid', o.pid, \
                        'prepared', CASE WHEN o.pid IS NULL THEN o.virtualtransaction END, \
                        'application', a.application_name, 'state', a.state, \
                        'xact_start', a.xact_start, 'query', left(a.query, 100)) ORDER BY o.id), '[]') \
             FROM open o LEFT JOIN pg_stat_activity a ON a.pid = o.pid",
            pos = self.source.position,
            table = self.source.from,
            regclass = crate::model::ident::literal(&self.source.table.quoted()),
        );
        let row = client.query_one(&sql, &[]).await.with_context(|| {
            format!(
                "cannot observe the head of `{}` and the open transactions",
                self.source.table
            )
        })?;
        let Some(head) = row.get::<_, Option<i64>>(0) else {
            return Ok(None);
        };
        let open: Vec<String> = row.get(1);
        let details: Value = row.get(2);
        Ok(Some(Observation {
            head,
            open: open.into_iter().collect(),
            details: details.as_array().cloned().unwrap_or_default(),
            observed_at: Utc::now(),
            seen: Instant::now(),
        }))
    }

    /// The missing positions after `lo` (all when None) up to `hi`, as ranges `gap_from,
    /// gap_to`. A hole below the first position is not a gap: nothing says where positions start.
    fn missing_ranges_sql(&self) -> String {
        format!(
            "SELECT gap_from, gap_to, p FROM ( \
               SELECT lag(p, 1, $1::bigint) OVER (ORDER BY p) + 1 AS gap_from, p - 1 AS gap_to, p \
               FROM (SELECT ({pos})::bigint AS p FROM {table} \
                     WHERE ($1::bigint IS NULL OR {pos} > $1::bigint) AND {pos} <= $2::bigint) s) g \
             WHERE gap_from <= gap_to",
            pos = self.source.position,
            table = self.source.from,
        )
    }

    /// The last position of the contiguous run after `base` (`base` itself if `base + 1` is
    /// missing), at most `head`.
    async fn contiguous_end(&self, client: &Client, base: i64, head: i64) -> Result<i64> {
        let sql = format!("{} ORDER BY p LIMIT 1", self.missing_ranges_sql());
        let row = client
            .query_opt(&sql, &[&Some(base), &head])
            .await
            .with_context(|| {
                format!(
                    "cannot look for gaps in the positions of `{}`",
                    self.source.table
                )
            })?;
        Ok(row.map_or(head, |r| r.get::<_, i64>(0) - 1))
    }

    /// Records the gaps after `after` up to `upto`, which `proof` showed nothing can fill.
    async fn record_gaps(
        &self,
        client: &Client,
        after: Option<i64>,
        upto: i64,
        proof: &Observation,
    ) -> Result<()> {
        if self.run_id.is_none() && self.projections.is_empty() {
            return Ok(());
        }
        // Positions are unique (an assumption of this mode), so as many positions as the
        // range is wide means no gap. Counting reads the position index once; looking for the
        // gaps sorts every position through a window function (0.55 s of a 5 s W1 rebuild at
        // 1.5 M events, where positions are contiguous).
        let count_sql = format!(
            "SELECT count(*), min(({pos})::bigint) FROM {table} \
              WHERE ($1::bigint IS NULL OR {pos} > $1::bigint) AND {pos} <= $2::bigint",
            pos = self.source.position,
            table = self.source.from,
        );
        let row = client
            .query_one(&count_sql, &[&after, &upto])
            .await
            .with_context(|| {
                format!(
                    "cannot count the positions of `{}` up to {upto}",
                    self.source.table
                )
            })?;
        let (count, first): (i64, Option<i64>) = (row.get(0), row.get(1));
        let width = match (after, first) {
            (Some(a), _) => Some(upto - a),
            (None, Some(f)) => Some(upto - f + 1),
            (None, None) => None,
        };
        if width.is_none_or(|w| w == count) {
            return Ok(());
        }
        // A run's gaps name its projections; the runner's, the projections it keeps live. The
        // runner records a gap again after a restart (it proves from its checkpoint): kept once.
        let sql = format!(
            "INSERT INTO reproject.gaps (run_id, projections, from_position, to_position, evidence) \
             SELECT $3, coalesce((SELECT projections FROM reproject.runs WHERE id = $3), $5::text[]), \
                    gap_from, gap_to, $4::jsonb FROM ({}) r \
             ON CONFLICT {} DO NOTHING",
            self.missing_ranges_sql(),
            if self.run_id.is_some() {
                "(run_id, from_position) WHERE run_id IS NOT NULL"
            } else {
                "(projections, from_position) WHERE run_id IS NULL"
            }
        );
        let n = client
            .execute(
                &sql,
                &[
                    &after,
                    &upto,
                    &self.run_id,
                    &proof.evidence(self.gap_age()),
                    &self.projections,
                ],
            )
            .await
            .context("cannot record the gaps passed in reproject.gaps")?;
        if n > 0 {
            tracing::info!(
                "{}: passed {n} gap(s) in the positions of `{}` up to {upto}: no open transaction can fill them",
                self.who(),
                self.source.table
            );
        }
        Ok(())
    }
}

/// `pid 123 (application `x`, idle in transaction, since ...)`, for warnings.
pub fn describe_open(open: &[Value]) -> String {
    if open.is_empty() {
        return "transactions that have ended since".into();
    }
    let list: Vec<String> = open
        .iter()
        .take(5)
        .map(|d| match d.get("prepared").and_then(|v| v.as_str()) {
            Some(vxid) => format!("prepared transaction {vxid}"),
            None => format!(
                "pid {} (application `{}`, {}, transaction started {})",
                d["pid"],
                d["application"].as_str().unwrap_or(""),
                d["state"].as_str().unwrap_or("unknown state"),
                d["xact_start"].as_str().unwrap_or("?")
            ),
        })
        .collect();
    let more = open.len().saturating_sub(list.len());
    format!(
        "{}{}",
        list.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(head: i64, open: &[&str]) -> Observation {
        Observation {
            head,
            open: open.iter().map(|s| s.to_string()).collect(),
            details: open.iter().map(|s| json!({ "id": s, "pid": 1 })).collect(),
            observed_at: Utc::now(),
            seen: Instant::now(),
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_observation_is_proven_only_when_all_its_transactions_ended() {
        let mut p = Pending::default();
        p.push(obs(10, &["1/5", "2/7"]));
        assert!(
            p.prove(&set(&["2/7", "3/1"]), Duration::ZERO).is_empty(),
            "2/7 is still open"
        );
        assert_eq!(p.len(), 1);
        let proven = p.prove(&set(&["3/1"]), Duration::ZERO);
        assert_eq!(proven.len(), 1, "both ended");
        assert_eq!(proven[0].head, 10);
        assert!(p.is_empty());
    }

    #[test]
    fn proving_returns_the_proven_lowest_first_and_keeps_the_rest() {
        let mut p = Pending::default();
        p.push(obs(10, &["a"]));
        p.push(obs(20, &["b"]));
        p.push(obs(30, &["c", "a"]));
        let proven = p.prove(&set(&["c"]), Duration::ZERO);
        let heads: Vec<i64> = proven.iter().map(|o| o.head).collect();
        assert_eq!(heads, [10, 20], "10 and 20 are proven, 30 waits for `c`");
        assert_eq!(p.len(), 1);
        assert_eq!(p.oldest().unwrap().head, 30);
    }

    #[test]
    fn with_a_gap_age_an_observation_is_proven_only_once_it_is_that_old() {
        let mut p = Pending::default();
        let mut old = obs(10, &["a"]);
        old.seen = Instant::now() - Duration::from_secs(6);
        p.push(old);
        p.push(obs(20, &[]));
        let age = Duration::from_secs(5);
        assert!(
            p.prove(&set(&["a"]), age).is_empty(),
            "old enough, but `a` is still open; the young one has nothing open but is 0 s old"
        );
        let proven = p.prove(&set(&[]), age);
        let heads: Vec<i64> = proven.iter().map(|o| o.head).collect();
        assert_eq!(heads, [10], "only the one that is 5 s old");
        assert_eq!(p.len(), 1, "the young one waits");
        assert_eq!(
            p.prove(&set(&[]), Duration::ZERO).len(),
            1,
            "without an age it is proven at once"
        );
    }

    #[test]
    fn a_newer_observation_of_the_same_head_is_not_kept() {
        let mut p = Pending::default();
        p.push(obs(10, &["a"]));
        p.push(obs(10, &["b"]));
        p.push(obs(9, &["c"]));
        assert_eq!(p.len(), 1);
        assert!(p.oldest().unwrap().open.contains("a"));
    }

    #[test]
    fn a_full_list_replaces_its_newest_and_keeps_its_oldest() {
        let mut p = Pending::default();
        for h in 1..=(MAX_PENDING as i64 + 3) {
            p.push(obs(h, &["x"]));
        }
        assert_eq!(p.len(), MAX_PENDING);
        assert_eq!(p.oldest().unwrap().head, 1);
        assert_eq!(p.list.last().unwrap().head, MAX_PENDING as i64 + 3);
    }

    #[test]
    fn the_proof_base_is_the_higher_of_checkpoint_and_proven_head() {
        assert_eq!(proof_base(None, None), None, "a fresh run must prove first");
        assert_eq!(proof_base(Some(5), None), Some(5));
        assert_eq!(proof_base(None, Some(7)), Some(7));
        assert_eq!(proof_base(Some(9), Some(7)), Some(9));
    }

    fn seq(start: i64, increment: i64, cycle: bool) -> SequenceStart {
        SequenceStart {
            name: "s".into(),
            start,
            increment,
            cycle,
        }
    }

    #[test]
    fn the_start_floor_is_below_the_sequences_start_when_nothing_visible_is_below_it() {
        assert_eq!(
            start_floor(&seq(1, 1, false), 1),
            Some(0),
            "the first position is the start: counting from 0 needs no proof"
        );
        assert_eq!(
            start_floor(&seq(1, 1, false), 2),
            Some(0),
            "a writer holds 1: the floor stays at 0, so 1 is a gap to prove, not skipped"
        );
        assert_eq!(start_floor(&seq(1000, 1, false), 1000), Some(999));
        assert_eq!(
            proof_base(Some(0).or(None), None),
            Some(0),
            "a fresh run with a floor has a base without any proven observation"
        );
    }

    #[test]
    fn no_start_floor_where_the_sequence_does_not_say_where_positions_begin() {
        assert_eq!(
            start_floor(&seq(1000, 1, false), 5),
            None,
            "positions below the start exist (START changed, or not drawn from it)"
        );
        assert_eq!(start_floor(&seq(1, -1, false), 1), None, "descending");
        assert_eq!(start_floor(&seq(1, 1, true), 1), None, "cycling");
        assert_eq!(
            start_floor(&seq(i64::MIN, 1, false), i64::MIN),
            None,
            "nothing below the lowest bigint"
        );
    }

    #[test]
    fn still_open_lists_only_transactions_that_did_not_end() {
        let o = obs(3, &["1/1", "2/2"]);
        let left = o.still_open(&set(&["2/2"]));
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["id"], "2/2");
        assert!(describe_open(&[json!({"pid": 4, "application": "app", "state": "idle in transaction", "xact_start": "t"})])
            .contains("pid 4 (application `app`, idle in transaction"));
    }
}
