//! Maintenance windows: when a swap is allowed.
//!
//! `--swap-at TIME` allows the swap from that moment on (a time in the past allows it now);
//! `--swap-window HH:MM-HH:MM` allows it every day between the two times (a window that
//! crosses midnight, like `23:00-01:00`, is fine). Times without an offset are in the local
//! time zone of the machine running reproject (`TZ`), as cron reads them.

use crate::error::{Error, Result};
use chrono::{DateTime, Duration, Local, NaiveTime, TimeZone};
use std::fmt;

/// When a swap may happen (`--swap-window`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapWindow {
    /// From this moment on.
    At(DateTime<Local>),
    /// Every day from `start` (inclusive) to `end` (exclusive), local time.
    Daily {
        /// First moment of the window.
        start: NaiveTime,
        /// End of the window (not included).
        end: NaiveTime,
    },
}

impl fmt::Display for SwapWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwapWindow::At(t) => write!(f, "from {}", t.format("%Y-%m-%d %H:%M:%S %Z")),
            SwapWindow::Daily { start, end } => {
                write!(
                    f,
                    "daily {}-{} local time",
                    start.format("%H:%M"),
                    end.format("%H:%M")
                )
            }
        }
    }
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .ok()
}

impl SwapWindow {
    /// `--swap-at`: an RFC 3339 timestamp (`2026-11-23T02:00:00+01:00`), `YYYY-MM-DD HH:MM`
    /// (local), or `HH:MM` (local, the next time the clock shows it).
    pub fn parse_at(text: &str, now: DateTime<Local>) -> Result<SwapWindow> {
        let text = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(SwapWindow::At(t.with_timezone(&Local)));
        }
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M") {
            if let Some(t) = Local.from_local_datetime(&t).earliest() {
                return Ok(SwapWindow::At(t));
            }
        }
        if let Some(time) = parse_time(text) {
            let today = now.date_naive().and_time(time);
            let mut at = Local.from_local_datetime(&today).earliest();
            if at.is_some_and(|t| t < now) {
                at = Local
                    .from_local_datetime(&(today + Duration::days(1)))
                    .earliest();
            }
            if let Some(at) = at {
                return Ok(SwapWindow::At(at));
            }
        }
        Err(
            Error::config(format!("--swap-at: cannot read `{text}` as a time")).with_hint(
                "write `HH:MM`, `YYYY-MM-DD HH:MM` (local time) or an RFC 3339 timestamp",
            ),
        )
    }

    /// `--swap-window HH:MM-HH:MM` (local time).
    pub fn parse_daily(text: &str) -> Result<SwapWindow> {
        let parsed = text
            .split_once('-')
            .and_then(|(a, b)| Some((parse_time(a.trim())?, parse_time(b.trim())?)));
        match parsed {
            Some((start, end)) if start != end => Ok(SwapWindow::Daily { start, end }),
            _ => Err(
                Error::config(format!("--swap-window: cannot read `{text}` as a window"))
                    .with_hint(
                        "write `HH:MM-HH:MM` in local time, e.g. `02:00-04:30` or `23:00-01:00`",
                    ),
            ),
        }
    }

    /// None when a swap is allowed at `now`; otherwise when it next will be.
    pub fn next_open(&self, now: DateTime<Local>) -> Option<DateTime<Local>> {
        match self {
            SwapWindow::At(t) => (*t > now).then_some(*t),
            SwapWindow::Daily { start, end } => {
                let time = now.time();
                let open = if start < end {
                    time >= *start && time < *end
                } else {
                    time >= *start || time < *end
                };
                if open {
                    return None;
                }
                let today = now.date_naive().and_time(*start);
                let next = if now.time() < *start {
                    today
                } else {
                    today + Duration::days(1)
                };
                Local.from_local_datetime(&next).earliest()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Local> {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 22)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap();
        Local.from_local_datetime(&d).earliest().unwrap()
    }

    #[test]
    fn daily_windows() {
        let w = SwapWindow::parse_daily("02:00-04:30").unwrap();
        assert_eq!(w.next_open(at(3, 0)), None);
        assert_eq!(w.next_open(at(1, 0)), Some(at(2, 0)));
        assert_eq!(
            w.next_open(at(4, 30)).unwrap(),
            at(2, 0) + Duration::days(1)
        );
        let night = SwapWindow::parse_daily("23:00-01:00").unwrap();
        assert_eq!(night.next_open(at(23, 30)), None);
        assert_eq!(night.next_open(at(0, 30)), None);
        assert_eq!(night.next_open(at(12, 0)), Some(at(23, 0)));
        assert!(SwapWindow::parse_daily("02:00").is_err());
        assert!(SwapWindow::parse_daily("02:00-02:00").is_err());
        assert!(SwapWindow::parse_daily("25:00-26:00").is_err());
    }

    #[test]
    fn swap_at() {
        let now = at(10, 0);
        assert_eq!(
            SwapWindow::parse_at("11:15", now).unwrap(),
            SwapWindow::At(at(11, 15))
        );
        assert_eq!(
            SwapWindow::parse_at("09:00", now).unwrap(),
            SwapWindow::At(at(9, 0) + Duration::days(1)),
            "a clock time already past today means tomorrow"
        );
        let past = SwapWindow::parse_at("2026-11-22 08:00", now).unwrap();
        assert_eq!(
            past.next_open(now),
            None,
            "a moment in the past allows the swap now"
        );
        let rfc = SwapWindow::parse_at("2026-11-22T10:30:00+00:00", now).unwrap();
        assert!(matches!(rfc, SwapWindow::At(_)));
        assert!(SwapWindow::parse_at("tomorrow", now).is_err());
    }
}
