//! [`ClusterLink`]: what the shards (and `PeerServer`) hold of the cluster. Sending to the
//! bridge never blocks: commands go into an unbounded flume channel whose bytes are counted
//! against a cap ([`ClusterLink::has_room`]), and are taken out by the bridge thread.
//!
//! Peers of other nodes appear in the shared directory and topic index at *virtual
//! shards*: shard `shards + node slot`, with a *scoped* session that names the node slot,
//! the peer's shard on its node and its session there ([`scope`]). Every path that routes
//! to a peer by (shard, session) (a direct event, a relayed call and its answer, a kick)
//! therefore reaches remote peers through [`crate::shared::Shared::send`], which hands
//! messages for virtual shards to [`ClusterLink::to_node`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use peerd_codec::Code;

use super::wire::{self, At, Op};
use crate::frame::Frame;
use crate::msg::ShardMsg;

/// Bits of a scoped session: 1 (remote) | 15 node slot | 8 shard | 40 session.
const SESSION_BITS: u32 = 40;
const SHARD_BITS: u32 = 8;
const REMOTE: u64 = 1 << 63;
/// Sessions at or above this cannot be scoped; a node never hands them out (a counter
/// from 1 would need to run for centuries).
pub(crate) const MAX_SESSION: u64 = 1 << SESSION_BITS;
/// Node slots available (a cluster has at most this many nodes alive at once).
pub(crate) const MAX_NODES: usize = 1 << 15;

/// The session by which this node knows the peer `at` of the node in `slot`.
pub(crate) fn scope(slot: usize, at: At) -> u64 {
    REMOTE
        | (slot as u64) << (SESSION_BITS + SHARD_BITS)
        | (at.shard as u64) << SESSION_BITS
        | at.session
}

/// The node slot and the peer's place on its node, of a scoped session.
pub(crate) fn unscope(session: u64) -> (usize, At) {
    let slot = ((session & !REMOTE) >> (SESSION_BITS + SHARD_BITS)) as usize;
    let shard = (session >> SESSION_BITS) as u8;
    let session = session & (MAX_SESSION - 1);
    (slot, At { shard, session })
}

/// The place of a local peer, as other nodes know it.
pub(crate) fn here(shard: usize, session: u64) -> At {
    At {
        shard: shard as u8,
        session,
    }
}

