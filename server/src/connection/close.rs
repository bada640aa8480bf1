//! Why a connection ends, as a type: the event loop returns one [`Close`], and the close path
//! decides from it whether to say goodbye, whether anything more may be written, and how to
//! log it.

use std::io;
use std::time::Duration;

use rpckit_proto::{DecodeError, FrameError, SessionError};

use crate::log_limit::WarnReason;

/// Why the connection's event loop ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Close {
    /// The client said goodbye.
    #[error("client said goodbye")]
    ClientGoodbye,
    /// The peer closed at a frame boundary with no call in flight.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The server drains for shutdown and the last call has been answered.
    #[error("drained for shutdown")]
    Drained,
    /// The session keys used half of their limits; `GoingAway` went out and the last call
    /// has been answered.
    #[error("drained: session keys at half their limit (the client reconnects for new keys)")]
    KeysUsedUp,
    /// The peer half-closed and its last call has been answered.
    #[error("peer closed its side; calls finished")]
    HalfClosedDone,
    /// The drain's grace period ended; this many calls were answered `ShuttingDown`.
    #[error("grace period over; {0} calls answered ShuttingDown")]
    GraceOver(usize),
    /// No call in flight and none received for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// A call came with the id of a call still in flight (PROTOCOL.md §9.1).
    #[error("protocol error: call id {0} reused while in flight")]
    ReusedCallId(u64),
    /// A frame's payload is not a client envelope.
    #[error("undecodable envelope: {0}")]
    Undecodable(DecodeError),
    /// Reading the socket failed.
    #[error("read failed: {0}")]
    ReadFailed(io::Error),
    /// A frame broke the rules (length, tag, truncation).
    #[error("bad input: {0}")]
    BadInput(SessionError),
    /// A keepalive ping was not answered in time.
    #[error("peer unresponsive: no answer to keepalive within {0:?}")]
    Unresponsive(Duration),
    /// `max_queued` answers waited behind a write that had not finished.
    #[error("peer is not reading: {0} messages queued")]
    NotReading(usize),
    /// A write made no progress within the write timeout.
    #[error("peer stopped reading: no write progress within {0:?}")]
    WriteStalled(Duration),
    /// Writing the socket failed.
    #[error("write failed: {0}")]
    WriteFailed(io::Error),
    /// An answer could not be sealed (its sequence number ran out).
    #[error("cannot seal an answer: {0}")]
    Seal(SessionError),
}

impl Close {
    /// From a failed read of the next frame.
    pub(crate) fn read(e: SessionError) -> Self {
        match e {
            SessionError::Frame(FrameError::Io(io)) => Close::ReadFailed(io),
            other => Close::BadInput(other),
        }
    }

    /// Whether the server ends this connection in order, with a goodbye after every answer.
    pub(crate) fn says_goodbye(&self) -> bool {
        matches!(
            self,
            Close::Drained
                | Close::KeysUsedUp
                | Close::HalfClosedDone
                | Close::GraceOver(_)
                | Close::Idle(_)
        )
    }

    /// Whether this is a fault rather than an orderly end.
    pub(crate) fn is_fault(&self) -> bool {
        !self.says_goodbye() && !matches!(self, Close::ClientGoodbye | Close::PeerClosed)
    }

    /// The log budget a fault is counted against: bad input and protocol errors, or the
    /// peer's and the network's faults.
    pub(crate) fn warn_reason(&self) -> WarnReason {
        match self {
            Close::ReusedCallId(_) | Close::Undecodable(_) | Close::BadInput(_) => {
                WarnReason::BadInput
            }
            _ => WarnReason::ConnectionFault,
        }
    }

    /// Whether what is still queued may be written: not after the writing side failed (part
    /// of a frame may be on the wire, or the peer is not reading).
    pub(crate) fn may_write(&self) -> bool {
        !matches!(
            self,
            Close::NotReading(_) | Close::WriteStalled(_) | Close::WriteFailed(_) | Close::Seal(_)
        )
    }
}
