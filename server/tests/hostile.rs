//! Hostile and careless peers (issue: hostile peers cost bounded memory and CPU): limits hold
//! on every path, relayed calls are bounded, Close frames arrive whole, partial frames must
//! make progress. Through real sockets on two shards.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use peerd_codec::{self as codec, Code, Frame};
use peerd_server::ListenOptions;

fn status(p: &mut RawPeer, req: u64) -> (u16, String) {
    p.recv_until(|f| match f {
        Frame::Status(s) if s.req.to_native() == req => {
            Some((s.code.to_native(), s.message.as_str().to_string()))
        }
        _ => None,
    })
}

#[test]
fn relayed_frames_never_exceed_the_limit_receivers_were_told() {
    let mut o = ListenOptions::new("127.0.0.1:0").shards(2);
    o.limits.max_frame_len = 4096;
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut sub = RawPeer::connect(addr, Some("subscriber"));
    sub.send(&codec::Join {
        req: 1,
        topic: "t".into(),
    });
    assert_eq!(status(&mut sub, 1).0, 0);
    let mut publisher = RawPeer::connect(addr, Some("a-publisher-with-a-long-peer-id"));
    // A Publish that fits the limit as sent, but not once the server adds the sender's id:
    // the publisher is told, the subscriber gets nothing larger than 4096 bytes.
    let payload = vec![7u8; 4096 - 40];
    let publish = codec::Publish {
        req: 2,
        topic: "t".into(),
        echo: false,
        payload: payload.as_slice().into(),
    };
    assert!(common::frame(&publish).len() - codec::HEADER_LEN <= 4096);
    publisher.send(&publish);
    let (code, why) = status(&mut publisher, 2);
    assert_eq!(Code::from_u16(code), Some(Code::TooLarge), "{why}");
    // Direct events and relayed calls obey the same rule.
    publisher.send(&codec::Event {
        name: "e".into(),
        peer: Some("subscriber".into()),
        payload: payload.as_slice().into(),
    });
    let (code, _) = status(&mut publisher, 0);
    assert_eq!(Code::from_u16(code), Some(Code::TooLarge));
    // The subscriber saw none of it, and a message that fits still flows.
    let small = codec::Publish {
        req: 3,
        topic: "t".into(),
        echo: false,
        payload: b"fits".as_slice().into(),
    };
    publisher.send(&small);
    assert_eq!(status(&mut publisher, 3).0, 0);
    let got = sub.recv_until(|f| match f {
        Frame::TopicMessage(m) => Some(m.payload.as_slice().to_vec()),
        Frame::Event(_) => panic!("an oversized direct event was delivered"),
        _ => None,
    });
    assert_eq!(got, b"fits");
}

#[test]
fn publish_checks_its_topic_name_like_join() {
    let srv = server(ListenOptions::new("127.0.0.1:0").shards(2));
    let mut p = RawPeer::connect(srv.local_addr().unwrap(), Some("p"));
    let long = "x".repeat(100_000);
    p.send(&codec::Publish {
        req: 1,
        topic: long.as_str().into(),
        echo: false,
        payload: b"".as_slice().into(),
    });
    assert_eq!(
        Code::from_u16(status(&mut p, 1).0),
        Some(Code::InvalidArgument)
    );
    // The connection is still usable.
    assert_eq!(
        p.call(2, "nope", b"").unwrap_err().0,
        Code::MethodNotFound.as_u16()
    );
}

#[test]
fn a_silent_connection_is_closed_with_handshake_timeout() {
    let mut o = ListenOptions::new("127.0.0.1:0").shards(1);
    o.handshake_timeout = Duration::from_millis(200);
    let srv = server(o);
    let mut p = RawPeer::tcp(srv.local_addr().unwrap());
    // docs/PROTOCOL.md §6.1: Close{handshake_timeout}, then the end of the stream.
    let f = p.recv().expect("a frame before the end");
    match codec::codec::decode_bytes(&f).unwrap() {
        Frame::Close(c) => assert_eq!(
            Code::from_u16(c.code.to_native()),
            Some(Code::HandshakeTimeout)
        ),
        other => panic!("expected Close, got {other:?}"),
    }
    let mut rest = Vec::new();
    p.s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(p.s.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn a_slow_consumer_gets_whole_frames_then_its_close() {
    let mut o = ListenOptions::new("127.0.0.1:0").shards(1);
    o.limits.outbound_queue_bytes = 256 * 1024;
    // Long enough for the test to read everything before the server gives up on it (so
    // not `server()`, which shortens the linger).
    o.close_linger = Duration::from_secs(10);
    o.pin = false;
    let srv = peerd_server::listen(o).expect("listen");
    let addr = srv.local_addr().unwrap();
    let mut slow = RawPeer::connect(addr, Some("slow"));
    slow.send(&codec::Join {
        req: 1,
        topic: "t".into(),
    });
    assert_eq!(status(&mut slow, 1).0, 0);
    let mut publisher = RawPeer::connect(addr, Some("pub"));
    // Odd-sized messages, so that the socket buffer fills in the middle of a frame.
    let payload = vec![1u8; 3001];
    let mut n = 0u64;
    while srv.connections().iter().any(|c| c.peer_id == "slow") {
        n += 1;
        assert!(n < 1_000_000, "the slow consumer was never cut");
        publisher.send(&codec::Publish {
            req: 0,
            topic: "t".into(),
            echo: false,
            payload: payload.as_slice().into(),
        });
        if n % 64 == 0 {
            publisher.sync(n);
        }
    }
    // Now read everything: every frame must be whole and valid (RawPeer panics on a bad
    // one), the last one the Close, then the end of the stream.
    let mut messages = 0;
    let code = slow.recv_until(|f| match f {
        Frame::TopicMessage(m) => {
            assert_eq!(m.payload.as_slice(), payload.as_slice());
            messages += 1;
            None
        }
        Frame::Close(c) => Some(c.code.to_native()),
        _ => None,
    });
    assert_eq!(Code::from_u16(code), Some(Code::SlowConsumer));
    assert!(messages > 0);
    slow.expect_end(WAIT);
}
