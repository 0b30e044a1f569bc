//! Test support shared by peerd's crates: a raw protocol peer over std sockets and the codec,
//! and [`wait_until`].
//!
//! The peer speaks the real wire with nothing in between (no client library, no threads of
//! its own), so the server's tests exercise exactly the bytes a peer sends, and the benches
//! measure only the kernel, the server and the codec. This crate does not depend on
//! peerd-server: anything can take it as a dev-dependency, and starting a server stays with
//! the tests that need one.
//!
//! # Layout
//!
//! - [`RawPeer`]: connect, handshake (through [`peerd_codec::handshake`]), send frames or raw
//!   bytes, receive with a bound, and helpers for the common exchanges (call, sync, expect a
//!   close).
//! - [`Recv`]: what one bounded receive saw: a frame, the end of the stream, or nothing in
//!   time. Kept apart so that "the server closed" can never pass for "nothing arrived".
//! - [`hello`], [`frame`]: build a Hello, encode any message as one frame.
//! - [`wait_until`]: poll an observable condition with a deadline, instead of sleeping.
//! - [`Scratch`]: a test's own temporary directory, removed when dropped.
//! - [`nats::Nats`]: a real nats-server with JetStream on a free loopback port (the
//!   cluster tests).

pub mod nats;

use std::borrow::Cow;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerd_codec::codec::decode_bytes;
use peerd_codec::handshake::{hello_frame, ClientHandshake, HandshakeError, Welcomed};
use peerd_codec::{self as codec, Code, Encode, Frame, Framer};

/// How long a receive or a wait may take before the test gives up. Generous: tests run in
/// parallel on small shared machines, and a healthy exchange takes microseconds.
pub const WAIT: Duration = Duration::from_secs(5);

/// Largest frame body a [`RawPeer`] accepts.
const MAX_FRAME: u32 = 64 << 20;

/// A Hello at the current protocol version, declaring `peer_id` and presenting `resume`.
pub fn hello(peer_id: Option<&str>, resume: Option<&[u8]>) -> codec::Hello<'static> {
    codec::Hello {
        version: codec::PROTOCOL_VERSION,
        peer_id: peer_id.map(|s| Cow::Owned(s.to_string())),
        credentials: None,
        resume_token: resume.map(|t| Cow::Owned(t.to_vec())),
        client: Cow::Borrowed("peerd-testkit"),
    }
}

/// `m` encoded as one frame, with no size limit (tests send oversized frames on purpose).
pub fn frame<M: Encode>(m: &M) -> Bytes {
    let mut b = BytesMut::new();
    codec::encode(m, &mut b, u32::MAX).expect("encode");
    b.freeze()
}

/// A directory of one test's own under the system's temporary directory (keys, configs,
/// Unix sockets, reports), removed with its contents when dropped, so that test runs leave
/// nothing behind. Its name carries the tag, the process and a counter: tests running in
/// parallel, in one process or several, never share one.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("peerd-{tag}-{}-{n}", std::process::id()));
        // A leftover of an earlier process with the same pid, if any, is not ours to keep.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory under the temp dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Poll `f` every few milliseconds until it holds; panic naming `what` after 10 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What one bounded receive saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recv {
    /// A whole frame, header included (decode with `peerd_codec::codec::decode_bytes`).
    Frame(Bytes),
    /// The server closed the stream in order (a read returned 0).
    Eof,
    /// The server reset the connection (it closed with bytes of ours still unread).
    Reset,
    /// Nothing arrived within the bound; the connection may still be open.
    Timeout,
}

impl Recv {
    /// The frame, if one arrived.
    pub fn frame(self) -> Option<Bytes> {
        match self {
            Recv::Frame(f) => Some(f),
            _ => None,
        }
    }

    /// The stream ended, in order or by reset.
    pub fn is_end(&self) -> bool {
        matches!(self, Recv::Eof | Recv::Reset)
    }
}

