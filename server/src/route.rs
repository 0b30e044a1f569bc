//! Work for a shard: [`route`] sends a [`ShardMsg`] to the shard that must do it (running
//! it inline when that is the current shard), and [`handle`] does it, one `match` arm per
//! kind of cross-shard work.

use std::borrow::Cow;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::frame::Frame;
use peerd_codec::{self as codec, Code, PresenceChange};

use crate::error::Refused;
use crate::metrics::Gauges;
use crate::msg::{RelayedCall, ReplyTo, ShardMsg, Transport};
use crate::shard::Shard;

/// What the executor itself must do: the messages that are about the shard's tasks
/// rather than its peers.
pub(crate) enum Control {
    /// Serve a connection accepted elsewhere.
    Adopt(OwnedFd, Transport),
    /// Stop accepting.
    StopAccepting,
    /// Drain the shard's peers.
    Drain { window: Duration, grace: Duration },
    /// Stop, giving handlers up to this long.
    Shutdown(Duration),
}

/// Have shard `target` do `msg`: here and now when `target` is this shard, else by one
/// inbox message.
pub(crate) fn route(shard: &Rc<Shard>, target: usize, msg: ShardMsg) {
    if target == shard.index() {
        let control = handle(shard, msg);
        debug_assert!(control.is_none(), "control messages are never routed");
    } else {
        shard.shared().send(target, msg);
    }
}

/// Queue `frame` to the peer with `session` on shard `target`. A peer that has left is
/// skipped silently.
pub(crate) fn deliver(shard: &Rc<Shard>, target: usize, session: u64, frame: Frame) {
    route(shard, target, ShardMsg::Deliver { session, frame });
}

/// Send a relayed call's outcome to its caller, wherever it lives.
pub(crate) fn answer(shard: &Rc<Shard>, to: ReplyTo, result: Result<&[u8], (u16, &str)>) {
    let frame = match result {
        Ok(result) => shard.local.encode(&codec::RpcResponse {
            id: to.id,
            result: Cow::Borrowed(result),
        }),
        Err((code, message)) => shard.local.encode(&codec::RpcError {
            id: to.id,
            code,
            message: Cow::Borrowed(message),
        }),
    };
    if let Ok(frame) = frame {
        let (session, id) = (to.session, to.id);
        route(
            shard,
            to.shard,
            ShardMsg::RelayAnswer { session, id, frame },
        );
    }
}

/// A call of the caller (`session`, request `id`) to a peer of another node failed here:
/// its node is gone, or it did not answer by the deadline.
pub(crate) fn fail_remote_call(shard: &Shard, session: u64, id: u64, code: Code, why: &str) {
    let Some(c) = shard.conn(session) else {
        return;
    };
    c.relay_ended(false);
    let _ = c.queue_msg(&codec::RpcError {
        id,
        code: code.as_u16(),
        message: Cow::Borrowed(why),
    });
}

/// Refuse a message to a peer of another node that cannot go now: the link to NATS is
/// down, or the bridge is too far behind.
pub(crate) fn cluster_room(shard: &Shard, target_shard: usize) -> Result<(), Refused> {
    let shared = shard.shared();
    if shared.is_local(target_shard) {
        return Ok(());
    }
    match &shared.cluster {
        Some(c) if !c.is_up() => Err(Refused::new(
            Code::Overloaded,
            "the link to the cluster is down, retry",
        )),
        Some(c) if !c.has_room() => Err(Refused::new(
            Code::Overloaded,
            "the cluster's backlog is full, retry",
        )),
        _ => Ok(()),
    }
}

