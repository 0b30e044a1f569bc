//! Everything peers do with each other: topics, presence, direct messages, peer-to-peer
//! RPC and signaling, across shards.
//!
//! # Where state lives
//!
//! - [`TopicIndex`] (shared, striped like the peer directory): for each topic, its members
//!   (peer id -> shard, session), how many members each shard has, and how many presence
//!   watchers each shard has. It is the source of truth for membership, member listings,
//!   limits and for deciding *which shards* a publish must reach. Joins, leaves and watch
//!   registrations take one stripe's write lock; a publish takes one stripe's read lock.
//! - [`ShardTopics`] (per shard, `RefCell`): the local member connections of each topic (for
//!   fan-out without touching shared state), local presence watchers, and relayed RPC calls
//!   waiting for an answer from a peer on this shard.
//! - [`PeerTopics`] (per connection): topics joined and watches held, for limits and
//!   cleanup on disconnect.
//!
//! # Fan-out
//!
//! A publish is encoded once on the publisher's shard. Local members get the frame
//! directly; every other shard with members gets one message carrying the same `Bytes`,
//! and fans out locally. Per publisher, order is preserved: one FIFO channel per shard pair.
//!
//! # Presence consistency
//!
//! A watch is registered and its snapshot taken under the same stripe lock that joins and
//! leaves take to decide whom to notify, so each change is either in the snapshot or sent
//! as an event, never both and never neither. Global presence uses a counter checked after
//! the directory changed (sequentially consistent), with the same effect. Each watcher also
//! remembers which session of each peer it last reported, so a takeover is shown as leave
//! then join even when the two notifications come from different shards in either order.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerd_codec::{
    self as codec, ArchivedEvent, ArchivedRpcRequest, Code, Frame, PresenceChange, SignalKind,
};

use crate::conn::Conn;
use crate::shard::{Shard, ShardMsg};

const STRIPES: usize = 64;

/// Shared topic membership, striped by topic name.
pub(crate) struct TopicIndex {
    stripes: Vec<RwLock<HashMap<Arc<str>, TopicEntry>>>,
    hasher: RandomState,
    /// Live global presence watches (all shards); see the module doc.
    pub global_watchers: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct TopicEntry {
    members: HashMap<Arc<str>, (usize, u64)>,
    per_shard: Vec<u32>,
    watchers: Vec<u32>,
}

impl TopicEntry {
    fn shards_with(counts: &[u32]) -> Vec<usize> {
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| i)
            .collect()
    }
}

impl TopicIndex {
    pub fn new() -> TopicIndex {
        TopicIndex {
            stripes: (0..STRIPES).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            global_watchers: Default::default(),
        }
    }

    fn stripe(&self, topic: &str) -> &RwLock<HashMap<Arc<str>, TopicEntry>> {
        &self.stripes[(self.hasher.hash_one(topic) as usize) % STRIPES]
    }

    /// Number of topics with members or watchers (for tests and stats).
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Run `f` on the entry for `topic` under its stripe's write lock, creating the entry
    /// (sized for `shards`) if it does not exist.
    fn update<R>(
        &self,
        topic: &Arc<str>,
        shards: usize,
        f: impl FnOnce(&mut TopicEntry) -> R,
    ) -> R {
        let mut map = self
            .stripe(topic)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let e = map.entry(topic.clone()).or_insert_with(|| TopicEntry {
            members: HashMap::new(),
            per_shard: vec![0; shards],
            watchers: vec![0; shards],
        });
        f(e)
    }

    /// Shards that have members of `topic`.
    fn member_shards(&self, topic: &str) -> Vec<usize> {
        let map = self.stripe(topic).read().unwrap_or_else(|e| e.into_inner());
        map.get(topic)
            .map(|e| TopicEntry::shards_with(&e.per_shard))
            .unwrap_or_default()
    }

    /// (shard, session) of `peer` if it is a member of `topic`.
    pub fn member(&self, topic: &str, peer: &str) -> Option<(usize, u64)> {
        let map = self.stripe(topic).read().unwrap_or_else(|e| e.into_inner());
        map.get(topic).and_then(|e| e.members.get(peer).copied())
    }