/// One read's outcome, before framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// Bytes arrived.
    Data,
    /// The server ended the stream (for TLS: also without close_notify).
    Eof,
    /// The connection was reset or aborted (for TLS: also an alert from the server).
    Reset,
    /// Nothing before the read timeout.
    Timeout,
}

/// Read once from `r` (its read timeout already set) and hand what arrived to `got`.
/// Shared by [`RawPeer`] and by tests that read through other streams (TLS, WebSocket);
/// an error that is none of [`Got`]'s panics: this is a test tool.
pub fn read_once<R: Read + ?Sized>(r: &mut R, mut got: impl FnMut(&[u8])) -> Got {
    let mut buf = [0u8; 64 * 1024];
    loop {
        return match r.read(&mut buf) {
            Ok(0) => Got::Eof,
            Ok(n) => {
                got(&buf[..n]);
                Got::Data
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Got::Timeout
            }
            // rustls: the server closed without close_notify.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Got::Eof,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Got::Reset
            }
            // rustls: an alert from the server, or a record it cannot take.
            Err(e) if e.kind() == ErrorKind::InvalidData => Got::Reset,
            Err(e) => panic!("reading from the server: {e}"),
        };
    }
}

/// Read once from `s` into `dst`, waiting until `deadline` (`None`: no bound).
/// `timeout` remembers the socket's read timeout so that an unbounded hot loop (a bench)
/// does not set it on every read; a bounded read always sets it.
fn read_into(
    s: &mut TcpStream,
    timeout: &mut Option<Duration>,
    deadline: Option<Instant>,
    dst: &mut BytesMut,
) -> Got {
    let want = match deadline {
        None => None,
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Some(left.max(Duration::from_millis(1))),
            _ => return Got::Timeout,
        },
    };
    if want.is_some() || *timeout != want {
        s.set_read_timeout(want).expect("set_read_timeout");
        *timeout = want;
    }
    read_once(s, |b| dst.extend_from_slice(b))
}

/// The answer to call `id`, if `f` is it: the result, or (code, message).
pub fn call_answer(f: Frame<'_>, id: u64) -> Option<Result<Vec<u8>, (u16, String)>> {
    match f {
        Frame::RpcResponse(r) if r.id.to_native() == id => Some(Ok(r.result.as_slice().to_vec())),
        Frame::RpcError(e) if e.id.to_native() == id => {
            Some(Err((e.code.to_native(), e.message.as_str().to_string())))
        }
        _ => None,
    }
}

/// A raw protocol peer: one blocking TCP connection, the codec, nothing else.
///
/// Every receive is bounded ([`WAIT`] unless said otherwise) except
/// [`recv_blocking`](RawPeer::recv_blocking), which is for benches. Anything unexpected
/// (a write error, an invalid frame from the server, a refused handshake where a Welcome was
/// expected) panics: this is a test tool.
pub struct RawPeer {
    /// The socket (TCP_NODELAY set), for tests that tune it. Its read timeout belongs to
    /// the receive methods.
    pub s: TcpStream,
    /// The peer id the Welcome confirmed or assigned (empty before the handshake).
    pub peer_id: String,
    /// The Welcome's resume token.
    pub token: Vec<u8>,
    /// The Welcome's session id.
    pub session: u64,
    framer: Framer,
    out: BytesMut,
    read_timeout: Option<Duration>,
}

impl RawPeer {
    /// Connect without handshaking.
    pub fn tcp(addr: SocketAddr) -> RawPeer {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        RawPeer {
            s,
            peer_id: String::new(),
            token: Vec::new(),
            session: 0,
            framer: Framer::new(MAX_FRAME),
            out: BytesMut::with_capacity(64 << 10),
            read_timeout: None,
        }
    }

