//! # rpckit-proto: the wire format of rpckit
//!
//! Everything that turns bytes into messages and back lives here; the server and client
//! crates only call it. Read it in the order data flows:
//!
//! 1. [`handshake`]: magic bytes, version and suite ([`suite`]), then a mutual HMAC-SHA256
//!    challenge-response bound to the suite that yields one session key per direction;
//! 2. [`frame`]: 4-byte big-endian length, then exactly that many bytes;
//! 3. [`session`]: every frame after the handshake is sealed with an AEAD (suites 2 and 3,
//!    encrypted) or carries an HMAC tag (suite 1, in clear), over a sequence number and its
//!    payload;
//! 4. [`message`]: the envelope (call id, deadline, control messages) and the wire errors,
//!    generic over the service's own request/response enums, encoded by [`codec`] (bincode
//!    1.3.3 with one fixed, bounded configuration);
//! 5. [`demo`]: the demo service's enums.
//!
//! [`outbox`] is the shared, coalescing outgoing side of a connection; [`transport`] the socket
//! both halves share; [`timer`] the deadlines that cost no system call to set; [`keyring`] holds
//! key ids, secrets and the keyring in memory (files and the environment: `rpckit-keyfile`).
//!
//! The byte-exact specification, with test vectors, is `docs/PROTOCOL.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod codec;
pub mod demo;
pub mod frame;
pub mod handshake;
pub mod keyring;
pub mod message;
pub mod outbox;
pub mod session;
pub mod suite;
pub mod timer;
pub mod transport;

pub use codec::{DecodeError, EncodeError};
pub use frame::{BufferBudget, FrameError, FrameLimits, DEFAULT_MAX_FRAME};
pub use handshake::{HandshakeConfig, HandshakeError, ProofVerdict, Refusal};
pub use keyring::{KeyError, KeyId, Keyring, SecretKey};
pub use message::{ClientMessage, RpcError, ServerMessage};
pub use outbox::{Outbox, OutboxError, Ticket};
pub use session::{FrameSealer, Session, SessionError, SessionReader, SessionWriter};
pub use suite::{KeyLimits, Suite, SuitePolicy, SuiteSet, SuiteSetError};
pub use transport::{SocketReader, TcpSocket};

#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod on_path_tests;
#[cfg(test)]
mod suite_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod test_vectors;
