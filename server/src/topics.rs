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

use crate::conn::Conn;
use crate::error::Refused;
use crate::presence::announce_topic;
use crate::route::{deliver, route};
use crate::shard::Shard;

/// Join `topic`. Joining a topic already joined is a success.
pub(crate) fn join(shard: &Rc<Shard>, conn: &Rc<Conn>, topic: &str) -> Result<(), Refused> {
    let limits = shard.local.limits();
    {
        let mine = conn.topics.borrow();
        let joined = mine.held().map_or(0, |h| h.joined.len());
        if mine.is_member(topic) {
            return Ok(());
        }
        if joined >= limits.max_topics_per_peer as usize {
            return Err(Refused::new(
                Code::LimitExceeded,
                "too many topics for this peer",
            ));
        }
    }
    let topic: Arc<str> = topic.into();
    let notify = shard
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
    announce_topic(shard, conn, &topic, notify, PresenceChange::Join);
    Ok(())
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
    let notify = shard
        .shared()
        .topics
        .leave(topic, &conn.peer_id, (shard.index(), conn.session));
    announce_topic(shard, conn, topic, notify, PresenceChange::Leave);
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
    fan_out(shard, topic, frame, exclude);
    Ok(())
}

/// Deliver a topic frame to every member except session `exclude`: one message per shard
/// that has members (inline for this one).
pub(crate) fn fan_out(shard: &Rc<Shard>, topic: &str, frame: Frame, exclude: u64) {
    for (i, msg) in shard.shared().topic_frames(topic, frame, exclude) {
        route(shard, i, msg);
    }
}

/// Send `payload` on `topic` to the one member `to`.
pub(crate) fn send_to_member(
    shard: &Rc<Shard>,
    conn: &Conn,
    topic: &str,
    to: &str,
    payload: &[u8],
) -> Result<(), Refused> {
    let (target, session) = member(shard, topic, to)?;
    let frame = shard.local.encode_relayed(&codec::TopicMessage {
        topic: Cow::Borrowed(topic),
        from: Cow::Borrowed(&conn.peer_id),
        direct: true,
        payload: Cow::Borrowed(payload),
    })?;
    deliver(shard, target, session, frame);
    Ok(())
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