/// Work for the bridge thread.
pub(crate) enum BridgeCmd {
    /// Send `payload` (an encoded [`wire`] message) to the node in `slot`.
    ToNode { slot: usize, payload: Bytes },
    /// Publish on a topic's subject.
    Topic { topic: Arc<str>, payload: Bytes },
    /// Publish on the broadcast subject.
    Broadcast(Bytes),
    /// Changes of this node's state, to number and replicate.
    State(Vec<Op>),
    /// The local membership of a topic may have started or ended: subscribe or
    /// unsubscribe its subject to match.
    Interest(Arc<str>),
    /// Claim a peer id in the cluster (the handshake waits for the answer).
    Claim(super::claims::ClaimRequest),
    /// The session that held `peer` is gone: release the claim if it is still its own.
    Release { peer: Arc<str>, session: u64 },
    /// Publish a message the bridge made itself (snapshots, kicks, snapshot requests).
    Publish { subject: String, payload: Bytes },
    /// Time for a heartbeat (made in the publishing loop, so that it carries the last
    /// change numbered).
    Heartbeat,
    /// Rejoin under a new epoch (why, for the log): the cluster declared this node gone.
    Rejoin(&'static str),
    /// The link came back: with the id bucket in memory (lost if NATS restarted), make it
    /// again and claim this node's ids again.
    Recheck,
    /// Delete the ids still held in the bucket by dead incarnation `epoch`'s peers.
    Reap { epoch: u64, peers: Vec<Arc<str>> },
    /// The server is closing.
    Stop,
}

/// Counters of the cluster, written by the bridge and read by scrapes.
#[derive(Default)]
pub(crate) struct ClusterStats {
    pub messages_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub topic_in: AtomicU64,
    /// Cross-node messages not sent: the link to NATS was down, or the backlog was full.
    pub dropped: AtomicU64,
    /// Messages from other nodes that could not be read.
    pub malformed: AtomicU64,
    pub resyncs: AtomicU64,
    pub nodes_lost: AtomicU64,
    pub link_changes: AtomicU64,
    pub rejoins: AtomicU64,
    pub ids_lost: AtomicU64,
    pub ids_reaped: AtomicU64,
    pub rejoins_asked: AtomicU64,
    /// Gauges the bridge keeps: its replica's size, its subscriptions and claims.
    pub remote_peers: AtomicU64,
    pub remote_members: AtomicU64,
    pub subscriptions: AtomicU64,
    pub claims: AtomicU64,
}

/// The shards' side of the cluster (module doc).
pub(crate) struct ClusterLink {
    tx: flume::Sender<BridgeCmd>,
    /// This node's incarnation: a random number drawn at start, and again when the node
    /// rejoins after the cluster declared it gone ([`new_epoch`]); in every message it sends.
    epoch: AtomicU64,
    pub node_id: String,
    /// Local shards: virtual shards start here.
    shards: usize,
    /// Connected to NATS and in sync with the cluster: new peers may be admitted.
    pub up: AtomicBool,
    /// Bytes queued to the bridge and not yet taken.
    queued: AtomicUsize,
    backlog_cap: usize,
    /// NATS's max_payload: a frame that would not fit is refused with TooLarge.
    pub max_payload: AtomicUsize,
    /// Nodes heard from and alive, this one included.
    pub nodes: AtomicUsize,
    /// Node slot -> that node's epoch (0: free) and name, kept by the bridge: a topic
    /// message for one member on another node names its node incarnation
    /// (`wire::Msg::Topic`), and `connections()` names a remote peer's node.
    slot_nodes: std::sync::RwLock<Vec<(u64, Arc<str>)>>,
    pub stats: ClusterStats,
}

impl ClusterLink {
    pub fn new(
        node_id: String,
        epoch: u64,
        shards: usize,
        backlog_cap: usize,
    ) -> (Arc<ClusterLink>, flume::Receiver<BridgeCmd>) {
        let (tx, rx) = flume::unbounded();
        let link = ClusterLink {
            tx,
            epoch: AtomicU64::new(epoch),
            node_id,
            shards,
            up: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            backlog_cap,
            max_payload: AtomicUsize::new(1 << 20),
            nodes: AtomicUsize::new(1),
            slot_nodes: std::sync::RwLock::new(Vec::new()),
            stats: ClusterStats::default(),
        };
        (Arc::new(link), rx)
    }

