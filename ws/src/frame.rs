//! WebSocket frames (RFC 6455 §5): header encoding, masking, and the in-place [`Deframer`].
//!
//! The deframer never owns a buffer. The caller's receive buffer holds three regions:
//!
//! ```text
//! [0 .. app_end)     deframed application bytes: message payloads, unmasked, contiguous
//! [app_end .. raw)   free gap (the headers and control frames already consumed)
//! [raw .. end)       raw bytes received but not yet deframed
//! ```
//!
//! Each [`Deframer::step`] looks at the frame starting at `raw`. A whole data frame is unmasked
//! in place and moved down to `app_end`, so after any number of steps the payloads of a message
//! sit back to back at the front of the buffer, ready for the peerd codec, with no second buffer
//! and no copy per message beyond the one `copy_within`. Control frames are unmasked where they
//! lie and reported by range. Nothing here allocates.
//!
//! Header parsing is written out by hand rather than through
//! [`tungstenite::protocol::frame::FrameHeader::parse`]: the deframer must refuse a frame on its
//! first two bytes (reserved bits, opcode, masking, control-frame length) and must know how many
//! header bytes it is still waiting for, neither of which that parser reports. The tests check
//! this encoder and parser against tungstenite's `FrameHeader::format`/`parse`.

use std::fmt;
use std::ops::Range;

/// Which end of the connection the deframer sits at; it decides the masking rule for input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The server: every frame from the client MUST be masked (RFC 6455 §5.1); an unmasked
    /// frame is refused with 1002.
    Server,
    /// The client: frames from the server MUST NOT be masked; a masked frame is refused with
    /// 1002.
    Client,
}

