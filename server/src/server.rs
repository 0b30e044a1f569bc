//! `listen()` and [`PeerServer`]: starting shards, the state they share, shutting down.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use peerd_codec::{self as codec, EncodeError};

use crate::acceptor::Acceptor;
use crate::error::{ListenError, MetricsError, SendError};
use crate::executor;
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::msg::{ShardMsg, Transport};
use crate::options::Inherited;
use crate::options::{Endpoint, ListenOptions};
use crate::shared::Shared;
use crate::sockfile;

/// A connected peer as seen from any thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer id.
    pub peer_id: String,
    /// The shard that owns its connection (on its node).
    pub shard: usize,
    /// Its session id (as in Welcome; sessions are numbered per node).
    pub session_id: u64,
    /// On a cluster node: the name of the node holding a peer of another node; None for
    /// this node's own peers.
    pub node: Option<String>,
}

/// Where this node stands in its cluster ([`PeerServer::cluster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// This node's name.
    pub node_id: String,
    /// This node's incarnation: drawn at start, in every message it sends.
    pub epoch: u64,
    /// Nodes alive in the cluster, this one included.
    pub nodes: usize,
    /// Linked to NATS and in sync: new peers are admitted.
    pub up: bool,
    /// Cross-node messages not sent (link down, backlog full, NATS slow consumer).
    pub dropped: u64,
    /// Nodes declared dead or gone since start.
    pub nodes_lost: u64,
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

/// How long [`PeerServer::metrics`] waits for the shards to answer.
pub const METRICS_WAIT: Duration = Duration::from_secs(2);

