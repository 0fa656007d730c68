//! The terminal side of [`reproject::progress::Reporter`]: progress bars on a terminal, a log
//! line every few seconds elsewhere (CI logs, cron mail), nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reproject::progress::Reporter;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct TermReporter {
    quiet: bool,
    tty: bool,
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
}

impl TermReporter {
    pub fn new(quiet: bool) -> Self {
        TermReporter {
            quiet,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State::default()),
        }
    }

    fn line(&self, text: &str) {
        let state = self.state.lock().unwrap();
        let text = super::style::paint(text);
        match &state.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
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
    fn step(&self, message: &str) {
        if !self.quiet {
            self.line(&format!("-> {message}"));
        }
    }

    fn warn(&self, message: &str) {
        self.line(&format!("warning: {message}"));
    }

    fn replay_started(&self, label: &str, total: u64) {
        let mut s = self.state.lock().unwrap();
        s.label = label.to_string();
        s.total = total;
        s.done = 0;
        s.started = Some(Instant::now());
        s.last_log = Some(Instant::now());
        if self.quiet || !self.tty {
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
        eprintln!(
            "{}: {done}/{} events ({pct:.0}%), {r:.0} events/s, ETA {eta:.0}s",
            s.label, s.total
        );
    }

    fn replay_finished(&self) {
        let mut s = self.state.lock().unwrap();
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            let secs = s.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            eprintln!(
                "-> {}: {} events in {secs:.1}s ({:.0} events/s)",
                s.label,
                s.done,
                rate(s.done, s.started)
            );
        }
    }
}
