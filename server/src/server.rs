//! `listen()` and [`PeerServer`]: starting shards, the state they share, shutting down.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use peerd_codec::{self as codec, Code, EncodeError};

use crate::directory::Directory;
use crate::error::{ListenError, SendError};
use crate::options::{Endpoint, ListenOptions};
use crate::shard::{self, ListenerSource, ShardMsg};

/// State shared by all shards. Only what must cross threads lives here, each piece `Arc` or
/// atomic for that reason: the inbox senders (any shard may message any other), the peer
/// directory (any shard may route to any peer), and counters read by `PeerServer`.
pub(crate) struct Shared {
    pub opts: ListenOptions,
    pub senders: Vec<flume::Sender<ShardMsg>>,
    pub directory: Directory,
    pub topics: crate::topics::TopicIndex,
    conn_count: AtomicUsize,
    dropped: AtomicU64,
    pub accept_errors: AtomicU64,
    next_peer: AtomicU64,
    next_session: AtomicU64,
    pub stopping: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn assign_peer_id(&self) -> String {
        self.next_peer.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Count a new connection against `max_connections`.
    pub fn try_admit(&self) -> bool {
        let max = self.opts.limits.max_connections;
        let prev = self.conn_count.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.conn_count.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn connection_ended(&self) {
        self.conn_count.fetch_sub(1, Ordering::AcqRel);
    }

    /// One message per shard, not one per peer; the frame is shared by reference count.
    pub fn broadcast_frame(&self, frame: Bytes, exclude_session: u64) {
        for tx in &self.senders {
            let _ = tx.send(ShardMsg::Broadcast {
                frame: frame.clone(),
                exclude: exclude_session,
            });
        }
    }

    pub fn kick(&self, shard: usize, session: u64, code: Code, reason: &'static str) {
        let _ = self.senders[shard].send(ShardMsg::Kick {
            session,
            code,
            reason,
        });
    }
}

/// A connected peer as seen from any thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer id.
    pub peer_id: String,
    /// The shard that owns its connection.
    pub shard: usize,
    /// Its session id (as in Welcome).
    pub session_id: u64,
}

/// Server counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Open connections, handshaking ones included.
    pub connections: usize,
    /// Entries in the peer directory (handshaken peers).
    pub peers: usize,
    /// Topics with members or presence watchers.
    pub topics: usize,
    /// Connections refused at max_connections.
    pub dropped: u64,
    /// accept(2) failures (EMFILE and the like).
    pub accept_errors: u64,
}

/// A running server. Usable from any thread. Dropping it closes it.
pub struct PeerServer {
    shared: Arc<Shared>,
    threads: Mutex<Option<Vec<glommio::ExecutorJoinHandle<()>>>>,
    unix_acceptor: Mutex<Option<(std::os::fd::RawFd, std::thread::JoinHandle<()>)>>,
    local_addr: Option<SocketAddr>,
    endpoint: Endpoint,
}

impl std::fmt::Debug for PeerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServer")
            .field("endpoint", &self.endpoint_string())
            .field("shards", &self.shards())
            .finish()
    }
}

