//! The Rust client for peerd.
//!
//! A [`Peer`] is one session with a peerd server: it connects and handshakes, then offers
//! RPC in both directions (call the server or another peer; answer calls with handlers),
//! named events and broadcasts, topics (join, leave, publish, send to one member),
//! presence (watch, list peers), WebRTC signaling relay and ping. When the connection
//! drops it reconnects with exponential backoff and full jitter, presents the resume token
//! of the last session to keep its peer id, and re-joins its topics and re-opens its
//! presence watches.
//!
//! It connects over TCP ([`connect`], or `host:port` / `tcp://host:port`), a Unix socket
//! (`unix:/path`), TLS (`tls://host:port`) or WebSocket (`ws://host:port/path`, and
//! `wss://` inside TLS): [`connect_endpoint`] / [`Peer::with_endpoint`] take any
//! [`Endpoint`]; [`PeerOptions::ca_file`] / [`TlsOptions`] say whom TLS trusts (the
//! system's CA certificates by default). Everything below works the same on each.
//!
//! ```no_run
//! use std::time::Duration;
//! use peerd_client::{connect, PeerOptions, RpcFailure};
//!
//! let peer = connect("127.0.0.1:7000", PeerOptions::new().peer_id("alice"))?;
//! // Answer calls from the server or other peers.
//! peer.rpc().handle("echo", |req| Ok(req.params.to_vec()));
//! peer.rpc().handle("fail", |_| Err(RpcFailure::app(4001, "nope")));
//! // Call the server, or another peer through it.
//! let reply = peer.rpc().call("time", b"")?;
//! let _ = peer.rpc().call_peer("bob", "echo", b"hi")?;
//! // Topics: join, receive, publish.
//! peer.join("chat")?;
//! let messages = peer.subscribe("chat");
//! peer.publish("chat", b"hello")?;
//! if let Ok(m) = messages.recv_timeout(Duration::from_secs(1)) {
//!     println!("{} says {:?}", m.from, m.payload);
//! }
//! // Presence: current members as joins, then changes.
//! let watcher = peer.watch(Some("chat"))?;
//! while let Some(ev) = watcher.recv_timeout(Duration::from_millis(100)) {
//!     println!("{ev:?}");
//! }
//! peer.disconnect();
//! # let _ = reply;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Why blocking threads (and futures on top)
//!
//! The core is std::net plus threads, with no async runtime dependency. It then works the
//! same from plain threads, tests, CLIs and from inside any async runtime (tokio,
//! async-std, smol, glommio), without dragging a particular reactor into the caller's
//! program or requiring one to be running. Every blocking wait has a `*_async` variant
//! (`call_async`, `join_async`, `list_peers_async`, [`Watcher::recv_async`], and the flume
//! receivers' `recv_async`) whose future is built on flume's runtime-neutral channels: the
//! request is written when the method is called, the future only waits, and dropping it
//! un-registers the wait. Deadlines of those futures are enforced by a small timer thread
//! started on first use, because there is no runtime timer to borrow.
//!
//! Per peer there are:
//! - one *reader/supervisor* thread: reads the connection (decrypting TLS, deframing
//!   WebSocket messages and answering their Pings) into a [`peerd_codec::Framer`],
//!   decodes each frame with validated access, completes pending calls and requests
//!   directly, answers Ping and the drain notice, and queues everything that runs user
//!   code; when the connection ends it runs the reconnect loop, then reads the next
//!   connection;
//! - one *dispatcher* thread: runs RPC handlers and listeners in arrival order and feeds
//!   subscription channels and presence watchers. User code never runs on the reader, so a
//!   handler that makes a blocking `call` cannot deadlock the connection;
//! - writes from any thread through a mutex around the connection's write half (the
//!   socket, or the TLS session shared with the reader, which reads ciphertext without
//!   the lock and takes it only to decrypt; over WebSocket a frame is one masked message,
//!   masked in place behind room left for its header): a frame is
//!   encoded with [`peerd_codec::encode`] into a reused buffer and written with one
//!   `write_all`, so frames never interleave.
//!
//! Memory is bounded: the reader -> dispatcher queue is bounded
//! ([`PeerOptions::dispatch_queue`]) and so is every subscription channel
//! ([`PeerOptions::subscription_capacity`]). When handlers or receivers are slow, the
//! dispatcher blocks, the queue fills, the reader stops reading, and TCP flow control
//! pushes back on the server (which may then close this client as a slow consumer) —
//! instead of the client buffering without limit. A receiver that is dropped is simply
//! unsubscribed. Responses to our own calls are completed by the reader directly and do
//! not queue behind handlers.
//!
//! TCP_NODELAY is on. Liveness: the server pings a silent connection; the client also
//! sends a Ping after one keepalive interval of silence from the server and drops the
//! connection (then reconnects) after a second one, so a vanished server is noticed even
//! by a client that only sends.
//!
//! # Semantics worth knowing
//!
//! - Requests pending when the connection drops fail at once with `ConnectionLost`, not at
//!   their deadline (they may or may not have been acted on).
//! - What is sent while the peer is reconnecting (after a first session) waits in a
//!   bounded *reconnect queue* and goes out, in order, once the next connection has
//!   re-joined and re-watched: events, broadcasts, publishes, topic sends, signals,
//!   calls, joins, leaves, watches, list peers. Bounds ([`PeerOptions`]):
//!   `reconnect_queue_timeout` (10 s), `reconnect_queue_frames` (1,024),
//!   `reconnect_queue_bytes` (1 MiB). A send that does not fit fails at once with
//!   `QueueFull` (what is queued stays); a request still queued at the timeout fails with
//!   `QueueTimeout`, and a fire-and-forget frame is dropped and reported through
//!   [`Peer::on_error`] (code `timeout`); a queued call also keeps its own deadline. When
//!   the peer closes for good, what is queued fails with `Closed`. Before the first
//!   session, with reconnect off or with [`PeerOptions::no_reconnect_queue`], sends made
//!   without a connection fail at once with `NotConnected`; `ping` and `refresh_token`
//!   never queue. [`Peer::queued_frames`] says how much waits.
//! - Draining (PROTOCOL.md §6.10): on the server's notice (Status{req 0, `reconnect`}) the
//!   client half-closes at the peerd level: it sends Close{`reconnect`} at once but keeps
//!   the socket open (no FIN, no WebSocket Close), answers calls and Pings on it, queues
//!   everything else, and reads until the server's Close. After the server's
//!   Close{`reconnect`} (everything sent before our Close was acted on and answered) it
//!   reconnects at once, with at most 5 ms of jitter and no backoff, resumes its session,
//!   re-joins, re-watches and writes the queue: a restart loses nothing either side sent.
//! - Handlers and listeners can be registered before `connect()` (use [`Peer::new`] then
//!   [`Peer::connect`]) and survive reconnects.
//! - A topic message for a topic this client has not joined is discarded on receipt.
//! - Reconnect is not attempted after `disconnect()`, after the server closes with
//!   `Replaced` (another connection took the id), `Normal` (the server ended the
//!   session on purpose) or `Unauthorized`, nor after a handshake refusal that cannot
//!   change on retry (`PeerIdTaken`, `Unauthorized`, `UnsupportedVersion`, ...).
//! - Asynchronous failures (`Status{req: 0}`) go to [`Peer::on_error`] / [`Peer::errors`]
//!   and are logged with `tracing`.
//!
//! # Layout
//!
//! The API, as users see it:
//! - `peer`: [`Peer`], [`connect`], [`WeakPeer`]: connect, state, session facts, ping,
//!   `disconnect`.
//! - [`rpc`]: [`Rpc`] calls and handlers.
//! - [`events`]: [`Events`], broadcasts, asynchronous [`ServerError`]s.
//! - [`topics`]: join/leave/publish/send, [`Watcher`] and presence, list peers, signaling.
//! - [`options`]: [`PeerOptions`], [`ReconnectPolicy`] and its backoff schedule,
//!   [`TlsOptions`].
//! - [`endpoint`]: [`Endpoint`], parsed from `host:port`, `tcp://`, `unix:`, `tls://`,
//!   `ws://`, `wss://` with typed errors ([`EndpointError`]).
//! - [`state`]: [`State`], the connection state machine, and [`CloseInfo`].
//! - [`error`]: [`ClientError`], [`CallError`], [`RequestError`], split by layer.
//! - `messages`: what handlers, listeners and receivers are given ([`EventInfo`],
//!   [`RpcRequestInfo`], [`TopicMessageInfo`], ...) and what a handler answers
//!   ([`RpcFailure`]); re-exported by the modules above.
//!
//! The machinery behind it:
//! - `shared`: `Inner`, the state a peer's threads share, and the operations more than
//!   one of them needs (the live link, starting requests, state changes, closing).
//! - `pending`: the one protocol every request that awaits an answer follows (`Waiter`:
//!   register, write, wait with a deadline, fail at once when the link drops), and the
//!   deadline timer of async waits.
//! - `link`: the write side of a connection, shared by every sending thread.
//! - `transport`: where a peer connects (resolved once) and the two halves of a
//!   connection over any transport: the reader's `WireReader`, the writers' `WireWriter`.
//! - `socket`: the TCP or Unix socket, and `ReadSome`, one read of a transport layer.
//! - `tls`: the rustls configuration (CA file, system roots) and the TLS session shared
//!   by the reader and the writers.
//! - `ws`: the WebSocket upgrade, the in-place deframing reader and masked frames, on
//!   `peerd-ws`.
//! - `handshake`: connect and Hello -> Welcome | Reject (the protocol is the codec's
//!   sans-io `ClientHandshake`), what a reconnect presents, errors as [`ClientError`].
//! - `inbound`: the read loop and keepalive probe; routes each frame to a waiter, the
//!   dispatcher, or a Pong.
//! - `supervisor`: the thread that owns the connection's life: read until it ends, fail
//!   pending requests, reconnect with backoff and jitter (at once after a drain), resume,
//!   re-join and re-watch, write what was queued.
//! - `outbox`: the reconnect queue, its bounds, and the order it keeps.
//! - `dispatch`: the dispatcher thread, the registry of handlers and listeners it runs,
//!   and the presence views (snapshot -> joins).
//! - `membership`: the topics joined and watches open (the receive filter; what a
//!   reconnect re-establishes).
//! - `listeners`: copy-on-write listener and subscription lists.
//!
//! The machinery uses only the API's leaf modules (`options`, `endpoint`, `state`, `error`,
//! `messages`),
//! never `peer`, `rpc`, `events` or `topics`, and no modules import each other in a circle.

