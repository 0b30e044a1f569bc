//! The server's side of Hello -> Welcome | Reject.
//!
//! The protocol's own checks (frame kind, size, version, peer-id rules) are the codec's
//! (`peerd_codec::handshake::parse_hello`); here are the ones that need the server:
//! credentials, claiming the peer id in the directory (or taking it over with a resume
//! token), and then registering the connection and announcing it.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future::poll_fn;
use peerd_codec::handshake::{parse_hello, HelloFields};
use peerd_codec::{self as codec, validate_declared_peer_id, Code, PresenceChange};

use crate::auth::{AuthRequest, Denied, Grant};
use crate::cluster::claims::ClaimRequest;
use crate::cluster::link::here;
use crate::cluster::wire::Op;
use crate::cluster::BridgeCmd;
use crate::config::millis_u32;
use crate::conn::Conn;
use crate::directory::{random_token, Claimed, Entry};
use crate::error::Refused;
use crate::inbound::{poll_fill, RxBuf};
use crate::lifecycle::settle;
use crate::outbound::Outbound;
use crate::peer::ConnectedPeer;
use crate::presence::announce_global;
use crate::shard::Shard;

/// Send Reject{code, reason} and shut the socket's write side. Used before a connection is
/// registered: the frame is tiny and the socket buffer empty.
pub(crate) fn reject(shard: &Shard, out: &Rc<Outbound>, code: Code, reason: &str) {
    tracing::warn!(
        shard = shard.index(),
        code = code.name(),
        reason,
        "handshake refused"
    );
    let frame = shard
        .local
        .encode(&codec::Reject {
            code: code.as_u16(),
            reason: Cow::Borrowed(reason),
        })
        .ok();
    if let Some(f) = &frame {
        shard.local.metrics.frame_out(f.kind(), f.peerd_len());
    }
    let status = peerd_ws::close::status_for(code.as_u16());
    out.push_last(frame.as_ref(), false, Some((status, reason)));
}

/// Credentials were refused (a Hello's or a Refresh's) or a session's expired.
///
/// The one place an authentication failure is seen, for logs and counters
/// (`peerd_auth_failures_total{reason}`: the code's name, `unauthorized` or
/// `token_expired`).
pub(crate) fn auth_failed(shard: &Shard, code: Code, reason: &str) {
    shard.local.metrics.auth_failed(code.name());
    tracing::debug!(
        shard = shard.index(),
        code = code.name(),
        reason,
        "authentication failed"
    );
}

/// A refusal from the authenticator, counted, as the peer gets it.
pub(crate) fn denied(shard: &Shard, d: Denied) -> Refused {
    auth_failed(shard, d.code, &d.reason);
    Refused::new(d.code, d.reason)
}

/// A Hello that passed every check; the peer id is claimed in the directory.
pub(crate) struct Accepted {
    peer_id: Arc<str>,
    session: u64,
    token: [u8; 16],
    replaced: Option<Entry>,
    /// The protocol version of the session (the lower of the client's and ours).
    version: u16,
    /// What the credentials allow and until when; boxed, and only when they restrict or
    /// expire: this travels through the connection task's future, whose size every peer
    /// pays for.
    grant: Option<Box<Grant>>,
}

/// Read and check the Hello. `None`: the handshake failed and the peer was answered (or
/// went away); either way counted as rejected, with the reason.
pub(crate) async fn read_hello(
    shard: &Rc<Shard>,
    out: &Rc<Outbound>,
    rx: &mut RxBuf,
) -> Option<Accepted> {
    let metrics = &shard.local.metrics;
    loop {
        if let Some(end) = rx.take_ws_end() {
            // Closed or broke the WebSocket protocol before its Hello was whole.
            metrics.rejected("disconnected");
            out.push_last(None, false, Some(end.answer()));
            return None;
        }
        match parse_hello(rx.pending()) {
            Ok(Some((hello, n))) => {
                metrics.frame_in(codec::FrameKind::Hello as u8, n);
                let result = match &shard.shared().cluster {
                    None => accept(shard, &hello),
                    // Boxed: only a cluster node's handshakes carry the claim's wait in
                    // their future, not every connection's task.
                    Some(_) => Box::pin(accept_in_cluster(shard, &hello)).await,
                };
                rx.consume(n);
                return match result {
                    Ok(a) => Some(a),
                    Err(e) => {
                        metrics.rejected(e.code.name());
                        reject(shard, out, e.code, &e.reason);
                        None
                    }
                };
            }
            Ok(None) => {}
            Err(e) => {
                metrics.rejected(e.code.name());
                reject(shard, out, e.code, &e.reason);
                return None;
            }
        }
        match poll_fn(|cx| poll_fill(out, rx, &shard.local.rx_pool, cx)).await {
            Ok(0) | Err(_) => {
                metrics.rejected("disconnected");
                return None;
            }
            Ok(_) => {}
        }
    }
}

