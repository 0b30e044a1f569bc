//! The socket and the threads around it: connect + handshake, the write side ([`Link`]),
//! and the supervisor thread that reads frames and reconnects.
//!
//! One supervisor thread per peer lives as long as the peer: it reads the current
//! connection until it ends, then runs the reconnect loop, then reads the next connection.
//! Reading, reconnecting and the handshake are therefore never concurrent with each other,
//! which keeps the state machine simple. User code never runs on this thread (it goes to
//! the dispatcher), so a handler that blocks, or makes a blocking call, cannot stall the
//! reader that would complete that call.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerd_codec::codec::decode_bytes;
use peerd_codec::{
    encode, opt_str, ArchivedPresenceChange, ArchivedSignalKind, Close, Code, Encode, Frame,
    Framer, Hello, Join, Limits, Ping, Pong, SignalKind, Watch, DEFAULT_MAX_FRAME_LEN,
    MAX_HELLO_LEN, PROTOCOL_VERSION,
};

use crate::dispatch::Work;
use crate::error::{ClientError, RequestError, SendFailure};
use crate::events::{EventInfo, ServerError};
use crate::options::PeerOptions;
use crate::peer::{Inner, Reply, Resync, Session};
use crate::pending::Outbound;
use crate::rpc::RpcRequestInfo;
use crate::state::{CloseInfo, Initiator, State};
use crate::topics::{PresenceEvent, SignalInfo, TopicMessageInfo};
use crate::CallError;

/// Keepalive interval when neither the options nor the server say.
const FALLBACK_KEEPALIVE: Duration = Duration::from_secs(15);

/// Read chunk size. One copy from this buffer into the framer keeps the code free of
/// `unsafe` uninitialized-buffer tricks; the framer then hands out frames zero-copy.
const READ_CHUNK: usize = 64 * 1024;

/// The write side of one connection. Writers serialize on a mutex around the socket: each
/// frame is encoded into the writer's reused buffer and written with one `write_all`, so
/// frames never interleave and a small frame costs one syscall.
pub(crate) struct Link {
    writer: Mutex<Writer>,
    /// A second handle on the socket, to shut it down without taking the writer lock
    /// (a writer blocked on a full socket would otherwise hold it).
    sock: TcpStream,
    alive: AtomicBool,
    /// The server's body limit from Welcome: bigger messages fail locally with
    /// `Encode(TooLarge)` instead of getting the connection closed.
    max_send: u32,
}

struct Writer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Link {
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Mark dead and shut the socket down, which wakes the reader (and any blocked writer).
    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    pub(crate) fn send<M>(&self, msg: &M) -> Result<(), SendFailure>
    where
        M: Encode,
    {
        if !self.is_alive() {
            return Err(SendFailure::ConnectionLost);
        }
        let mut guard = self.writer.lock().unwrap();
        let w = &mut *guard;
        w.buf.clear();
        encode(msg, &mut w.buf, self.max_send).map_err(SendFailure::Encode)?;
        if let Err(e) = w.stream.write_all(&w.buf) {
            drop(guard);
            // A partial write leaves the stream mid-frame: the connection is unusable.
            tracing::debug!(error = %e, "peerd-client write failed");
            self.kill();
            return Err(SendFailure::ConnectionLost);
        }
        if w.buf.capacity() > 4 * READ_CHUNK {
            // Do not keep one huge frame's buffer for the life of the connection.
            w.buf = BytesMut::new();
        }
        Ok(())
    }
}

impl Outbound for Link {
    fn is_alive(&self) -> bool {
        Link::is_alive(self)
    }

    fn send<M: Encode>(&self, msg: &M) -> Result<(), SendFailure> {
        Link::send(self, msg)
    }
}