pub mod endpoint;
pub mod error;
pub mod events;
pub mod options;
pub mod rpc;
pub mod state;
pub mod topics;

mod dispatch;
mod handshake;
mod inbound;
mod link;
mod listeners;
mod membership;
mod messages;
mod outbox;
mod peer;
mod pending;
mod shared;
mod socket;
mod supervisor;
mod tls;
mod transport;
mod ws;

pub use bytes::Bytes;
pub use endpoint::{Endpoint, EndpointError, HostPort, ToEndpoint};
pub use error::{CallError, ClientError, RequestError};
pub use events::{EventInfo, Events, ServerError};
pub use listeners::ListenerId;
pub use options::{PeerOptions, ReconnectPolicy, TlsOptions};
pub use peer::{connect, connect_endpoint, Peer, WeakPeer};
pub use peerd_codec::{Code, Limits, SignalKind};
/// Why a WebSocket upgrade failed ([`ClientError::Upgrade`]).
pub use peerd_ws::handshake::HandshakeError as UpgradeError;
pub use rpc::{Handler, Rpc, RpcFailure, RpcRequestInfo};
pub use state::{CloseInfo, Initiator, State};
pub use topics::{PresenceEvent, SignalInfo, TopicMessageInfo, Watcher};

/// Re-exported so users can name the receivers' types without depending on flume.
pub use flume;
/// Re-exported for [`TlsOptions`] (its `ClientConfig`, and `rustls::pki_types` for
/// certificates) and [`ClientError::Tls`], so users need not match this crate's version.
pub use rustls;

#[cfg(test)]
pub(crate) mod test_util {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// A minimal executor: the crate's futures need no runtime.
    pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
        struct ThreadWaker(std::thread::Thread);
        impl Wake for ThreadWaker {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}
