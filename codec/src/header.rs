//! The fixed frame header.
//!
//! ```text
//! offset  size  field
//! 0       4     body length in bytes, u32 little-endian (the header itself is not counted)
//! 4       1     frame kind (see FrameKind)
//! 5       1     flags: must be 0 in protocol version 1
//! 6       2     reserved: must be 0 in protocol version 1
//! ```
//!
//! The length comes first so that a reader can size its buffer, and reject an oversized
//! frame, before it has seen a single byte of the body.

use crate::error::WireError;
pub use crate::kind::FrameKind;

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the rkyv archive that follows the header.
    pub body_len: u32,
    /// Which message the body holds.
    pub kind: FrameKind,
}

impl Header {
    /// Total frame length: header plus body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// Write this header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&self.body_len.to_le_bytes());
        out[4] = self.kind as u8;
        out[5] = 0;
        out[6] = 0;
        out[7] = 0;
    }

    /// Parse a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when fewer than [`HEADER_LEN`] bytes are available: an incomplete
    /// header is not an error. `max_body_len` is checked here, before anyone allocates for
    /// the body.
    pub fn parse(buf: &[u8], max_body_len: u32) -> Result<Option<Header>, WireError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let body_len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let kind = FrameKind::from_u8(h[4]).ok_or(WireError::UnknownKind(h[4]))?;
        if h[5] != 0 || h[6] != 0 || h[7] != 0 {
            return Err(WireError::ReservedBits {
                flags: h[5],
                reserved: u16::from_le_bytes([h[6], h[7]]),
            });
        }
        if body_len > max_body_len {
            return Err(WireError::TooLarge {
                len: body_len,
                max: max_body_len,
            });
        }
        Ok(Some(Header { body_len, kind }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_byte_layout_is_pinned() {
        let mut out = [0u8; HEADER_LEN];
        Header {
            body_len: 0x0102_0304,
            kind: FrameKind::Publish,
        }
        .write(&mut out);
        assert_eq!(out, [0x04, 0x03, 0x02, 0x01, 0x32, 0, 0, 0]);
    }

    #[test]
    fn short_header_is_incomplete_not_error() {
        for n in 0..HEADER_LEN {
            assert_eq!(Header::parse(&[0x01; HEADER_LEN][..n], 100), Ok(None));
        }
    }

    #[test]
    fn oversized_length_rejected_from_header_alone() {
        let buf = [0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0];
        assert_eq!(
            Header::parse(&buf, 1 << 20),
            Err(WireError::TooLarge {
                len: u32::MAX,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn unknown_kind_and_reserved_bits_rejected() {
        assert_eq!(
            Header::parse(&[0, 0, 0, 0, 0xEE, 0, 0, 0], 10),
            Err(WireError::UnknownKind(0xEE))
        );
        assert!(matches!(
            Header::parse(&[0, 0, 0, 0, 0x01, 1, 0, 0], 10),
            Err(WireError::ReservedBits { flags: 1, .. })
        ));
        assert!(matches!(
            Header::parse(&[0, 0, 0, 0, 0x01, 0, 0, 9], 10),
            Err(WireError::ReservedBits {
                reserved: 0x0900,
                ..
            })
        ));
    }

    #[test]
    fn kind_numbers_round_trip() {
        for &k in FrameKind::ALL {
            assert_eq!(FrameKind::from_u8(k as u8), Some(k));
        }
        let known: Vec<u8> = FrameKind::ALL.iter().map(|k| *k as u8).collect();
        for v in 0..=255u8 {
            assert_eq!(FrameKind::from_u8(v).is_some(), known.contains(&v));
        }
    }
}
