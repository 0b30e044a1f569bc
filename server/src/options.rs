//! `listen()` options.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::auth::{Action, AuthRequest, Denied, Grant};
use crate::config::Config;
pub use crate::config::{
    Limits, RateLimit, TlsFiles, WebSocketOptions, MIN_FRAME_LEN, MIN_MEMORY_BUDGET,
};
use crate::error::{ListenError, RpcFailure};
use crate::jwt::JwtAuth;
use crate::msg::Transport;
use crate::peer::ConnectedPeer;
pub use crate::request::HandlerFuture;
use crate::request::Request;
use crate::traffic::Traffic;

/// Where the server listens, and what it speaks there.
///
/// Every TCP-based endpoint (`Tcp`, `Tls`, `Ws`, `Wss`) is served by every shard, each with
/// its own SO_REUSEPORT socket; peers on different endpoints see each other exactly as on
/// one (topics, presence, calls, signaling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` (or `tcp://host:port`): peerd's protocol on TCP; port 0 picks a free port
    /// (all shards share it).
    Tcp(String),
    /// `unix:/path`: a Unix stream socket. A stale socket file left by a dead server is
    /// replaced; one with a live listener is an error.
    Unix(PathBuf),
    /// `tls://host:port`: peerd's protocol inside TLS (needs [`ListenOptions::tls`]).
    Tls(String),
    /// `ws://host:port[/path]`: WebSocket (RFC 6455), subprotocol `peerd.v1`, one peerd
    /// frame per binary message. Requests for another path get 404.
    Ws {
        /// `host:port`.
        addr: String,
        /// The request path served (default `/`).
        path: String,
    },
    /// `wss://host:port[/path]`: WebSocket inside TLS (needs [`ListenOptions::tls`]).
    Wss {
        /// `host:port`.
        addr: String,
        /// The request path served (default `/`).
        path: String,
    },
}

impl Endpoint {
    /// Parse `host:port`, `tcp://host:port`, `unix:/path`, `tls://host:port`,
    /// `ws://host:port[/path]` or `wss://host:port[/path]`.
    pub fn parse(s: &str) -> Result<Endpoint, ListenError> {
        let bad = |reason: &str| ListenError::BadAddress {
            addr: s.to_string(),
            reason: reason.to_string(),
        };
        let host_port = |rest: &str| -> Result<String, ListenError> {
            if rest.is_empty() || !rest.contains(':') {
                return Err(bad("expected host:port"));
            }
            Ok(rest.to_string())
        };
        let with_path = |rest: &str| -> Result<(String, String), ListenError> {
            let (addr, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            Ok((host_port(addr)?, path.to_string()))
        };
        if let Some(p) = s.strip_prefix("unix:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err(bad("expected unix:/path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            return Ok(Endpoint::Tcp(host_port(rest)?));
        }
        if let Some(rest) = s.strip_prefix("tls://") {
            return Ok(Endpoint::Tls(host_port(rest)?));
        }
        if let Some(rest) = s.strip_prefix("ws://") {
            let (addr, path) = with_path(rest)?;
            return Ok(Endpoint::Ws { addr, path });
        }
        if let Some(rest) = s.strip_prefix("wss://") {
            let (addr, path) = with_path(rest)?;
            return Ok(Endpoint::Wss { addr, path });
        }
        if s.contains("://") {
            return Err(bad(
                "unknown scheme (expected tcp://, unix:, tls://, ws:// or wss://)",
            ));
        }
        Ok(Endpoint::Tcp(host_port(s)?))
    }

    /// The `host:port` of a TCP-based endpoint; `None` for Unix.
    pub fn tcp_addr(&self) -> Option<&str> {
        match self {
            Endpoint::Tcp(a) | Endpoint::Tls(a) => Some(a),
            Endpoint::Ws { addr, .. } | Endpoint::Wss { addr, .. } => Some(addr),
            Endpoint::Unix(_) => None,
        }
    }

    /// Whether connections here start with a TLS handshake.
    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Tls(_) | Endpoint::Wss { .. })
    }

    /// This endpoint with its port replaced by the one actually bound (port 0 asked for).
    pub(crate) fn with_addr(&self, bound: std::net::SocketAddr) -> Endpoint {
        let a = bound.to_string();
        match self {
            Endpoint::Tcp(_) => Endpoint::Tcp(a),
            Endpoint::Tls(_) => Endpoint::Tls(a),
            Endpoint::Ws { path, .. } => Endpoint::Ws {
                addr: a,
                path: path.clone(),
            },
            Endpoint::Wss { path, .. } => Endpoint::Wss {
                addr: a,
                path: path.clone(),
            },
            Endpoint::Unix(p) => Endpoint::Unix(p.clone()),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = ListenError;
    fn from_str(s: &str) -> Result<Endpoint, ListenError> {
        Endpoint::parse(s)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tls(a) => write!(f, "tls://{a}"),
            Endpoint::Ws { addr, path } => write!(f, "ws://{addr}{path}"),
            Endpoint::Wss { addr, path } => write!(f, "wss://{addr}{path}"),
        }
    }
}

