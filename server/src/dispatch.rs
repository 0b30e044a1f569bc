//! The dispatch table: every frame a client may send, handled in one `match`.
//!
//! Each arm checks its input the same way ([`check_name`], [`check_topic`]) and either
//! succeeds or refuses with one type, [`Refused`], carrying the wire code. How a refusal
//! reaches the peer depends only on the frame: a request with an id gets RpcError, a frame
//! with a `req` gets Status{req}, an Event or Broadcast gets Status{0}; a refusal marked
//! `closes` (a protocol violation) closes the connection instead.
//!
//! Every arm that asks the server to do something for the peer first asks [`allowed`]:
//! the permissions its credentials carry (`Conn::permits`), then the embedder's authorizer.
//! A refusal is answered like any other (`unauthorized` with a reason) and nothing is
//! delivered. Leave, Unwatch, answers and heartbeats need no permission.
//!
//! A frame that carries a payload to other peers (Signal, Publish, TopicSend, an Event to a
//! peer, Broadcast, a call to a peer) is then carried out through [`screened`]: the
//! embedder's traffic hooks, if any, see it (`ListenOptions::on_traffic`, which may refuse
//! it like the authorizer) and see the server refuse it (`on_traffic_error`). Without hooks
//! `screened` is the delivery alone.

use std::borrow::Cow;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use peerd_codec::{self as codec, ArchivedRpcRequest, Code, Frame};

use crate::auth::{Action, AuthRequest, Denied};
use crate::conn::{Conn, Drain};
use crate::error::{CallError, Refused, RpcFailure};
use crate::handshake::{auth_failed, denied};
use crate::lifecycle::settle;
use crate::p2p;
use crate::peer::ConnectedPeer;
use crate::presence;
use crate::request::{EventRef, HandlerFuture, Request};
use crate::shard::Shard;
use crate::signaling;
use crate::topics;
use crate::traffic::Traffic;

/// An RPC method or event name.
fn check_name(name: &str) -> Result<(), Refused> {
    codec::validate_name(name).map_err(|e| Refused::new(Code::InvalidArgument, e.to_string()))
}

/// A topic or room name, against the server's length limit.
fn check_topic(shard: &Shard, topic: &str) -> Result<(), Refused> {
    codec::validate_topic(topic, shard.local.limits().max_topic_len)
        .map_err(|_| Refused::new(Code::InvalidArgument, "invalid topic name"))
}

fn check_opt_topic(shard: &Shard, topic: Option<&str>) -> Result<(), Refused> {
    topic.map_or(Ok(()), |t| check_topic(shard, t))
}

/// Whether the peer may do `action`: its credentials' permissions, then the embedder's
/// authorizer.
fn allowed(shard: &Shard, conn: &Conn, action: Action<'_>) -> Result<(), Refused> {
    conn.permits(&action)?;
    if let Some(f) = &shard.hooks.authorizer {
        f(&conn.peer_id, &action).map_err(|d| Refused::new(d.code, d.reason))?;
    }
    Ok(())
}

/// Carry out `deliver`, the traffic `traffic` describes, between the embedder's traffic
/// hooks: `on_traffic` first (its refusal is the answer, and nothing is delivered), then
/// `on_traffic_error` if the server refuses it. Without hooks this is `deliver()` after one
/// branch: the traffic is never described.
#[inline]
fn screened<'a>(
    shard: &Shard,
    conn: &Conn,
    traffic: impl FnOnce() -> Traffic<'a>,
    deliver: impl FnOnce() -> Result<(), Refused>,
) -> Result<(), Refused> {
    let Some(hooks) = &shard.hooks.traffic else {
        return deliver();
    };
    let t = traffic();
    if let Some(f) = &hooks.inspect {
        f(&conn.peer_id, &t).map_err(|d| Refused::new(d.code, d.reason))?;
    }
    match (deliver(), &hooks.error) {
        (Err(e), Some(f)) => {
            let closes = e.closes;
            let d = Denied {
                code: e.code,
                reason: e.reason,
            };
            f(&conn.peer_id, &t, &d);
            Err(Refused {
                code: d.code,
                reason: d.reason,
                closes,
            })
        }
        (r, _) => r,
    }
}

