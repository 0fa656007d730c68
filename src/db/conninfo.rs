//! Connection strings as libpq users write them, translated for tokio-postgres.
//!
//! Users paste what works with `psql`: URLs or `key=value` strings with
//! `sslmode=verify-full&sslrootcert=...`, and they rely on `PG*` environment variables and
//! `~/.pgpass`. tokio-postgres parses only part of that (it rejects `sslrootcert`, `sslcert`,
//! `sslkey` and the `verify-*` modes), so the TLS parameters are taken out of the string here,
//! the rest is handed to tokio-postgres, and the TLS settings travel separately to `db::tls`.
//!
//! Nothing here ever puts a value from the string into an error message: any of them might be
//! (or, after a typo, contain) the password.

use super::params;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::Config;

/// Where settings missing from the connection string come from: the process environment in
/// the binary, nothing in `Db::new`, a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// libpq's `sslmode`. tokio-postgres knows only disable, prefer and require, and never
/// verifies anything itself: verification is configured in `db::tls` from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Treated as `prefer` (tokio-postgres cannot try plaintext first); neither verifies.
    Allow,
    /// TLS if the server offers it, without verification (the default).
    Prefer,
    /// TLS required; the certificate is verified only if `sslrootcert` is given (as libpq does).
    Require,
    /// TLS with the server certificate verified against the root certificates.
    VerifyCa,
    /// As `VerifyCa`, and the host name must match the certificate.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(Error::config("invalid sslmode in the connection settings")
                    .with_hint("use disable, allow, prefer, require, verify-ca or verify-full"))
            }
        })
    }

    /// The name as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The CA certificates that may sign the server's certificate (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trusted CAs (libpq 16+).
    System,
}

/// What `db::tls` needs to build a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    /// Client certificate and key (`sslcert`, `sslkey`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A parsed connection: tokio-postgres' part and ours.
#[derive(Debug)]
pub struct ConnInfo {
    pub config: Config,
    pub tls: TlsSettings,
    /// libpq's `connect_timeout` from the string or `PGCONNECT_TIMEOUT`, in seconds, as libpq
    /// reads it (`Some(0)`: wait indefinitely; otherwise at least 2), `None` when neither sets it.
    /// It bounds each address's whole attempt (`db::connect`), not only the TCP connect as
    /// tokio-postgres' own setting does, so it is kept out of the tokio-postgres config.
    pub connect_timeout: Option<u64>,
}

/// The libpq parameters we interpret ourselves, as written, before interpretation.
#[derive(Debug, Default, PartialEq, Eq)]
struct SslParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    connect_timeout: Option<String>,
}

impl SslParams {
    /// Takes `key` if it is one of ours; false means it belongs to tokio-postgres.
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "connect_timeout" => &mut self.connect_timeout,
            _ => return false,
        };
        // As in libpq, the last occurrence wins.
        *slot = Some(value);
        true
    }
}

/// The environment variables that, set alone, say which server to use when no URL is given.
pub const TARGET_VARS: [&str; 6] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
];

/// Parses a `postgres://` URL or a `key=value` string. Values missing from it are taken from
/// `env` the way libpq does (`PGHOST`, `PGUSER`, `PGPASSWORD`, `~/.pgpass`, ...); pass an
/// environment that answers nothing to use the string alone.
pub fn parse(conn: &str, env: Env<'_>) -> Result<ConnInfo> {
    let (rest, ssl) = split(conn)?;
    let mut config = if rest.trim().is_empty() {
        Config::new()
    } else {
        Config::from_str(&rest).map_err(|e| {
            // tokio-postgres' parse errors name the option, never its value.
            Error::config("invalid database URL")
                .caused_by_error(e)
                .with_hint("expected `postgres://user@host:port/database` or `host=... dbname=...`")
        })?
    };
    let mut ssl = fill_from_env(&mut config, ssl, env)?;
    let connect_timeout = connect_timeout(ssl.connect_timeout.take())?;
    let tls = tls_settings(ssl, env)?;
    // tokio-postgres refuses TLS without a host name; libpq accepts `hostaddr` alone. The
    // address then stands in as the name (verify-full checks it against the certificate's IP
    // entries, where libpq would refuse).
    if config.get_hosts().is_empty() {
        for addr in config.get_hostaddrs().to_vec() {
            config.host(addr.to_string());
        }
    }
    // libpq never uses TLS on Unix sockets, whatever sslmode says; tokio-postgres would ask
    // and fail on the server's "no". Prefer gets the same plaintext connection.
    let only_sockets = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, Host::Tcp(_)));
    config.ssl_mode(match tls.mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
        _ if only_sockets => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    });
    Ok(ConnInfo {
        config,
        tls,
        connect_timeout,
    })
}

