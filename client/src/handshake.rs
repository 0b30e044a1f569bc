//! Connect and the Hello -> Welcome | Reject handshake, over any transport.
//!
//! The protocol side (encoding Hello, recognising Welcome, Reject or a Close, the version
//! check) is the codec's sans-io [`ClientHandshake`]; this module does the socket, the
//! transport's own handshake (TLS, WebSocket upgrade), the deadline, what to present in
//! Hello on a reconnect, and maps failures to [`ClientError`].

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerd_codec::handshake::{ClientHandshake, HandshakeError, Welcomed};
use peerd_codec::{
    Framer, Hello, DEFAULT_MAX_FRAME_LEN, MAX_HELLO_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::error::ClientError;
use crate::link::{Link, WriteError};
use crate::options::PeerOptions;
use crate::shared::{Inner, Session};
use crate::socket::Socket;
use crate::state::State;
use crate::transport::{Chunk, Remote, WireReader};
use crate::ws::{ws_violation_code, Upgrading};

/// Keepalive interval when neither the options nor the server say.
const FALLBACK_KEEPALIVE: Duration = Duration::from_secs(15);

/// A connection that completed the handshake, not yet being read.
pub(crate) struct Established {
    pub(crate) link: Arc<Link>,
    /// The read side; the socket's read timeout is the keepalive interval.
    pub(crate) reader: WireReader,
    /// Holds whatever the server sent right behind its Welcome.
    pub(crate) framer: Framer,
    pub(crate) session: Arc<Session>,
}

/// The identity presented in Hello: the declared id, or on a reconnect the id of the last
/// session and its resume token, so the server hands the id over if the old session still
/// looks alive to it. A server-assigned (numeric) id may be presented only with its token;
/// if the old session is already gone the server assigns a fresh id.
pub(crate) fn hello_identity<'a>(
    opts: &'a PeerOptions,
    last: Option<&'a Session>,
) -> (Option<&'a str>, Option<&'a [u8]>) {
    let Some(s) = last else {
        return (opts.peer_id.as_deref(), None);
    };
    let token = (!s.resume_token.is_empty()).then_some(s.resume_token.as_slice());
    let id = opts.peer_id.as_deref().or_else(|| {
        (token.is_some() || peerd_codec::validate_declared_peer_id(&s.peer_id).is_ok())
            .then_some(s.peer_id.as_str())
    });
    (id, token)
}

/// Connect (each address in turn) and handshake.
pub(crate) fn establish(inner: &Arc<Inner>, initial: bool) -> Result<Established, ClientError> {
    let (sock, remote) = inner
        .target
        .connect(inner.opts.connect_timeout, || inner.gate.is_closed())?;
    let clone = sock
        .try_clone()
        .map_err(|e| remote.io_error(e, &inner.target))?;
    *inner.connecting.lock().unwrap() = Some(clone);
    // Checked after publishing the socket: disconnect() closes the gate first, then shuts
    // whatever socket it finds, so one of the two sides always sees the other.
    if inner.gate.is_closed() {
        sock.shutdown();
        inner.connecting.lock().unwrap().take();
        return Err(ClientError::Closed);
    }
    if initial {
        inner.transition_state(State::Connecting, State::Negotiating);
    }
    let r = handshake(inner, sock, &remote);
    inner.connecting.lock().unwrap().take();
    if r.is_err() && inner.gate.is_closed() {
        return Err(ClientError::Closed);
    }
    r
}

