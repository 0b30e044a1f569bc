//! peerd-server: a thread-per-core, io_uring peer server.
//!
//! [`listen`] starts one glommio executor per shard, each pinned to a core and accepting on
//! its own SO_REUSEPORT socket. A connection lives its whole life on the shard that
//! accepted it: handshake, read loop, dispatch, outbound queue. Shards talk to each other
//! only through flume inboxes; the structures they share are the peer directory and the
//! topic index. `docs/ARCHITECTURE.md` draws the module map and follows one publish.
//!
//! # Layout
//!
//! Public API:
//! - [`server`]: [`listen`], [`PeerServer`] (usable from any thread), start-up checks.
//! - [`peer`]: [`ConnectedPeer`], the handle user code gets in `on_connection`.
//! - [`options`]: [`ListenOptions`], [`Limits`], [`Endpoint`], callback types.
//! - [`request`]: [`Request`], [`EventRef`], [`HandlerFuture`].
//! - [`error`]: [`ListenError`], [`CallError`], [`SendError`], [`RpcFailure`],
//!   [`MetricsError`].
//! - [`metrics`]: [`Metrics`] and [`ShardMetrics`], the snapshot
//!   [`PeerServer::metrics`] returns; [`prometheus`]: that snapshot in the Prometheus text
//!   format.
//! - [`auth`]: [`Grant`], [`Permissions`], [`Action`], [`Denied`]: what authenticating a
//!   peer established and what it may do.
//! - [`traffic`]: [`Traffic`], what a peer sends to others (signals, publishes, direct
//!   events, broadcasts, calls to peers) as the embedder's traffic hooks see it:
//!   [`ListenOptions::on_traffic`] observes and may refuse it on the sender's shard, after
//!   the permissions and the authorizer and before anything is delivered;
//!   [`ListenOptions::on_traffic_error`] sees the server refuse it (a signal to an unknown
//!   peer, from outside the room). Borrowed from the received frame; without a hook the
//!   path costs one branch. `examples/signaling.rs` is a small signaling server using both.
//! - [`jwt`]: [`jwt::JwtAuth`], connect tokens (JWT) verified with pinned keys, and
//!   [`jwt::TokenSigner`] to issue them.
//! - [`sockfile`]: Unix socket files a successor may replace (bind over, remove only ours).
//! - [`restart`]: [`PeerServer::stop_accepting`], [`PeerServer::drain`] ([`DrainOptions`],
//!   [`DrainReport`]) and handing the listening sockets to a successor
//!   ([`PeerServer::listener_fds`], [`InheritedListener`], [`ListenOptions::inherit`]).
//!
//! A shard, from the socket up (each module imports only modules listed before it):
//! - `auth`, `traffic`, `jwt` (public, above), then
//!   `stream`, `mapping`, `uring`, `tls`, `frame`, `util`, `rate`, `config`, `striped`,
//!   `metrics`, `msg`: the socket wrapper, anonymous memory mappings (a large frame's
//!   receive memory, backed as its bytes arrive; the ring's provided buffers), the shard's
//!   io_urings (batched sends, multishot receives), a connection's TLS
//!   session, a frame ready for any transport (its
//!   WebSocket header in front), shard-local primitives, per-peer rate limits (token
//!   buckets), plain settings, the striped map, the shard's counters and their snapshot
//!   types, the cross-shard message type.
//! - `cluster` (`wire`, `claims`, `link`, then `bridge`, which sits above `shared`): a
//!   cluster of nodes over NATS; see its module doc.
//! - `acceptor`: the accept thread (Unix endpoints, and every endpoint of a server that may
//!   hand its sockets over).
//! - `directory`, `topic_index`, `shared`: what shards share (peer directory, topic
//!   index, inbox senders, counters).
//! - `outbound` (send queue, vectored writes or TLS records, the shard's write set),
//!   `inbound` (receive buffers, reads, in-place WebSocket deframing), `fair` (the shard's
//!   budgets per pass of its loop, of bulk input and of sends: connections that always
//!   have more to read, or whose frames fan out, cannot delay the others), `local` (what a
//!   connection needs of its shard).
//! - `conn`: one connection and its state machine; `receiver`: its receives through the
//!   shard's ring, or its parking on the shard's ring of polls (which
//!   connection a completion is for, the reaper task).
//! - `members`, `watchers`, `relays`: a shard's topic members, presence watchers and
//!   relayed calls (data); `shard`: the shard's state, holding them.
//! - `route`: do a [`msg`]-typed piece of work here, or send it to the shard that must.
//! - `presence`, `topics`, `p2p`, `signaling`: what peers do with each other.
//! - `lifecycle`: tearing down closed connections and settling a shard after a batch.
//! - `upgrade` (the WebSocket HTTP upgrade), `handshake` (Hello -> Welcome | Reject),
//!   `dispatch` (the table of client frames; the traffic hooks are called there),
//!   `executor` (a shard's tasks: accept, serve, inbox, heartbeat, shutdown).

mod acceptor;
pub mod auth;
mod cluster;
mod config;
mod conn;
mod directory;
mod dispatch;
pub mod error;
mod executor;
mod fair;
mod frame;
mod handshake;
mod inbound;
pub mod jwt;
mod lifecycle;
mod local;
mod mapping;
mod members;
pub mod metrics;
mod msg;
pub mod options;
mod outbound;
mod p2p;
pub mod peer;
mod presence;
pub mod prometheus;
mod rate;
mod receiver;
mod relays;
pub mod request;
pub mod restart;
mod route;
pub mod server;
mod shard;
mod shared;
mod signaling;
pub mod sockfile;
mod stream;
mod striped;
mod tls;
mod topic_index;
mod topics;
pub mod traffic;
mod upgrade;
mod uring;
mod util;
mod watchers;

/// Entry points for the fuzz targets (`fuzz/`): not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decode `data` as a message from another cluster node: any input must give a message
    /// or `Malformed`, never a panic (nor, under AddressSanitizer, a bad read).
    pub fn cluster_envelope(data: &[u8]) {
        let _ = crate::cluster::wire::decode(&bytes::Bytes::copy_from_slice(data));
    }
}

pub use auth::{Action, AuthRequest, Denied, Grant, Patterns, Permissions};
pub use error::{CallError, ListenError, MetricsError, RpcFailure, SendError};
pub use metrics::{ClusterMetrics, FrameCounts, Histogram, Metrics, ShardMetrics, TransportKind};
pub use options::{
    ClusterOptions, Endpoint, InheritedListener, Limits, ListenOptions, PresenceNotice, RateLimit,
    TlsFiles, WebSocketOptions,
};
pub use peer::ConnectedPeer;
pub use peerd_codec::{Code, SignalKind};
pub use request::{EventRef, HandlerFuture, Request};
pub use restart::{DrainOptions, DrainReport};
pub use server::{listen, ClusterStatus, PeerInfo, PeerServer, ServerStats, METRICS_WAIT};
pub use traffic::Traffic;