/// libpq's reading of `connect_timeout`: whole seconds; zero or negative waits indefinitely;
/// 1 is raised to 2 (libpq's minimum).
fn connect_timeout(value: Option<String>) -> Result<Option<u64>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let secs: i64 = value.trim().parse().map_err(|_| {
        // Not echoed: a value in the wrong place might be the password.
        Error::config("connect_timeout (or PGCONNECT_TIMEOUT) is not a whole number of seconds")
            .with_hint("e.g. connect_timeout=10; 0 waits indefinitely")
    })?;
    Ok(Some(if secs <= 0 { 0 } else { secs.max(2) as u64 }))
}

/// The connection the `PG*` variables describe, or `None` when none of [`TARGET_VARS`] is set:
/// a tool that swaps tables should not guess a server from nothing.
pub fn from_env(env: Env<'_>) -> Result<Option<ConnInfo>> {
    if TARGET_VARS.iter().all(|k| env(k).is_none()) {
        return Ok(None);
    }
    parse("", env).map(Some)
}

/// Splits our TLS parameters off a URL or key=value string; returns the rest for tokio-postgres.
fn split(conn: &str) -> Result<(String, SslParams)> {
    let trimmed = conn.trim();
    params::check_scheme(trimmed)?;
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)
    } else {
        split_key_values(trimmed)
    }
}

fn split_url(url: &str) -> Result<(String, SslParams)> {
    let mut ssl = SslParams::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), ssl));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        params::check(&key)?;
        let value = percent_decode(value)?;
        if !ssl.take(&key, value) {
            let (_, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            kept.push(format!("{}={raw_value}", params::tokio_postgres_name(&key)));
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, ssl))
}

