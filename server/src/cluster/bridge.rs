//! The bridge: one thread (`peerd-cluster`) running a tokio current-thread runtime with
//! NATS's client, between the glommio shards and NATS. Shards hand it [`BridgeCmd`]s over
//! one flume channel and never wait for it (except a handshake for its claim, without
//! blocking its shard); it hands shards [`ShardMsg`]s through their inboxes, as any shard
//! does.
//!
//! Subjects (`<c>`: the cluster name):
//! - `peerd.<c>.t.<base64url topic>`: a topic's frames; a node subscribes while it has a
//!   local member (interest: nodes without members receive nothing for the topic).
//! - `peerd.<c>.n.<epoch>`: one node incarnation's inbox (deliveries, calls, answers,
//!   kicks, snapshots).
//! - `peerd.<c>.b`: broadcasts, to every node.
//! - `peerd.<c>.s.<epoch>`: a node's state changes and heartbeats, on one subject so that
//!   a heartbeat's sequence number is ordered after the changes it covers.
//!
//! Replication: each node is the only writer of its own peers and memberships. It numbers
//! its changes ([`wire::Msg::Delta`]) and every other node applies them to a replica held in
//! the shared directory and topic index (at virtual shards, see `link`), announcing presence
//! as a local change would. A gap in the numbers, or a node heard for the first time, asks
//! that node for a snapshot; the replica then takes the difference, so a watcher sees what
//! changed, once. A node silent for three heartbeat intervals is dead: its peers leave.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use async_nats::{Client, ServerAddr, Subject};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use peerd_codec::{Code, PresenceChange};

use super::claims::{self, ClaimRequest, Claimed, Holder, Liveness};
use super::link::{kick_code, scope, BridgeCmd, ClusterLink, MAX_NODES, MAX_SESSION};
use super::wire::{self, At, Msg, Op};
use crate::directory::Entry;
use crate::error::ListenError;
use crate::msg::{RelayedCall, ReplyTo, ShardMsg};
use crate::options::ClusterOptions;
use crate::shared::Shared;
use async_nats::jetstream::kv::Operation;

/// Dead after this many heartbeat intervals of silence.
const DEAD_AFTER: u32 = 3;
/// How long a stopping node tries to say goodbye before it stops anyway.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a join waits for its topic's subscription to be confirmed before it is
/// answered anyway.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an incarnation declared gone is remembered (its messages are answered
/// "rejoin", not taken as a new node's), and how many at most. A node paused longer than
/// that finds out by itself: its own ticks come late.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
const MAX_TOMBSTONES: usize = 4096;
/// KV operations in flight at once when a node checks its ids on rejoin, or reaps a dead
/// node's.
const KV_CONCURRENCY: usize = 256;
/// The most bytes of state changes sent as one delta (NATS's max_payload bounds it too).
const MAX_DELTA_BYTES: usize = 64 * 1024;

/// The running bridge: stop it with [`Bridge::stop`].
pub(crate) struct Bridge {
    thread: Option<std::thread::JoinHandle<()>>,
    link: Arc<ClusterLink>,
}

impl Bridge {
    /// Say goodbye to the cluster (the peers' leaves were sent as they closed) and end.
    pub fn stop(&mut self) {
        self.link.cmd(BridgeCmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

fn subject_prefix(name: &str) -> String {
    format!("peerd.{name}")
}

fn inbox(prefix: &str, epoch: u64) -> String {
    format!("{prefix}.n.{epoch:016x}")
}

fn state_subject(prefix: &str, epoch: u64) -> String {
    format!("{prefix}.s.{epoch:016x}")
}

fn topic_subject(prefix: &str, topic: &str) -> String {
    format!(
        "{prefix}.t.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(topic)
    )
}

/// The KV bucket of a cluster's peer ids.
pub(crate) fn bucket(name: &str) -> String {
    format!("peerd_{name}_ids")
}

/// Connect, open the id bucket, subscribe, learn the other nodes, and return once this
/// node may admit peers (or why it cannot).
pub(crate) fn start(
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
    rx: flume::Receiver<BridgeCmd>,
    opts: ClusterOptions,
) -> Result<Bridge, ListenError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let link2 = link.clone();
    let thread = std::thread::Builder::new()
        .name("peerd-cluster".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the bridge's runtime: {e}")));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(shared, link2, rx, opts, ready_tx));
            // The tasks still in the set (subscription readers) are dropped with it, and an
            // async-nats Subscriber's drop spawns its unsubscribe: inside the runtime, or
            // it panics.
            let _inside = rt.enter();
            drop(local);
        })
        .map_err(|e| ListenError::Cluster {
            detail: format!("cannot start the cluster thread: {e}"),
        })?;
    let mut bridge = Bridge {
        thread: Some(thread),
        link,
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(bridge),
        Ok(Err(detail)) => {
            bridge.stop();
            Err(ListenError::Cluster { detail })
        }
        Err(_) => {
            bridge.thread.take().map(|t| t.join());
            Err(ListenError::Cluster {
                detail: "the cluster thread ended during start-up".into(),
            })
        }
    }
}

/// What the bridge knows of another node incarnation.
struct Node {
    slot: usize,
    node_id: Box<str>,
    last_heard: Instant,
    /// Its heartbeat interval, as it says (it is judged on the longer of its and ours).
    interval: Duration,
    /// When a snapshot was last asked of it (asked again while none comes: the request,
    /// or the answer, can be lost, e.g. sent while its link to NATS was not back yet).
    asked: Instant,
    /// The last change of its applied (or covered by a snapshot).
    seq: u64,
    synced: bool,
    /// Changes received while waiting for a snapshot.
    buffered: Vec<(u64, Vec<Op>)>,
    /// Parts of a snapshot being received, and the change it is as of (parts of two
    /// answers must not mix: a new one restarts the collection).
    snapshot: Vec<Op>,
    snapshot_seq: Option<u64>,
    /// The replica of its state: what its death or a snapshot's difference undoes. A
    /// node holds an id once (its directory is keyed by id).
    peers: HashMap<Arc<str>, At>,
    members: HashSet<(Arc<str>, Arc<str>, At)>,
}

/// An incarnation declared gone, and when it was last told to rejoin.
struct Tomb {
    since: Instant,
    told: Option<Instant>,
}

/// The bridge's state, on its one thread.
struct State {
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
    prefix: String,
    interval: Duration,
    nodes: HashMap<u64, Node>,
    /// Node slot -> epoch (None: free since the instant).
    slots: Vec<Result<u64, Instant>>,
    /// Changes of this node numbered so far.
    seq: u64,
    /// Claims this node holds: peer id -> (the entry as written, its KV revision).
    claims: HashMap<Arc<str>, (Holder, u64)>,
    /// Topic subscriptions: the task reading each, and whether it is confirmed.
    subs: HashMap<Arc<str>, (tokio::task::AbortHandle, bool)>,
    connected: bool,
    /// Since when the link has been down (liveness is not judged meanwhile).
    down_since: Option<Instant>,
    /// Incarnations of other nodes declared gone (see [`Tomb`]).
    tombstones: HashMap<u64, Tomb>,
    /// This node's own earlier epochs, newest last (ids claimed under them are its own).
    past_epochs: Vec<u64>,
    /// When the last tick ran: one far later than due means this node was paused.
    last_tick: Instant,
    /// A rejoin is under way.
    rejoining: bool,
    /// The task reading this incarnation's inbox (replaced when it rejoins).
    inbox_reader: Option<tokio::task::AbortHandle>,
    /// KV writes started and not finished (a stopping node waits for its releases).
    kv_pending: usize,
}

type Shared_ = Rc<RefCell<State>>;

impl Liveness for State {
    fn alive(&self, peer: &str, h: &Holder) -> bool {
        if self.is_mine(h.epoch) {
            // Ours: alive while that session holds the claim (from the claim until its
            // connection's teardown releases it).
            return self
                .claims
                .get(peer)
                .is_some_and(|(held, _)| held.at.session == h.at.session);
        }
        self.nodes.contains_key(&h.epoch)
    }
}

impl State {
    fn vshard(&self, slot: usize) -> usize {
        self.link.virtual_shard(slot)
    }

