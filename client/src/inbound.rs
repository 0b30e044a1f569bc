//! The reader: reads one connection's frames and routes each one.
//!
//! Answers to our own requests complete their waiters directly (they do not queue behind
//! handlers); incoming calls, events, topic messages, presence and signaling go to the
//! dispatcher queue; Ping is answered here; a Close, EOF, socket error, silence past the
//! keepalive, or a protocol violation ends the connection with an [`End`] for the
//! supervisor. User code never runs on this thread.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use peerd_codec::codec::decode_bytes;
use peerd_codec::{
    opt_str, ArchivedPresenceChange, ArchivedSignalKind, Code, Frame, Ping, Pong, SignalKind,
};

use crate::dispatch::Work;
use crate::error::{CallError, RequestError};
use crate::handshake::Established;
use crate::link::Link;
use crate::messages::{
    EventInfo, PresenceEvent, RpcRequestInfo, ServerError, SignalInfo, TopicMessageInfo,
};
use crate::shared::{Inner, Reply, Resync};
use crate::state::{CloseInfo, Initiator, State};
use crate::transport::Chunk;
use crate::ws::ws_violation_code;

/// Why a connection's read loop ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The server sent Close.
    ServerClose { code: u16, reason: String },
    /// EOF without a Close.
    Eof,
    /// The server's WebSocket Close, without a peerd Close before it.
    TransportClose { status: Option<u16>, reason: String },
    /// A socket error.
    Io(io::Error),
    /// Nothing arrived for two keepalive intervals, a probe included.
    Keepalive,
    /// The server broke the protocol; we sent Close with this code.
    Violation { code: u16, reason: String },
    /// The link was killed locally (a failed write).
    Killed,
}

impl End {
    /// The server ended the connection with Close{reconnect}: a drain completed, and
    /// everything sent before our own Close was acted on and answered (PROTOCOL.md §6.10).
    pub(crate) fn is_drained(&self) -> bool {
        matches!(self, End::ServerClose { code, .. } if *code == Code::Reconnect.as_u16())
    }

    /// What `Peer::last_close` reports for this end.
    pub(crate) fn info(&self) -> CloseInfo {
        let (code, reason, initiator) = match self {
            End::ServerClose { code, reason } => (Some(*code), reason.clone(), Initiator::Server),
            End::Eof => (
                None,
                "connection closed by peer".into(),
                Initiator::Transport,
            ),
            End::TransportClose { status, reason } => (
                status.and_then(peerd_ws::close::code_for),
                match status {
                    Some(s) => format!("WebSocket close {s}: {reason}"),
                    None => "WebSocket close without a status".into(),
                },
                Initiator::Server,
            ),
            End::Io(e) => (None, e.to_string(), Initiator::Transport),
            End::Keepalive => (
                Some(Code::IdleTimeout.as_u16()),
                "no data from server within two keepalive intervals".into(),
                Initiator::Client,
            ),
            End::Violation { code, reason } => (Some(*code), reason.clone(), Initiator::Client),
            End::Killed => (None, "write failed".into(), Initiator::Transport),
        };
        CloseInfo {
            code,
            reason,
            initiator,
        }
    }
}