    pub fn members(&self, topic: &str) -> Vec<String> {
        let map = self.stripe(topic).read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = map
            .get(topic)
            .map(|e| e.members.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Per-connection topic state.
#[derive(Default)]
pub(crate) struct PeerTopics {
    joined: HashSet<Arc<str>>,
    watch_global: bool,
    watched: HashSet<Arc<str>>,
}

/// What one watcher has reported: peer id -> the session it last reported as joined.
type Reported = HashMap<Arc<str>, u64>;

/// Watchers on this shard by session: the connection and what it has been told.
type Watchers = HashMap<u64, (Rc<Conn>, Reported)>;

struct Relay {
    caller_shard: usize,
    caller_session: u64,
    caller_id: u64,
    deadline: Instant,
}

/// Per-shard topic state.
#[derive(Default)]
pub(crate) struct ShardTopics {
    members: HashMap<Arc<str>, Vec<Rc<Conn>>>,
    global_watchers: Watchers,
    topic_watchers: HashMap<Arc<str>, Watchers>,
    /// Relayed peer-to-peer calls awaiting an answer from a peer on this shard, keyed by
    /// (callee session, id the server gave the callee).
    relays: HashMap<(u64, u64), Relay>,
    sweeper_running: bool,
}

fn exec(shard: &Shard, target: usize, f: impl FnOnce(&Rc<Shard>) + Send + 'static) {
    let _ = shard.shared.senders[target].send(ShardMsg::Exec(Box::new(f)));
}

// ---- connect / disconnect -------------------------------------------------------------

pub(crate) fn on_connect(conn: &Rc<Conn>) {
    announce_global(conn, PresenceChange::Join);
}

pub(crate) fn on_disconnect(conn: &Rc<Conn>) {
    let shard = &conn.shard;
    let state = std::mem::take(&mut *conn.topics.borrow_mut());
    for t in &state.joined {
        leave_topic(conn, t);
    }
    {
        let mut st = shard.topics.borrow_mut();
        if state.watch_global {
            st.global_watchers.remove(&conn.session);
            shard
                .shared
                .topics
                .global_watchers
                .fetch_sub(1, Ordering::SeqCst);
        }
        for t in &state.watched {
            if let Some(w) = st.topic_watchers.get_mut(t) {
                w.remove(&conn.session);
                if w.is_empty() {
                    st.topic_watchers.remove(t);
                }
            }
        }
    }
    for t in &state.watched {
        unregister_topic_watch(shard, t);
    }
    fail_relays_to(conn);
    announce_global(conn, PresenceChange::Leave);
}

fn notify_embedder(conn: &Rc<Conn>, topic: Option<&str>, change: PresenceChange) {
    if let Some(f) = &conn.shard.shared.opts.on_presence {
        f(crate::options::PresenceNotice {
            topic: topic.map(str::to_string),
            peer_id: conn.peer_id.to_string(),
            joined: change == PresenceChange::Join,
        });
    }
}

/// Tell every shard about a global join/leave, if anyone watches.
fn announce_global(conn: &Rc<Conn>, change: PresenceChange) {
    notify_embedder(conn, None, change);
    // The directory has already changed; see the module doc for why checking the counter
    // after it is enough.
    if conn
        .shard
        .shared
        .topics
        .global_watchers
        .load(Ordering::SeqCst)
        == 0
    {
        return;
    }
    let peer = conn.peer_id.clone();
    let session = conn.session;
    for i in 0..conn.shard.shared.senders.len() {
        let peer = peer.clone();
        if i == conn.shard.index {
            deliver_presence(&conn.shard, None, &peer, session, change);
        } else {
            exec(&conn.shard, i, move |s| {
                deliver_presence(s, None, &peer, session, change)
            });
        }
    }
}

/// Apply one presence change to this shard's watchers of `topic` (None = global).
fn deliver_presence(
    shard: &Rc<Shard>,
    topic: Option<&Arc<str>>,
    peer: &Arc<str>,
    session: u64,
    change: PresenceChange,
) {
    let mut out: Vec<(Rc<Conn>, PresenceChange)> = Vec::new();
    {
        let mut st = shard.topics.borrow_mut();
        let watchers = match topic {
            None => Some(&mut st.global_watchers),
            Some(t) => st.topic_watchers.get_mut(t),
        };
        let Some(watchers) = watchers else { return };
        for (conn, reported) in watchers.values_mut() {
            match change {
                PresenceChange::Join => match reported.get(peer).copied() {
                    Some(s) if s == session => {}
                    Some(_) => {
                        // A takeover seen join-first: report the old session's leave now.
                        reported.insert(peer.clone(), session);
                        out.push((conn.clone(), PresenceChange::Leave));
                        out.push((conn.clone(), PresenceChange::Join));
                    }
                    None => {
                        reported.insert(peer.clone(), session);
                        out.push((conn.clone(), PresenceChange::Join));
                    }
                },
                PresenceChange::Leave => {
                    if reported.get(peer) == Some(&session) {
                        reported.remove(peer);
                        out.push((conn.clone(), PresenceChange::Leave));
                    }
                }
            }
        }
    }
    if out.is_empty() {
        return;
    }
    let frame = |change| {
        shard.encode(&codec::Presence {
            topic: topic.map(|t| Cow::Borrowed(&**t)),
            peer: Cow::Borrowed(peer),
            change,
        })
    };
    let (Ok(join), Ok(leave)) = (frame(PresenceChange::Join), frame(PresenceChange::Leave)) else {
        return;
    };
    for (conn, change) in out {
        let f = if change == PresenceChange::Join {
            &join
        } else {
            &leave
        };
        let _ = conn.queue(f.clone());
    }
}

// ---- frames from clients ----------------------------------------------------------------

pub(crate) fn dispatch(conn: &Rc<Conn>, frame: Frame<'_>) {
    match frame {
        Frame::Join(j) => {
            let (code, msg) = join(conn, j.topic.as_str());
            conn.status(j.req.to_native(), code, msg);
        }
        Frame::Leave(l) => {
            let topic = l.topic.as_str();
            let was = conn.topics.borrow_mut().joined.take(topic);
            match was {
                Some(t) => {
                    leave_topic(conn, &t);
                    conn.status(l.req.to_native(), Code::Ok, "");
                }
                None => conn.status(
                    l.req.to_native(),
                    Code::NotMember,
                    "not a member of this topic",
                ),
            }
        }
        Frame::Publish(p) => {
            let req = p.req.to_native();
            let topic = p.topic.as_str();
            let msg = codec::TopicMessage {
                topic: Cow::Borrowed(topic),
                from: Cow::Borrowed(&conn.peer_id),
                direct: false,
                payload: Cow::Borrowed(p.payload.as_slice()),
            };
            let exclude = if p.echo { 0 } else { conn.session };
            match conn.shard.encode(&msg) {
                Ok(frame) => {
                    fan_out(&conn.shard, topic, frame, exclude);
                    conn.status(req, Code::Ok, "");
                }
                Err(e) => conn.status(req, Code::TooLarge, &e.to_string()),
            }
        }
        Frame::TopicSend(s) => {
            let req = s.req.to_native();
            let topic = s.topic.as_str();
            let to = s.to.as_str();
            let Some((shard, session)) = conn.shard.shared.topics.member(topic, to) else {
                return not_member_or_unknown(conn, req, to);
            };
            let msg = codec::TopicMessage {
                topic: Cow::Borrowed(topic),
                from: Cow::Borrowed(&conn.peer_id),
                direct: true,
                payload: Cow::Borrowed(s.payload.as_slice()),
            };
            deliver(conn, shard, session, &msg);
            conn.status(req, Code::Ok, "");
        }
        Frame::Watch(w) => {
            let topic = codec::opt_str(&w.topic);
            let (code, msg) = watch(conn, topic);
            conn.status(w.req.to_native(), code, msg);
        }
        Frame::Unwatch(u) => {
            let topic = codec::opt_str(&u.topic);
            let (code, msg) = unwatch(conn, topic);
            conn.status(u.req.to_native(), code, msg);
        }
        Frame::ListPeers(l) => {
            let peers = match codec::opt_str(&l.topic) {
                Some(t) => conn.shard.shared.topics.members(t),
                None => conn.shard.shared.directory.sorted_ids(),
            };
            let _ = conn.queue_msg(&codec::PeerList {
                req: l.req.to_native(),
                peers,
            });
        }
        Frame::Signal(s) => signal(conn, s),
        _ => {}
    }
}

fn not_member_or_unknown(conn: &Rc<Conn>, req: u64, to: &str) {
    if conn.shard.shared.directory.lookup(to).is_some() {
        conn.status(
            req,
            Code::NotMember,
            "the target peer is not a member of this topic",
        );
    } else {
        conn.status(req, Code::UnknownPeer, "no such peer");
    }
}

/// Queue `msg` to the peer at (shard, session), encoding it once here.
fn deliver<M: codec::Encode>(conn: &Rc<Conn>, shard: usize, session: u64, msg: &M) {
    let Ok(frame) = conn.shard.encode(msg) else {
        return;
    };
    conn.shard.deliver(shard, session, frame);
}

fn join(conn: &Rc<Conn>, topic: &str) -> (Code, &'static str) {
    let limits = conn.shard.limits();
    if codec::validate_topic(topic, limits.max_topic_len).is_err() {
        return (Code::InvalidArgument, "invalid topic name");
    }
    if conn.topics.borrow().joined.contains(topic) {
        return (Code::Ok, "");
    }
    if conn.topics.borrow().joined.len() >= limits.max_topics_per_peer as usize {
        return (Code::LimitExceeded, "too many topics for this peer");
    }
    let shard = &conn.shard;
    let index = &shard.shared.topics;
    let n = shard.shared.senders.len();
    let topic: Arc<str> = topic.into();
    let notify = index.update(&topic, n, |e| {
        if e.members.len() >= limits.max_members_per_topic as usize {
            return None;
        }
        e.members
            .insert(conn.peer_id.clone(), (shard.index, conn.session));
        e.per_shard[shard.index] += 1;
        Some(TopicEntry::shards_with(&e.watchers))
    });
    let Some(notify) = notify else {
        return (Code::LimitExceeded, "topic is full");
    };
    conn.topics.borrow_mut().joined.insert(topic.clone());
    shard
        .topics
        .borrow_mut()
        .members
        .entry(topic.clone())
        .or_default()
        .push(conn.clone());
    announce_topic(conn, &topic, notify, PresenceChange::Join);
    (Code::Ok, "")
}

fn leave_topic(conn: &Rc<Conn>, topic: &Arc<str>) {
    let shard = &conn.shard;
    {
        let mut st = shard.topics.borrow_mut();
        if let Some(v) = st.members.get_mut(topic) {
            v.retain(|c| c.session != conn.session);
            if v.is_empty() {
                st.members.remove(topic);
            }
        }
    }
    let notify = {
        let mut map = shard
            .shared
            .topics
            .stripe(topic)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let Some(e) = map.get_mut(topic) else { return };
        if e.members
            .get(&conn.peer_id)
            .is_some_and(|(_, s)| *s == conn.session)
        {
            e.members.remove(&conn.peer_id);
        }
        e.per_shard[shard.index] = e.per_shard[shard.index].saturating_sub(1);
        let notify = TopicEntry::shards_with(&e.watchers);
        if e.members.is_empty() && notify.is_empty() {
            map.remove(topic);
        }
        notify
    };
    announce_topic(conn, topic, notify, PresenceChange::Leave);
}

fn announce_topic(conn: &Rc<Conn>, topic: &Arc<str>, shards: Vec<usize>, change: PresenceChange) {
    notify_embedder(conn, Some(topic), change);
    for i in shards {
        let (t, p, s) = (topic.clone(), conn.peer_id.clone(), conn.session);
        if i == conn.shard.index {
            deliver_presence(&conn.shard, Some(&t), &p, s, change);
        } else {
            exec(&conn.shard, i, move |sh| {
                deliver_presence(sh, Some(&t), &p, s, change)
            });
        }
    }
}

/// Deliver a topic frame to every member (except session `exclude`), one message per
/// remote shard that has members.
fn fan_out(shard: &Rc<Shard>, topic: &str, frame: Bytes, exclude: u64) {
    for i in shard.shared.topics.member_shards(topic) {
        if i == shard.index {
            deliver_local(shard, topic, &frame, exclude);
        } else {
            let topic: Arc<str> = topic.into();
            let frame = frame.clone();
            exec(shard, i, move |s| deliver_local(s, &topic, &frame, exclude));
        }
    }
}

/// Server-originated publish from a non-shard thread: one message per shard with members.
pub(crate) fn fan_out_from_any_thread(shared: &crate::server::Shared, topic: &str, frame: Bytes) {
    for i in shared.topics.member_shards(topic) {
        let topic: Arc<str> = topic.into();
        let frame = frame.clone();
        let _ = shared.senders[i].send(ShardMsg::Exec(Box::new(move |s| {
            deliver_local(s, &topic, &frame, 0)
        })));
    }
}

fn deliver_local(shard: &Rc<Shard>, topic: &str, frame: &Bytes, exclude: u64) {
    let members: Vec<Rc<Conn>> = match shard.topics.borrow().members.get(topic) {
        Some(v) => v.clone(),
        None => return,
    };
    for c in members {
        if c.session != exclude {
            let _ = c.queue(frame.clone());
        }
    }
}

fn watch(conn: &Rc<Conn>, topic: Option<&str>) -> (Code, &'static str) {
    let shard = &conn.shard;
    match topic {
        None => {
            if conn.topics.borrow().watch_global {
                return (Code::Ok, "");
            }
            conn.topics.borrow_mut().watch_global = true;
            // Register first, then snapshot (module doc).
            shard
                .topics
                .borrow_mut()
                .global_watchers
                .insert(conn.session, (conn.clone(), HashMap::new()));
            shard
                .shared
                .topics
                .global_watchers
                .fetch_add(1, Ordering::SeqCst);
            let snapshot = shard.shared.directory.snapshot();
            let mut peers = Vec::with_capacity(snapshot.len());
            if let Some((_, reported)) = shard
                .topics
                .borrow_mut()
                .global_watchers
                .get_mut(&conn.session)
            {
                for (id, _, session) in snapshot {
                    peers.push(id.to_string());
                    reported.insert(id, session);
                }
            }
            peers.sort();
            let _ = conn.queue_msg(&codec::PresenceSnapshot { topic: None, peers });
        }
        Some(t) => {
            if codec::validate_topic(t, shard.limits().max_topic_len).is_err() {
                return (Code::InvalidArgument, "invalid topic name");
            }
            if conn.topics.borrow().watched.contains(t) {
                return (Code::Ok, "");
            }
            if conn.topics.borrow().watched.len() >= shard.limits().max_topics_per_peer as usize {
                return (Code::LimitExceeded, "too many watches for this peer");
            }
            let topic: Arc<str> = t.into();
            let n = shard.shared.senders.len();
            // Register and snapshot under one lock (module doc).
            let members: Vec<(Arc<str>, u64)> = shard.shared.topics.update(&topic, n, |e| {
                e.watchers[shard.index] += 1;
                e.members
                    .iter()
                    .map(|(k, (_, s))| (k.clone(), *s))
                    .collect()
            });
            conn.topics.borrow_mut().watched.insert(topic.clone());
            let mut peers: Vec<String> = members.iter().map(|(k, _)| k.to_string()).collect();
            peers.sort();
            shard
                .topics
                .borrow_mut()
                .topic_watchers
                .entry(topic.clone())
                .or_default()
                .insert(conn.session, (conn.clone(), members.into_iter().collect()));
            let _ = conn.queue_msg(&codec::PresenceSnapshot {
                topic: Some(Cow::Borrowed(t)),
                peers,
            });
        }
    }
    (Code::Ok, "")
}

fn unwatch(conn: &Rc<Conn>, topic: Option<&str>) -> (Code, &'static str) {
    let shard = &conn.shard;
    match topic {
        None => {
            if !std::mem::take(&mut conn.topics.borrow_mut().watch_global) {
                return (Code::NotMember, "no global watch to stop");
            }
            shard
                .topics
                .borrow_mut()
                .global_watchers
                .remove(&conn.session);
            shard
                .shared
                .topics
                .global_watchers
                .fetch_sub(1, Ordering::SeqCst);
        }
        Some(t) => {
            let Some(topic) = conn.topics.borrow_mut().watched.take(t) else {
                return (Code::NotMember, "no watch on this topic");
            };
            {
                let mut st = shard.topics.borrow_mut();
                if let Some(w) = st.topic_watchers.get_mut(&topic) {
                    w.remove(&conn.session);
                    if w.is_empty() {
                        st.topic_watchers.remove(&topic);
                    }
                }
            }
            unregister_topic_watch(shard, &topic);
        }
    }
    (Code::Ok, "")
}

fn unregister_topic_watch(shard: &Rc<Shard>, topic: &str) {
    let mut map = shard
        .shared
        .topics
        .stripe(topic)
        .write()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(e) = map.get_mut(topic) {
        e.watchers[shard.index] = e.watchers[shard.index].saturating_sub(1);
        if e.members.is_empty() && e.watchers.iter().all(|w| *w == 0) {
            map.remove(topic);
        }
    }
}

fn signal(conn: &Rc<Conn>, s: &codec::ArchivedSignal<'static>) {
    let req = s.req.to_native();
    let room = s.room.as_str();
    if !conn.topics.borrow().joined.contains(room) {
        return conn.status(req, Code::NotMember, "join the room before signaling in it");
    }
    let kind = match s.kind {
        codec::ArchivedSignalKind::Offer => SignalKind::Offer,
        codec::ArchivedSignalKind::Answer => SignalKind::Answer,
        codec::ArchivedSignalKind::Candidate => SignalKind::Candidate,
        codec::ArchivedSignalKind::Bye => SignalKind::Bye,
    };
    let msg = codec::Signal {
        req: 0,
        room: Cow::Borrowed(room),
        kind,
        peer: Some(Cow::Borrowed(&conn.peer_id)),
        payload: Cow::Borrowed(s.payload.as_slice()),
    };
    match codec::opt_str(&s.peer) {
        None if kind == SignalKind::Offer => {
            match conn.shard.encode(&msg) {
                Ok(frame) => fan_out(&conn.shard, room, frame, conn.session),
                Err(e) => return conn.status(req, Code::TooLarge, &e.to_string()),
            }
            conn.status(req, Code::Ok, "");
        }
        None => conn.status(
            req,
            Code::InvalidArgument,
            "only offers may go to the whole room",
        ),
        Some(to) => match conn.shard.shared.topics.member(room, to) {
            Some((shard, session)) => {
                deliver(conn, shard, session, &msg);
                conn.status(req, Code::Ok, "");
            }
            None => not_member_or_unknown(conn, req, to),
        },
    }
}

// ---- direct events and peer-to-peer RPC ------------------------------------------------

pub(crate) fn direct_event(conn: &Rc<Conn>, ev: &ArchivedEvent<'static>, target: &str) {
    let Some((shard, session)) = conn.shard.shared.directory.lookup(target) else {
        return conn.status(0, Code::UnknownPeer, "no such peer");
    };
    let msg = codec::Event {
        name: Cow::Borrowed(ev.name.as_str()),
        peer: Some(Cow::Borrowed(&conn.peer_id)),
        payload: Cow::Borrowed(ev.payload.as_slice()),
    };
    deliver(conn, shard, session, &msg);
}

pub(crate) fn forward_call(conn: &Rc<Conn>, r: &ArchivedRpcRequest<'static>, target: &str) {
    let caller_id = r.id.to_native();
    let Some((shard, session)) = conn.shard.shared.directory.lookup(target) else {
        let _ = conn.send_rpc_error(caller_id, Code::UnknownPeer.as_u16(), "no such peer");
        return;
    };
    let timeout_ms = match r.timeout_ms.to_native() {
        0 => conn
            .shard
            .shared
            .opts
            .default_call_timeout
            .as_millis()
            .min(u32::MAX as u128) as u32,
        t => t,
    };
    let call = RelayedCall {
        caller_shard: conn.shard.index,
        caller_session: conn.session,
        caller_id,
        caller_peer: conn.peer_id.clone(),
        callee_session: session,
        method: r.method.as_str().into(),
        timeout_ms,
        params: Bytes::copy_from_slice(r.params.as_slice()),
    };
    if shard == conn.shard.index {
        call.start(&conn.shard);
    } else {
        exec(&conn.shard, shard, move |s| call.start(s));
    }
}

struct RelayedCall {
    caller_shard: usize,
    caller_session: u64,
    caller_id: u64,
    caller_peer: Arc<str>,
    callee_session: u64,
    method: Box<str>,
    timeout_ms: u32,
    params: Bytes,
}

impl RelayedCall {
    /// On the callee's shard: send the request to the callee and remember where the answer
    /// goes.
    fn start(self, shard: &Rc<Shard>) {
        let Some(callee) = shard.conn(self.callee_session) else {
            return answer(
                shard,
                self.caller_shard,
                self.caller_session,
                self.caller_id,
                Err((Code::UnknownPeer.as_u16(), "peer left")),
            );
        };
        let id = callee.next_call_id();
        let sent = callee.queue_msg(&codec::RpcRequest {
            id,
            method: Cow::Borrowed(&self.method),
            peer: Some(Cow::Borrowed(&self.caller_peer)),
            timeout_ms: self.timeout_ms,
            params: Cow::Borrowed(&self.params),
        });
        if sent.is_err() {
            return answer(
                shard,
                self.caller_shard,
                self.caller_session,
                self.caller_id,
                Err((Code::PeerGone.as_u16(), "peer gone")),
            );
        }
        let mut st = shard.topics.borrow_mut();
        st.relays.insert(
            (self.callee_session, id),
            Relay {
                caller_shard: self.caller_shard,
                caller_session: self.caller_session,
                caller_id: self.caller_id,
                deadline: Instant::now() + Duration::from_millis(self.timeout_ms as u64),
            },
        );
        if !st.sweeper_running {
            st.sweeper_running = true;
            glommio::spawn_local(sweep_relays(shard.clone())).detach();
        }
    }
}

/// Send a relayed call's outcome to the caller, wherever it lives.
fn answer(
    shard: &Rc<Shard>,
    caller_shard: usize,
    caller_session: u64,
    caller_id: u64,
    r: Result<&[u8], (u16, &str)>,
) {
    let frame = match r {
        Ok(result) => shard.encode(&codec::RpcResponse {
            id: caller_id,
            result: Cow::Borrowed(result),
        }),
        Err((code, message)) => shard.encode(&codec::RpcError {
            id: caller_id,
            code,
            message: Cow::Borrowed(message),
        }),
    };
    let Ok(frame) = frame else { return };
    shard.deliver(caller_shard, caller_session, frame);
}

/// An RpcResponse/RpcError from `conn`: if it answers a relayed call, forward it and return
/// true.
pub(crate) fn relay_response(conn: &Rc<Conn>, id: u64, r: Result<&[u8], (u16, &str)>) -> bool {
    let relay = conn
        .shard
        .topics
        .borrow_mut()
        .relays
        .remove(&(conn.session, id));
    match relay {
        Some(rel) => {
            answer(
                &conn.shard,
                rel.caller_shard,
                rel.caller_session,
                rel.caller_id,
                r,
            );
            true
        }
        None => false,
    }
}

/// The callee left: every call relayed to it fails with PeerGone now.
fn fail_relays_to(conn: &Rc<Conn>) {
    let gone: Vec<Relay> = {
        let mut st = conn.shard.topics.borrow_mut();
        let keys: Vec<(u64, u64)> = st
            .relays
            .keys()
            .filter(|(s, _)| *s == conn.session)
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|k| st.relays.remove(&k))
            .collect()
    };
    for r in gone {
        answer(
            &conn.shard,
            r.caller_shard,
            r.caller_session,
            r.caller_id,
            Err((
                Code::PeerGone.as_u16(),
                "peer disconnected before answering",
            )),
        );
    }
}

/// Expire relayed calls past their deadline. One task per shard, alive only while calls
/// are pending (a timer per call would cost a task per call for its whole deadline).
async fn sweep_relays(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let now = Instant::now();
        let expired: Vec<Relay> = {
            let mut st = shard.topics.borrow_mut();
            let keys: Vec<(u64, u64)> = st
                .relays
                .iter()
                .filter(|(_, r)| r.deadline <= now)
                .map(|(k, _)| *k)
                .collect();
            let v = keys
                .into_iter()
                .filter_map(|k| st.relays.remove(&k))
                .collect();
            if st.relays.is_empty() {
                st.sweeper_running = false;
            }
            v
        };
        for r in &expired {
            answer(
                &shard,
                r.caller_shard,
                r.caller_session,
                r.caller_id,
                Err((Code::Timeout.as_u16(), "callee did not answer in time")),
            );
        }
        shard.flush_dirty();
        if !shard.topics.borrow().sweeper_running {
            return;
        }
    }
}
