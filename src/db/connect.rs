//! Opening one connection the way libpq does: each host (and each address a host name resolves
//! to) in turn, each attempt bounded as a whole by `connect_timeout`.
//!
//! tokio-postgres applies its `connect_timeout` to the TCP connect only: a server (or a
//! half-dead proxy) that accepts the connection and never answers the start-up holds it
//! forever, and an outer timeout around all hosts lets the first such host use up the time of
//! the others. So the addresses are tried here one by one, each with a tokio-postgres config of
//! its own naming that one address, under the whole timeout. When an attempt times out, a
//! second bare TCP connect tells the two cases an on-call engineer must tell apart: something
//! accepts connections there (wrong port, a pooler whose server is down, a stuck server) or
//! nothing answers at all (wrong host, firewall, server down).

use std::net::IpAddr;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connection task's type for our TLS connector.
pub type Conn = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// How long the probe after a timed-out attempt waits for a bare TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What went wrong at one address.
#[derive(Debug)]
pub enum Attempt {
    /// The server (or the network) answered with an error: refused, TLS, authentication, ...
    Failed(tokio_postgres::Error),
    /// The host name did not resolve.
    Unresolved(std::io::Error),
    /// No connection within the timeout; `accepted`: a bare TCP connect succeeded afterwards.
    TimedOut { accepted: bool, secs: u64 },
}

/// Every address tried, in order, with what happened there.
#[derive(Debug, Default)]
pub struct Failure {
    pub attempts: Vec<(String, Attempt)>,
}

impl Failure {
    /// The last server error, if any attempt got one (for callers that need a
    /// `tokio_postgres::Error`).
    pub fn into_pg_error(self) -> Option<tokio_postgres::Error> {
        self.attempts.into_iter().rev().find_map(|(_, a)| match a {
            Attempt::Failed(e) => Some(e),
            _ => None,
        })
    }
}

/// One place to connect to: a Unix socket directory or a TCP address with the name TLS checks.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    host: Host,
    addr: Option<IpAddr>,
    port: u16,
}

impl Target {
    /// `host:port` as users write it, with the address when it is not the name itself.
    fn describe(&self) -> String {
        match &self.host {
            Host::Tcp(name) => {
                let name_port = if name.contains(':') {
                    format!("[{name}]:{}", self.port)
                } else {
                    format!("{name}:{}", self.port)
                };
                match self.addr {
                    Some(ip) if ip.to_string() != *name => format!("{name_port} ({ip})"),
                    _ => name_port,
                }
            }
            #[cfg(unix)]
            Host::Unix(dir) => dir
                .join(format!(".s.PGSQL.{}", self.port))
                .display()
                .to_string(),
        }
    }

    /// `base` for this one address only: tokio-postgres' settings copied, the hosts replaced.
    /// Copies every setting of `params::SUPPORTED` that tokio-postgres holds.
    fn config(&self, base: &Config) -> Config {
        let mut c = Config::new();
        if let Some(v) = base.get_user() {
            c.user(v);
        }
        if let Some(v) = base.get_password() {
            c.password(v);
        }
        if let Some(v) = base.get_dbname() {
            c.dbname(v);
        }
        if let Some(v) = base.get_options() {
            c.options(v);
        }
        if let Some(v) = base.get_application_name() {
            c.application_name(v);
        }
        c.ssl_mode(base.get_ssl_mode())
            .ssl_negotiation(base.get_ssl_negotiation())
            .keepalives(base.get_keepalives())
            .keepalives_idle(base.get_keepalives_idle())
            .target_session_attrs(base.get_target_session_attrs())
            .channel_binding(base.get_channel_binding());
        if let Some(v) = base.get_tcp_user_timeout() {
            c.tcp_user_timeout(*v);
        }
        if let Some(v) = base.get_keepalives_interval() {
            c.keepalives_interval(v);
        }
        if let Some(v) = base.get_keepalives_retries() {
            c.keepalives_retries(v);
        }
        match &self.host {
            Host::Tcp(name) => {
                c.host(name);
            }
            #[cfg(unix)]
            Host::Unix(dir) => {
                c.host_path(dir);
            }
        }
        if let Some(ip) = self.addr {
            c.hostaddr(ip);
        }
        c.port(self.port);
        c
    }

