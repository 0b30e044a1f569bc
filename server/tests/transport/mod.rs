//! Test clients for every transport of one in-process server: plain TCP, `tls://` (rustls
//! on the client side, trusting `testdata/tls/ca.pem`), `ws://` and `wss://` (the HTTP
//! upgrade and WebSocket frames by hand over std sockets, client frames built with
//! `peerd_ws::write_masked_frame`, server frames parsed here, independently of the
//! server's deframer).
//!
//! Every read is bounded (the socket's read timeout against a deadline); nothing sleeps to
//! synchronise. Used by `websocket.rs` and `cross_transport.rs`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerd_codec::codec::decode_bytes;
use peerd_codec::{self as codec, Code, Encode, Frame, HEADER_LEN};
use peerd_server::{listen, Endpoint, ListenOptions, PeerServer, TlsFiles};
use peerd_ws::frame::{write_masked_frame, Opcode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long one receive may wait. Generous: tests run in parallel on small machines.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn tls_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/tls")
}

/// A server with a TCP, a `ws://`, a `tls://` and a `wss://` endpoint (in that order) on
/// loopback, the `echo` RPC method, unpinned shards, a short close linger. `tune` adjusts
/// the options first.
pub fn server(shards: usize, tune: impl FnOnce(&mut ListenOptions)) -> Servers {
    let mut o = ListenOptions::new("127.0.0.1:0").unwrap().shards(shards);
    o.endpoints = vec![
        Endpoint::Tcp("127.0.0.1:0".into()),
        Endpoint::parse("ws://127.0.0.1:0").unwrap(),
        Endpoint::parse("tls://127.0.0.1:0").unwrap(),
        Endpoint::parse("wss://127.0.0.1:0").unwrap(),
    ];
    o.tls = Some(TlsFiles {
        cert_chain: tls_dir().join("server.pem"),
        key: tls_dir().join("server.key"),
    });
    o.pin = false;
    o.close_linger = Duration::from_millis(300);
    let mut o = o.handle("echo", |_peer, req| async move { Ok(req.params) });
    tune(&mut o);
    let srv = listen(o).expect("listen");
    let addr = |i: usize| -> SocketAddr {
        let e = &srv.endpoints()[i];
        e.tcp_addr().unwrap().parse().unwrap()
    };
    Servers {
        tcp: addr(0),
        ws: addr(1),
        tls: addr(2),
        wss: addr(3),
        srv,
    }
}

pub struct Servers {
    pub srv: PeerServer,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub tls: SocketAddr,
    pub wss: SocketAddr,
}

/// A byte stream a test reads with deadlines: a TCP socket, or rustls over one.
pub trait Io: Read + Write + Send {
    fn tcp(&self) -> &TcpStream;

    /// End the TLS session (a close_notify); nothing on plain TCP.
    fn close_notify(&mut self) {}
}

impl Io for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Io for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }
}

/// rustls client configuration trusting the test CA (ring, TLS 1.2 and 1.3).
pub fn tls_client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls_dir().join("ca.pem")).expect("ca.pem") {
        roots.add(c.expect("CA certificate")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// A TLS client stream to `addr`, the handshake completed (bounded by [`WAIT`]).
pub fn tls(addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls_client_config(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp(addr));
    s.sock.set_read_timeout(Some(WAIT)).unwrap();
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .expect("TLS handshake with the test CA");
    }
    s
}

pub use peerd_testkit::Got;

/// Read once into `buf`, waiting until `deadline`.
pub fn read_some(io: &mut dyn Io, deadline: Instant, buf: &mut Vec<u8>) -> Got {
    let left = match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => d.max(Duration::from_millis(1)),
        _ => return Got::Timeout,
    };
    io.tcp().set_read_timeout(Some(left)).unwrap();
    peerd_testkit::read_once(io, |b| buf.extend_from_slice(b))
}

/// An HTTP response, as read off the socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Bytes after the body (after a 101: the first WebSocket frames).
    pub rest: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Read one HTTP response head (and its `Content-Length` body) within [`WAIT`]; `None` if