/// A connection that completed the handshake, not yet being read.
pub(crate) struct Established {
    pub(crate) link: Arc<Link>,
    stream: TcpStream,
    framer: Framer,
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

/// TCP connect (each address in turn) and handshake.
pub(crate) fn establish(inner: &Arc<Inner>, initial: bool) -> Result<Established, ClientError> {
    let opts = &inner.opts;
    let mut last_err = None;
    let mut connected = None;
    for addr in &inner.addrs {
        if inner.gate.is_closed() {
            return Err(ClientError::Closed);
        }
        match TcpStream::connect_timeout(addr, opts.connect_timeout) {
            Ok(s) => {
                connected = Some((s, *addr));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last_err = Some(ClientError::ConnectTimeout { addr: *addr });
            }
            Err(e) => {
                last_err = Some(ClientError::Io {
                    addr: *addr,
                    source: e,
                })
            }
        }
    }
    let Some((stream, addr)) = connected else {
        return Err(last_err.unwrap_or(ClientError::Closed));
    };
    let io_err = |e| ClientError::Io { addr, source: e };
    *inner.connecting.lock().unwrap() = Some(stream.try_clone().map_err(io_err)?);
    // Checked after publishing the socket: disconnect() closes the gate first, then shuts
    // whatever socket it finds, so one of the two sides always sees the other.
    if inner.gate.is_closed() {
        let _ = stream.shutdown(Shutdown::Both);
        inner.connecting.lock().unwrap().take();
        return Err(ClientError::Closed);
    }
    if initial {
        inner.transition_state(State::Connecting, State::Negotiating);
    }
    let r = handshake(inner, stream, addr);
    inner.connecting.lock().unwrap().take();
    if r.is_err() && inner.gate.is_closed() {
        return Err(ClientError::Closed);
    }
    r
}

fn handshake(
    inner: &Arc<Inner>,
    mut stream: TcpStream,
    addr: SocketAddr,
) -> Result<Established, ClientError> {
    let opts = &inner.opts;
    let io_err = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ClientError::HandshakeTimeout
        } else {
            ClientError::Io { addr, source: e }
        }
    };
    stream.set_nodelay(true).map_err(io_err)?;
    let deadline = Instant::now() + opts.handshake_timeout;

    let last = inner.session();
    let (peer_id, resume_token) = hello_identity(opts, last.as_deref());
    let hello = Hello {
        version: PROTOCOL_VERSION,
        peer_id: peer_id.map(Cow::Borrowed),
        credentials: opts.credentials.as_deref().map(Cow::Borrowed),
        resume_token: resume_token.map(Cow::Borrowed),
        client: Cow::Borrowed(&opts.client_name),
    };
    let mut out = BytesMut::new();
    encode(&hello, &mut out, MAX_HELLO_LEN)
        .map_err(|e| ClientError::InvalidOptions(format!("Hello does not fit: {e}")))?;
    stream
        .set_write_timeout(Some(opts.handshake_timeout.max(Duration::from_millis(1))))
        .map_err(io_err)?;
    stream.write_all(&out).map_err(io_err)?;

    let mut framer = Framer::new(opts.max_frame_len);
    let mut rbuf = vec![0u8; 16 * 1024];
    let session = loop {
        if let Some(frame) = framer.next_frame()? {
            match decode_bytes(&frame)? {
                Frame::Welcome(w) => break welcome_session(opts, w)?,
                Frame::Reject(r) => {
                    return Err(ClientError::Rejected {
                        code: r.code.to_native(),
                        reason: r.reason.as_str().to_string(),
                    })
                }
                Frame::Close(c) => {
                    return Err(ClientError::Rejected {
                        code: c.code.to_native(),
                        reason: c.reason.as_str().to_string(),
                    })
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected Welcome or Reject, got {}",
                        other.kind().name()
                    )))
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::HandshakeTimeout);
        }
        stream.set_read_timeout(Some(left)).map_err(io_err)?;
        match stream.read(&mut rbuf) {
            Ok(0) => return Err(ClientError::ClosedDuringHandshake),
            Ok(n) => framer.extend(&rbuf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    };

    // The reader's read timeout drives the keepalive probe; the write timeout bounds how
    // long a writer may block on a server that stopped reading before the connection is
    // declared dead (a partial write has to kill it anyway).
    let keepalive = opts.keepalive.unwrap_or(if session.heartbeat.is_zero() {
        FALLBACK_KEEPALIVE
    } else {
        session.heartbeat
    });
    let keepalive = keepalive.max(Duration::from_millis(10));
    stream.set_read_timeout(Some(keepalive)).map_err(io_err)?;
    stream
        .set_write_timeout(Some((keepalive * 2).max(Duration::from_secs(1))))
        .map_err(io_err)?;
    let max_send = match session.limits.max_frame_len {
        0 => DEFAULT_MAX_FRAME_LEN,
        n => n,
    };
    let link = Arc::new(Link {
        writer: Mutex::new(Writer {
            stream: stream.try_clone().map_err(io_err)?,
            buf: BytesMut::with_capacity(4096),
        }),
        sock: stream.try_clone().map_err(io_err)?,
        alive: AtomicBool::new(true),
        max_send,
    });
    Ok(Established {
        link,
        stream,
        framer,
        session: Arc::new(session),
    })
}