    /// Whether `epoch` is this node's, now or before it rejoined.
    fn is_mine(&self, epoch: u64) -> bool {
        epoch == self.link.epoch() || self.past_epochs.contains(&epoch)
    }

    /// Whether this node holds `peer`'s claim for `session`: what it replicates. A local
    /// peer without one is being closed (its id was claimed elsewhere while this node was
    /// cut off) and must not reappear on other nodes.
    fn holds(&self, peer: &str, session: u64) -> bool {
        self.claims
            .get(peer)
            .is_some_and(|(h, _)| h.at.session == session)
    }

    fn subs_changed(&self) {
        self.link
            .stats
            .subscriptions
            .store(self.subs.len() as u64, Ordering::Relaxed);
    }

    fn claims_changed(&self) {
        self.link
            .stats
            .claims
            .store(self.claims.len() as u64, Ordering::Relaxed);
    }

    fn replica_changed(&self) {
        let (p, m) = self.nodes.values().fold((0, 0), |(p, m), n| {
            (p + n.peers.len() as u64, m + n.members.len() as u64)
        });
        self.link.stats.remote_peers.store(p, Ordering::Relaxed);
        self.link.stats.remote_members.store(m, Ordering::Relaxed);
    }

    /// Point the directory at a remote peer, unless a local session holds the id: this
    /// node granted it that claim, so the replica's entry is older (a late change from its
    /// old node), or the local one is about to be closed (its id was taken while this node
    /// was cut off), after which [`State::reveal`] brings the remote one in.
    fn place(&self, peer: &Arc<str>, slot: usize, at: At) {
        let shards = self.shared.shards();
        self.point(peer, slot, at, |e| e.shard < shards);
    }

    /// Point the directory's entry for `peer` at its session `at` on node `slot`, unless
    /// the entry now is one to `keep`; announce it if it did.
    fn point(&self, peer: &Arc<str>, slot: usize, at: At, keep: impl Fn(&Entry) -> bool) {
        let session = scope(slot, at);
        let entry = Entry {
            shard: self.vshard(slot),
            session,
            token: [0; 16],
        };
        if self.shared.directory.place(peer, entry, keep) {
            self.announce_global(peer, session, PresenceChange::Join);
        }
    }

    /// A remote session of `peer` is gone: remove it from the directory if it is there.
    fn unplace(&self, peer: &Arc<str>, session: u64) {
        if self.shared.directory.release(peer, session) {
            self.announce_global(peer, session, PresenceChange::Leave);
            self.reveal(peer);
        }
    }

    /// `peer` has no entry now: if the replica holds it on some node (hidden until now by
    /// a local or another remote session), point the directory there.
    fn reveal(&self, peer: &Arc<str>) {
        if let Some(n) = self.nodes.values().find(|n| n.peers.contains_key(peer)) {
            self.point(peer, n.slot, n.peers[peer], |_| true);
        }
    }

    fn new_slot(&mut self, epoch: u64) -> Option<usize> {
        // A freed slot is reused only after a minute, so that late messages scoped to the
        // old node cannot reach the new one's peers.
        let reuse = self
            .slots
            .iter()
            .position(|s| matches!(s, Err(at) if at.elapsed() > Duration::from_secs(60)));
        let slot = match reuse {
            Some(i) => i,
            None if self.slots.len() < MAX_NODES => {
                self.slots.push(Err(Instant::now()));
                self.slots.len() - 1
            }
            None => return None,
        };
        self.slots[slot] = Ok(epoch);
        Some(slot)
    }

    fn announce_global(&self, peer: &Arc<str>, session: u64, change: PresenceChange) {
        if self.shared.global_watchers.load(Ordering::SeqCst) == 0 {
            return;
        }
        for i in 0..self.shared.shards() {
            self.shared.send(
                i,
                ShardMsg::Presence {
                    topic: None,
                    peer: peer.clone(),
                    session,
                    change,
                },
            );
        }
    }

    /// Apply one change of node `epoch` to the replica; a change it already holds (a
    /// snapshot covered it) is skipped, so nothing is announced twice.
    fn apply(&mut self, epoch: u64, op: Op) {
        let Some(node) = self.nodes.get_mut(&epoch) else {
            return;
        };
        let slot = node.slot;
        let at_of = |at: At| (at.session < MAX_SESSION).then(|| scope(slot, at));
        match op {
            Op::PeerUp { peer, at } => {
                if at_of(at).is_none() {
                    return;
                }
                match node.peers.insert(peer.clone(), at) {
                    Some(old) if old == at => return,
                    // Its node gave the id to a new session (a resume there): the old one
                    // is gone, whenever its own PeerDown comes.
                    Some(old) => self.unplace(&peer, scope(slot, old)),
                    None => {}
                }
                self.place(&peer, slot, at);
            }
            Op::PeerDown { peer, at } => {
                let Some(session) = at_of(at) else { return };
                if node.peers.get(&peer) != Some(&at) {
                    return;
                }
                node.peers.remove(&peer);
                self.unplace(&peer, session);
            }
            Op::Join { topic, peer, at } => {
                let Some(session) = at_of(at) else { return };
                if !node.members.insert((topic.clone(), peer.clone(), at)) {
                    return;
                }
                let at = (self.link.virtual_shard(slot), session);
                if let Ok(change) = self.shared.topics.join(&topic, &peer, at, u32::MAX) {
                    self.announce_topic(
                        &topic,
                        &peer,
                        session,
                        change.notify,
                        PresenceChange::Join,
                    );
                }
            }
            Op::Leave { topic, peer, at } => {
                let Some(session) = at_of(at) else { return };
                if !node.members.remove(&(topic.clone(), peer.clone(), at)) {
                    return;
                }
                let at = (self.link.virtual_shard(slot), session);
                let change = self.shared.topics.leave(&topic, &peer, at);
                self.announce_topic(&topic, &peer, session, change.notify, PresenceChange::Leave);
            }
        }
    }

