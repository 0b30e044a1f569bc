//! Both receive paths deliver every byte whole and in order, over TCP, WebSocket and TLS:
//! glommio's read per wakeup (the default), and one multishot receive per connection through
//! the shard's io_uring (`ListenOptions::ring_receives = true`, experimental). Each test runs
//! both and checks through the server's counters which one it got.
//!
//! The ring's corners: more bytes sent at once by a crowd than the shard's provided buffers
//! hold (receives may end with ENOBUFS and be armed again), a frame spanning many buffers,
//! and a burst far past what a connection may hold undispatched (its receive is paused and
//! resumed, many times).

mod transport;

use std::io::Write;
use std::sync::mpsc;
use std::thread;

use peerd_codec::{self as codec, Frame};
use peerd_server::{PeerServer, ShardMetrics};
use transport::*;

/// Connections of the crowd: with 4 KiB each, more than the shard's 1 MiB of provided
/// buffers.
const CROWD: usize = 300;

fn servers(ring: bool) -> Servers {
    server(1, |o| o.ring_receives = ring)
}

/// Which path the server read through, by its counters of receives armed on the ring and
/// of connections parked: at least `at_least` receives armed with the ring, and nothing
/// parked (its connections keep no glommio stream to park); without it, no receive armed
/// and at least `at_least` connections parked (each after its handshake).
fn assert_path(srv: &PeerServer, ring: bool, at_least: u64) {
    let arms = total(srv, |s| s.receive_ring_arms);
    let parks = total(srv, |s| s.receive_parks);
    if ring {
        assert!(
            arms >= at_least,
            "{arms} receives armed, expected {at_least} or more"
        );
        assert_eq!(parks, 0, "{parks} connections parked on the receive ring");
    } else {
        assert_eq!(arms, 0, "ring receives turned off, yet {arms} armed");
        assert!(
            parks >= at_least,
            "{parks} connections parked, expected {at_least} or more"
        );
    }
}

/// `id`'s call, as bytes a peer on `kind` writes (one WebSocket message on `ws://`).
fn call(kind: Kind, id: u64, params: &[u8]) -> Vec<u8> {
    let f = peerd_testkit::frame(&codec::RpcRequest {
        id,
        method: "echo".into(),
        peer: None,
        timeout_ms: 5000,
        params: params.into(),
    });
    match kind {
        Kind::Ws | Kind::Wss => {
            let mut v = Vec::new();
            peerd_ws::frame::write_masked_frame(
                peerd_ws::frame::Opcode::Binary,
                true,
                &f,
                peerd_ws::random_mask(),
                &mut v,
            );
            v
        }
        _ => f.to_vec(),
    }
}

fn answer(p: &mut Peer, id: u64) -> Vec<u8> {
    p.recv_until(|f| peerd_testkit::call_answer(f, id))
        .unwrap_or_else(|e| panic!("{}: call {id} failed: {e:?}", p.peer_id))
}

fn crowd(ring: bool) {
    let s = servers(ring);
    let mut peers: Vec<(Kind, Peer)> = (0..CROWD)
        .map(|i| {
            let kind = [Kind::Tcp, Kind::Ws, Kind::Tls, Kind::Wss][i % 4];
            (kind, s.peer(kind, &format!("p{i}")))
        })
        .collect();
    // Every peer's call is written before any answer is read: the shard finds them all
    // waiting at once.
    for (i, (kind, p)) in peers.iter_mut().enumerate() {
        let params = vec![i as u8; 4000 + i];
        p.write(&call(*kind, i as u64, &params));
    }
    for (i, (_, p)) in peers.iter_mut().enumerate() {
        assert_eq!(answer(p, i as u64), vec![i as u8; 4000 + i], "peer {i}");
    }
    // And every connection still reads after that.
    for (i, (_, p)) in peers.iter_mut().enumerate() {
        p.echo(10_000 + i as u64, b"again");
    }
    // One per connection at least.
    assert_path(&s.srv, ring, CROWD as u64);
}

