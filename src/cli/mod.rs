//! The binary's side: arguments, confirmation prompts, printing, the terminal reporter.

pub mod args;
pub mod check;
pub mod docs;
pub mod init;
pub mod log;
pub mod print;
pub mod prompt;
pub mod reporter;
pub mod style;

use reproject::error::{Error, ErrorKind, Result};
use std::io::{BufRead, IsTerminal, Write};

/// Whether to ask before `action`: not with `--yes`; refused (never blocks) when there is no
/// terminal to ask on.
pub fn must_ask(action: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(false);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::config(format!(
            "{action}: confirmation needed, but there is no terminal to ask on"
        ))
        .with_hint("pass `--yes` to confirm in scripts and cron jobs"));
    }
    Ok(true)
}

/// Shows `question` and reads the answer; anything but yes is a [`ErrorKind::Declined`]
/// error (exit 5), so a script can tell "said no" from "failed".
pub fn ask(question: &str) -> Result<()> {
    eprint!("{}\nProceed? [y/N] ", style::paint(question));
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok();
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Declined,
            "not confirmed; nothing was changed",
        ))
    }
}
