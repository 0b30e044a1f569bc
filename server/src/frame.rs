//! [`Frame`]: an encoded peerd frame ready for any transport.
//!
//! Server frames to WebSocket peers are unmasked binary messages, so the WebSocket header
//! depends only on the frame's length: it is written once, in front of the frame, when the
//! frame is encoded. TCP, Unix and `tls://` peers are queued the slice after it, WebSocket
//! peers the whole; both share the one allocation by reference count. One publish to
//! members on every transport is thus one encode and no copy.

use bytes::{Buf, Bytes};
use peerd_codec::{self as codec, EncodeError};
use peerd_ws::frame::{self as wsframe, Opcode};

/// Room kept in front of every encoded frame for its WebSocket header.
const WS_ROOM: usize = wsframe::MAX_SERVER_HEADER;

/// A frame ready to queue to any peer: a peerd frame with the header of a WebSocket binary
/// message in front (module doc). Cloning shares the bytes.
#[derive(Clone, Debug)]
pub(crate) struct Frame(Bytes);

impl Frame {
    /// Encode `msg` (body at most `max`) at the end of `enc`, with its WebSocket header in
    /// front; returns how many bytes at the start of what was appended are unused room
    /// (the caller skips them). On error `enc` is as it was.
    pub fn encode_into<M: codec::Encode>(
        msg: &M,
        enc: &mut bytes::BytesMut,
        max: u32,
    ) -> Result<usize, EncodeError> {
        let base = enc.len();
        enc.resize(base + WS_ROOM, 0);
        if let Err(e) = codec::encode(msg, enc, max) {
            enc.truncate(base);
            return Err(e);
        }
        let len = enc.len() - base - WS_ROOM;
        let (head, n) = wsframe::header(Opcode::Binary, true, len);
        let skip = WS_ROOM - n;
        enc[base + skip..base + WS_ROOM].copy_from_slice(&head[..n]);
        Ok(skip)
    }

    /// Encode `msg` into an allocation of its own (for callers outside a shard).
    pub fn encode<M: codec::Encode>(msg: &M) -> Result<Frame, EncodeError> {
        let mut enc = bytes::BytesMut::new();
        let skip = Frame::encode_into(msg, &mut enc, u32::MAX)?;
        enc.advance(skip);
        Ok(Frame(enc.freeze()))
    }

    /// Bytes laid out as `encode_into` leaves them, the unused room skipped.
    pub fn from_framed(bytes: Bytes) -> Frame {
        debug_assert!(bytes.len() >= 2);
        Frame(bytes)
    }

    fn ws_header_len(&self) -> usize {
        match self.0[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }

    /// The frame kind's number (byte 4 of the peerd header), for the shard's counters.
    pub fn kind(&self) -> u8 {
        self.0[self.ws_header_len() + 4]
    }

    /// Length of the peerd frame, header included (without the WebSocket header).
    pub fn peerd_len(&self) -> usize {
        self.0.len() - self.ws_header_len()
    }

    /// The peerd frame alone (TCP, Unix, TLS).
    pub fn peerd(&self) -> Bytes {
        self.0.slice(self.ws_header_len()..)
    }

    /// The peerd frame as one WebSocket binary message.
    pub fn websocket(&self) -> Bytes {
        self.0.clone()
    }
}