#[test]
fn a_crowd_larger_than_the_provided_buffers_is_answered_whole_through_the_ring() {
    crowd(true);
}

#[test]
fn a_crowd_is_answered_whole_through_glommio() {
    crowd(false);
}

fn large_frame(ring: bool) {
    let s = servers(ring);
    for kind in [Kind::Tcp, Kind::Ws, Kind::Tls, Kind::Wss] {
        let mut p = s.peer(kind, &format!("large-{kind:?}"));
        // 600 KiB: many provided buffers' worth, and many pooled receive buffers' worth
        // (the frame's buffer grows as its bytes come).
        let params: Vec<u8> = (0..600 * 1024u32).map(|i| (i % 251) as u8).collect();
        p.write(&call(kind, 1, &params));
        assert!(answer(&mut p, 1) == params, "{kind:?}: the answer differs");
        p.echo(2, b"after");
    }
}

#[test]
fn a_frame_spanning_many_provided_buffers_arrives_whole_through_the_ring() {
    large_frame(true);
}

#[test]
fn a_frame_larger_than_a_receive_buffer_arrives_whole_through_glommio() {
    large_frame(false);
}

/// Peers that each keep a large frame half sent.
const HALF_SENT: usize = 60;

/// `HALF_SENT` peers (every transport) each send half of a 256 KiB call and stop there,
/// while another peer calls: it is answered every time, and each half-sent call, once its
/// peer completes it, is answered whole. Through the ring a connection gets only a small
/// share of the shard's provided buffers: the rest of a large frame is read directly from
/// its socket in its reader's turn (counted), never by keeping the shared buffers, which a
/// crowd of such peers once kept empty for everyone (issue 14, 8 s per call).
fn half_sent(ring: bool) {
    let s = servers(ring);
    let mut crowd: Vec<(Kind, Peer, Vec<u8>, Vec<u8>)> = (0..HALF_SENT)
        .map(|i| {
            let kind = [Kind::Tcp, Kind::Ws, Kind::Tls, Kind::Wss][i % 4];
            let params: Vec<u8> = (0..256 * 1024u32).map(|b| (b as usize + i) as u8).collect();
            let bytes = call(kind, i as u64, &params);
            (kind, s.peer(kind, &format!("half{i}")), bytes, params)
        })
        .collect();
    for (_, p, bytes, _) in crowd.iter_mut() {
        p.write(&bytes[..bytes.len() / 2]);
    }
    let mut caller = s.peer(Kind::Tcp, "caller");
    for n in 0..200 {
        caller.echo(n, b"in turn");
    }
    for (i, (kind, p, bytes, params)) in crowd.iter_mut().enumerate() {
        p.write(&bytes[bytes.len() / 2..]);
        assert!(
            answer(p, i as u64) == *params,
            "{kind:?} peer {i}: the answer differs"
        );
    }
    assert_path(&s.srv, ring, HALF_SENT as u64 + 1);
    let direct = total(&s.srv, |s| s.receive_ring_direct_reads);
    if ring {
        // Each half is 32 times the share: most connections must have been read directly.
        assert!(
            direct >= HALF_SENT as u64 / 2,
            "{direct} direct reads for {HALF_SENT} half-sent frames"
        );
    } else {
        assert_eq!(direct, 0, "direct reads counted without the ring");
    }
}

#[test]
fn half_sent_large_frames_take_a_small_share_of_the_ring() {
    half_sent(true);
}

#[test]
fn half_sent_large_frames_leave_other_callers_answered_through_glommio() {
    half_sent(false);
}

const BURST: u32 = 3000;