    /// Connect and complete the handshake as `id` (or with a server-assigned id); panics if
    /// the server refuses.
    pub fn connect(addr: SocketAddr, id: Option<&str>) -> RawPeer {
        let mut p = RawPeer::tcp(addr);
        if let Err(e) = p.handshake(&hello(id, None)) {
            panic!("handshake as {id:?}: {e}");
        }
        p
    }

    /// Send `hello` and wait for the answer. On Welcome, [`peer_id`](Self::peer_id),
    /// [`token`](Self::token) and [`session`](Self::session) are set; frames the server sent
    /// right after the Welcome stay buffered for the next receive.
    pub fn handshake(&mut self, hello: &codec::Hello<'_>) -> Result<Welcomed, HandshakeError> {
        let f = hello_frame(hello).expect("Hello within the handshake limit");
        self.send_raw(&f);
        self.await_welcome()
    }

    /// Wait for the answer to a Hello already sent; panics if it is not a Welcome.
    pub fn expect_welcome(&mut self) -> Welcomed {
        match self.await_welcome() {
            Ok(w) => w,
            Err(e) => panic!("expected Welcome: {e}"),
        }
    }

    /// Wait for the answer to a Hello already sent (through [`ClientHandshake`]: Welcome,
    /// Reject or an early Close). Panics if the stream ends or nothing comes within [`WAIT`].
    pub fn await_welcome(&mut self) -> Result<Welcomed, HandshakeError> {
        let deadline = Instant::now() + WAIT;
        let mut hs = ClientHandshake::new(MAX_FRAME);
        let buffered = std::mem::take(self.framer.buffer_mut());
        let mut answer = hs.receive(&buffered);
        loop {
            if let Some(w) = answer? {
                self.peer_id = w.peer_id.clone();
                self.token = w.resume_token.clone();
                self.session = w.session_id;
                self.framer = hs.into_framer();
                return Ok(w);
            }
            match read_into(
                &mut self.s,
                &mut self.read_timeout,
                Some(deadline),
                hs.buffer_mut(),
            ) {
                Got::Data => answer = hs.poll(),
                Got::Eof => panic!("server closed the stream during the handshake"),
                Got::Reset => panic!("server reset the connection during the handshake"),
                Got::Timeout => panic!("no answer to Hello within {WAIT:?}"),
            }
        }
    }

    /// Encode `m` and write it as one frame (no size limit).
    pub fn send<M: Encode>(&mut self, m: &M) {
        self.out.clear();
        codec::encode(m, &mut self.out, u32::MAX).expect("encode");
        self.s.write_all(&self.out).expect("write");
    }

