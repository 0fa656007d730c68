//! What users expect around the binary: shell completions and man pages generated from the
//! CLI definition, and a docker-compose.yml that runs the demo (validated here, as no Docker
//! engine runs on the test machines).

use serde_norway::Value;
use std::path::Path;
use std::process::Command;

const SUBCOMMANDS: [&str; 7] = [
    "plan", "rebuild", "swap", "rollback", "cleanup", "status", "history",
];

fn reproject(args: &[&str]) -> String {
    let out = Command::new(crate::harness::binary())
        .args(args)
        // No config and no database: these commands must need neither.
        .env_remove("DATABASE_URL")
        .env("REPROJECT_CONFIG", "/nonexistent/reproject.toml")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "reproject {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn completions_name_every_subcommand_and_option() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = reproject(&["completions", shell]);
        assert!(
            script.len() > 1000,
            "{shell}: suspiciously short:\n{script}"
        );
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(
            script.contains("lock-timeout"),
            "{shell} lacks rebuild's options"
        );
    }
    let bash = reproject(&["completions", "bash"]);
    assert!(bash.contains("complete -F _reproject"), "{bash}");
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reproject.bash");
    std::fs::write(&file, bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn man_pages_document_the_commands() {
    let page = reproject(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH reproject 1"),
        "{page}"
    );
    assert!(page.contains(".TH reproject 1"), "{page}");
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("reproject\\-{sub}(1)")),
            "man page lacks {sub}:\n{page}"
        );
    }
    assert!(page.contains("database\\-url"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    reproject(&["man", "--out-dir", out_dir.to_str().unwrap()]);
    for name in std::iter::once("reproject.1".to_string())
        .chain(SUBCOMMANDS.iter().map(|s| format!("reproject-{s}.1")))
    {
        let text =
            std::fs::read_to_string(out_dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".SH SYNOPSIS"), "{name}:\n{text}");
    }
    let rebuild = std::fs::read_to_string(out_dir.join("reproject-rebuild.1")).unwrap();
    assert!(rebuild.contains("\\-\\-no\\-swap"), "{rebuild}");
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| {
        v.get(*key)
            .unwrap_or_else(|| panic!("docker-compose.yml: no `{}`", path.join(".")))
    })
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("docker-compose.yml: `{}` is not a string", path.join(".")))
}

#[test]
fn docker_compose_runs_the_demo_against_a_postgres_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let doc: Value = serde_norway::from_str(&yaml).expect("docker-compose.yml is not valid YAML");

    let services = get(&doc, &["services"]).as_mapping().unwrap();
    let names: Vec<_> = services.keys().filter_map(|k| k.as_str()).collect();
    assert_eq!(names, ["postgres", "demo"], "services");

    // The database: an official image with a health check the demo waits for.
    let image = text(&doc, &["services", "postgres", "image"]);
    assert!(image.starts_with("postgres:"), "{image}");
    let major: u32 = image["postgres:".len()..]
        .split(['.', '-'])
        .next()
        .unwrap()
        .parse()
        .expect("pin a PostgreSQL major version");
    assert!(
        (14..=18).contains(&major),
        "a version the test matrix covers: {image}"
    );
    let health =
        serde_norway::to_string(get(&doc, &["services", "postgres", "healthcheck", "test"]))
            .unwrap();
    assert!(health.contains("pg_isready"), "{health}");
    let password = text(
        &doc,
        &["services", "postgres", "environment", "POSTGRES_PASSWORD"],
    );

    // The demo: waits for health, connects to the service by name with its password, runs
    // scripts/demo.sh from the mounted source tree.
    assert_eq!(
        text(
            &doc,
            &["services", "demo", "depends_on", "postgres", "condition"]
        ),
        "service_healthy"
    );
    let url = text(&doc, &["services", "demo", "environment", "DATABASE_URL"]);
    let db = reproject::Db::new(url).expect("DATABASE_URL parses");
    assert_eq!(db.describe(), "postgres@postgres:5432/postgres");
    assert!(
        url.contains(&format!(":{password}@")),
        "the URL uses POSTGRES_PASSWORD"
    );

    let command = serde_norway::to_string(get(&doc, &["services", "demo", "command"])).unwrap();
    assert!(command.contains("bash scripts/demo.sh"), "{command}");
    assert!(
        command.contains("postgresql-client"),
        "demo.sh needs psql: {command}"
    );
    assert!(root.join("scripts/demo.sh").is_file());
    let demo = std::fs::read_to_string(root.join("scripts/demo.sh")).unwrap();
    for var in get(&doc, &["services", "demo", "environment"])
        .as_mapping()
        .unwrap()
        .keys()
    {
        let var = var.as_str().unwrap();
        if var != "CARGO_TARGET_DIR" {
            assert!(demo.contains(var), "scripts/demo.sh does not read {var}");
        }
    }

    let workdir = text(&doc, &["services", "demo", "working_dir"]);
    let volumes: Vec<&str> = get(&doc, &["services", "demo", "volumes"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes.contains(&format!(".:{workdir}").as_str()),
        "{volumes:?}"
    );
    // Every named volume is declared at the top level.
    let declared = get(&doc, &["volumes"]).as_mapping().unwrap();
    for v in &volumes {
        let name = v.split(':').next().unwrap();
        if !name.starts_with('.') && !name.starts_with('/') {
            assert!(declared.contains_key(name), "volume {name} is not declared");
        }
    }
}
