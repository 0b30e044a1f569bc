//! `listen()` options.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
pub use crate::config::{Limits, MIN_FRAME_LEN, MIN_MEMORY_BUDGET};
use crate::error::{ListenError, RpcFailure};
use crate::peer::ConnectedPeer;
pub use crate::request::HandlerFuture;
use crate::request::Request;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` for TCP; port 0 picks a free port (all shards share it).
    Tcp(String),
    /// A Unix stream socket path. A stale socket file left by a dead server is replaced;
    /// one with a live listener is an error.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parse `unix:/path` or `host:port`.
    pub fn parse(s: &str) -> Endpoint {
        match s.strip_prefix("unix:") {
            Some(p) => Endpoint::Unix(PathBuf::from(p)),
            None => Endpoint::Tcp(s.to_string()),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A server-wide RPC handler: runs on the shard of the calling peer. It must be `Send +
/// Sync` because every shard shares it; the future it returns need not be `Send`.
pub type SharedHandler = Arc<dyn Fn(ConnectedPeer, Request) -> HandlerFuture + Send + Sync>;

/// Decides whether a Hello's credentials are acceptable. Runs on the connecting peer's
/// shard during the handshake. Arguments: the declared peer id (if any) and the
/// credentials (if any). `Err(reason)` rejects with Unauthorized.
pub type Authenticator =
    Arc<dyn Fn(Option<&str>, Option<&[u8]>) -> Result<(), String> + Send + Sync>;

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

/// Options for [`crate::listen`].
#[derive(Clone)]
pub struct ListenOptions {
    /// Where to listen (default `127.0.0.1:7400`).
    pub endpoint: Endpoint,
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
    pub(crate) on_connection: Option<OnConnection>,
    pub(crate) on_presence: Option<OnPresence>,
    pub(crate) handlers: Vec<(String, SharedHandler)>,
    pub(crate) authenticator: Option<Authenticator>,
    pub(crate) relay_broadcasts: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            endpoint: Endpoint::Tcp("127.0.0.1:7400".into()),
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
            relay_broadcasts: true,
        }
    }
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("endpoint", &self.endpoint)
            .field("shards", &self.shards)
            .field("cores", &self.cores)
            .field("backlog", &self.backlog)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ListenOptions {
    /// Options with `endpoint` (`host:port` or `unix:/path`) and defaults otherwise.
    pub fn new(endpoint: &str) -> ListenOptions {
        ListenOptions {
            endpoint: Endpoint::parse(endpoint),
            ..ListenOptions::default()
        }
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

    /// Check Hello credentials with `f`.
    pub fn authenticate(
        mut self,
        f: impl Fn(Option<&str>, Option<&[u8]>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.authenticator = Some(Arc::new(f));
        self
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
        let bad = |m: String| Err(ListenError::InvalidOptions(m));
        if self.shards == 0 {
            return bad("shards must be at least 1".into());
        }
        for (name, d) in [
            ("heartbeat", self.heartbeat),
            ("handshake_timeout", self.handshake_timeout),
            ("default_call_timeout", self.default_call_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if self.backlog == 0 {
            return bad("backlog must be at least 1".into());
        }
        self.limits.validate().or_else(bad)?;
        if self.pin {
            if let Some(core) = self.cores.iter().find(|c| !cpus.contains(c)) {
                return bad(format!(
                    "core {core} is not available to this process (allowed: {cpus:?})"
                ));
            }
            if self.cores.is_empty() && self.shards > cpus.len() {
                return bad(format!(
                    "{} shards but only {} cores are available to this process; \
                     use fewer shards, name cores to share, or turn pinning off",
                    self.shards,
                    cpus.len()
                ));
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
        }
    }

    /// The user callbacks, shared by every shard.
    pub(crate) fn hooks(&self) -> Hooks {
        Hooks {
            on_connection: self.on_connection.clone(),
            on_presence: self.on_presence.clone(),
            handlers: self.handlers.iter().cloned().collect(),
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The callbacks embedding code registered, as the shards use them.
pub(crate) struct Hooks {
    pub on_connection: Option<OnConnection>,
    pub on_presence: Option<OnPresence>,
    pub handlers: HashMap<String, SharedHandler>,
    pub authenticator: Option<Authenticator>,
}