/// A publisher writes `BURST` 1 KiB publishes in one go, from its own thread (3 MiB, far
/// past the 32 KiB a connection may hold undispatched), while a member reads them: all
/// arrive, in order.
fn burst(ring: bool, kind: Kind) {
    let s = servers(ring);
    let mut member = s.peer(Kind::Tcp, "member");
    member.join(1, "t");
    let mut publisher = s.peer(kind, "publisher");
    let mut bytes = Vec::new();
    for n in 0..BURST {
        let mut payload = vec![(n % 256) as u8; 1024];
        payload[..4].copy_from_slice(&n.to_le_bytes());
        let f = peerd_testkit::frame(&codec::Publish {
            req: 0,
            topic: "t".into(),
            payload: payload.as_slice().into(),
            echo: false,
        });
        match kind {
            Kind::Ws | Kind::Wss => peerd_ws::frame::write_masked_frame(
                peerd_ws::frame::Opcode::Binary,
                true,
                &f,
                peerd_ws::random_mask(),
                &mut bytes,
            ),
            _ => bytes.extend_from_slice(&f),
        }
    }
    let (done, written) = mpsc::channel();
    let writer = thread::spawn(move || {
        publisher.io.write_all(&bytes).expect("write the burst");
        publisher.io.flush().expect("flush");
        done.send(()).unwrap();
        publisher
    });
    for n in 0..BURST {
        let got = member.recv_until(|f| match f {
            Frame::TopicMessage(m) => Some(m.payload.to_vec()),
            _ => None,
        });
        assert_eq!(got.len(), 1024, "message {n}");
        assert_eq!(
            u32::from_le_bytes(got[..4].try_into().unwrap()),
            n,
            "out of order (ring: {ring}, {kind:?})"
        );
    }
    written.recv().unwrap();
    let mut publisher = writer.join().unwrap();
    publisher.echo(1, b"still here");
    // The member's and the publisher's.
    assert_path(&s.srv, ring, 2);
}

#[test]
fn a_burst_past_what_a_connection_may_hold_arrives_in_order_through_the_ring() {
    burst(true, Kind::Tcp);
    burst(true, Kind::Ws);
}

#[test]
fn a_tls_burst_past_what_a_connection_may_hold_arrives_in_order_through_the_ring() {
    burst(true, Kind::Tls);
    burst(true, Kind::Wss);
}

#[test]
fn a_burst_arrives_in_order_through_glommio() {
    burst(false, Kind::Tcp);
    burst(false, Kind::Ws);
    burst(false, Kind::Tls);
}

/// Peers that each hold the start of a call.
const WAITING: usize = 100;

/// One of the server's per-shard metrics, summed over its shards.
fn total(srv: &PeerServer, metric: impl Fn(&ShardMetrics) -> u64) -> u64 {
    let m = srv.metrics().expect("metrics");
    m.shards.iter().map(metric).sum()
}

/// Poll `metric`'s total (bounded) until `done` holds of it; its last value.
fn poll_total(
    srv: &PeerServer,
    metric: impl Fn(&ShardMetrics) -> u64,
    done: impl Fn(u64) -> bool,
) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = total(srv, &metric);
        if done(now) || std::time::Instant::now() >= deadline {
            return now;
        }
        thread::yield_now();
    }
}

