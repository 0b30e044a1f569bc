//! What lies between an adapter and the TCP socket: nothing (`tcp`), TLS (`tls`), a
//! WebSocket (`ws`), or a WebSocket inside TLS (`wss`).
//!
//! Adapters keep encoding and parsing their own protocol's messages; this layer makes each
//! encoded message one binary WebSocket message (a masked client frame, RFC 6455 §5.3, mask
//! from `peerd_ws::random_mask`) and hands the adapter whole WebSocket messages back out of
//! the receive buffer (deframed in place by `peerd_ws::Deframer`, so a message is parsed
//! where it was read, without a copy into a second buffer). TLS is rustls driven sans-io
//! over the loadgen's own non-blocking socket (`read_tls`/`write_tls`), so the engine's mio
//! loop stays the one event loop.
//!
//! Two sides:
//! - set-up (blocking, with deadlines): [`open`] connects, does the TLS handshake and the
//!   HTTP upgrade; [`Connected::send`] and [`Connected::read_messages`] exchange the
//!   protocol's own handshake (peerd's Hello/Welcome, a subscription and its ack);
//! - the hot path (non-blocking): [`Link::read`], [`Link::write`], [`Link::flush_tls`] move
//!   plaintext between the socket and the engine's buffers, [`Inbox`] holds the receive
//!   buffer and splits it into messages, [`frame`] encodes one outgoing message.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use peerd_ws::{apply_mask, header, random_mask, Deframer, Event, Opcode, Role};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{tcp_connect, ConnectOptions, Connected};

/// Largest WebSocket message the loadgen accepts from a server.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Largest HTTP response head to an upgrade request.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// TLS settings of a transport.
#[derive(Clone)]
pub struct TlsSettings {
    /// rustls client configuration (trust roots: `--ca`).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry (the target's host: a DNS name or an
    /// IP address).
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsSettings({:?})", self.server_name)
    }
}

/// WebSocket settings of a transport.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// `Host` header of the upgrade request.
    pub host: String,
    /// Request target (path), e.g. `/`.
    pub path: String,
    /// Subprotocol to request and require (`peerd.v1`), or empty for none.
    pub subprotocol: String,
}

/// How connections are carried: plain TCP unless `tls` and/or `ws` are set.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// TLS over the TCP connection.
    pub tls: Option<TlsSettings>,
    /// A WebSocket over the (TLS) connection.
    pub ws: Option<WsSettings>,
}

impl Transport {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub fn scheme(&self) -> &'static str {
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// Whether this is plain TCP.
    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }
}

/// A rustls client configuration trusting the certificates in `ca` (PEM), TLS 1.2 and 1.3,
/// ring as the provider (named, so that another crate enabling aws-lc-rs cannot make the
/// process default ambiguous).
pub fn tls_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("CA file {}: {e}", ca.display()))?;
    if certs.is_empty() {
        bail!("CA file {}: no PEM certificate in it", ca.display());
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| anyhow!("CA certificate from {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The name to verify in the server's certificate, from a host string.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_string()).map_err(|e| anyhow!("TLS server name {host:?}: {e}"))
}

/// A connection's state above TCP: its TLS session, and whether it is a WebSocket.
#[derive(Default)]
pub struct Link {
    tls: Option<Box<ClientConnection>>,
    ws: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link(tls: {}, ws: {})", self.tls.is_some(), self.ws)
    }
}

fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Link {
    /// Plain TCP.
    pub fn plain() -> Link {
        Link::default()
    }

    /// Whether messages travel as WebSocket messages.
    pub fn is_ws(&self) -> bool {
        self.ws
    }

    /// Whether there is a TLS session.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether this is plain TCP.
    pub fn is_plain(&self) -> bool {
        !self.ws && self.tls.is_none()
    }

    /// Read plaintext into `dst`: `Ok(0)` at the end of the stream, `WouldBlock` when the
    /// socket has nothing (and, with TLS, rustls holds no plaintext). With TLS a short read
    /// does not mean the socket is drained: read until `WouldBlock`.
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, dst: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return sock.read(dst);
        };
        loop {
            match tls.reader().read(dst) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match tls.read_tls(sock) {
                Ok(0) => {
                    // The socket ended: whatever plaintext is left was returned above.
                    return Ok(0);
                }
                Ok(_) => {
                    tls.process_new_packets().map_err(tls_io)?;
                    // Key updates, alerts, session tickets' acks: send them along.
                    while tls.wants_write() {
                        match tls.write_tls(sock) {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Write plaintext: returns how many bytes were taken (`WouldBlock` when none). With
    /// TLS the bytes are encrypted into rustls's buffer (at most its 64 KiB limit) and as
    /// much of it as the socket takes is written; call [`Link::flush_tls`] when the socket
    /// becomes writable again.
    pub fn write<S: Read + Write>(&mut self, sock: &mut S, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return sock.write(data);
        };
        let n = tls.writer().write(data)?;
        match self.flush_tls(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Write the TLS records rustls holds (`WouldBlock` when the socket is full).
    pub fn flush_tls<S: Read + Write>(&mut self, sock: &mut S) -> io::Result<()> {
        if let Some(tls) = self.tls.as_deref_mut() {
            while tls.wants_write() {
                if tls.write_tls(sock)? == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
            }
        }
        Ok(())
    }

    /// A receive buffer for this link's framing, starting with `leftover`.
    pub fn inbox(&self, capacity: usize, leftover: &[u8]) -> Inbox {
        Inbox::new(self.ws, capacity, leftover)
    }
}

/// Append one outgoing message: `encode` writes the protocol's bytes into `out`; over a
/// WebSocket they become one masked binary frame (header in front, payload masked in
/// place: one move of the message by the header's length, no second buffer).
#[inline]
pub fn frame(
    ws: bool,
    out: &mut BytesMut,
    encode: impl FnOnce(&mut BytesMut) -> Result<()>,
) -> Result<()> {
    if !ws {
        return encode(out);
    }
    frame_as(Opcode::Binary, out, encode)
}

/// [`frame`] with any opcode, always as a WebSocket frame.
pub fn frame_as(
    opcode: Opcode,
    out: &mut BytesMut,
    encode: impl FnOnce(&mut BytesMut) -> Result<()>,
) -> Result<()> {
    const ROOM: usize = peerd_ws::MAX_CLIENT_HEADER;
    let start = out.len();
    out.extend_from_slice(&[0u8; ROOM]);
    if let Err(e) = encode(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - ROOM;
    if len == 0 && opcode == Opcode::Binary {
        // Nothing to send (an adapter with no such message): no empty message either.
        out.truncate(start);
        return Ok(());
    }
    let (mut h, n) = header(opcode, true, len);
    h[1] |= 0x80;
    let mask = random_mask();
    let head = n + 4;
    if head < ROOM {
        out.copy_within(start + ROOM.., start + head);
        out.truncate(start + head + len);
    }
    out[start..start + n].copy_from_slice(&h[..n]);
    out[start + n..start + head].copy_from_slice(&mask);
    apply_mask(&mut out[start + head..], mask, 0);
    Ok(())
}

/// What [`Inbox::deliver`] calls with received bytes: returns `(bytes used, stop)`.
pub type MessageFn<'a> = dyn FnMut(&[u8]) -> Result<(usize, bool)> + 'a;

/// What [`Inbox::deliver`] saw besides messages.
#[derive(Debug, Default)]
pub struct Delivered {
    /// The server closed (WebSocket Close, or a stream it refused): why.
    pub closed: Option<String>,
}

/// A receive buffer and, over a WebSocket, its deframing state.
///
/// Plain: `[start..end)` holds bytes not parsed yet. WebSocket (the three regions of
/// `peerd_ws::frame`): `[0..app_end)` the payload of the message in progress, unmasked,
/// `[raw..end)` frames not deframed yet.
pub struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    ws: Option<WsIn>,
    /// Control frames to send (pongs, the answer to a Close), masked, for the caller's
    /// write buffer.
    pub control: Vec<u8>,
}

struct WsIn {
    deframer: Deframer,
    app_end: usize,
    raw: usize,
    /// Raw bytes needed from `raw` before the next step can progress.
    want: usize,
}

impl Inbox {
    fn new(ws: bool, capacity: usize, leftover: &[u8]) -> Inbox {
        let mut buf = vec![0u8; capacity.max(leftover.len() + 16 * 1024)];
        buf[..leftover.len()].copy_from_slice(leftover);
        Inbox {
            buf,
            start: 0,
            end: leftover.len(),
            ws: ws.then(|| WsIn {
                deframer: Deframer::new(Role::Client, MAX_MESSAGE, false),
                app_end: 0,
                raw: 0,
                want: 0,
            }),
            control: Vec::new(),
        }
    }

    /// Bytes received and not yet handed out (raw frames included).
    pub fn pending(&self) -> usize {
        match &self.ws {
            None => self.end - self.start,
            Some(w) => w.app_end + (self.end - w.raw),
        }
    }

    /// The free space after the data, at least `min` bytes (compacting, then growing).
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        let (lo, hi, want) = match &self.ws {
            None => (self.start, self.end, 0),
            Some(w) => (w.raw, self.end, w.want),
        };
        let min = min.max(want.saturating_sub(hi - lo));
        if self.buf.len() - self.end < min {
            // Move the unprocessed bytes down: to 0 (plain) or to just after the message
            // in progress (WebSocket).
            let to = self.ws.as_ref().map_or(0, |w| w.app_end);
            if lo > to {
                self.buf.copy_within(lo..hi, to);
                self.end = to + (hi - lo);
                match &mut self.ws {
                    None => self.start = 0,
                    Some(w) => w.raw = to,
                }
            }
            if self.buf.len() - self.end < min {
                let n = (self.end + min).max(self.buf.len() * 2);
                self.buf.resize(n, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written into [`Inbox::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.buf.len());
    }

    /// Whether the free space after the data is used up (a read that filled it may have
    /// left more in the socket).
    pub fn full(&self) -> bool {
        self.end == self.buf.len()
    }

    /// Hand out complete messages. Plain: `parse` gets every unparsed byte and returns how
    /// many it used (a partial message stays for later). WebSocket: `parse` gets each whole
    /// message, which it must use entirely (one protocol message per WebSocket message);
    /// pings are answered into [`Inbox::control`], a Close ends the delivery.
    ///
    /// `parse` returns `(used, stop)`: with `stop` nothing after this message is handed
    /// out (it stays in the buffer), for set-up steps that wait for one answer.
    pub fn deliver(&mut self, parse: &mut MessageFn<'_>) -> Result<Delivered> {
        let mut out = Delivered::default();
        let Some(w) = &mut self.ws else {
            let (used, _) = parse(&self.buf[self.start..self.end])?;
            self.start += used;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            return Ok(out);
        };
        loop {
            let step = match w.deframer.step(&mut self.buf, w.app_end, w.raw, self.end) {
                Ok(s) => s,
                Err(e) => {
                    // A stream a client must refuse (masked server frame, reserved bits,
                    // text): answer with the status, as the RFC asks, and stop.
                    push_close(&mut self.control, e.status, e.reason);
                    out.closed = Some(format!("refused the server's stream: {e}"));
                    break;
                }
            };
            w.raw += step.consumed;
            match step.event {
                Event::NeedMore { want } => {
                    w.want = want;
                    break;
                }
                Event::Data {
                    len,
                    end_of_message,
                } => {
                    w.app_end += len;
                    if let Some((_, total)) = end_of_message {
                        let from = w.app_end - total;
                        let (used, stop) = parse(&self.buf[from..w.app_end])?;
                        if used != total {
                            bail!(
                                "a WebSocket message of {total} bytes held {used} bytes of whole protocol messages (one per WebSocket message expected)"
                            );
                        }
                        w.app_end = from;
                        if stop {
                            break;
                        }
                    }
                }
                Event::Ping { payload } => {
                    let p = self.buf[payload].to_vec();
                    let mut b = BytesMut::new();
                    frame_as(Opcode::Pong, &mut b, |o| {
                        o.extend_from_slice(&p);
                        Ok(())
                    })?;
                    self.control.extend_from_slice(&b);
                }
                Event::Pong => {}
                Event::Close { status, reason } => {
                    let reason = String::from_utf8_lossy(&self.buf[reason]).into_owned();
                    // Echo the status back (the close handshake), then the caller hangs up.
                    push_close(&mut self.control, status.unwrap_or(1000), "");
                    out.closed = Some(match status {
                        Some(s) => format!("WebSocket Close {s} ({reason})"),
                        None => "WebSocket Close without status".into(),
                    });
                    break;
                }
            }
        }
        if w.raw == self.end {
            w.raw = w.app_end;
            self.end = w.app_end;
        }
        Ok(out)
    }

    /// The bytes not handed out yet, for a connection that changes hands after set-up
    /// (only between messages: nothing of a message in progress).
    pub fn into_leftover(self) -> Vec<u8> {
        match &self.ws {
            None => self.buf[self.start..self.end].to_vec(),
            Some(w) => {
                debug_assert_eq!(w.app_end, 0, "set-up stops between messages");
                self.buf[w.raw..self.end].to_vec()
            }
        }
    }
}

fn push_close(out: &mut Vec<u8>, status: u16, reason: &str) {
    let mut b = BytesMut::new();
    let _ = frame_as(Opcode::Close, &mut b, |o| {
        o.extend_from_slice(&status.to_be_bytes());
        o.extend_from_slice(&reason.as_bytes()[..reason.len().min(100)]);
        Ok(())
    });
    out.extend_from_slice(&b);
}

/// Open a connection over `transport` to `addr`: TCP (TCP_NODELAY), the TLS handshake, the
/// WebSocket upgrade, each under `opts.timeout`. The socket is left in blocking mode; the
/// protocol's own handshake follows through [`Connected::send`] and
/// [`Connected::read_messages`].
pub fn open(addr: SocketAddr, transport: &Transport, opts: &ConnectOptions) -> Result<Connected> {
    let deadline = Instant::now() + opts.timeout;
    let mut stream = tcp_connect(addr, opts)?;
    let mut link = Link::plain();
    if let Some(t) = &transport.tls {
        let mut tls = ClientConnection::new(t.config.clone(), t.server_name.clone())
            .map_err(|e| anyhow!("TLS set-up: {e}"))?;
        while tls.is_handshaking() {
            set_timeout(&stream, deadline)?;
            tls.complete_io(&mut stream)
                .with_context(|| format!("TLS handshake with {addr}"))?;
        }
        link.tls = Some(Box::new(tls));
    }
    let mut leftover = Vec::new();
    if let Some(w) = &transport.ws {
        let key = peerd_ws::client_key();
        let req = peerd_ws::client_request(&w.host, &w.path, &w.subprotocol, &key);
        write_all_link(&mut link, &mut stream, &req, deadline)?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        let used = loop {
            match peerd_ws::check_response(&head, &key, &w.subprotocol, MAX_RESPONSE_HEAD) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(e) => bail!("WebSocket upgrade with {addr}: {e}"),
            }
            set_timeout(&stream, deadline)?;
            let n = link
                .read(&mut stream, &mut chunk)
                .with_context(|| format!("reading the upgrade response from {addr}"))?;
            if n == 0 {
                bail!("{addr} closed the connection during the WebSocket upgrade");
            }
            head.extend_from_slice(&chunk[..n]);
        };
        leftover = head.split_off(used);
        link.ws = true;
    }
    Ok(Connected {
        stream,
        peer_id: None,
        leftover,
        link,
    })
}

fn set_timeout(stream: &TcpStream, deadline: Instant) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("timed out");
    }
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    Ok(())
}

fn write_all_link(
    link: &mut Link,
    stream: &mut TcpStream,
    mut data: &[u8],
    deadline: Instant,
) -> Result<()> {
    set_timeout(stream, deadline)?;
    while !data.is_empty() {
        let n = link.write(stream, data).context("writing to the server")?;
        data = &data[n..];
    }
    link.flush_tls(stream).context("writing to the server")?;
    Ok(())
}

impl Connected {
    /// Send one protocol message (blocking): as is over TCP/TLS, as one binary WebSocket
    /// message over a WebSocket.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        if self.link.is_ws() {
            let mut b = BytesMut::with_capacity(msg.len() + 14);
            frame(true, &mut b, |o| {
                o.extend_from_slice(msg);
                Ok(())
            })?;
            write_all_link(&mut self.link, &mut self.stream, &b, deadline)
        } else {
            write_all_link(&mut self.link, &mut self.stream, msg, deadline)
        }
    }

    /// Read (blocking, until `deadline`) and hand messages to `parse` as
    /// [`Inbox::deliver`] does, until it returns a result. Returns `(result, bytes used)`
    /// semantics: `parse` gives `(used, Some(t))` to stop with `t`. Bytes after the
    /// message that produced the result stay in [`Connected::leftover`].
    pub fn read_messages<T>(
        &mut self,
        deadline: Instant,
        mut parse: impl FnMut(&[u8]) -> Result<(usize, Option<T>)>,
    ) -> Result<T> {
        let mut inbox = self.link.inbox(0, &std::mem::take(&mut self.leftover));
        let mut got = None;
        let result = (|| -> Result<T> {
            loop {
                let d = inbox.deliver(&mut |m| {
                    let (used, t) = parse(m)?;
                    let stop = t.is_some();
                    if stop {
                        got = t;
                    }
                    Ok((used, stop))
                })?;
                if !inbox.control.is_empty() {
                    let c = std::mem::take(&mut inbox.control);
                    write_all_link(&mut self.link, &mut self.stream, &c, deadline)?;
                }
                if let Some(t) = got.take() {
                    return Ok(t);
                }
                if let Some(why) = d.closed {
                    bail!("the server closed the connection during set-up: {why}");
                }
                set_timeout(&self.stream, deadline)
                    .context("timed out waiting for the server's answer")?;
                let spare = inbox.spare(16 * 1024);
                let n = match self.link.read(&mut self.stream, spare) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        bail!("timed out waiting for the server's answer")
                    }
                    Err(e) => return Err(e).context("reading from the server"),
                };
                if n == 0 {
                    bail!("server closed the connection during set-up");
                }
                inbox.filled(n);
            }
        })();
        self.leftover = inbox.into_leftover();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frames(msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for m in msgs {
            peerd_ws::write_frame(Opcode::Binary, true, m, &mut v);
        }
        v
    }

    #[test]
    fn frame_is_a_masked_binary_message() {
        // An adapter that encodes nothing sends nothing (not an empty message).
        let mut out = BytesMut::new();
        frame(true, &mut out, |_| Ok(())).unwrap();
        assert!(out.is_empty());
        for len in [1usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = BytesMut::from(&b"xy"[..]);
            frame(true, &mut out, |o| {
                o.extend_from_slice(&payload);
                Ok(())
            })
            .unwrap();
            assert_eq!(&out[..2], b"xy");
            let mut buf = out[2..].to_vec();
            let end = buf.len();
            let mut d = Deframer::new(Role::Server, 1 << 20, false);
            let s = d.step(&mut buf, 0, 0, end).unwrap();
            assert_eq!(s.consumed, end, "len {len}");
            match s.event {
                Event::Data {
                    len: l,
                    end_of_message: Some((peerd_ws::MessageKind::Binary, t)),
                } => {
                    assert_eq!((l, t), (len, len));
                    assert_eq!(&buf[..len], &payload[..]);
                }
                other => panic!("{other:?}"),
            }
        }
        // Plain: untouched.
        let mut out = BytesMut::new();
        frame(false, &mut out, |o| {
            o.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
        assert_eq!(&out[..], b"abc");
    }

    #[test]
    fn inbox_hands_out_whole_messages_in_any_chunking() {
        let mut wire = server_frames(&[b"one", b"", b"three33"]);
        // A ping between messages and a fragmented message.
        peerd_ws::write_frame(Opcode::Ping, true, b"pp", &mut wire);
        peerd_ws::write_frame(Opcode::Binary, false, b"frag", &mut wire);
        peerd_ws::write_frame(Opcode::Continuation, true, b"ment", &mut wire);
        for chunk in [1usize, 2, 3, 7, wire.len()] {
            let mut inbox = Link {
                tls: None,
                ws: true,
            }
            .inbox(16, &[]);
            let mut got: Vec<Vec<u8>> = Vec::new();
            for piece in wire.chunks(chunk) {
                let s = inbox.spare(4);
                s[..piece.len()].copy_from_slice(piece);
                inbox.filled(piece.len());
                let d = inbox
                    .deliver(&mut |m| {
                        got.push(m.to_vec());
                        Ok((m.len(), false))
                    })
                    .unwrap();
                assert!(d.closed.is_none());
            }
            assert_eq!(
                got,
                vec![
                    b"one".to_vec(),
                    vec![],
                    b"three33".to_vec(),
                    b"fragment".to_vec()
                ],
                "chunk {chunk}"
            );
            assert_eq!(inbox.pending(), 0);
            // The pong carries the ping's payload, masked.
            let mut c = inbox.control.clone();
            let end = c.len();
            let s = Deframer::new(Role::Server, 1 << 20, false)
                .step(&mut c, 0, 0, end)
                .unwrap();
            assert_eq!(s.consumed, end);
        }
    }

    #[test]
    fn stop_leaves_the_rest_and_close_is_reported() {
        let mut wire = server_frames(&[b"a", b"b"]);
        peerd_ws::write_frame(Opcode::Close, true, &1001u16.to_be_bytes(), &mut wire);
        let mut inbox = Link {
            tls: None,
            ws: true,
        }
        .inbox(64, &wire);
        let mut got = Vec::new();
        inbox
            .deliver(&mut |m| {
                got.push(m.to_vec());
                Ok((m.len(), true))
            })
            .unwrap();
        assert_eq!(got, vec![b"a".to_vec()]);
        let rest = inbox.into_leftover();
        let mut inbox = Link {
            tls: None,
            ws: true,
        }
        .inbox(0, &rest);
        let d = inbox
            .deliver(&mut |m| {
                got.push(m.to_vec());
                Ok((m.len(), false))
            })
            .unwrap();
        assert_eq!(got.len(), 2);
        assert!(d.closed.unwrap().contains("1001"));
        assert!(!inbox.control.is_empty());
    }

    #[test]
    fn a_message_must_be_one_protocol_message() {
        let wire = server_frames(&[b"abcd"]);
        let mut inbox = Link {
            tls: None,
            ws: true,
        }
        .inbox(64, &wire);
        assert!(inbox.deliver(&mut |_| Ok((2, false))).is_err());
    }

    #[test]
    fn plain_inbox_keeps_partial_bytes() {
        let mut inbox = Link::plain().inbox(8, b"abcdef");
        let mut seen = Vec::new();
        inbox
            .deliver(&mut |m| {
                seen.push(m.to_vec());
                Ok((4, false))
            })
            .unwrap();
        assert_eq!(seen, vec![b"abcdef".to_vec()]);
        assert_eq!(inbox.pending(), 2);
        let s = inbox.spare(100);
        assert!(s.len() >= 100);
        assert_eq!(inbox.into_leftover(), b"ef".to_vec());
    }
}
