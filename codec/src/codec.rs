//! Encoding into caller buffers and validated, zero-copy decoding.

use bytes::{BufMut, Bytes, BytesMut};
use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::sharing::Share;
use rkyv::ser::{Positional, Writer};
use rkyv::Serialize;

use crate::error::{EncodeError, WireError};
use crate::frames::{access_kind, Frame, Message};
use crate::header::{FrameKind, Header, HEADER_LEN};

/// An rkyv writer that appends to a `BytesMut`. Positions are relative to where the archive
/// starts (just after the header), which is what rkyv's relative pointers are measured from.
pub struct BytesWriter {
    buf: BytesMut,
    start: usize,
}

impl Positional for BytesWriter {
    #[inline]
    fn pos(&self) -> usize {
        self.buf.len() - self.start
    }
}

impl<E> Writer<E> for BytesWriter {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

/// The serializer every message is encoded with.
pub type Serializer<'a> = HighSerializer<BytesWriter, ArenaHandle<'a>, rancor::Error>;

/// Bodies above this cannot be encoded whatever limit the caller passes: rkyv's relative
/// pointers are signed 32-bit offsets (`pointer_width_32`), and rkyv 0.8 truncates rather
/// than rejects an out-of-range string offset, so a larger archive could be malformed.
const FORMAT_MAX_BODY_LEN: u32 = i32::MAX as u32;

/// Append one complete frame (header + archive of `msg`) to `dst`.
///
/// Fails, leaving `dst` as it was (frames already in it are kept), when the body would
/// exceed `max_body_len` or 2 GiB - 1, the format's own limit (pass `u32::MAX` for no
/// limit beyond that), or when rkyv cannot archive the value (a string of 1 GiB or more).
pub fn encode<M>(msg: &M, dst: &mut BytesMut, max_body_len: u32) -> Result<(), EncodeError>
where
    M: Message + for<'a> Serialize<Serializer<'a>>,
{
    let max_body_len = max_body_len.min(FORMAT_MAX_BODY_LEN);
    let frame_start = dst.len();
    dst.reserve(HEADER_LEN + 64);
    dst.put_bytes(0, HEADER_LEN);
    let writer = BytesWriter {
        buf: std::mem::take(dst),
        start: frame_start + HEADER_LEN,
    };
    // rkyv serializers take the writer by value (moving the BytesMut in and out is free).
    // Serialize through `&mut` rather than `to_bytes_in` so the writer, and with it the
    // caller's buffer, comes back on error too.
    let (writer, result) = rkyv::util::with_arena(|arena| {
        let mut serializer = rkyv::ser::Serializer::new(writer, arena.acquire(), Share::new());
        let result = rkyv::api::serialize_using::<_, rancor::Error>(msg, &mut serializer);
        (serializer.into_writer(), result)
    });
    *dst = writer.buf;
    if let Err(e) = result {
        dst.truncate(frame_start);
        return Err(EncodeError::Serialize {
            kind: M::KIND,
            detail: e.to_string(),
        });
    }
    let body_len = dst.len() - frame_start - HEADER_LEN;
    if body_len > max_body_len as usize {
        dst.truncate(frame_start);
        return Err(EncodeError::TooLarge {
            kind: M::KIND,
            len: body_len,
            max: max_body_len,
        });
    }
    let header = Header {
        body_len: body_len as u32,
        kind: M::KIND,
    };
    let mut h = [0u8; HEADER_LEN];
    header.write(&mut h);
    dst[frame_start..frame_start + HEADER_LEN].copy_from_slice(&h);
    Ok(())
}

/// Encode one frame into a fresh, frozen `Bytes` that any number of connections can queue
/// and share by reference count (the way a broadcast is sent: encoded once).
pub fn encode_to_bytes<M>(msg: &M) -> Result<Bytes, EncodeError>
where
    M: Message + for<'a> Serialize<Serializer<'a>>,
{
    let mut buf = BytesMut::new();
    encode(msg, &mut buf, u32::MAX)?;
    Ok(buf.freeze())
}

/// A complete frame located in a buffer: its header and its (not yet validated) body.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    /// The parsed header.
    pub header: Header,
    /// Exactly `header.body_len` bytes of archive.
    pub body: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Validate the body and borrow it as a [`Frame`].
    pub fn decode(&self) -> Result<Frame<'a>, WireError> {
        decode(self.header.kind, self.body)
    }
}

/// Find the first complete frame at the start of `buf`.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((frame, n)))`: a frame occupying the first
/// `n` bytes. `Err`: the header is invalid or announces more than `max_body_len`; this is
/// decided from the 8 header bytes alone, before any body byte is needed or allocated.
pub fn split_frame(
    buf: &[u8],
    max_body_len: u32,
) -> Result<Option<(RawFrame<'_>, usize)>, WireError> {
    let Some(header) = Header::parse(buf, max_body_len)? else {
        return Ok(None);
    };
    let total = header.frame_len();
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        RawFrame {
            header,
            body: &buf[HEADER_LEN..total],
        },
        total,
    )))
}

/// Validate `body` as the archive of a `kind` frame and borrow it in place.
pub fn decode(kind: FrameKind, body: &[u8]) -> Result<Frame<'_>, WireError> {
    access_kind(kind, body)
}

/// Decode a buffer holding exactly one whole frame, header included (what [`crate::Framer`]
/// yields). No size limit is applied here: the framer already applied it.
pub fn decode_bytes(frame: &[u8]) -> Result<Frame<'_>, WireError> {
    match split_frame(frame, u32::MAX)? {
        Some((raw, n)) if n == frame.len() => raw.decode(),
        Some(_) => Err(WireError::Violation("trailing bytes after frame")),
        None => Err(WireError::Violation("incomplete frame")),
    }
}

/// Copy an archived message out into its owned Rust type (the slow path; for tests, tools
/// and callers that must keep a message past the receive buffer).
pub fn to_owned<T, A>(archived: &A) -> T
where
    A: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    // Deserializing a validated archive into owned types cannot fail: every check that
    // could fail already ran during validation.
    rkyv::deserialize::<T, rancor::Error>(archived).expect("validated archive deserializes")
}

/// Every message that can be encoded: shorthand for the serializer bound.
pub trait Encode: Message + for<'a> Serialize<Serializer<'a>> {}

impl<T: Message + for<'a> Serialize<Serializer<'a>>> Encode for T {}
