//! The mutual HMAC-SHA256 handshake that opens every connection, written against the
//! `futures-io` traits so any runtime can drive it.
//!
//! ```text
//! client                                              server
//!   ClientHello  magic "RPCK", version, suite, nonce_c, key id  ->
//!             <-  ServerHello  magic, version, status, suite, nonce_s
//!   ClientProof  HMAC(key, "rpckit-v1 proof" | 'C' | suite | ...)  ->
//!                                 (server checks it in constant time)
//!             <-  ServerProof  status, HMAC(key, "rpckit-v1 proof" | 'S' | suite | ...)
//!                                 (client checks it: no impostor server)
//!   both derive one key per direction (and under an AEAD suite one IV) with HKDF-SHA256
//! ```
//!
//! Read in order: [`hello`] (the two hellos' bytes, the server's checks of the ClientHello),
//! [`proof`] (what each proof covers: under an encrypting suite the SHA-256 transcript of both
//! hellos), [`keys`] (HKDF), then [`accept`](mod@accept) (server) and
//! [`connect`](mod@connect) (client). The suite ([`crate::suite`]) is chosen by the client and
//! bound into both proofs and the keys, so a relay that rewrites it fails the handshake.
//!
//! Handshake messages have fixed layouts of at most 104 bytes, so nothing a peer sends before
//! it is authenticated can make either side buffer more than a few hundred bytes. The whole
//! handshake runs under one deadline set by the caller. The exact bytes are in
//! `docs/PROTOCOL.md`.

use std::io;
use std::time::Duration;

use async_io::Timer;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use rand::TryRng;

use crate::frame::{FrameError, FrameReader, DEFAULT_MAX_FRAME};
use crate::suite::Suite;

pub mod accept;
pub mod connect;
pub mod hello;
pub mod keys;
pub mod proof;

#[cfg(test)]
pub(crate) use accept::accept_with_nonce;
pub use accept::{accept, accept_reporting, accept_with_policy, ProofVerdict};
pub use connect::{connect, connect_pipelined, connect_with_policy};
#[cfg(test)]
pub(crate) use connect::{connect_policy_with_nonce, connect_with_nonce};
pub use hello::{client_hello, client_hello_for, server_hello, server_hello_for, server_refusal};
pub use keys::{derive_aead_keys, derive_session_keys, AeadKeys, SessionKeys};
pub use proof::{client_proof, client_proof_for, server_proof, server_proof_for, transcript_hash};

/// The first four bytes a client sends: identifies the protocol.
pub const MAGIC: [u8; 4] = *b"RPCK";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Frame-protection suite 1: HMAC-SHA256 tags, no encryption.
pub const SUITE_HMAC_SHA256: u8 = 1;
/// Frame-protection suite 2: AES-256-GCM.
pub const SUITE_AES_256_GCM: u8 = 2;
/// Frame-protection suite 3: ChaCha20-Poly1305.
pub const SUITE_CHACHA20_POLY1305: u8 = 3;
/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a handshake proof.
pub const PROOF_LEN: usize = 32;

/// Message type byte of the ClientHello.
pub const TYPE_CLIENT_HELLO: u8 = 1;
/// Message type byte of the ServerHello.
pub const TYPE_SERVER_HELLO: u8 = 2;
/// Message type byte of the ClientProof.
pub const TYPE_CLIENT_PROOF: u8 = 3;
/// Message type byte of the ServerProof.
pub const TYPE_SERVER_PROOF: u8 = 4;

/// Status byte meaning "go on".
pub const STATUS_OK: u8 = 0;

/// Fixed part of the ClientHello: magic, version, type, suite, nonce, key id length.
const CLIENT_HELLO_FIXED: usize = 4 + 1 + 1 + 1 + NONCE_LEN + 1;
/// ServerHello up to and including the status byte.
const SERVER_HELLO_HEAD: usize = 4 + 1 + 1 + 1;
/// Whole ServerHello when the status is OK.
const SERVER_HELLO_OK: usize = SERVER_HELLO_HEAD + 1 + NONCE_LEN;
/// Whole ClientProof.
const CLIENT_PROOF_LEN: usize = 1 + PROOF_LEN;
/// ServerProof up to and including the status byte.
const SERVER_PROOF_HEAD: usize = 2;

/// Why the server refused a handshake, as carried in the status byte of a ServerHello or
/// ServerProof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Status 1: the first bytes were not the protocol's magic.
    BadMagic,
    /// Status 2: the server does not speak the client's version (the server's own version is
    /// in the ServerHello's version byte).
    UnsupportedVersion,
    /// Status 3: the server does not support the frame-protection suite.
    UnsupportedSuite,
    /// Status 4: the hello was malformed.
    Malformed,
    /// Status 5: the server has too many connections.
    Busy,
    /// Status 6: the server is shutting down.
    ShuttingDown,
    /// Status 7: too many failed authentications from this address; try later.
    RateLimited,
    /// Status 8: authentication failed (unknown key id or wrong key; the peer is not told which).
    AuthFailed,
    /// Status 9: the server knows the suite but its policy does not allow it (a server that
    /// requires encryption refusing suite 1, say).
    SuiteNotAllowed,
    /// A status this code does not know.
    Other(u8),
}

impl Refusal {
    /// The status byte.
    pub fn code(self) -> u8 {
        match self {
            Refusal::BadMagic => 1,
            Refusal::UnsupportedVersion => 2,
            Refusal::UnsupportedSuite => 3,
            Refusal::Malformed => 4,
            Refusal::Busy => 5,
            Refusal::ShuttingDown => 6,
            Refusal::RateLimited => 7,
            Refusal::AuthFailed => 8,
            Refusal::SuiteNotAllowed => 9,
            Refusal::Other(code) => code,
        }
    }

