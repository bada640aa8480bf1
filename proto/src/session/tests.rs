//! Unit tests of frame protection under every suite: round trips, tampering, replay,
//! reordering, sequence exhaustion, key limits and poisoning.

use super::*;
use crate::demo::Request;
use crate::frame::LEN_PREFIX;
use crate::suite::KeyLimits;

fn key(suite: Suite, byte: u8) -> DirectionKey {
    DirectionKey {
        suite,
        key: [byte; 32],
        iv: [byte ^ 0x5a; 12],
    }
}

fn direction(suite: Suite, byte: u8) -> Direction {
    Direction::new(&key(suite, byte), KeyLimits::UNLIMITED)
}

/// Seals `payload` as one whole frame (length prefix included).
fn frame_of(tx: &mut Direction, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; LEN_PREFIX];
    out.extend_from_slice(payload);
    tx.seal(&mut out, 0).unwrap();
    out
}

/// Opens a whole frame (length prefix included), checking that the prefix is the body length.
fn open(rx: &mut Direction, frame: &[u8]) -> Result<Vec<u8>, SessionError> {
    let declared = u32::from_be_bytes(frame[..LEN_PREFIX].try_into().unwrap()) as usize;
    let mut body = frame[LEN_PREFIX..].to_vec();
    if declared != body.len() {
        // A reader takes the length from the prefix: a changed prefix frames other bytes.
        body.resize(declared.min(body.len() + 64), 0);
    }
    rx.open(&mut body).map(<[u8]>::to_vec)
}

#[test]
fn each_suite_round_trips_and_encrypts_only_when_it_should() {
    for suite in Suite::ALL {
        let mut tx = direction(suite, 7);
        let mut rx = direction(suite, 7);
        for payload in [&b"zero"[..], b"", &[0xab; 5000]] {
            let frame = frame_of(&mut tx, payload);
            assert_eq!(frame.len(), LEN_PREFIX + payload.len() + tx.overhead());
            let in_clear = frame.windows(4).any(|w| w == &[0xab; 4][..]);
            assert_eq!(in_clear, !suite.is_encrypted() && payload.len() == 5000);
            assert_eq!(open(&mut rx, &frame).unwrap(), payload, "{suite}");
        }
    }
}

#[test]
fn a_flipped_bit_anywhere_in_a_sealed_frame_fails() {
    for suite in Suite::ALL {
        let frame = frame_of(&mut direction(suite, 7), b"a payload of some length");
        for i in 0..frame.len() {
            for bit in [0x01, 0x80] {
                let mut bad = frame.clone();
                bad[i] ^= bit;
                assert!(
                    open(&mut direction(suite, 7), &bad).is_err(),
                    "{suite}: flip {bit:#x} at byte {i} (header, body or tag)"
                );
            }
        }
    }
}

#[test]
fn replayed_reordered_dropped_and_foreign_frames_fail() {
    for suite in Suite::ALL {
        let mut tx = direction(suite, 7);
        let f0 = frame_of(&mut tx, b"zero");
        let f1 = frame_of(&mut tx, b"one");
        let f2 = frame_of(&mut tx, b"two");

        let mut rx = direction(suite, 7);
        assert_eq!(open(&mut rx, &f0).unwrap(), b"zero");
        assert_eq!(open(&mut rx, &f1).unwrap(), b"one");
        // Replay of f1 after f1.
        assert!(matches!(
            open(&mut rx, &f1),
            Err(SessionError::BadTag { seq: 2 })
        ));
        // The direction is poisoned: even the genuine next frame is refused now.
        assert!(matches!(open(&mut rx, &f2), Err(SessionError::Poisoned)));

        // Reordered: f1 first.
        assert!(open(&mut direction(suite, 7), &f1).is_err());
        // Dropped: f0 then f2.
        let mut rx = direction(suite, 7);
        open(&mut rx, &f0).unwrap();
        assert!(open(&mut rx, &f2).is_err());
        // Another key, or the same key under another suite.
        assert!(open(&mut direction(suite, 8), &f0).is_err());
        for other in Suite::ALL.into_iter().filter(|s| *s != suite) {
            assert!(open(&mut direction(other, 7), &f0).is_err());
        }
        // Too short to hold a tag.
        assert!(direction(suite, 7).open(&mut [0u8; 15]).is_err());
    }
}