/// A Hello that passed the checks before its id is claimed.
struct Checked<'a> {
    /// The id to claim (declared, or named by the credentials); None: assign one.
    peer_id: Option<Arc<str>>,
    resume: Option<&'a [u8]>,
    /// The Hello resumes a server-assigned id (`HelloFields::resumes_assigned_id`).
    resumes_assigned: bool,
    grant: Grant,
    version: u16,
}

/// The checks before the id is claimed: the server is open, the credentials, and which id
/// the peer may have.
fn check<'a>(shard: &Shard, h: &HelloFields<'a>) -> Result<Checked<'a>, Refused> {
    if shard.local.stopping.get() {
        // Welcoming now would register a peer after the shard closed every peer, and leave
        // it open until the thread ends.
        return Err(Refused::new(Code::Shutdown, "server shutting down"));
    }
    let version = h.session_version();
    let grant = match &shard.hooks.authenticator {
        Some(auth) => auth(&AuthRequest {
            peer_id: h.peer_id,
            credentials: h.credentials,
            refresh: false,
        })
        .map_err(|d| denied(shard, d))?,
        None => Grant::anonymous(),
    };
    // The credentials name the peer (a token's `sub`): a Hello may not claim another id,
    // and one that declares none takes theirs.
    let declared: Option<&str> = match (h.peer_id, grant.peer_id.as_deref()) {
        (Some(d), Some(g)) if d != g => {
            return Err(denied(
                shard,
                Denied::new(format!("the credentials are for peer id {g:?}, not {d:?}")),
            ))
        }
        (_, Some(g)) => {
            // Ids an authenticator proves follow the rules of declared ids: never all
            // digits, which are reserved for ids the server assigns.
            if let Err(e) = validate_declared_peer_id(g) {
                return Err(denied(
                    shard,
                    Denied::new(format!(
                        "the credentials' peer id {g:?} cannot be used: {e}"
                    )),
                ));
            }
            Some(g)
        }
        (d, None) => d,
    };
    let with_id = HelloFields {
        peer_id: declared,
        ..*h
    };
    let resumes_assigned = with_id.resumes_assigned_id();
    let peer_id = declared.map(Arc::from);
    Ok(Checked {
        peer_id,
        resume: h.resume_token,
        resumes_assigned,
        grant,
        version,
    })
}

/// What the credentials allow, kept only when they restrict or expire (boxed: see
/// `Accepted::grant`).
fn kept(grant: Grant) -> Option<Box<Grant>> {
    (grant.expires_at.is_some() || grant.permissions.is_some()).then(|| Box::new(grant))
}

fn accept(shard: &Shard, h: &HelloFields<'_>) -> Result<Accepted, Refused> {
    let Checked {
        peer_id,
        resume,
        resumes_assigned,
        grant,
        version,
    } = check(shard, h)?;
    let shared = shard.shared();
    let session = shared.next_session();
    let token = random_token();
    let entry = Entry {
        shard: shard.index(),
        session,
        token,
    };
    let (peer_id, replaced) = match (peer_id, resume) {
        (Some(id), Some(t)) if resumes_assigned => {
            match shared.directory.take_over(&id, entry.clone(), t) {
                Some(old) => (id, Some(old)),
                // The old session is gone (or the token is wrong): a fresh assigned id.
                None => (claim_assigned(shard, entry)?, None),
            }
        }
        (Some(id), resume) => match shared.directory.claim(&id, entry, resume) {
            Ok(Claimed::Fresh) => (id, None),
            Ok(Claimed::TookOver(old)) => (id, Some(old)),
            Err(code) => {
                return Err(Refused::new(
                    code,
                    format!("peer id {id:?} is held by a live session"),
                ))
            }
        },
        (None, _) => (claim_assigned(shard, entry)?, None),
    };
    Ok(Accepted {
        peer_id,
        session,
        token,
        replaced,
        version,
        grant: kept(grant),
    })
}

