//! peerd's wire format.
//!
//! Every message on a peerd connection is a *frame*: an 8-byte header followed by an rkyv
//! archive of the message body. This crate defines every frame, how to encode one into a
//! caller's buffer, and how to access one in place, validated and zero-copy, in a receive
//! buffer. It does no IO: no sockets, no clock, no executor (the style of quinn-proto and
//! rustls), so it can be fuzzed, benchmarked and tested on byte literals. `docs/PROTOCOL.md`
//! at the repository root is the normative description; this crate is its implementation.
//!
//! # Layout
//!
//! - [`header`]: the fixed 8-byte frame header.
//! - [`kind`]: [`FrameKind`], the frame-type byte, with every kind's number and name.
//! - [`frames`]: every message type (`Hello`, `RpcRequest`, `Publish`, ...) and [`Frame`],
//!   the decoded, borrowed view of one frame.
//! - [`codec`]: [`encode`] a message into a `BytesMut`, [`decode`] a complete frame,
//!   [`split_frame`] a byte stream into frames.
//! - [`framer`]: [`Framer`], a streaming buffer that accepts bytes in any chunking and yields
//!   whole frames as `Bytes`.
//! - [`handshake`]: Hello -> Welcome | Reject as sans-io helpers for both sides
//!   ([`handshake::ClientHandshake`], [`handshake::parse_hello`]).
//! - [`check`]: the names of the validation rules an invalid frame can break
//!   ([`check::rule`]), as docs/PROTOCOL.md spells them.
//! - [`code`]: [`Code`], the stable numeric error/close codes.
//! - [`error`]: [`WireError`] (the peer sent bad bytes) and [`EncodeError`] (local misuse).
//! - [`limits`]: protocol constants: versions, default limits, peer id and topic name rules.
//!
//! # Choices worth knowing
//!
//! rkyv is built with `little_endian`, `unaligned` and `pointer_width_32`: the byte order on
//! the wire is fixed, archived types have alignment 1 so an archive can be validated wherever
//! it lands in a receive buffer (right after the 8-byte header, at any offset), and relative
//! pointers are 32-bit. Input is always checked with rkyv's validating `access`; this crate
//! never calls `access_unchecked`.

pub mod check;
pub mod code;
pub mod codec;
pub mod error;
pub mod framer;
pub mod frames;
pub mod handshake;
pub mod header;
pub mod kind;
pub mod limits;

pub use code::Code;
pub use codec::{decode, encode, encode_to_bytes, split_frame, Encode, RawFrame};
pub use error::{EncodeError, WireError};
pub use framer::Framer;
pub use frames::*;
pub use header::{FrameKind, Header, HEADER_LEN};
pub use limits::*;

/// Entry points for fuzz targets: decode arbitrary bytes the way the server does. Never
/// panics on any input (that is what fuzzing checks).
pub mod fuzzing {
    use crate::codec::{decode_bytes, to_owned};
    use crate::{decode, encode_to_bytes, split_frame, FrameKind, Framer};

    /// Split `data` into frames with a 64 KiB limit and validate each one.
    pub fn decode_stream(data: &[u8]) {
        let mut rest = data;
        while let Ok(Some((raw, used))) = split_frame(rest, 64 * 1024) {
            let _ = decode(raw.header.kind, raw.body);
            rest = &rest[used..];
        }
    }

    /// Feed `data` to a [`Framer`] in chunks whose sizes come from the data itself.
    pub fn framer_chunks(data: &[u8]) {
        let mut framer = Framer::new(64 * 1024);
        let mut i = 0;
        while i < data.len() {
            let step = (data[i] as usize % 17) + 1;
            let end = (i + step).min(data.len());
            framer.extend(&data[i..end]);
            i = end;
            loop {
                match framer.next_frame() {
                    Ok(Some(frame)) => {
                        let _ = crate::codec::decode_bytes(&frame);
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }

    /// The first byte picks a frame kind, the rest is the body. If the body validates, it
    /// must deserialize, re-encode, validate again and deserialize to the same value: an
    /// archive that passes validation is one the codec fully understands.
    pub fn decode_roundtrip(data: &[u8]) {
        let Some((&k, body)) = data.split_first() else {
            return;
        };
        let kind = FrameKind::ALL[k as usize % FrameKind::ALL.len()];
        let Ok(frame) = decode(kind, body) else {
            return;
        };
        assert_eq!(frame.kind(), kind);
        macro_rules! check {
            ($($name:ident => $ty:ty),* $(,)?) => {
                match frame {
                    $(Frame::$name(a) => {
                        let owned: $ty = to_owned(a);
                        let bytes = encode_to_bytes(&owned).expect("re-encode a decoded frame");
                        match decode_bytes(&bytes).expect("re-decode a re-encoded frame") {
                            Frame::$name(b) => assert_eq!(to_owned::<$ty, _>(b), owned),
                            other => panic!("re-decoded as {:?}", other.kind()),
                        }
                    })*
                }
            };
        }
        use crate::frames::*;
        check! {
            Hello => Hello<'static>,
            Welcome => Welcome<'static>,
            Reject => Reject<'static>,
            Refresh => Refresh<'static>,
            RpcRequest => RpcRequest<'static>,
            RpcResponse => RpcResponse<'static>,
            RpcError => RpcError<'static>,
            Event => Event<'static>,
            Broadcast => Broadcast<'static>,
            Join => Join<'static>,
            Leave => Leave<'static>,
            Publish => Publish<'static>,
            TopicSend => TopicSend<'static>,
            TopicMessage => TopicMessage<'static>,
            Watch => Watch<'static>,
            Unwatch => Unwatch<'static>,
            PresenceSnapshot => PresenceSnapshot<'static>,
            Presence => Presence<'static>,
            ListPeers => ListPeers<'static>,
            PeerList => PeerList,
            Signal => Signal<'static>,
            Status => Status<'static>,
            Ping => Ping,
            Pong => Pong,
            Close => Close<'static>,
        }
    }
}
