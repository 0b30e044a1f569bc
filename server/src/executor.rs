//! A shard's tasks, from start to stop: accepting, serving each connection (handshake, read
//! loop, linger), draining the inbox, heartbeats, the janitor, relay expiry, and the
//! shutdown sequence.
//!
//! Every task is spawned in the shard's task gate (`Local::tasks`), server-side handlers
//! in its handler gate (`Local::handlers`). Stopping is: stop accepting; close the handler
//! gate, waiting up to the drain deadline for handlers to answer; close every connection
//! with Shutdown; stop the service tasks; close the task gate, waiting (up to the close
//! linger) for connections to deliver their Close and end.

use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future::poll_fn;
use glommio::net::TcpListener;
use glommio::Task;
use peerd_codec::{self as codec, Code, Frame};

use crate::conn::{Conn, ConnState};
use crate::dispatch::{dispatch, rate_limited_kind, refuse};
use crate::error::Refused;
use crate::fair;
use crate::handshake::{auth_failed, read_hello, register, reject};
use crate::inbound::{poll_fill, poll_fill_at_most, try_fill, RxBuf, WsEnd};
use crate::lifecycle::settle;
use crate::local::Local;
use crate::metrics::Dropped;
use crate::msg::{ShardMsg, Transport};
use crate::options::Hooks;
use crate::outbound::Outbound;
use crate::rate::Admit;
use crate::route::{answer, handle, Control};
use crate::shard::Shard;
use crate::shared::Shared;
use crate::stream::{self, Stream};
use crate::tls::TlsSession;
use crate::upgrade::{read_upgrade, unavailable_response};

thread_local! {
    /// The `Shared` of the server whose shard runs on this thread (its address), so that
    /// `PeerServer::close` can tell it is being called from one of its own shards.
    static CURRENT_SERVER: Cell<usize> = const { Cell::new(0) };
}

/// Whether the calling thread is one of the shards of the server owning `shared`.
pub(crate) fn on_own_shard(shared: &Arc<Shared>) -> bool {
    CURRENT_SERVER.with(|c| c.get() == Arc::as_ptr(shared) as usize)
}

/// Most inbox messages handled in one batch before the shard's sockets get a turn.
const INBOX_BATCH: usize = 256;

/// The body of a shard's executor thread. `listeners`: this shard's own socket for each
/// TCP-based endpoint.
pub(crate) async fn run(
    index: usize,
    shared: Arc<Shared>,
    hooks: Arc<Hooks>,
    listeners: Vec<(OwnedFd, Transport)>,
    rx: flume::Receiver<ShardMsg>,
) {
    CURRENT_SERVER.with(|c| c.set(Arc::as_ptr(&shared) as usize));
    let shard = Rc::new(Shard::new(Local::new(index, shared), hooks));
    let tasks = &shard.local.tasks;
    // Each listener's fd, kept to shut it down at stop (glommio's listener does not
    // expose it); valid for as long as we hold the listener.
    let listeners: Vec<(Rc<TcpListener>, i32, Transport)> = listeners
        .into_iter()
        .map(|(fd, transport)| {
            let raw = fd.into_raw_fd();
            // SAFETY: the fd is a listening TCP socket we created and hand over exclusively.
            (
                Rc::new(unsafe { TcpListener::from_raw_fd(raw) }),
                raw,
                transport,
            )
        })
        .collect();
    let mut services: Vec<Task<()>> = Vec::new();
    let mut spawn_service = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        if let Ok(t) = tasks.spawn(f) {
            services.push(t);
        }
    };
    for (l, fd, transport) in &listeners {
        let accept = accept_loop(shard.clone(), l.clone(), transport.clone());
        if let Ok(t) = tasks.spawn(Box::pin(accept)) {
            shard.accepts.borrow_mut().push((t, *fd));
        }
    }
    // Not a service: connections still on the ring when the services stop need it to end
    // their receives. Stopped after the connections' tasks (see `stop`).
    let reaper = shard
        .receiver
        .clone()
        .map(|r| glommio::spawn_local(r.run(shard.local.clone())));
    spawn_service(Box::pin(heartbeat(shard.clone())));
    spawn_service(Box::pin(janitor(shard.clone())));
    let local = shard.local.clone();
    spawn_service(Box::pin(async move { local.fair.run().await }));
    let local = shard.local.clone();
    spawn_service(Box::pin(async move { local.rx_pool.unmap_retired().await }));
    spawn_service(Box::pin(expire_relays(shard.clone())));
    let drain = inbox(&shard, &rx).await;
    tracing::debug!(shard = index, "shard stopping");
    stop_accepting(&shard);
    // A drain can last seconds: scrapes keep being answered meanwhile, so it can be
    // watched. Nothing else in the inbox is carried out after Shutdown (as before: it
    // would be dropped with the inbox at the end).
    futures_lite::future::or(
        stop(&shard, drain, services, reaper),
        scrapes_while_stopping(&shard, &rx),
    )
    .await;
}

