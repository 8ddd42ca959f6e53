//! Message bodies that carry their own send time: the first 8 bytes are the
//! publisher's wall clock in nanoseconds since the Unix epoch (u64,
//! big-endian like the rest of the wire), the rest is filler.
//!
//! Wall-clock time, not `Instant`, so a consumer in another process (`sub`
//! against a `pub` run elsewhere on the same host) can still compute an age.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes at the front of every body that hold the send time.
pub const TIMESTAMP_LEN: usize = 8;

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `count` bodies of `size` bytes stamped with `sent_ns`, cut from one
/// allocation (one per batch rather than one per message).
///
/// `size` must be at least [`TIMESTAMP_LEN`]; the CLI checks it.
pub fn stamped_batch(count: usize, size: usize, sent_ns: u64) -> Vec<Bytes> {
    debug_assert!(size >= TIMESTAMP_LEN);
    let mut buf = BytesMut::with_capacity(count * size);
    for _ in 0..count {
        buf.put_u64(sent_ns);
        buf.put_bytes(b'x', size - TIMESTAMP_LEN);
    }
    let mut all = buf.freeze();
    (0..count).map(|_| all.split_to(size)).collect()
}

/// The send time stamped in `body`, if it has one.
pub fn sent_ns(body: &[u8]) -> Option<u64> {
    body.first_chunk::<TIMESTAMP_LEN>()
        .map(|ts| u64::from_be_bytes(*ts))
}

/// How long ago `body` was sent, in nanoseconds; 0 when the stamp is in the
/// future (clock steps), never negative.
pub fn age_ns(body: &[u8], now_ns: u64) -> Option<u64> {
    sent_ns(body).map(|sent| now_ns.saturating_sub(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_count_bodies_of_size_each_stamped() {
        let bodies = stamped_batch(3, 20, 0x0102_0304_0506_0708);
        assert_eq!(bodies.len(), 3);
        for body in &bodies {
            assert_eq!(body.len(), 20);
            assert_eq!(sent_ns(body), Some(0x0102_0304_0506_0708));
        }
    }

    #[test]
    fn age_is_never_negative() {
        let body = stamped_batch(1, 8, 1_000).remove(0);
        assert_eq!(age_ns(&body, 1_500), Some(500));
        assert_eq!(age_ns(&body, 10), Some(0));
        assert_eq!(age_ns(b"short", 10), None);
    }
}
