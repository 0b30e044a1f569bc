//! [`ShardMsg`]: every kind of work one shard (or a `PeerServer` caller on any thread) asks
//! of another shard. Plain data, so a reader can list what crosses shards; `route` handles
//! each variant in one `match`.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peerd_codec::{Code, PresenceChange};

use crate::frame::Frame;
use crate::metrics::{ShardMetrics, TransportKind};
use crate::stream::{Family, Stream};

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
    /// The outcome of a relayed call (RpcResponse or RpcError) to the caller's request
    /// `id`: frees one of the caller's relayed-call slots and delivers the frame.
    RelayAnswer { session: u64, id: u64, frame: Frame },
    /// The same, from a callee on another node: delivered only if the call still waits
    /// (it may have timed out here, or failed with its node).
    RemoteAnswer { session: u64, id: u64, frame: Frame },
    /// The node at this virtual shard is gone: calls waiting for its peers fail.
    NodeGone(usize),
    /// This node's subscription to the topic is in place: joins waiting for it are
    /// answered.
    TopicReady(Arc<str>),
    /// Close the peer with this session (a takeover closes the old session as Replaced).
    Kick {
        session: u64,
        code: Code,
        reason: &'static str,
    },
    /// A connection accepted elsewhere, to be served here: by the Unix acceptor thread, or
    /// by a predecessor process that handed its listeners over (`PeerServer::adopt`).
    Adopt(OwnedFd, Transport),
    /// Replace the shard's limits (`PeerServer::set_limits`).
    Limits(Box<crate::config::Limits>),
    /// Stop accepting; connected peers stay (`PeerServer::stop_accepting`).
    StopAccepting,
    /// Drain this shard's peers (docs/PROTOCOL.md §6.10): notices spread over `window`,
    /// each peer given `grace` to finish.
    Drain { window: Duration, grace: Duration },
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

/// What a listener's connections speak.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    /// They start with a TLS handshake.
    pub tls: bool,
    /// They start with a WebSocket upgrade for this path.
    pub ws_path: Option<Arc<str>>,
}

impl Transport {
    /// Plain peerd (TCP or Unix).
    pub const PLAIN: Transport = Transport {
        tls: false,
        ws_path: None,
    };

    /// The `transport` label of a connection on `stream` at this endpoint.
    pub fn kind(&self, stream: &Stream) -> TransportKind {
        match (stream, self.tls, self.ws_path.is_some()) {
            (Stream::Unix(..) | Stream::Bare(_, Family::Unix), _, _) => TransportKind::Unix,
            (_, true, true) => TransportKind::Wss,
            (_, true, false) => TransportKind::Tls,
            (_, false, true) => TransportKind::Ws,
            (_, false, false) => TransportKind::Tcp,
        }
    }
}