/// the stream ended or nothing complete came in time.
pub fn read_response(io: &mut dyn Io) -> Option<HttpResponse> {
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(buf.len() < 64 * 1024, "response head too long");
        if read_some(io, deadline, &mut buf) != Got::Data {
            return None;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut words = status_line.splitn(3, ' ');
    assert_eq!(words.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = words.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    while buf.len() < head_end + len {
        if read_some(io, deadline, &mut buf) != Got::Data {
            return None;
        }
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap(),
        rest: buf[head_end + len..].to_vec(),
    })
}

/// A well-formed upgrade request for `path` offering `protocol` (none if empty).
pub fn upgrade_request(path: &str, protocol: &str) -> Vec<u8> {
    peerd_ws::client_request("127.0.0.1", path, protocol, "dGhlIHNhbXBsZSBub25jZQ==")
}

/// A frame from the server, parsed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// What the server sent on a WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsIn {
    Frame(WsFrame),
    Eof,
    Reset,
    Timeout,
}

/// One peer on any transport. Over WebSocket each peerd frame travels as one masked binary
/// message; otherwise frames are written back to back.
pub struct Peer {
    pub io: Box<dyn Io>,
    pub ws: bool,
    buf: Vec<u8>,
    pub peer_id: String,
}

/// Transports, for tests that loop over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
    Tls,
    Wss,
}

impl Servers {
    /// A peer on `kind`, connected (and upgraded), not yet handshaken.
    pub fn open(&self, kind: Kind) -> Peer {
        match kind {
            Kind::Tcp => Peer::plain(Box::new(tcp(self.tcp))),
            Kind::Tls => Peer::plain(Box::new(tls(self.tls))),
            Kind::Ws => Peer::upgrade(Box::new(tcp(self.ws)), "/"),
            Kind::Wss => Peer::upgrade(Box::new(tls(self.wss)), "/"),
        }
    }

    /// A peer on `kind` that completed Hello -> Welcome as `id`.
    pub fn peer(&self, kind: Kind, id: &str) -> Peer {
        let mut p = self.open(kind);
        p.hello(id);
        p
    }
}

impl Peer {
    pub fn plain(io: Box<dyn Io>) -> Peer {
        Peer {
            io,
            ws: false,
            buf: Vec::new(),
            peer_id: String::new(),
        }
    }

