//! The terminal side of [`reproject::progress::Reporter`]: progress bars on a terminal, a log
//! line every few seconds elsewhere (CI logs, cron mail), JSON lines with `--log-format json`,
//! nothing but warnings with `--quiet`.
//!
//! A wait that repeats (the swap asking again for its locks) is one updating line on a
//! terminal and, in a log, its first round, a reminder at most every [`WAIT_LOG_EVERY`], and
//! the summary once it is over: never one line per attempt.

use super::log;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reproject::progress::{Reporter, Step, Waiting, Warning};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often a log repeats a wait that goes on.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(10);

pub struct TermReporter {
    quiet: bool,
    /// Progress bars and updating lines: stderr is a terminal, no `--quiet`, text logs.
    bars: bool,
    /// `--log-format json`.
    json: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    started: Option<Instant>,
    last_log: Option<Instant>,
    wait: Option<Wait>,
}

/// The wait going on.
struct Wait {
    key: String,
    /// Its updating line (on a terminal).
    spinner: Option<ProgressBar>,
    /// When a log last got a line about it.
    last_line: Instant,
}

impl TermReporter {
    pub fn new(quiet: bool) -> Self {
        let json = log::json();
        TermReporter {
            quiet,
            bars: !quiet && !json && std::io::stderr().is_terminal(),
            json,
            state: Mutex::new(State::default()),
        }
    }

    /// A line about the command: `level` is `INFO` (a step) or `WARN`; `text` without its
    /// label. JSON lines carry `kind` and `fields`, and for a typed step or warning its
    /// `event` (the variant's name) and `data` (its fields), from [`typed`].
    fn emit(&self, level: &str, kind: &str, text: &str, fields: serde_json::Value) {
        if self.json {
            let mut map = match fields {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            map.insert("kind".into(), kind.into());
            log::json_line(level, text, map);
            return;
        }
        let label = if level == "WARN" { "warning: " } else { "-> " };
        let text = super::style::paint(&format!("{label}{text}"));
        log::write_stderr(format!("{text}\n").as_bytes());
    }

    /// The bar now on screen (the replay's, else a wait's line), for the text log lines.
    fn show(state: &State) {
        let bar = state
            .bar
            .clone()
            .or_else(|| state.wait.as_ref().and_then(|w| w.spinner.clone()));
        log::set_bar(bar);
    }

    fn end_wait(state: &mut State) {
        if let Some(spinner) = state.wait.take().and_then(|w| w.spinner) {
            spinner.finish_and_clear();
        }
        Self::show(state);
    }
}

impl Drop for TermReporter {
    /// An error ends the command with its message right after: clear the lines first.
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
        Self::end_wait(&mut state);
    }
}

/// A step's or warning's JSON fields: `event`, its variant's name, and `data`, its fields.
fn typed(event: &impl serde::Serialize) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    if let Ok(serde_json::Value::Object(mut data)) = serde_json::to_value(event) {
        if let Some(name) = data.remove("event") {
            out.insert("event".into(), name);
        }
        out.insert("data".into(), serde_json::Value::Object(data));
    }
    out
}

fn rate(done: u64, since: Option<Instant>) -> f64 {
    let secs = since.map_or(0.0, |s| s.elapsed().as_secs_f64());
    if secs > 0.0 {
        done as f64 / secs
    } else {
        0.0
    }
}

impl Reporter for TermReporter {
    fn step(&self, step: &Step) {
        if !self.quiet {
            let fields = if self.json {
                typed(step).into()
            } else {
                serde_json::Value::Null
            };
            self.emit("INFO", "step", &step.to_string(), fields);
        }
    }

    fn warn(&self, warning: &Warning) {
        let fields = if self.json {
            typed(warning).into()
        } else {
            serde_json::Value::Null
        };
        self.emit("WARN", "warning", &warning.to_string(), fields);
    }

