//! The fan-out floor: the least a server can do for a fan-out. Each publisher's bytes are
//! written unchanged to every subscriber, one blocking `write` per subscriber per read of
//! the publisher (what peerd does per delivery), with no protocol, no topics and no
//! queues. It runs on the echo floor's server ([`FloorServer`]): a thread per connection,
//! pinned to the server cores, the threads' CPU time reported as the server CPU.
//!
//! Framing is the floor adapter's ([`crate::adapter::floor`]): a connection whose first
//! frame is empty subscribes (and gets an empty frame back once it is on the list); any
//! other connection publishes. The server forwards whole frames only, so that two
//! publishers' messages never interleave inside one subscriber's stream; the payloads keep
//! the loadgen's stamps, so latency, sequence numbers and the slowest receiver are measured
//! as for any other server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::adapter::floor::{frames, MAX_LEN, SUBSCRIBE};
use crate::echo::FloorServer;

/// Start a fan-out floor on `127.0.0.1:0`, its threads pinned to `cores` (if any).
pub fn start(cores: Option<Vec<usize>>) -> Result<FloorServer> {
    let subs = Arc::new(Subscribers::default());
    FloorServer::start("floor-fanout", cores, Arc::new(move |c| subs.serve(c)))
}

/// Every subscriber's socket (a second handle; its own thread holds the first), under one
/// lock: a publisher holds it while it writes to them all, so whole frames reach each
/// subscriber in one piece even with several publishers.
#[derive(Default)]
struct Subscribers {
    list: Mutex<Vec<(u64, TcpStream)>>,
    next: AtomicU64,
}

impl Subscribers {
    fn serve(&self, mut conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        let mut end = 0;
        // The first frame's header says what the connection is.
        while end < 4 {
            match conn.read(&mut buf[end..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => end += n,
            }
        }
        if buf[..4] == SUBSCRIBE {
            self.subscriber(conn);
        } else {
            self.publisher(conn, buf, end);
        }
    }

    /// Put the connection on the list, confirm, then wait for it to close (its reads are
    /// discarded): the publishers write to it.
    fn subscriber(&self, mut conn: TcpStream) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let Ok(handle) = conn.try_clone() else { return };
            let mut list = self.list.lock().unwrap();
            // Confirmed under the lock: no publish can be written to it before this frame.
            if conn.write_all(&SUBSCRIBE).is_err() {
                return;
            }
            list.push((id, handle));
        }
        let mut sink = [0u8; 512];
        while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
        self.list.lock().unwrap().retain(|(i, _)| *i != id);
    }

    /// Read the publisher's stream and write every whole frame read to every subscriber;
    /// a subscriber whose write fails is dropped from the list.
    fn publisher(&self, mut conn: TcpStream, mut buf: Vec<u8>, mut end: usize) {
        loop {
            let Ok(whole) = frames(&buf[..end], |_| ()) else {
                return;
            };
            if whole > 0 {
                self.list
                    .lock()
                    .unwrap()
                    .retain_mut(|(_, s)| s.write_all(&buf[..whole]).is_ok());
                buf.copy_within(whole..end, 0);
                end -= whole;
            }
            if end == buf.len() {
                // One frame larger than the buffer: make room for all of it.
                let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
                buf.resize(4 + len.min(MAX_LEN), 0);
            }
            match conn.read(&mut buf[end..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => end += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn subscribe(addr: std::net::SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&SUBSCRIBE).unwrap();
        let mut ok = [1u8; 4];
        s.read_exact(&mut ok).unwrap();
        assert_eq!(ok, SUBSCRIBE);
        s
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn every_subscriber_gets_every_frame_whole_and_in_order() {
        let srv = start(None).unwrap();
        let mut subs: Vec<TcpStream> = (0..3).map(|_| subscribe(srv.addr())).collect();
        let mut publisher = TcpStream::connect(srv.addr()).unwrap();
        // A frame split over two writes, then two frames in one write, then one bigger
        // than the server's first buffer.
        let big = vec![7u8; 100 * 1024];
        let want: Vec<u8> = [
            frame(b"first"),
            frame(b"second"),
            frame(b"third"),
            frame(&big),
        ]
        .concat();
        publisher.write_all(&want[..3]).unwrap();
        publisher.write_all(&want[3..9]).unwrap();
        publisher.write_all(&want[9..]).unwrap();
        for s in &mut subs {
            let mut got = vec![0u8; want.len()];
            s.read_exact(&mut got).unwrap();
            assert!(got == want, "a subscriber got other bytes");
        }
        // Dropping the server ends the connections it still serves.
        drop(srv);
        let mut rest = Vec::new();
        assert!(matches!(subs[0].read_to_end(&mut rest), Ok(0) | Err(_)));
    }
}