/// After Shutdown: answer `ShardMsg::Metrics`, drop everything else. Never ends by itself
/// (the stop sequence it runs beside does).
async fn scrapes_while_stopping(shard: &Rc<Shard>, rx: &flume::Receiver<ShardMsg>) {
    while let Ok(msg) = rx.recv_async().await {
        if let ShardMsg::Metrics(_) = msg {
            let _ = handle(shard, msg);
        }
    }
    std::future::pending::<()>().await
}

/// Drain the inbox until Shutdown; returns the handlers' drain deadline.
async fn inbox(shard: &Rc<Shard>, rx: &flume::Receiver<ShardMsg>) -> Duration {
    loop {
        let Ok(first) = rx.recv_async().await else {
            return Duration::ZERO;
        };
        let mut next = Some(first);
        let mut n = 0;
        // Take what else is waiting in one go, bounded: in messages, and in sends as a
        // connection's frames are (`fair`): a publish from another shard to this shard's
        // members of a large topic is one message and hundreds of sends.
        let mut share = fair::SendShare::default();
        while let Some(msg) = next.take() {
            let before = shard.local.writes.pending();
            match handle(shard, msg) {
                None => {}
                Some(Control::Adopt(fd, transport)) => adopt(shard, fd, &transport),
                Some(Control::StopAccepting) => stop_accepting(shard),
                Some(Control::Drain { window, grace }) => {
                    let drain = Box::pin(drain_peers(shard.clone(), window, grace));
                    if !shard.local.spawn(drain) {
                        tracing::debug!(shard = shard.index(), "drain asked while stopping");
                    }
                }
                Some(Control::Shutdown(drain)) => {
                    settle(shard);
                    return drain;
                }
            }
            n += 1;
            let pending = shard.local.writes.pending();
            share.dispatched(before, pending);
            if n < INBOX_BATCH && !share.spent(pending) {
                next = rx.try_recv().ok();
            }
        }
        settle(shard);
        // More waiting: this shard's own sockets get their turn first. A message already
        // queued makes `recv_async` ready at once, so a flood of cross-shard traffic could
        // otherwise keep the shard from polling them for as long as it lasted.
        if !rx.is_empty() {
            shard.local.fair.next_pass().await;
        }
    }
}

/// Stop accepting: cancel the accept loops, and shut the listening sockets down so that the
/// port is free at once (an io_uring accept in flight keeps a socket listening even after
/// its listener is dropped; shutting it down fails that accept). Not when the sockets were
/// handed to a successor: a shutdown acts on the socket, which the successor shares. The
/// listeners themselves stay alive in `run` until the shard ends, so an fd here cannot have
/// been reused.
fn stop_accepting(shard: &Rc<Shard>) {
    let shared = shard.shared().listeners_shared();
    for (task, fd) in shard.accepts.borrow_mut().drain(..) {
        drop(task);
        if !shared {
            stream::shutdown(fd);
        }
    }
}