    fn waiting(&self, wait: &Waiting<'_>) {
        let mut s = self.state.lock().unwrap();
        let first = s.wait.as_ref().is_none_or(|w| w.key != wait.key);
        if first {
            Self::end_wait(&mut s);
            // Under a replay bar, a second bar would garble both: that wait is logged.
            let spinner = (self.bars && s.bar.is_none()).then(|| {
                let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                spinner.set_style(ProgressStyle::with_template("{spinner} {wide_msg}").unwrap());
                spinner.enable_steady_tick(Duration::from_millis(200));
                spinner
            });
            s.wait = Some(Wait {
                key: wait.key.to_string(),
                spinner,
                last_line: Instant::now(),
            });
            Self::show(&s);
        }
        let w = s.wait.as_mut().expect("set above");
        if let Some(spinner) = &w.spinner {
            spinner.set_message(format!(
                "{} ({:.1} s so far)",
                wait.reason,
                wait.elapsed.as_secs_f64()
            ));
            return;
        }
        if !first && w.last_line.elapsed() < WAIT_LOG_EVERY {
            return;
        }
        w.last_line = Instant::now();
        drop(s);
        let text = if first {
            wait.reason.to_string()
        } else {
            format!(
                "still waiting ({} attempts over {:.1} s): {}",
                wait.attempt,
                wait.elapsed.as_secs_f64(),
                wait.reason
            )
        };
        let mut fields = typed(wait.reason);
        fields.insert("wait".into(), wait.key.into());
        fields.insert("attempt".into(), wait.attempt.into());
        fields.insert(
            "elapsed_ms".into(),
            (wait.elapsed.as_millis() as u64).into(),
        );
        self.emit("WARN", "waiting", &text, fields.into());
    }

    fn wait_over(&self, key: &str, summary: Option<&Warning>) {
        {
            let mut s = self.state.lock().unwrap();
            if s.wait.as_ref().is_some_and(|w| w.key == key) {
                Self::end_wait(&mut s);
            }
        }
        if let Some(summary) = summary {
            let mut fields = typed(summary);
            fields.insert("wait".into(), key.into());
            self.emit("WARN", "wait_over", &summary.to_string(), fields.into());
        }
    }

    fn replay_started(&self, label: &str, total: u64) {
        let mut s = self.state.lock().unwrap();
        s.label = label.to_string();
        s.total = total;
        s.done = 0;
        s.started = Some(Instant::now());
        s.last_log = Some(Instant::now());
        if !self.bars {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:32}] {human_pos}/{human_len} events  {per_sec}  ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        s.bar = Some(bar);
        Self::show(&s);
    }

    fn replay_progress(&self, done: u64) {
        let mut s = self.state.lock().unwrap();
        s.done = done;
        if let Some(bar) = &s.bar {
            if done > s.total {
                bar.set_length(done);
            }
            bar.set_position(done);
            return;
        }
        if self.quiet || s.last_log.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        s.last_log = Some(Instant::now());
        let r = rate(done, s.started);
        let pct = if s.total > 0 {
            done as f64 * 100.0 / s.total as f64
        } else {
            100.0
        };
        let eta = if r > 0.0 {
            s.total.saturating_sub(done) as f64 / r
        } else {
            0.0
        };
        let (label, total) = (s.label.clone(), s.total);
        drop(s);
        let text =
            format!("{label}: {done}/{total} events ({pct:.0}%), {r:.0} events/s, ETA {eta:.0}s");
        if self.json {
            self.emit(
                "INFO",
                "progress",
                &text,
                serde_json::json!({
                    "replay": label, "done": done, "total": total,
                    "events_per_second": r.round(), "eta_seconds": eta.round(),
                }),
            );
        } else {
            log::write_stderr(format!("{text}\n").as_bytes());
        }
    }

    fn replay_finished(&self) {
        let mut s = self.state.lock().unwrap();
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        }
        Self::show(&s);
        if self.quiet {
            return;
        }
        let secs = s.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let (label, done, r) = (s.label.clone(), s.done, rate(s.done, s.started));
        drop(s);
        self.emit(
            "INFO",
            "replay_finished",
            &format!("{label}: {done} events in {secs:.1}s ({r:.0} events/s)"),
            serde_json::json!({ "replay": label, "events": done, "seconds": secs }),
        );
    }
}
