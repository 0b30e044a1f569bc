//! WebSocket for `ws://` and `wss://`, on the sans-io pieces of `peerd-ws`: the upgrade
//! (subprotocol `peerd.v1`), the read side's in-place deframing, and the masked frames the
//! write side sends.
//!
//! Each peerd frame goes out as one masked binary message with a fresh random mask. The
//! read side treats the payloads of the server's binary messages as one byte stream for
//! the peerd framer (the server sends one frame per message; nothing here depends on it),
//! and reports the server's Pings (answered through the write side) and its Close. Text
//! messages, masked server frames, reserved bits and the like are refused by the deframer.

use std::io;

use peerd_codec::Code;
use peerd_ws::frame::{
    apply_mask, header, random_mask, write_masked_frame, Deframer, Event, Opcode, Role, Step,
    WsError, MAX_CLIENT_HEADER, MAX_CONTROL_PAYLOAD,
};
use peerd_ws::handshake::{check_response, client_key, client_request, HandshakeError};

use crate::socket::{Got, ReadSome};

/// The subprotocol a peerd server requires.
const SUBPROTOCOL: &str = "peerd.v1";

/// Largest upgrade response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Receive buffer size, and what it shrinks back to after a large message.
const CHUNK: usize = 64 * 1024;

/// What one read of the WebSocket gave.
pub(crate) enum WsRead {
    /// The payload bytes of data frames deframed so far: `buf[..n]`.
    Data(usize),
    /// A Ping; answer with a Pong carrying this payload.
    Ping {
        payload: [u8; MAX_CONTROL_PAYLOAD],
        len: usize,
    },
    /// The server's Close frame.
    Closed { status: Option<u16>, reason: String },
    /// The server broke the WebSocket protocol.
    Violation(WsError),
    /// The stream ended without a Close frame.
    Eof,
}

/// Where the upgrade stands.
pub(crate) enum Upgrading {
    Done,
    More,
    Refused(HandshakeError),
    Eof,
}

/// The read side of a WebSocket: one buffer, deframed in place.
///
/// `buf[..app_end)` holds payload bytes handed out by the last [`read`](Self::read) (dropped
/// at the start of the next), `buf[raw..end)` raw bytes not yet deframed.
pub(crate) struct WsReader {
    deframer: Deframer,
    buf: Vec<u8>,
    app_end: usize,
    raw: usize,
    end: usize,
    /// The upgrade's key until the response has been checked.
    key: Option<String>,
    /// A Ping found behind data frames, reported by the next read.
    ping: Option<([u8; MAX_CONTROL_PAYLOAD], usize)>,
    /// A Close found behind data frames, reported by the next read.
    close: Option<(Option<u16>, String)>,
}

