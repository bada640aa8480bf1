//! One direction of a session: the suite's keyed primitive, the sequence number, what the key
//! has sealed so far against its limits, and the poisoning that stops a direction for good
//! once sealing or opening has failed.

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::aead::{Sealing, AEAD_TAG_LEN, IV_LEN};
use super::integrity::{Tagger, TAG_LEN};
use super::SessionError;
use crate::frame::LEN_PREFIX;
use crate::suite::{KeyLimits, Suite};

/// The keying material of one direction, as the handshake derives it. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct DirectionKey {
    /// The suite the key belongs to.
    #[zeroize(skip)]
    pub(crate) suite: Suite,
    /// The HMAC key (suite 1) or AEAD key (suites 2 and 3).
    pub(crate) key: [u8; 32],
    /// The AEAD IV; unused by suite 1.
    pub(crate) iv: [u8; IV_LEN],
}

impl DirectionKey {
    /// Suite 1's key.
    pub(crate) fn hmac(key: &[u8; 32]) -> Self {
        DirectionKey {
            suite: Suite::HmacSha256,
            key: *key,
            iv: [0; IV_LEN],
        }
    }
}

/// The keyed primitive of the suite, boxed: keyed HMAC states and `ring`'s key schedules are
/// large, and a connection's task holds both directions across every await.
enum Cipher {
    /// Suite 1: a tag, payload in clear.
    Tags(Box<Tagger>),
    /// Suites 2 and 3: sealed in place.
    Aead(Box<Sealing>),
}

/// One direction's protection state. Not `Clone`: two copies would seal different frames
/// under one sequence number (with an AEAD, one nonce).
pub(crate) struct Direction {
    /// The suite's keyed primitive.
    cipher: Cipher,
    /// The suite.
    suite: Suite,
    /// Sequence number of the next frame: also the number of frames sealed or opened so far.
    seq: u64,
    /// Payload bytes sealed or opened so far.
    bytes: u64,
    /// What the key may seal.
    limits: KeyLimits,
    /// Set once sealing or opening failed: nothing more is sealed or opened.
    poisoned: bool,
}

impl std::fmt::Debug for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direction")
            .field("suite", &self.suite)
            .field("seq", &self.seq)
            .field("bytes", &self.bytes)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Direction {
    /// A direction keyed with `key`, starting at sequence number 0.
    pub(crate) fn new(key: &DirectionKey, limits: KeyLimits) -> Self {
        let cipher = match Sealing::new(key.suite, &key.key, &key.iv) {
            Some(sealing) => Cipher::Aead(Box::new(sealing)),
            None => Cipher::Tags(Box::new(Tagger::new(&key.key))),
        };
        Direction {
            cipher,
            suite: key.suite,
            seq: 0,
            bytes: 0,
            limits,
            poisoned: false,
        }
    }

    /// The suite.
    pub(crate) fn suite(&self) -> Suite {
        self.suite
    }

    /// Bytes each frame adds to its payload: the tag.
    pub(crate) fn overhead(&self) -> usize {
        match self.cipher {
            Cipher::Tags(_) => TAG_LEN,
            Cipher::Aead(_) => AEAD_TAG_LEN,
        }
    }

    /// Whether half of either key limit is used: the connection should be replaced by a new
    /// one (with new keys) while it can still seal.
    pub(crate) fn should_rekey(&self) -> bool {
        self.seq >= self.limits.max_frames / 2 || self.bytes >= self.limits.max_bytes / 2
    }

    /// Starts the sequence number at `seq`, to reach its end in a test.
    #[cfg(test)]
    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Checks that one more frame of `len` payload bytes may be sealed or opened.
    fn admit(&mut self, len: usize) -> Result<(), SessionError> {
        let len = len as u64;
        let result = if self.poisoned {
            Err(SessionError::Poisoned)
        } else if self.seq == u64::MAX {
            Err(SessionError::SequenceExhausted)
        } else if self.seq >= self.limits.max_frames
            || self.bytes.saturating_add(len) > self.limits.max_bytes
        {
            Err(SessionError::KeyLimitReached)
        } else {
            Ok(())
        };
        self.poisoned |= result.is_err();
        result
    }

    fn advance(&mut self, len: usize) {
        self.seq += 1;
        self.bytes = self.bytes.saturating_add(len as u64);
    }

    /// Seals the frame that starts at `out[start]`: a 4-byte placeholder for the length, then
    /// the payload up to the end of `out`. Fills in the length, protects the payload and
    /// appends the tag. On error `out` is truncated to `start` and the direction is poisoned.
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), SessionError> {
        let payload_start = start + LEN_PREFIX;
        let payload_len = out.len() - payload_start;
        if let Err(e) = self.admit(payload_len) {
            out.truncate(start);
            return Err(e);
        }
        let len = u32::try_from(payload_len + self.overhead())
            .map_err(|_| SessionError::Poisoned)
            .inspect_err(|_| self.poisoned = true)?;
        let header = len.to_be_bytes();
        out[start..payload_start].copy_from_slice(&header);
        match &self.cipher {
            Cipher::Tags(tagger) => {
                let tag = tagger.tag(self.seq, &out[payload_start..]);
                out.extend_from_slice(&tag);
            }
            Cipher::Aead(sealing) => {
                match sealing.seal(self.seq, header, &mut out[payload_start..]) {
                    Some(tag) => out.extend_from_slice(&tag),
                    None => {
                        out.truncate(start);
                        self.poisoned = true;
                        return Err(SessionError::Poisoned);
                    }
                }
            }
        }
        self.advance(payload_len);
        Ok(())
    }

    /// Checks (and under an AEAD, decrypts in place) one frame body (`payload | tag`, the
    /// length prefix already stripped) and returns the payload. A frame that fails poisons
    /// the direction.
    pub(crate) fn open<'a>(&mut self, body: &'a mut [u8]) -> Result<&'a [u8], SessionError> {
        let seq = self.seq;
        self.admit(body.len().saturating_sub(self.overhead()))?;
        let header = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
        let opened = match &self.cipher {
            Cipher::Tags(tagger) => tagger.open(seq, body),
            Cipher::Aead(sealing) => sealing.open(seq, header, body).map(|p| &*p),
        };
        match opened {
            Some(payload) => {
                self.advance(payload.len());
                Ok(payload)
            }
            None => {
                self.poisoned = true;
                Err(SessionError::BadTag { seq })
            }
        }
    }
}