/// A running server. Usable from any thread. Dropping it closes it.
pub struct PeerServer {
    pub(crate) shared: Arc<Shared>,
    /// The cluster's bridge thread, when this node is part of a cluster.
    bridge: Mutex<Option<crate::cluster::bridge::Bridge>>,
    threads: Mutex<Option<Vec<glommio::ExecutorJoinHandle<()>>>>,
    /// The accept thread, for Unix endpoints and for every endpoint of a handover server.
    acceptor: Mutex<Option<Acceptor>>,
    /// The Unix socket files we bound, with their identity, to remove at close.
    unix_files: Vec<(std::path::PathBuf, (u64, u64))>,
    /// The endpoints listened on, with the ports actually bound.
    pub(crate) endpoints: Vec<Endpoint>,
    /// The address of each TCP-based endpoint, in the order of `endpoints`.
    pub(crate) addrs: Vec<Option<SocketAddr>>,
    /// A duplicate of every shard's TCP listening socket, to hand to a successor
    /// (`restart`); dropped at close.
    pub(crate) listeners: Mutex<Vec<(SocketAddr, OwnedFd)>>,
    /// The limits in force (`set_limits`).
    pub(crate) limits: Mutex<crate::Limits>,
    /// The TLS certificate, replaced by `reload_tls`.
    pub(crate) cert_slot: Option<Arc<crate::tls::CertSlot>>,
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
    /// The bound address of the first TCP-based endpoint (with the real port when 0 was
    /// asked for); `None` when the server listens only on Unix sockets.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addrs.iter().flatten().next().copied()
    }

    /// Every endpoint listened on, with the real ports, in the order they were given.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The first endpoint as a string: `127.0.0.1:7400`, `unix:/path`, `ws://...`.
    pub fn endpoint_string(&self) -> String {
        self.endpoints
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shared.shards()
    }

    /// Every handshaken peer across all shards.
    pub fn connections(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .shared
            .directory
            .snapshot()
            .into_iter()
            .map(|(id, shard, session)| {
                let remote = self
                    .shared
                    .cluster
                    .as_ref()
                    .and_then(|c| c.remote(shard, session));
                match remote {
                    Some((node, at)) => PeerInfo {
                        peer_id: id.to_string(),
                        shard: at.shard as usize,
                        session_id: at.session,
                        node: Some(node.to_string()),
                    },
                    None => PeerInfo {
                        peer_id: id.to_string(),
                        shard,
                        session_id: session,
                        node: None,
                    },
                }
            })
            .collect();
        v.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        v
    }

    /// The connection limit in force: `Limits::max_connections`, or less when the
    /// process's file-descriptor limit could not fit it (see [`listen`]).
    pub fn max_connections(&self) -> usize {
        self.shared
            .max_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open connections (handshaking ones included).
    pub fn connection_count(&self) -> usize {
        self.shared.connection_count()
    }

    /// Connections refused because the server was at `max_connections` (Node's `drop`).
    pub fn dropped_connections(&self) -> u64 {
        self.shared.dropped()
    }

    /// Send event `name` to every connected peer (as Broadcast with no origin). Encoded
    /// once; one message per shard.
    pub fn broadcast(&self, name: &str, payload: &[u8]) -> Result<(), EncodeError> {
        let frame = Frame::encode(&codec::Broadcast {
            name: name.into(),
            peer: None,
            payload: payload.into(),
        })?;
        self.shared.broadcast_all(frame, 0);
        Ok(())
    }

    /// Send event `name` to one peer. `Ok(false)` if no such peer is connected.
    pub fn emit_to(&self, peer_id: &str, name: &str, payload: &[u8]) -> Result<bool, SendError> {
        let Some((shard, session)) = self.shared.directory.lookup(peer_id) else {
            return Ok(false);
        };
        let frame = Frame::encode(&codec::Event {
            name: name.into(),
            peer: None,
            payload: payload.into(),
        })?;
        self.shared
            .send(shard, ShardMsg::Deliver { session, frame });
        Ok(true)
    }

    /// Publish `payload` on `topic` to every member, from the server (the TopicMessage's
    /// `from` is empty). Encoded once; one message per shard with members.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), EncodeError> {
        let frame = Frame::encode(&codec::TopicMessage {
            topic: topic.into(),
            from: "".into(),
            direct: false,
            payload: payload.into(),
        })?;
        self.shared.topic_remote(topic, None, &frame);
        for (i, msg) in self.shared.topic_frames(topic, frame, 0) {
            self.shared.send(i, msg);
        }
        Ok(())
    }

    /// Send `payload` on `topic` to the one member `to` (a direct TopicMessage from the
    /// server). `Ok(false)` when `to` is not a member.
    pub fn send(&self, topic: &str, to: &str, payload: &[u8]) -> Result<bool, EncodeError> {
        let Some((shard, session)) = self.shared.topics.member(topic, to) else {
            return Ok(false);
        };
        let frame = Frame::encode(&codec::TopicMessage {
            topic: topic.into(),
            from: "".into(),
            direct: true,
            payload: payload.into(),
        })?;
        if self.shared.is_local(shard) {
            self.shared
                .send(shard, ShardMsg::Deliver { session, frame });
        } else {
            // Through the topic's subject, in order with its other traffic (`topics`).
            self.shared.topic_remote(topic, Some(session), &frame);
        }
        Ok(true)
    }

    /// Members of `topic` across all shards (sorted).
    pub fn topic_members(&self, topic: &str) -> Vec<String> {
        self.shared.topics.members(topic)
    }

    /// This node's place in its cluster; None without one.
    pub fn cluster(&self) -> Option<ClusterStatus> {
        let c = self.shared.cluster.as_ref()?;
        Some(ClusterStatus {
            node_id: c.node_id.clone(),
            epoch: c.epoch(),
            nodes: c.nodes.load(std::sync::atomic::Ordering::Relaxed),
            up: c.is_up(),
            dropped: c.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
            nodes_lost: c
                .stats
                .nodes_lost
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Counters for monitoring and tests.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            connections: self.connection_count(),
            peers: self.shared.directory.len(),
            topics: self.shared.topics.len(),
            dropped: self.dropped_connections(),
            accept_errors: self.shared.accept_errors(),
        }
    }

    /// Whether the server accepts connections: true from `listen()` until a close starts
    /// (`close`, `close_graceful`). While it drains and after it closed, false: what a
    /// readiness probe (`/readyz`) reports, so a load balancer sends new peers elsewhere.
    pub fn is_ready(&self) -> bool {
        let cluster_up = self.shared.cluster.as_ref().is_none_or(|c| c.is_up());
        !self.shared.is_draining() && !self.is_closed() && cluster_up
    }

    /// A snapshot of every shard's counters and gauges, and the server-wide figures.
    ///
    /// Each shard is asked over its inbox and answers between two batches of work by
    /// copying its counters (nothing on the message path is shared or atomic; a scrape
    /// costs a shard a few microseconds). Blocks until every shard answered, or for at
    /// most [`METRICS_WAIT`]: shards that did not answer by then are listed in
    /// [`Metrics::missing_shards`] (a shard stuck that long is worth an alert, not a
    /// failed scrape). Shards answer while they drain too (`close_graceful`), so the drain
    /// can be watched. [`Metrics::to_prometheus`] writes it in the Prometheus text format.
    pub fn metrics(&self) -> Result<Metrics, MetricsError> {
        if executor::on_own_shard(&self.shared) {
            return Err(MetricsError::OnOwnShard);
        }
        let n = self.shared.shards();
        let (tx, rx) = flume::bounded(n);
        for i in 0..n {
            self.shared.send(i, ShardMsg::Metrics(tx.clone()));
        }
        // A shard that stopped drops its message, and with it its sender: once every
        // sender is gone the receive below ends early.
        drop(tx);
        let deadline = Instant::now() + METRICS_WAIT;
        let mut shards = Vec::with_capacity(n);
        while shards.len() < n {
            match rx.recv_deadline(deadline) {
                Ok(m) => shards.push(m),
                Err(_) => break,
            }
        }
        if shards.is_empty() && self.is_closed() {
            // Every shard has stopped (a draining shard still answers).
            return Err(MetricsError::Closed);
        }
        shards.sort_by_key(|s| s.shard);
        let missing_shards = (0..n)
            .filter(|i| !shards.iter().any(|s| s.shard == *i))
            .collect();
        Ok(Metrics {
            shards,
            missing_shards,
            ready: self.is_ready(),
            started_at: self.shared.started_at,
            connections: self.connection_count(),
            max_connections: self.max_connections(),
            peers: self.shared.directory.len(),
            topics: self.shared.topics.len(),
            accept_errors: self.shared.accept_errors(),
            cluster: self.shared.cluster.as_ref().map(|c| c.metrics()),
        })
    }

    /// Stop accepting, close every peer with Shutdown, and return when every shard has
    /// stopped. Idempotent.
    pub fn close(&self) {
        self.close_graceful(Duration::ZERO)
    }

    /// Like [`close`](Self::close), but first give in-flight server-side handlers up to
    /// `drain` to finish and answer.
    ///
    /// Works from any thread. Called from one of this server's own shards (inside a
    /// handler, say), it cannot wait for that shard to stop without deadlocking: it starts
    /// the shutdown, returns at once, and a helper thread waits for the shards to stop.
    pub fn close_graceful(&self, drain: Duration) {
        // Not ready from the first moment, for the whole drain.
        self.shared.start_draining();
        let Some(threads) = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for i in 0..self.shared.shards() {
            self.shared.send(i, ShardMsg::Shutdown { drain });
        }
        let unix_files = self.unix_files.clone();
        let bridge = self.bridge.lock().unwrap_or_else(|e| e.into_inner()).take();
        let wait = move || {
            if let Some(a) = acceptor {
                a.join();
            }
            for t in threads {
                let _ = t.join();
            }
            // After the shards: their peers' leaves and releases went out first; then
            // the node says goodbye.
            if let Some(mut b) = bridge {
                b.stop();
            }
            for (path, id) in unix_files {
                // Only the socket file we bound: a successor may have put its own there.
                sockfile::remove_if_ours(&path, id);
            }
        };
        if executor::on_own_shard(&self.shared) {
            let _ = std::thread::Builder::new()
                .name("peerd-close".into())
                .spawn(wait);
        } else {
            wait();
        }
    }

    /// Stop the accept thread (`close` joins it).
    pub(crate) fn stop_accept_thread(&self) {
        if let Some(a) = &*self.acceptor.lock().unwrap_or_else(|e| e.into_inner()) {
            a.stop();
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

/// Bind a Unix stream socket. A socket file whose listener is alive refuses to be
/// replaced; a stale one (connect fails) is removed.
///
/// A successor (`take_over`: it inherited its predecessor's sockets) replaces a live one
/// instead: it binds beside it and renames its socket over the path, so that the path
/// always leads to a listening socket (the predecessor keeps serving what it already
/// accepted).
fn bind_unix(p: &std::path::Path, take_over: bool) -> Result<UnixListener, ListenError> {
    let bind_err = |e| ListenError::Bind {
        addr: format!("unix:{}", p.display()),
        source: e,
    };
    if p.exists() {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            if !take_over {
                return Err(ListenError::UnixPathInUse { path: p.into() });
            }
            return sockfile::bind_over(p, None).map_err(bind_err);
        }
        let _ = std::fs::remove_file(p);
    }
    UnixListener::bind(p).map_err(bind_err)
}

fn bind_tcp(
    addr_s: &str,
    shards: usize,
    backlog: u32,
    inherited: &Inherited,
) -> Result<(SocketAddr, Vec<Vec<OwnedFd>>), ListenError> {
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
    let member = |bound: SocketAddr| -> Result<OwnedFd, ListenError> {
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(bind_err)?;
        s.set_reuse_address(true).map_err(bind_err)?;
        s.set_reuse_port(true).map_err(bind_err)?;
        s.bind(&bound.into()).map_err(bind_err)?;
        s.listen(backlog.min(i32::MAX as u32) as i32)
            .map_err(bind_err)?;
        Ok(OwnedFd::from(s))
    };
    let old = inherited.take(addr);
    if !old.is_empty() {
        // A successor: the predecessor's sockets, shared out among the shards; a shard
        // left without one joins their SO_REUSEPORT group with a socket of its own.
        let mut fds: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
        for (j, fd) in old.into_iter().enumerate() {
            fds[j % shards].push(fd);
        }
        for f in fds.iter_mut().filter(|f| f.is_empty()) {
            f.push(member(addr)?);
        }
        return Ok((addr, fds));
    }
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
    let fds = (0..shards)
        .map(|_| member(bound).map(|fd| vec![fd]))
        .collect::<Result<_, _>>()?;
    Ok((bound, fds))
}

/// Descriptors a server needs besides its connections: listeners, io_uring rings and
/// eventfds per shard, a spare per shard, the process's own (stdio, logs).
fn fd_reserve(shards: usize) -> u64 {
    64 + 8 * shards as u64
}

/// Make `max_connections` fit the process's file-descriptor limit (RLIMIT_NOFILE), as
/// Redis does with maxclients: raise the soft limit toward the hard one if that is needed
/// and allowed, else lower `max_connections` to what fits and say so. A limit too low for
/// even a few connections is an error.
fn fit_fd_limit(opts: &mut ListenOptions) -> Result<(), ListenError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(());
    }
    let reserve = fd_reserve(opts.shards);
    let want = opts.limits.max_connections as u64 + reserve;
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= want {
        return Ok(());
    }
    let fits = lim.rlim_cur.saturating_sub(reserve);
    if fits < 16 {
        return Err(ListenError::InvalidOptions {
            option: "limits.max_connections",
            reason: format!(
                "the file-descriptor limit ({}) leaves room for {fits} connections; raise it \
                 (`ulimit -n`, LimitNOFILE= in systemd)",
                lim.rlim_cur
            ),
        });
    }
    tracing::warn!(
        requested = opts.limits.max_connections,
        max_connections = fits,
        nofile = lim.rlim_cur,
        "max_connections lowered to fit the file-descriptor limit (raise it with `ulimit -n` or LimitNOFILE=)"
    );
    opts.limits.max_connections = fits as usize;
    Ok(())
}