/// A Refresh: check the new credentials like a Hello's and, if they are for this session's
/// peer id, replace the old ones (their deadline and permissions). Refused, the session
/// keeps what it had, and is closed at the old deadline. Without an authenticator there is
/// nothing to refresh: credentials are ignored, as in Hello.
fn refresh(shard: &Shard, conn: &Conn, credentials: &[u8]) -> Result<(), Refused> {
    let Some(auth) = &shard.hooks.authenticator else {
        return Ok(());
    };
    let now = std::time::SystemTime::now();
    if conn.auth_expired(now) {
        // Too late: the deadline passed before this Refresh arrived.
        let reason = "token expired before the Refresh arrived";
        auth_failed(shard, Code::TokenExpired, reason);
        return Err(Refused::close(Code::TokenExpired, reason));
    }
    let grant = auth(&AuthRequest {
        peer_id: Some(&conn.peer_id),
        credentials: Some(credentials),
        refresh: true,
    })
    .map_err(|d| denied(shard, d))?;
    if let Some(id) = grant.peer_id.as_deref() {
        if id != &*conn.peer_id {
            let reason = format!(
                "the credentials are for peer id {id:?}, not this session's {:?}",
                conn.peer_id
            );
            auth_failed(shard, Code::Unauthorized, &reason);
            return Err(Refused::new(Code::Unauthorized, reason));
        }
    }
    conn.set_auth(grant);
    Ok(())
}

/// Answer a frame that carries `req` with Status: Ok when asked for (req != 0), the code
/// of a refusal always. A refusal that closes is handed up.
fn reply_status(conn: &Conn, req: u64, result: Result<(), Refused>) -> Result<(), Refused> {
    match result {
        Ok(()) => conn.status(req, Code::Ok, ""),
        Err(e) if e.closes => return Err(e),
        Err(e) => conn.status(req, e.code, &e.reason),
    }
    Ok(())
}