/// Read `est` until the connection ends; why it ended is for the supervisor.
pub(crate) fn read_loop(inner: &Arc<Inner>, est: &mut Established) -> End {
    // A Ping is outstanding because the connection went silent for one interval.
    let mut probing = false;
    loop {
        loop {
            match est.framer.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(end) = on_frame(inner, &est.link, frame) {
                        if let End::ServerClose { code, .. } = &end {
                            // Over WebSocket the server's Close status follows; answer it.
                            est.link
                                .close_transport(Some(peerd_ws::close::status_for(*code)));
                        }
                        return end;
                    }
                }
                Ok(None) => break,
                Err(e) => return violation(&est.link, e.code(), e.to_string()),
            }
        }
        match est.reader.read() {
            Ok(Chunk::Eof) => return End::Eof,
            Ok(Chunk::Data(d)) => {
                probing = false;
                est.framer.extend(d);
            }
            Ok(Chunk::Ping(p)) => {
                probing = false;
                est.link.send_pong(p);
            }
            Ok(Chunk::Closed { status, reason }) => {
                est.link.close_transport(status);
                return End::TransportClose { status, reason };
            }
            Ok(Chunk::Violation(e)) => {
                return violation(&est.link, ws_violation_code(&e), e.reason.to_string())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !est.link.is_alive() {
                    return End::Killed;
                }
                if probing {
                    est.link
                        .send_close(Code::IdleTimeout.as_u16(), "no data from server");
                    return End::Keepalive;
                }
                probing = true;
                let _ = est.link.send(&Ping {
                    nonce: inner.next_id(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if !est.link.is_alive() => {
                tracing::trace!(error = %e, "read on killed link");
                return End::Killed;
            }
            Err(e) => return End::Io(e),
        }
    }
}

/// The server's drain notice, Status{req: 0, reconnect} (PROTOCOL.md §6.10): half-close
/// (our Close{reconnect}, and from now on only answers on this connection), and keep
/// reading until the server's Close. What the application sends meanwhile goes to the
/// reconnect queue, since the link is no longer usable; the reconnect writes it.
fn drain(inner: &Inner, link: &Link, message: &str) {
    if inner.session().is_some_and(|s| s.version < 2) {
        // A v1 session has no drain handshake: the server closes it with Shutdown when
        // its grace runs out, and we reconnect with backoff (§6.10).
        tracing::debug!(message, "drain notice on a v1 session: ignored");
        return;
    }
    if link.half_close(Code::Reconnect.as_u16(), "draining: reconnecting") {
        tracing::info!(
            message,
            "peerd-client: the server is draining; reconnecting once it has answered"
        );
        inner.set_state(State::Reconnecting);
    }
}

fn violation(link: &Link, code: Code, reason: String) -> End {
    tracing::warn!(%reason, "peerd-client: protocol violation by server");
    link.send_close(code.as_u16(), &reason);
    End::Violation {
        code: code.as_u16(),
        reason,
    }
}

/// An archived optional string, owned. (A macro rather than a function so that the rkyv
/// archived types need not be named here.)
macro_rules! opt_string {
    ($v:expr) => {
        opt_str($v).map(str::to_string)
    };
}

/// Hand work to the dispatcher. Blocks while its queue is full: the reader then stops
/// reading and TCP flow control pushes back on the server.
fn dispatch(inner: &Inner, work: Work) {
    let _ = inner.work.send(work);
}

/// Handle one frame. `Some(end)` ends the connection.
fn on_frame(inner: &Arc<Inner>, link: &Arc<Link>, frame: Bytes) -> Option<End> {
    let f = match decode_bytes(&frame) {
        Ok(f) => f,
        Err(e) => return Some(violation(link, e.code(), e.to_string())),
    };
    // Payloads are handed on as `Bytes` slices of the received frame: no copy.
    let slice = |s: &[u8]| frame.slice_ref(s);
    match f {
        Frame::RpcResponse(r) => {
            let id = r.id.to_native();
            if !inner.calls.complete(id, Ok(slice(r.result.as_slice()))) {
                tracing::debug!(id, "late or unknown RpcResponse dropped");
            }
        }
        Frame::RpcError(r) => {
            let id = r.id.to_native();
            let err = CallError::Remote {
                code: r.code.to_native(),
                message: r.message.as_str().to_string(),
            };
            if !inner.calls.complete(id, Err(err)) {
                tracing::debug!(id, "late or unknown RpcError dropped");
            }
        }
        Frame::RpcRequest(r) => dispatch(
            inner,
            Work::Request {
                link: link.clone(),
                id: r.id.to_native(),
                info: RpcRequestInfo {
                    from: opt_string!(&r.peer),
                    method: r.method.as_str().to_string(),
                    params: slice(r.params.as_slice()),
                },
            },
        ),
        Frame::Event(e) => dispatch(
            inner,
            Work::Event(EventInfo {
                name: e.name.as_str().to_string(),
                from: opt_string!(&e.peer),
                payload: slice(e.payload.as_slice()),
                broadcast: false,
            }),
        ),
        // A broadcast is an event every peer gets: it goes to the same listeners, in the
        // order it arrived among the events, flagged.
        Frame::Broadcast(b) => dispatch(
            inner,
            Work::Event(EventInfo {
                name: b.name.as_str().to_string(),
                from: opt_string!(&b.peer),
                payload: slice(b.payload.as_slice()),
                broadcast: true,
            }),
        ),
        Frame::TopicMessage(m) => {
            let topic = m.topic.as_str();
            // peersockets rule: a message for a topic we have not joined is discarded by
            // the receiver (it can be in flight across a leave).
            if inner.topics.lock().unwrap().accepts(topic) {
                dispatch(
                    inner,
                    Work::Topic(TopicMessageInfo {
                        topic: topic.to_string(),
                        from: m.from.as_str().to_string(),
                        direct: m.direct,
                        payload: slice(m.payload.as_slice()),
                    }),
                );
            } else {
                tracing::trace!(topic, "TopicMessage for a topic not joined: discarded");
            }
        }
        Frame::PresenceSnapshot(s) => dispatch(
            inner,
            Work::Snapshot {
                key: opt_string!(&s.topic),
                peers: s.peers.iter().map(|p| p.as_str().to_string()).collect(),
            },
        ),
        Frame::Presence(p) => {
            let peer = p.peer.as_str().to_string();
            let event = match p.change {
                ArchivedPresenceChange::Join => PresenceEvent::Join(peer),
                ArchivedPresenceChange::Leave => PresenceEvent::Leave(peer),
            };
            dispatch(
                inner,
                Work::Presence {
                    key: opt_string!(&p.topic),
                    event,
                },
            )
        }
        Frame::PeerList(l) => {
            let req = l.req.to_native();
            let peers = l.peers.iter().map(|p| p.as_str().to_string()).collect();
            if !inner.requests.complete(req, Ok(Reply::Peers(peers))) {
                tracing::debug!(req, "late or unknown PeerList dropped");
            }
        }
        Frame::Signal(s) => dispatch(
            inner,
            Work::Signal(SignalInfo {
                room: s.room.as_str().to_string(),
                kind: match s.kind {
                    ArchivedSignalKind::Offer => SignalKind::Offer,
                    ArchivedSignalKind::Answer => SignalKind::Answer,
                    ArchivedSignalKind::Candidate => SignalKind::Candidate,
                    ArchivedSignalKind::Bye => SignalKind::Bye,
                },
                from: opt_string!(&s.peer),
                payload: slice(s.payload.as_slice()),
            }),
        ),
        Frame::Status(s) => on_status(
            inner,
            link,
            s.req.to_native(),
            s.code.to_native(),
            s.message.as_str(),
        ),
        Frame::Ping(p) => {
            // An answer: it goes out after a drain's half-close too.
            let _ = link.send_reply(&Pong {
                nonce: p.nonce.to_native(),
            });
        }
        Frame::Pong(p) => {
            let nonce = p.nonce.to_native();
            if !inner.pings.complete(nonce, Ok(Instant::now())) {
                tracing::trace!(
                    nonce,
                    "Pong for no waiting ping (a keepalive probe, or late)"
                );
            }
        }
        Frame::Close(c) => {
            return Some(End::ServerClose {
                code: c.code.to_native(),
                reason: c.reason.as_str().to_string(),
            })
        }
        other => {
            return Some(violation(
                link,
                Code::BadFrame,
                format!("unexpected {} frame from server", other.kind().name()),
            ))
        }
    }
    None
}

fn on_status(inner: &Arc<Inner>, link: &Link, req: u64, code: u16, message: &str) {
    if req == 0 {
        if code == Code::Reconnect.as_u16() {
            drain(inner, link, message);
        } else if code != 0 {
            // An asynchronous failure of a fire-and-forget request (a direct event to an
            // unknown peer, a publish to a bad topic): never dropped silently.
            tracing::warn!(
                code,
                name = %Code::describe(code),
                message,
                "peerd server reported an error"
            );
            dispatch(
                inner,
                Work::Error(ServerError {
                    code,
                    message: message.to_string(),
                }),
            );
        }
        return;
    }
    let reply = if code == 0 {
        Ok(Reply::Ok)
    } else {
        Err(RequestError::Rejected {
            code,
            message: message.to_string(),
        })
    };
    if inner.requests.complete(req, reply) {
        return;
    }
    let resync = inner.resync.lock().unwrap().remove(&req);
    match resync {
        Some(_) if code == 0 => {}
        Some(Resync::Join(topic)) => {
            inner.topics.lock().unwrap().forget_topic(&topic);
            let message = format!("re-joining topic {topic:?} after reconnect failed: {message}");
            tracing::warn!(code, %message, "peerd-client");
            dispatch(inner, Work::Error(ServerError { code, message }));
        }
        Some(Resync::Watch(key)) => {
            let message = format!("re-watching {key:?} after reconnect failed: {message}");
            tracing::warn!(code, %message, "peerd-client");
            dispatch(inner, Work::Error(ServerError { code, message }));
        }
        None => tracing::debug!(req, code, "late or unknown Status dropped"),
    }
}
