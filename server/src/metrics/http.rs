//! The metrics listener: a small HTTP/1.1 server for scrapers and load balancers.
//!
//! `GET /metrics` answers the registry in the Prometheus text format, `GET /healthz` answers
//! 200 "serving" or 503 "draining", any other path 404 and any other method 405. Requests
//! are parsed with `httparse`; each connection carries one request and is closed after the
//! answer. Everything is bounded: the request head's size, the time a connection may take,
//! and the number of connections served at once (more are closed at once).

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use async_lock::Semaphore;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::{ServerMetrics, CONTENT_TYPE};

/// Limits of the metrics listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Connections served at once; more are closed without an answer. Default 16.
    pub max_connections: usize,
    /// Most bytes of request line and headers read; a longer head gets 431. Default 8 KiB.
    pub max_request_bytes: usize,
    /// Time a connection gets to send its request and take the answer. Default 5 s.
    pub timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 16,
            max_request_bytes: 8 * 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;

/// Serves `GET /metrics` and `GET /healthz` on `listener` until `shutdown` completes.
/// Listens only where the caller bound `listener`. Returns an error only if accepting fails
/// for a reason other than running out of descriptors (then it waits and goes on).
pub async fn serve_http(
    listener: Async<TcpListener>,
    metrics: ServerMetrics,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let accept = async {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if is_transient(&e) => {
                    warn!(error = %e, "metrics listener: accept failed; backing off");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(permit) = permits.try_acquire_arc() else {
                debug!("metrics listener: connection limit reached; closing a new connection");
                continue;
            };
            let metrics = metrics.clone();
            let config = config.clone();
            async_std::task::spawn(async move {
                let _permit = permit;
                let timeout = config.timeout;
                let served = futures_lite::future::or(
                    async { Some(serve_one(stream, &metrics, &config).await) },
                    async {
                        Timer::after(timeout).await;
                        None
                    },
                )
                .await;
                match served {
                    Some(Err(e)) => debug!(error = %e, "metrics listener: connection failed"),
                    None => debug!(?timeout, "metrics listener: connection timed out"),
                    Some(Ok(())) => {}
                }
            });
        }
    };
    futures_lite::future::or(accept, async {
        shutdown.await;
        Ok(())
    })
    .await
}

/// Whether an accept error leaves the listener usable (descriptors or memory run out, or
/// the connection died before it was accepted).
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | OutOfMemory | WouldBlock
    ) || e
        .raw_os_error()
        .is_some_and(|c| c == libc::EMFILE || c == libc::ENFILE)
}

/// Reads one request head, answers it and closes.
async fn serve_one(
    mut stream: Async<TcpStream>,
    metrics: &ServerMetrics,
    config: &HttpConfig,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; config.max_request_bytes];
    let mut filled = 0;
    let answer = loop {
        if filled == buf.len() {
            break Answer::text(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            );
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => break route(&request, metrics),
            Err(_) => break Answer::text(400, "Bad Request", "bad request\n"),
        }
    };
    let unread_input = matches!(answer.status, 400 | 431);
    stream.write_all(&answer.into_bytes()).await?;
    stream.flush().await?;
    if unread_input {
        // Closing with unread input would reset the connection, and the peer could lose the
        // answer: end our side, then read and drop what it sent (bounded) until it closes.
        stream.get_ref().shutdown(std::net::Shutdown::Write)?;
        let mut left = LINGER_BYTES;
        while left > 0 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
    }
    Ok(())
}

/// Most bytes read and dropped after an error answer, before closing anyway.
const LINGER_BYTES: usize = 64 * 1024;

/// Picks the answer for a parsed request.
fn route(request: &httparse::Request<'_, '_>, metrics: &ServerMetrics) -> Answer {
    let path = request.path.unwrap_or("").split('?').next().unwrap_or("");
    let get = request.method == Some("GET");
    match path {
        "/metrics" | "/healthz" if !get => {
            let mut a = Answer::text(405, "Method Not Allowed", "method not allowed\n");
            a.allow = true;
            a
        }
        "/metrics" => match metrics.render() {
            Ok(body) => Answer {
                status: 200,
                reason: "OK",
                content_type: CONTENT_TYPE,
                body,
                allow: false,
            },
            Err(e) => {
                warn!(error = %e, "cannot render the metrics");
                Answer::text(500, "Internal Server Error", "cannot render the metrics\n")
            }
        },
        "/healthz" if metrics.is_draining() => {
            Answer::text(503, "Service Unavailable", "draining\n")
        }
        "/healthz" => Answer::text(200, "OK", "serving\n"),
        _ => Answer::text(404, "Not Found", "not found\n"),
    }
}

/// An HTTP answer, always with `Connection: close`.
#[derive(Debug)]
struct Answer {
    /// Status code.
    status: u16,
    /// Reason phrase.
    reason: &'static str,
    /// `Content-Type`.
    content_type: &'static str,
    /// The body.
    body: Vec<u8>,
    /// Whether to send `Allow: GET` (a 405).
    allow: bool,
}

impl Answer {
    /// A plain-text answer.
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Answer {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: false,
        }
    }

    /// Status line, headers and body.
    fn into_bytes(self) -> Vec<u8> {
        let len = self.body.len();
        let allow = if self.allow { "Allow: GET\r\n" } else { "" };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\n{allow}\
             Connection: close\r\n\r\n",
            self.status, self.reason, self.content_type
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}
