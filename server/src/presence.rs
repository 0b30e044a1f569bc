//! Presence: watches (a snapshot of current members as joins, then live joins and leaves),
//! globally or per topic, and announcing a peer's joins and leaves to the shards that have
//! watchers.
//!
//! # Why no change is missed or shown twice
//!
//! - Per topic: a watch registers and takes its snapshot under the topic index's stripe
//!   lock, the same lock a join or leave takes to decide which shards to notify
//!   (`topic_index`). A change is in the snapshot or announced to the watcher's shard.
//! - Global: a watch first registers (counter `Shared::global_watchers`, sequentially
//!   consistent), then snapshots the directory; a connect or disconnect changes the
//!   directory first, then reads the counter. Either the watch sees the change in its
//!   snapshot, or the change sees the watch and is announced (or both; then the watcher's
//!   record of what it reported drops the duplicate).
//! - Takeovers: `watchers::report` turns a join of a new session of a reported peer into
//!   leave then join, whatever order the two shards' notices arrive in.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use peerd_codec::{self as codec, Code, PresenceChange};

use crate::conn::Conn;
use crate::error::Refused;
use crate::msg::ShardMsg;
use crate::options::PresenceNotice;
use crate::route::route;
use crate::shard::Shard;
use crate::watchers::Reported;

/// A member in a snapshot: peer id and the session that joined.
type Member = (Arc<str>, u64);

/// Tell embedding code (`ListenOptions::on_presence`).
fn notify_embedder(shard: &Shard, conn: &Conn, topic: Option<&str>, change: PresenceChange) {
    if let Some(f) = &shard.hooks.on_presence {
        f(PresenceNotice {
            topic: topic.map(str::to_string),
            peer_id: conn.peer_id.to_string(),
            joined: change == PresenceChange::Join,
        });
    }
}

/// A peer connected or disconnected: tell global watchers on every shard, if any watch.
pub(crate) fn announce_global(shard: &Rc<Shard>, conn: &Conn, change: PresenceChange) {
    notify_embedder(shard, conn, None, change);
    // The directory has already changed (module doc).
    if shard.shared().global_watchers.load(Ordering::SeqCst) == 0 {
        return;
    }
    for i in 0..shard.shared().shards() {
        route(
            shard,
            i,
            ShardMsg::Presence {
                topic: None,
                peer: conn.peer_id.clone(),
                session: conn.session,
                change,
            },
        );
    }
}

/// A peer joined or left `topic`: tell the watchers on `shards`.
pub(crate) fn announce_topic(
    shard: &Rc<Shard>,
    conn: &Conn,
    topic: &Arc<str>,
    shards: Vec<usize>,
    change: PresenceChange,
) {
    notify_embedder(shard, conn, Some(topic), change);
    for i in shards {
        route(
            shard,
            i,
            ShardMsg::Presence {
                topic: Some(topic.clone()),
                peer: conn.peer_id.clone(),
                session: conn.session,
                change,
            },
        );
    }
}

/// Start watching `topic` (None: every peer): send the snapshot, then live changes.
pub(crate) fn watch(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    topic: Option<&str>,
) -> Result<(), Refused> {
    let shared = shard.shared();
    let (topic, members): (Option<Arc<str>>, Vec<Member>) = match topic {
        None => {
            if std::mem::replace(&mut conn.topics.borrow_mut().held_mut().watch_global, true) {
                return Ok(());
            }
            // Register, then snapshot (module doc).
            shared.global_watchers.fetch_add(1, Ordering::SeqCst);
            let snapshot = shared.directory.snapshot();
            (
                None,
                snapshot.into_iter().map(|(id, _, s)| (id, s)).collect(),
            )
        }
        Some(t) => {
            let mut topics = conn.topics.borrow_mut();
            let mine = topics.held_mut();
            if mine.watched.contains(t) {
                return Ok(());
            }
            if mine.watched.len() >= shard.local.limits().max_topics_per_peer as usize {
                return Err(Refused::new(
                    Code::LimitExceeded,
                    "too many watches for this peer",
                ));
            }
            let t: Arc<str> = t.into();
            mine.watched.insert(t.clone());
            // Register and snapshot under one lock (module doc).
            let members = shared.topics.watch(&t, shard.index());
            (Some(t), members)
        }
    };
    let peers = crate::directory::sorted(members.iter().map(|(id, _)| id.clone()));
    let reported: Reported = members.into_iter().collect();
    shard
        .watchers
        .borrow_mut()
        .add(topic.as_ref(), conn.clone(), reported);
    let _ = conn.queue_msg(&codec::PresenceSnapshot {
        topic: topic.as_deref().map(Cow::Borrowed),
        peers,
    });
    Ok(())
}

/// Stop watching `topic` (None: the global watch).
pub(crate) fn unwatch(shard: &Rc<Shard>, conn: &Conn, topic: Option<&str>) -> Result<(), Refused> {
    let held = match topic {
        None => std::mem::take(&mut conn.topics.borrow_mut().held_mut().watch_global),
        Some(t) => conn.topics.borrow_mut().held_mut().watched.remove(t),
    };
    if !held {
        return Err(Refused::new(
            Code::NotMember,
            match topic {
                None => "no global watch to stop",
                Some(_) => "no watch on this topic",
            },
        ));
    }
    drop_watch(shard, conn.session, topic);
    Ok(())
}

fn drop_watch(shard: &Shard, session: u64, topic: Option<&str>) {
    shard.watchers.borrow_mut().remove(topic, session);
    match topic {
        None => {
            shard
                .shared()
                .global_watchers
                .fetch_sub(1, Ordering::SeqCst);
        }
        Some(t) => shard.shared().topics.unwatch(t, shard.index()),
    }
}

/// The peer is gone: drop every watch it held.
pub(crate) fn drop_all_watches(shard: &Shard, conn: &Conn) {
    let (global, watched) = conn.topics.borrow_mut().take_watches();
    if global {
        drop_watch(shard, conn.session, None);
    }
    for t in &watched {
        drop_watch(shard, conn.session, Some(t));
    }
}
