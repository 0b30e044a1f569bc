//! Topics: join, leave, publish to every member, send to one member.
//!
//! Membership lives in two places: the shared `topic_index` (who is a member, on which
//! shard: the source of truth, and what decides which shards a publish must reach) and each
//! shard's `members` (the member connections on that shard, for fan-out without touching
//! shared state).
//!
//! A publish is encoded once on the publisher's shard; local members get the frame
//! directly, every other shard with members gets one `ShardMsg::TopicFrame` carrying the
//! same `Bytes` and fans out locally. Per publisher, order is preserved: one FIFO inbox per
//! shard.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;

use crate::frame::Frame;
use peerd_codec::{self as codec, Code, PresenceChange};

use crate::cluster::link::here;
use crate::cluster::wire::Op;
use crate::cluster::BridgeCmd;
use crate::conn::Conn;
use crate::error::Refused;
use crate::presence::announce_topic;
use crate::route::{cluster_room, deliver, route};
use crate::shard::Shard;

/// A join succeeded: answer it now, or (in a cluster, `req` != 0) once this node's
/// subscription to the topic is in place, so that, as on one node, whatever any node
/// publishes after the answer reaches the new member (the bridge confirms the subscription
/// with a round trip to NATS, then sends `ShardMsg::TopicReady`).
pub(crate) enum Joined {
    Now,
    Pending,
}

/// Join `topic`. Joining a topic already joined is a success.
pub(crate) fn join(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    topic: &str,
    req: u64,
) -> Result<Joined, Refused> {
    let limits = shard.local.limits();
    {
        let mine = conn.topics.borrow();
        let joined = mine.held().map_or(0, |h| h.joined.len());
        if mine.is_member(topic) {
            return Ok(Joined::Now);
        }
        if joined >= limits.max_topics_per_peer as usize {
            return Err(Refused::new(
                Code::LimitExceeded,
                "too many topics for this peer",
            ));
        }
    }
    let topic: Arc<str> = topic.into();
    let change = shard
        .shared()
        .topics
        .join(
            &topic,
            &conn.peer_id,
            (shard.index(), conn.session),
            limits.max_members_per_topic,
        )
        .map_err(|_| Refused::new(Code::LimitExceeded, "topic is full"))?;
    conn.topics
        .borrow_mut()
        .held_mut()
        .joined
        .insert(topic.clone());
    shard.members.add(&topic, conn.clone());
    announce_topic(shard, conn, &topic, change.notify, PresenceChange::Join);
    let Some(cluster) = &shard.shared().cluster else {
        return Ok(Joined::Now);
    };
    cluster.state(vec![Op::Join {
        topic: topic.clone(),
        peer: conn.peer_id.clone(),
        at: here(shard.index(), conn.session),
    }]);
    if change.interest {
        cluster.cmd(BridgeCmd::Interest(topic.clone()));
    }
    if change.subscribed || req == 0 || !cluster.is_up() {
        return Ok(Joined::Now);
    }
    shard
        .join_waiters
        .borrow_mut()
        .entry(topic)
        .or_default()
        .push((conn.session, req));
    Ok(Joined::Pending)
}

/// Leave `topic`.
pub(crate) fn leave(shard: &Rc<Shard>, conn: &Conn, topic: &str) -> Result<(), Refused> {
    let taken = conn.topics.borrow_mut().leave(topic);
    let Some(topic) = taken else {
        return Err(Refused::new(Code::NotMember, "not a member of this topic"));
    };
    leave_joined(shard, conn, &topic);
    Ok(())
}

/// The peer is gone: leave every topic it joined.
pub(crate) fn leave_all(shard: &Rc<Shard>, conn: &Conn) {
    let joined = conn.topics.borrow_mut().take_joined();
    for t in &joined {
        leave_joined(shard, conn, t);
    }
}