/// The cores this process may run on (its CPU affinity, as `taskset` or a cgroup set it).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    let cpus: Vec<usize> = if ok {
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    } else {
        cpus
    }
}

/// Start a server. Returns once every shard is accepting.
///
/// Every option is checked before anything starts: on an error no thread, socket or file
/// is left behind.
pub fn listen(mut opts: ListenOptions) -> Result<PeerServer, ListenError> {
    let cpus = allowed_cpus();
    opts.validate(&cpus)?;
    preflight()?;
    fit_fd_limit(&mut opts)?;
    let n = opts.shards;
    // Default pinning: shard i on the i-th core this process may use.
    let cores = if opts.cores.is_empty() {
        cpus
    } else {
        opts.cores.clone()
    };
    let mut config = opts.config();
    let mut cert_slot = None;
    if opts.endpoints.iter().any(Endpoint::is_tls) {
        let files = opts.tls.as_ref().expect("validate checked");
        let (tls, slot) =
            crate::tls::server_config(&files.cert_chain, &files.key).map_err(ListenError::Tls)?;
        config.tls = Some(tls);
        cert_slot = Some(slot);
    }
    // Bind everything before starting anything: an error leaves nothing behind.
    // A successor replaces its predecessor's Unix socket files (asked before the TCP
    // endpoints take their inherited sockets out).
    let taking_over = !opts.inherited.is_empty();
    // Listeners the accept thread serves (see `acceptor`), and our Unix socket files.
    let mut threaded: Vec<(OwnedFd, Transport)> = Vec::new();
    let mut unix_files = Vec::new();
    // Per TCP-based endpoint: the sockets of each shard (one, unless it inherited more).
    let mut tcp: Vec<(Vec<Vec<OwnedFd>>, Transport)> = Vec::new();
    let mut dups = Vec::new();
    let mut endpoints = Vec::with_capacity(opts.endpoints.len());
    let mut addrs = Vec::with_capacity(opts.endpoints.len());
    for e in &opts.endpoints {
        match e {
            Endpoint::Unix(p) => {
                let l = bind_unix(p, taking_over)?;
                if let Some(id) = sockfile::file_id(p) {
                    unix_files.push((p.clone(), id));
                }
                threaded.push((OwnedFd::from(l), Transport::PLAIN));
                endpoints.push(e.clone());
                addrs.push(None);
            }
            _ => {
                let addr = e.tcp_addr().expect("TCP-based endpoint");
                let (bound, fds) = bind_tcp(addr, n, opts.backlog, &opts.inherited)?;
                for fd in fds.iter().flatten() {
                    let dup = fd.try_clone().map_err(|source| ListenError::Bind {
                        addr: addr.into(),
                        source,
                    })?;
                    dups.push((bound, dup));
                }
                if opts.handover {
                    threaded.extend(fds.into_iter().flatten().map(|fd| (fd, e.transport())));
                } else {
                    tcp.push((fds, e.transport()));
                }
                endpoints.push(e.with_addr(bound));
                addrs.push(Some(bound));
            }
        }
    }
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = flume::unbounded();
        senders.push(tx);
        receivers.push(rx);
    }
    // The cluster's link exists before the shards, so that every handshake sees it; the
    // bridge starts once they run, and until it has joined the cluster the link is down and
    // handshakes are refused with Overloaded.
    let (cluster, bridge_rx) = match &opts.cluster {
        Some(c) => {
            let epoch = crate::cluster::link::new_epoch();
            let node_id = c.node_id.clone().unwrap_or_else(default_node_id);
            let (link, rx) = crate::cluster::ClusterLink::new(node_id, epoch, n, c.backlog_bytes);
            (Some(link), Some(rx))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared::new(config, senders, cluster.clone()));
    let hooks = Arc::new(opts.hooks());
    let mut threads = Vec::with_capacity(n);
    let mut failure = None;
    // Each shard says when its executor is running: creating one (its io_uring rings)
    // happens on the new thread, and a failure there shows only as the thread ending.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
    for (i, rx) in receivers.into_iter().enumerate() {
        // This shard's socket of every TCP-based endpoint.
        let listeners: Vec<(OwnedFd, Transport)> = tcp
            .iter_mut()
            .flat_map(|(fds, t)| {
                std::mem::take(&mut fds[i])
                    .into_iter()
                    .map(|fd| (fd, t.clone()))
            })
            .collect();
        let placement = if opts.pin {
            Placement::Fixed(cores[i % cores.len()])
        } else {
            Placement::Unbound
        };
        let mut b = LocalExecutorBuilder::new(placement)
            .name(&format!("peerd-shard-{i}"))
            // peerd does no file IO through glommio's registered DMA buffers; keep the
            // locked-memory footprint to the rings.
            .io_memory(128 << 10);
        if !opts.spin_before_park.is_zero() {
            b = b.spin_before_park(opts.spin_before_park);
        }
        let (shared, hooks, ready) = (shared.clone(), hooks.clone(), ready_tx.clone());
        match b.spawn(move || async move {
            let _ = ready.send(i);
            drop(ready);
            executor::run(i, shared, hooks, listeners, rx).await
        }) {
            Ok(h) => threads.push(h),
            Err(e) => {
                failure = Some(classify_glommio_error(i, e));
                break;
            }
        }
    }
    drop(ready_tx);
    for _ in 0..threads.len() {
        if ready_rx.recv().is_err() {
            failure.get_or_insert(ListenError::Shard {
                shard: 0,
                detail: "a shard thread exited during start-up (could its io_uring be \
                         created? see the kernel log and `ulimit -l`)"
                    .into(),
            });
            break;
        }
    }
    let acceptor = if threaded.is_empty() {
        None
    } else {
        match Acceptor::spawn(threaded, shared.clone()) {
            Ok(a) => Some(a),
            Err(e) => {
                failure.get_or_insert(ListenError::Shard {
                    shard: 0,
                    detail: format!("cannot start the accept thread: {e}"),
                });
                None
            }
        }
    };
    let bridge = match (failure.is_none(), cluster, bridge_rx, opts.cluster.clone()) {
        (true, Some(link), Some(rx), Some(c)) => {
            match crate::cluster::bridge::start(shared.clone(), link, rx, c) {
                Ok(b) => Some(b),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            }
        }
        _ => None,
    };
    let server = PeerServer {
        shared,
        bridge: Mutex::new(bridge),
        threads: Mutex::new(Some(threads)),
        acceptor: Mutex::new(acceptor),
        unix_files,
        endpoints,
        addrs,
        listeners: Mutex::new(dups),
        cert_slot,
        limits: Mutex::new(opts.limits.clone()),
    };
    if let Some(e) = failure {
        // Stop the shards that did start, and free the address.
        server.close();
        return Err(e);
    }
    for e in &server.endpoints {
        tracing::info!(endpoint = %e, shards = n, "listening");
    }
    Ok(server)
}

/// A node's default name: `<hostname>-<pid>`.
fn default_node_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..n])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect()
    } else {
        "peerd".to_string()
    };
    format!("{host}-{}", std::process::id())
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