#[test]
fn the_sequence_number_never_wraps() {
    for suite in Suite::ALL {
        let mut tx = direction(suite, 7);
        let mut rx = direction(suite, 7);
        tx.set_seq(u64::MAX - 1);
        rx.set_seq(u64::MAX - 1);
        let last = frame_of(&mut tx, b"last");
        assert_eq!(open(&mut rx, &last).unwrap(), b"last");
        let mut out = vec![9u8; LEN_PREFIX + 3];
        assert!(matches!(
            tx.seal(&mut out, 2),
            Err(SessionError::SequenceExhausted)
        ));
        assert_eq!(out, [9, 9], "a failed seal leaves the buffer as it was");
        assert!(matches!(
            rx.open(&mut last[LEN_PREFIX..].to_vec()),
            Err(SessionError::SequenceExhausted)
        ));
        // Poisoned for good: no frame at all is sealed any more.
        assert!(matches!(
            tx.seal(&mut vec![0; LEN_PREFIX], 0),
            Err(SessionError::Poisoned)
        ));
    }
}

#[test]
fn key_limits_are_reported_at_half_and_enforced_at_the_limit() {
    let limits = KeyLimits {
        max_frames: 4,
        max_bytes: 1000,
    };
    let mut tx = Direction::new(&key(Suite::Aes256Gcm, 1), limits);
    assert!(!tx.should_rekey());
    frame_of(&mut tx, b"a");
    assert!(!tx.should_rekey());
    frame_of(&mut tx, b"b");
    assert!(tx.should_rekey(), "2 of 4 frames");
    frame_of(&mut tx, b"c");
    frame_of(&mut tx, b"d");
    let mut out = vec![0u8; LEN_PREFIX + 1];
    assert!(matches!(
        tx.seal(&mut out, 0),
        Err(SessionError::KeyLimitReached)
    ));
    assert!(out.is_empty());

    let mut tx = Direction::new(&key(Suite::ChaCha20Poly1305, 1), limits);
    frame_of(&mut tx, &[0; 499]);
    assert!(!tx.should_rekey());
    frame_of(&mut tx, &[0; 1]);
    assert!(tx.should_rekey(), "500 of 1000 bytes");
    let mut out = vec![0u8; LEN_PREFIX + 501];
    assert!(matches!(
        tx.seal(&mut out, 0),
        Err(SessionError::KeyLimitReached)
    ));
}

#[test]
fn a_message_too_large_does_not_poison_the_sealer_but_a_spent_key_does() {
    let mut sealer = FrameSealer::new(direction(Suite::Aes256Gcm, 3), 64);
    let mut out = Vec::new();
    let big = ClientMessage::Call {
        id: 1,
        deadline: None,
        request: Request::Echo(vec![0; 100]),
    };
    assert!(matches!(
        sealer.push_client(&mut out, &big),
        Err(SessionError::Encode(_))
    ));
    assert!(out.is_empty());
    let ping = ClientMessage::<Request>::Ping { nonce: 1 };
    sealer.push_client(&mut out, &ping).unwrap();
    assert_eq!(out.len(), LEN_PREFIX + 12 + 16);

    sealer.set_seq(u64::MAX);
    let before = out.clone();
    assert!(sealer.push_client(&mut out, &ping).is_err());
    assert_eq!(out, before);
    sealer.set_seq(0);
    assert!(matches!(
        sealer.push_client(&mut out, &ping),
        Err(SessionError::Poisoned)
    ));
}

#[test]
fn keys_are_zeroized_on_drop() {
    fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroized_on_drop::<DirectionKey>();
    zeroized_on_drop::<crate::SecretKey>();
    zeroized_on_drop::<crate::handshake::SessionKeys>();
    zeroized_on_drop::<crate::handshake::AeadKeys>();
}

/// Sealing throughput of each suite through the real sealer, 64 KiB payloads, one core.
/// Run with `cargo test --release -p rpckit-proto --lib sealing_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn sealing_throughput() {
    let payload = vec![0x5au8; 64 * 1024];
    for suite in Suite::ALL {
        let mut tx = direction(suite, 7);
        let mut out = Vec::with_capacity(payload.len() + 64);
        let mut best = 0f64;
        for _ in 0..5 {
            let frames = 4000;
            let started = std::time::Instant::now();
            for _ in 0..frames {
                out.clear();
                out.extend_from_slice(&[0; LEN_PREFIX]);
                out.extend_from_slice(&payload);
                tx.seal(&mut out, 0).unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            best = best.max(frames as f64 * payload.len() as f64 / secs / 1e6);
        }
        println!("{suite:<18} {best:>8.0} MB/s (64 KiB frames, best of 5)");
    }
}