impl WsReader {
    /// A reader accepting messages of up to `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> WsReader {
        WsReader {
            deframer: Deframer::new(Role::Client, max_message, false),
            buf: vec![0u8; CHUNK],
            app_end: 0,
            raw: 0,
            end: 0,
            key: None,
            ping: None,
            close: None,
        }
    }

    /// The upgrade request for `host` (the `Host` header) and `path`; the response is then
    /// read with [`read_upgrade`](Self::read_upgrade).
    pub(crate) fn upgrade_request(&mut self, host: &str, path: &str) -> Vec<u8> {
        let key = client_key();
        let req = client_request(host, path, SUBPROTOCOL, &key);
        self.key = Some(key);
        req
    }

    /// Read (at most one blocking read) and check the upgrade response. Bytes behind it
    /// are the first WebSocket frames and stay in the buffer.
    pub(crate) fn read_upgrade(&mut self, src: &mut impl ReadSome) -> io::Result<Upgrading> {
        match src.read_some(&mut self.buf[self.end..])? {
            Got::Bytes(n) => self.end += n,
            Got::Nothing => return Ok(Upgrading::More),
            Got::Eof => return Ok(Upgrading::Eof),
        }
        Ok(self.check().unwrap_or(Upgrading::More))
    }

    fn check(&mut self) -> Option<Upgrading> {
        let key = self.key.as_deref().expect("upgrade_request first");
        match check_response(&self.buf[..self.end], key, SUBPROTOCOL, MAX_RESPONSE_HEAD) {
            Ok(Some(n)) => {
                self.raw = n;
                self.key = None;
                Some(Upgrading::Done)
            }
            Ok(None) => None,
            Err(e) => Some(Upgrading::Refused(e)),
        }
    }

    /// The payload bytes of the last [`WsRead::Data`].
    pub(crate) fn data(&self, n: usize) -> &[u8] {
        &self.buf[..n]
    }

    /// Deframe what is buffered; if that yields nothing, read once and deframe again.
    pub(crate) fn read(&mut self, src: &mut impl ReadSome) -> io::Result<WsRead> {
        // The data handed out last time has been consumed by the caller.
        self.app_end = 0;
        if let Some((payload, len)) = self.ping.take() {
            return Ok(WsRead::Ping { payload, len });
        }
        if let Some((status, reason)) = self.close.take() {
            return Ok(WsRead::Closed { status, reason });
        }
        let want = match self.deframe() {
            Ok(Deframed::Done(r)) => return Ok(r),
            Ok(Deframed::NeedMore(want)) => want,
            Err(e) => return Ok(WsRead::Violation(e)),
        };
        self.make_room(want);
        match src.read_some(&mut self.buf[self.end..])? {
            Got::Bytes(n) => self.end += n,
            Got::Nothing => return Ok(WsRead::Data(0)),
            Got::Eof => return Ok(WsRead::Eof),
        }
        match self.deframe() {
            Ok(Deframed::Done(r)) => Ok(r),
            Ok(Deframed::NeedMore(_)) => Ok(WsRead::Data(0)),
            Err(e) => Ok(WsRead::Violation(e)),
        }
    }

    /// Step over every whole frame in `[raw..end)`.
    fn deframe(&mut self) -> Result<Deframed, WsError> {
        loop {
            let Step { consumed, event } =
                self.deframer
                    .step(&mut self.buf, self.app_end, self.raw, self.end)?;
            self.raw += consumed;
            match event {
                Event::NeedMore { want } => {
                    return Ok(if self.app_end > 0 {
                        Deframed::Done(WsRead::Data(self.app_end))
                    } else {
                        Deframed::NeedMore(want)
                    });
                }
                Event::Data { len, .. } => self.app_end += len,
                Event::Pong => {}
                Event::Ping { payload: p } => {
                    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                    payload[..p.len()].copy_from_slice(&self.buf[p.clone()]);
                    if self.app_end > 0 {
                        // The data before it goes first; the Pong can wait that long.
                        self.ping = Some((payload, p.len()));
                        return Ok(Deframed::Done(WsRead::Data(self.app_end)));
                    }
                    return Ok(Deframed::Done(WsRead::Ping {
                        payload,
                        len: p.len(),
                    }));
                }
                Event::Close { status, reason } => {
                    let reason = String::from_utf8_lossy(&self.buf[reason]).into_owned();
                    if self.app_end > 0 {
                        self.close = Some((status, reason));
                        return Ok(Deframed::Done(WsRead::Data(self.app_end)));
                    }
                    return Ok(Deframed::Done(WsRead::Closed { status, reason }));
                }
            }
        }
    }

    /// Room for `want` raw bytes from `raw`: move the raw bytes to the front, and grow the
    /// buffer for a frame larger than it (the deframer has checked the size against the
    /// limit before asking). A buffer grown for a large message shrinks back once empty.
    fn make_room(&mut self, want: usize) {
        debug_assert_eq!(self.app_end, 0);
        if self.raw == self.end && self.buf.len() > CHUNK && want <= CHUNK {
            self.buf = vec![0u8; CHUNK];
            self.raw = 0;
            self.end = 0;
        }
        if self.raw > 0 && (self.raw + want > self.buf.len() || self.end == self.buf.len()) {
            self.buf.copy_within(self.raw..self.end, 0);
            self.end -= self.raw;
            self.raw = 0;
        }
        if want > self.buf.len() {
            self.buf
                .resize(want.max(self.buf.len() + self.buf.len() / 2), 0);
        }
    }
}

enum Deframed {
    Done(WsRead),
    NeedMore(usize),
}

/// The peerd code to close with when the server breaks the WebSocket protocol.
pub(crate) fn ws_violation_code(e: &WsError) -> Code {
    if e.status == 1009 {
        Code::TooLarge
    } else {
        Code::BadFrame
    }
}

/// Bytes to leave free in front of an encoded frame for its WebSocket header.
pub(crate) const HEADROOM: usize = MAX_CLIENT_HEADER;

/// Turn `buf` ([`HEADROOM`] free bytes, then one peerd frame) into one masked binary
/// message in place; returns where the message starts in `buf`.
pub(crate) fn frame_in_place(buf: &mut [u8]) -> usize {
    let len = buf.len() - HEADROOM;
    let (mut h, n) = header(Opcode::Binary, true, len);
    h[1] |= 0x80;
    let mask = random_mask();
    let start = HEADROOM - 4 - n;
    buf[start..start + n].copy_from_slice(&h[..n]);
    buf[HEADROOM - 4..HEADROOM].copy_from_slice(&mask);
    apply_mask(&mut buf[HEADROOM..], mask, 0);
    start
}

