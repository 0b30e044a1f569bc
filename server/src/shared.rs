//! [`Shared`]: the state every shard and every `PeerServer` handle share.
//!
//! Only what must cross threads lives here, each piece `Arc`ed or atomic for that reason:
//! the inbox senders (any shard may message any other, and `PeerServer` may message all),
//! the peer directory (any shard may route to any peer), the topic index (any shard may
//! publish to any topic), and counters read by `PeerServer`. Per-shard state lives in
//! `local` and `shard` behind `Rc`/`RefCell`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::frame::Frame;
use peerd_codec::Code;

use crate::cluster::ClusterLink;
use crate::config::Config;
use crate::directory::Directory;
use crate::msg::ShardMsg;
use crate::topic_index::TopicIndex;

pub(crate) struct Shared {
    pub config: Config,
    senders: Vec<flume::Sender<ShardMsg>>,
    pub directory: Directory,
    pub topics: TopicIndex,
    /// Live global presence watches on all shards: a connect or disconnect is announced to
    /// the shards only when this is non-zero (see `presence` for why checking it after the
    /// directory changed is enough).
    pub global_watchers: AtomicUsize,
    conn_count: AtomicUsize,
    /// `Limits::max_connections`, here because any thread admits connections and
    /// `PeerServer::set_limits` may change it.
    pub max_connections: AtomicUsize,
    dropped: AtomicU64,
    accept_errors: AtomicU64,
    next_peer: AtomicU64,
    next_session: AtomicU64,
    /// Set when the server starts closing (`PeerServer::close_graceful`): from then on it
    /// is not ready (a readiness probe should send no new peers here).
    draining: AtomicBool,
    /// Set once the listening sockets were handed to another server
    /// (`PeerServer::listener_fds`): stopping must then not shut them down, which would
    /// stop them for the successor too.
    listeners_shared: AtomicBool,
    /// Where accepted connections go instead of being served here, once the listeners
    /// were handed over and the successor is up (`PeerServer::forward_accepted`).
    pub forward: std::sync::OnceLock<Forward>,
    pub started_at: SystemTime,
    /// The cluster this node is part of, if any: messages for peers of other nodes (at
    /// virtual shards, numbered from `shards()`) go through it.
    pub cluster: Option<Arc<ClusterLink>>,
    /// Assigned ids are `prefix * 10^10 + counter`: 0 on a single node; in a cluster a
    /// random prefix per node incarnation, so that nodes rarely try the same ids (the
    /// cluster's claim settles it when they do).
    peer_id_prefix: u64,
}

/// Takes a connection this server accepted but should not serve (see `Shared::forward`).
pub type Forward = Arc<dyn Fn(std::os::fd::OwnedFd) + Send + Sync>;

impl Shared {
    pub fn new(
        config: Config,
        senders: Vec<flume::Sender<ShardMsg>>,
        cluster: Option<Arc<ClusterLink>>,
    ) -> Shared {
        let shards = senders.len();
        let peer_id_prefix = if cluster.is_some() {
            fastrand::u64(1..10_000)
        } else {
            0
        };
        Shared {
            max_connections: AtomicUsize::new(config.limits.max_connections),
            config,
            senders,
            directory: Directory::new(),
            topics: TopicIndex::new(shards),
            global_watchers: AtomicUsize::new(0),
            conn_count: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            next_peer: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            listeners_shared: AtomicBool::new(false),
            forward: std::sync::OnceLock::new(),
            started_at: SystemTime::now(),
            cluster,
            peer_id_prefix,
        }
    }

    pub fn share_listeners(&self) {
        self.listeners_shared.store(true, Ordering::Release);
    }

    pub fn listeners_shared(&self) -> bool {
        self.listeners_shared.load(Ordering::Acquire)
    }

    /// The server is closing: not ready any more.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Send `msg` to shard `target`'s inbox. A shard that has stopped drops it, which is
    /// what a message to a stopped server should do. A virtual shard's message (a peer of
    /// another node) goes to the cluster.
    pub fn send(&self, target: usize, msg: ShardMsg) {
        match self.senders.get(target) {
            Some(s) => {
                let _ = s.send(msg);
            }
            None => {
                if let Some(c) = &self.cluster {
                    c.to_node(target, msg);
                }
            }
        }
    }

    /// Whether `shard` is one of this node's (not a virtual shard of another node's).
    pub fn is_local(&self, shard: usize) -> bool {
        shard < self.senders.len()
    }

    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn assign_peer_id(&self) -> String {
        let n = self.next_peer.fetch_add(1, Ordering::Relaxed);
        (self.peer_id_prefix * 10_000_000_000 + n).to_string()
    }

    /// Count a new connection against `max_connections`; false (and counted as dropped)
    /// when the server is full.
    pub fn try_admit(&self) -> bool {
        let max = self.max_connections.load(Ordering::Relaxed);
        let prev = self.conn_count.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.conn_count.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A connection refused for want of resources (file descriptors), counted as dropped.
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_ended(&self) {
        self.conn_count.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn connection_count(&self) -> usize {
        self.conn_count.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }

    /// A broadcast to every peer of the cluster: this node's, and one message to the
    /// other nodes.
    pub fn broadcast_all(&self, frame: Frame, exclude_session: u64) {
        if let Some(c) = &self.cluster {
            c.broadcast(&frame);
        }
        self.broadcast_frame(frame, exclude_session);
    }

    /// A topic frame to the members on other nodes, once (NATS brings it to the nodes with
    /// members); `to`: only that member (a scoped session).
    pub fn topic_remote(&self, topic: &str, to: Option<u64>, frame: &Frame) {
        if let Some(c) = &self.cluster {
            c.topic(&topic.into(), to, frame);
        }
    }

    /// One message per local shard, not one per peer; the frame is shared by reference
    /// count.
    pub fn broadcast_frame(&self, frame: Frame, exclude_session: u64) {
        for i in 0..self.shards() {
            self.send(
                i,
                ShardMsg::Broadcast {
                    frame: frame.clone(),
                    exclude: exclude_session,
                },
            );
        }
    }

    /// The messages that deliver a topic frame: one per shard with members of `topic`
    /// (each carrying the same `Frame`), to every member but session `exclude` (0: none).
    pub fn topic_frames(
        &self,
        topic: &str,
        frame: Frame,
        exclude: u64,
    ) -> impl Iterator<Item = (usize, ShardMsg)> {
        let topic: std::sync::Arc<str> = topic.into();
        self.topics.member_shards(&topic).into_iter().map(move |i| {
            let msg = ShardMsg::TopicFrame {
                topic: topic.clone(),
                frame: frame.clone(),
                exclude,
            };
            (i, msg)
        })
    }

    pub fn kick(&self, shard: usize, session: u64, code: Code, reason: &'static str) {
        self.send(
            shard,
            ShardMsg::Kick {
                session,
                code,
                reason,
            },
        );
    }
}
