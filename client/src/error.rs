//! Typed errors of the client: failing to connect, and failing a call.

use std::time::Duration;

use rpckit_proto::{HandshakeError, Refusal, RpcError};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect failed (nothing listening, unreachable, refused), an I/O error broke the
    /// handshake, or a call gave up after its reconnect attempts.
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
    OutcomeUnknown(String),
    /// No connection could be made for the call (it was never sent).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server's answer could not be decoded as this client's response type.
    #[error("undecodable response: {0}")]
    Decode(String),
    /// The request could not be encoded (for example it is larger than the frame limit).
    #[error("request cannot be sent: {0}")]
    Encode(String),
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
    }
}
