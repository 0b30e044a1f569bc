//! Per-peer rate limits (docs/PROTOCOL.md §6.9) through real sockets: frames over the limit
//! are refused with rate_limited and not acted on, a peer within its limit is untouched, and
//! a peer that stays over its limit is closed.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use peerd_codec::codec::decode_bytes;
use peerd_codec::{self as codec, Code, Frame};
use peerd_server::{ListenOptions, PeerServer, RateLimit};

/// One shard, so a delivery to a member is queued before the publisher's Status (§6.4) and a
/// member's Ping after the last Status sees every delivery.
fn limited(frames_per_sec: u32, close_after: Duration) -> PeerServer {
    let mut opts = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(1)
        .handle("echo", |_peer, req| async move { Ok(req.params) });
    let mut r = RateLimit::new(frames_per_sec, u64::MAX / 4);
    r.close_after = close_after;
    opts.limits.rate_limit = Some(r);
    server(opts)
}

fn publish(req: u64) -> codec::Publish<'static> {
    codec::Publish {
        req,
        topic: "t".into(),
        echo: false,
        payload: b"flood"[..].into(),
    }
}

fn join(p: &mut RawPeer, req: u64) {
    p.send(&codec::Join {
        req,
        topic: "t".into(),
    });
    let code = p.recv_until(|f| match f {
        Frame::Status(s) if s.req.to_native() == req => Some(s.code.to_native()),
        _ => None,
    });
    assert_eq!(code, 0);
}

#[test]
fn over_the_limit_one_frame_is_refused_and_the_rest_are_shaped_to_the_rate() {
    let srv = limited(20, Duration::from_secs(10));
    let addr = srv.local_addr().unwrap();
    let mut member = RawPeer::connect(addr, Some("member"));
    join(&mut member, 1);
    let mut flooder = RawPeer::connect(addr, Some("flooder"));
    join(&mut flooder, 1);
    // 60 publishes in one write: the bucket holds 20 (the Join took one).
    let mut burst = Vec::new();
    for req in 2..62 {
        burst.extend_from_slice(&frame(&publish(req)));
    }
    let started = Instant::now();
    flooder.send_raw(&burst);
    let mut refused = Vec::new();
    let mut ok = 0;
    while ok + refused.len() < 60 {
        flooder.recv_until(|f| match f {
            Frame::Status(s) => {
                match Code::from_u16(s.code.to_native()) {
                    Some(Code::Ok) => ok += 1,
                    Some(Code::RateLimited) => refused.push(s.req.to_native()),
                    other => panic!("unexpected status {other:?}"),
                }
                Some(())
            }
            _ => None,
        });
    }
    // The first frame over the limit (the 20th publish: req 21) is refused; the 40 after it
    // waited for their tokens, at 20 a second.
    assert_eq!(refused, [21], "{ok} ok");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "40 frames over a 20/s limit went through in {took:?}"
    );
    // The refused one was not acted on; every other one was delivered.
    let before_pong = member.sync(7);
    let delivered = before_pong
        .iter()
        .filter(|b| matches!(decode_bytes(b), Ok(Frame::TopicMessage(_))))
        .count();
    assert_eq!(delivered, 59);
    // The refusal is counted for /metrics.
    let hits: u64 = srv
        .metrics()
        .unwrap()
        .shards
        .iter()
        .map(|s| s.rate_limit_hits)
        .sum();
    assert_eq!(hits, 1);
}

#[test]
fn a_call_over_the_limit_gets_rpc_error_rate_limited_and_a_calm_peer_is_untouched() {
    let srv = limited(10, Duration::from_secs(10));
    let addr = srv.local_addr().unwrap();
    let mut calm = RawPeer::connect(addr, Some("calm"));
    let mut greedy = RawPeer::connect(addr, Some("greedy"));
    // The greedy peer asks for three times its bucket at once.
    let mut burst = Vec::new();
    for id in 1..=30u64 {
        burst.extend_from_slice(&frame(&codec::RpcRequest {
            id,
            method: "echo".into(),
            peer: None,
            timeout_ms: 0,
            params: b"x"[..].into(),
        }));
    }
    greedy.send_raw(&burst);
    // While it is being held back, the calm peer's own bucket is full: its calls go through.
    for id in 1..=5 {
        assert_eq!(calm.call(id, "echo", b"hi").expect("calm call"), b"hi");
    }
    let mut refused = Vec::new();
    for _ in 0..30 {
        greedy.recv_until(|f| match f {
            Frame::RpcResponse(_) => Some(()),
            Frame::RpcError(e) => {
                assert_eq!(e.code.to_native(), Code::RateLimited.as_u16());
                refused.push(e.id.to_native());
                Some(())
            }
            _ => None,
        });
    }
    assert_eq!(refused, [11], "the first call over the bucket of 10");
}

#[test]
fn a_peer_that_stays_over_its_limit_is_closed_with_rate_limited() {
    let srv = limited(50, Duration::from_millis(500));
    let addr = srv.local_addr().unwrap();
    let mut flooder = RawPeer::connect(addr, Some("flooder"));
    // Publishes without a req: refused ones are not answered one by one.
    let mut chunk = Vec::new();
    for _ in 0..200 {
        chunk.extend_from_slice(&frame(&publish(0)));
    }
    let mut writer = flooder.s.try_clone().expect("clone the socket");
    let deadline = Instant::now() + Duration::from_secs(10);
    let flood = std::thread::spawn(move || {
        // Until the server closes us (a write fails) or the bound passes.
        while Instant::now() < deadline && writer.write_all(&chunk).is_ok() {}
    });
    let started = Instant::now();
    flooder.expect_close(Code::RateLimited);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "closed after {took:?} (close_after 500 ms)"
    );
    flood.join().unwrap();
}

#[test]
fn every_call_of_a_throttled_peer_gets_exactly_one_answer() {
    let srv = limited(100, Duration::from_secs(30));
    let addr = srv.local_addr().unwrap();
    let mut p = RawPeer::connect(addr, Some("steady"));
    let mut writer = p.s.try_clone().expect("clone the socket");
    const N: u64 = 300;
    // 300 calls at about 1000/s, ten times the limit, paced rather than in one write, so
    // they arrive while the reader is held back, between its reads, and in split reads.
    let pace = std::thread::spawn(move || {
        for chunk in (1..=N).collect::<Vec<_>>().chunks(5) {
            let mut b = Vec::new();
            for &id in chunk {
                b.extend_from_slice(&frame(&codec::RpcRequest {
                    id,
                    method: "echo".into(),
                    peer: None,
                    timeout_ms: 0,
                    params: b"x"[..].into(),
                }));
            }
            writer.write_all(&b).expect("write");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut answered = vec![0u32; N as usize + 1];
    let mut seen = 0;
    while seen < N {
        let id = p.recv_until(|f| match f {
            Frame::RpcResponse(r) => Some(r.id.to_native()),
            Frame::RpcError(e) => Some(e.id.to_native()),
            _ => None,
        });
        answered[id as usize] += 1;
        seen += 1;
    }
    pace.join().unwrap();
    let twice: Vec<_> = (1..=N).filter(|&i| answered[i as usize] != 1).collect();
    assert!(twice.is_empty(), "ids not answered exactly once: {twice:?}");
}
