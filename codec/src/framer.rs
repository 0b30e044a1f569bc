//! A streaming frame splitter over an owned buffer.

use bytes::{Buf, Bytes, BytesMut};

use crate::codec::split_frame;
use crate::error::WireError;
use crate::header::{Header, HEADER_LEN};

/// Most bytes reserved ahead of data for an announced frame.
const RESERVE_CAP: usize = 64 * 1024;

/// Accumulates bytes from a stream and yields whole frames as `Bytes`.
///
/// Each yielded `Bytes` is split off the internal buffer without copying and holds one whole
/// frame, header included; decode it with [`crate::codec::decode_bytes`]. The size limit is
/// checked on the header, so an oversized frame is refused before its body is buffered.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_body_len: u32,
}

impl Framer {
    /// A framer refusing bodies larger than `max_body_len`.
    pub fn new(max_body_len: u32) -> Framer {
        Framer {
            buf: BytesMut::new(),
            max_body_len,
        }
    }

    /// Append received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The internal buffer, for reading into directly.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet yielded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the next frame needs (at least 1 when a frame is incomplete, 0
    /// when a whole frame is already buffered). Useful to size a read.
    pub fn needed(&self) -> Result<usize, WireError> {
        match Header::parse(&self.buf, self.max_body_len)? {
            None => Ok(HEADER_LEN - self.buf.len()),
            Some(h) => Ok(h.frame_len().saturating_sub(self.buf.len())),
        }
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, WireError> {
        match split_frame(&self.buf, self.max_body_len)? {
            None => {
                // Make room for the rest of the frame in one allocation, now that the header
                // told us (within the limit) how long it is.
                if let Some(h) = Header::parse(&self.buf, self.max_body_len)? {
                    // Capped: a header alone must not make us allocate up to the frame limit
                    // (8 bytes from a peer would otherwise pin max_frame_len of memory).
                    // Larger frames grow the buffer as their bytes actually arrive.
                    let want = (h.frame_len() - self.buf.len()).min(RESERVE_CAP);
                    self.buf.reserve(want);
                }
                Ok(None)
            }
            Some((_, n)) => Ok(Some(self.buf.split_to(n).freeze())),
        }
    }

    /// Drop everything buffered.
    pub fn clear(&mut self) {
        self.buf.advance(self.buf.len());
    }
}