fn percent_decode(s: &str) -> Result<String> {
    let bad = || {
        Error::config("invalid database URL: bad percent-encoding in a query parameter")
            .with_hint("encode special characters as %XX")
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// libpq's key=value syntax: `key = value` pairs separated by spaces; values may be
/// single-quoted; a backslash escapes the next character.
fn split_key_values(s: &str) -> Result<(String, SslParams)> {
    let mut ssl = SslParams::default();
    let mut kept = Vec::new();
    for (key, value) in key_values(s)? {
        params::check(&key)?;
        if !ssl.take(&key, value.clone()) {
            kept.push(format!(
                "{}='{}'",
                params::tokio_postgres_name(&key),
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), ssl))
}

fn key_values(s: &str) -> Result<Vec<(String, String)>> {
    let bad = |what: &str| {
        Error::config(format!("invalid connection string: {what}"))
            .with_hint("expected `key=value` pairs such as `host=db.example dbname=app`, or a `postgres://` URL")
    };
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad("a key without `=`"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad("an unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| bad("a trailing `\\`"))?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(|| bad("a trailing `\\`"))?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// What libpq takes from the environment for settings the string leaves out.
fn fill_from_env(config: &mut Config, mut ssl: SslParams, env: Env<'_>) -> Result<SslParams> {
    if config.get_ports().is_empty() {
        if let Some(ports) = env("PGPORT") {
            for port in ports.split(',') {
                let port = port.trim().parse::<u16>().map_err(|_| {
                    Error::config(format!("PGPORT is not a port number: {ports:?}"))
                })?;
                config.port(port);
            }
        }
    }
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = env("PGHOST") {
            for host in hosts.split(',') {
                config.host(host.trim());
            }
        }
        if let Some(addrs) = env("PGHOSTADDR") {
            for addr in addrs.split(',') {
                let ip = addr.trim().parse().map_err(|_| {
                    Error::config(format!("PGHOSTADDR is not an IP address: {addrs:?}"))
                })?;
                config.hostaddr(ip);
            }
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            if let Some(default) = default_host(config, env) {
                config.host(&default);
            }
        }
    }
    if config.get_user().is_none() {
        // libpq's default user is the operating-system user.
        if let Some(user) = ["PGUSER", "USER", "LOGNAME"].iter().find_map(|k| env(k)) {
            config.user(&user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            config.password(pw);
        } else if let Some(pw) = pgpass_password(config, env) {
            config.password(pw);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(name) = env("PGAPPNAME") {
            config.application_name(&name);
        }
    }
    for (slot, var) in [
        (&mut ssl.connect_timeout, "PGCONNECT_TIMEOUT"),
        (&mut ssl.sslmode, "PGSSLMODE"),
        (&mut ssl.sslrootcert, "PGSSLROOTCERT"),
        (&mut ssl.sslcert, "PGSSLCERT"),
        (&mut ssl.sslkey, "PGSSLKEY"),
    ] {
        if slot.is_none() {
            *slot = env(var);
        }
    }
    Ok(ssl)
}

/// libpq's default server: its Unix socket directory (Debian's, then upstream's) when a server
/// listens there, else localhost.
fn default_host(config: &Config, env: Env<'_>) -> Option<String> {
    // Only with a real environment: `Db::new` uses the string alone.
    env("PATH")?;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    for dir in ["/var/run/postgresql", "/tmp"] {
        if Path::new(dir).join(format!(".s.PGSQL.{port}")).exists() {
            return Some(dir.to_string());
        }
    }
    Some("localhost".to_string())
}

fn home_file(env: Env<'_>, name: &str) -> Option<PathBuf> {
    env("HOME").map(|home| Path::new(&home).join(name))
}

/// The password for this connection from `PGPASSFILE` or `~/.pgpass`, matched as libpq does
/// (`host:port:database:user:password`, `*` matches anything, `\` escapes `:` and `\`). A file
/// that others can read is ignored with a warning, as libpq does.
fn pgpass_password(config: &Config, env: Env<'_>) -> Option<String> {
    let path = env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| home_file(env, ".pgpass"))?;
    let meta = std::fs::metadata(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; it is ignored (chmod 0600 it)",
                path.display()
            );
            return None;
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches socket connections against "localhost".
        #[cfg(unix)]
        Some(Host::Unix(_)) => "localhost".to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "localhost".to_string()),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user()?.to_string();
    let db = config.get_dbname().unwrap_or(&user).to_string();
    pgpass_lookup(&text, [&host, &port, &db, &user])
}

fn pgpass_lookup(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = pgpass_fields(line);
        if fields.len() < 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(field, want)| field == "*" || field == want)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().unwrap().push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// Interprets the TLS parameters as libpq does: a CA file turns on chain verification even for
/// `require` and `prefer`; `verify-full` also checks the host name; `sslrootcert=system` uses
/// the system CAs and demands `verify-full`.
fn tls_settings(ssl: SslParams, env: Env<'_>) -> Result<TlsSettings> {
    let root_cert = match ssl.sslrootcert.as_deref() {
        Some("system") => Some(RootCert::System),
        Some(path) => {
            let path = PathBuf::from(path);
            // libpq silently skips a missing file unless it must verify; a typo in a path
            // that was meant to protect the connection should not downgrade it quietly.
            if !path.is_file() {
                return Err(Error::config(format!(
                    "sslrootcert file {} does not exist",
                    path.display()
                ))
                .with_hint("point sslrootcert at the PEM file of the CA that signed the server's certificate"));
            }
            Some(RootCert::File(path))
        }
        None => home_file(env, ".postgresql/root.crt")
            .filter(|p| p.is_file())
            .map(RootCert::File),
    };
    let mode = match ssl.sslmode.as_deref() {
        Some(mode) => SslMode::parse(mode)?,
        None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if mode == SslMode::Disable {
        return Ok(TlsSettings {
            mode,
            root_cert: None,
            client_cert: None,
        });
    }
    if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
        return Err(Error::config(format!(
            "sslmode={} may not be used with sslrootcert=system",
            mode.as_str()
        ))
        .with_hint(
            "use sslmode=verify-full: the system CAs vouch for names, so the name must be checked",
        ));
    }
    if mode >= SslMode::VerifyCa && root_cert.is_none() {
        return Err(Error::config(format!(
            "sslmode={} needs the CA certificate to verify the server with",
            mode.as_str()
        ))
        .with_hint("set sslrootcert=/path/to/ca.crt (or PGSSLROOTCERT; libpq's default is ~/.postgresql/root.crt), \
                    sslrootcert=system for the system CAs, or use sslmode=require to encrypt without verifying"));
    }
    let cert = match ssl.sslcert {
        Some(path) => Some(existing("sslcert", PathBuf::from(path))?),
        None => home_file(env, ".postgresql/postgresql.crt").filter(|p| p.is_file()),
    };
    let client_cert = match cert {
        None => None,
        Some(cert) => {
            let key = match ssl.sslkey {
                Some(path) => PathBuf::from(path),
                None => home_file(env, ".postgresql/postgresql.key").ok_or_else(|| {
                    Error::config("sslcert is set but sslkey is not")
                        .with_hint("set sslkey to the client certificate's private key")
                })?,
            };
            Some((cert, existing("sslkey", key)?))
        }
    };
    Ok(TlsSettings {
        mode,
        root_cert,
        client_cert,
    })
}

fn existing(param: &str, path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::config(format!(
            "{param} file {} does not exist",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn url_tls_params_are_taken_out_and_the_rest_kept() {
        let (rest, ssl) = split(
            "postgres://u:p%40ss@h:5433/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@h:5433/db?application_name=x");
        assert_eq!(ssl.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, _) = split("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db");
    }

    #[test]
    fn key_value_strings_are_tokenized_like_libpq() {
        let (rest, ssl) = split(
            r"host=h  dbname = 'my db' password='it\'s' sslmode=verify-ca sslrootcert='/a b/ca.pem' user=a\ b",
        )
        .unwrap();
        assert_eq!(ssl.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(ssl.sslrootcert.as_deref(), Some("/a b/ca.pem"));
        let config = Config::from_str(&rest).unwrap();
        assert_eq!(config.get_dbname(), Some("my db"));
        assert_eq!(config.get_user(), Some("a b"));
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn errors_never_echo_values() {
        for bad in [
            "host=h password='s3cret",
            "host=h s3cret",
            "postgres://u:s3cret@h/db?sslmode=s3cret",
            "postgres://u:s3cret@h/db?sslrootcert=%zzs3cret",
            "host=h password=s3cret sslmode=s3cret",
        ] {
            let err = parse(bad, &no_env).unwrap_err();
            assert!(!err.to_string().contains("s3cret"), "{bad}: {err}");
        }
    }

    #[test]
    fn modes_translate_and_verify_modes_need_a_ca() {
        let info = parse("host=h sslmode=require", &no_env).unwrap();
        assert_eq!(info.tls.mode, SslMode::Require);
        assert_eq!(info.config.get_ssl_mode(), PgSslMode::Require);
        let info = parse("host=h", &no_env).unwrap();
        assert_eq!(info.tls.mode, SslMode::Prefer);
        let info = parse("host=h sslmode=allow", &no_env).unwrap();
        assert_eq!(info.config.get_ssl_mode(), PgSslMode::Prefer);
        let err = parse("postgres://h/db?sslmode=verify-full", &no_env).unwrap_err();
        assert!(
            err.to_string().contains("needs the CA certificate"),
            "{err}"
        );
        let err = parse(
            "host=h sslmode=verify-ca sslrootcert=/nonexistent/ca.pem",
            &no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let err = parse("host=h sslmode=bogus", &no_env).unwrap_err();
        assert!(err.to_string().contains("invalid sslmode"), "{err}");
    }

    #[test]
    fn sockets_never_ask_for_tls_and_hostaddr_alone_gets_a_name() {
        let info = parse("host=/var/run/postgresql sslmode=require", &no_env).unwrap();
        assert_eq!(info.config.get_ssl_mode(), PgSslMode::Prefer);
        let info = parse("hostaddr=10.0.0.5 sslmode=require", &no_env).unwrap();
        assert_eq!(info.config.get_hosts(), &[Host::Tcp("10.0.0.5".into())]);
        assert_eq!(info.config.get_ssl_mode(), PgSslMode::Require);
    }

    #[test]
    fn system_roots_default_to_verify_full_and_refuse_weaker_modes() {
        let info = parse("host=h sslrootcert=system", &no_env).unwrap();
        assert_eq!(info.tls.mode, SslMode::VerifyFull);
        assert_eq!(info.tls.root_cert, Some(RootCert::System));
        let err = parse("host=h sslrootcert=system sslmode=require", &no_env).unwrap_err();
        assert!(
            err.to_string().contains("sslmode=require may not be used"),
            "{err}"
        );
    }

    #[test]
    fn verify_full_with_a_ca_file_is_verify_full_in_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("my ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let ca = ca.display().to_string();
        let info = parse(
            &format!("host=localhost sslmode=verify-full sslrootcert='{ca}'"),
            &no_env,
        )
        .unwrap();
        assert_eq!(info.tls.mode, SslMode::VerifyFull);
        assert_eq!(info.tls.root_cert, Some(RootCert::File(ca.clone().into())));
        // The URL form, the way it is pasted from a cloud console (path percent-encoded).
        let url = format!(
            "postgres://postgres@localhost:5432/postgres?sslmode=verify-full&sslrootcert={}",
            ca.replace('/', "%2F").replace(' ', "%20")
        );
        let info = parse(&url, &no_env).unwrap();
        assert_eq!(info.tls.mode, SslMode::VerifyFull);
        assert_eq!(info.tls.root_cert, Some(RootCert::File(ca.into())));
    }

    #[test]
    fn a_ca_in_home_turns_on_verification_like_libpq() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".postgresql")).unwrap();
        std::fs::write(home.path().join(".postgresql/root.crt"), "x").unwrap();
        let env = env_of(&[("HOME", home.path().to_str().unwrap())]);
        let info = parse("host=h sslmode=verify-full", &env).unwrap();
        assert_eq!(
            info.tls.root_cert,
            Some(RootCert::File(home.path().join(".postgresql/root.crt")))
        );
        // sslmode=disable ignores it all.
        let info = parse("host=h sslmode=disable", &env).unwrap();
        assert_eq!(info.tls.root_cert, None);
    }

    #[test]
    fn environment_fills_what_the_string_leaves_out() {
        let env = env_of(&[
            ("PGHOST", "db.example"),
            ("PGPORT", "6543"),
            ("PGUSER", "alice"),
            ("PGPASSWORD", "s3cret"),
            ("PGDATABASE", "app"),
            ("PGAPPNAME", "nightly"),
            ("PGSSLMODE", "require"),
            ("PGCONNECT_TIMEOUT", "1"),
        ]);
        let info = from_env(&env).unwrap().unwrap();
        let c = &info.config;
        assert_eq!(c.get_hosts(), &[Host::Tcp("db.example".into())]);
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.get_dbname(), Some("app"));
        assert_eq!(c.get_application_name(), Some("nightly"));
        assert_eq!(info.connect_timeout, Some(2));
        assert_eq!(info.tls.mode, SslMode::Require);

        // The URL's own values win.
        let info = parse("postgres://bob@other:7000/x?sslmode=disable", &env).unwrap();
        assert_eq!(info.config.get_hosts(), &[Host::Tcp("other".into())]);
        assert_eq!(info.config.get_ports(), &[7000]);
        assert_eq!(info.config.get_user(), Some("bob"));
        assert_eq!(info.config.get_dbname(), Some("x"));
        assert_eq!(info.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(info.tls.mode, SslMode::Disable);

        assert!(from_env(&env_of(&[("HOME", "/root")])).unwrap().is_none());
        let err = from_env(&env_of(&[("PGPORT", "s3cret")])).unwrap_err();
        assert!(err.to_string().contains("PGPORT"), "{err}");
    }

    #[test]
    fn connect_timeout_is_read_as_libpq_reads_it() {
        let t = |conn: &str| parse(conn, &no_env).unwrap().connect_timeout;
        assert_eq!(t("host=h"), None);
        assert_eq!(t("host=h connect_timeout=7"), Some(7));
        assert_eq!(t("postgres://h/d?connect_timeout=1"), Some(2));
        assert_eq!(t("host=h connect_timeout=0"), Some(0));
        assert_eq!(t("host=h connect_timeout=-3"), Some(0));
        // Kept out of tokio-postgres, whose own timeout covers the TCP connect only.
        let info = parse("host=h connect_timeout=7", &no_env).unwrap();
        assert_eq!(info.config.get_connect_timeout(), None);
        let env = env_of(&[("PGCONNECT_TIMEOUT", "9")]);
        assert_eq!(parse("host=h", &env).unwrap().connect_timeout, Some(9));
        assert_eq!(
            parse("host=h connect_timeout=4", &env)
                .unwrap()
                .connect_timeout,
            Some(4)
        );
        let err = parse("host=h connect_timeout=s3cret", &no_env).unwrap_err();
        assert!(err.message.contains("connect_timeout"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn unknown_and_unsupported_parameters_and_other_schemes_are_refused_by_name() {
        for (conn, name) in [
            ("host=h dbnmae=x", "`dbnmae`"),
            ("postgres://h/d?sslcrl=%2Fx", "`sslcrl`"),
            ("postgres://h/d?service=prod", "`service`"),
            ("host=h load_balance_hosts=random", "`load_balance_hosts`"),
        ] {
            let err = parse(conn, &no_env).unwrap_err();
            assert!(err.message.contains(name), "{conn}: {err}");
            assert_eq!(err.kind.exit_code(), 2);
        }
        let err = parse("mysql://root:s3cret@h/app", &no_env).unwrap_err();
        assert!(err.message.contains("`mysql://`"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        // libpq's keepalives_count is tokio-postgres' keepalives_retries.
        let info = parse("host=h keepalives_count=4", &no_env).unwrap();
        assert_eq!(info.config.get_keepalives_retries(), Some(4));
        let info = parse("postgres://h/d?keepalives_count=5", &no_env).unwrap();
        assert_eq!(info.config.get_keepalives_retries(), Some(5));
    }

    #[test]
    fn pgpass_matches_like_libpq() {
        let text = "# comment\n\
                    other:5432:*:alice:wrong\n\
                    db.example:*:app:alice:pa\\:ss:word\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, ["db.example", "6543", "app", "alice"]).as_deref(),
            Some("pa:ss:word")
        );
        assert_eq!(
            pgpass_lookup(text, ["x", "1", "y", "z"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("h:1:d:u:p\n", ["h", "2", "d", "u"]), None);
    }

    #[cfg(unix)]
    #[test]
    fn pgpass_file_is_used_only_when_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "h:5432:d:u:from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = env_of(&[("PGPASSFILE", file.to_str().unwrap())]);
        let info = parse("host=h user=u dbname=d", &env).unwrap();
        assert_eq!(info.config.get_password(), Some(&b"from-file"[..]));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let info = parse("host=h user=u dbname=d", &env).unwrap();
        assert_eq!(info.config.get_password(), None);
    }
}