fn welcome_session(
    opts: &PeerOptions,
    w: &peerd_codec::ArchivedWelcome<'static>,
) -> Result<Session, ClientError> {
    let version = w.version.to_native();
    if version != PROTOCOL_VERSION {
        return Err(ClientError::Protocol(format!(
            "server chose protocol version {version}; this client speaks {PROTOCOL_VERSION}"
        )));
    }
    let peer_id = w.peer_id.as_str();
    peerd_codec::validate_peer_id(peer_id)
        .map_err(|e| ClientError::Protocol(format!("Welcome peer id {peer_id:?}: {e}")))?;
    if let Some(declared) = &opts.peer_id {
        if declared != peer_id {
            return Err(ClientError::Protocol(format!(
                "declared peer id {declared:?} but Welcome says {peer_id:?}"
            )));
        }
    }
    let l = &w.limits;
    Ok(Session {
        peer_id: peer_id.to_string(),
        session_id: w.session_id.to_native(),
        resume_token: w.resume_token.as_slice().to_vec(),
        limits: Limits {
            max_frame_len: l.max_frame_len.to_native(),
            max_topics_per_peer: l.max_topics_per_peer.to_native(),
            max_members_per_topic: l.max_members_per_topic.to_native(),
            max_topic_len: l.max_topic_len.to_native(),
            outbound_queue_bytes: l.outbound_queue_bytes.to_native(),
        },
        heartbeat: Duration::from_millis(u64::from(w.heartbeat_ms.to_native())),
    })
}

/// Make `est` the live connection; on a reconnect, re-join topics and re-watch presence.
/// False if the peer was closed meanwhile (the connection is then dropped).
pub(crate) fn install(inner: &Arc<Inner>, est: &Established, resync: bool) -> bool {
    *inner.session.lock().unwrap() = Some(est.session.clone());
    *inner.link.lock().unwrap() = Some(est.link.clone());
    // Same ordering argument as in `establish`: shutdown() closes the gate, then takes
    // the link; if it ran before our store, we see the closed gate here.
    if inner.gate.is_closed() {
        if let Some(l) = inner.link.lock().unwrap().take() {
            l.kill();
        }
        est.link.kill();
        return false;
    }
    if resync {
        resync_session(inner, &est.link);
    }
    inner.set_state(State::Active);
    true
}

/// Re-establish what the user had on the old connection. Each request carries a req id
/// so a failure is reported through `on_error` (and a topic that cannot be re-joined is
/// dropped from the joined set) instead of being lost.
fn resync_session(inner: &Arc<Inner>, link: &Link) {
    let (topics, watches) = {
        let t = inner.topics.lock().unwrap();
        (t.joined_topics(), t.watch_keys())
    };
    for topic in topics {
        let req = inner.next_id();
        let frame = Join {
            req,
            topic: Cow::Borrowed(&topic),
        };
        inner
            .resync
            .lock()
            .unwrap()
            .insert(req, Resync::Join(topic.clone()));
        if link.send(&frame).is_err() {
            return;
        }
    }
    for key in watches {
        let req = inner.next_id();
        let frame = Watch {
            req,
            topic: key.as_deref().map(Cow::Borrowed),
        };
        inner
            .resync
            .lock()
            .unwrap()
            .insert(req, Resync::Watch(key.clone()));
        if link.send(&frame).is_err() {
            return;
        }
    }
}

pub(crate) fn spawn_supervisor(inner: Arc<Inner>, est: Established) {
    std::thread::Builder::new()
        .name("peerd-reader".into())
        .spawn(move || supervise(inner, est))
        .expect("spawn peerd-reader thread");
}

