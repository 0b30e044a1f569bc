//! Hello -> Welcome | Reject.

use std::borrow::Cow;
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future::poll_fn;
use peerd_codec::{self as codec, Code, Frame, MAX_HELLO_LEN, PROTOCOL_VERSION};

use crate::conn::{poll_fill, Conn, Handshaken, RxBuf};
use crate::directory::{random_token, Claimed, Entry};
use crate::peer::ConnectedPeer;
use crate::shard::Shard;
use crate::stream::{self, Stream};

/// Send Reject{code, reason} best-effort and shut the socket. Used before a connection is
/// registered, so there is no queue: the frame is tiny and the socket buffer empty.
pub(crate) fn reject(shard: &Shard, fd: RawFd, code: Code, reason: &str) {
    let msg = codec::Reject {
        code: code.as_u16(),
        reason: Cow::Borrowed(reason),
    };
    if let Ok(frame) = shard.encode(&msg) {
        let _ = stream::send_now(fd, &frame);
    }
    stream::shutdown(fd);
}

/// Run the handshake. `None`: it failed and the socket was answered and shut.
pub(crate) async fn run(
    shard: &Rc<Shard>,
    stream: &RefCell<Stream>,
    rx: &mut RxBuf,
) -> Option<Accepted> {
    let fd = stream.borrow().fd();
    loop {
        let pending = rx.pending_bytes();
        match codec::split_frame(pending, MAX_HELLO_LEN) {
            Ok(Some((raw, n))) => {
                let result = accept_hello(shard, raw);
                return match result {
                    Ok(ok) => {
                        rx.consume(n);
                        Some(ok)
                    }
                    Err((code, reason)) => {
                        reject(shard, fd, code, &reason);
                        None
                    }
                };
            }
            Ok(None) => {}
            Err(e) => {
                reject(shard, fd, e.code(), &e.to_string());
                return None;
            }
        }
        match poll_fn(|cx| poll_fill(stream, rx, shard, cx)).await {
            Ok(0) | Err(_) => {
                stream::shutdown(fd);
                return None;
            }
            Ok(_) => {}
        }
    }
}

/// A Hello that passed every check; the peer id is claimed in the directory.
pub(crate) struct Accepted {
    peer_id: Arc<str>,
    session: u64,
    token: [u8; 16],
    replaced: Option<Entry>,
}

fn accept_hello(shard: &Rc<Shard>, raw: codec::RawFrame<'_>) -> Result<Accepted, (Code, String)> {
    let frame = raw.decode().map_err(|e| (e.code(), e.to_string()))?;
    let Frame::Hello(h) = frame else {
        return Err((
            Code::BadFrame,
            format!("expected Hello, got {}", frame.kind().name()),
        ));
    };
    let version = h.version.to_native();
    if version < PROTOCOL_VERSION {
        return Err((
            Code::UnsupportedVersion,
            format!(
                "protocol version {version} not supported; this server speaks {PROTOCOL_VERSION}"
            ),
        ));
    }
    let declared = codec::opt_str(&h.peer_id);
    let resume = codec::opt_bytes(&h.resume_token);
    // A numeric id is the server's to assign; a client may present one only together with
    // the resume token of the live session that holds it.
    let numeric_resume =
        declared.is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit())) && resume.is_some();
    if let Some(id) = declared {
        let valid = if numeric_resume {
            codec::validate_peer_id(id)
        } else {
            codec::validate_declared_peer_id(id)
        };
        valid.map_err(|e| (Code::InvalidArgument, e.to_string()))?;
    }
    if let Some(auth) = &shard.shared.opts.authenticator {
        auth(declared, codec::opt_bytes(&h.credentials))
            .map_err(|reason| (Code::Unauthorized, reason))?;
    }
    let shared = &shard.shared;
    let session = shared.next_session();
    let token = random_token();
    let entry = Entry {
        shard: shard.index,
        session,
        token,
    };
    let (peer_id, replaced): (Arc<str>, Option<Entry>) = match (declared, resume) {
        (Some(id), Some(t)) if numeric_resume => {
            let id: Arc<str> = id.into();
            match shared.directory.take_over(&id, entry.clone(), t) {
                Some(old) => (id, Some(old)),
                // The old session is gone (or the token is wrong): a fresh assigned id.
                None => (claim_assigned(shard, entry)?, None),
            }
        }
        (Some(id), _) => {
            let id: Arc<str> = id.into();
            match shared.directory.claim(&id, entry, resume) {
                Ok(Claimed::Fresh) => (id, None),
                Ok(Claimed::TookOver(old)) => (id, Some(old)),
                Err(code) => {
                    return Err((code, format!("peer id {id:?} is held by a live session")))
                }
            }
        }
        (None, _) => (claim_assigned(shard, entry)?, None),
    };
    Ok(Accepted {
        peer_id,
        session,
        token,
        replaced,
    })
}

/// Assign the next numeric id and claim it (it cannot be taken: declared ids are never
/// all digits, and numeric ones are only ever taken over, not claimed).
fn claim_assigned(shard: &Rc<Shard>, entry: Entry) -> Result<Arc<str>, (Code, String)> {
    let id: Arc<str> = shard.shared.assign_peer_id().into();
    match shard.shared.directory.claim(&id, entry, None) {
        Ok(_) => Ok(id),
        Err(code) => Err((code, "assigned peer id collided".into())),
    }
}

/// Create the connection, announce it (Welcome, takeover, presence, on_connection).
pub(crate) fn register(shard: &Rc<Shard>, stream: Stream, rx: RxBuf, a: Accepted) -> Handshaken {
    let conn = Rc::new(Conn::new(
        shard.clone(),
        stream,
        a.session,
        a.peer_id.clone(),
    ));
    shard.register(&conn);
    if let Some(old) = a.replaced {
        shard.shared.kick(
            old.shard,
            old.session,
            Code::Replaced,
            "session resumed by a new connection",
        );
    }
    let limits = shard.limits();
    let welcome = codec::Welcome {
        version: PROTOCOL_VERSION,
        peer_id: Cow::Borrowed(&a.peer_id),
        session_id: a.session,
        resume_token: Cow::Borrowed(&a.token),
        limits: codec::Limits {
            max_frame_len: limits.max_frame_len,
            max_topics_per_peer: limits.max_topics_per_peer,
            max_members_per_topic: limits.max_members_per_topic,
            max_topic_len: limits.max_topic_len,
            outbound_queue_bytes: limits.outbound_queue_bytes.min(u32::MAX as usize) as u32,
        },
        heartbeat_ms: shard
            .shared
            .opts
            .heartbeat
            .as_millis()
            .min(u32::MAX as u128) as u32,
    };
    let _ = conn.queue_msg(&welcome);
    crate::topics::on_connect(&conn);
    if let Some(cb) = &shard.shared.opts.on_connection {
        cb(ConnectedPeer::from_conn(conn.clone()));
    }
    shard.flush_dirty();
    Handshaken { conn, rx }
}