    fn announce_topic(
        &self,
        topic: &Arc<str>,
        peer: &Arc<str>,
        session: u64,
        shards: Vec<usize>,
        change: PresenceChange,
    ) {
        for i in shards {
            self.shared.send(
                i,
                ShardMsg::Presence {
                    topic: Some(topic.clone()),
                    peer: peer.clone(),
                    session,
                    change,
                },
            );
        }
    }

    /// Node `epoch` is gone (dead, or said goodbye): its peers leave, calls waiting for them
    /// fail, and its slot is freed.
    fn node_gone(&mut self, epoch: u64, why: &str, dead: bool) {
        let Some(node) = self.nodes.get(&epoch) else {
            return;
        };
        tracing::warn!(node = %node.node_id, epoch = format_args!("{epoch:016x}"), why, "cluster node gone");
        let slot = node.slot;
        let mut ops: Vec<Op> = node
            .members
            .iter()
            .map(|(topic, peer, at)| Op::Leave {
                topic: topic.clone(),
                peer: peer.clone(),
                at: *at,
            })
            .collect();
        ops.extend(node.peers.iter().map(|(peer, at)| Op::PeerDown {
            peer: peer.clone(),
            at: *at,
        }));
        let held: Vec<Arc<str>> = node.peers.keys().cloned().collect();
        for op in ops {
            self.apply(epoch, op);
        }
        self.nodes.remove(&epoch);
        self.replica_changed();
        self.slots[slot] = Err(Instant::now());
        self.link.set_slot(slot, 0, "");
        self.bury(epoch);
        // A dead node cannot release its ids: one node (the live one whose name sorts
        // first) deletes the bucket entries that still name it, so the bucket does not keep
        // them. A node that left released its own.
        if dead && self.reaper() {
            self.link.cmd(BridgeCmd::Reap { epoch, peers: held });
        }
        self.link.stats.nodes_lost.fetch_add(1, Ordering::Relaxed);
        self.link
            .nodes
            .store(self.nodes.len() + 1, Ordering::Relaxed);
        for i in 0..self.shared.shards() {
            self.shared.send(i, ShardMsg::NodeGone(self.vshard(slot)));
        }
    }

    /// Remember that `epoch` is gone, within bounds (the oldest is forgotten first).
    fn bury(&mut self, epoch: u64) {
        if self.tombstones.len() >= MAX_TOMBSTONES {
            if let Some(oldest) = self
                .tombstones
                .iter()
                .min_by_key(|(_, t)| t.since)
                .map(|(e, _)| *e)
            {
                self.tombstones.remove(&oldest);
            }
        }
        self.tombstones.insert(
            epoch,
            Tomb {
                since: Instant::now(),
                told: None,
            },
        );
    }

    /// Whether this node reaps dead nodes' ids: its name sorts first among the live ones.
    fn reaper(&self) -> bool {
        self.nodes
            .values()
            .all(|n| *self.link.node_id <= *n.node_id)
    }

    /// The whole local state, as `Op`s.
    fn snapshot_ops(&self) -> Vec<Op> {
        let shards = self.shared.shards();
        let mut ops = Vec::new();
        for (peer, shard, session) in self.shared.directory.snapshot() {
            if shard < shards && self.holds(&peer, session) {
                ops.push(Op::PeerUp {
                    peer,
                    at: super::link::here(shard, session),
                });
            }
        }
        for (topic, peer, shard, session) in self.shared.topics.local_members() {
            if !self.holds(&peer, session) {
                continue;
            }
            ops.push(Op::Join {
                topic,
                peer,
                at: super::link::here(shard, session),
            });
        }
        ops
    }

    /// Replace node `epoch`'s replica with a snapshot as of its change `seq`, then apply
    /// the changes received meanwhile.
    fn install_snapshot(&mut self, epoch: u64, seq: u64) {
        let Some(node) = self.nodes.get_mut(&epoch) else {
            return;
        };
        let ops = std::mem::take(&mut node.snapshot);
        node.snapshot_seq = None;
        let mut peers = HashMap::new();
        let mut members = HashSet::new();
        for op in ops {
            match op {
                Op::PeerUp { peer, at } => {
                    peers.insert(peer, at);
                }
                Op::Join { topic, peer, at } => {
                    members.insert((topic, peer, at));
                }
                _ => {}
            }
        }
        let mut diff: Vec<Op> = Vec::new();
        for (topic, peer, at) in node.members.difference(&members) {
            diff.push(Op::Leave {
                topic: topic.clone(),
                peer: peer.clone(),
                at: *at,
            });
        }
        for (peer, at) in &node.peers {
            if peers.get(peer) != Some(at) {
                diff.push(Op::PeerDown {
                    peer: peer.clone(),
                    at: *at,
                });
            }
        }
        for (peer, at) in &peers {
            if node.peers.get(peer) != Some(at) {
                diff.push(Op::PeerUp {
                    peer: peer.clone(),
                    at: *at,
                });
            }
        }
        for (topic, peer, at) in members.difference(&node.members) {
            diff.push(Op::Join {
                topic: topic.clone(),
                peer: peer.clone(),
                at: *at,
            });
        }
        let buffered = std::mem::take(&mut node.buffered);
        node.seq = seq;
        node.synced = true;
        for op in diff {
            self.apply(epoch, op);
        }
        for (last, ops) in buffered {
            self.apply_delta(epoch, last, ops);
        }
        self.replica_changed();
    }

    /// Apply a numbered batch of changes, or note a gap and ask for a snapshot.
    fn apply_delta(&mut self, epoch: u64, last: u64, ops: Vec<Op>) {
        let Some(node) = self.nodes.get_mut(&epoch) else {
            return;
        };
        if !node.synced {
            node.buffered.push((last, ops));
            return;
        }
        let first = last + 1 - ops.len() as u64;
        if last <= node.seq {
            return; // covered by the snapshot
        }
        if first > node.seq + 1 {
            node.synced = false;
            node.buffered.push((last, ops));
            self.resync(epoch, "a gap in its changes");
            return;
        }
        let skip = (node.seq + 1 - first) as usize;
        node.seq = last;
        for op in ops.into_iter().skip(skip) {
            self.apply(epoch, op);
        }
        self.replica_changed();
    }

    fn resync(&mut self, epoch: u64, why: &str) {
        if let Some(node) = self.nodes.get_mut(&epoch) {
            node.synced = false;
            node.snapshot.clear();
            node.asked = Instant::now();
            tracing::debug!(node = %node.node_id, why, "cluster: asking for a snapshot");
        }
        self.link.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        let subject = inbox(&self.prefix, epoch);
        self.link.cmd(BridgeCmd::Publish {
            subject,
            payload: wire::snapshot_req(self.link.epoch()),
        });
    }

