//! The bytes every message carries: its intended send time and a sequence number.
//!
//! ```text
//! offset 0  u64 LE  intended send time, ns on the process clock (crate::clock::now_ns)
//! offset 8  u64 LE  sequence: sender index << 40 | message index of that sender
//! offset 16 ...     filler up to --payload bytes
//! ```
//!
//! The time travels with the message, so whoever receives it (the caller getting its echo
//! back, a subscriber on another thread, the callee of a p2p call) computes the latency from
//! one clock without any lookup table.

/// Smallest payload: the two stamps.
pub const MIN_PAYLOAD: usize = 16;

/// Bits of the sequence that hold the per-sender message index.
pub const SEQ_BITS: u32 = 40;

/// Fill `buf` with a `size`-byte payload stamped with `intended_ns` and `seq`.
pub fn fill(buf: &mut Vec<u8>, size: usize, intended_ns: u64, seq: u64) {
    buf.clear();
    buf.extend_from_slice(&intended_ns.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.resize(size.max(MIN_PAYLOAD), b'x');
}

/// Compose a sequence number from a sender index and its message index.
#[inline]
pub fn seq(sender: u32, k: u64) -> u64 {
    ((sender as u64) << SEQ_BITS) | (k & ((1 << SEQ_BITS) - 1))
}

/// Split a sequence number into (sender index, message index).
#[inline]
pub fn split_seq(seq: u64) -> (u32, u64) {
    ((seq >> SEQ_BITS) as u32, seq & ((1 << SEQ_BITS) - 1))
}

/// Read (intended time, sequence) back, or `None` if the payload is too short.
#[inline]
pub fn read(payload: &[u8]) -> Option<(u64, u64)> {
    let t = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let s = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((t, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = Vec::new();
        fill(&mut b, 64, 123_456_789, seq(7, 99));
        assert_eq!(b.len(), 64);
        let (t, s) = read(&b).unwrap();
        assert_eq!(t, 123_456_789);
        assert_eq!(split_seq(s), (7, 99));
        fill(&mut b, 4, 1, 2);
        assert_eq!(b.len(), MIN_PAYLOAD);
        assert_eq!(read(&b[..10]), None);
    }
}