/// Do one piece of work on this shard.
pub(crate) fn handle(shard: &Rc<Shard>, msg: ShardMsg) -> Option<Control> {
    match msg {
        ShardMsg::Broadcast { frame, exclude } => {
            for c in shard.all_conns() {
                if c.session != exclude {
                    let _ = c.queue(&frame);
                }
            }
        }
        ShardMsg::TopicFrame {
            topic,
            frame,
            exclude,
        } => shard.members.deliver(&topic, &frame, exclude),
        ShardMsg::Deliver { session, frame } => {
            if let Some(c) = shard.conn(session) {
                let _ = c.queue(&frame);
            }
        }
        ShardMsg::RelayAnswer { session, frame, .. } => {
            if let Some(c) = shard.conn(session) {
                c.relay_ended(false);
                let _ = c.queue(&frame);
            }
        }
        ShardMsg::RemoteAnswer { session, id, frame } => {
            if shard
                .remote_calls
                .borrow_mut()
                .answer(session, id)
                .is_some()
            {
                if let Some(c) = shard.conn(session) {
                    c.relay_ended(false);
                    let _ = c.queue(&frame);
                }
            }
        }
        ShardMsg::NodeGone(node) => {
            let gone = shard.remote_calls.borrow_mut().value_gone(node);
            for (session, id) in gone {
                fail_remote_call(
                    shard,
                    session,
                    id,
                    Code::PeerGone,
                    "the callee's node is gone",
                );
            }
        }
        ShardMsg::TopicReady(topic) => {
            let waiting = shard.join_waiters.borrow_mut().remove(&topic);
            for (session, req) in waiting.into_iter().flatten() {
                if let Some(c) = shard.conn(session) {
                    c.status(req, Code::Ok, "");
                }
            }
        }
        ShardMsg::Presence {
            topic,
            peer,
            session,
            change,
        } => presence_here(shard, topic.as_ref(), &peer, session, change),
        ShardMsg::RelayCall(call) => start_relayed_call(shard, call),
        ShardMsg::Kick {
            session,
            code,
            reason,
        } => {
            if let Some(c) = shard.conn(session) {
                c.close(code, reason);
            }
        }
        ShardMsg::Metrics(reply) => {
            let local = &shard.local;
            let gauges = Gauges {
                outbound_queue_bytes: local.writes.charged() as u64,
                receive_buffer_bytes: local.rx_pool.lent() as u64,
                memory_budget_bytes: local.memory_budget.get() as u64,
                topic_members: shard.members.count() as u64,
            };
            // The scraper may have given up waiting; nothing to do then.
            let _ = reply.send(local.metrics.snapshot(shard.index(), gauges));
        }
        ShardMsg::Adopt(fd, t) => return Some(Control::Adopt(fd, t)),
        ShardMsg::StopAccepting => return Some(Control::StopAccepting),
        ShardMsg::Limits(l) => shard.local.set_limits(*l),
        ShardMsg::Drain { window, grace } => return Some(Control::Drain { window, grace }),
        ShardMsg::Shutdown { drain } => return Some(Control::Shutdown(drain)),
    }
    None
}

/// Apply one presence change to this shard's watchers and send them their events.
fn presence_here(
    shard: &Rc<Shard>,
    topic: Option<&Arc<str>>,
    peer: &Arc<str>,
    session: u64,
    change: PresenceChange,
) {
    let events = shard
        .watchers
        .borrow_mut()
        .apply(topic.map(|t| &**t), peer, session, change);
    if events.is_empty() {
        return;
    }
    let frame = |change| {
        shard.local.encode(&codec::Presence {
            topic: topic.map(|t| Cow::Borrowed(&**t)),
            peer: Cow::Borrowed(peer),
            change,
        })
    };
    let (Ok(join), Ok(leave)) = (frame(PresenceChange::Join), frame(PresenceChange::Leave)) else {
        return;
    };
    for (conn, change) in events {
        let f = match change {
            PresenceChange::Join => &join,
            PresenceChange::Leave => &leave,
        };
        let _ = conn.queue(f);
    }
}

/// On the callee's shard: send the request to the callee and remember where the answer
/// goes.
fn start_relayed_call(shard: &Rc<Shard>, call: RelayedCall) {
    let Some(callee) = shard.conn(call.callee_session) else {
        return answer(
            shard,
            call.caller,
            Err((Code::UnknownPeer.as_u16(), "peer left")),
        );
    };
    let id = callee.next_call_id();
    let request = shard.local.encode_relayed(&codec::RpcRequest {
        id,
        method: Cow::Borrowed(&call.method),
        peer: Some(Cow::Borrowed(&call.caller_peer)),
        timeout_ms: call.timeout_ms,
        params: Cow::Borrowed(&call.params),
    });
    let Ok(request) = request else {
        let why = "request too large once the caller's id is added";
        return answer(shard, call.caller, Err((Code::TooLarge.as_u16(), why)));
    };
    if callee.queue(&request).is_err() {
        return answer(
            shard,
            call.caller,
            Err((Code::PeerGone.as_u16(), "peer gone")),
        );
    }
    let deadline = Instant::now() + Duration::from_millis(call.timeout_ms as u64);
    let mut relays = shard.relays.borrow_mut();
    let earliest = relays.next_deadline().is_none_or(|d| deadline < d);
    relays.insert(call.callee_session, id, call.caller, deadline);
    if earliest {
        shard.relay_timer.notify();
    }
}
