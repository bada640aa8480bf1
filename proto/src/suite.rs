//! Frame-protection suites: what the suite byte of the hellos names, which suite a client
//! offers, which a server allows, and how much one key may seal before the connection must be
//! replaced (PROTOCOL.md §2, §6, §13).
//!
//! Suite 1 tags frames with HMAC-SHA256 and does not encrypt them; suites 2 (AES-256-GCM) and
//! 3 (ChaCha20-Poly1305) seal every frame with an AEAD from `ring`.

/// A frame-protection suite, as carried in the suite byte of the ClientHello and ServerHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// Suite 1: HMAC-SHA256 tags, no encryption (integrity and authenticity only).
    HmacSha256,
    /// Suite 2: AES-256-GCM, every frame encrypted and authenticated.
    Aes256Gcm,
    /// Suite 3: ChaCha20-Poly1305, every frame encrypted and authenticated.
    ChaCha20Poly1305,
}

impl Suite {
    /// Every suite this code speaks, in suite-byte order.
    pub const ALL: [Suite; 3] = [Suite::HmacSha256, Suite::Aes256Gcm, Suite::ChaCha20Poly1305];

    /// The suite byte.
    pub fn code(self) -> u8 {
        match self {
            Suite::HmacSha256 => 1,
            Suite::Aes256Gcm => 2,
            Suite::ChaCha20Poly1305 => 3,
        }
    }

    /// The suite a suite byte names, if this code speaks it.
    pub fn from_code(code: u8) -> Option<Self> {
        Suite::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether frames under this suite are encrypted (not only authenticated).
    pub fn is_encrypted(self) -> bool {
        !matches!(self, Suite::HmacSha256)
    }

    /// The name used in flags and logs: `hmac-sha256`, `aes-256-gcm`, `chacha20-poly1305`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::HmacSha256 => "hmac-sha256",
            Suite::Aes256Gcm => "aes-256-gcm",
            Suite::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// The suite named `name` (as [`Suite::name`] spells it, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Suite::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The encrypting suite this CPU runs fastest: AES-256-GCM where the CPU has AES and
    /// carry-less multiply instructions (x86-64 AES-NI and PCLMULQDQ, ARMv8 AES and PMULL),
    /// which `ring` then uses (about 8,900 MB/s against 2,700 MB/s for ChaCha20-Poly1305
    /// on this project's machine); ChaCha20-Poly1305 elsewhere, where software AES would be
    /// slower and not constant-time.
    pub fn preferred() -> Self {
        if cpu_has_aes() {
            Suite::Aes256Gcm
        } else {
            Suite::ChaCha20Poly1305
        }
    }

    /// The limits one key of this suite stays within (see [`KeyLimits`]).
    pub fn key_limits(self) -> KeyLimits {
        match self {
            // RFC 8446 §5.5 allows 2^24.5 full-size (2^14-byte) records per AES-GCM key:
            // 2^34.5 blocks. Counting frames of any size, the bound of
            // draft-irtf-cfrg-aead-limits §5.1 is ((s + q + 1)^2) / 2^129 for s blocks in q
            // messages; 2^38 bytes in at most 2^32 frames keep s + q under 2^34.6, an
            // advantage under 2^-59.
            Suite::Aes256Gcm => KeyLimits {
                max_frames: 1 << 32,
                max_bytes: 1 << 38,
            },
            // ChaCha20-Poly1305 has no birthday bound on what one key seals (RFC 8446 §5.5:
            // the sequence number runs out first), and HMAC-SHA256 tags none either: only the
            // 64-bit sequence number limits them.
            Suite::ChaCha20Poly1305 | Suite::HmacSha256 => KeyLimits::UNLIMITED,
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn cpu_has_aes() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn cpu_has_aes() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has_aes() -> bool {
    false
}

/// How much one direction's key may seal. Sealing past either limit fails with
/// [`crate::SessionError::KeyLimitReached`]; from half of either limit the session reports
/// that it should be replaced (`should_rekey`), so that a connection can drain and reconnect
/// (a fresh handshake derives fresh keys) long before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// Frames one key may seal.
    pub max_frames: u64,
    /// Payload bytes one key may seal.
    pub max_bytes: u64,
}

impl KeyLimits {
    /// No limit beyond the sequence number's.
    pub const UNLIMITED: KeyLimits = KeyLimits {
        max_frames: u64::MAX,
        max_bytes: u64::MAX,
    };
}

/// Which suites a handshake offers and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuitePolicy {
    /// Client: the suite offered in the ClientHello. The client never falls back to another
    /// suite: a refusal is reported as it is. Default [`Suite::preferred`].
    pub offer: Suite,
    /// Server: refuse the integrity-only suite with status 9 ([`crate::Refusal::SuiteNotAllowed`]),
    /// so that every frame is encrypted. Default `false` (every suite is accepted).
    pub require_encrypted: bool,
    /// Both sides: limits for the session keys in place of the suite's own
    /// ([`Suite::key_limits`]); for tests that reach them. Default `None`.
    pub key_limits: Option<KeyLimits>,
}

impl Default for SuitePolicy {
    fn default() -> Self {
        SuitePolicy {
            offer: Suite::preferred(),
            require_encrypted: false,
            key_limits: None,
        }
    }
}

impl SuitePolicy {
    /// The policy of the original entry points (`connect`, `accept`): offer suite 1, accept
    /// every suite.
    pub fn integrity() -> Self {
        SuitePolicy {
            offer: Suite::HmacSha256,
            ..SuitePolicy::default()
        }
    }

    /// Whether a server with this policy accepts `suite`.
    pub fn allows(&self, suite: Suite) -> bool {
        suite.is_encrypted() || !self.require_encrypted
    }

    /// The key limits in force for `suite`.
    pub fn limits_for(&self, suite: Suite) -> KeyLimits {
        self.key_limits.unwrap_or_else(|| suite.key_limits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for suite in Suite::ALL {
            assert_eq!(Suite::from_code(suite.code()), Some(suite));
            assert_eq!(Suite::from_name(suite.name()), Some(suite));
        }
        assert_eq!(Suite::from_code(0), None);
        assert_eq!(Suite::from_code(4), None);
        assert!(Suite::preferred().is_encrypted());
    }

    #[test]
    fn a_server_requiring_encryption_refuses_only_suite_1() {
        let policy = SuitePolicy {
            require_encrypted: true,
            ..SuitePolicy::default()
        };
        assert!(!policy.allows(Suite::HmacSha256));
        assert!(policy.allows(Suite::Aes256Gcm));
        assert!(policy.allows(Suite::ChaCha20Poly1305));
        assert!(SuitePolicy::default().allows(Suite::HmacSha256));
    }
}