/// Why a connection's read loop ended.
#[derive(Debug)]
enum End {
    /// The server sent Close.
    ServerClose { code: u16, reason: String },
    /// EOF without a Close.
    Eof,
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
    fn info(&self) -> CloseInfo {
        let (code, reason, initiator) = match self {
            End::ServerClose { code, reason } => (Some(*code), reason.clone(), Initiator::Server),
            End::Eof => (
                None,
                "connection closed by peer".into(),
                Initiator::Transport,
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

    /// Replaced: another connection took over our peer id; coming back would steal it back
    /// (a ping-pong between two clients). Normal: the server deliberately ended this
    /// session. Unauthorized: credentials were revoked; the same Hello would be refused.
    /// Everything else (shutdown, slow consumer, idle timeout, transport failures) is worth
    /// retrying: a restarted server comes back at the same address.
    fn may_reconnect(&self) -> bool {
        match self {
            End::ServerClose { code, .. } => !matches!(
                Code::from_u16(*code),
                Some(Code::Replaced | Code::Normal | Code::Unauthorized)
            ),
            _ => true,
        }
    }
}

fn supervise(inner: Arc<Inner>, mut est: Established) {
    loop {
        let end = read_loop(&inner, &mut est);
        tracing::debug!(?end, "peerd-client connection ended");
        // Order matters: mark the link dead, unpublish it, then fail waiters (see
        // Inner::request for the other half of this handshake).
        est.link.kill();
        {
            let mut slot = inner.link.lock().unwrap();
            if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &est.link)) {
                *slot = None;
            }
        }
        inner.fail_pending();
        if inner.gate.is_closed() {
            return;
        }
        inner.set_last_close(end.info());
        if !end.may_reconnect() || !inner.opts.reconnect.enabled {
            inner.finish();
            return;
        }
        inner.set_state(State::Reconnecting);
        match reconnect(&inner) {
            Some(next) => est = next,
            None => {
                inner.finish();
                return;
            }
        }
    }
}

fn reconnect(inner: &Arc<Inner>) -> Option<Established> {
    let policy = &inner.opts.reconnect;
    let mut rng = fastrand::Rng::new();
    let mut failed = 0u32;
    loop {
        if !policy.may_retry(failed) {
            tracing::warn!(attempts = failed, "peerd-client: giving up reconnecting");
            let mut info = inner
                .last_close
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(CloseInfo {
                    code: None,
                    reason: String::new(),
                    initiator: Initiator::Transport,
                });
            info.reason = format!("{}; reconnect gave up after {failed} attempts", info.reason);
            inner.set_last_close(info);
            return None;
        }
        if inner.gate.sleep(policy.delay(failed, &mut rng)) {
            return None;
        }
        match establish(inner, false) {
            Ok(est) => return install(inner, &est, true).then_some(est),
            Err(e) => {
                if inner.gate.is_closed() {
                    return None;
                }
                tracing::warn!(error = %e, attempt = failed, "peerd-client reconnect failed");
                if e.is_permanent() {
                    inner.set_last_close(CloseInfo {
                        code: e.code(),
                        reason: e.to_string(),
                        initiator: Initiator::Server,
                    });
                    return None;
                }
                failed = failed.saturating_add(1);
            }
        }
    }
}

fn read_loop(inner: &Arc<Inner>, est: &mut Established) -> End {
    let mut rbuf = vec![0u8; READ_CHUNK];
    // A Ping is outstanding because the connection went silent for one interval.
    let mut probing = false;
    loop {
        loop {
            match est.framer.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(end) = on_frame(inner, &est.link, frame) {
                        return end;
                    }
                }
                Ok(None) => break,
                Err(e) => return violation(&est.link, e.code(), e.to_string()),
            }
        }
        match est.stream.read(&mut rbuf) {
            Ok(0) => return End::Eof,
            Ok(n) => {
                probing = false;
                est.framer.extend(&rbuf[..n]);
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
                    let _ = est.link.send(&Close {
                        code: Code::IdleTimeout.as_u16(),
                        reason: "no data from server".into(),
                    });
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

fn violation(link: &Link, code: Code, reason: String) -> End {
    tracing::warn!(%reason, "peerd-client: protocol violation by server");
    let _ = link.send(&Close {
        code: code.as_u16(),
        reason: Cow::Borrowed(&reason),
    });
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
            }),
        ),
        Frame::Broadcast(b) => dispatch(
            inner,
            Work::Broadcast(EventInfo {
                name: b.name.as_str().to_string(),
                from: opt_string!(&b.peer),
                payload: slice(b.payload.as_slice()),
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
            s.req.to_native(),
            s.code.to_native(),
            s.message.as_str(),
        ),
        Frame::Ping(p) => {
            let _ = link.send(&Pong {
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

fn on_status(inner: &Arc<Inner>, req: u64, code: u16, message: &str) {
    if req == 0 {
        if code != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, token: &[u8]) -> Session {
        Session {
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
    fn reconnect_policy_by_close_code() {
        let close = |c: Code| End::ServerClose {
            code: c.as_u16(),
            reason: String::new(),
        };
        assert!(!close(Code::Replaced).may_reconnect());
        assert!(!close(Code::Normal).may_reconnect());
        assert!(!close(Code::Unauthorized).may_reconnect());
        assert!(close(Code::Shutdown).may_reconnect());
        assert!(close(Code::SlowConsumer).may_reconnect());
        assert!(close(Code::IdleTimeout).may_reconnect());
        assert!(End::Eof.may_reconnect());
        assert!(End::Keepalive.may_reconnect());
        assert_eq!(close(Code::Replaced).info().initiator, Initiator::Server);
    }
}