    /// Write raw bytes, ignoring errors (the server may already have closed on us: tests
    /// sending garbage check the answer, not the write).
    pub fn send_raw(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// The next frame within [`WAIT`]; `None` if the stream ended or nothing came in time
    /// (use [`recv_within`](Self::recv_within) to tell which).
    pub fn recv(&mut self) -> Option<Bytes> {
        self.recv_within(WAIT).frame()
    }

    /// The next frame within `t`, or how the wait ended.
    pub fn recv_within(&mut self, t: Duration) -> Recv {
        self.recv_by(Some(Instant::now() + t))
    }

    /// The next frame, waiting as long as it takes; panics if the stream ends. For benches
    /// and threads that serve until the server closes them.
    pub fn recv_blocking(&mut self) -> Bytes {
        match self.recv_by(None) {
            Recv::Frame(f) => f,
            other => panic!("server closed the connection ({other:?})"),
        }
    }

    fn recv_by(&mut self, deadline: Option<Instant>) -> Recv {
        loop {
            if let Some(f) = self.framer.next_frame().expect("server sent a valid frame") {
                return Recv::Frame(f);
            }
            match read_into(
                &mut self.s,
                &mut self.read_timeout,
                deadline,
                self.framer.buffer_mut(),
            ) {
                Got::Data => {}
                Got::Eof => return Recv::Eof,
                Got::Reset => return Recv::Reset,
                Got::Timeout => return Recv::Timeout,
            }
        }
    }

    /// Receive frames until one satisfies `f` (which returns `Some`), skipping the others
    /// (Pings, acks). Panics if the stream ends or a frame takes longer than [`WAIT`].
    pub fn recv_until<T>(&mut self, mut f: impl FnMut(Frame<'_>) -> Option<T>) -> T {
        loop {
            let b = match self.recv_within(WAIT) {
                Recv::Frame(b) => b,
                other => panic!("expected frame did not arrive: {other:?}"),
            };
            let frame = decode_bytes(&b).expect("server sent a decodable frame");
            if let Some(t) = f(frame) {
                return t;
            }
        }
    }

    /// Expect the server to send Close (or Reject) with `code`, then end the stream: frames
    /// before the Close are skipped; after it, the stream must end (EOF or reset) within
    /// [`WAIT`], with no further frame.
    pub fn expect_close(&mut self, code: Code) {
        let got = self.recv_until(|f| match f {
            Frame::Close(c) => Some(c.code.to_native()),
            Frame::Reject(r) => Some(r.code.to_native()),
            _ => None,
        });
        assert_eq!(Code::from_u16(got), Some(code), "close code {got}");
        self.expect_end(WAIT);
    }

    /// Expect the stream to end (EOF or reset) within `t`, with no frame before it.
    pub fn expect_end(&mut self, t: Duration) {
        match self.recv_within(t) {
            Recv::Eof | Recv::Reset => {}
            Recv::Frame(f) => panic!(
                "expected the stream to end, got a {:?} frame",
                decode_bytes(&f).map(|f| f.kind())
            ),
            Recv::Timeout => panic!("the stream did not end within {t:?}"),
        }
    }

    /// Call a server method and return the result, or (code, message).
    pub fn call(&mut self, id: u64, method: &str, params: &[u8]) -> Result<Vec<u8>, (u16, String)> {
        self.send(&codec::RpcRequest {
            id,
            method: method.into(),
            peer: None,
            timeout_ms: 0,
            params: params.into(),
        });
        self.recv_until(|f| call_answer(f, id))
    }

    /// Round-trip a Ping: everything the server queued before it has arrived. Returns the
    /// frames received before the Pong.
    pub fn sync(&mut self, nonce: u64) -> Vec<Bytes> {
        self.send(&codec::Ping { nonce });
        let mut before = Vec::new();
        loop {
            let b = match self.recv_within(WAIT) {
                Recv::Frame(b) => b,
                other => panic!("no Pong {nonce}: {other:?}"),
            };
            if let Frame::Pong(p) = decode_bytes(&b).expect("server sent a decodable frame") {
                if p.nonce.to_native() == nonce {
                    return before;
                }
            }
            before.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The kit against a scripted std-socket "server", so its own verdicts can be trusted:
    //! end of stream, reset and timeout are told apart, and a stream that stays open after
    //! Close fails the check.

    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    use peerd_codec::handshake::parse_hello;
    use peerd_codec::{Close, Limits, Ping, Reject, Welcome};

    use super::*;

    /// A one-connection server running `script` on the accepted socket.
    fn scripted(script: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || script(l.accept().unwrap().0));
        (addr, t)
    }

    /// Read the Hello off `s` and return the peer id it declared.
    fn read_hello(s: &mut TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some((h, _)) = parse_hello(&buf).unwrap() {
                return h.peer_id.map(str::to_string);
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "client closed before its Hello");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn welcome(id: &str) -> Bytes {
        frame(&Welcome {
            version: codec::PROTOCOL_VERSION,
            peer_id: id.into(),
            session_id: 7,
            resume_token: Cow::Borrowed(&[1, 2, 3]),
            limits: Limits {
                max_frame_len: 1 << 20,
                max_topics_per_peer: 1,
                max_members_per_topic: 1,
                max_topic_len: 1,
                outbound_queue_bytes: 1,
            },
            heartbeat_ms: 1000,
        })
    }

    #[test]
    fn handshake_keeps_frames_pipelined_after_welcome() {
        let (addr, t) = scripted(|mut s| {
            let id = read_hello(&mut s).unwrap();
            let mut both = welcome(&id).to_vec();
            both.extend_from_slice(&frame(&Ping { nonce: 5 }));
            s.write_all(&both).unwrap();
            s.write_all(&frame(&Close {
                code: Code::Normal.as_u16(),
                reason: "bye".into(),
            }))
            .unwrap();
        });
        let mut p = RawPeer::connect(addr, Some("alice"));
        assert_eq!((p.peer_id.as_str(), p.session), ("alice", 7));
        assert_eq!(p.token, vec![1, 2, 3]);
        let ping = p.recv().expect("the Ping sent with the Welcome");
        assert!(matches!(decode_bytes(&ping).unwrap(), Frame::Ping(_)));
        p.expect_close(Code::Normal);
        t.join().unwrap();
    }

    #[test]
    fn refused_handshake_is_an_error() {
        let (addr, t) = scripted(|mut s| {
            read_hello(&mut s);
            s.write_all(&frame(&Reject {
                code: Code::PeerIdTaken.as_u16(),
                reason: "taken".into(),
            }))
            .unwrap();
        });
        let mut p = RawPeer::tcp(addr);
        let err = p.handshake(&hello(Some("bob"), None)).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::Refused {
                code: Code::PeerIdTaken.as_u16(),
                reason: "taken".into()
            }
        );
        t.join().unwrap();
    }

    #[test]
    fn timeout_eof_and_frames_are_told_apart() {
        let (close_tx, close_rx) = mpsc::channel::<()>();
        let (addr, t) = scripted(move |mut s| {
            s.write_all(&frame(&Ping { nonce: 1 })).unwrap();
            // Hold the connection open until the client has seen a timeout.
            close_rx.recv().unwrap();
        });
        let mut p = RawPeer::tcp(addr);
        assert!(matches!(p.recv_within(WAIT), Recv::Frame(_)));
        assert_eq!(p.recv_within(Duration::from_millis(20)), Recv::Timeout);
        close_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(p.recv_within(WAIT), Recv::Eof);
    }

    #[test]
    fn reset_is_reported_as_the_end() {
        let (addr, t) = scripted(|s| {
            // Wait until the client's bytes are in our receive queue, then close without
            // reading them: the kernel answers with RST.
            s.peek(&mut [0u8; 1]).unwrap();
        });
        let mut p = RawPeer::tcp(addr);
        p.send_raw(b"unread");
        t.join().unwrap();
        let got = p.recv_within(WAIT);
        assert_eq!(got, Recv::Reset);
        assert!(got.is_end());
    }

    #[test]
    #[should_panic(expected = "did not end")]
    fn expect_end_fails_while_the_stream_stays_open() {
        let (_keep_open, rx) = mpsc::channel::<()>();
        let (addr, _t) = scripted(move |_s| {
            let _ = rx.recv();
        });
        let mut p = RawPeer::tcp(addr);
        p.expect_end(Duration::from_millis(20));
    }

    #[test]
    #[should_panic(expected = "expected the stream to end")]
    fn expect_end_fails_on_a_frame_after_close() {
        let (addr, _t) = scripted(|mut s| {
            s.write_all(&frame(&Close {
                code: Code::Normal.as_u16(),
                reason: "".into(),
            }))
            .unwrap();
            s.write_all(&frame(&Ping { nonce: 2 })).unwrap();
        });
        RawPeer::tcp(addr).expect_close(Code::Normal);
    }

    #[test]
    fn wait_until_polls_an_observable_condition() {
        let (tx, rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || tx.send(()).unwrap());
        let mut seen = false;
        wait_until("the message", || {
            seen |= rx.try_recv().is_ok();
            seen
        });
        t.join().unwrap();
    }
}
