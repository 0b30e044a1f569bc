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

macro_rules! frame_kinds {
    ($( $(#[$doc:meta])* $name:ident = $val:literal ),* $(,)?) => {
        /// The frame-type byte of the header. Values are stable: a kind is never renumbered,
        /// only added.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum FrameKind {
            $( $(#[$doc])* $name = $val, )*
        }

        impl FrameKind {
            /// Every kind, in numeric order.
            pub const ALL: &'static [FrameKind] = &[ $( FrameKind::$name, )* ];

            /// The kind for a header byte, or `None` if it is not a known kind.
            pub fn from_u8(v: u8) -> Option<FrameKind> {
                match v {
                    $( $val => Some(FrameKind::$name), )*
                    _ => None,
                }
            }

            /// The kind's name as it appears in docs/PROTOCOL.md.
            pub fn name(self) -> &'static str {
                match self {
                    $( FrameKind::$name => stringify!($name), )*
                }
            }
        }
    };
}

frame_kinds! {
    /// Client -> server, first frame of a connection.
    Hello = 0x01,
    /// Server -> client: the handshake succeeded.
    Welcome = 0x02,
    /// Server -> client: the handshake failed; the server closes after sending it.
    Reject = 0x03,
    /// Either direction: call a method.
    RpcRequest = 0x10,
    /// Either direction: the successful result of a call.
    RpcResponse = 0x11,
    /// Either direction: the failure of a call.
    RpcError = 0x12,
    /// Either direction: a named event, optionally to or from one peer.
    Event = 0x20,
    /// Client -> server: relay to every peer. Server -> client: a relayed broadcast.
    Broadcast = 0x21,
    /// Client -> server: join a topic.
    Join = 0x30,
    /// Client -> server: leave a topic.
    Leave = 0x31,
    /// Client -> server: publish to every member of a topic.
    Publish = 0x32,
    /// Client -> server: send to one member of a topic.
    TopicSend = 0x33,
    /// Server -> client: a message delivered on a topic.
    TopicMessage = 0x34,
    /// Client -> server: start watching presence, globally or for one topic.
    Watch = 0x40,
    /// Client -> server: stop watching presence.
    Unwatch = 0x41,
    /// Server -> client: the members present when a watch started.
    PresenceSnapshot = 0x42,
    /// Server -> client: one peer joined or left.
    Presence = 0x43,
    /// Client -> server: list peers, globally or in a topic.
    ListPeers = 0x44,
    /// Server -> client: the answer to ListPeers.
    PeerList = 0x45,
    /// Either direction: WebRTC signaling relayed between peers of a room.
    Signal = 0x50,
    /// Server -> client: the outcome of a request that carried a `req` id.
    Status = 0x60,
    /// Either direction: liveness probe.
    Ping = 0x70,
    /// Either direction: answer to Ping.
    Pong = 0x71,
    /// Either direction: the sender is closing the connection, with a code.
    Close = 0x7F,
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
