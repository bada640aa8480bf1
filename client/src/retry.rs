//! How long to wait before trying to connect again: exponential backoff with full jitter.

use std::time::Duration;

/// Delay before reconnect attempt `attempt` (1-based): a random duration up to
/// `initial * 2^(attempt-1)`, capped at `max` ("full jitter"), and at least 1 ms.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let mut random = [0u8; 8];
    rpckit_proto::handshake::os_random(&mut random);
    let fraction = (u64::from_le_bytes(random) >> 11) as f64 / (1u64 << 53) as f64;
    exp.mul_f64(fraction).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let initial = Duration::from_millis(50);
        let max = Duration::from_secs(5);
        for attempt in 1..40 {
            let d = backoff(attempt, initial, max);
            assert!(d <= max, "attempt {attempt}: {d:?}");
            let cap = initial.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            assert!(d <= cap.max(Duration::from_millis(1)));
        }
    }
}
