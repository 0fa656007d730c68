//! The binary's side: arguments, confirmation prompts, printing, the terminal reporter.

pub mod args;
pub mod check;
pub mod docs;
pub mod init;
pub mod print;
pub mod reporter;

use reproject::error::{Error, Result};
use std::io::{BufRead, IsTerminal, Write};

/// Asks for confirmation on a terminal; refuses (never blocks) when there is none.
pub fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::config(format!(
            "{question}: confirmation needed, but there is no terminal to ask on"
        ))
        .with_hint("pass `--yes` to confirm in scripts and cron jobs"));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok();
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::config("not confirmed; nothing was changed"))
    }
}
