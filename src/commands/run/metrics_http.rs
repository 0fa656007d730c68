//! The `--metrics-addr` endpoint: a minimal HTTP/1.1 server for two GET routes, `/metrics`
//! (exposition.rs) and `/health`. Hand-written rather than a framework: it answers one request
//! per connection and closes it (`Connection: close`), which every Prometheus scraper and load
//! balancer health check handles, and it keeps the dependency tree as it is.

use super::exposition;
use super::live_stats::LiveStats;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head read; a scraper's GET is far smaller.
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends nothing is dropped after this long, so it cannot hold a task forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server; it stops when dropped (when the runner ends).
pub struct MetricsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `addr` (`HOST:PORT`) and serves `stats` until dropped. Fails, naming the
/// address, when it cannot listen: before the runner does anything.
pub async fn serve(addr: &str, stats: LiveStats) -> Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::config(format!("cannot listen on --metrics-addr `{addr}`: {e}"))
            .with_hint("give a free HOST:PORT, e.g. `127.0.0.1:9187` or `0.0.0.0:9187`")
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::runtime(format!("--metrics-addr `{addr}`: {e}")))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors and the like: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let stats = stats.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, &stats)).await;
            });
        }
    });
    Ok(MetricsServer { addr: local, task })
}

async fn answer(mut stream: TcpStream, stats: &LiveStats) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request head too large\n",
                true,
            )
            .await;
        }
    }
    let (status, content_type, body) = route(&String::from_utf8_lossy(&head), stats);
    let with_body = !head.starts_with(b"HEAD ");
    respond(&mut stream, status, content_type, &body, with_body).await
}

/// The answer to a request head: status, content type and body.
fn route(head: &str, stats: &LiveStats) -> (u16, &'static str, String) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "only GET\n".into());
    }
    // The query string (a scraper may add one) does not select anything here.
    match target.split('?').next().unwrap_or("") {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            exposition::render(&stats.snapshot()),
        ),
        "/health" => {
            let (code, body) = exposition::health(&stats.snapshot());
            (code, "text/plain; charset=utf-8", body)
        }
        _ => (
            404,
            "text/plain",
            "not found: try /metrics or /health\n".into(),
        ),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status == 405 { "Allow: GET, HEAD\r\n" } else { "" }
    );
    if with_body {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let stats = LiveStats::new(vec![vec!["tally".into()]]);
        stats.update(|s| s.up = true);
        assert_eq!(route("GET /health HTTP/1.1\r\n", &stats).0, 200);
        let (code, kind, body) = route("GET /metrics?x=1 HTTP/1.1\r\n", &stats);
        assert_eq!(
            (code, kind),
            (200, "text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(body.contains("reproject_runner_up 1"));
        assert_eq!(route("POST /metrics HTTP/1.1\r\n", &stats).0, 405);
        assert_eq!(route("GET / HTTP/1.1\r\n", &stats).0, 404);
        assert_eq!(route("", &stats).0, 405);
    }
}