/// A frame opcode defined by RFC 6455 §5.2. The reserved opcodes 3-7 and 11-15 have no
/// variant: they are refused when parsed and cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: the next fragment of the message in progress.
    Continuation,
    /// 0x1: the first frame of a text (UTF-8) message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close, with an optional status and reason.
    Close,
    /// 0x9: ping; the receiver answers with a pong carrying the same payload.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// The 4-bit value on the wire.
    pub const fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// The opcode for a 4-bit wire value; `None` for the reserved values.
    pub const fn from_u8(v: u8) -> Option<Opcode> {
        match v {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// Whether this is a control opcode (close, ping, pong): at most 125 bytes, never
    /// fragmented, allowed between the fragments of a message.
    pub const fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// The type of a whole message, from the opcode of its first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A text message (its payload was validated as UTF-8).
    Text,
    /// A binary message.
    Binary,
}

/// Largest header of an unmasked frame (what a server writes): 2 bytes plus a 64-bit length.
pub const MAX_SERVER_HEADER: usize = 10;

/// Largest header of a masked frame (what a client writes): [`MAX_SERVER_HEADER`] plus the
/// 4-byte masking key.
pub const MAX_CLIENT_HEADER: usize = 14;

/// The largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Header of an unmasked frame with FIN=`fin`: the bytes are in `[..n]`, and `n` is 2, 4 or
/// 10 (the shortest length encoding, as RFC 6455 §5.2 requires).
#[inline]
pub fn header(opcode: Opcode, fin: bool, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = opcode.as_u8() | if fin { 0x80 } else { 0 };
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= 0xFFFF {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Append a whole unmasked frame (what a server sends): for control frames, tests and echo.
pub fn write_frame(opcode: Opcode, fin: bool, payload: &[u8], out: &mut Vec<u8>) {
    let (h, n) = header(opcode, fin, payload.len());
    out.reserve(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

/// Append a whole masked frame (what a client sends), masking `payload` with `mask`.
///
/// RFC 6455 §5.3 wants a fresh, unpredictable mask per frame (see [`random_mask`]); the mask
/// is a parameter so tests can be deterministic.
pub fn write_masked_frame(
    opcode: Opcode,
    fin: bool,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    let (mut h, n) = header(opcode, fin, payload.len());
    h[1] |= 0x80;
    out.reserve(n + 4 + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// A masking key for one client frame, from fastrand (randomly seeded, not a CSPRNG).
///
/// Masking (RFC 6455 §10.3) stops untrusted code that picks the payload, such as a script in
/// a browser, from choosing the bytes an intermediary sees. peerd's Rust client and loadgen run
/// no untrusted code, so an unpredictable-enough mask is all the RFC's rule needs here.
pub fn random_mask() -> [u8; 4] {
    fastrand::u32(..).to_ne_bytes()
}

/// XOR `buf` with `mask`, starting at mask position `offset % 4`: byte `i` of `buf` is XORed
/// with `mask[(offset + i) % 4]`. Masking and unmasking are the same operation.
///
/// Works 8 bytes at a time with a u64 mask (unaligned loads of byte arrays, so any start
/// address is fine); the compiler vectorises the loop. `offset` lets a frame's payload be
/// unmasked in pieces.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    // The key as seen from buf[0], repeated twice: the mask for 8 consecutive bytes.
    let key = rotate_mask(mask, offset);
    let mut key8 = [0u8; 8];
    key8[..4].copy_from_slice(&key);
    key8[4..].copy_from_slice(&key);
    let key64 = u64::from_ne_bytes(key8);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("chunk of 8")) ^ key64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // The chunks are whole multiples of 4, so the remainder starts at key position 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// `mask` rotated left by `by` positions: the key as seen from mask position `by`.
#[inline]
fn rotate_mask(mask: [u8; 4], by: usize) -> [u8; 4] {
    [
        mask[by & 3],
        mask[(by + 1) & 3],
        mask[(by + 2) & 3],
        mask[(by + 3) & 3],
    ]
}

/// A refusal of the incoming stream: the WebSocket close status to send and a short reason.
///
/// The caller sends a Close frame with `status` (and `reason`, which always fits in a close
/// frame) and stops reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError {
    /// The WebSocket close status (RFC 6455 §7.4.1): 1002, 1003, 1007 or 1009.
    pub status: u16,
    /// What was wrong, for the close frame and logs.
    pub reason: &'static str,
}

impl WsError {
    const fn protocol(reason: &'static str) -> WsError {
        WsError {
            status: 1002,
            reason,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "websocket error {}: {}", self.status, self.reason)
    }
}

impl std::error::Error for WsError {}

/// The result of one [`Deframer::step`]: how many raw bytes the frame took, and what it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Raw bytes consumed from `raw` (header and payload); 0 with [`Event::NeedMore`].
    pub consumed: usize,
    /// What the frame was.
    pub event: Event,
}

/// What [`Deframer::step`] found at `raw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The frame is not complete. `want` is the number of raw bytes, counted from `raw`, that
    /// must be present before the next step can make progress: header plus payload once the
    /// length is known, else the header length known so far (2, then 4/10, plus 4 for a mask).
    /// The buffer must be able to hold `raw + want` bytes (or the caller compacts first).
    NeedMore {
        /// Raw bytes needed from `raw`.
        want: usize,
    },
    /// A data frame: its `len` unmasked payload bytes were moved to `buf[app_end..app_end +
    /// len]`. The caller advances `app_end` by `len` (and `raw` by `consumed`).
    Data {
        /// Payload bytes of this frame.
        len: usize,
        /// `Some((kind, total))` when this frame ended its message: the whole message is the
        /// `total` bytes ending at the new `app_end`.
        end_of_message: Option<(MessageKind, usize)>,
    },
    /// A ping; its unmasked payload is `buf[payload]` (absolute indices, inside the consumed
    /// frame): copy it into the pong before reusing that part of the buffer.
    Ping {
        /// The payload's position in `buf`.
        payload: Range<usize>,
    },
    /// A pong (its payload is ignored).
    Pong,
    /// A close frame, validated: `status` is `None` for an empty payload, and `buf[reason]` is
    /// valid UTF-8.
    Close {
        /// The peer's close status, if it sent one.
        status: Option<u16>,
        /// The reason's position in `buf` (absolute indices).
        reason: Range<usize>,
    },
}

/// Incremental UTF-8 validation across the fragments of a text message: the incomplete
/// trailing sequence (at most 3 bytes) of the last fragment waits here for the next one, so
/// an invalid sequence is refused in the fragment where it appears (Autobahn 6.x "fail fast").
#[derive(Clone, Copy, Debug, Default)]
struct Utf8Carry {
    bytes: [u8; 3],
    len: u8,
}

impl Utf8Carry {
    /// Validate the next piece of the message. `Err` on any sequence that cannot become valid.
    fn feed(&mut self, mut input: &[u8]) -> Result<(), ()> {
        if self.len > 0 {
            // Complete the carried character first. The carry is a valid, incomplete prefix,
            // so its lead byte says how long the character is.
            let have = usize::from(self.len);
            let width = match self.bytes[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - have).min(input.len());
            let mut tmp = [0u8; 4];
            tmp[..have].copy_from_slice(&self.bytes[..have]);
            tmp[have..have + take].copy_from_slice(&input[..take]);
            match std::str::from_utf8(&tmp[..have + take]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still incomplete: the input was shorter than the rest of the character.
                    self.bytes[..have + take].copy_from_slice(&tmp[..have + take]);
                    self.len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(()),
            }
            input = &input[take..];
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let rest = &input[e.valid_up_to()..];
                self.bytes[..rest.len()].copy_from_slice(rest);
                self.len = rest.len() as u8;
                Ok(())
            }
            Err(_) => Err(()),
        }
    }
}

/// The in-place deframer: one per connection, a few words of state, no buffer.
///
/// Feed it with [`Deframer::step`] until it returns [`Event::NeedMore`]; then read more bytes
/// into `[end..)` and step again. After an error it is poisoned: every later step returns the
/// same error (the connection is to be closed with that status).
#[derive(Clone, Debug)]
pub struct Deframer {
    max_message: usize,
    /// Payload bytes of the message in progress so far.
    message_len: usize,
    poisoned: Option<WsError>,
    /// The kind of the fragmented message in progress, if any.
    in_message: Option<MessageKind>,
    role: Role,
    allow_text: bool,
    utf8: Utf8Carry,
}

const ERR_RSV: WsError = WsError::protocol("reserved bits set without an extension");
const ERR_OPCODE: WsError = WsError::protocol("reserved opcode");
const ERR_UNMASKED: WsError = WsError::protocol("client frame not masked");
const ERR_MASKED: WsError = WsError::protocol("server frame masked");
const ERR_CONTROL_LEN: WsError = WsError::protocol("control frame payload over 125 bytes");
const ERR_CONTROL_FRAGMENTED: WsError = WsError::protocol("fragmented control frame");
const ERR_CONTINUATION: WsError = WsError::protocol("continuation frame with no message");
const ERR_INTERLEAVED: WsError = WsError::protocol("new message before the last one ended");
const ERR_LEN_MSB: WsError = WsError::protocol("64-bit payload length with the top bit set");
const ERR_CLOSE_LEN: WsError = WsError::protocol("close payload of 1 byte");
const ERR_CLOSE_STATUS: WsError = WsError::protocol("invalid close status");
const ERR_TEXT: WsError = WsError {
    status: 1003,
    reason: "text messages are not accepted; send binary",
};
const ERR_TOO_LARGE: WsError = WsError {
    status: 1009,
    reason: "message too large",
};
const ERR_UTF8: WsError = WsError {
    status: 1007,
    reason: "invalid UTF-8 in text message",
};
const ERR_CLOSE_UTF8: WsError = WsError {
    status: 1007,
    reason: "invalid UTF-8 in close reason",
};

impl Deframer {
    /// A deframer for one connection.
    ///
    /// `max_message`: the largest message payload accepted; a frame whose header declares a
    /// payload that would take the message past it is refused with 1009 as soon as its length
    /// is readable, before the payload arrives, so the caller never has to make room for it.
    /// Control frames (at most 125 bytes) are not counted.
    ///
    /// `allow_text`: whether text messages are accepted. A peerd endpoint carries binary
    /// codec frames only and refuses text with 1003. Echo mode (Autobahn) accepts text and
    /// validates it as UTF-8 fail-fast: an invalid sequence is refused with 1007 in the
    /// fragment that contains it; a sequence cut at the end of a fragment waits for the next.
    pub fn new(role: Role, max_message: usize, allow_text: bool) -> Deframer {
        Deframer {
            max_message,
            message_len: 0,
            poisoned: None,
            in_message: None,
            role,
            allow_text,
            utf8: Utf8Carry::default(),
        }
    }

    /// Whether a fragmented message is in progress, and its payload length so far.
    pub fn message_in_progress(&self) -> Option<usize> {
        self.in_message.map(|_| self.message_len)
    }

    /// Deframe the frame at `buf[raw..end]`; see the [module docs](self) for the three
    /// regions and [`Event`] for the outcomes.
    ///
    /// Requires `app_end <= raw <= end <= buf.len()`. A step that returns
    /// [`Event::NeedMore`] changes nothing (neither the buffer nor the deframer), so it is
    /// fine to call again with the same arguments after more bytes arrive.
    ///
    /// Refusals ([`WsError`], after which the deframer is poisoned): nonzero RSV bits, a
    /// reserved opcode, wrong masking for the role, a control frame over 125 bytes or without
    /// FIN, a continuation with no message in progress, a new text/binary frame while a message
    /// is in progress, a 64-bit length with the top bit set, a close payload of 1 byte or with
    /// a status not allowed by RFC 6455 §7.4 (all 1002); text when text is not allowed (1003);
    /// invalid UTF-8 in a text message or close reason (1007); a message over `max_message`
    /// (1009).
    pub fn step(
        &mut self,
        buf: &mut [u8],
        app_end: usize,
        raw: usize,
        end: usize,
    ) -> Result<Step, WsError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        debug_assert!(app_end <= raw && raw <= end && end <= buf.len());
        match self.step_inner(buf, app_end, raw, end) {
            Ok(step) => Ok(step),
            Err(e) => {
                self.poisoned = Some(e.clone());
                Err(e)
            }
        }
    }

    #[inline]
    fn step_inner(
        &mut self,
        buf: &mut [u8],
        app_end: usize,
        raw: usize,
        end: usize,
    ) -> Result<Step, WsError> {
        let avail = end - raw;
        if avail < 2 {
            return Ok(need(2));
        }
        let b0 = buf[raw];
        let b1 = buf[raw + 1];

        // Everything the first two bytes can refuse is refused before waiting for more.
        if b0 & 0x70 != 0 {
            return Err(ERR_RSV);
        }
        let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(ERR_OPCODE)?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(ERR_UNMASKED),
            (Role::Client, true) => return Err(ERR_MASKED),
            _ => {}
        }
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(ERR_CONTROL_FRAGMENTED);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(ERR_CONTROL_LEN);
            }
        } else {
            self.check_data_opcode(opcode)?;
        }

        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask_len = if masked { 4 } else { 0 };
        let header_len = 2 + ext + mask_len;
        if avail < 2 + ext {
            return Ok(need(header_len));
        }
        let len: u64 = match ext {
            0 => u64::from(len7),
            2 => u64::from(u16::from_be_bytes([buf[raw + 2], buf[raw + 3]])),
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[raw + 2..raw + 10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(ERR_LEN_MSB);
                }
                len
            }
        };
        if !opcode.is_control()
            && len > (self.max_message as u64).saturating_sub(self.message_len as u64)
        {
            return Err(ERR_TOO_LARGE);
        }
        // len <= max_message (a usize) or <= 125 here, so these sums cannot overflow unless
        // the buffer itself could not exist.
        let len = len as usize;
        let frame_len = header_len.saturating_add(len);
        if avail < frame_len {
            return Ok(need(frame_len));
        }

        let start = raw + header_len;
        let payload = start..start + len;
        if masked {
            let mut mask = [0u8; 4];
            mask.copy_from_slice(&buf[start - 4..start]);
            apply_mask(&mut buf[payload.clone()], mask, 0);
        }

        let event = match opcode {
            Opcode::Ping => Event::Ping { payload },
            Opcode::Pong => Event::Pong,
            Opcode::Close => close_event(buf, payload)?,
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                let kind = match opcode {
                    Opcode::Text => MessageKind::Text,
                    Opcode::Binary => MessageKind::Binary,
                    _ => self.in_message.expect("checked by check_data_opcode"),
                };
                if kind == MessageKind::Text {
                    let fresh = opcode == Opcode::Text;
                    if fresh {
                        self.utf8 = Utf8Carry::default();
                    }
                    self.utf8
                        .feed(&buf[payload.clone()])
                        .map_err(|_| ERR_UTF8)?;
                    if fin && self.utf8.len != 0 {
                        return Err(ERR_UTF8);
                    }
                }
                if start != app_end {
                    buf.copy_within(payload, app_end);
                }
                let total = self.message_len + len;
                let end_of_message = if fin {
                    self.in_message = None;
                    self.message_len = 0;
                    Some((kind, total))
                } else {
                    self.in_message = Some(kind);
                    self.message_len = total;
                    None
                };
                Event::Data {
                    len,
                    end_of_message,
                }
            }
        };
        Ok(Step {
            consumed: frame_len,
            event,
        })
    }

    /// The rules for a data opcode that depend on the message in progress.
    #[inline]
    fn check_data_opcode(&self, opcode: Opcode) -> Result<(), WsError> {
        match (opcode, self.in_message) {
            (Opcode::Continuation, None) => Err(ERR_CONTINUATION),
            (Opcode::Continuation, Some(_)) => Ok(()),
            (_, Some(_)) => Err(ERR_INTERLEAVED),
            (Opcode::Text, None) if !self.allow_text => Err(ERR_TEXT),
            _ => Ok(()),
        }
    }
}