fn handshake(
    inner: &Arc<Inner>,
    sock: Socket,
    remote: &Remote,
) -> Result<Established, ClientError> {
    let opts = &inner.opts;
    let io_err = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ClientError::HandshakeTimeout
        } else {
            remote.io_error(e, &inner.target)
        }
    };
    let deadline = Instant::now() + opts.handshake_timeout;
    sock.set_write_timeout(Some(opts.handshake_timeout.max(Duration::from_millis(1))))
        .map_err(io_err)?;
    let (mut reader, writer) = inner.target.open(&sock).map_err(io_err)?;
    let link = Arc::new(Link::new(
        writer,
        sock.try_clone().map_err(io_err)?,
        MAX_HELLO_LEN,
    ));

    if let Some(request) = reader.upgrade_request(&inner.target) {
        link.write_raw(&request).map_err(io_err)?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::HandshakeTimeout);
            }
            sock.set_read_timeout(Some(left)).map_err(io_err)?;
            match reader.read_upgrade() {
                Ok(Upgrading::Done) => break,
                Ok(Upgrading::More) => {}
                Ok(Upgrading::Refused(e)) => return Err(remote.upgrade_error(e)),
                Ok(Upgrading::Eof) => return Err(ClientError::ClosedDuringHandshake),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    let last = inner.session();
    let (peer_id, resume_token) = hello_identity(opts, last.as_deref());
    // The latest credentials: a token renewed with `refresh_token` outlives the session
    // it was sent on.
    let credentials = inner.credentials.lock().unwrap().clone();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        peer_id: peer_id.map(Cow::Borrowed),
        credentials: credentials.as_deref().map(Cow::Borrowed),
        resume_token: resume_token.map(Cow::Borrowed),
        client: Cow::Borrowed(&opts.client_name),
    };
    link.write(&hello).map_err(|e| match e {
        WriteError::Encode(e) => ClientError::InvalidOptions(format!("Hello does not fit: {e}")),
        WriteError::Io(e) => io_err(e),
        // Only a drain half-closes a link, and none can start before the Welcome.
        WriteError::HalfClosed => ClientError::ClosedDuringHandshake,
    })?;

    let mut hs = ClientHandshake::new(opts.max_frame_len);
    let welcomed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::HandshakeTimeout);
        }
        sock.set_read_timeout(Some(left)).map_err(io_err)?;
        match reader.read() {
            Ok(Chunk::Eof) => return Err(ClientError::ClosedDuringHandshake),
            Ok(Chunk::Data(d)) => {
                if let Some(w) = hs.receive(d).map_err(handshake_error)? {
                    break w;
                }
            }
            Ok(Chunk::Ping(p)) => link.send_pong(p),
            // A WebSocket Close with no Reject before it: its status, if it stands for a
            // peerd code, is the refusal.
            Ok(Chunk::Closed { status, reason }) => {
                link.close_transport(status);
                return Err(match status.and_then(peerd_ws::close::code_for) {
                    Some(code) => ClientError::Rejected { code, reason },
                    None => ClientError::ClosedDuringHandshake,
                });
            }
            Ok(Chunk::Violation(e)) => {
                link.send_close(ws_violation_code(&e).as_u16(), e.reason);
                return Err(ClientError::Protocol(e.to_string()));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    };
    let session = session_from(opts, welcomed)?;

    // The reader's read timeout drives the keepalive probe; the write timeout bounds how
    // long a writer may block on a server that stopped reading before the connection is
    // declared dead (a partial write has to kill it anyway).
    let keepalive = opts.keepalive.unwrap_or(if session.heartbeat.is_zero() {
        FALLBACK_KEEPALIVE
    } else {
        session.heartbeat
    });
    let keepalive = keepalive.max(Duration::from_millis(10));
    sock.set_read_timeout(Some(keepalive)).map_err(io_err)?;
    sock.set_write_timeout(Some((keepalive * 2).max(Duration::from_secs(1))))
        .map_err(io_err)?;
    link.set_max_send(match session.limits.max_frame_len {
        0 => DEFAULT_MAX_FRAME_LEN,
        n => n,
    });
    Ok(Established {
        link,
        reader,
        framer: hs.into_framer(),
        session: Arc::new(session),
    })
}

/// The codec's handshake failures as the client reports them.
fn handshake_error(e: HandshakeError) -> ClientError {
    match e {
        HandshakeError::Refused { code, reason } => ClientError::Rejected { code, reason },
        HandshakeError::Wire(e) => ClientError::Wire(e),
        HandshakeError::Unexpected(kind) => {
            ClientError::Protocol(format!("expected Welcome or Reject, got {}", kind.name()))
        }
        HandshakeError::UnsupportedVersion(version) => ClientError::Protocol(format!(
            "server chose protocol version {version}; this client speaks \
             {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
        )),
        other => ClientError::Protocol(other.to_string()),
    }
}