    /// A message from node `epoch`: learn of the node if new, and note it is alive.
    fn heard(&mut self, epoch: u64, node_id: Option<&str>) -> bool {
        if self.is_mine(epoch) {
            return false;
        }
        if let Some(t) = self.tombstones.get_mut(&epoch) {
            // Declared gone, yet it speaks: it was paused or cut off, and does not know.
            // Taking it back as it is would bring back peers whose ids others may hold
            // now (ghosts); it must rejoin under a new epoch, checking its ids.
            if t.told.is_none_or(|at| at.elapsed() >= self.interval) {
                t.told = Some(Instant::now());
                self.link
                    .stats
                    .rejoins_asked
                    .fetch_add(1, Ordering::Relaxed);
                self.link.cmd(BridgeCmd::Publish {
                    subject: inbox(&self.prefix, epoch),
                    payload: wire::rejoin(self.link.epoch(), epoch),
                });
            }
            return false;
        }
        if let Some(n) = self.nodes.get_mut(&epoch) {
            n.last_heard = Instant::now();
            if let Some(id) = node_id {
                if *n.node_id != *id {
                    n.node_id = id.into();
                    self.link.set_slot(n.slot, epoch, id);
                }
            }
            return true;
        }
        let Some(slot) = self.new_slot(epoch) else {
            tracing::error!("cluster: too many nodes; ignoring a new one");
            return false;
        };
        self.nodes.insert(
            epoch,
            Node {
                slot,
                node_id: node_id.unwrap_or("?").into(),
                last_heard: Instant::now(),
                interval: self.interval,
                asked: Instant::now(),
                seq: 0,
                synced: false,
                buffered: Vec::new(),
                snapshot: Vec::new(),
                snapshot_seq: None,
                peers: HashMap::new(),
                members: HashSet::new(),
            },
        );
        self.link.set_slot(slot, epoch, node_id.unwrap_or("?"));
        self.link
            .nodes
            .store(self.nodes.len() + 1, Ordering::Relaxed);
        self.resync(epoch, "new node");
        true
    }

    fn slot_of(&self, epoch: u64) -> Option<usize> {
        self.nodes.get(&epoch).map(|n| n.slot)
    }

    fn local_shard(&self, at: At) -> Option<usize> {
        ((at.shard as usize) < self.shared.shards()).then_some(at.shard as usize)
    }

    /// One message from NATS.
    fn incoming(&mut self, payload: Bytes) {
        let link = self.link.clone();
        let stats = &link.stats;
        stats.messages_in.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_in
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let (origin, msg) = match wire::decode(&payload) {
            Ok(m) => m,
            Err(e) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cluster: dropped a message");
                return;
            }
        };
        if self.is_mine(origin) {
            return;
        }
        let node_id = match &msg {
            Msg::Heartbeat { node_id, .. } => Some(node_id.clone()),
            _ => None,
        };
        if !self.heard(origin, node_id.as_deref()) {
            return;
        }
        let shared = self.shared.clone();
        match msg {
            Msg::Topic { topic, to, frame } => {
                stats.topic_in.fetch_add(1, Ordering::Relaxed);
                match to {
                    None => {
                        for (i, m) in shared.topic_frames(&topic, frame, 0) {
                            shared.send(i, m);
                        }
                    }
                    Some((node, at)) => {
                        if let (true, Some(i)) = (self.is_mine(node), self.local_shard(at)) {
                            let session = at.session;
                            shared.send(i, ShardMsg::Deliver { session, frame });
                        }
                    }
                }
            }
            Msg::Broadcast { frame } => shared.broadcast_frame(frame, 0),
            Msg::Deliver { to, frame } => {
                if let Some(i) = self.local_shard(to) {
                    let session = to.session;
                    shared.send(i, ShardMsg::Deliver { session, frame });
                }
            }
            Msg::Call {
                caller,
                id,
                callee,
                timeout_ms,
                caller_peer,
                method,
                params,
            } => {
                let (Some(slot), Some(i)) = (self.slot_of(origin), self.local_shard(callee)) else {
                    return;
                };
                if caller.session >= MAX_SESSION {
                    return;
                }
                let call = RelayedCall {
                    caller: ReplyTo {
                        shard: self.vshard(slot),
                        session: scope(slot, caller),
                        id,
                    },
                    caller_peer,
                    callee_session: callee.session,
                    method,
                    timeout_ms,
                    params,
                };
                shared.send(i, ShardMsg::RelayCall(call));
            }
            Msg::Answer { to, id, frame } => {
                if let Some(i) = self.local_shard(to) {
                    let session = to.session;
                    shared.send(i, ShardMsg::RemoteAnswer { session, id, frame });
                }
            }
            Msg::Kick { at, code } => {
                if let Some(i) = self.local_shard(at) {
                    shared.send(
                        i,
                        ShardMsg::Kick {
                            session: at.session,
                            code: kick_code(code),
                            reason: "session resumed by a new connection on another node",
                        },
                    );
                }
            }
            Msg::Delta { seq, ops } => {
                if ops.is_empty() || seq < ops.len() as u64 {
                    return;
                }
                self.apply_delta(origin, seq, ops);
            }
            Msg::Heartbeat {
                seq,
                leaving,
                interval_ms,
                ..
            } => {
                if leaving {
                    self.node_gone(origin, "it left the cluster", false);
                    return;
                }
                let Some(node) = self.nodes.get_mut(&origin) else {
                    return;
                };
                node.interval = Duration::from_millis(interval_ms.clamp(50, 600_000) as u64);
                if node.synced && seq > node.seq {
                    self.resync(origin, "its heartbeat is ahead of its changes");
                }
            }
            Msg::SnapshotReq => {
                let ops = self.snapshot_ops();
                let seq = self.seq;
                let max = self
                    .link
                    .max_payload
                    .load(Ordering::Relaxed)
                    .saturating_sub(64)
                    .max(1024);
                let subject = inbox(&self.prefix, origin);
                let mut part: Vec<Op> = Vec::new();
                let mut size = 0;
                let send = |part: &[Op], last: bool| {
                    self.link.cmd(BridgeCmd::Publish {
                        subject: subject.clone(),
                        payload: wire::snapshot(self.link.epoch(), seq, last, part),
                    });
                };
                for op in ops {
                    let n = wire::op_len(&op);
                    if size + n > max && !part.is_empty() {
                        send(&part, false);
                        part.clear();
                        size = 0;
                    }
                    size += n;
                    part.push(op);
                }
                send(&part, true);
            }
            Msg::Snapshot { seq, last, ops } => {
                if let Some(node) = self.nodes.get_mut(&origin) {
                    if node.synced {
                        return; // a late answer to a request already satisfied
                    }
                    // Answers to two requests may interleave: keep the newest one's parts
                    // (same `seq`: the same state, so parts of either fit).
                    match node.snapshot_seq {
                        Some(s) if seq < s => return,
                        Some(s) if seq == s => {}
                        _ => {
                            node.snapshot.clear();
                            node.snapshot_seq = Some(seq);
                        }
                    }
                    node.snapshot.extend(ops);
                    if last {
                        self.install_snapshot(origin, seq);
                    }
                }
            }
            Msg::Rejoin { dead } => {
                if dead == self.link.epoch() {
                    self.link
                        .cmd(BridgeCmd::Rejoin("the cluster declared this node gone"));
                }
            }
        }
    }

