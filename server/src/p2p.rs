//! Peer to peer through the server: direct events by peer id, and relayed RPC calls.
//!
//! A relayed call is forwarded to the callee's shard (`ShardMsg::RelayCall`); that shard
//! gives the request an id of its own on the callee's connection and remembers the caller
//! in its `relays` table. The callee's answer, the callee leaving, or the deadline passing
//! sends exactly one RpcResponse or RpcError back to the caller's shard
//! (`route::answer`).

use std::borrow::Cow;
use std::rc::Rc;

use bytes::Bytes;
use peerd_codec::{self as codec, Code};

use crate::config::millis_u32;
use crate::conn::Conn;
use crate::error::Refused;
use crate::msg::{RelayedCall, ReplyTo, ShardMsg};
use crate::route::{answer, cluster_room, deliver, route};
use crate::shard::Shard;

/// How much longer than a remote call's deadline the caller's shard waits for the callee's
/// node to report the timeout itself.
const REMOTE_MARGIN_MS: u64 = 250;

fn lookup(shard: &Shard, peer: &str) -> Result<(usize, u64), Refused> {
    shard
        .shared()
        .directory
        .lookup(peer)
        .ok_or_else(|| Refused::new(Code::UnknownPeer, "no such peer"))
}

/// Send event `name` to peer `target`, marked as from `conn`.
pub(crate) fn direct_event(
    shard: &Rc<Shard>,
    conn: &Conn,
    target: &str,
    name: &str,
    payload: &[u8],
) -> Result<(), Refused> {
    let (at, session) = lookup(shard, target)?;
    cluster_room(shard, at)?;
    let frame = shard.local.encode_relayed(&codec::Event {
        name: Cow::Borrowed(name),
        peer: Some(Cow::Borrowed(&conn.peer_id)),
        payload: Cow::Borrowed(payload),
    })?;
    deliver(shard, at, session, frame);
    Ok(())
}

/// Forward `conn`'s call `id` of `method` to peer `target`.
pub(crate) fn forward_call(
    shard: &Rc<Shard>,
    conn: &Conn,
    id: u64,
    target: &str,
    method: &str,
    params: &[u8],
    timeout_ms: u32,
) -> Result<(), Refused> {
    let (at, callee_session) = lookup(shard, target)?;
    cluster_room(shard, at)?;
    let config = &shard.shared().config;
    if conn.relayed_calls.get() >= config.limits.max_relayed_calls_per_peer {
        return Err(Refused::new(
            Code::Overloaded,
            "too many peer-to-peer calls waiting for answers",
        ));
    }
    // 0 asks for the default; no call may hold a relay slot longer than the maximum.
    let timeout_ms = match timeout_ms {
        0 => millis_u32(config.default_call_timeout),
        t => t,
    }
    .min(millis_u32(config.limits.max_call_timeout));
    let call = RelayedCall {
        caller: ReplyTo {
            shard: shard.index(),
            session: conn.session,
            id,
        },
        caller_peer: conn.peer_id.clone(),
        callee_session,
        method: method.into(),
        timeout_ms,
        params: Bytes::copy_from_slice(params),
    };
    // Freed when the outcome comes back (`ShardMsg::RelayAnswer`): an answer, an error,
    // the callee leaving, or the deadline.
    conn.relay_started();
    if !shard.shared().is_local(at) {
        // Tracked here too: the callee's node may die, or never answer. Its own deadline
        // comes first; this one, a little later, is the backstop.
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(timeout_ms as u64 + REMOTE_MARGIN_MS);
        let mut calls = shard.remote_calls.borrow_mut();
        let earliest = calls.next_deadline().is_none_or(|d| deadline < d);
        calls.insert(conn.session, id, at, deadline);
        if earliest {
            shard.relay_timer.notify();
        }
    }
    route(shard, at, ShardMsg::RelayCall(call));
    Ok(())
}

/// An RpcResponse/RpcError from `conn`: if it answers a relayed call, forward it to the
/// caller and return true.
pub(crate) fn relay_answer(
    shard: &Rc<Shard>,
    conn: &Conn,
    id: u64,
    result: Result<&[u8], (u16, &str)>,
) -> bool {
    let Some(to) = shard.relays.borrow_mut().answer(conn.session, id) else {
        return false;
    };
    // The callee's own code goes through unchanged (it may be an application code).
    answer(shard, to, result);
    true
}

/// The callee `session` left: every call relayed to it fails with PeerGone now.
pub(crate) fn fail_relays_to(shard: &Rc<Shard>, session: u64) {
    let gone = shard.relays.borrow_mut().session_gone(session);
    for to in gone {
        answer(
            shard,
            to,
            Err((
                Code::PeerGone.as_u16(),
                "peer disconnected before answering",
            )),
        );
    }
}
