//! End-to-end latency benches for `cargo bench -p peerd-benches` (see `benches/e2e.rs`).
//!
//! # Layout
//!
//! - [`wire`]: a minimal blocking peer over std sockets and the codec, so the measurement
//!   includes only the kernel, the server and the codec, not a client library's threads.
//! - [`report`]: percentile lines from an HdrHistogram.

pub mod wire {
    use std::borrow::Cow;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use bytes::{Bytes, BytesMut};
    use peerd_codec::{self as codec, Encode, Frame, Framer};

    /// A handshaken blocking connection.
    pub struct Wire {
        s: TcpStream,
        framer: Framer,
        out: BytesMut,
        /// The peer id the server gave us.
        pub peer_id: String,
    }

    impl Wire {
        /// Connect and handshake as `id`.
        pub fn connect(addr: SocketAddr, id: &str) -> Wire {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nodelay(true).unwrap();
            let mut w = Wire {
                s,
                framer: Framer::new(64 << 20),
                out: BytesMut::with_capacity(64 << 10),
                peer_id: String::new(),
            };
            w.send(&codec::Hello {
                version: codec::PROTOCOL_VERSION,
                peer_id: Some(Cow::Borrowed(id)),
                credentials: None,
                resume_token: None,
                client: Cow::Borrowed("peerd-bench"),
            });
            let f = w.recv();
            match codec::codec::decode_bytes(&f).unwrap() {
                Frame::Welcome(x) => w.peer_id = x.peer_id.as_str().to_string(),
                other => panic!("handshake: {other:?}"),
            }
            w
        }

        /// Encode and write one frame.
        pub fn send<M: Encode>(&mut self, m: &M) {
            self.out.clear();
            codec::encode(m, &mut self.out, u32::MAX).unwrap();
            self.s.write_all(&self.out).unwrap();
        }

        /// Block for the next frame.
        pub fn recv(&mut self) -> Bytes {
            loop {
                if let Some(f) = self.framer.next_frame().unwrap() {
                    return f;
                }
                let mut buf = [0u8; 65536];
                let n = self.s.read(&mut buf).unwrap();
                assert!(n > 0, "server closed");
                self.framer.extend(&buf[..n]);
            }
        }
    }
}

pub mod report {
    use hdrhistogram::Histogram;

    /// One line: sample count and p50/p90/p99/p99.9/p99.99/max in microseconds.
    pub fn line(name: &str, h: &Histogram<u64>) -> String {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{name:<34} n={:<8} p50={:>7.1}us p90={:>7.1}us p99={:>7.1}us p99.9={:>7.1}us p99.99={:>7.1}us max={:>8.1}us",
            h.len(),
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            us(0.9999),
            h.max() as f64 / 1000.0
        )
    }
}