#[inline]
fn need(want: usize) -> Step {
    Step {
        consumed: 0,
        event: Event::NeedMore { want },
    }
}

/// Validate a close payload (already unmasked) at `buf[payload]` (RFC 6455 §5.5.1, §7.4).
fn close_event(buf: &[u8], payload: Range<usize>) -> Result<Event, WsError> {
    match payload.len() {
        0 => Ok(Event::Close {
            status: None,
            reason: payload.end..payload.end,
        }),
        1 => Err(ERR_CLOSE_LEN),
        _ => {
            let status = u16::from_be_bytes([buf[payload.start], buf[payload.start + 1]]);
            if !close_status_allowed(status) {
                return Err(ERR_CLOSE_STATUS);
            }
            let reason = payload.start + 2..payload.end;
            std::str::from_utf8(&buf[reason.clone()]).map_err(|_| ERR_CLOSE_UTF8)?;
            Ok(Event::Close {
                status: Some(status),
                reason,
            })
        }
    }
}

/// Whether a close status may appear in a Close frame (RFC 6455 §7.4): 1000-1003, 1007-1011,
/// the IANA-registered 1012 (service restart) and 1013 (try again later, which peerd itself
/// sends for `overloaded`), and 3000-4999. Refused: below 1000, 1004-1006, 1014-2999 (1005,
/// 1006 and 1015 are reserved for APIs and must never be sent), 5000 and above. This is
/// tungstenite's `CloseCode::is_allowed`.
pub fn close_status_allowed(status: u16) -> bool {
    tungstenite::protocol::frame::coding::CloseCode::from(status).is_allowed()
}
