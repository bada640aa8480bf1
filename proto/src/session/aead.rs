//! Suites 2 and 3: every frame sealed with an AEAD from `ring` (AES-256-GCM or
//! ChaCha20-Poly1305), nonce = the direction's IV XOR the sequence number, the 4-byte length
//! header authenticated as associated data (PROTOCOL.md §6.2).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::suite::Suite;

/// Length of the AEAD tag at the end of every suite-2 or suite-3 frame.
pub const AEAD_TAG_LEN: usize = 16;
/// Length of an AEAD nonce and of a direction's IV.
pub const IV_LEN: usize = 12;

/// One direction's AEAD key and IV. Not `Clone`: a copy could seal under a nonce already
/// used. The IV is zeroized when dropped; `ring` keeps the expanded key schedule itself and
/// does not zeroize it (PROTOCOL.md §13.3).
pub(crate) struct Sealing {
    /// The key, expanded by `ring`.
    key: LessSafeKey,
    /// XORed with the sequence number to make each frame's nonce.
    iv: [u8; IV_LEN],
}

impl Drop for Sealing {
    fn drop(&mut self) {
        self.iv.zeroize();
    }
}

impl Sealing {
    /// The AEAD of `suite` keyed with `key`; `None` for a suite that does not encrypt.
    pub(crate) fn new(suite: Suite, key: &[u8; 32], iv: &[u8; IV_LEN]) -> Option<Self> {
        let algorithm = match suite {
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
            Suite::HmacSha256 => return None,
        };
        // Both algorithms take 32-byte keys, so this cannot fail.
        let unbound = UnboundKey::new(algorithm, key).expect("AEAD keys are 32 bytes");
        Some(Sealing {
            key: LessSafeKey::new(unbound),
            iv: *iv,
        })
    }

    /// The nonce of frame `seq`: the IV XOR the sequence number, big-endian, in its last 8
    /// bytes (as TLS 1.3 does).
    fn nonce(&self, seq: u64) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[IV_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        Nonce::assume_unique_for_key(nonce)
    }

    /// Encrypts `in_out` in place at `seq`, authenticating `header`, and returns the tag.
    pub(crate) fn seal(
        &self,
        seq: u64,
        header: [u8; 4],
        in_out: &mut [u8],
    ) -> Option<[u8; AEAD_TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(seq), Aad::from(header), in_out)
            .ok()?;
        tag.as_ref().try_into().ok()
    }

    /// Checks and decrypts `ciphertext | tag` in place at `seq`, the frame's length header
    /// being `header`, and returns the plaintext.
    pub(crate) fn open<'a>(
        &self,
        seq: u64,
        header: [u8; 4],
        body: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        self.key
            .open_in_place(self.nonce(seq), Aad::from(header), body)
            .ok()
    }
}
