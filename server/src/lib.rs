//! peerd-server: a thread-per-core, io_uring peer server.
//!
//! [`listen`] starts one glommio executor per shard, each pinned to a core and accepting on
//! its own SO_REUSEPORT socket. A connection lives its whole life on the shard that
//! accepted it: handshake, read loop, dispatch, outbound queue. Shards talk to each other
//! only through flume inboxes; the one structure they share is the peer directory.
//!
//! # Layout
//!
//! - [`server`]: [`listen`], [`PeerServer`], the state shards share, start-up checks.
//! - `shard`: one executor's state: connection map, receive-buffer pool, encode arena,
//!   inbox, heartbeat, shutdown gate.
//! - `conn`: one connection: receive buffer (none while idle), read loop, dispatch,
//!   outbound queue with vectored writes, close and linger.
//! - `handshake`: Hello -> Welcome | Reject, peer-id claims and takeovers.
//! - `directory`: the striped cross-shard peer directory.
//! - `topics`: topics, presence, direct messages, peer-to-peer RPC, signaling.
//! - [`peer`]: [`ConnectedPeer`], the handle user code gets in `on_connection`.
//! - [`options`]: [`ListenOptions`], [`Limits`], [`Endpoint`].
//! - [`error`]: [`ListenError`], [`CallError`], [`SendError`], [`RpcFailure`].
//! - `stream`, `util`: the socket wrapper and shard-local primitives.

mod conn;
mod directory;
pub mod error;
mod handshake;
pub mod options;
pub mod peer;
pub mod server;
mod shard;
mod stream;
mod topics;
mod util;

pub use error::{CallError, ListenError, RpcFailure, SendError};
pub use options::{Endpoint, Limits, ListenOptions, PresenceNotice};
pub use peer::{ConnectedPeer, EventRef, Request};
pub use peerd_codec::Code;
pub use server::{listen, PeerInfo, PeerServer, ServerStats};
