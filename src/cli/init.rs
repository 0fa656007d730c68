//! `reproject init`: writes the starter config the library reads from the catalog, to stdout
//! or to a file it never overwrites unasked.

use reproject::error::{Error, Result};
use reproject::Db;
use std::io::Write;
use std::path::Path;

pub async fn run(
    database_url: Option<&str>,
    table: Option<&str>,
    output: Option<&Path>,
    force: bool,
    json: bool,
) -> Result<()> {
    // Refused before connecting: a config someone edited is worth more than a fresh guess.
    if let Some(path) = output {
        if path.exists() && !force {
            return Err(refuse_existing(path));
        }
    }
    let db = Db::from_url_or_env(database_url)?;
    let starter = reproject::commands::init(&db, table).await?;
    for note in &starter.notes {
        super::log::line("INFO", "note: ", note);
    }
    // With --json, stdout gets what was found (and the config's text when it is not written
    // to a file) as the versioned object every command prints.
    let print_json = |written: Option<&Path>| {
        super::print::json(&serde_json::json!({
            "table": starter.table,
            "preset": starter.preset,
            "missing": starter.missing,
            "notes": starter.notes,
            "output": written.map(|p| p.display().to_string()),
            "config": if written.is_none() { Some(&starter.toml) } else { None },
        }))
    };
    let Some(path) = output else {
        if json {
            print_json(None);
        } else {
            print!("{}", starter.toml);
        }
        return warn_missing(&starter.missing, "the config");
    };
    let mut file = if force {
        std::fs::File::create(path)
    } else {
        // create_new: a file that appeared since the check above is not overwritten either.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    }
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            refuse_existing(path)
        } else {
            Error::runtime(format!("cannot write `{}`", path.display())).caused_by(e)
        }
    })?;
    file.write_all(starter.toml.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::runtime(format!("cannot write `{}`", path.display())).caused_by(e))?;
    let wrote = match &starter.preset {
        Some(preset) => format!(
            "wrote {}: the `{preset}` preset for `{}`",
            path.display(),
            starter.table
        ),
        None => format!(
            "wrote {}: the columns of `{}`, each with why it was chosen",
            path.display(),
            starter.table
        ),
    };
    super::log::line("INFO", "", &wrote);
    super::log::line(
        "INFO",
        "",
        "next: add a projection (see the commented [[projection]]) and run `reproject plan`",
    );
    if json {
        print_json(Some(path));
    }
    warn_missing(&starter.missing, &format!("`{}`", path.display()))
}

fn refuse_existing(path: &Path) -> Error {
    Error::config(format!(
        "`{}` already exists; not overwritten",
        path.display()
    ))
    .with_hint("pass --force to replace it, or write to another --output")
}

/// Required keys left for the user: the config is written, and says where, but a rebuild
/// cannot start before they are filled in.
fn warn_missing(missing: &[&str], where_: &str) -> Result<()> {
    if !missing.is_empty() {
        super::log::line(
            "WARN",
            "warning: ",
            &format!(
                "no column found for `{}`: fill in the commented key(s) in {where_}",
                missing.join("`, `")
            ),
        );
    }
    Ok(())
}
