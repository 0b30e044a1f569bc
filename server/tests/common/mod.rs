//! A raw protocol peer for integration tests: std sockets and the codec, nothing else, so
//! server tests exercise the real wire and do not depend on the client crate.
#![allow(dead_code)]

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerd_codec::{self as codec, Encode, Frame, Framer};
use peerd_server::{listen, ListenOptions, PeerServer};

pub fn server(opts: ListenOptions) -> PeerServer {
    let mut opts = opts;
    opts.endpoint = peerd_server::Endpoint::Tcp("127.0.0.1:0".into());
    // Tests run in parallel on a small machine; do not pin every test's shards.
    opts.pin = false;
    listen(opts).expect("listen")
}

pub fn hello(peer_id: Option<&str>, resume: Option<&[u8]>) -> codec::Hello<'static> {
    codec::Hello {
        version: codec::PROTOCOL_VERSION,
        peer_id: peer_id.map(|s| Cow::Owned(s.to_string())),
        credentials: None,
        resume_token: resume.map(|t| Cow::Owned(t.to_vec())),
        client: Cow::Borrowed("raw-test"),
    }
}

pub fn frame<M: Encode>(m: &M) -> Bytes {
    let mut b = BytesMut::new();
    codec::encode(m, &mut b, u32::MAX).unwrap();
    b.freeze()
}

pub struct RawPeer {
    pub s: TcpStream,
    framer: Framer,
    pub peer_id: String,
    pub token: Vec<u8>,
    pub session: u64,
}

impl RawPeer {
    /// Connect without handshaking.
    pub fn tcp(addr: SocketAddr) -> RawPeer {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        RawPeer {
            s,
            framer: Framer::new(64 << 20),
            peer_id: String::new(),
            token: Vec::new(),
            session: 0,
        }
    }

    /// Connect and complete the handshake, panicking on Reject.
    pub fn connect(addr: SocketAddr, id: Option<&str>) -> RawPeer {
        let mut p = RawPeer::tcp(addr);
        p.send(&hello(id, None));
        p.expect_welcome();
        p
    }

    pub fn expect_welcome(&mut self) {
        let f = self.recv().expect("a reply to Hello");
        match codec::codec::decode_bytes(&f).unwrap() {
            Frame::Welcome(w) => {
                self.peer_id = w.peer_id.as_str().to_string();
                self.token = w.resume_token.as_slice().to_vec();
                self.session = w.session_id.to_native();
            }
            Frame::Reject(r) => panic!("rejected: {} {}", r.code.to_native(), r.reason.as_str()),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn send<M: Encode>(&mut self, m: &M) {
        self.s.write_all(&frame(m)).expect("write");
    }

    pub fn send_raw(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// Next frame within 5 s; `None` on EOF or timeout.
    pub fn recv(&mut self) -> Option<Bytes> {
        self.recv_within(Duration::from_secs(5))
    }

    pub fn recv_within(&mut self, t: Duration) -> Option<Bytes> {
        let deadline = Instant::now() + t;
        loop {
            if let Some(f) = self.framer.next_frame().expect("server sent a valid frame") {
                return Some(f);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 16384];
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.framer.extend(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// Receive frames until one satisfies `f` (which returns Some), skipping Pings.
    pub fn recv_until<T>(&mut self, mut f: impl FnMut(Frame<'_>) -> Option<T>) -> T {
        loop {
            let b = self.recv().expect("expected frame did not arrive");
            let frame = codec::codec::decode_bytes(&b).unwrap();
            if let Some(t) = f(frame) {
                return t;
            }
        }
    }

    /// Expect the server to send Close (or Reject) with `code`, then end the stream.
    pub fn expect_close(&mut self, code: codec::Code) {
        let got = self.recv_until(|f| match f {
            Frame::Close(c) => Some(c.code.to_native()),
            Frame::Reject(r) => Some(r.code.to_native()),
            _ => None,
        });
        assert_eq!(codec::Code::from_u16(got), Some(code), "close code {got}");
        assert!(
            self.recv_within(Duration::from_secs(5)).is_none(),
            "stream ends after Close"
        );
    }

    /// Call a server method and return the result (or (code, message)).
    pub fn call(&mut self, id: u64, method: &str, params: &[u8]) -> Result<Vec<u8>, (u16, String)> {
        self.send(&codec::RpcRequest {
            id,
            method: method.into(),
            peer: None,
            timeout_ms: 0,
            params: params.into(),
        });
        self.recv_until(|f| match f {
            Frame::RpcResponse(r) if r.id.to_native() == id => {
                Some(Ok(r.result.as_slice().to_vec()))
            }
            Frame::RpcError(e) if e.id.to_native() == id => {
                Some(Err((e.code.to_native(), e.message.as_str().to_string())))
            }
            _ => None,
        })
    }

    /// Round-trip a Ping: everything the server queued before it has arrived.
    pub fn sync(&mut self, nonce: u64) -> Vec<Bytes> {
        self.send(&codec::Ping { nonce });
        let mut before = Vec::new();
        loop {
            let b = self.recv().expect("pong");
            if let Frame::Pong(p) = codec::codec::decode_bytes(&b).unwrap() {
                if p.nonce.to_native() == nonce {
                    return before;
                }
            }
            before.push(b);
        }
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
