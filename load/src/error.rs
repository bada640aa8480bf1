//! The error of a failed call or connection attempt, labelled for counting by kind.

use std::borrow::Cow;
use std::fmt;

/// A failed call or connection attempt, with a short label used to count errors by kind.
///
/// Labels are short and stable, e.g. `connect:ConnectionRefused`, `io:ConnectionReset`,
/// `connection_closed`, `bad_response_data`, `connection_broken`, `hard_stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError {
    kind: Cow<'static, str>,
    message: String,
    /// Whether no connection could be made (see [`BenchError::no_connection`]).
    no_connection: bool,
}

impl BenchError {
    /// An error with the counting label `kind` and a human-readable `message`.
    pub fn new(kind: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        BenchError {
            kind: kind.into(),
            message: message.into(),
            no_connection: false,
        }
    }

    /// This error, marked as a failure to make a connection (connect, handshake,
    /// authentication) rather than of a call on one.
    pub fn no_connection(mut self) -> Self {
        self.no_connection = true;
        self
    }

    /// Whether no connection could be made.
    pub fn is_no_connection(&self) -> bool {
        self.no_connection
    }

    /// An I/O error labelled `<context>:<ErrorKind>`, e.g. `io:ConnectionReset`.
    pub fn io(context: &str, err: &std::io::Error) -> Self {
        BenchError::new(
            format!("{context}:{:?}", err.kind()),
            format!("{context}: {err}"),
        )
    }

    /// The label errors are counted under.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The human-readable description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for BenchError {}