/// `WAITING` peers each send the first half of a small call and stop, so each holds its
/// half in a receive buffer until the rest comes, as a crowd of busy connections each holds
/// its bytes while their readers wait their turn. Through glommio a read takes a pooled
/// 32 KiB buffer (`per_conn`); through the ring, whose bytes wait for the reader, a 4 KiB
/// one (5,000 pipelining peers held 96 MiB of 32 KiB buffers, a request or two in each).
/// Then each sends the rest and is answered, and every buffer goes back.
fn waiting(ring: bool, per_conn: u64) {
    let s = servers(ring);
    let params: Vec<Vec<u8>> = (0..WAITING).map(|i| vec![i as u8; 100]).collect();
    let mut crowd: Vec<(Peer, Vec<u8>)> = (0..WAITING)
        .map(|i| {
            let bytes = call(Kind::Tcp, i as u64, &params[i]);
            (s.peer(Kind::Tcp, &format!("waiting{i}")), bytes)
        })
        .collect();
    if ring {
        // Bytes that come before a connection's receive is armed are read directly, as a
        // flood's are (into a pooled buffer): wait until every receive is in the kernel.
        let arms = poll_total(&s.srv, |s| s.receive_ring_arms, |a| a >= WAITING as u64);
        assert!(
            arms >= WAITING as u64,
            "{arms} receives armed, expected {WAITING}"
        );
    }
    for (p, bytes) in crowd.iter_mut() {
        p.write(&bytes[..bytes.len() / 2]);
    }
    let want = WAITING as u64 * per_conn;
    let held = poll_total(&s.srv, |s| s.receive_buffer_bytes, |b| b >= want);
    assert_eq!(
        held, want,
        "{WAITING} half-sent calls hold {held} bytes of receive buffer, expected {per_conn} each"
    );
    for (i, (p, bytes)) in crowd.iter_mut().enumerate() {
        p.write(&bytes[bytes.len() / 2..]);
        assert!(
            answer(p, i as u64) == params[i],
            "call {i}: the answer differs"
        );
    }
    let kept = poll_total(&s.srv, |s| s.receive_buffer_bytes, |b| b == 0);
    assert_eq!(kept, 0, "receive buffers kept");
    assert_path(&s.srv, ring, WAITING as u64);
}

#[test]
fn bytes_waiting_for_their_reader_take_a_small_buffer_through_the_ring() {
    waiting(true, 4 * 1024);
}

#[test]
fn bytes_read_through_glommio_take_a_pooled_buffer() {
    waiting(false, 32 * 1024);
}

/// Wait (bounded) until the server counts `n` peers.
fn peers_become(srv: &PeerServer, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = srv.metrics().expect("metrics").peers;
        if now == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{now} peers, expected {n}"
        );
        thread::yield_now();
    }
}

/// The ends of a TLS session that the receive side meets: the peer's close_notify, and a
/// record that does not decrypt (a forged one, written past rustls on the raw socket; the
/// server answers with an alert). Each ends that connection alone.
fn tls_ends(ring: bool) {
    let s = servers(ring);
    let mut other = s.peer(Kind::Tls, "other");

    let mut leaving = s.peer(Kind::Tls, "leaving");
    leaving.echo(1, b"before");
    leaving.io.close_notify();
    leaving.frames_until_end();
    peers_become(&s.srv, 1);

    let mut forger = s.peer(Kind::Tls, "forger");
    forger.echo(1, b"before");
    let mut raw = forger.io.tcp().try_clone().unwrap();
    // An application-data record of TLS 1.2/1.3 whose contents are no encryption at all.
    raw.write_all(&[0x17, 0x03, 0x03, 0x00, 0x20])
        .and_then(|_| raw.write_all(&[0x5a; 0x20]))
        .expect("write the forged record");
    assert!(
        forger.frames_until_end().is_empty(),
        "frames after a forged record"
    );
    peers_become(&s.srv, 1);

    other.echo(2, b"still here");
    // The three TLS connections'.
    assert_path(&s.srv, ring, 3);
}

#[test]
fn tls_close_notify_and_a_forged_record_end_only_their_session_through_the_ring() {
    tls_ends(true);
}

#[test]
fn tls_close_notify_and_a_forged_record_end_only_their_session_through_glommio() {
    tls_ends(false);
}

// Parking: with receives through glommio (the default), a connection waits on a multishot
// poll in the shard's own io_uring instead of glommio's readiness poll, from the end of its
// handshake on (the `receiver` module doc). The idle-close tests in `server_core.rs` close
// parked connections (their polls are cancelled before the close linger).

const KINDS: [Kind; 4] = [Kind::Tcp, Kind::Ws, Kind::Tls, Kind::Wss];