    /// The figures for a scrape.
    pub fn metrics(&self) -> crate::metrics::ClusterMetrics {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::metrics::ClusterMetrics {
            up: self.is_up(),
            nodes: self.nodes.load(Ordering::Relaxed) as u64,
            messages_out: get(&s.messages_out),
            messages_in: get(&s.messages_in),
            bytes_out: get(&s.bytes_out),
            bytes_in: get(&s.bytes_in),
            topic_messages_in: get(&s.topic_in),
            dropped: get(&s.dropped),
            malformed: get(&s.malformed),
            resyncs: get(&s.resyncs),
            nodes_lost: get(&s.nodes_lost),
            link_changes: get(&s.link_changes),
            rejoins: get(&s.rejoins),
            ids_lost: get(&s.ids_lost),
            ids_reaped: get(&s.ids_reaped),
            rejoins_asked: get(&s.rejoins_asked),
            remote_peers: get(&s.remote_peers),
            remote_members: get(&s.remote_members),
            subscriptions: get(&s.subscriptions),
            claims: get(&s.claims),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The bridge gave node slot `slot` to incarnation `epoch` of node `name` (0: freed).
    pub fn set_slot(&self, slot: usize, epoch: u64, name: &str) {
        let mut v = self.slot_nodes.write().unwrap_or_else(|e| e.into_inner());
        if v.len() <= slot {
            v.resize(slot + 1, (0, Arc::from("")));
        }
        v[slot] = (epoch, name.into());
    }

    fn slot_epoch(&self, slot: usize) -> u64 {
        let v = self.slot_nodes.read().unwrap_or_else(|e| e.into_inner());
        v.get(slot).map_or(0, |n| n.0)
    }

    /// A peer at virtual shard `shard` with scoped `session`: its node's name and where it
    /// lives there; None for a local peer.
    pub fn remote(&self, shard: usize, session: u64) -> Option<(Arc<str>, At)> {
        if shard < self.shards {
            return None;
        }
        let (slot, at) = unscope(session);
        let v = self.slot_nodes.read().unwrap_or_else(|e| e.into_inner());
        Some((v.get(slot).map(|n| n.1.clone())?, at))
    }

    /// Only the bridge changes it, when it rejoins.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether a cross-node message may be queued now: refused (Overloaded) when the
    /// bridge is this far behind, so that nothing queues without bound.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < self.backlog_cap
    }

    /// The virtual shard of node `slot`.
    pub fn virtual_shard(&self, slot: usize) -> usize {
        self.shards + slot
    }

    fn push(&self, cmd: BridgeCmd, bytes: usize) {
        if !self.has_room() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        // The bridge ends only when the server does; then nothing needs sending.
        let _ = self.tx.send(cmd);
    }

    /// The bridge took a command of `bytes` out of the queue.
    pub fn taken(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn cmd(&self, cmd: BridgeCmd) {
        let _ = self.tx.send(cmd);
    }

    /// Whether `frame` fits in one NATS message with its envelope.
    pub fn fits(&self, frame: &Frame, extra: usize) -> bool {
        frame.websocket().len() + extra + 64 <= self.max_payload.load(Ordering::Relaxed)
    }

    /// Publish a topic frame to the members on other nodes (all of them, or the one at `to`).
    pub fn topic(&self, topic: &Arc<str>, to: Option<u64>, frame: &Frame) {
        let to = match to.map(unscope) {
            None => None,
            Some((slot, at)) => match self.slot_epoch(slot) {
                0 => return, // its node is gone: so is the member
                node => Some((node, at)),
            },
        };
        let payload = wire::topic(self.epoch(), topic, to, frame);
        let n = payload.len();
        self.push(
            BridgeCmd::Topic {
                topic: topic.clone(),
                payload,
            },
            n,
        );
    }

    pub fn broadcast(&self, frame: &Frame) {
        let payload = wire::broadcast(self.epoch(), frame);
        let n = payload.len();
        self.push(BridgeCmd::Broadcast(payload), n);
    }

    /// Replicate changes of this node's state.
    pub fn state(&self, ops: Vec<Op>) {
        if !ops.is_empty() {
            self.cmd(BridgeCmd::State(ops));
        }
    }

    /// A message a shard addressed to virtual shard `target` (a peer of another node).
    /// Presence and the shard's own control messages never go there.
    pub fn to_node(&self, target: usize, msg: ShardMsg) {
        let slot = target - self.shards;
        let e = self.epoch();
        let payload = match msg {
            ShardMsg::Deliver { session, frame } => wire::deliver(e, unscope(session).1, &frame),
            ShardMsg::RelayAnswer { session, id, frame } => {
                wire::answer(e, unscope(session).1, id, &frame)
            }
            ShardMsg::Kick { session, code, .. } => {
                wire::kick(e, unscope(session).1, code.as_u16())
            }
            ShardMsg::RelayCall(c) => wire::call(
                e,
                here(c.caller.shard, c.caller.session),
                c.caller.id,
                unscope(c.callee_session).1,
                c.timeout_ms,
                &c.caller_peer,
                &c.method,
                &c.params,
            ),
            _ => {
                debug_assert!(false, "not a message for another node");
                return;
            }
        };
        let n = payload.len();
        self.push(BridgeCmd::ToNode { slot, payload }, n);
    }
}

/// A node incarnation's number: random, never 0.
pub(crate) fn new_epoch() -> u64 {
    loop {
        let e = fastrand::u64(..);
        if e != 0 {
            return e;
        }
    }
}

/// The code a remote Kick names, as the local close uses it.
pub(crate) fn kick_code(code: u16) -> Code {
    Code::from_u16(code).unwrap_or(Code::Replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_sessions_round_trip() {
        for (slot, shard, session) in [(0, 0, 1), (MAX_NODES - 1, 255, MAX_SESSION - 1), (7, 3, 99)]
        {
            let at = At { shard, session };
            let s = scope(slot, at);
            assert!(s >= REMOTE, "never a local session");
            assert_eq!(unscope(s), (slot, at));
        }
    }
}