impl PeerServer {
    /// The bound TCP address (with the real port when 0 was asked for); `None` for Unix.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The bound endpoint as a string: `127.0.0.1:7400` or `unix:/path`.
    pub fn endpoint_string(&self) -> String {
        match (&self.endpoint, self.local_addr) {
            (Endpoint::Tcp(_), Some(a)) => a.to_string(),
            (e, _) => e.to_string(),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shared.senders.len()
    }

    /// Every handshaken peer across all shards.
    pub fn connections(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .shared
            .directory
            .snapshot()
            .into_iter()
            .map(|(id, shard, session)| PeerInfo {
                peer_id: id.to_string(),
                shard,
                session_id: session,
            })
            .collect();
        v.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        v
    }

    /// Open connections (handshaking ones included).
    pub fn connection_count(&self) -> usize {
        self.shared.conn_count.load(Ordering::Acquire)
    }

    /// Connections refused because the server was at `max_connections` (Node's `drop`).
    pub fn dropped_connections(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Send event `name` to every connected peer (as Broadcast with no origin). Encoded
    /// once; one message per shard.
    pub fn broadcast(&self, name: &str, payload: &[u8]) -> Result<(), EncodeError> {
        let frame = codec::encode_to_bytes(&codec::Broadcast {
            name: name.into(),
            peer: None,
            payload: payload.into(),
        })?;
        self.shared.broadcast_frame(frame, 0);
        Ok(())
    }

    /// Send event `name` to one peer. `Ok(false)` if no such peer is connected.
    pub fn emit_to(&self, peer_id: &str, name: &str, payload: &[u8]) -> Result<bool, SendError> {
        let Some((shard, session)) = self.shared.directory.lookup(peer_id) else {
            return Ok(false);
        };
        let frame = codec::encode_to_bytes(&codec::Event {
            name: name.into(),
            peer: None,
            payload: payload.into(),
        })?;
        let _ = self.shared.senders[shard].send(ShardMsg::Deliver { session, frame });
        Ok(true)
    }

    /// Publish `payload` on `topic` to every member, from the server (the TopicMessage's
    /// `from` is empty). Encoded once; one message per shard with members.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), EncodeError> {
        let frame = codec::encode_to_bytes(&codec::TopicMessage {
            topic: topic.into(),
            from: "".into(),
            direct: false,
            payload: payload.into(),
        })?;
        crate::topics::fan_out_from_any_thread(&self.shared, topic, frame);
        Ok(())
    }

    /// Send `payload` on `topic` to the one member `to` (a direct TopicMessage from the
    /// server). `Ok(false)` when `to` is not a member.
    pub fn send(&self, topic: &str, to: &str, payload: &[u8]) -> Result<bool, EncodeError> {
        let Some((shard, session)) = self.shared.topics.member(topic, to) else {
            return Ok(false);
        };
        let frame = codec::encode_to_bytes(&codec::TopicMessage {
            topic: topic.into(),
            from: "".into(),
            direct: true,
            payload: payload.into(),
        })?;
        let _ = self.shared.senders[shard].send(ShardMsg::Deliver { session, frame });
        Ok(true)
    }

    /// Members of `topic` across all shards (sorted).
    pub fn topic_members(&self, topic: &str) -> Vec<String> {
        self.shared.topics.members(topic)
    }

    /// Counters for monitoring and tests.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            connections: self.connection_count(),
            peers: self.shared.directory.len(),
            topics: self.shared.topics.len(),
            dropped: self.dropped_connections(),
            accept_errors: self.shared.accept_errors.load(Ordering::Relaxed),
        }
    }

    /// Stop accepting, close every peer with Shutdown, and return when every shard has
    /// stopped. Idempotent.
    pub fn close(&self) {
        self.close_graceful(Duration::ZERO)
    }

    /// Like [`close`](Self::close), but first give in-flight server-side handlers up to
    /// `drain` to finish and answer.
    pub fn close_graceful(&self, drain: Duration) {
        let Some(threads) = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        if let Some((fd, t)) = self
            .unix_acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.shared.stopping.store(true, Ordering::Release);
            // Wakes the blocked accept(2) with EINVAL.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            let _ = t.join();
        }
        for tx in &self.shared.senders {
            let _ = tx.send(ShardMsg::Shutdown { drain });
        }
        for t in threads {
            let _ = t.join();
        }
        if let Endpoint::Unix(p) = &self.endpoint {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Whether `close` has run.
    pub fn is_closed(&self) -> bool {
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Check what glommio needs before it fails in a less helpful way.
fn preflight() -> Result<(), ListenError> {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if s.trim() == "2" {
            return Err(ListenError::IoUringUnavailable {
                detail: "kernel.io_uring_disabled = 2".into(),
            });
        }
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
        && lim.rlim_cur < 512 * 1024
    {
        return Err(ListenError::MemlockTooLow {
            detail: format!(
                "RLIMIT_MEMLOCK is {} KiB, peerd needs at least 512 KiB per process",
                lim.rlim_cur / 1024
            ),
        });
    }
    Ok(())
}

fn bind_tcp(
    addr_s: &str,
    shards: usize,
    backlog: u32,
) -> Result<(SocketAddr, Vec<OwnedFd>), ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = addr_s
        .to_socket_addrs()
        .map_err(|e| ListenError::BadAddress {
            addr: addr_s.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ListenError::BadAddress {
            addr: addr_s.into(),
            reason: "resolves to no address".into(),
        })?;
    let bind_err = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            ListenError::AddrInUse {
                addr: addr_s.into(),
            }
        } else {
            ListenError::Bind {
                addr: addr_s.into(),
                source: e,
            }
        }
    };
    let domain = Domain::for_address(addr);
    // SO_REUSEPORT would let us join a port another process (same user) already listens
    // on, silently splitting its traffic. So first bind a plain socket: it fails with
    // EADDRINUSE if anyone listens there, and with port 0 it picks our port. Then the
    // shards' SO_REUSEPORT sockets bind that exact port. (The probe is closed just before
    // the shards bind; a competing bind in that microsecond window is the remaining race.)
    let probe = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(bind_err)?;
    probe.set_reuse_address(true).map_err(bind_err)?;
    probe.bind(&addr.into()).map_err(bind_err)?;
    let bound = probe
        .local_addr()
        .map_err(bind_err)?
        .as_socket()
        .expect("inet socket");
    drop(probe);
    let mut fds = Vec::with_capacity(shards);
    for _ in 0..shards {
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(bind_err)?;
        s.set_reuse_address(true).map_err(bind_err)?;
        s.set_reuse_port(true).map_err(bind_err)?;
        s.bind(&bound.into()).map_err(bind_err)?;
        s.listen(backlog.min(i32::MAX as u32) as i32)
            .map_err(bind_err)?;
        fds.push(OwnedFd::from(s));
    }
    Ok((bound, fds))
}

