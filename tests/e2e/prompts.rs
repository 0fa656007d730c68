//! Confirmation prompts on a real terminal (a pseudo-terminal from util-linux `script`): the
//! question names what will be done to which database, and "no" has its own exit code (5).

use crate::harness::{binary, Out, Project, TestDb, PG_VARS};
use crate::tally;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// Runs `reproject --config CONFIG ARGS` on a pseudo-terminal, typing `answer` and Enter.
/// `None` when `script` is not installed (the caller skips).
async fn on_terminal(db: &TestDb, p: &Project, args: &str, answer: &str) -> Option<Out> {
    on_terminal_with(db, p, args, answer, &[("NO_COLOR", "1")]).await
}

/// As `on_terminal`, with `env` set (and `NO_COLOR` only if `env` sets it).
async fn on_terminal_with(
    db: &TestDb,
    p: &Project,
    args: &str,
    answer: &str,
    env: &[(&str, &str)],
) -> Option<Out> {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        return None;
    }
    let line = format!("{} --config {} {args}", binary(), p.config().display());
    let mut cmd = tokio::process::Command::new("script");
    // -q: no banner, -e: the child's exit code, /dev/null: no typescript file.
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("DATABASE_URL", &db.url)
        .env("USER", "tester")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in PG_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Typed once the prompt waits: the terminal keeps it until the program reads.
    stdin
        .write_all(format!("{answer}\n").as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("the prompt did not end")
    .unwrap();
    // `stdin` lives until here: closing it early would end the terminal before the answer.
    drop(stdin);
    Some(Out::from(out))
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_name_the_target_and_no_exits_5() {
    let (db, p) = tally::fixture(1234).await;
    let Some(out) = on_terminal(&db, &p, "rebuild", "n").await else {
        eprintln!("SKIPPED: no `script` (util-linux) for a pseudo-terminal");
        return;
    };
    // The terminal merges stdout and stderr.
    out.code(5)
        .stdout_has("rebuild on ")
        .stdout_has(&format!("/{}:", db.name))
        .stdout_has("projection `tally`: table `tally` (10 rows), rebuilt as `tally_rebuild`")
        .stdout_has("events to replay: 1,234")
        .stdout_has("the current ones are kept as `tally_old`")
        .stdout_has("Proceed? [y/N]")
        .stdout_has("not confirmed; nothing was changed");
    assert!(
        !db.exists("reproject.runs").await,
        "a declined rebuild wrote its state"
    );

    // Yes rebuilds and swaps.
    let out = on_terminal(&db, &p, "rebuild", "y").await.unwrap();
    out.ok().stdout_has("events to replay: 1,234");
    db.assert_int(
        "SELECT count(*) FROM reproject.runs WHERE status = 'swapped'",
        1,
    )
    .await;

    // The rollback names the run whose swap it undoes; no keeps everything as it is.
    let out = on_terminal(&db, &p, "rollback", "n").await.unwrap();
    out.code(5)
        .stdout_has("roll back on ")
        .stdout_has("run 1, projection `tally`: the tables its swap replaced come back as `tally`");
    db.assert_int(
        "SELECT count(*) FROM reproject.runs WHERE status = 'swapped'",
        1,
    )
    .await;

    // A rebuild left waiting: the swap's prompt names its run.
    p.reproject(&db, "rebuild --no-swap").await.ok();
    let out = on_terminal(&db, &p, "swap", "no").await.unwrap();
    out.code(5)
        .stdout_has("swap on ")
        .stdout_has("run 2, projection `tally`: the rebuilt tables replace `tally`");
    db.assert_int(
        "SELECT count(*) FROM reproject.runs WHERE status = 'awaiting_swap'",
        1,
    )
    .await;
    db.drop().await;
}

/// Colour marks `error:` and `hint:` on a terminal only: not with NO_COLOR, not in a pipe.
#[tokio::test(flavor = "multi_thread")]
async fn colour_on_terminals_only() {
    let (db, p) = tally::fixture(10).await;
    let Some(out) = on_terminal_with(&db, &p, "plan no_such", "", &[]).await else {
        eprintln!("SKIPPED: no `script` (util-linux) for a pseudo-terminal");
        return;
    };
    out.code(2).stdout_has("\x1b[1;31merror:\x1b[0m");
    let out = on_terminal(&db, &p, "plan no_such", "").await.unwrap();
    out.code(2).stdout_has("error:");
    assert!(!out.stdout.contains('\x1b'), "NO_COLOR: {:?}", out.stdout);
    let out = p.reproject(&db, "plan no_such").await;
    out.code(2).stderr_has("error:");
    assert!(!out.stderr.contains('\x1b'), "a pipe: {:?}", out.stderr);
    db.drop().await;
}