/// A connection accepted elsewhere (the Unix acceptor thread, a predecessor process).
fn adopt(shard: &Rc<Shard>, fd: OwnedFd, transport: &Transport) {
    let stream = if stream::is_unix(&fd) {
        stream::unix_from_fd(fd)
    } else {
        // SAFETY: a connected TCP socket whose ownership we take.
        let s = unsafe { glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
        let _ = s.set_nodelay(true);
        Stream::Tcp(s)
    };
    spawn_conn(shard, stream, transport);
}

/// An accepted stream's socket, to hand to another process: glommio's stream owns its fd
/// and closes it when dropped, so the fd is duplicated first.
fn into_owned_fd(s: glommio::net::TcpStream) -> OwnedFd {
    use std::os::fd::AsRawFd;
    // SAFETY: the stream's fd is valid while we hold the stream.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.as_raw_fd()) };
    let owned = fd.try_clone_to_owned();
    drop(s);
    owned.expect("dup of an accepted socket")
}

/// How often a drain looks at its peers' deadlines, and for stragglers.
const DRAIN_TICK: Duration = Duration::from_millis(10);

/// Drain this shard's peers (docs/PROTOCOL.md §6.10): notify them one by one, evenly spread
/// over `window` so that a fleet of clients does not reconnect at once, and give each
/// `grace` from its notice to finish; one that has not by then (a v1 client, which ignores
/// the notice, or calls that do not come back) is closed with `shutdown`. Peers that arrive
/// during the drain (accepted before accepting stopped) are notified when first seen.
/// Ends when the shard has no peer left.
async fn drain_peers(shard: Rc<Shard>, window: Duration, grace: Duration) {
    let start = Instant::now();
    let mut peers = shard.all_conns();
    peers.sort_by_key(|c| c.session);
    let n = peers.len().max(1) as u32;
    let mut deadlines: std::collections::HashMap<u64, Instant> = Default::default();
    for (i, c) in peers.iter().enumerate() {
        let at = start + window * i as u32 / n;
        glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
        if c.is_active() {
            c.notify_drain();
            deadlines.insert(c.session, Instant::now() + grace);
            settle(&shard);
        }
    }
    loop {
        let now = Instant::now();
        let conns = shard.all_conns();
        if conns.is_empty() {
            return;
        }
        for c in conns {
            let deadline = *deadlines.entry(c.session).or_insert_with(|| {
                c.notify_drain();
                now + grace
            });
            if now >= deadline && c.is_active() {
                c.close(
                    Code::Shutdown,
                    "server draining: the drain grace ran out before this session finished",
                );
            }
        }
        settle(&shard);
        glommio::timer::sleep(DRAIN_TICK).await;
    }
}

/// Stop: see the module doc.
async fn stop(
    shard: &Rc<Shard>,
    drain: Duration,
    services: Vec<Task<()>>,
    reaper: Option<Task<()>>,
) {
    let local = &shard.local;
    local.stopping.set(true);
    let _ = glommio::timer::timeout(drain, async {
        let _ = local.handlers.close().await;
        Ok(())
    })
    .await;
    for c in shard.all_conns() {
        c.close(Code::Shutdown, "server shutting down");
    }
    settle(shard);
    for t in services {
        t.cancel().await;
    }
    // No pass opens any more: lingering connections read on without waiting for one.
    local.fair.lift();
    // Connections end when the peer has read our Close (or at the close linger); a
    // connection still in its handshake ends at the handshake deadline at the latest, but
    // the shard does not wait past the linger for it.
    let linger = local.shared.config.close_linger;
    let _ = glommio::timer::timeout(linger + Duration::from_millis(100), async {
        let _ = local.tasks.close().await;
        Ok(())
    })
    .await;
    if let Some(r) = reaper {
        r.cancel().await;
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: Rc<TcpListener>, transport: Transport) {
    // A descriptor held in reserve: when the process runs out (EMFILE), it is given up for
    // one accept, so that the waiting connection is told Reject{overloaded} and closed
    // instead of left silent in the backlog, then taken again.
    let mut spare = stream::open_spare();
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok(s) => {
                if let Some(forward) = shard.shared().forward.get() {
                    // Handed over: the successor serves it.
                    forward(into_owned_fd(s));
                    continue;
                }
                let _ = s.set_nodelay(true);
                spawn_conn(&shard, Stream::Tcp(s), &transport);
            }
            Err(e) => {
                if !shard.local.tasks.is_open() {
                    return;
                }
                let e = std::io::Error::from(e);
                shard.shared().accept_failed();
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    // At most once a second: a flood must not turn into a flood of logs.
                    tracing::warn!(shard = shard.index(), error = %e, "accept failed");
                    last_warning = Some(std::time::Instant::now());
                }
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if spare.is_none() {
                    spare = stream::open_spare();
                }
                if out_of_fds && spare.take().is_some() {
                    if let Ok(s) = listener.accept().await {
                        shard.shared().count_dropped();
                        let s = Stream::Tcp(s);
                        let kind = transport.kind(&s);
                        shard.local.metrics.accepted(kind);
                        shard.local.metrics.dropped(Dropped::OutOfFds);
                        // Refused in plain peerd framing whatever the endpoint: a TLS or
                        // WebSocket client sees a failed handshake, which is the point.
                        let writes = shard.local.writes.clone();
                        let out = Outbound::new(s, None, 1024, writes, kind);
                        refuse_overloaded(
                            &shard,
                            &out,
                            &transport,
                            "server out of file descriptors",
                        );
                    }
                    spare = stream::open_spare();
                } else {
                    // Back off instead of spinning on an accept that keeps failing.
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Serve a new socket: admit it (or refuse it as Overloaded) and start its task.
fn spawn_conn(shard: &Rc<Shard>, stream: Stream, transport: &Transport) {
    let local = &shard.local;
    let kind = transport.kind(&stream);
    local.metrics.accepted(kind);
    let tls = match (&local.shared.config.tls, transport.tls) {
        (Some(config), true) => match TlsSession::new(config) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(shard = shard.index(), error = %e, "TLS session not created");
                local.metrics.rejected("tls_session");
                return;
            }
        },
        _ => None,
    };
    let out = Outbound::new(
        stream,
        tls,
        local.limits().outbound_queue_bytes,
        local.writes.clone(),
        kind,
    );
    if !local.shared.try_admit() {
        local.metrics.dropped(Dropped::MaxConnections);
        refuse_overloaded(shard, &out, transport, "server at max connections");
        return;
    }
    local.metrics.opened(kind);
    let s = shard.clone();
    let ws_path = transport.ws_path.clone();
    // Boxed: glommio's task gate wraps a spawned future in an async block that stores it
    // twice (as the block's captured value and as the value it awaits), so an unboxed
    // `serve` would be paid for twice by every connection for its whole life; boxed, the
    // doubled part is one pointer.
    if !local.spawn(Box::pin(serve(s, out, ws_path))) {
        // Stopping: the socket is dropped unanswered, like one still in the backlog.
        local.metrics.dropped(Dropped::Shutdown);
        local.connection_ended(kind);
    }
}

/// Refuse a connection the server cannot take, in the terms its endpoint speaks: a peerd
/// Reject{overloaded}, an HTTP 503 to a WebSocket client, and to a TLS client (whose
/// handshake has not even started) just the end of the connection.
fn refuse_overloaded(shard: &Rc<Shard>, out: &Rc<Outbound>, transport: &Transport, reason: &str) {
    if transport.tls {
        tracing::warn!(shard = shard.index(), reason, "TLS connection refused");
        out.push_last(None, false, None);
    } else if transport.ws_path.is_some() {
        tracing::warn!(
            shard = shard.index(),
            reason,
            "WebSocket connection refused"
        );
        let _ = out.push_bytes(unavailable_response(reason));
        out.push_last(None, false, None);
    } else {
        reject(shard, out, Code::Overloaded, reason);
    }
}

/// What the handshake phase ended with.
enum Opened {
    /// A peer, welcomed.
    Peer(crate::handshake::Accepted),
    /// An upgraded WebSocket in echo mode (conformance testing).
    Echo,
    /// Refused, timed out or gone: already answered.
    Failed,
}

/// Upgrade (WebSocket endpoints) and Hello, under the handshake deadline.
async fn open(
    shard: &Rc<Shard>,
    out: &Rc<Outbound>,
    rx: &mut RxBuf,
    ws_path: Option<Arc<str>>,
) -> Opened {
    if let Some(path) = &ws_path {
        if !read_upgrade(shard, out, rx, path).await {
            return Opened::Failed;
        }
        if shard.shared().config.websocket.echo {
            return Opened::Echo;
        }
    }
    match read_hello(shard, out, rx).await {
        Some(a) => Opened::Peer(a),
        None => Opened::Failed,
    }
}

/// One connection from handshake to close.
///
/// This future is the connection's task for as long as the connection lives, and a future
/// is as large as its largest state: every idle peer pays for it. So the states that are
/// brief and large (the handshake with its deadline timer and upgrade parsing, echo mode,
/// the close linger) run in their own boxed futures, allocated while they run and freed
/// after, and what stays for the connection's life is `read_loop`'s small state.
async fn serve(shard: Rc<Shard>, out: Rc<Outbound>, ws_path: Option<Arc<str>>) {
    let Some((accepted, rx)) = Box::pin(handshake(&shard, &out, ws_path)).await else {
        return;
    };
    let conn = register(&shard, out, accepted);
    // The bytes after Hello (a client may pipeline its first requests) are dispatched
    // here, after on_connection ran, so handlers registered there see them.
    *conn.rx.borrow_mut() = rx;
    // On the ring (its receives, or parked: `receiver`), its glommio stream dropped.
    if let Some(r) = &shard.receiver {
        r.register(&conn);
    }
    read_loop(&shard, &conn).await;
    if let Some(r) = &shard.receiver {
        // Off the ring before the linger reads through glommio (nothing to do if it is not
        // on it).
        r.stop(&conn).await;
    }
    // Teardown freed the buffer; the reader's last read may have taken one since.
    conn.rx.borrow_mut().clear(&shard.local.rx_pool);
    // Tearing down may have queued frames to other peers (presence leaves, PeerGone for
    // relayed calls): send them now, not at this shard's next unrelated flush.
    settle(&shard);
    Box::pin(linger(&shard, &conn.out)).await;
    let code = conn.state().code().unwrap_or(Code::PeerGone.as_u16());
    conn.transition(ConnState::Closed { code });
    conn.out.abandon();
}

/// The handshake phase of [`serve`]: upgrade and Hello under the deadline. Returns the
/// welcomed peer and the bytes it sent after its Hello; `None` when the connection ended
/// here (refused, timed out, gone, or an echo-mode connection that finished), already
/// answered and accounted for.
async fn handshake(
    shard: &Rc<Shard>,
    out: &Rc<Outbound>,
    ws_path: Option<Arc<str>>,
) -> Option<(crate::handshake::Accepted, RxBuf)> {
    let mut rx = RxBuf::default();
    let timeout = shard.shared().config.handshake_timeout;
    let ws_endpoint = ws_path.is_some();
    let opened = glommio::timer::timeout(timeout, async {
        Ok(open(shard, out, &mut rx, ws_path).await)
    })
    .await;
    match opened {
        Ok(Opened::Peer(a)) => Some((a, rx)),
        Ok(opened @ (Opened::Echo | Opened::Failed)) => {
            if let Opened::Echo = opened {
                echo_loop(shard, out, &mut rx).await;
            }
            rx.clear(&shard.local.rx_pool);
            linger(shard, out).await;
            out.abandon();
            shard.local.connection_ended(out.transport());
            None
        }
        Err(_) if ws_endpoint && !out.is_websocket() => {
            // The upgrade request did not complete: the connection still speaks HTTP.
            rx.clear(&shard.local.rx_pool);
            tracing::debug!(shard = shard.index(), "WebSocket upgrade timed out");
            shard.local.metrics.rejected(Code::HandshakeTimeout.name());
            let _ = out.push_bytes(crate::upgrade::timeout_response());
            out.push_last(None, false, None);
            shard.local.connection_ended(out.transport());
            None
        }
        Err(_) => {
            rx.clear(&shard.local.rx_pool);
            // docs/PROTOCOL.md §6.1: Close{handshake_timeout}, not a Reject (the peer may
            // not even have started a Hello).
            let reason = "no Hello before the handshake deadline";
            let close = shard.local.encode(&codec::Close {
                code: Code::HandshakeTimeout.as_u16(),
                reason: reason.into(),
            });
            tracing::debug!(shard = shard.index(), "handshake timed out");
            let metrics = &shard.local.metrics;
            metrics.rejected(Code::HandshakeTimeout.name());
            if let Ok(f) = &close {
                metrics.frame_out(f.kind(), f.peerd_len());
            }
            let status = peerd_ws::close::status_for(Code::HandshakeTimeout.as_u16());
            out.push_last(close.ok().as_ref(), false, Some((status, reason)));
            shard.local.connection_ended(out.transport());
            None
        }
    }
}

/// Echo mode: every WebSocket message goes back as it came (`inbound` does the echoing),
/// until the peer closes or breaks the protocol.
async fn echo_loop(shard: &Rc<Shard>, out: &Rc<Outbound>, rx: &mut RxBuf) {
    loop {
        shard.local.writes.flush();
        if let Some(end) = rx.take_ws_end() {
            out.push_last(None, false, Some(end.answer()));
            return;
        }
        match poll_fn(|cx| poll_fill(out, rx, &shard.local.rx_pool, cx)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Dispatch the whole frames in `rx`; on a bad frame, close with its code. Returns `true`
/// when it stopped with whole frames left because this connection's frames spent the pass's
/// budget of sends (`fair::SendShare`): the caller lets the shard flush and poll for the
/// others' input, then calls it again.
fn process(shard: &Rc<Shard>, conn: &Rc<Conn>) -> bool {
    let rx = &mut *conn.rx.borrow_mut();
    let max = shard.local.limits().max_frame_len;
    let mut completed = false;
    let mut share = fair::SendShare::default();
    let mut held = false;
    while conn.is_active() {
        let before = shard.local.writes.pending();
        let result = match rx.next_frame(max) {
            Ok(Some((raw, n))) => {
                // The first frame always goes, whatever it fans out to (one frame is not
                // split); after it, a connection whose frames make many sends (a publisher
                // to many topics) stops at the pass's budget of them, so that the other
                // peers' requests, and their answers, do not wait behind thousands of sends.
                if share.spent(before) {
                    held = true;
                    break;
                }
                completed = true;
                let kind = raw.header.kind as u8;
                let r = raw
                    .decode()
                    .map_err(Into::into)
                    .and_then(|frame| admit_and_dispatch(shard, conn, frame, n));
                if let Ok(Handled::Held) = r {
                    // Over the rate limit: the frame waits in the buffer, the rest of the
                    // peer's input in the kernel, until the reader's throttle lets it on.
                    break;
                }
                shard.local.metrics.frame_in(kind, n);
                rx.consume(n);
                r.map(|_| ())
            }
            Ok(None) => break,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::debug!(peer = %conn.peer_id, session = conn.session, error = %e, "closing on a bad frame");
            conn.close(e.code, &e.reason);
        }
        share.dispatched(before, shard.local.writes.pending());
    }
    if held {
        shard.local.metrics.frames_deferred();
        conn.set_rx_held(rx.held());
        // The frames left are whole, held by us, not late: no deadline runs while they wait
        // (one set for a frame that has just completed would otherwise close a peer that
        // sent it in time). The next frame to start gets its own at the next call.
        conn.frame_deadline.set(None);
        return true;
    }
    // The frames deframed before the WebSocket input ended were dispatched above.
    if let Some(end) = rx.take_ws_end() {
        match end {
            WsEnd::PeerClosed(status) => {
                let code = status.map_or(Code::Normal.as_u16(), |s| {
                    peerd_ws::close::code_for(s).unwrap_or(s)
                });
                conn.peer_closed(code, Some(end.answer().0));
            }
            WsEnd::Refused { status, reason } => {
                let code = if status == 1009 {
                    Code::TooLarge
                } else {
                    Code::BadFrame
                };
                conn.close_websocket(code, status, reason);
            }
        }
    }
    rx.release_if_empty(&shard.local.rx_pool);
    conn.set_rx_held(rx.held());
    // A frame that has started must finish by its deadline, set when it started: bytes
    // trickling in do not move it (a peer dripping one byte a second into a large frame
    // would otherwise hold its buffer for ever).
    match rx.incomplete() {
        None => conn.frame_deadline.set(None),
        Some(len) if completed || conn.frame_deadline.get().is_none() => {
            let tick = shard.shared().config.heartbeat / TICKS_PER_BEAT;
            let now = shard.local.tick.get();
            // One tick more: `now` may be about to end (see `beat`).
            conn.frame_deadline
                .set(Some(now.wrapping_add(frame_ticks(len, tick) + 1)));
        }
        Some(_) => {}
    }
    false
}

/// What became of a whole frame.
enum Handled {
    /// Dispatched (or refused): consume it.
    Done,
    /// Over the rate limit, not the first of its run: leave it where it is, to be tried
    /// again when the buckets refill.
    Held,
}

/// Dispatch `frame` (`len` bytes on the wire) if the peer's rate limit lets it through
/// (docs/PROTOCOL.md §6.9). Over the limit, the first frame of a run is refused with
/// `rate_limited` and the frames after it are held back (the peer is shaped to its rate, at
/// no cost per frame beyond the one refusal); a peer over its limit for too long is closed.
fn admit_and_dispatch(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    frame: Frame<'_>,
    len: usize,
) -> Result<Handled, Refused> {
    let Some(throttle) = &conn.throttle else {
        return dispatch(shard, conn, frame).map(|()| Handled::Done);
    };
    let now = Instant::now();
    if !rate_limited_kind(&frame) {
        throttle.charge(now, len);
        return dispatch(shard, conn, frame).map(|()| Handled::Done);
    }
    match throttle.admit(now, len) {
        Admit::Yes => dispatch(shard, conn, frame).map(|()| Handled::Done),
        Admit::No { first: true } => {
            shard.local.metrics.rate_limit_hit();
            refuse(
                conn,
                &frame,
                Code::RateLimited,
                "over the rate limit: slow down",
            );
            Ok(Handled::Done)
        }
        Admit::No { first: false } => Ok(Handled::Held),
        Admit::Abusive => Err(Refused::close(
            Code::RateLimited,
            "over the rate limit for too long",
        )),
    }
}

/// Bytes a started frame must at least make progress by, per second, on top of one
/// heartbeat interval.
const MIN_FRAME_RATE: u64 = 64 * 1024;

/// Heartbeat ticks (each `tick` long) a frame of `len` bytes gets to arrive: one heartbeat
/// interval, plus one second per 64 KiB (a 1 MiB frame: the interval + 16 s).
fn frame_ticks(len: usize, tick: Duration) -> u32 {
    let secs = len as f64 / MIN_FRAME_RATE as f64;
    let extra = (secs / tick.as_secs_f64().max(1e-3)).ceil();
    TICKS_PER_BEAT + extra.min(u32::MAX as f64 / 4.0) as u32
}

/// Longest single wait of a rate-limited reader before it looks at its connection again.
const THROTTLE_STEP: Duration = Duration::from_millis(100);

/// Reads in a row that found data waiting before a reader lets the shard's other tasks run.
const READS_BEFORE_YIELD: u32 = 4;

async fn read_loop(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    let mut ready_in_a_row = 0;
    // The last read brought `fair::BULK_READ` or more: the socket probably holds more.
    let mut last_read_bulk = false;
    loop {
        let held = process(shard, conn);
        if shard.local.writes.batching() && !shard.local.grown_past_budget() {
            // The janitor settles after the other connections the reactor found readable
            // have been read: their answers leave in one batch of sends.
            shard.local.janitor.notify();
        } else {
            settle(shard);
        }
        if !conn.is_active() {
            return;
        }
        // A peer over its rate limit is not read until its buckets refill: what it keeps
        // sending waits in the kernel (TCP flow control), not in this shard. In steps of
        // at most 100 ms, so a connection closed meanwhile is noticed soon. Boxed: the
        // timer would otherwise make every connection's task larger.
        if let Some(wait) = conn.throttle.as_ref().map(|t| t.wait(Instant::now())) {
            if !wait.is_zero() {
                Box::pin(glommio::timer::sleep(wait.min(THROTTLE_STEP))).await;
                continue;
            }
        }
        // A peer that keeps its socket full, or is sending a frame larger than a pooled
        // buffer, reads again in this pass of the shard's loop only while the pass's budget
        // for bulk input lasts; past it, after the shard has polled for the others' input
        // (`fair`). A close wakes it at once; at shutdown, `Fair::lift` does (the service
        // that opens passes is gone before the connections' tasks end). Nothing else gives
        // it a turn: not its socket turning readable, nor, on the ring, the reaper.
        let bulk = last_read_bulk || conn.rx.borrow().in_large_frame();
        if held || (bulk && shard.local.fair.spent()) {
            ready_in_a_row = 0;
            if !held {
                shard.local.metrics.read_deferred();
            }
            let mut pass = std::pin::pin!(shard.local.fair.next_pass());
            poll_fn(|cx| {
                if !conn.is_active() {
                    return Poll::Ready(());
                }
                let r = std::future::Future::poll(pass.as_mut(), cx);
                if r.is_pending() {
                    conn.reader_waker.set(Some(cx.waker().clone()));
                }
                r
            })
            .await;
            conn.reader_waker.take();
            if !conn.is_active() {
                return;
            }
            if held {
                // Its buffered frames first: what it sent after them waits in the kernel.
                continue;
            }
        }
        // Below the budget, a peer that keeps the socket full would still keep this task
        // running: glommio does not preempt, and other peers, closed readers and timers
        // would wait behind it.
        if ready_in_a_row >= READS_BEFORE_YIELD {
            ready_in_a_row = 0;
            futures_lite::future::yield_now().await;
        }
        let mut most = 0;
        let mut waited = false;
        let r = poll_fn(|cx| {
            if waited && bulk && shard.local.fair.spent() {
                // Its socket turned readable in a pass whose budget is spent: this read
                // waits for its turn too. Read at once, a hundred bulk readers woken by
                // their sockets read in a pass that had budget for four.
                return Poll::Ready(None);
            }
            most = shard.local.fair.most_to_read(bulk);
            let r = match &shard.receiver {
                Some(ring) if conn.ring.key.get() != 0 => ring.poll_read(conn, most),
                _ => poll_fill_at_most(
                    &conn.out,
                    &mut conn.rx.borrow_mut(),
                    &shard.local.rx_pool,
                    most,
                    cx,
                ),
            };
            if r.is_pending() {
                waited = true;
                if !conn.is_active() {
                    // Closed from elsewhere while we were about to wait.
                    return Poll::Ready(Some(Ok(0)));
                }
                conn.reader_waker.set(Some(cx.waker().clone()));
            }
            r.map(Some)
        })
        .await;
        conn.reader_waker.take();
        ready_in_a_row = if waited { 0 } else { ready_in_a_row + 1 };
        if !conn.is_active() {
            return;
        }
        let Some(r) = r else {
            continue;
        };
        match r {
            Ok(n) if n > 0 => {
                conn.last_rx_tick.set(shard.local.tick.get());
                last_read_bulk = fair::was_bulk(n, most);
                if bulk || last_read_bulk {
                    shard.local.fair.charge(n);
                }
            }
            Ok(_) | Err(_) => {
                conn.peer_closed(Code::PeerGone.as_u16(), None);
                return;
            }
        }
    }
}

/// After Close: keep reading (and discarding) until the peer closes or the linger passes,
/// so the kernel does not answer unread input with a reset that destroys our Close frame.
///
/// What a closed peer still sends is bulk input, every read of it, and takes its turn in
/// the pass's budget (`fair`). A memory-budget cut closes a hundred or more peers at once,
/// each with its socket full of a partial frame it goes on sending until it sees our end;
/// read in one go, their discards made a second stall of several milliseconds after every
/// cut under issue 9's partial frames (results/large-frame-mapping/), and their first
/// reads alone, ungated, 5 MB in the pass of the cut (results/unmap-in-turn/).
async fn linger(shard: &Rc<Shard>, out: &Rc<Outbound>) {
    let local = &shard.local;
    let pool = &local.rx_pool;
    let _ = glommio::timer::timeout(shard.shared().config.close_linger, async {
        let mut rx = RxBuf::default();
        // The first read is tried directly: after the peer's own end (most closes) it finds
        // that end again, and a parked connection's bare socket is not made a glommio
        // stream again only to read it.
        let mut first = true;
        loop {
            if local.fair.spent() {
                local.metrics.read_deferred();
                local.fair.next_pass().await;
            }
            // `None` from the direct read: nothing to read yet.
            let direct = if std::mem::take(&mut first) {
                try_fill(out, &mut rx, pool, usize::MAX)
                    .map(|r| r.map(|(n, _)| n))
                    .transpose()
            } else {
                None
            };
            let r = match direct {
                Some(r) => Some(r),
                None => {
                    let mut waited = false;
                    poll_fn(|cx| {
                        if waited && local.fair.spent() {
                            // Readable in a pass whose budget is spent: wait for a turn.
                            return Poll::Ready(None);
                        }
                        let r = poll_fill(out, &mut rx, pool, cx);
                        waited |= r.is_pending();
                        r.map(Some)
                    })
                    .await
                }
            };
            rx.clear(pool);
            let Some(r) = r else {
                continue;
            };
            match r {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => {
                    local.fair.charge(n);
                }
            }
        }
    })
    .await;
}

/// Ticks per heartbeat interval: the idle close comes at most a quarter of an interval
/// after the third silent interval (docs/PROTOCOL.md §6.6), not up to a whole one late.
const TICKS_PER_BEAT: u32 = 4;

/// Whether tick `now` is at or past `deadline` (ticks wrap around).
fn reached(now: u32, deadline: u32) -> bool {
    now.wrapping_sub(deadline) < u32::MAX / 2
}

#[derive(Debug, PartialEq, Eq)]
enum Beat {
    Quiet,
    Ping,
    Close,
}

/// What a peer silent for `silent` ticks gets: a Ping after each whole silent interval,
/// Close{idle_timeout} once three intervals have passed. `silent` counts tick boundaries
/// crossed since the last bytes, which may have arrived just before a boundary: so it
/// takes one tick more than three intervals' worth to be sure three have passed.
fn beat(silent: u32) -> Beat {
    let idle = 3 * TICKS_PER_BEAT;
    if silent > idle {
        Beat::Close
    } else if silent > 0 && silent < idle && silent % TICKS_PER_BEAT == 0 {
        Beat::Ping
    } else {
        Beat::Quiet
    }
}

/// Ping peers silent for an interval (and every interval after); close those silent for
/// three intervals, and those whose credentials expired without a Refresh (an active peer
/// is closed by its next action already, `Conn::permits`; this catches the quiet ones, at
/// most a quarter interval late).
async fn heartbeat(shard: Rc<Shard>) {
    let interval = shard.shared().config.heartbeat;
    let ping = shard
        .local
        .encode(&codec::Ping { nonce: 0 })
        .expect("Ping always encodes");
    loop {
        glommio::timer::sleep(interval / TICKS_PER_BEAT).await;
        let tick = shard.local.tick.get().wrapping_add(1);
        shard.local.tick.set(tick);
        shard.local.return_memory_after_burst();
        let now = std::time::SystemTime::now();
        for c in shard.all_conns() {
            // Peers that connected together fall silent together: 5,000 Pings (or Closes)
            // in one flush kept every other peer's answer waiting 55 ms. A pass's budget of
            // sends at a time, then the others' input (`fair`).
            if shard.local.writes.pending() >= fair::PASS_SENDS {
                settle(&shard);
                shard.local.fair.next_pass().await;
            }
            if !c.is_active() {
                continue;
            }
            if c.auth_expired(now) {
                let reason = "token expired: no Refresh before its exp";
                auth_failed(&shard, Code::TokenExpired, reason);
                c.close(Code::TokenExpired, reason);
                continue;
            }
            if c.frame_deadline.get().is_some_and(|d| reached(tick, d)) {
                c.close(
                    Code::IdleTimeout,
                    "a started frame did not complete in time",
                );
                continue;
            }
            match beat(tick.wrapping_sub(c.last_rx_tick.get())) {
                Beat::Quiet => {}
                Beat::Ping => {
                    let _ = c.queue(&ping);
                }
                Beat::Close => c.close(
                    Code::IdleTimeout,
                    "no frame within three heartbeat intervals",
                ),
            }
        }
        settle(&shard);
    }
}

/// Settle connections closed outside any batch of work (by a user's `disconnect()` in a
/// task of its own, or a handler's answer overflowing a queue).
async fn janitor(shard: Rc<Shard>) {
    loop {
        shard.local.janitor.notified().await;
        settle(&shard);
    }
}

/// Expire relayed calls at their deadlines: sleep until the earliest (or until a call with
/// an earlier deadline arrives) and fail what is due with Timeout.
async fn expire_relays(shard: Rc<Shard>) {
    // Nothing pending: only a new call wakes the task before this.
    const IDLE: Duration = Duration::from_secs(3600);
    loop {
        let next = [
            shard.relays.borrow().next_deadline(),
            shard.remote_calls.borrow().next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = next.map_or(IDLE, |d| d.saturating_duration_since(Instant::now()));
        futures_lite::future::or(shard.relay_timer.notified(), glommio::timer::sleep(wait)).await;
        let now = Instant::now();
        let expired = shard.relays.borrow_mut().expired(now);
        let remote = shard.remote_calls.borrow_mut().expired(now);
        if expired.is_empty() && remote.is_empty() {
            continue;
        }
        for ((session, id), _node) in remote {
            // The callee's node did not answer by the deadline (plus a margin for it to).
            crate::route::fail_remote_call(
                &shard,
                session,
                id,
                Code::Timeout,
                "callee did not answer in time",
            );
        }
        for (_, to) in expired {
            answer(
                &shard,
                to,
                Err((Code::Timeout.as_u16(), "callee did not answer in time")),
            );
        }
        settle(&shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_after_each_silent_interval_and_closes_after_three() {
        let actions: Vec<Beat> = (0..=3 * TICKS_PER_BEAT).map(beat).collect();
        let pings: Vec<u32> = (0..=3 * TICKS_PER_BEAT + 1)
            .filter(|t| beat(*t) == Beat::Ping)
            .collect();
        assert_eq!(pings, vec![TICKS_PER_BEAT, 2 * TICKS_PER_BEAT]);
        assert_eq!(actions.iter().filter(|a| **a == Beat::Close).count(), 0);
        // Three intervals are sure to have passed only after one more tick boundary.
        assert_eq!(beat(3 * TICKS_PER_BEAT), Beat::Quiet);
        assert_eq!(beat(3 * TICKS_PER_BEAT + 1), Beat::Close);
    }

    #[test]
    fn a_started_frame_gets_an_interval_plus_a_second_per_64_kib() {
        let tick = Duration::from_millis(250); // a 1 s heartbeat
        assert_eq!(frame_ticks(100, tick), TICKS_PER_BEAT + 1);
        assert_eq!(frame_ticks(1 << 20, tick), TICKS_PER_BEAT + 64);
        assert!(reached(10, 10) && reached(11, 10) && !reached(9, 10));
        assert!(reached(2, u32::MAX - 1), "across the wrap");
    }
}