/// Start a server. Returns once every shard is accepting.
pub fn listen(opts: ListenOptions) -> Result<PeerServer, ListenError> {
    if opts.shards == 0 {
        return Err(ListenError::InvalidOptions(
            "shards must be at least 1".into(),
        ));
    }
    if opts.heartbeat.is_zero() || opts.handshake_timeout.is_zero() {
        return Err(ListenError::InvalidOptions(
            "heartbeat and handshake_timeout must be > 0".into(),
        ));
    }
    preflight()?;
    let n = opts.shards;
    let cores: Vec<usize> = if opts.cores.is_empty() {
        (0..n).collect()
    } else {
        opts.cores.clone()
    };
    let online = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let mut unix_listener = None;
    let (local_addr, mut sources): (Option<SocketAddr>, Vec<ListenerSource>) = match &opts.endpoint
    {
        Endpoint::Tcp(a) => {
            let (addr, fds) = bind_tcp(a, n, opts.backlog)?;
            (
                Some(addr),
                fds.into_iter().map(ListenerSource::Tcp).collect(),
            )
        }
        Endpoint::Unix(p) => {
            // A socket file whose listener is alive refuses to be replaced; a stale one
            // (connect fails) is removed.
            if p.exists() {
                if std::os::unix::net::UnixStream::connect(p).is_ok() {
                    return Err(ListenError::UnixPathInUse { path: p.clone() });
                }
                let _ = std::fs::remove_file(p);
            }
            let l = std::os::unix::net::UnixListener::bind(p).map_err(|e| ListenError::Bind {
                addr: format!("unix:{}", p.display()),
                source: e,
            })?;
            unix_listener = Some(l);
            (None, (0..n).map(|_| ListenerSource::None).collect())
        }
    };
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = flume::unbounded();
        senders.push(tx);
        receivers.push(rx);
    }
    let endpoint = opts.endpoint.clone();
    let spin = opts.spin_before_park;
    let pin = opts.pin;
    let shared = Arc::new(Shared {
        opts,
        senders,
        directory: Directory::new(),
        topics: crate::topics::TopicIndex::new(),
        conn_count: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        accept_errors: AtomicU64::new(0),
        next_peer: AtomicU64::new(1),
        next_session: AtomicU64::new(1),
        stopping: Default::default(),
    });
    let mut threads = Vec::with_capacity(n);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(usize, Result<(), String>)>();
    for (i, rx) in receivers.into_iter().enumerate().rev() {
        let source = sources.pop().expect("one source per shard");
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let placement = if pin {
            let core = cores[i % cores.len()];
            if core >= online {
                return Err(ListenError::InvalidOptions(format!(
                    "core {core} does not exist (this machine has {online})"
                )));
            }
            Placement::Fixed(core)
        } else {
            Placement::Unbound
        };
        let mut b = LocalExecutorBuilder::new(placement)
            .name(&format!("peerd-shard-{i}"))
            // peerd does no file IO through glommio's registered DMA buffers; keep the
            // locked-memory footprint to the rings.
            .io_memory(128 << 10);
        if !spin.is_zero() {
            b = b.spin_before_park(spin);
        }
        let handle = b
            .spawn(move || async move {
                let _ = ready.send((i, Ok(())));
                drop(ready);
                shard::run(i, shared, source, rx).await;
            })
            .map_err(|e| classify_glommio_error(i, e))?;
        threads.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..n {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(detail))) => failure = Some(ListenError::Shard { shard: i, detail }),
            Err(_) => {
                failure = Some(ListenError::Shard {
                    shard: 0,
                    detail: "shard thread exited during start-up".into(),
                });
                break;
            }
        }
    }
    let unix_acceptor = unix_listener.map(|l| spawn_unix_acceptor(l, shared.clone()));
    let server = PeerServer {
        shared,
        threads: Mutex::new(Some(threads)),
        unix_acceptor: Mutex::new(unix_acceptor),
        local_addr,
        endpoint,
    };
    if let Some(e) = failure {
        server.close();
        return Err(e);
    }
    Ok(server)
}

