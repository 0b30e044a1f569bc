//! [`ShardMsg`]: every kind of work one shard (or a `PeerServer` caller on any thread) asks
//! of another shard. Plain data, so a reader can list what crosses shards; `route` handles
//! each variant in one `match`.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peerd_codec::{Code, PresenceChange};

use crate::frame::Frame;
use crate::metrics::ShardMetrics;

/// A message to a shard, sent over its flume inbox.
pub(crate) enum ShardMsg {
    /// Queue `frame` to every local peer except session `exclude` (0 = none).
    Broadcast { frame: Frame, exclude: u64 },
    /// Queue `frame` to every local member of `topic` except session `exclude` (0 = none):
    /// a publish, or a signaling offer to a room. Encoded once on the sender's shard.
    TopicFrame {
        topic: Arc<str>,
        frame: Frame,
        exclude: u64,
    },
    /// Queue `frame` to the peer with this session, if it is still here: a direct event, a
    /// message to one topic member, a signal to one peer.
    Deliver { session: u64, frame: Frame },
    /// Tell this shard's presence watchers of `topic` (None: global watchers) that `peer`
    /// (its connection `session`) joined or left.
    Presence {
        topic: Option<Arc<str>>,
        peer: Arc<str>,
        session: u64,
        change: PresenceChange,
    },
    /// Start a peer-to-peer call on the callee's shard.
    RelayCall(RelayedCall),
    /// The outcome of a relayed call (RpcResponse or RpcError), for its caller: frees one
    /// of the caller's relayed-call slots and delivers the frame.
    RelayAnswer { session: u64, frame: Frame },
    /// Close the peer with this session (a takeover closes the old session as Replaced).
    Kick {
        session: u64,
        code: Code,
        reason: &'static str,
    },
    /// A Unix-socket connection accepted by the acceptor thread, to be served here.
    Adopt(OwnedFd),
    /// Stop accepting, let in-flight handlers finish for up to `drain`, close every peer
    /// with Shutdown, and stop.
    Shutdown { drain: Duration },
    /// A scrape: copy the shard's counters and send them back (`PeerServer::metrics`).
    /// The channel has room for every shard's answer, so sending never blocks the shard.
    Metrics(flume::Sender<ShardMetrics>),
}

/// A peer-to-peer RPC request on its way to the callee's shard.
pub(crate) struct RelayedCall {
    /// Where the answer goes: the caller's shard, session and its own request id.
    pub caller: ReplyTo,
    /// The caller's peer id (the callee sees it as the request's `peer`).
    pub caller_peer: Arc<str>,
    /// The callee's session.
    pub callee_session: u64,
    pub method: Box<str>,
    pub timeout_ms: u32,
    pub params: Bytes,
}

/// The caller of a relayed call: where its RpcResponse or RpcError must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    pub shard: usize,
    pub session: u64,
    pub id: u64,
}
