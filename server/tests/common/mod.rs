//! Shared set-up for the server's integration tests: a server on `127.0.0.1:0`, and the raw
//! protocol peer from peerd-testkit (std sockets and the codec, nothing else, so these tests
//! exercise the real wire and do not depend on the client crate).
#![allow(dead_code, unused_imports)]

use peerd_codec::codec::decode_bytes;
use peerd_codec::{Code, Encode, Frame};
use peerd_server::{listen, ListenOptions, PeerServer};
pub use peerd_testkit::{frame, hello, wait_until, RawPeer, Recv, WAIT};

/// `opts` listening on an ephemeral loopback port, shards unpinned.
pub fn server(opts: ListenOptions) -> PeerServer {
    let mut opts = opts;
    opts.endpoints = vec![peerd_server::Endpoint::Tcp("127.0.0.1:0".into())];
    // Tests run in parallel on a small machine; do not pin every test's shards.
    opts.pin = false;
    // Peers in these tests read their Close at once; no test should wait out the default
    // 2 s linger when it closes the server under a connected peer.
    opts.close_linger = std::time::Duration::from_millis(300);
    listen(opts).expect("listen")
}

/// Publish `payload` to `topic` from `publisher` until `srv` no longer lists `victim` (a
/// member that does not read, cut as a slow consumer); returns how many were published.
/// Every 64th publish waits for the server to have handled the ones before (a Ping round
/// trip), so the publisher's own socket never fills.
pub fn publish_until_cut(
    srv: &PeerServer,
    publisher: &mut RawPeer,
    topic: &str,
    payload: &[u8],
    victim: &str,
) -> u64 {
    let mut n = 0u64;
    while srv.connections().iter().any(|c| c.peer_id == victim) {
        n += 1;
        assert!(n < 1_000_000, "{victim} was never cut");
        publisher.send(&peerd_codec::Publish {
            req: 0,
            topic: topic.into(),
            echo: false,
            payload: payload.into(),
        });
        if n % 64 == 0 {
            publisher.sync(n);
        }
    }
    n
}

/// Send `m` (a frame with `req`) and return the code and message of its Status.
pub fn req_status<M: Encode>(p: &mut RawPeer, req: u64, m: &M) -> (Code, String) {
    p.send(m);
    p.recv_until(|f| match f {
        Frame::Status(s) if s.req.to_native() == req => Some((
            Code::from_u16(s.code.to_native()).unwrap(),
            s.message.as_str().to_string(),
        )),
        _ => None,
    })
}

/// Nothing reached `p` (checked by a Ping round trip: whatever the server queued for it
/// before has arrived).
pub fn received_nothing(p: &mut RawPeer, nonce: u64) {
    let got = p.sync(nonce);
    let kinds: Vec<_> = got
        .iter()
        .map(|b| decode_bytes(b).unwrap().kind())
        .collect();
    assert!(kinds.is_empty(), "delivered despite the refusal: {kinds:?}");
}