fn classify_glommio_error(shard: usize, e: glommio::GlommioError<()>) -> ListenError {
    let detail = e.to_string();
    if detail.contains("MemLock") || detail.contains("memlock") {
        ListenError::MemlockTooLow { detail }
    } else if detail.contains("io_uring")
        || detail.contains("Function not implemented")
        || detail.contains("Operation not permitted")
    {
        ListenError::IoUringUnavailable { detail }
    } else {
        ListenError::Shard { shard, detail }
    }
}

/// Unix sockets have no SO_REUSEPORT load balancing, so one plain thread accepts and deals
/// connections round-robin to the shards, which adopt the fd into their executor.
fn spawn_unix_acceptor(
    l: std::os::unix::net::UnixListener,
    shared: Arc<Shared>,
) -> (std::os::fd::RawFd, std::thread::JoinHandle<()>) {
    use std::os::fd::AsRawFd;
    let fd = l.as_raw_fd();
    let t = std::thread::Builder::new()
        .name("peerd-unix-accept".into())
        .spawn(move || {
            let mut next = 0usize;
            loop {
                match l.accept() {
                    Ok((s, _)) => {
                        if shared.stopping.load(Ordering::Acquire) {
                            return;
                        }
                        let _ = shared.senders[next].send(ShardMsg::Adopt(OwnedFd::from(s)));
                        next = (next + 1) % shared.senders.len();
                    }
                    Err(_) if shared.stopping.load(Ordering::Acquire) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
        .expect("spawn unix acceptor thread");
    (fd, t)
}