/// `accept` on a cluster node: the id is claimed cluster-wide by the bridge
/// (`cluster::claims`), which this waits for without blocking the shard.
async fn accept_in_cluster(shard: &Shard, h: &HelloFields<'_>) -> Result<Accepted, Refused> {
    let c = check(shard, h)?;
    let shared = shard.shared();
    let cluster = shared.cluster.as_ref().expect("a cluster node");
    if !cluster.is_up() {
        return Err(Refused::new(
            Code::Overloaded,
            "this node has no link to its cluster now, retry (or connect to another node)",
        ));
    }
    if let (Some(id), None) = (&c.peer_id, c.resume) {
        // Held here or elsewhere already, as far as this node knows: no need to ask.
        if shared.directory.lookup(id).is_some() {
            return Err(Refused::new(
                Code::PeerIdTaken,
                format!("peer id {id:?} is held by a live session"),
            ));
        }
    }
    let session = shared.next_session();
    let token = random_token();
    let (reply, answer) = flume::bounded(1);
    cluster.cmd(BridgeCmd::Claim(ClaimRequest {
        peer: c.peer_id,
        resume: c.resume.map(<[u8]>::to_vec),
        resumes_assigned: c.resumes_assigned,
        at: here(shard.index(), session),
        token,
        reply,
    }));
    let claimed = match answer.recv_async().await {
        Ok(Ok(c)) => c,
        Ok(Err((code, reason))) => return Err(Refused::new(code, reason)),
        Err(_) => return Err(Refused::new(Code::Shutdown, "server shutting down")),
    };
    let entry = Entry {
        shard: shard.index(),
        session,
        token,
    };
    // The cluster granted the id: a local holder is replaced (closed as Replaced by
    // `register`); a holder on another node was told by the bridge.
    let replaced = shared
        .directory
        .upsert(&claimed.peer, entry)
        .filter(|old| shared.is_local(old.shard));
    Ok(Accepted {
        peer_id: claimed.peer,
        session,
        token,
        replaced,
        version: c.version,
        grant: kept(c.grant),
    })
}

/// Assign the next numeric id and claim it (it cannot be taken: declared ids are never
/// all digits, and numeric ones are only ever taken over, not claimed).
fn claim_assigned(shard: &Shard, entry: Entry) -> Result<Arc<str>, Refused> {
    let id: Arc<str> = shard.shared().assign_peer_id().into();
    match shard.shared().directory.claim(&id, entry, None) {
        Ok(_) => Ok(id),
        Err(code) => Err(Refused::new(code, "assigned peer id collided")),
    }
}

/// Create the connection and announce it: Welcome, the takeover, presence, and the
/// embedder's `on_connection` (which sees the peer active, before its first frame).
pub(crate) fn register(shard: &Rc<Shard>, out: Rc<Outbound>, a: Accepted) -> Rc<Conn> {
    let conn = Rc::new(Conn::new(
        shard.local.clone(),
        out,
        a.session,
        a.peer_id.clone(),
        a.version,
    ));
    if let Some(grant) = a.grant {
        conn.set_auth(*grant);
    }
    shard.register(&conn);
    shard.local.metrics.welcomed(conn.out.transport());
    tracing::debug!(shard = shard.index(), peer = %conn.peer_id, session = conn.session, "peer connected");
    let shared = shard.shared();
    if let Some(old) = a.replaced {
        shared.kick(
            old.shard,
            old.session,
            Code::Replaced,
            "session resumed by a new connection",
        );
    }
    let _ = conn.queue_msg(&codec::Welcome {
        version: a.version,
        peer_id: Cow::Borrowed(&a.peer_id),
        session_id: a.session,
        resume_token: Cow::Borrowed(&a.token),
        limits: shard.local.limits().wire(),
        heartbeat_ms: millis_u32(shared.config.heartbeat),
    });
    announce_global(shard, &conn, PresenceChange::Join);
    if let Some(c) = &shared.cluster {
        c.state(vec![Op::PeerUp {
            peer: conn.peer_id.clone(),
            at: here(shard.index(), conn.session),
        }]);
    }
    if let Some(cb) = &shard.hooks.on_connection {
        cb(ConnectedPeer::from_conn(conn.clone()));
    }
    settle(shard);
    conn
}