    /// The refusal a status byte stands for.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Refusal::BadMagic,
            2 => Refusal::UnsupportedVersion,
            3 => Refusal::UnsupportedSuite,
            4 => Refusal::Malformed,
            5 => Refusal::Busy,
            6 => Refusal::ShuttingDown,
            7 => Refusal::RateLimited,
            8 => Refusal::AuthFailed,
            9 => Refusal::SuiteNotAllowed,
            other => Refusal::Other(other),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadMagic => f.write_str("not an rpckit connection"),
            Refusal::UnsupportedVersion => f.write_str("unsupported protocol version"),
            Refusal::UnsupportedSuite => f.write_str("unsupported frame-protection suite"),
            Refusal::Malformed => f.write_str("malformed handshake"),
            Refusal::Busy => f.write_str("server busy: too many connections"),
            Refusal::ShuttingDown => f.write_str("server shutting down"),
            Refusal::RateLimited => {
                f.write_str("too many failed authentications from this address")
            }
            Refusal::AuthFailed => f.write_str("authentication failed"),
            Refusal::SuiteNotAllowed => {
                f.write_str("frame-protection suite not allowed by the server's policy")
            }
            Refusal::Other(code) => write!(f, "refused with unknown status {code}"),
        }
    }
}

/// Why a handshake failed. Each failure has its own variant; the peer is told only the
/// [`Refusal`] (never, for instance, whether a key id exists).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake did not finish within its deadline.
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection during the handshake.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// Reading or writing failed.
    #[error("i/o error during handshake: {0}")]
    Io(#[from] io::Error),
    /// The first bytes are not the protocol's magic (an HTTP request, say).
    #[error("not an rpckit peer: first bytes {got:02x?} (expected \"RPCK\")")]
    BadMagic {
        /// The four bytes received.
        got: [u8; 4],
    },
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {got}, this side speaks {VERSION}")]
    UnsupportedVersion {
        /// The peer's version.
        got: u8,
    },
    /// The peer asked for a frame-protection suite this side does not have.
    #[error("unsupported frame-protection suite {got}")]
    UnsupportedSuite {
        /// The suite byte received.
        got: u8,
    },
    /// Server side: the client offered a suite this server's policy does not allow (suite 1
    /// to a server that requires encryption, say).
    #[error("suite {suite} not allowed by this server's policy")]
    SuiteNotAllowed {
        /// The suite offered.
        suite: Suite,
    },
    /// A handshake message broke the layout.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// A handshake message of the wrong type arrived (a second hello, say).
    #[error("expected handshake message type {expected}, got {got}")]
    UnexpectedMessage {
        /// The type expected at this step.
        expected: u8,
        /// The type received.
        got: u8,
    },
    /// Server side: the client named a key id that is not in the keyring.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// Server side: the client's proof did not verify (wrong key, tampered, replayed or
    /// reflected proof).
    #[error("client proof for key id {0:?} did not verify")]
    BadClientProof(String),
    /// Client side: the server refused the handshake.
    #[error("server refused the connection: {0}")]
    Refused(Refusal),
    /// Client side: the server's proof did not verify, so it does not hold the key: an
    /// impostor, or a server configured with another key.
    #[error("server failed to prove it holds the key (impostor or different key)")]
    BadServerProof,
}

impl HandshakeError {
    /// Whether this failure means the credentials were not accepted, either way round.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            HandshakeError::UnknownKeyId(_)
                | HandshakeError::BadClientProof(_)
                | HandshakeError::Refused(Refusal::AuthFailed)
                | HandshakeError::BadServerProof
        )
    }

    /// The refusal the server sends for this failure, if it sends one.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        match self {
            HandshakeError::BadMagic { .. } => Some(Refusal::BadMagic),
            HandshakeError::UnsupportedVersion { .. } => Some(Refusal::UnsupportedVersion),
            HandshakeError::UnsupportedSuite { .. } => Some(Refusal::UnsupportedSuite),
            HandshakeError::SuiteNotAllowed { .. } => Some(Refusal::SuiteNotAllowed),
            HandshakeError::Malformed(_) | HandshakeError::UnexpectedMessage { .. } => {
                Some(Refusal::Malformed)
            }
            _ => None,
        }
    }
}

/// Settings of a handshake.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// Deadline for the whole handshake, not reset by each byte. Default 10 s.
    pub timeout: Duration,
    /// Largest frame accepted and sent after the handshake. Default 8 MiB.
    pub max_frame: u32,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            timeout: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system cannot provide random bytes; no key or nonce may be made then.
pub fn os_random(buf: &mut [u8]) {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .expect("the operating system's random number generator failed");
}

pub(crate) fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    os_random(&mut n);
    n
}

/// Runs `fut` under `timeout`.
async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    futures_lite::future::or(fut, async {
        Timer::after(timeout).await;
        Err(HandshakeError::Timeout(timeout))
    })
    .await
}

/// Reads until `n` bytes are buffered, or fails with [`HandshakeError::Closed`].
async fn need<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    n: usize,
) -> Result<&[u8], HandshakeError> {
    let filled = reader.fill(n).await.map_err(|e| match e {
        FrameError::Io(e) => HandshakeError::Io(e),
        other => HandshakeError::Io(io::Error::other(other.to_string())),
    })?;
    if filled {
        Ok(&reader.buffered()[..n])
    } else {
        Err(HandshakeError::Closed)
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}