    /// A bare connect to the same place: does anything accept connections there?
    async fn accepts(&self) -> bool {
        let connect = async {
            match (&self.host, self.addr) {
                (_, Some(ip)) => tokio::net::TcpStream::connect((ip, self.port))
                    .await
                    .is_ok(),
                (Host::Tcp(name), None) => {
                    tokio::net::TcpStream::connect((name.as_str(), self.port))
                        .await
                        .is_ok()
                }
                #[cfg(unix)]
                (Host::Unix(dir), None) => {
                    tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{}", self.port)))
                        .await
                        .is_ok()
                }
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, connect)
            .await
            .unwrap_or(false)
    }
}

/// The hosts of `config` in order, as tokio-postgres pairs them with `hostaddr` and ports.
fn hosts(config: &Config) -> Vec<(Host, Option<IpAddr>, u16)> {
    let names = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    let n = names.len().max(addrs.len());
    (0..n)
        .map(|i| {
            let addr = addrs.get(i).copied();
            let host = names
                .get(i)
                .cloned()
                .or_else(|| addr.map(|a| Host::Tcp(a.to_string())))
                .expect("a host or an address at each index");
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            (host, addr, port)
        })
        .collect()
}

/// Connects to the first address that accepts us, trying each in turn; each attempt (name
/// resolution aside) is bounded by `timeout` as a whole, `None` waits indefinitely.
pub async fn establish(
    config: &Config,
    tls: &MakeRustlsConnect,
    timeout: Option<Duration>,
) -> Result<(Client, Conn), Failure> {
    let mut failure = Failure::default();
    for (host, addr, port) in hosts(config) {
        let targets = match (&host, addr) {
            (Host::Tcp(name), None) => {
                let lookup = tokio::net::lookup_host((name.as_str(), port));
                let resolved = match timeout {
                    Some(t) => tokio::time::timeout(t, lookup).await.unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the name lookup timed out",
                        ))
                    }),
                    None => lookup.await,
                };
                match resolved {
                    Ok(addrs) => {
                        let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                        ips.dedup();
                        ips.into_iter()
                            .map(|ip| Target {
                                host: host.clone(),
                                addr: Some(ip),
                                port,
                            })
                            .collect()
                    }
                    Err(e) => {
                        let name = Target {
                            host: host.clone(),
                            addr: None,
                            port,
                        };
                        failure
                            .attempts
                            .push((name.describe(), Attempt::Unresolved(e)));
                        continue;
                    }
                }
            }
            _ => vec![Target { host, addr, port }],
        };
        for target in targets {
            let one = target.config(config);
            let attempt = one.connect(tls.clone());
            let outcome = match timeout {
                Some(t) => tokio::time::timeout(t, attempt).await.ok(),
                None => Some(attempt.await),
            };
            match outcome {
                Some(Ok(pair)) => return Ok(pair),
                Some(Err(e)) => failure
                    .attempts
                    .push((target.describe(), Attempt::Failed(e))),
                None => {
                    let secs = timeout.map_or(0, |t| t.as_secs());
                    let accepted = target.accepts().await;
                    failure
                        .attempts
                        .push((target.describe(), Attempt::TimedOut { accepted, secs }));
                }
            }
        }
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn hosts_pair_names_addresses_and_ports_like_tokio_postgres() {
        let c = Config::from_str("host=a,b hostaddr=10.0.0.1,10.0.0.2 port=1,2").unwrap();
        let h = hosts(&c);
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].0, Host::Tcp("b".into()));
        assert_eq!(h[1].1, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(h[1].2, 2);
        let c = Config::from_str("host=a,b port=7").unwrap();
        assert_eq!(hosts(&c)[1].2, 7);
    }

    #[test]
    fn a_target_is_described_as_users_write_it_and_keeps_the_settings() {
        let t = Target {
            host: Host::Tcp("db.example".into()),
            addr: Some("10.0.0.5".parse().unwrap()),
            port: 5433,
        };
        assert_eq!(t.describe(), "db.example:5433 (10.0.0.5)");
        let t = Target {
            host: Host::Tcp("127.0.0.1".into()),
            addr: Some("127.0.0.1".parse().unwrap()),
            port: 1,
        };
        assert_eq!(t.describe(), "127.0.0.1:1");
        let base = Config::from_str(
            "host=x,y user=u password=p dbname=d application_name=a keepalives_idle=77 target_session_attrs=read-write",
        )
        .unwrap();
        let one = t.config(&base);
        assert_eq!(one.get_hosts(), &[Host::Tcp("127.0.0.1".into())]);
        assert_eq!(one.get_ports(), &[1]);
        assert_eq!(one.get_user(), Some("u"));
        assert_eq!(one.get_password(), Some(&b"p"[..]));
        assert_eq!(one.get_dbname(), Some("d"));
        assert_eq!(one.get_application_name(), Some("a"));
        assert_eq!(one.get_keepalives_idle(), Duration::from_secs(77));
        assert_eq!(
            one.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }
}