/// Each connection is parked once its handshake is over, and stays parked busy or not: its
/// requests, one after another, wake it through its poll in the shard's ring and are all
/// answered (the poll is armed once: `uring`'s tests). Every transport.
#[test]
fn silent_connections_are_parked_and_busy_ones_are_answered_through_their_poll() {
    let s = servers(false);
    let mut peers: Vec<(Kind, Peer)> = KINDS
        .iter()
        .map(|&k| (k, s.peer(k, &format!("parked-{k:?}"))))
        .collect();
    let parks = poll_total(&s.srv, |m| m.receive_parks, |n| n >= 4);
    assert_eq!(parks, 4, "one park per connection, after its handshake");
    for (kind, p) in peers.iter_mut() {
        for n in 0..20 {
            p.echo(n, format!("{kind:?} {n}").as_bytes());
        }
    }
    assert_eq!(total(&s.srv, |m| m.receive_parks), 4, "parked once each");
    assert_path(&s.srv, false, 4);
}

/// A parked connection answers the heartbeat's Pings through its poll (one read per
/// interval) and is answered after that; nothing parks it twice. Every transport,
/// heartbeat 400 ms.
#[test]
fn a_parked_connection_answers_heartbeats_and_is_answered_after() {
    let s = server(1, |o| o.heartbeat = std::time::Duration::from_millis(400));
    let mut peers: Vec<(Kind, Peer)> = KINDS
        .iter()
        .map(|&k| (k, s.peer(k, &format!("beat-{k:?}"))))
        .collect();
    for (_, p) in peers.iter_mut() {
        for n in 0..5 {
            p.echo(n, b"busy");
        }
    }
    // Silent now: pinged after an interval. The first two Pings are answered; the third
    // shows the second Pong was read (the peer is not closed for silence).
    for round in 0..3 {
        for (_, p) in peers.iter_mut() {
            let nonce = p.recv_until(|f| match f {
                Frame::Ping(ping) => Some(u64::from(ping.nonce)),
                _ => None,
            });
            if round < 2 {
                p.send(&codec::Pong { nonce });
            }
        }
    }
    assert_eq!(total(&s.srv, |m| m.receive_parks), 4, "parked once each");
    for (_, p) in peers.iter_mut() {
        p.echo(100, b"still answered");
    }
}

/// A parked peer that sends a frame and leaves at once is let go. Its socket is corked,
/// so the frame and the end of its stream leave in one segment and the server's poll
/// reports both in one completion: after the read that takes the bytes, the reader must
/// read on until a read reports the end, for no completion comes for it again (this hung
/// the peer until the drain's grace ran out). Every transport, 20 peers each.
#[test]
fn a_parked_peer_that_sends_and_leaves_at_once_is_let_go() {
    use std::os::fd::AsRawFd;
    let s = servers(false);
    for kind in KINDS {
        for i in 0..20 {
            let mut p = s.peer(kind, &format!("leaver-{kind:?}-{i}"));
            p.echo(0, b"parked");
            let on: libc::c_int = 1;
            // SAFETY: setsockopt on the peer's own socket, with an int option.
            let r = unsafe {
                libc::setsockopt(
                    p.io.tcp().as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_CORK,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "TCP_CORK");
            // A frame with no answer: an answer would meet the closed socket, and the
            // reset that comes back would wake the poll again.
            p.send(&codec::Pong { nonce: 7 });
        }
    }
    peers_become(&s.srv, 0);
    assert_path(&s.srv, false, 4 * 20);
}

/// `--no-park-idle`: nothing is parked, and every transport is answered as before.
#[test]
fn with_parking_turned_off_no_connection_is_parked() {
    let s = server(1, |o| o.park_idle = false);
    for kind in KINDS {
        let mut p = s.peer(kind, &format!("unparked-{kind:?}"));
        for n in 0..3 {
            p.echo(n, b"through glommio's polls");
        }
    }
    assert_eq!(total(&s.srv, |m| m.receive_parks), 0);
}