/// Handle one validated frame from the peer. `Err`: close the connection with its code.
pub(crate) fn dispatch(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    frame: Frame<'_>,
) -> Result<(), Refused> {
    if conn.drain() == Drain::Finishing
        && !matches!(
            frame,
            Frame::Ping(_)
                | Frame::Pong(_)
                | Frame::RpcResponse(_)
                | Frame::RpcError(_)
                | Frame::Close(_)
        )
    {
        // After its Close{reconnect} a peer sends only answers (§6.10); anything else is
        // not acted on, so that "everything before the Close was acted on" stays exact.
        return Ok(());
    }
    match frame {
        Frame::Ping(p) => {
            let _ = conn.queue_msg(&codec::Pong {
                nonce: p.nonce.to_native(),
            });
        }
        Frame::Pong(_) => {}
        Frame::RpcRequest(r) => {
            if let Err(e) = request(shard, conn, r) {
                if e.closes {
                    return Err(e);
                }
                conn.send_rpc_error(r.id.to_native(), e.code.as_u16(), &e.reason);
            }
        }
        Frame::RpcResponse(r) => {
            let id = r.id.to_native();
            let result = r.result.as_slice();
            if !p2p::relay_answer(shard, conn, id, Ok(result)) {
                conn.complete_call(id, Ok(Bytes::copy_from_slice(result)));
            }
        }
        Frame::RpcError(e) => {
            let (id, code, message) = (e.id.to_native(), e.code.to_native(), e.message.as_str());
            if !p2p::relay_answer(shard, conn, id, Err((code, message))) {
                let message = message.to_string();
                conn.complete_call(id, Err(CallError::Remote { code, message }));
            }
        }
        Frame::Event(ev) => {
            let (name, payload) = (ev.name.as_str(), ev.payload.as_slice());
            let to = codec::opt_str(&ev.peer);
            let result = check_name(name)
                .and_then(|()| allowed(shard, conn, Action::Emit { name, to }))
                .and_then(|()| match to {
                    Some(to) => screened(
                        shard,
                        conn,
                        || Traffic::Emit { name, to, payload },
                        || p2p::direct_event(shard, conn, to, name, payload),
                    ),
                    None => {
                        for l in conn.listeners(name) {
                            l(EventRef { name, payload });
                        }
                        Ok(())
                    }
                });
            reply_status(conn, 0, result)?;
        }
        Frame::Broadcast(b) => {
            let name = b.name.as_str();
            let result = check_name(name)
                .and_then(|()| allowed(shard, conn, Action::Broadcast { name }))
                .and_then(|()| broadcast(shard, conn, name, b.payload.as_slice()));
            reply_status(conn, 0, result)?;
        }
        Frame::Join(j) => {
            let topic = j.topic.as_str();
            let req = j.req.to_native();
            let result = check_topic(shard, topic)
                .and_then(|()| allowed(shard, conn, Action::Join { topic }))
                .and_then(|()| topics::join(shard, conn, topic, req));
            match result {
                // Answered when the cluster's subscription is in place (`topics::join`).
                Ok(topics::Joined::Pending) => {}
                Ok(topics::Joined::Now) => reply_status(conn, req, Ok(()))?,
                Err(e) => reply_status(conn, req, Err(e))?,
            }
        }
        Frame::Leave(l) => {
            let topic = l.topic.as_str();
            let result = check_topic(shard, topic).and_then(|()| topics::leave(shard, conn, topic));
            reply_status(conn, l.req.to_native(), result)?;
        }
        Frame::Publish(p) => {
            let (topic, payload) = (p.topic.as_str(), p.payload.as_slice());
            let result = check_topic(shard, topic)
                .and_then(|()| allowed(shard, conn, Action::Publish { topic }))
                .and_then(|()| {
                    screened(
                        shard,
                        conn,
                        || Traffic::Publish { topic, payload },
                        || topics::publish(shard, conn, topic, payload, p.echo),
                    )
                });
            reply_status(conn, p.req.to_native(), result)?;
        }
        Frame::TopicSend(s) => {
            let (topic, to, payload) = (s.topic.as_str(), s.to.as_str(), s.payload.as_slice());
            let result = check_topic(shard, topic)
                .and_then(|()| allowed(shard, conn, Action::SendToMember { topic, to }))
                .and_then(|()| {
                    screened(
                        shard,
                        conn,
                        || Traffic::SendToMember { topic, to, payload },
                        || topics::send_to_member(shard, conn, topic, to, payload),
                    )
                });
            reply_status(conn, s.req.to_native(), result)?;
        }
        Frame::Watch(w) => {
            let topic = codec::opt_str(&w.topic);
            let result = check_opt_topic(shard, topic)
                .and_then(|()| allowed(shard, conn, Action::Watch { topic }))
                .and_then(|()| presence::watch(shard, conn, topic));
            reply_status(conn, w.req.to_native(), result)?;
        }
        Frame::Unwatch(u) => {
            let topic = codec::opt_str(&u.topic);
            let result =
                check_opt_topic(shard, topic).and_then(|()| presence::unwatch(shard, conn, topic));
            reply_status(conn, u.req.to_native(), result)?;
        }
        Frame::ListPeers(l) => {
            let req = l.req.to_native();
            let topic = codec::opt_str(&l.topic);
            match check_opt_topic(shard, topic)
                .and_then(|()| allowed(shard, conn, Action::ListPeers { topic }))
            {
                Ok(()) => {
                    let shared = shard.shared();
                    let peers = match topic {
                        Some(t) => shared.topics.members(t),
                        None => shared.directory.sorted_ids(),
                    };
                    let _ = conn.queue_msg(&codec::PeerList { req, peers });
                }
                Err(e) => reply_status(conn, req, Err(e))?,
            }
        }
        Frame::Signal(s) => {
            let (room, to) = (s.room.as_str(), codec::opt_str(&s.peer));
            let result = check_topic(shard, room)
                .and_then(|()| allowed(shard, conn, Action::Signal { room, to }))
                .and_then(|()| {
                    let traffic = || Traffic::Signal {
                        room,
                        kind: signaling::kind(s),
                        to,
                        payload: s.payload.as_slice(),
                    };
                    screened(shard, conn, traffic, || signaling::signal(shard, conn, s))
                });
            reply_status(conn, s.req.to_native(), result)?;
        }
        Frame::Refresh(r) => {
            let result = refresh(shard, conn, r.credentials.as_slice());
            reply_status(conn, r.req.to_native(), result)?;
        }
        Frame::Close(c) => {
            let code = c.code.to_native();
            // A drain's half-close (§6.10): the peer stops sending; we still answer it.
            if code == Code::Reconnect.as_u16() && conn.client_finished() {
                return Ok(());
            }
            conn.peer_closed(code, Some(peerd_ws::close::status_for(code)))
        }
        Frame::Hello(_) => return Err(Refused::close(Code::BadFrame, "Hello after handshake")),
        Frame::Welcome(_)
        | Frame::Reject(_)
        | Frame::TopicMessage(_)
        | Frame::PresenceSnapshot(_)
        | Frame::Presence(_)
        | Frame::PeerList(_)
        | Frame::Status(_) => {
            return Err(Refused::close(
                Code::BadFrame,
                format!("{} frames are sent by servers only", frame.kind().name()),
            ))
        }
        // `Frame` is non-exhaustive: a kind added to the codec is refused until it gets
        // an arm here.
        _ => {
            return Err(Refused::close(
                Code::BadFrame,
                format!(
                    "{} frames are not handled by this server",
                    frame.kind().name()
                ),
            ))
        }
    }
    Ok(())
}

