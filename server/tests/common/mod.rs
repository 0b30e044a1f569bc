//! Shared set-up for the server's integration tests: a server on `127.0.0.1:0`, and the raw
//! protocol peer from peerd-testkit (std sockets and the codec, nothing else, so these tests
//! exercise the real wire and do not depend on the client crate).
#![allow(dead_code, unused_imports)]

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
