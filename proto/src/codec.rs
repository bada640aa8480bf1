//! The one bincode configuration of the protocol, and the bounded encode/decode built on it.
//!
//! bincode 1.3.3 is used only through [`bincode::Options`], configured here and nowhere else:
//!
//! * fixed-width integers (`u32` is 4 bytes, `u64` is 8 bytes, no varint),
//! * little-endian byte order,
//! * enum variant indices as `u32`, `Option` as a `0x00`/`0x01` byte, strings and byte strings as
//!   a `u64` length followed by the bytes (strings must be valid UTF-8),
//! * trailing bytes after a message are rejected,
//! * every decode carries a byte limit: the decoder never reads more than the bytes that are
//!   actually present, and allocates for strings and byte strings only what is present, so a
//!   length field of `2^64 - 1` inside a small frame is a [`DecodeError`], not an allocation.
//!   (A sequence of other elements, `Vec<u64>` say, may reserve up to 1 MiB ahead of its
//!   elements before they are found missing: serde's cautious size hint.)
//!
//! `docs/PROTOCOL.md` repeats these rules for implementers in other languages.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a message could not be decoded (or encoded).
#[derive(Debug, thiserror::Error)]
#[error("bincode: {0}")]
pub struct DecodeError(#[from] bincode::Error);

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(#[from] bincode::Error);

/// The protocol's bincode configuration with a byte limit, rejecting trailing bytes.
fn exact(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit)
        .reject_trailing_bytes()
}

/// The same configuration for a message that is followed by more bytes (an envelope header
/// followed by its body).
fn prefix(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit)
        .allow_trailing_bytes()
}

/// Appends the encoding of `value` to `out`, failing if it would exceed `limit` bytes.
///
/// On error `out` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    limit: u64,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = exact(limit).serialize_into(&mut *out, value);
    if result.is_err() {
        out.truncate(start);
    }
    Ok(result?)
}

/// Decodes exactly one `T` from all of `bytes`: trailing bytes are an error.
///
/// The decode limit is `bytes.len()`, so no length field inside can make the decoder allocate
/// more than the input holds.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Ok(exact(bytes.len() as u64).deserialize(bytes)?)
}

/// Decodes one `T` from the front of `bytes` and returns it with the bytes that follow it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), DecodeError> {
    let mut rest = bytes;
    let value = prefix(bytes.len() as u64).deserialize_from(&mut rest)?;
    Ok((value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let mut out = Vec::new();
        encode_into(&mut out, &(7u32, "hi".to_string()), 1024).unwrap();
        assert_eq!(out, [7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'h', b'i']);
        let back: (u32, String) = decode(&out).unwrap();
        assert_eq!(back, (7, "hi".to_string()));
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut out = Vec::new();
        encode_into(&mut out, &5u32, 1024).unwrap();
        out.push(0);
        assert!(decode::<u32>(&out).is_err());
        let (v, rest) = decode_prefix::<u32>(&out).unwrap();
        assert_eq!((v, rest), (5, &[0u8][..]));
    }

    #[test]
    fn huge_length_in_small_input_is_an_error_not_an_allocation() {
        // A Vec<u64> claiming 2^64-1 elements, and a String claiming 2^64-1 bytes.
        let bytes = [0xFFu8; 8];
        assert!(decode::<Vec<u64>>(&bytes).is_err());
        assert!(decode::<String>(&bytes).is_err());
        assert!(decode::<serde_bytes::ByteBuf>(&bytes).is_err());
    }

    #[test]
    fn invalid_utf8_rejected() {
        let bytes = [1, 0, 0, 0, 0, 0, 0, 0, 0xFF];
        assert!(decode::<String>(&bytes).is_err());
    }

    #[test]
    fn encode_limit_enforced_and_output_restored() {
        let mut out = vec![1, 2, 3];
        assert!(encode_into(&mut out, &vec![0u8; 100], 10).is_err());
        assert_eq!(out, [1, 2, 3]);
    }
}
