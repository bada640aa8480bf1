//! The demo service's request and response enums: what `rpc-client call` speaks to the stock
//! `rpc-server`. A user of the kit defines enums like these for their own service.
//!
//! Variant indices (bincode `u32`): `Echo` 0, `Uppercase` 1, `Ping` 2, `Sleep` 3; responses
//! likewise `Echo` 0, `Uppercase` 1, `Pong` 2, `Slept` 3. New methods are added at the end.

use serde::{Deserialize, Serialize};

/// A call to the demo service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Returns the bytes unchanged. Carried as one byte string, not element by element.
    Echo(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Returns the string in upper case.
    Uppercase(String),
    /// Returns `Pong`.
    Ping,
    /// Waits `ms` milliseconds, then returns `Slept`; used to show concurrency and deadlines.
    Sleep {
        /// How long to wait, in milliseconds.
        ms: u64,
    },
}

/// The demo service's answers, one variant per request variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The echoed bytes.
    Echo(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The upper-cased string.
    Uppercase(String),
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Sleep`.
    Slept {
        /// How long the handler waited, in milliseconds.
        ms: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn echo_is_a_byte_string() {
        let mut out = Vec::new();
        codec::encode_into(&mut out, &Request::Echo(vec![1, 2, 3]), 1024).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
    }
}
