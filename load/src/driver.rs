//! What the engine needs of a protocol: a [`Driver`] that opens connections, each a
//! [`Connection`] that takes concurrent calls; and the payload every call sends.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::BenchError;

/// Builds the request payload: `"hello"` then `a..z` repeated, cut to `len` bytes.
///
/// Only ASCII lowercase letters, so an uppercased answer can be checked byte by byte.
pub fn make_payload(len: usize) -> Vec<u8> {
    b"hello"
        .iter()
        .chain(b"abcdefghijklmnopqrstuvwxyz".iter().cycle())
        .take(len)
        .copied()
        .collect()
}

/// Opens benchmark connections to a server; one implementation per protocol.
///
/// The engine calls [`Driver::connect`] once per connection slot (and again after
/// a connection failed, or for every call in churn mode), with a timeout of
/// [`crate::CONNECT_TIMEOUT`] around it.
pub trait Driver: Send + Sync + 'static {
    /// The connection type this driver opens.
    type Conn: Connection;

    /// Short name of the protocol for the report, e.g. `raw` or `rpckit`.
    fn name(&self) -> &str;

    /// Opens one connection to `addr`, ready for calls (handshake done), or one that opens on
    /// its first call, if the driver sends that call with the handshake.
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Self::Conn, BenchError>> + Send;

    /// Called once before an idle run that holds connections for `hold`: a driver whose
    /// connections send keepalive traffic on their own should space it out beyond `hold`.
    /// Default: nothing.
    fn prepare_idle(&mut self, hold: Duration) {
        let _ = hold;
    }
}

/// One open connection that accepts concurrent calls.
///
/// The engine shares a connection between `depth` tasks (through an `Arc`), so
/// `call` takes `&self` and must allow that many calls in flight at once:
/// pipelined in order on one socket, or multiplexed by tag.
///
/// The engine drops a `call` future before it completes only at the hard stop
/// (after which the connection is dropped too) and when the probe call it makes
/// before the clock starts takes longer than its timeout. After a call in the
/// measured run returned an error, the engine stops using the connection and
/// opens a new one; a probe that failed without a connection failure is only
/// counted, and its connection is used for the run.
pub trait Connection: Send + Sync + 'static {
    /// Sends `payload`, waits for and verifies the answer, and returns the
    /// number of payload bytes received.
    fn call<'a>(
        &'a self,
        payload: &'a [u8],
    ) -> impl Future<Output = Result<usize, BenchError>> + Send + 'a;

    /// Whether the connection still looks usable without sending anything (idle mode checks
    /// this after the hold). Default: `true` (the driver cannot tell).
    fn is_alive(&self) -> bool {
        true
    }

    /// Closes the connection politely (idle mode, after the hold). Default: drops it.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        drop(self);
        std::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_hello_then_letters() {
        assert_eq!(make_payload(0), b"");
        assert_eq!(make_payload(5), b"hello");
        assert_eq!(make_payload(8), b"helloabc");
        let big = make_payload(1000);
        assert_eq!(big.len(), 1000);
        assert!(big.iter().all(u8::is_ascii_lowercase));
    }
}
