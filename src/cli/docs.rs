//! Shell completions and man pages, generated from the clap definition so they never drift
//! from `--help`.

use super::args::{Cli, Command};
use clap::CommandFactory;
use std::io::Write;

/// Runs `completions` / `man`; `None` for every other command. Returns the exit code.
/// Their output is a shell script or a man page, which has no JSON form: `--json` is refused
/// rather than ignored.
pub fn run(command: &Command, json: bool) -> Option<i32> {
    if json && matches!(command, Command::Completions { .. } | Command::Man { .. }) {
        let err = reproject::Error::config(
            "`completions` and `man` print a shell script or a man page; they have no JSON output",
        )
        .with_hint("run them without `--json`");
        super::log::error(&err);
        super::print::error_json(&err);
        return Some(err.kind.exit_code());
    }
    let result = match command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut out = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut cmd, "reproject", &mut out);
            out.flush()
        }
        Command::Man { out_dir: None } => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .and_then(|()| out.flush())
        }
        Command::Man { out_dir: Some(dir) } => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        _ => return None,
    };
    Some(match result {
        Ok(()) => 0,
        // A closed pipe (`reproject man | head`) is not worth a complaint.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write the output\n  caused by: {e}");
            1
        }
    })
}