    /// Upgrade `io` with subprotocol `peerd.v1`; panics unless the answer is 101 with it.
    pub fn upgrade(mut io: Box<dyn Io>, path: &str) -> Peer {
        io.write_all(&upgrade_request(path, "peerd.v1")).unwrap();
        let r = read_response(&mut *io).expect("an answer to the upgrade");
        assert_eq!(r.status, 101, "upgrade refused: {r:?}");
        assert_eq!(r.header("sec-websocket-protocol"), Some("peerd.v1"));
        assert_eq!(
            r.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        Peer {
            io,
            ws: true,
            buf: r.rest,
            peer_id: String::new(),
        }
    }

    pub fn write(&mut self, b: &[u8]) {
        self.io.write_all(b).expect("write");
        self.io.flush().expect("flush");
    }

    /// Write, ignoring errors (the server may have closed on us already).
    pub fn write_lossy(&mut self, b: &[u8]) {
        let _ = self.io.write_all(b);
        let _ = self.io.flush();
    }

    /// A masked WebSocket frame.
    pub fn ws_frame(&mut self, opcode: Opcode, fin: bool, payload: &[u8]) {
        let mut v = Vec::new();
        write_masked_frame(opcode, fin, payload, peerd_ws::random_mask(), &mut v);
        self.write_lossy(&v);
    }

    /// `m` as one frame: one binary message over WebSocket.
    pub fn send<M: Encode>(&mut self, m: &M) {
        let f = peerd_testkit::frame(m);
        self.send_frame(&f);
    }

    /// Raw peerd bytes as one binary message (WebSocket) or as they are.
    pub fn send_frame(&mut self, f: &[u8]) {
        if self.ws {
            self.ws_frame(Opcode::Binary, true, f);
        } else {
            self.write_lossy(f);
        }
    }

    fn fill(&mut self, deadline: Instant) -> Got {
        read_some(&mut *self.io, deadline, &mut self.buf)
    }

    /// The next WebSocket frame from the server, parsed here: server frames must be
    /// unmasked and use the shortest length encoding.
    pub fn recv_ws(&mut self, t: Duration) -> WsIn {
        assert!(self.ws);
        let deadline = Instant::now() + t;
        loop {
            if self.buf.len() >= 2 {
                let b0 = self.buf[0];
                let b1 = self.buf[1];
                assert_eq!(b1 & 0x80, 0, "server frame masked");
                assert_eq!(b0 & 0x70, 0, "server frame with reserved bits");
                let (len, hdr) = match b1 & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if hdr > 0 && self.buf.len() >= hdr + len {
                    let min_hdr = match len {
                        0..=125 => 2,
                        126..=0xFFFF => 4,
                        _ => 10,
                    };
                    assert_eq!(hdr, min_hdr, "length not in its shortest form");
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return WsIn::Frame(WsFrame {
                        fin: b0 & 0x80 != 0,
                        opcode: b0 & 0x0F,
                        payload,
                    });
                }
            }
            match self.fill(deadline) {
                Got::Data => {}
                Got::Eof => return WsIn::Eof,
                Got::Reset => return WsIn::Reset,
                Got::Timeout => return WsIn::Timeout,
            }
        }
    }

    /// The next peerd frame: over WebSocket, the next binary message (which must be
    /// exactly one frame). `Err` with what came instead (a WebSocket Close: `Err(Some(..))`
    /// with its status; the end of the stream or nothing in time: `Err(None)`).
    pub fn recv_within(&mut self, t: Duration) -> Result<Bytes, Option<(u16, String)>> {
        if self.ws {
            match self.recv_ws(t) {
                WsIn::Frame(f) if f.opcode == 0x2 => {
                    assert!(f.fin, "server fragmented a message");
                    let h = peerd_codec::Header::parse(&f.payload, u32::MAX)
                        .expect("a peerd header")
                        .expect("a whole header");
                    assert_eq!(
                        h.frame_len(),
                        f.payload.len(),
                        "one peerd frame per binary message"
                    );
                    Ok(Bytes::from(f.payload))
                }
                WsIn::Frame(f) if f.opcode == 0x8 => Err(Some(close_status(&f.payload))),
                WsIn::Frame(f) => panic!("unexpected WebSocket frame {f:?}"),
                _ => Err(None),
            }
        } else {
            let deadline = Instant::now() + t;
            loop {
                if self.buf.len() >= HEADER_LEN {
                    let len =
                        HEADER_LEN + u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                    if self.buf.len() >= len {
                        let f = Bytes::copy_from_slice(&self.buf[..len]);
                        self.buf.drain(..len);
                        return Ok(f);
                    }
                }
                if self.fill(deadline) != Got::Data {
                    return Err(None);
                }
            }
        }
    }

    pub fn recv(&mut self) -> Bytes {
        match self.recv_within(WAIT) {
            Ok(f) => f,
            Err(e) => panic!("{}: expected a frame, got {e:?}", self.peer_id),
        }
    }

    /// Frames until `f` returns `Some` (others skipped).
    pub fn recv_until<T>(&mut self, mut f: impl FnMut(Frame<'_>) -> Option<T>) -> T {
        loop {
            let b = self.recv();
            let frame = decode_bytes(&b).expect("a decodable frame");
            if let Some(t) = f(frame) {
                return t;
            }
        }
    }

    /// Hello as `id`, then Welcome.
    pub fn hello(&mut self, id: &str) {
        self.send(&peerd_testkit::hello(Some(id), None));
        let b = self.recv();
        match decode_bytes(&b).expect("decodable") {
            Frame::Welcome(w) => assert_eq!(w.peer_id.as_str(), id),
            Frame::Reject(r) => panic!("{id} rejected: {} {}", r.code, r.reason.as_str()),
            other => panic!("{id}: expected Welcome, got {other:?}"),
        }
        self.peer_id = id.to_string();
    }

    /// Call a server method (`peer` None) or a peer.
    pub fn call_to(
        &mut self,
        id: u64,
        peer: Option<&str>,
        method: &str,
        params: &[u8],
    ) -> Result<Vec<u8>, (u16, String)> {
        self.send(&codec::RpcRequest {
            id,
            method: method.into(),
            peer: peer.map(Into::into),
            timeout_ms: 5000,
            params: params.into(),
        });
        self.recv_until(|f| peerd_testkit::call_answer(f, id))
    }

    /// The `echo` method answers `params`: the connection and its shard are alive.
    pub fn echo(&mut self, id: u64, params: &[u8]) {
        assert_eq!(
            self.call_to(id, None, "echo", params).expect("echo"),
            params,
            "{}: echo",
            self.peer_id
        );
    }

    /// The Status answering `req`.
    pub fn status(&mut self, req: u64) -> u16 {
        self.recv_until(|f| match f {
            Frame::Status(s) if s.req.to_native() == req => Some(s.code.to_native()),
            _ => None,
        })
    }

    pub fn join(&mut self, req: u64, topic: &str) {
        self.send(&codec::Join {
            req,
            topic: topic.into(),
        });
        assert_eq!(self.status(req), 0, "{} join {topic}", self.peer_id);
    }

    /// Over WebSocket: the peerd Close (or Reject) the server sends, then its WebSocket
    /// Close, then the end of the stream. Returns (peerd code, WebSocket status).
    pub fn expect_ws_close(&mut self) -> (Option<u16>, u16) {
        let mut code = None;
        loop {
            match self.recv_within(WAIT) {
                Ok(b) => match decode_bytes(&b).expect("decodable") {
                    Frame::Close(c) => code = Some(c.code.to_native()),
                    Frame::Reject(r) => code = Some(r.code.to_native()),
                    _ => assert!(code.is_none(), "a frame after the peerd Close"),
                },
                Err(Some((status, _))) => {
                    self.expect_end();
                    return (code, status);
                }
                Err(None) => panic!("{}: no WebSocket Close", self.peer_id),
            }
        }
    }

    /// The frames the server sends until the stream ends (EOF or reset), which must be
    /// within [`WAIT`].
    pub fn frames_until_end(&mut self) -> Vec<Bytes> {
        let deadline = Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            while self.buf.len() >= HEADER_LEN {
                let len =
                    HEADER_LEN + u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() < len {
                    break;
                }
                frames.push(Bytes::copy_from_slice(&self.buf[..len]));
                self.buf.drain(..len);
            }
            match self.fill(deadline) {
                Got::Eof | Got::Reset => return frames,
                Got::Timeout => panic!("{}: the stream did not end", self.peer_id),
                Got::Data => {}
            }
        }
    }

    /// The stream ends (EOF or reset) within [`WAIT`], with nothing more before it.
    pub fn expect_end(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.fill(deadline) {
                Got::Eof | Got::Reset => break,
                Got::Timeout => panic!("{}: the stream did not end", self.peer_id),
                Got::Data => {}
            }
        }
        assert!(
            self.buf.is_empty(),
            "{}: bytes after the close: {:?}",
            self.peer_id,
            self.buf
        );
    }
}

/// (status, reason) of a WebSocket Close payload (an empty one reads as 1005, "no status").
pub fn close_status(payload: &[u8]) -> (u16, String) {
    if payload.len() < 2 {
        return (1005, String::new());
    }
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        String::from_utf8(payload[2..].to_vec()).expect("UTF-8 close reason"),
    )
}

/// The code of a peerd Close or Reject frame.
pub fn close_code(b: &[u8]) -> Option<Code> {
    match decode_bytes(b).ok()? {
        Frame::Close(c) => Code::from_u16(c.code.to_native()),
        Frame::Reject(r) => Code::from_u16(r.code.to_native()),
        _ => None,
    }
}