/// Whether a rate limit may refuse `frame` (docs/PROTOCOL.md §6.9): the frames that ask the
/// server to do something. Answers and control frames (RpcResponse, RpcError, Pong, Close)
/// and frames that close the connection anyway (server-only kinds, a second Hello) are
/// always handled.
pub(crate) fn rate_limited_kind(frame: &Frame<'_>) -> bool {
    matches!(
        frame,
        Frame::RpcRequest(_)
            | Frame::Event(_)
            | Frame::Broadcast(_)
            | Frame::Join(_)
            | Frame::Leave(_)
            | Frame::Publish(_)
            | Frame::TopicSend(_)
            | Frame::Watch(_)
            | Frame::Unwatch(_)
            | Frame::ListPeers(_)
            | Frame::Signal(_)
            | Frame::Ping(_)
    )
}

/// Answer a frame that is not acted on with `code`, as [`dispatch`] answers its refusals: a
/// call with RpcError, a frame with a `req` with Status{req}, anything else (an Event,
/// Broadcast or Ping) with Status{0}.
pub(crate) fn refuse(conn: &Conn, frame: &Frame<'_>, code: Code, reason: &str) {
    let req = match frame {
        Frame::RpcRequest(r) => {
            conn.send_rpc_error(r.id.to_native(), code.as_u16(), reason);
            return;
        }
        Frame::Join(f) => f.req.to_native(),
        Frame::Leave(f) => f.req.to_native(),
        Frame::Publish(f) => f.req.to_native(),
        Frame::TopicSend(f) => f.req.to_native(),
        Frame::Watch(f) => f.req.to_native(),
        Frame::Unwatch(f) => f.req.to_native(),
        Frame::ListPeers(f) => f.req.to_native(),
        Frame::Signal(f) => f.req.to_native(),
        _ => 0,
    };
    conn.status(req, code, reason);
}