/// A server-wide RPC handler: runs on the shard of the calling peer. It must be `Send +
/// Sync` because every shard shares it; the future it returns need not be `Send`.
pub type SharedHandler = Arc<dyn Fn(ConnectedPeer, Request) -> HandlerFuture + Send + Sync>;

/// Checks credentials: a Hello's (during the handshake) and a Refresh's (on a live
/// session), on the peer's shard. `Ok(grant)`: the peer id they prove, when they expire and
/// what the peer may do; `Err`: the peer gets the refusal's code (`unauthorized`,
/// `token_expired`) and reason, as Reject or Status.
pub type Authenticator = Arc<dyn Fn(&AuthRequest<'_>) -> Result<Grant, Denied> + Send + Sync>;

/// Decides, per action, whether a peer may do it; consulted on the peer's shard after the
/// permissions its credentials carry allowed it. Arguments: the peer id and the action.
pub type Authorizer = Arc<dyn Fn(&str, &Action<'_>) -> Result<(), Denied> + Send + Sync>;

/// Sees what a peer sends to others (signals, publishes, direct events, broadcasts, calls
/// to peers) on the sender's shard, after the permissions and the authorizer allowed it and
/// before anything is delivered; `Err` refuses it. Arguments: the sender's peer id and the
/// traffic, borrowed from the received frame. See [`ListenOptions::on_traffic`].
pub type TrafficHook = Arc<dyn Fn(&str, &Traffic<'_>) -> Result<(), Denied> + Send + Sync>;

/// Sees the server refuse traffic for a reason of its own, after [`TrafficHook`] (if any)
/// let it through: a signal to an unknown peer or from outside the room, ... Arguments:
/// the sender's peer id, the traffic, and the code and reason the sender is answered with.
/// See [`ListenOptions::on_traffic_error`].
pub type TrafficErrorHook = Arc<dyn Fn(&str, &Traffic<'_>, &Denied) + Send + Sync>;

/// Called on the peer's shard for each new peer, already active, before any of its frames
/// is dispatched.
pub type OnConnection = Arc<dyn Fn(ConnectedPeer) + Send + Sync>;

/// A presence change, as seen by [`ListenOptions::on_presence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceNotice {
    /// The topic, or `None` for connect/disconnect.
    pub topic: Option<String>,
    /// The peer.
    pub peer_id: String,
    /// true: joined (or connected); false: left (or disconnected).
    pub joined: bool,
}

/// Server-side presence callback; runs on the shard where the change happened.
pub type OnPresence = Arc<dyn Fn(PresenceNotice) + Send + Sync>;

/// Joining a cluster of peerd nodes over NATS ([`ListenOptions::cluster`]): see
/// `docs/ARCHITECTURE.md`, "The cluster".
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// NATS server URLs (`nats://host:port`, `tls://host:port`), one NATS server or several
    /// of one NATS cluster. Credentials go in a URL as NATS's own tools take them:
    /// `nats://user:password@host:port`, or `nats://token@host:port`; they are never logged.
    pub urls: Vec<String>,
    /// The CA certificate (PEM) that NATS's TLS certificate must chain to; set, the link
    /// to NATS must be TLS (default: none; a `tls://` URL uses the system's roots).
    pub ca: Option<std::path::PathBuf>,
    /// This node's name (default `<hostname>-<pid>`): `[A-Za-z0-9_-]{1,64}`.
    pub node_id: Option<String>,
    /// The cluster's name (default `peerd`): subjects and the id bucket are named after it,
    /// so several clusters can share one NATS. `[A-Za-z0-9_-]{1,32}`.
    pub name: String,
    /// Interval of the nodes' heartbeats (default 1 s); a node silent for three is dead.
    pub heartbeat: Duration,
    /// Bytes of cross-node messages that may wait for the bridge thread (default 64 MiB);
    /// past it, events and calls to peers of other nodes are refused with Overloaded, and
    /// topic messages and broadcasts for other nodes are dropped and counted.
    pub backlog_bytes: usize,
    /// Keep the id bucket in NATS's memory rather than on its disk (default false: ids
    /// survive a NATS restart without being claimed again).
    pub kv_memory: bool,
    /// Replicas of the id bucket in a NATS cluster (default 1).
    pub kv_replicas: usize,
}

impl ClusterOptions {
    /// A cluster on the NATS at `urls`, every other setting its default.
    pub fn new(urls: Vec<String>) -> ClusterOptions {
        ClusterOptions {
            urls,
            ca: None,
            node_id: None,
            name: "peerd".into(),
            heartbeat: Duration::from_secs(1),
            backlog_bytes: 64 << 20,
            kv_memory: false,
            kv_replicas: 1,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("no NATS URL given".into());
        }
        let ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if let Some(id) = &self.node_id {
            if !ok(id, 64) {
                return Err(format!("node id {id:?} must be 1 to 64 of A-Z a-z 0-9 - _"));
            }
        }
        if !ok(&self.name, 32) {
            return Err(format!(
                "cluster name {:?} must be 1 to 32 of A-Z a-z 0-9 - _",
                self.name
            ));
        }
        if self.heartbeat < Duration::from_millis(50) {
            return Err("the cluster heartbeat must be at least 50 ms".into());
        }
        Ok(())
    }
}

/// Options for [`crate::listen`].
#[derive(Clone)]
pub struct ListenOptions {
    /// Where to listen (default `127.0.0.1:7400`); one server may listen on several
    /// endpoints at once.
    pub endpoints: Vec<Endpoint>,
    /// Certificate and key for `tls://` and `wss://` endpoints.
    pub tls: Option<TlsFiles>,
    /// WebSocket settings for `ws://` and `wss://` endpoints.
    pub websocket: WebSocketOptions,
    /// Number of shards, one executor thread each (default: available cores).
    pub shards: usize,
    /// Pin shard *i* to `cores[i % cores.len()]`; empty = pin shard *i* to core *i* when
    /// `pin` is true.
    pub cores: Vec<usize>,
    /// Pin shards to cores (default true). Turn off when sharing a machine with a loadgen
    /// that is not pinned either.
    pub pin: bool,
    /// Listen backlog (default 1024).
    pub backlog: u32,
    /// Time a new connection has to complete the handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// Interval after which an idle peer is pinged; three silent intervals close it with
    /// IdleTimeout (default 15 s).
    pub heartbeat: Duration,
    /// Deadline for a call whose request says 0 (default 30 s).
    pub default_call_timeout: Duration,
    /// How long the executors spin looking for work before sleeping in the kernel (default
    /// 0: sleep at once). Spinning trades CPU for latency; see the README's tuning section.
    pub spin_before_park: Duration,
    /// After closing a connection, how long to keep reading (and discarding) until the
    /// peer closes too, so that unread input does not make the kernel reset the connection
    /// and destroy the Close frame before the peer reads it (default 2 s). Shutdown waits
    /// at most this long for peers to go.
    pub close_linger: Duration,
    /// Limits.
    pub limits: Limits,
    /// Whether this server may hand its listening sockets to a successor (default false;
    /// `peerd serve` sets it when it has a handoff socket): see [`crate::restart`]. It then
    /// accepts on one thread that can stop race-free, and deals connections to the shards,
    /// instead of each shard accepting on its own socket with io_uring (which is cheaper by
    /// one cross-thread message per connection).
    pub handover: bool,
    /// Send through each shard's own io_uring: the sends of every connection a batch made
    /// dirty go in with one `io_uring_enter` instead of one `sendmsg` each (default true).
    /// Where the kernel has no io_uring or no SENDMSG for it, shards use `sendmsg` anyway
    /// and say so in the log; false forces that path (to compare, or to rule it out).
    pub batched_sends: bool,
    /// Experimental (default false): receive through each shard's own io_uring, one
    /// multishot receive per connection, armed once, into buffers the kernel picks from a
    /// ring the shard's connections share; an idle connection then costs under 1 KiB. Off
    /// by default because under floods from 5,000 peers that saturate the shard's core a
    /// well-behaved peer's p99 is 1.3-1.7x what it is through glommio (docs/ARCHITECTURE.md).
    /// Where the kernel lacks multishot receive or provided-buffer rings (before 6.0),
    /// connections read through glommio (one `recv` per read) anyway, and the log says so.
    pub ring_receives: bool,
    /// Park connections (default true): from the end of its handshake, a connection that
    /// reads through glommio waits on a multishot readiness poll in the shard's own io_uring,
    /// armed once, instead of glommio's one-shot polls, made again after every read that
    /// empties its socket. glommio keeps about 270 B on the heap for each stream it polls,
    /// which a parked connection does not: an idle connection costs under 1 KiB. And 5,000
    /// peers sending a little each cost 15-25 % less server CPU; a lone request/response
    /// peer 6-16 % more (`receiver` module doc). Where the kernel cannot (no io_uring, or
    /// no multishot polls before 5.13), connections stay on glommio's polls and the log
    /// says so; false forces that (to compare). Moot with `ring_receives`, whose
    /// connections keep no glommio stream at all.
    pub park_idle: bool,
    /// Join a cluster of peerd nodes over NATS (default: none, a single node).
    pub cluster: Option<ClusterOptions>,
    pub(crate) on_connection: Option<OnConnection>,
    pub(crate) on_presence: Option<OnPresence>,
    pub(crate) handlers: Vec<(String, SharedHandler)>,
    pub(crate) authenticator: Option<Authenticator>,
    pub(crate) authorizer: Option<Authorizer>,
    pub(crate) on_traffic: Option<TrafficHook>,
    pub(crate) on_traffic_error: Option<TrafficErrorHook>,
    pub(crate) relay_broadcasts: bool,
    /// Listening sockets from a predecessor (`ListenOptions::inherit`).
    pub(crate) inherited: Inherited,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            endpoints: vec![Endpoint::Tcp("127.0.0.1:7400".into())],
            tls: None,
            websocket: WebSocketOptions::default(),
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cores: Vec::new(),
            pin: true,
            backlog: 1024,
            handshake_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(15),
            default_call_timeout: Duration::from_secs(30),
            spin_before_park: Duration::ZERO,
            close_linger: Duration::from_secs(2),
            limits: Limits::default(),
            on_connection: None,
            on_presence: None,
            handlers: Vec::new(),
            authenticator: None,
            authorizer: None,
            on_traffic: None,
            on_traffic_error: None,
            relay_broadcasts: true,
            handover: false,
            batched_sends: true,
            ring_receives: false,
            park_idle: true,
            cluster: None,
            inherited: Default::default(),
        }
    }
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("endpoints", &self.endpoints)
            .field("shards", &self.shards)
            .field("cores", &self.cores)
            .field("backlog", &self.backlog)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ListenOptions {
    /// Options listening on `endpoint` (any form [`Endpoint::parse`] takes) and defaults
    /// otherwise.
    pub fn new(endpoint: &str) -> Result<ListenOptions, ListenError> {
        Ok(ListenOptions {
            endpoints: vec![Endpoint::parse(endpoint)?],
            ..ListenOptions::default()
        })
    }

    /// Listen on `endpoint` only.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints = vec![endpoint];
        self
    }

    /// Set the shard count.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// Call `f` for every new peer on its shard, before its first frame is dispatched:
    /// register per-peer handlers and listeners here.
    pub fn on_connection(mut self, f: impl Fn(ConnectedPeer) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Arc::new(f));
        self
    }

    /// Watch presence from embedding code: `f` sees every connect and disconnect (`topic:
    /// None`) and every topic join and leave, on the shard where it happened. Take the
    /// current state first with `PeerServer::connections` / `topic_members`.
    pub fn on_presence(mut self, f: impl Fn(PresenceNotice) + Send + Sync + 'static) -> Self {
        self.on_presence = Some(Arc::new(f));
        self
    }

    /// Register a server-wide RPC handler (per-peer handlers registered with
    /// `peer.rpc().handle` take precedence). Cheaper than registering the same handler on
    /// every peer: one table per server, not per connection.
    pub fn handle<F, Fut>(mut self, method: &str, f: F) -> Self
    where
        F: Fn(ConnectedPeer, Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RpcFailure>> + 'static,
    {
        self.handlers
            .push((method.to_string(), Arc::new(move |p, r| Box::pin(f(p, r)))));
        self
    }

    /// Check credentials with `f`, yes or no: it gets the declared peer id (a Refresh: the
    /// session's) and the credentials; `Err(reason)` refuses with `unauthorized`. For a
    /// verdict that names the peer id, an expiry or permissions, use
    /// [`authenticate_with`](Self::authenticate_with).
    pub fn authenticate(
        self,
        f: impl Fn(Option<&str>, Option<&[u8]>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.authenticate_with(move |r: &AuthRequest<'_>| {
            f(r.peer_id, r.credentials)
                .map(|()| Grant::anonymous())
                .map_err(Denied::new)
        })
    }

    /// Check credentials with `f`, which returns what they prove ([`Grant`]): a Hello that
    /// declares a peer id other than the grant's is refused with `unauthorized`, one that
    /// declares none gets the grant's; the session is closed with `token_expired` at the
    /// grant's expiry unless a Refresh brings new credentials; its actions are checked
    /// against the grant's permissions. Replaces any authenticator set before.
    pub fn authenticate_with(
        mut self,
        f: impl Fn(&AuthRequest<'_>) -> Result<Grant, Denied> + Send + Sync + 'static,
    ) -> Self {
        self.authenticator = Some(Arc::new(f));
        self
    }

    /// Authenticate peers with connect tokens (JWT), see [`JwtAuth`].
    pub fn jwt(self, auth: JwtAuth) -> Self {
        self.authenticate_with(move |r: &AuthRequest<'_>| auth.authenticate(r))
    }

    /// Decide per action whether a peer may do it (join, publish, call, ... see
    /// [`Action`]), after the permissions its credentials carry allowed it. A refusal is
    /// answered with its code and reason, and nothing is delivered.
    pub fn authorize(
        mut self,
        f: impl Fn(&str, &Action<'_>) -> Result<(), Denied> + Send + Sync + 'static,
    ) -> Self {
        self.authorizer = Some(Arc::new(f));
        self
    }

    /// See, and refuse, what peers send to each other: `f(from, &traffic)` is called for
    /// every Signal, Publish, TopicSend, Event to a peer, relayed Broadcast and call to a peer
    /// ([`Traffic`]), on the sender's shard, after the permissions and the authorizer allowed
    /// it and before the server's own delivery checks and anything is delivered. `Err`
    /// refuses it like the authorizer does: the sender gets its code and reason (Status, or
    /// RpcError for a call) and nothing is delivered to anyone.
    ///
    /// What it sees is borrowed from the received frame (the payload too): nothing is
    /// copied or allocated for it, and without a hook the traffic is not even described.
    /// It runs inline on the shard, between reading a frame and the next, so it should be
    /// quick (no blocking I/O): its time is added to every frame it sees. Replaces any hook
    /// set before.
    pub fn on_traffic(
        mut self,
        f: impl Fn(&str, &Traffic<'_>) -> Result<(), Denied> + Send + Sync + 'static,
    ) -> Self {
        self.on_traffic = Some(Arc::new(f));
        self
    }

    /// See the traffic the server itself refuses after [`on_traffic`](Self::on_traffic)
    /// let it through (or with no such hook, after the authorizer): a signal from a peer
    /// that has not joined the room, or to a peer that is not connected or not in the room,
    /// a non-offer signal without a target, a TopicSend or Event to an unknown peer, a call
    /// to a peer when the caller has too many waiting. `f(from, &traffic, &refusal)` gets
    /// the code and reason the sender is answered with, on the sender's shard, before the
    /// answer is sent. Refusals by permissions, the authorizer and `on_traffic` itself are
    /// not reported here (the embedder decided those), nor what fails later (a relayed
    /// call's callee leaving or timing out). Replaces any hook set before.
    pub fn on_traffic_error(
        mut self,
        f: impl Fn(&str, &Traffic<'_>, &Denied) + Send + Sync + 'static,
    ) -> Self {
        self.on_traffic_error = Some(Arc::new(f));
        self
    }

    /// Whether an authenticator is set (credentials are checked).
    pub fn has_authenticator(&self) -> bool {
        self.authenticator.is_some()
    }

    /// Relay client Broadcast frames to every other peer (default true).
    pub fn relay_broadcasts(mut self, on: bool) -> Self {
        self.relay_broadcasts = on;
        self
    }
}

impl ListenOptions {
    /// Refuse options that cannot work, before anything is started. `cpus` are the cores
    /// this process may run on.
    pub(crate) fn validate(&self, cpus: &[usize]) -> Result<(), ListenError> {
        let bad = |option, reason: String| Err(ListenError::InvalidOptions { option, reason });
        if self.shards == 0 {
            return bad("shards", "shards must be at least 1".into());
        }
        if self.shards > 256 {
            // A remote peer's shard travels in one byte (`cluster::wire`).
            return bad("shards", "at most 256 shards".into());
        }
        if let Some(c) = &self.cluster {
            c.validate().or_else(|reason| bad("cluster", reason))?;
        }
        for (name, d) in [
            ("heartbeat", self.heartbeat),
            ("handshake_timeout", self.handshake_timeout),
            ("default_call_timeout", self.default_call_timeout),
        ] {
            if d.is_zero() {
                return bad(name, format!("{name} must be greater than 0"));
            }
        }
        if self.backlog == 0 {
            return bad("backlog", "backlog must be at least 1".into());
        }
        if self.endpoints.is_empty() {
            return bad(
                "endpoints",
                "at least one endpoint to listen on is needed".into(),
            );
        }
        if let Some(e) = self.endpoints.iter().find(|e| e.is_tls()) {
            if self.tls.is_none() {
                return bad(
                    "tls",
                    format!("{e} needs a certificate and key (--tls-cert and --tls-key)"),
                );
            }
        }
        self.limits
            .validate()
            .or_else(|(option, reason)| bad(option, reason))?;
        if self.pin {
            if let Some(core) = self.cores.iter().find(|c| !cpus.contains(c)) {
                return bad(
                    "cores",
                    format!("core {core} is not available to this process (allowed: {cpus:?})"),
                );
            }
            if self.cores.is_empty() && self.shards > cpus.len() {
                return bad(
                    "shards",
                    format!(
                        "{} shards but only {} cores are available to this process; \
                         use fewer shards, name cores to share, or turn pinning off",
                        self.shards,
                        cpus.len()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The plain settings shards run with.
    pub(crate) fn config(&self) -> Config {
        Config {
            limits: self.limits.clone(),
            handshake_timeout: self.handshake_timeout,
            heartbeat: self.heartbeat,
            default_call_timeout: self.default_call_timeout,
            close_linger: self.close_linger,
            relay_broadcasts: self.relay_broadcasts,
            handover: self.handover,
            batched_sends: self.batched_sends,
            ring_receives: self.ring_receives,
            park_idle: self.park_idle,
            websocket: self.websocket.clone(),
            tls: None,
        }
    }

    /// The user callbacks, shared by every shard.
    pub(crate) fn hooks(&self) -> Hooks {
        Hooks {
            on_connection: self.on_connection.clone(),
            on_presence: self.on_presence.clone(),
            handlers: self.handlers.iter().cloned().collect(),
            authenticator: self.authenticator.clone(),
            authorizer: self.authorizer.clone(),
            traffic: (self.on_traffic.is_some() || self.on_traffic_error.is_some()).then(|| {
                TrafficHooks {
                    inspect: self.on_traffic.clone(),
                    error: self.on_traffic_error.clone(),
                }
            }),
        }
    }
}

/// The callbacks embedding code registered, as the shards use them.
pub(crate) struct Hooks {
    pub on_connection: Option<OnConnection>,
    pub on_presence: Option<OnPresence>,
    pub handlers: HashMap<String, SharedHandler>,
    pub authenticator: Option<Authenticator>,
    pub authorizer: Option<Authorizer>,
    /// `None` unless a traffic hook is set: the frames they watch then cost one branch.
    pub traffic: Option<TrafficHooks>,
}

/// The traffic hooks, either or both.
pub(crate) struct TrafficHooks {
    pub inspect: Option<TrafficHook>,
    pub error: Option<TrafficErrorHook>,
}

/// A listening socket to start a successor server on (see the module doc).
#[derive(Debug)]
pub struct InheritedListener {
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// The socket (one of the shards' SO_REUSEPORT group; a server hands over all of them).
    pub fd: OwnedFd,
}

/// Inherited listeners in [`ListenOptions`], which is `Clone`: the sockets are taken by the
/// first `listen` that uses them.
#[derive(Clone, Default)]
pub(crate) struct Inherited(Arc<Mutex<Vec<InheritedListener>>>);

impl Inherited {
    /// The inherited sockets bound to `addr`, taken out.
    pub fn take(&self, addr: SocketAddr) -> Vec<OwnedFd> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|l| l.addr == addr);
        *all = rest;
        mine.into_iter().map(|l| l.fd).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

impl ListenOptions {
    /// Listen on these sockets (from [`PeerServer::listener_fds`], here or in a
    /// predecessor process) for the endpoints bound to the same address, instead of binding
    /// new ones: the predecessor and this server then share one accept queue per socket. A
    /// shard count different from the predecessor's works: surplus sockets are shared out
    /// among the shards, missing ones are bound beside them (SO_REUSEPORT). Sockets no
    /// endpoint uses are closed.
    pub fn inherit(mut self, listeners: Vec<InheritedListener>) -> Self {
        self.handover = true;
        self.inherited = Inherited(Arc::new(Mutex::new(listeners)));
        self
    }
}

impl ListenOptions {
    /// Set [`handover`](Self::handover).
    pub fn handover(mut self, on: bool) -> Self {
        self.handover = on;
        self
    }
}

impl Endpoint {
    /// What connections on this endpoint speak.
    pub(crate) fn transport(&self) -> Transport {
        let ws_path = match self {
            Endpoint::Ws { path, .. } | Endpoint::Wss { path, .. } => {
                Some(Arc::from(path.as_str()))
            }
            _ => None,
        };
        Transport {
            tls: self.is_tls(),
            ws_path,
        }
    }
}
