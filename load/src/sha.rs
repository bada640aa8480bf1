//! Local SHA-256 throughput, the ceiling for authenticated bulk transfers.
//!
//! rpckit authenticates frames with HMAC-SHA256, whose cost on a 64 KiB frame
//! is essentially one SHA-256 pass over it. Hashing 64 KiB buffers in a loop on
//! one core therefore tells how many authenticated bytes per second one core
//! can possibly produce or check, which puts bulk-payload benchmark numbers in
//! perspective.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Size of each hashed buffer.
pub const SHA_BUFFER_BYTES: usize = 64 * 1024;

/// Hashes 64 KiB buffers with SHA-256 for about `duration` and returns bytes hashed per second.
///
/// At least one buffer is hashed, even for a zero duration. Runs on the calling
/// thread and blocks it; from async code run it with `async_std::task::spawn_blocking`.
pub fn measure_sha256_throughput(duration: Duration) -> f64 {
    let buf: Vec<u8> = (0..SHA_BUFFER_BYTES).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let mut bytes = 0u64;
    loop {
        let digest = Sha256::digest(black_box(buf.as_slice()));
        black_box(digest);
        bytes += SHA_BUFFER_BYTES as u64;
        if start.elapsed() >= duration {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_throughput_is_positive() {
        let rate = measure_sha256_throughput(Duration::from_millis(20));
        assert!(rate > 0.0 && rate.is_finite());
    }

    #[test]
    fn sha256_known_answer() {
        // Guards against misuse of the API: SHA-256("abc").
        let d = Sha256::digest(b"abc");
        assert_eq!(
            d.as_slice()[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(abc) starts with ba7816bf"
        );
    }
}
