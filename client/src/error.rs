//! Typed errors of the client: failing to connect, and failing a call.

use std::sync::Arc;
use std::time::Duration;

use rpckit_proto::{DecodeError, EncodeError, HandshakeError, Refusal, RpcError, SessionError};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect failed (nothing listening, unreachable, refused), an I/O error broke the
    /// handshake, or a connection closed before the call could be sent on it.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// The address tried.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// TCP connect or the handshake did not finish in time.
    #[error("timed out connecting to {addr} after {after:?}")]
    Timeout {
        /// The address tried.
        addr: String,
        /// The time allowed.
        after: Duration,
    },
    /// The credentials were not accepted, either way round: the server refused our key or key
    /// id, or the server could not prove it holds the key (an impostor or a different key).
    #[error("authentication failed: {0}")]
    Auth(#[source] HandshakeError),
    /// The server refused for another reason (busy, shutting down, rate limit, version), or the
    /// peer is not an rpckit server.
    #[error("handshake failed: {0}")]
    Handshake(#[source] HandshakeError),
    /// The client was closed.
    #[error("client is closed")]
    Closed,
    /// A call made `attempts` connection attempts, each failing in a way that could pass, and
    /// gave up ([`crate::ClientConfig::reconnect_attempts`]); `last` is the last failure.
    #[error("gave up after {attempts} connection attempts; the last: {last}")]
    GaveUp {
        /// Connection attempts made.
        attempts: u32,
        /// Why the last one failed.
        #[source]
        last: Box<ConnectError>,
    },
}

impl ConnectError {
    /// Whether trying again later can help: the connection broke or timed out, or the server
    /// refused for now (busy, shutting down, rate-limiting this address: statuses 5–7 of
    /// PROTOCOL.md §4). Not for authentication failures, nor for a peer that is not an
    /// rpckit server, speaks another version or suite, breaks the handshake, or refused our
    /// hello (statuses 1–4) or with a status this client does not know.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Io { .. } | ConnectError::Timeout { .. } => true,
            ConnectError::Handshake(e) => match e {
                HandshakeError::Refused(refusal) => matches!(
                    refusal,
                    Refusal::Busy | Refusal::ShuttingDown | Refusal::RateLimited
                ),
                HandshakeError::Closed | HandshakeError::Io(_) | HandshakeError::Timeout(_) => true,
                _ => false,
            },
            ConnectError::Auth(_) | ConnectError::Closed => false,
            // Trying again later may succeed where the attempts so far did not.
            ConnectError::GaveUp { last, .. } => last.is_transient(),
        }
    }
}

/// Why a call failed. Every call ends in exactly one outcome: its answer or one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The server answered with an error.
    #[error("server error: {0}")]
    Rpc(#[from] RpcError),
    /// No answer within the call's timeout, which also bounds making a connection for it. A
    /// call on a connection is cancelled on the server. A call that timed out while riding
    /// with a handshake ([`crate::ClientConfig::pipeline_first_call`]) has its connection
    /// dropped; the server may have run it.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection died after the call was written to it: the server may or may not have
    /// run it. Retry only if the call is idempotent.
    #[error("connection lost after the call was sent; it may or may not have run: {0}")]
    OutcomeUnknown(ConnectionLost),
    /// No connection could be made for the call (it was never sent).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server's answer could not be decoded as this client's response type.
    #[error("undecodable response: {0}")]
    Decode(#[source] DecodeError),
    /// The request could not be encoded (for example it is larger than the frame limit).
    #[error("request cannot be sent: {0}")]
    Encode(#[source] EncodeError),
}

/// Why a connection ended with calls in flight (the reason of
/// [`CallError::OutcomeUnknown`]). Cheap to clone: every call in flight gets a copy.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionLost {
    /// The server closed the connection without saying goodbye.
    #[error("the server closed the connection")]
    ServerClosed,
    /// Reading from the server failed: I/O, a broken frame, or a frame that failed
    /// authentication.
    #[error("reading from the server failed: {0}")]
    Read(#[source] Arc<SessionError>),
    /// The server sent a message this client cannot decode.
    #[error("undecodable message from the server: {0}")]
    Undecodable(#[source] Arc<DecodeError>),
    /// Writing to the server failed.
    #[error("writing to the server failed: {0}")]
    Write(#[source] Arc<std::io::Error>),
    /// A write made no progress (the server took no bytes) within the write timeout.
    #[error("the server took no bytes for {0:?}")]
    WriteStalled(Duration),
    /// The server did not answer a keepalive ping in time.
    #[error("the server did not answer a keepalive ping within {0:?}")]
    Unresponsive(Duration),
    /// 2^64 frames were sent or received on the connection.
    #[error("the connection's sequence numbers are exhausted")]
    SequenceExhausted,
    /// This client closed the connection ([`crate::Client::close`], or the client dropped).
    #[error("the client closed the connection")]
    ClientClosed,
    /// The call left with the handshake's proof
    /// ([`crate::ClientConfig::pipeline_first_call`]) and the handshake then failed.
    #[error("the call left with the handshake, which then failed: {0}")]
    Handshake(#[source] Arc<ConnectError>),
    /// The connection's task ended without answering the call.
    #[error("the connection's task ended")]
    TaskEnded,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(e: HandshakeError) -> ConnectError {
        ConnectError::Handshake(e)
    }

    #[test]
    fn only_refusals_for_now_and_broken_connections_are_worth_retrying() {
        for code in 0..=u8::MAX {
            let refusal = Refusal::from_code(code);
            let transient = handshake(HandshakeError::Refused(refusal)).is_transient();
            assert_eq!(
                transient,
                (5..=7).contains(&code),
                "status {code}: {refusal:?}"
            );
        }
        assert!(handshake(HandshakeError::Closed).is_transient());
        assert!(handshake(HandshakeError::Timeout(Duration::from_secs(1))).is_transient());
        assert!(handshake(HandshakeError::Io(
            std::io::ErrorKind::ConnectionReset.into()
        ))
        .is_transient());
        assert!(!handshake(HandshakeError::BadMagic { got: *b"HTTP" }).is_transient());
        assert!(!handshake(HandshakeError::UnsupportedVersion { got: 2 }).is_transient());
        assert!(!handshake(HandshakeError::UnsupportedSuite { got: 9 }).is_transient());
        assert!(!handshake(HandshakeError::Malformed("short")).is_transient());
        assert!(!ConnectError::Auth(HandshakeError::BadServerProof).is_transient());
        assert!(!ConnectError::Closed.is_transient());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let io = ConnectError::Io {
            addr: "127.0.0.1:1".into(),
            source: refused,
        };
        assert!(io.is_transient());
        let gave_up = |last| ConnectError::GaveUp {
            attempts: 3,
            last: Box::new(last),
        };
        assert!(gave_up(handshake(HandshakeError::Refused(Refusal::Busy))).is_transient());
        assert!(!gave_up(ConnectError::Auth(HandshakeError::BadServerProof)).is_transient());
    }

    #[test]
    fn errors_say_what_happened() {
        let e = CallError::OutcomeUnknown(ConnectionLost::Unresponsive(Duration::from_secs(2)));
        assert_eq!(
            e.to_string(),
            "connection lost after the call was sent; it may or may not have run: \
             the server did not answer a keepalive ping within 2s"
        );
        let e = ConnectError::GaveUp {
            attempts: 2,
            last: Box::new(handshake(HandshakeError::Closed)),
        };
        assert_eq!(
            e.to_string(),
            "gave up after 2 connection attempts; the last: handshake failed: \
             peer closed the connection during the handshake"
        );
    }
}