/// A client's Broadcast: relayed to every other peer, marked as from it (when enabled).
fn broadcast(shard: &Shard, conn: &Conn, name: &str, payload: &[u8]) -> Result<(), Refused> {
    if !shard.shared().config.relay_broadcasts {
        return Ok(());
    }
    screened(
        shard,
        conn,
        || Traffic::Broadcast { name, payload },
        || {
            let frame = shard.local.encode_relayed(&codec::Broadcast {
                name: Cow::Borrowed(name),
                peer: Some(Cow::Borrowed(&conn.peer_id)),
                payload: Cow::Borrowed(payload),
            })?;
            if let Some(c) = &shard.shared().cluster {
                if !c.fits(&frame, 16) {
                    return Err(Refused::new(
                        Code::TooLarge,
                        "larger than the cluster's NATS max_payload",
                    ));
                }
            }
            shard.shared().broadcast_all(frame, conn.session);
            Ok(())
        },
    )
}

/// An RpcRequest: to another peer (relayed), or to the server (a handler here).
fn request(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    r: &ArchivedRpcRequest<'static>,
) -> Result<(), Refused> {
    let (id, method, params) = (r.id.to_native(), r.method.as_str(), r.params.as_slice());
    check_name(method)?;
    if let Some(peer) = codec::opt_str(&r.peer) {
        allowed(shard, conn, Action::CallPeer { peer, method })?;
        let timeout_ms = r.timeout_ms.to_native();
        return screened(
            shard,
            conn,
            || Traffic::CallPeer {
                peer,
                method,
                params,
            },
            || p2p::forward_call(shard, conn, id, peer, method, params, timeout_ms),
        );
    }
    allowed(shard, conn, Action::Call { method })?;
    if conn.inflight.get() as usize >= shard.local.limits().max_inflight_per_conn {
        return Err(Refused::new(Code::Overloaded, "too many calls in flight"));
    }
    let req = || Request {
        id,
        method: method.into(),
        from: None,
        params: Bytes::copy_from_slice(params),
    };
    // The handler's latency counts from here: creating its future runs its synchronous
    // part.
    let started = Instant::now();
    let fut = if let Some(h) = conn.handler(method) {
        h(req())
    } else if let Some(h) = shard.hooks.handlers.get(method) {
        h(ConnectedPeer::from_conn(conn.clone()), req())
    } else {
        return Err(Refused::new(
            Code::MethodNotFound,
            format!("no handler for method {method:?}"),
        ));
    };
    run_handler(shard, conn, id, started, fut)
}

/// Run a handler: inline when it finishes without waiting (most do; no task), else as a
/// task in the shard's handler gate, which shutdown waits for up to its drain deadline.
/// Its latency since `started` goes into the shard's histogram when it answers.
fn run_handler(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    id: u64,
    started: Instant,
    mut fut: HandlerFuture,
) -> Result<(), Refused> {
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
        respond(conn, id, r);
        shard.local.metrics.rpc_handled(started.elapsed());
        return Ok(());
    }
    let (s, c) = (shard.clone(), conn.clone());
    let task = shard.local.handlers.spawn(async move {
        let r = fut.await;
        c.inflight.set(c.inflight.get() - 1);
        respond(&c, id, r);
        c.finish_drain_if_idle();
        s.local.metrics.rpc_handled(started.elapsed());
        settle(&s);
    });
    match task {
        Ok(t) => {
            conn.inflight.set(conn.inflight.get() + 1);
            t.detach();
            Ok(())
        }
        Err(_) => Err(Refused::new(Code::Shutdown, "server is shutting down")),
    }
}

fn respond(conn: &Conn, id: u64, r: Result<Bytes, RpcFailure>) {
    match r {
        Ok(result) => {
            let _ = conn.queue_msg(&codec::RpcResponse {
                id,
                result: Cow::Borrowed(&result),
            });
        }
        Err(f) => conn.send_rpc_error(id, f.code, &f.message),
    }
}