/// A masked control frame (Pong, Close).
pub(crate) fn control_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + payload.len());
    write_masked_frame(opcode, true, payload, random_mask(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerd_ws::frame::write_frame;

    /// A reader whose source is a preloaded byte string (served through a socket pair).
    fn reader_over(bytes: &[u8]) -> (WsReader, crate::socket::Socket) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        (&a).write_all(bytes).unwrap();
        drop(a);
        (WsReader::new(1 << 20), crate::socket::Socket::Unix(b))
    }

    fn server_frame(op: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(op, true, payload, &mut v);
        v
    }

    #[test]
    fn data_ping_close_in_one_read_come_out_in_order() {
        let mut wire = server_frame(Opcode::Binary, b"abc");
        wire.extend(server_frame(Opcode::Binary, b"def"));
        wire.extend(server_frame(Opcode::Ping, b"p1"));
        wire.extend(server_frame(Opcode::Binary, b"gh"));
        wire.extend(server_frame(
            Opcode::Close,
            &peerd_ws::close::close_payload(1001, "bye"),
        ));
        let (mut r, mut src) = reader_over(&wire);
        match r.read(&mut src).unwrap() {
            WsRead::Data(n) => assert_eq!(r.data(n), b"abcdef"),
            _ => panic!("data first"),
        }
        match r.read(&mut src).unwrap() {
            WsRead::Ping { payload, len } => assert_eq!(&payload[..len], b"p1"),
            _ => panic!("then the ping"),
        }
        match r.read(&mut src).unwrap() {
            WsRead::Data(n) => assert_eq!(r.data(n), b"gh"),
            _ => panic!("then data"),
        }
        match r.read(&mut src).unwrap() {
            WsRead::Closed { status, reason } => {
                assert_eq!((status, reason.as_str()), (Some(1001), "bye"))
            }
            _ => panic!("then the close"),
        }
    }

    #[test]
    fn a_message_larger_than_the_buffer_grows_it_and_masked_or_text_frames_are_refused() {
        let big = vec![9u8; 3 * CHUNK + 5];
        let mut wire = server_frame(Opcode::Binary, &big);
        wire.extend(server_frame(Opcode::Text, b"nope"));
        let (mut r, mut src) = reader_over(&wire);
        let mut got = Vec::new();
        let violation = loop {
            match r.read(&mut src).unwrap() {
                WsRead::Data(n) => got.extend_from_slice(r.data(n)),
                WsRead::Violation(e) => break e,
                _ => panic!("unexpected"),
            }
        };
        assert_eq!(got, big);
        assert_eq!(violation.status, 1003);

        let mut masked = Vec::new();
        write_masked_frame(Opcode::Binary, true, b"x", [1, 2, 3, 4], &mut masked);
        let (mut r, mut src) = reader_over(&masked);
        assert!(matches!(r.read(&mut src).unwrap(), WsRead::Violation(e) if e.status == 1002));
    }

    #[test]
    fn frames_split_at_every_byte_are_reassembled() {
        let mut wire = server_frame(Opcode::Binary, &[5u8; 300]);
        wire.extend(server_frame(Opcode::Ping, b""));
        wire.extend(server_frame(Opcode::Binary, b"tail"));
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            for byte in wire {
                (&a).write_all(&[byte]).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        });
        let mut r = WsReader::new(1 << 20);
        let mut src = crate::socket::Socket::Unix(b);
        let (mut got, mut pings) = (Vec::new(), 0);
        loop {
            match r.read(&mut src).unwrap() {
                WsRead::Data(n) => got.extend_from_slice(r.data(n)),
                WsRead::Ping { len, .. } => {
                    assert_eq!(len, 0);
                    pings += 1
                }
                WsRead::Eof => break,
                _ => panic!("unexpected"),
            }
        }
        writer.join().unwrap();
        assert_eq!(pings, 1);
        assert_eq!(got.len(), 304);
        assert_eq!(&got[300..], b"tail");
    }

    #[test]
    fn frames_written_in_place_deframe_on_the_server_side() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = vec![0u8; HEADROOM];
            buf.extend_from_slice(&payload);
            let start = frame_in_place(&mut buf);
            let mut wire = buf[start..].to_vec();
            let end = wire.len();
            let mut d = Deframer::new(Role::Server, 1 << 20, false);
            let step = d.step(&mut wire, 0, 0, end).unwrap();
            assert_eq!(step.consumed, end, "{len}");
            assert!(
                matches!(step.event, Event::Data { len: l, end_of_message: Some(_) } if l == len)
            );
            assert_eq!(&wire[..len], &payload[..], "{len}");
        }
        let pong = control_frame(Opcode::Pong, b"hi");
        let end = pong.len();
        let mut wire = pong;
        let mut d = Deframer::new(Role::Server, 1 << 20, false);
        assert_eq!(d.step(&mut wire, 0, 0, end).unwrap().event, Event::Pong);
    }
}