/// Check what the codec cannot: the id is one this client accepts and the one it declared.
fn session_from(opts: &PeerOptions, w: Welcomed) -> Result<Session, ClientError> {
    let peer_id = w.peer_id;
    peerd_codec::validate_peer_id(&peer_id)
        .map_err(|e| ClientError::Protocol(format!("Welcome peer id {peer_id:?}: {e}")))?;
    if let Some(declared) = &opts.peer_id {
        if *declared != peer_id {
            return Err(ClientError::Protocol(format!(
                "declared peer id {declared:?} but Welcome says {peer_id:?}"
            )));
        }
    }
    Ok(Session {
        version: w.version,
        peer_id,
        session_id: w.session_id,
        resume_token: w.resume_token,
        limits: w.limits,
        heartbeat: Duration::from_millis(u64::from(w.heartbeat_ms)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerd_codec::{Code, FrameKind, Limits};

    fn session(id: &str, token: &[u8]) -> Session {
        Session {
            version: PROTOCOL_VERSION,
            peer_id: id.into(),
            session_id: 1,
            resume_token: token.to_vec(),
            limits: Limits {
                max_frame_len: 1 << 20,
                max_topics_per_peer: 8,
                max_members_per_topic: 8,
                max_topic_len: 128,
                outbound_queue_bytes: 1 << 20,
            },
            heartbeat: Duration::from_secs(5),
        }
    }

    fn welcomed(id: &str) -> Welcomed {
        let s = session(id, b"tok");
        Welcomed {
            version: PROTOCOL_VERSION,
            peer_id: s.peer_id,
            session_id: 9,
            resume_token: s.resume_token,
            limits: s.limits,
            heartbeat_ms: 2500,
        }
    }

    #[test]
    fn first_hello_declares_the_configured_id_without_token() {
        let o = PeerOptions::new().peer_id("alice");
        assert_eq!(hello_identity(&o, None), (Some("alice"), None));
        assert_eq!(hello_identity(&PeerOptions::new(), None), (None, None));
    }

    #[test]
    fn reconnect_hello_presents_id_and_resume_token() {
        let o = PeerOptions::new().peer_id("alice");
        let s = session("alice", b"tok");
        assert_eq!(
            hello_identity(&o, Some(&s)),
            (Some("alice"), Some(&b"tok"[..]))
        );
        // A server-assigned numeric id is presented only together with its token.
        let o = PeerOptions::new();
        let s = session("17", b"tok");
        assert_eq!(
            hello_identity(&o, Some(&s)),
            (Some("17"), Some(&b"tok"[..]))
        );
        let s = session("17", b"");
        assert_eq!(hello_identity(&o, Some(&s)), (None, None));
    }

    #[test]
    fn handshake_failures_keep_the_client_error_types() {
        let e = handshake_error(HandshakeError::Refused {
            code: Code::PeerIdTaken.as_u16(),
            reason: "taken".into(),
        });
        assert!(
            matches!(&e, ClientError::Rejected { code, reason }
                if *code == Code::PeerIdTaken.as_u16() && reason == "taken"),
            "{e}"
        );
        assert!(e.is_permanent());
        let e = handshake_error(HandshakeError::Unexpected(FrameKind::Ping));
        assert!(
            matches!(&e, ClientError::Protocol(m) if m.contains("Ping")),
            "{e}"
        );
        let e = handshake_error(HandshakeError::UnsupportedVersion(PROTOCOL_VERSION + 1));
        assert!(matches!(e, ClientError::Protocol(_)), "{e}");
        assert!(e.is_permanent());
    }

    #[test]
    fn welcome_must_confirm_the_declared_id() {
        let o = PeerOptions::new().peer_id("alice");
        let s = session_from(&o, welcomed("alice")).unwrap();
        assert_eq!((s.peer_id.as_str(), s.session_id), ("alice", 9));
        assert_eq!(s.heartbeat, Duration::from_millis(2500));
        let e = session_from(&o, welcomed("mallory")).unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e}");
        // A server-assigned numeric id is fine when none was declared.
        assert_eq!(
            session_from(&PeerOptions::new(), welcomed("42"))
                .unwrap()
                .peer_id,
            "42"
        );
        let e = session_from(&PeerOptions::new(), welcomed("a b")).unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e}");
    }
}