    /// Every quarter interval: declare silent nodes dead (not while our own link is down:
    /// then they are not silent, we are deaf).
    fn tick(&mut self) {
        let now = Instant::now();
        let late = now.duration_since(self.last_tick);
        self.last_tick = now;
        self.tombstones
            .retain(|_, t| now.duration_since(t.since) < TOMBSTONE_TTL);
        if late > self.interval * DEAD_AFTER {
            // This node was paused (SIGSTOP, a VM or a thread starved): the others were not
            // silent, it was deaf; they have heard nothing from it either and have likely
            // declared it gone. Judge them from now, and rejoin.
            for n in self.nodes.values_mut() {
                n.last_heard = now;
            }
            self.link.cmd(BridgeCmd::Rejoin("this node was paused"));
            return;
        }
        if !self.connected {
            return;
        }
        let dead: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.last_heard.elapsed() > n.interval.max(self.interval) * DEAD_AFTER)
            .map(|(e, _)| *e)
            .collect();
        for e in dead {
            self.node_gone(e, "no heartbeat for 3 intervals", true);
        }
        let unanswered: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.synced && n.asked.elapsed() > n.interval.max(self.interval))
            .map(|(e, _)| *e)
            .collect();
        for e in unanswered {
            self.resync(e, "no snapshot came");
        }
    }

    /// The link came back, or this node rejoined: no node is judged on the time we could
    /// not hear it, and every replica is resynchronised (what changed meanwhile comes as a
    /// difference).
    fn resync_all(&mut self) {
        let now = Instant::now();
        let epochs: Vec<u64> = self.nodes.keys().copied().collect();
        for e in epochs {
            if let Some(n) = self.nodes.get_mut(&e) {
                n.last_heard = now;
            }
            self.resync(e, "the link to NATS came back, or this node rejoined");
        }
    }
}

async fn connect(
    opts: &ClusterOptions,
    events: tokio::sync::mpsc::UnboundedSender<async_nats::Event>,
    name: String,
) -> Result<Client, String> {
    let mut addrs = Vec::new();
    for u in &opts.urls {
        let a: ServerAddr = u
            .parse()
            .map_err(|e| format!("bad cluster URL {:?}: {e}", redact(u)))?;
        addrs.push(a);
    }
    let mut options = async_nats::ConnectOptions::new();
    // NATS's URL convention, which async-nats parses but does not apply: `user:pass@` or
    // `token@`. The first URL that carries credentials gives them.
    if let Some(a) = addrs.iter().find(|a| a.username().is_some()) {
        let user = a.username().unwrap_or_default().to_string();
        options = match a.password() {
            Some(pass) => options.user_and_password(user, pass.to_string()),
            None => options.token(user),
        };
    }
    if let Some(ca) = &opts.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let shown: Vec<String> = opts.urls.iter().map(|u| redact(u)).collect();
    options
        .name(name)
        .no_echo()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        // The default backoff grows to 4 s, which would keep the node unready that much
        // longer than NATS was down.
        .reconnect_delay_callback(|n| Duration::from_millis((1u64 << n.min(8)).min(250)))
        .event_callback(move |e| {
            let events = events.clone();
            async move {
                let _ = events.send(e);
            }
        })
        .connect(addrs)
        .await
        .map_err(|e| format!("cannot connect to NATS at {shown:?}: {e}"))
}

/// A URL as it may be logged: credentials replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The id bucket. `create_key_value` asks for account details that nats-server 2.9 does
/// not send; creating the stream it would create, then opening it, works on 2.9 and later.
async fn open_bucket(client: &Client, opts: &ClusterOptions) -> Result<kv::Store, String> {
    let js = jetstream::new(client.clone());
    let name = bucket(&opts.name);
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        // Headers count: 256 holds a 33-byte value with room.
        max_message_size: 256,
        storage: if opts.kv_memory {
            jetstream::stream::StorageType::Memory
        } else {
            jetstream::stream::StorageType::File
        },
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: opts.kv_replicas.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.map_err(|e| {
        format!(
            "cannot open the id bucket {name} (is JetStream on? start nats-server with -js): {e}"
        )
    })?;
    js.get_key_value(&name)
        .await
        .map_err(|e| format!("cannot open the id bucket {name}: {e}"))
}

