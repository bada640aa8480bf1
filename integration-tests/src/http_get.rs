//! A minimal HTTP/1.1 GET for tests that probe the server's metrics listener (`/metrics`,
//! `/healthz`) the way a scraper or a load balancer does: no key, one request per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long one probe may take, connect to last byte.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of an answer read (a scrape of the server's metrics is a few tens of KiB).
const MAX_ANSWER: u64 = 4 << 20;

/// An HTTP answer: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

/// Sends `GET <path>` to `addr` and reads the answer until the server closes (it answers
/// one request per connection). Panics, failing the test, on any I/O error or a malformed
/// status line.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpAnswer {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(PROBE_TIMEOUT))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .expect("read the answer");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpAnswer {
        status,
        body: body.to_owned(),
    }
}
