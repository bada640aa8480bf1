//! Suite 1's frame protection: an HMAC-SHA256 tag over the sequence number and the payload,
//! which is sent in clear (PROTOCOL.md §6.1).

use hmac::{KeyInit, Mac};

/// Length of the tag at the end of every suite-1 frame.
pub const TAG_LEN: usize = 32;

pub(crate) type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// HMAC-SHA256 keyed with one direction's session key. Not `Clone`: the only copies are the
/// per-frame states it makes itself. The keyed state is zeroized when dropped.
pub(crate) struct Tagger {
    /// HMAC-SHA256 keyed with the direction's session key.
    mac: HmacSha256,
}

impl Tagger {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Tagger {
            // HMAC accepts keys of any length, so this cannot fail.
            mac: <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    fn state(&self, seq: u64, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&seq.to_be_bytes());
        mac.update(payload);
        mac
    }

    /// The tag of `payload` at `seq`.
    pub(crate) fn tag(&self, seq: u64, payload: &[u8]) -> [u8; TAG_LEN] {
        self.state(seq, payload).finalize().into_bytes().into()
    }

    /// Checks `payload | tag` at `seq` in constant time and returns the payload.
    pub(crate) fn open<'a>(&self, seq: u64, body: &'a [u8]) -> Option<&'a [u8]> {
        let split = body.len().checked_sub(TAG_LEN)?;
        let (payload, tag) = body.split_at(split);
        self.state(seq, payload).verify_slice(tag).ok()?;
        Some(payload)
    }
}