fn leave_joined(shard: &Rc<Shard>, conn: &Conn, topic: &Arc<str>) {
    shard.members.remove(topic, conn.session);
    let change = shard
        .shared()
        .topics
        .leave(topic, &conn.peer_id, (shard.index(), conn.session));
    announce_topic(shard, conn, topic, change.notify, PresenceChange::Leave);
    if let Some(cluster) = &shard.shared().cluster {
        cluster.state(vec![Op::Leave {
            topic: topic.clone(),
            peer: conn.peer_id.clone(),
            at: here(shard.index(), conn.session),
        }]);
        if change.interest {
            cluster.cmd(BridgeCmd::Interest(topic.clone()));
        }
    }
}

/// Publish `payload` to every member of `topic` (the publisher too when `echo`).
pub(crate) fn publish(
    shard: &Rc<Shard>,
    conn: &Conn,
    topic: &str,
    payload: &[u8],
    echo: bool,
) -> Result<(), Refused> {
    let frame = shard.local.encode_relayed(&codec::TopicMessage {
        topic: Cow::Borrowed(topic),
        from: Cow::Borrowed(&conn.peer_id),
        direct: false,
        payload: Cow::Borrowed(payload),
    })?;
    let exclude = if echo { 0 } else { conn.session };
    fan_out(shard, topic, frame, exclude)
}

/// Deliver a topic frame to every member except session `exclude`: one message per shard
/// that has members (inline for this one), and in a cluster one message to the other
/// nodes, which NATS brings to those with members.
pub(crate) fn fan_out(
    shard: &Rc<Shard>,
    topic: &str,
    frame: Frame,
    exclude: u64,
) -> Result<(), Refused> {
    let shared = shard.shared();
    if shared.cluster.is_some() {
        cluster_fits(shard, &frame, topic)?;
        shared.topic_remote(topic, None, &frame);
    }
    for (i, msg) in shared.topic_frames(topic, frame, exclude) {
        route(shard, i, msg);
    }
    Ok(())
}

/// A frame for other nodes must fit in one NATS message.
fn cluster_fits(shard: &Shard, frame: &Frame, topic: &str) -> Result<(), Refused> {
    match &shard.shared().cluster {
        Some(c) if !c.fits(frame, 32 + topic.len()) => Err(Refused::new(
            Code::TooLarge,
            "larger than the cluster's NATS max_payload",
        )),
        _ => Ok(()),
    }
}

/// Deliver a frame to the one member of `topic` at (`target`, `session`). A member on
/// another node gets it through the topic's subject, not its node's inbox, so that it
/// stays in order with the topic's other traffic (a room's offer, then the answers and
/// candidates sent to one member: `signaling`).
pub(crate) fn deliver_member(
    shard: &Rc<Shard>,
    topic: &str,
    (target, session): (usize, u64),
    frame: Frame,
) -> Result<(), Refused> {
    let shared = shard.shared();
    if shared.is_local(target) {
        deliver(shard, target, session, frame);
        return Ok(());
    }
    cluster_room(shard, target)?;
    cluster_fits(shard, &frame, topic)?;
    shared.topic_remote(topic, Some(session), &frame);
    Ok(())
}

/// Send `payload` on `topic` to the one member `to`.
pub(crate) fn send_to_member(
    shard: &Rc<Shard>,
    conn: &Conn,
    topic: &str,
    to: &str,
    payload: &[u8],
) -> Result<(), Refused> {
    let at = member(shard, topic, to)?;
    let frame = shard.local.encode_relayed(&codec::TopicMessage {
        topic: Cow::Borrowed(topic),
        from: Cow::Borrowed(&conn.peer_id),
        direct: true,
        payload: Cow::Borrowed(payload),
    })?;
    deliver_member(shard, topic, at, frame)
}

/// Where member `to` of `topic` lives, or why it cannot be reached through the topic.
pub(crate) fn member(shard: &Shard, topic: &str, to: &str) -> Result<(usize, u64), Refused> {
    let shared = shard.shared();
    if let Some(at) = shared.topics.member(topic, to) {
        return Ok(at);
    }
    Err(if shared.directory.lookup(to).is_some() {
        Refused::new(
            Code::NotMember,
            "the target peer is not a member of this topic",
        )
    } else {
        Refused::new(Code::UnknownPeer, "no such peer")
    })
}