async fn run(
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
    rx: flume::Receiver<BridgeCmd>,
    opts: ClusterOptions,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let client = match connect(&opts, ev_tx, format!("peerd {}", link.node_id)).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let kv = match open_bucket(&client, &opts).await {
        Ok(kv) => kv,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let max_payload = client.server_info().max_payload;
    if max_payload > 0 {
        link.max_payload.store(max_payload, Ordering::Relaxed);
    }
    let prefix = subject_prefix(&opts.name);
    let state: Shared_ = Rc::new(RefCell::new(State {
        shared: shared.clone(),
        link: link.clone(),
        prefix: prefix.clone(),
        interval: opts.heartbeat,
        nodes: HashMap::new(),
        slots: Vec::new(),
        seq: 0,
        claims: HashMap::new(),
        subs: HashMap::new(),
        connected: true,
        down_since: None,
        tombstones: HashMap::new(),
        past_epochs: Vec::new(),
        last_tick: Instant::now(),
        rejoining: false,
        inbox_reader: None,
        kv_pending: 0,
    }));
    let my_inbox = inbox(&prefix, link.epoch());
    for subject in [
        format!("{prefix}.s.*"),
        my_inbox.clone(),
        format!("{prefix}.b"),
    ] {
        match client.subscribe(subject.clone()).await {
            Ok(sub) => {
                let task = tokio::task::spawn_local(read(state.clone(), sub));
                if subject == my_inbox {
                    state.borrow_mut().inbox_reader = Some(task.abort_handle());
                }
            }
            Err(e) => {
                let _ = ready.send(Err(format!("cannot subscribe to {subject}: {e}")));
                return;
            }
        }
    }
    // Say we are here at once, then give every live node a heartbeat interval and a bit to
    // be heard, and their snapshots time to arrive.
    link.cmd(BridgeCmd::Heartbeat);
    let st = state.clone();
    let ticker = tokio::task::spawn_local(async move { ticks(st).await });
    let l2 = link.clone();
    let st = state.clone();
    let events = tokio::task::spawn_local(async move {
        while let Some(e) = ev_rx.recv().await {
            on_event(&st, &l2, e);
        }
    });
    let start = {
        let state = state.clone();
        let link = link.clone();
        let interval = opts.heartbeat;
        async move {
            tokio::time::sleep(interval + interval / 4).await;
            synced(&state).await;
            link.up.store(true, Ordering::Release);
            let n = link.nodes.load(Ordering::Relaxed);
            tracing::info!(node = %link.node_id, epoch = format_args!("{:016x}", link.epoch()), nodes = n, "joined the cluster");
            let _ = ready.send(Ok(()));
        }
    };
    tokio::task::spawn_local(start);
    publish_loop(&state, &client, &kv, &rx, &opts).await;
    // Stopping: say goodbye, so that the others drop this node at once.
    let goodbye = {
        let s = state.borrow();
        wire::heartbeat(
            link.epoch(),
            s.seq,
            millis(opts.heartbeat),
            true,
            &link.node_id,
        )
    };
    // Only over a live link, and bounded: while NATS is down, async-nats would hold the
    // publish and the flush until it came back, and the server could never stop. The
    // peers' releases go first (the ids of a node that left are not reaped by others).
    if state.borrow().connected {
        let bye = async {
            while state.borrow().kv_pending > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = client
                .publish(state_subject(&prefix, link.epoch()), goodbye)
                .await;
            let _ = client.flush().await;
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, bye).await;
    }
    ticker.abort();
    events.abort();
    link.up.store(false, Ordering::Release);
}

/// Until every node heard of has sent its snapshot (bounded: four intervals).
async fn synced(state: &Shared_) {
    let until = Instant::now() + state.borrow().interval * 4;
    while Instant::now() < until && state.borrow().nodes.values().any(|n| !n.synced) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

fn on_event(state: &Shared_, link: &ClusterLink, e: async_nats::Event) {
    match e {
        async_nats::Event::Disconnected => {
            link.stats.link_changes.fetch_add(1, Ordering::Relaxed);
            link.up.store(false, Ordering::Release);
            let mut s = state.borrow_mut();
            s.connected = false;
            s.down_since = Some(Instant::now());
            tracing::warn!("cluster: lost the link to NATS; serving local peers only");
        }
        async_nats::Event::Connected => {
            link.stats.link_changes.fetch_add(1, Ordering::Relaxed);
            let mut s = state.borrow_mut();
            if s.connected {
                return;
            }
            s.connected = true;
            let down = s.down_since.take().map(|t| t.elapsed());
            tracing::info!(
                down_ms = down.map(|d| d.as_millis() as u64),
                "cluster: link to NATS back"
            );
            s.resync_all();
            link.cmd(BridgeCmd::Heartbeat);
            link.cmd(BridgeCmd::Recheck);
            link.up.store(true, Ordering::Release);
        }
        async_nats::Event::SlowConsumer(_) => {
            link.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster: NATS dropped messages for a slow subscription");
        }
        other => tracing::debug!(event = %other, "cluster: NATS event"),
    }
}

async fn read(state: Shared_, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        state.borrow_mut().incoming(m.payload);
    }
}

async fn ticks(state: Shared_) {
    let interval = state.borrow().interval;
    let mut quarter = tokio::time::interval(interval / 4);
    let mut n = 0u32;
    loop {
        quarter.tick().await;
        n += 1;
        let s = state.borrow();
        if n % 4 == 0 {
            s.link.cmd(BridgeCmd::Heartbeat);
        }
        drop(s);
        state.borrow_mut().tick();
    }
}

/// The one task that publishes: commands in the order the shards sent them.
async fn publish_loop(
    state: &Shared_,
    client: &Client,
    kv: &kv::Store,
    rx: &flume::Receiver<BridgeCmd>,
    opts: &ClusterOptions,
) {
    let (prefix, link) = {
        let s = state.borrow();
        (s.prefix.clone(), s.link.clone())
    };
    // This incarnation's state subject (a new one after a rejoin).
    let mut my_state = (0, Subject::from(""));
    let broadcast = Subject::from(format!("{prefix}.b"));
    let mut topic_subjects: HashMap<Arc<str>, Subject> = HashMap::new();
    // State changes are numbered and sent in batches: those queued back to back (a burst
    // of connects) go as one delta, sent before whatever command follows them, so that a
    // heartbeat still comes after the changes it counts.
    let mut pending: Vec<Op> = Vec::new();
    let mut pending_bytes = 0;
    let mut held: Option<BridgeCmd> = None;
    loop {
        let next = match held.take() {
            Some(c) => Some(c),
            None if pending.is_empty() => match rx.recv_async().await {
                Ok(c) => Some(c),
                Err(_) => return,
            },
            None => rx.try_recv().ok(),
        };
        let cmd = match next {
            Some(BridgeCmd::State(ops)) => {
                let n: usize = ops.iter().map(wire::op_len).sum();
                let max = link.max_payload.load(Ordering::Relaxed).saturating_sub(64);
                if pending.is_empty() || pending_bytes + n <= max.min(MAX_DELTA_BYTES) {
                    pending.extend(ops);
                    pending_bytes += n;
                    continue;
                }
                held = Some(BridgeCmd::State(ops));
                None
            }
            Some(c) if !pending.is_empty() => {
                held = Some(c);
                None
            }
            other => other,
        };
        let Some(cmd) = cmd else {
            // The batch is complete: number it and send it.
            let ops = std::mem::take(&mut pending);
            pending_bytes = 0;
            let epoch = link.epoch();
            let payload = {
                let mut s = state.borrow_mut();
                s.seq += ops.len() as u64;
                wire::delta(epoch, s.seq, &ops)
            };
            publish(
                state,
                client,
                &link,
                state_of(&mut my_state, &prefix, epoch),
                payload,
            )
            .await;
            continue;
        };
        let (subject, payload, counted) = match cmd {
            BridgeCmd::Stop => return,
            BridgeCmd::ToNode { slot, payload } => {
                let epoch = state.borrow().slots.get(slot).copied();
                let n = payload.len();
                match epoch {
                    Some(Ok(epoch)) => (Subject::from(inbox(&prefix, epoch)), payload, n),
                    _ => {
                        link.taken(n);
                        continue;
                    }
                }
            }
            BridgeCmd::Topic { topic, payload } => {
                let n = payload.len();
                let subject = topic_subjects
                    .entry(topic.clone())
                    .or_insert_with(|| Subject::from(topic_subject(&prefix, &topic)))
                    .clone();
                if topic_subjects.len() > 65_536 {
                    topic_subjects.clear();
                }
                (subject, payload, n)
            }
            BridgeCmd::Broadcast(payload) => {
                let n = payload.len();
                (broadcast.clone(), payload, n)
            }
            BridgeCmd::Publish { subject, payload } => (Subject::from(subject), payload, 0),
            BridgeCmd::Heartbeat => {
                let epoch = link.epoch();
                let s = state.borrow();
                let p = wire::heartbeat(epoch, s.seq, millis(s.interval), false, &link.node_id);
                (state_of(&mut my_state, &prefix, epoch), p, 0)
            }
            // Taken into the batch above; kept in order all the same if one got here.
            BridgeCmd::State(ops) => {
                pending_bytes += ops.iter().map(wire::op_len).sum::<usize>();
                pending.extend(ops);
                continue;
            }
            BridgeCmd::Rejoin(why) => {
                if !state.borrow().rejoining {
                    let (state, client, kv) = (state.clone(), client.clone(), kv.clone());
                    tokio::task::spawn_local(async move { rejoin(state, client, kv, why).await });
                }
                continue;
            }
            BridgeCmd::Recheck if opts.kv_memory => {
                // A bucket in memory is lost when NATS restarts: make it again, and
                // claim again the ids this node holds.
                let (state, client, opts) = (state.clone(), client.clone(), opts.clone());
                tokio::task::spawn_local(async move {
                    match open_bucket(&client, &opts).await {
                        Ok(kv) => recheck_all(&state, &kv).await,
                        Err(e) => {
                            tracing::error!(error = %e, "cluster: cannot reopen the id bucket")
                        }
                    }
                });
                continue;
            }
            BridgeCmd::Recheck => continue,
            BridgeCmd::Reap { epoch, peers } => {
                tokio::task::spawn_local(reap(state.clone(), kv.clone(), epoch, peers));
                continue;
            }
            BridgeCmd::Interest(topic) => {
                interest(state, client, &topic).await;
                continue;
            }
            BridgeCmd::Claim(req) => {
                tokio::task::spawn_local(claim(state.clone(), kv.clone(), req));
                continue;
            }
            BridgeCmd::Release { peer, session } => {
                let mut s = state.borrow_mut();
                if s.holds(&peer, session) {
                    if let Some((_, rev)) = s.claims.remove(&peer) {
                        s.claims_changed();
                        // A failure means the id was claimed again since: nothing to do.
                        kv_delete(state, &mut s, kv, &peer, rev);
                    }
                }
                // The id may be held on another node (it was taken while this node was
                // cut off, and the local session was just closed for it).
                s.reveal(&peer);
                continue;
            }
        };
        if counted > 0 {
            link.taken(counted);
        }
        publish(state, client, &link, subject, payload).await;
    }
}

/// Publish one message, or count it dropped.
async fn publish(
    state: &Shared_,
    client: &Client,
    link: &ClusterLink,
    subject: Subject,
    payload: Bytes,
) {
    // While the link is down a publish would wait for it (async-nats queues, then
    // blocks): drop and count instead; the state changes are caught up by snapshot.
    if !state.borrow().connected {
        link.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    link.stats.messages_out.fetch_add(1, Ordering::Relaxed);
    link.stats
        .bytes_out
        .fetch_add(payload.len() as u64, Ordering::Relaxed);
    if client.publish(subject, payload).await.is_err() {
        link.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The state subject of incarnation `epoch`, made once per epoch.
fn state_of(cache: &mut (u64, Subject), prefix: &str, epoch: u64) -> Subject {
    if cache.0 != epoch {
        *cache = (epoch, Subject::from(state_subject(prefix, epoch)));
    }
    cache.1.clone()
}

/// Delete `peer`'s entry if it is still at `rev`, counted in `kv_pending` until done.
fn kv_delete(state: &Shared_, s: &mut State, kv: &kv::Store, peer: &str, rev: u64) {
    s.kv_pending += 1;
    let (state, kv, key) = (state.clone(), kv.clone(), claims::key(peer));
    tokio::task::spawn_local(async move {
        let _ = kv.delete_expect_revision(key, Some(rev)).await;
        state.borrow_mut().kv_pending -= 1;
    });
}

/// Make the subscription to `topic`'s subject match the local membership; once NATS has
/// processed a new subscription, tell the shards (joins waiting for it are answered).
async fn interest(state: &Shared_, client: &Client, topic: &Arc<str>) {
    let (wanted, have, prefix, shared) = {
        let s = state.borrow();
        let wanted = s.shared.topics.local_count(topic) > 0;
        (
            wanted,
            s.subs.get(topic).map(|(_, live)| *live),
            s.prefix.clone(),
            s.shared.clone(),
        )
    };
    match (wanted, have) {
        (true, Some(true)) => confirm(&shared, topic),
        (true, Some(false)) => {}
        (true, None) => {
            let sub = match client.subscribe(topic_subject(&prefix, topic)).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "cluster: cannot subscribe");
                    confirm(&shared, topic);
                    return;
                }
            };
            let task = tokio::task::spawn_local(read(state.clone(), sub));
            {
                let mut s = state.borrow_mut();
                s.subs.insert(topic.clone(), (task.abort_handle(), false));
                s.subs_changed();
            }
            // A request nobody answers comes back "no responders" from the server itself,
            // after it processed everything sent before it on this connection: the SUB too.
            let barrier = client.request(format!("{prefix}.barrier"), Bytes::new());
            let _ = tokio::time::timeout(BARRIER_TIMEOUT, barrier).await;
            if let Some(e) = state.borrow_mut().subs.get_mut(topic) {
                e.1 = true;
            }
            confirm(&shared, topic);
        }
        (false, Some(_)) => {
            let mut s = state.borrow_mut();
            if let Some((task, _)) = s.subs.remove(topic) {
                task.abort();
            }
            s.subs_changed();
        }
        (false, None) => {}
    }
}

/// The topic's subscription is in place (or cannot be): joins waiting for it go on.
fn confirm(shared: &Shared, topic: &Arc<str>) {
    if shared.topics.set_subscribed(topic) {
        for i in 0..shared.shards() {
            shared.send(i, ShardMsg::TopicReady(topic.clone()));
        }
    }
}

/// Claim an id for a handshake.
async fn claim(state: Shared_, kv: kv::Store, req: ClaimRequest) {
    let link = state.borrow().link.clone();
    let me = Holder {
        epoch: link.epoch(),
        at: req.at,
        token_hash: claims::token_hash(&req.token),
    };
    let result = claim_for(&state, &kv, &req, &me).await;
    let out = match result {
        Ok((peer, rev, displaced)) => {
            let mut s = state.borrow_mut();
            s.claims.insert(peer.clone(), (me, rev));
            s.claims_changed();
            if let Some(old) = displaced {
                if !s.is_mine(old.epoch) && s.nodes.contains_key(&old.epoch) {
                    let subject = inbox(&s.prefix, old.epoch);
                    s.link.cmd(BridgeCmd::Publish {
                        subject,
                        payload: wire::kick(link.epoch(), old.at, Code::Replaced.as_u16()),
                    });
                }
            }
            if me.epoch != link.epoch() {
                // The node rejoined while this claim was being made: it names the old
                // epoch, which the others hold for gone. Move it like the others.
                let (state, kv, peer) = (state.clone(), kv.clone(), peer.clone());
                tokio::task::spawn_local(async move { recheck(&state, &kv, peer).await });
            }
            Ok(Claimed { peer })
        }
        Err(e) => Err(e),
    };
    if let Err(flume::SendError(Ok(c))) = req.reply.send(out) {
        // The handshake gave up waiting (its deadline, or the peer left): the claim must
        // not outlive it.
        let mut s = state.borrow_mut();
        if s.holds(&c.peer, req.at.session) {
            if let Some((_, rev)) = s.claims.remove(&c.peer) {
                s.claims_changed();
                kv_delete(&state, &mut s, &kv, &c.peer, rev);
            }
        }
    }
}

/// Rejoin under a new epoch: the cluster declared this incarnation gone (or surely will:
/// it was paused for longer than it allows), so the others dropped its peers and may have
/// given some of their ids to new sessions. Admitting stops meanwhile; every id this node
/// holds is checked and moved to the new epoch, or its local session is closed as
/// Replaced; then the node is announced anew, and the others take its state by snapshot.
async fn rejoin(state: Shared_, client: Client, kv: kv::Store, why: &'static str) {
    let (link, prefix, old, seq, interval) = {
        let mut s = state.borrow_mut();
        if s.rejoining {
            return;
        }
        s.rejoining = true;
        (
            s.link.clone(),
            s.prefix.clone(),
            s.link.epoch(),
            s.seq,
            s.interval,
        )
    };
    link.up.store(false, Ordering::Release);
    link.stats.rejoins.fetch_add(1, Ordering::Relaxed);
    let new = super::link::new_epoch();
    tracing::warn!(
        why,
        old = format_args!("{old:016x}"),
        new = format_args!("{new:016x}"),
        "cluster: rejoining under a new epoch"
    );
    // The new inbox is in place before anyone can learn of it.
    let Ok(sub) = client.subscribe(inbox(&prefix, new)).await else {
        return; // the client is closed: the server is stopping
    };
    let reader = tokio::task::spawn_local(read(state.clone(), sub));
    {
        let mut s = state.borrow_mut();
        s.past_epochs.push(old);
        if s.past_epochs.len() > 16 {
            s.past_epochs.remove(0);
        }
        link.set_epoch(new);
        if let Some(h) = s.inbox_reader.replace(reader.abort_handle()) {
            h.abort();
        }
    }
    // The old incarnation says goodbye: a node that has not declared it gone yet drops it
    // now, rather than hold its peers twice until it does.
    let bye = wire::heartbeat(old, seq, millis(interval), true, &link.node_id);
    publish(
        &state,
        &client,
        &link,
        state_subject(&prefix, old).into(),
        bye,
    )
    .await;
    recheck_all(&state, &kv).await;
    state.borrow_mut().resync_all();
    link.cmd(BridgeCmd::Heartbeat);
    synced(&state).await;
    let mut s = state.borrow_mut();
    s.rejoining = false;
    if s.connected {
        link.up.store(true, Ordering::Release);
    }
    tracing::info!(
        epoch = format_args!("{new:016x}"),
        ids = s.claims.len(),
        "cluster: rejoined"
    );
}

/// [`recheck`] every id this node holds.
async fn recheck_all(state: &Shared_, kv: &kv::Store) {
    let held: Vec<Arc<str>> = state.borrow().claims.keys().cloned().collect();
    futures_util::stream::iter(held)
        .for_each_concurrent(KV_CONCURRENCY, |peer| async move {
            recheck(state, kv, peer).await
        })
        .await;
}

/// Check `peer`'s claim against the bucket and move it to this node's epoch. Taken by
/// another session meanwhile: the local session is closed as Replaced. Absent (a dead
/// node's ids reaped, a memory bucket after a NATS restart): claimed again.
async fn recheck(state: &Shared_, kv: &kv::Store, peer: Arc<str>) {
    let key = claims::key(&peer);
    for _ in 0..4 {
        let (held, epoch) = {
            let s = state.borrow();
            match s.claims.get(&peer) {
                Some((h, _)) => (*h, s.link.epoch()),
                None => return, // released meanwhile
            }
        };
        let mine = Holder { epoch, ..held };
        let Ok(entry) = kv.entry(key.clone()).await else {
            // The store cannot answer: keep the claim; a node that takes the id will tell.
            return;
        };
        let written = match entry {
            None => kv.create(&key, mine.encode()).await.ok(),
            Some(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => {
                kv.update(&key, mine.encode(), e.revision).await.ok()
            }
            Some(e) => {
                let ours = Holder::decode(&e.value).filter(|h| {
                    h.at == held.at
                        && h.token_hash == held.token_hash
                        && state.borrow().is_mine(h.epoch)
                });
                match ours {
                    None => {
                        lost(state, &peer, held);
                        return;
                    }
                    Some(h) if h.epoch == epoch => Some(e.revision),
                    Some(_) => kv.update(&key, mine.encode(), e.revision).await.ok(),
                }
            }
        };
        if let Some(rev) = written {
            let mut s = state.borrow_mut();
            if let Some(c) = s.claims.get_mut(&peer).filter(|(h, _)| h.at == held.at) {
                *c = (mine, rev);
            }
            return;
        }
        // A concurrent write (a resume, the reaper): read again.
    }
}

/// This node's session of `peer` lost its id while the node was cut off: close it.
fn lost(state: &Shared_, peer: &Arc<str>, held: Holder) {
    let mut s = state.borrow_mut();
    if !s.holds(peer, held.at.session) {
        return;
    }
    s.claims.remove(peer);
    s.claims_changed();
    s.link.stats.ids_lost.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%peer, "cluster: id claimed elsewhere while this node was cut off; closing its session here");
    if let Some(i) = s.local_shard(held.at) {
        s.shared.send(
            i,
            ShardMsg::Kick {
                session: held.at.session,
                code: Code::Replaced,
                reason: "peer id claimed on another node while this node was cut off",
            },
        );
    }
}

/// Delete the bucket entries of dead incarnation `epoch`'s peers that still name it.
async fn reap(state: Shared_, kv: kv::Store, epoch: u64, peers: Vec<Arc<str>>) {
    state.borrow_mut().kv_pending += 1;
    futures_util::stream::iter(peers)
        .for_each_concurrent(KV_CONCURRENCY, |peer| {
            let (kv, state) = (&kv, &state);
            async move {
                let key = claims::key(&peer);
                let Ok(Some(e)) = kv.entry(key.clone()).await else {
                    return;
                };
                let theirs = e.operation == Operation::Put
                    && Holder::decode(&e.value).is_some_and(|h| h.epoch == epoch);
                if theirs
                    && kv
                        .delete_expect_revision(key, Some(e.revision))
                        .await
                        .is_ok()
                {
                    state
                        .borrow()
                        .link
                        .stats
                        .ids_reaped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    state.borrow_mut().kv_pending -= 1;
}

async fn claim_for(
    state: &Shared_,
    kv: &kv::Store,
    req: &ClaimRequest,
    me: &Holder,
) -> Result<claims::Won, (Code, String)> {
    // The liveness view is read when the entry is, on this thread; `Snap` copies what it
    // needs so no borrow is held across the awaits.
    struct Snap(Shared_);
    impl Liveness for Snap {
        fn alive(&self, peer: &str, h: &Holder) -> bool {
            self.0.borrow().alive(peer, h)
        }
    }
    let live = Snap(state.clone());
    let resume = req.resume.as_deref();
    if let Some(peer) = &req.peer {
        let won =
            claims::claim_id(kv, &live, peer.clone(), me, resume, req.resumes_assigned).await?;
        if let Some(w) = won {
            return Ok(w);
        }
    }
    // A fresh assigned id: all digits, unique in the cluster (a random prefix per node,
    // checked by the create-only claim).
    for _ in 0..4 {
        let id: Arc<str> = {
            let s = state.borrow();
            s.shared.assign_peer_id().into()
        };
        if let Some(w) = claims::claim_id(kv, &live, id, me, None, false)
            .await
            .ok()
            .flatten()
        {
            return Ok(w);
        }
    }
    Err((Code::Overloaded, "cannot assign a peer id, retry".into()))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(redact("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("tls://tok@h:4222"), "tls://***@h:4222");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact("h:4222"), "h:4222");
        assert_eq!(redact("nats://u:p@ss@h"), "nats://***@h");
    }
}
