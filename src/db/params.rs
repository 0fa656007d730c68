//! Which connection parameters reproject accepts, and which URLs it takes for PostgreSQL ones.
//!
//! A parameter that is silently ignored is worse than one that is refused: `sslcrl` that is
//! not checked, `service` that does not pick the server the user meant, a typo in
//! `connect_timeout` that leaves the default in place. So every parameter of a connection
//! string is looked up here: supported ones pass (with the libpq name translated where
//! tokio-postgres spells it differently), libpq ones we do not implement are refused with the
//! reason, anything else is refused as unknown. Only parameter *names* are ever put into a
//! message, never values (a value might be the password).

use crate::error::{Error, Result};

/// The libpq parameters reproject implements (in `conninfo`, `tls` or by tokio-postgres).
pub const SUPPORTED: [&str; 21] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "application_name",
    "connect_timeout",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslnegotiation",
    "channel_binding",
    "target_session_attrs",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

/// libpq parameters reproject does not implement, each with the reason a user reads.
pub const NOT_SUPPORTED: [(&str, &str); 22] = [
    ("passfile", "set PGPASSFILE instead (reproject reads it as libpq does)"),
    ("service", "connection service files (pg_service.conf) are not read: write the settings in the URL or PG* variables"),
    ("servicefile", "connection service files (pg_service.conf) are not read: write the settings in the URL or PG* variables"),
    ("client_encoding", "reproject always talks UTF8 with the server"),
    ("fallback_application_name", "set application_name instead (reproject's default is `reproject`)"),
    ("replication", "reproject needs a normal session, not a replication connection"),
    ("gssencmode", "GSSAPI encryption is not supported: use TLS (sslmode)"),
    ("krbsrvname", "Kerberos/GSSAPI authentication is not supported"),
    ("gsslib", "Kerberos/GSSAPI authentication is not supported"),
    ("gssdelegation", "Kerberos/GSSAPI authentication is not supported"),
    ("require_auth", "not implemented: the server's pg_hba.conf decides the method"),
    ("requirepeer", "not implemented for Unix sockets"),
    ("sslpassword", "encrypted client keys are not supported: give sslkey an unencrypted PEM key"),
    ("sslcrl", "certificate revocation lists are not checked, so the parameter would be a silent no-op"),
    ("sslcrldir", "certificate revocation lists are not checked, so the parameter would be a silent no-op"),
    ("sslcompression", "TLS compression is not supported (nor by current servers)"),
    ("sslsni", "SNI is always sent for host names"),
    ("sslcertmode", "a client certificate is sent whenever sslcert (or ~/.postgresql/postgresql.crt) is there"),
    ("ssl_min_protocol_version", "TLS 1.2 and 1.3 are used; the versions cannot be chosen"),
    ("ssl_max_protocol_version", "TLS 1.2 and 1.3 are used; the versions cannot be chosen"),
    ("load_balance_hosts", "hosts are tried in the order given, so that all of a run's connections (its locks, its replay, its swap) reach the same server"),
    ("sslkeylogfile", "TLS key logging is not supported"),
];

/// The name tokio-postgres uses for a supported libpq parameter.
pub fn tokio_postgres_name(libpq: &str) -> &str {
    match libpq {
        "keepalives_count" => "keepalives_retries",
        other => other,
    }
}

fn is_supported(key: &str) -> bool {
    SUPPORTED.contains(&key)
}

/// Refuses a parameter reproject does not implement, naming it.
pub fn check(key: &str) -> Result<()> {
    if is_supported(key) {
        return Ok(());
    }
    if let Some((_, why)) = NOT_SUPPORTED.iter().find(|(name, _)| *name == key) {
        return Err(Error::config(format!(
            "the connection parameter `{key}` is not supported by reproject"
        ))
        .caused_by(why)
        .with_hint("remove it from the connection string"));
    }
    // A key that does not look like a parameter name may be a value typed in the wrong place
    // (a password after a lost `=`): it is not echoed.
    let named = !key.is_empty()
        && key.len() <= 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let what = if named {
        format!("unknown connection parameter `{key}`")
    } else {
        "unknown connection parameter (its name is not shown: it does not look like a parameter name)"
            .to_string()
    };
    Err(Error::config(what).with_hint(format!(
        "the parameters reproject accepts are {}",
        SUPPORTED.join(", ")
    )))
}

/// Refuses a URL whose scheme is not `postgres://` or `postgresql://`, naming the scheme
/// (a scheme never holds the password). Strings without `scheme://` are libpq `key=value`
/// strings and pass.
pub fn check_scheme(conn: &str) -> Result<()> {
    let Some((scheme, _)) = conn.split_once("://") else {
        return Ok(());
    };
    let looks_like_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-:".contains(c));
    // `host=a options='-c x=y://'` is a key=value string that happens to contain `://`.
    if !looks_like_scheme || matches!(scheme, "postgres" | "postgresql") {
        return Ok(());
    }
    let hint = match scheme.strip_prefix("jdbc:") {
        Some("postgresql" | "postgres") => {
            "drop the `jdbc:` prefix: `postgresql://user@host:port/database`".to_string()
        }
        _ if scheme.starts_with("postgres") => {
            "use a plain `postgresql://` URL (driver suffixes such as `+asyncpg` belong to other tools)"
                .to_string()
        }
        _ => "reproject works on PostgreSQL only: `postgresql://user@host:port/database` or `host=... dbname=...`"
            .to_string(),
    };
    Err(Error::config(format!(
        "the database URL has the scheme `{scheme}://`, which is not PostgreSQL's"
    ))
    .with_hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_pass_and_others_are_named_with_a_reason() {
        for key in SUPPORTED {
            check(key).unwrap();
        }
        let err = check("sslcrl").unwrap_err();
        assert_eq!(err.kind.exit_code(), 2);
        assert!(err.message.contains("`sslcrl` is not supported"), "{err}");
        assert!(err.causes[0].contains("revocation"), "{err}");
        let err = check("conect_timeout").unwrap_err();
        assert!(
            err.message
                .contains("unknown connection parameter `conect_timeout`"),
            "{err}"
        );
        assert!(err.hint.as_deref().unwrap().contains("connect_timeout"));
        // Something that is no parameter name (a password that lost its `=`) is not echoed.
        let err = check("s3cr3t!pass").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        // No name is in both lists.
        for (name, _) in NOT_SUPPORTED {
            assert!(!is_supported(name), "{name}");
        }
    }

    #[test]
    fn only_postgres_schemes_pass() {
        check_scheme("postgres://h/db").unwrap();
        check_scheme("postgresql://h/db").unwrap();
        check_scheme("host=h dbname=d").unwrap();
        check_scheme("host=h options='-c x=a://b'").unwrap();
        for (url, scheme) in [
            ("mysql://u:s3cret@h/db", "mysql://"),
            ("http://h:5432/db", "http://"),
            ("postgresql+asyncpg://h/db", "postgresql+asyncpg://"),
            ("jdbc:postgresql://h/db", "jdbc:postgresql://"),
        ] {
            let err = check_scheme(url).unwrap_err();
            assert!(err.message.contains(&format!("`{scheme}`")), "{err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
            assert_eq!(err.kind.exit_code(), 2);
        }
        assert!(check_scheme("jdbc:postgresql://h/db")
            .unwrap_err()
            .hint
            .as_deref()
            .unwrap()
            .contains("jdbc:"));
    }
}
