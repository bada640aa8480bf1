//! Closing a socket without a reset. A TCP socket closed while the peer's bytes wait unread in
//! its receive buffer sends RST instead of FIN, and a reset may discard what this side wrote
//! but the peer has not read yet (a refusal, the last answers, a `Goodbye`). So the server
//! half-closes first (its FIN follows everything written), reads and discards what the peer
//! still sends until the peer closes its side, within a time and byte bound, and only then
//! closes.

use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::future;
use futures_lite::io::AsyncReadExt;

/// Half-closes `stream`, then reads and discards what the peer sends, until it closes its side,
/// `read_limit` bytes have been read, or `linger` has passed; then shuts both directions.
pub(crate) async fn linger_and_close(
    stream: &Async<TcpStream>,
    linger: Duration,
    read_limit: usize,
) {
    let _ = stream.get_ref().shutdown(Shutdown::Write);
    let drain = async {
        let mut sink = [0u8; 512];
        let mut total = 0usize;
        let mut reader = stream;
        while total < read_limit {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    future::or(drain, async {
        Timer::after(linger).await;
    })
    .await;
    let _ = stream.get_ref().shutdown(Shutdown::Both);
}
