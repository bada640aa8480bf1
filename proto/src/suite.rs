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
    pub const fn code(self) -> u8 {
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

/// A set of suites: those a server accepts.
///
/// Parsed from the words `rpc-server --suite` takes: `encrypted` (suites 2 and 3), `any` (all
/// three), or a comma-separated list of suite names ([`Suite::name`], any case), such as
/// `aes-256-gcm,hmac-sha256`. Displayed as the list of names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SuiteSet(u8);

impl SuiteSet {
    /// Every suite.
    pub const ALL: SuiteSet = SuiteSet(0b111);
    /// The encrypting suites: AES-256-GCM and ChaCha20-Poly1305.
    pub const ENCRYPTED: SuiteSet = SuiteSet(0b110);

    /// The set of `suite` alone.
    pub const fn only(suite: Suite) -> Self {
        SuiteSet(Self::bit(suite))
    }

    /// This set with `suite` added.
    pub const fn with(self, suite: Suite) -> Self {
        SuiteSet(self.0 | Self::bit(suite))
    }

    /// Whether `suite` is in the set.
    pub const fn contains(self, suite: Suite) -> bool {
        self.0 & Self::bit(suite) != 0
    }

    /// The suites in the set, in suite-byte order.
    pub fn iter(self) -> impl Iterator<Item = Suite> {
        Suite::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    const fn bit(suite: Suite) -> u8 {
        1 << (suite.code() - 1)
    }
}

impl std::fmt::Debug for SuiteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl std::fmt::Display for SuiteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, suite) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(suite.name())?;
        }
        Ok(())
    }
}

/// A word that names no suite, or an empty list, where a [`SuiteSet`] was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown suite {0:?}: expected encrypted, any, or a comma list of hmac-sha256, aes-256-gcm, chacha20-poly1305"
)]
pub struct SuiteSetError(pub String);

impl std::str::FromStr for SuiteSet {
    type Err = SuiteSetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("encrypted") {
            return Ok(SuiteSet::ENCRYPTED);
        }
        if s.eq_ignore_ascii_case("any") {
            return Ok(SuiteSet::ALL);
        }
        let mut set = SuiteSet(0);
        for word in s.split(',') {
            let word = word.trim();
            let suite = Suite::from_name(word).ok_or_else(|| SuiteSetError(word.to_owned()))?;
            set = set.with(suite);
        }
        Ok(set)
    }
}

/// Which suites a handshake offers and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuitePolicy {
    /// Client: the suite offered in the ClientHello. The client never falls back to another
    /// suite: a refusal is reported as it is. Default [`Suite::preferred`].
    pub offer: Suite,
    /// Server: the suites accepted. A client offering another suite this code speaks is
    /// refused with status 9 ([`crate::Refusal::SuiteNotAllowed`]). Default
    /// [`SuiteSet::ENCRYPTED`]: every frame is encrypted unless the integrity-only suite is
    /// asked for.
    pub accept: SuiteSet,
    /// Both sides: lower limits for the session keys than the suite's own
    /// ([`Suite::key_limits`]; an override never raises them), for tests and operators that
    /// want connections replaced sooner. Default `None`.
    pub key_limits: Option<KeyLimits>,
}

impl Default for SuitePolicy {
    fn default() -> Self {
        SuitePolicy {
            offer: Suite::preferred(),
            accept: SuiteSet::ENCRYPTED,
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
            accept: SuiteSet::ALL,
            key_limits: None,
        }
    }

    /// Whether a server with this policy accepts `suite`.
    pub fn allows(&self, suite: Suite) -> bool {
        self.accept.contains(suite)
    }

    /// The key limits in force for `suite`: its own, lowered by `key_limits` if set (an
    /// override never raises them).
    pub fn limits_for(&self, suite: Suite) -> KeyLimits {
        let own = suite.key_limits();
        match self.key_limits {
            Some(lower) => KeyLimits {
                max_frames: own.max_frames.min(lower.max_frames),
                max_bytes: own.max_bytes.min(lower.max_bytes),
            },
            None => own,
        }
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
    fn the_default_server_policy_refuses_only_suite_1() {
        let policy = SuitePolicy::default();
        assert!(!policy.allows(Suite::HmacSha256));
        assert!(policy.allows(Suite::Aes256Gcm));
        assert!(policy.allows(Suite::ChaCha20Poly1305));
        assert!(SuitePolicy::integrity().allows(Suite::HmacSha256));
    }

    #[test]
    fn a_key_limit_override_only_lowers_the_suites_own() {
        let policy = SuitePolicy {
            key_limits: Some(KeyLimits {
                max_frames: 10,
                max_bytes: u64::MAX,
            }),
            ..SuitePolicy::default()
        };
        let aes = policy.limits_for(Suite::Aes256Gcm);
        assert_eq!(aes.max_frames, 10);
        assert_eq!(aes.max_bytes, Suite::Aes256Gcm.key_limits().max_bytes);
        assert_eq!(policy.limits_for(Suite::ChaCha20Poly1305).max_frames, 10);
    }

    #[test]
    fn suite_sets_parse_and_display() {
        let parse = |s: &str| s.parse::<SuiteSet>();
        assert_eq!(parse("encrypted"), Ok(SuiteSet::ENCRYPTED));
        assert_eq!(parse("ANY"), Ok(SuiteSet::ALL));
        assert_eq!(parse("aes-256-gcm"), Ok(SuiteSet::only(Suite::Aes256Gcm)));
        let two = parse(" hmac-sha256 , ChaCha20-Poly1305 ").unwrap();
        assert_eq!(
            two,
            SuiteSet::only(Suite::HmacSha256).with(Suite::ChaCha20Poly1305)
        );
        assert_eq!(two.to_string(), "hmac-sha256,chacha20-poly1305");
        assert_eq!(SuiteSet::ALL.iter().collect::<Vec<_>>(), Suite::ALL);
        assert_eq!(
            parse("aes-128-gcm"),
            Err(SuiteSetError("aes-128-gcm".into()))
        );
        assert_eq!(parse(""), Err(SuiteSetError(String::new())));
        assert_eq!(parse("aes-256-gcm,"), Err(SuiteSetError(String::new())));
    }
}
