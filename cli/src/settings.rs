//! Every setting of `peerd serve`, declared once: TOML key, flag, `PEERD_*` variable,
//! default, help and validation are all on the field. `crate::config` merges the sources
//! (flags > env > file > defaults); docs/CONFIG.md's table is generated from here.
//!
//! # How to add a setting
//!
//! 1. Add a field to the section it belongs to (a new section is a struct like these,
//!    flattened into [`Settings`] and listed in `defaults_from_clap!`):
//!
//!    ```text
//!    /// What it does, in one line: this is `--help` and the docs' table. Say the unit.
//!    #[arg(id = "limits.max_widgets", long = "max-widgets", env = "PEERD_MAX_WIDGETS",
//!          default_value_t = AtLeast(64))]
//!    pub max_widgets: AtLeast<usize, 1>,
//!    ```
//!
//!    - `id` is the TOML key: the section, a dot, the field's name.
//!    - `env` is `PEERD_` and the flag in capitals with `_` for `-`.
//!    - The default is clap's (`default_value_t`, or none for an `Option`); take it from
//!      `ListenOptions::default()` when the library has one. A default that depends on the
//!      machine gets `hide_default_value = true` and says how it is computed in the help.
//!    - The type validates: [`AtLeast`] for numbers with a floor, [`Parsed`] for values
//!      written as strings and parsed like their flag, or a type of your own implementing
//!      `FromStr` + `Display` + serde. Flags, variables and the file then refuse the same
//!      values with the same message. Rules between fields go in [`Settings::check`].
//!
//!    Unit tests (`cargo test -p peerd-cli --bin peerd`) check the id against the serde
//!    field, the variable against the flag, and that docs/CONFIG.md and
//!    deploy/peerd.toml list the key.
//! 2. Use it: in [`Settings::listen_options`], or wherever the binary needs it. If
//!    `listen()` validates the `ListenOptions` field it sets, add the pair to
//!    [`LIBRARY_OPTIONS`] so that a refusal names the key.
//! 3. `PEERD_BLESS=1 cargo test -p peerd-cli --bin peerd` rewrites docs/CONFIG.md's table;
//!    document the key in deploy/peerd.toml with its default.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Args;
use peerd_server::jwt::{JwtAuth, KeyError};
use peerd_server::jwt::{PermissionClaims, TokenAlgorithm};
use peerd_server::options::{MIN_FRAME_LEN, MIN_MEMORY_BUDGET};
use peerd_server::{
    ClusterOptions, Endpoint, ListenOptions, RateLimit, TlsFiles, WebSocketOptions,
};
use serde::{Deserialize, Serialize};

use crate::config::{AtLeast, Parsed};

/// The library's defaults, which the settings below take as theirs.
fn lib() -> ListenOptions {
    ListenOptions::default()
}

/// Every setting of `peerd serve`, one TOML table per section.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[listen]`
    #[command(flatten, next_help_heading = "Listen")]
    pub listen: ListenSettings,
    /// `[tls]`
    #[command(flatten, next_help_heading = "TLS")]
    pub tls: TlsSettings,
    /// `[websocket]`
    #[command(flatten, next_help_heading = "WebSocket")]
    pub websocket: WebSocketSettings,
    /// `[runtime]`
    #[command(flatten, next_help_heading = "Runtime")]
    pub runtime: RuntimeSettings,
    /// `[limits]`
    #[command(flatten, next_help_heading = "Limits")]
    pub limits: LimitSettings,
    /// `[timeouts]`
    #[command(flatten, next_help_heading = "Timeouts")]
    pub timeouts: TimeoutSettings,
    /// `[admin]`
    #[command(flatten, next_help_heading = "Admin")]
    pub admin: AdminSettings,
    /// `[cluster]`
    #[command(flatten, next_help_heading = "Cluster")]
    pub cluster: ClusterSettings,
    /// `[lifecycle]`
    #[command(flatten, next_help_heading = "Lifecycle")]
    pub lifecycle: LifecycleSettings,
    /// `[auth]`
    #[command(flatten, next_help_heading = "Authentication")]
    pub auth: AuthSettings,
}

/// `[listen]`: where peers connect.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenSettings {
    /// Where to listen; several endpoints: repeat the flag, or separate with commas. Forms:
    /// host:port or tcp://host:port (port 0 = any free port), unix:/path, tls://host:port,
    /// ws://host:port[/path], wss://host:port[/path].
    #[arg(id = "listen.endpoints", long = "listen", env = "PEERD_LISTEN",
          value_name = "ENDPOINT", value_delimiter = ',',
          default_values_t = lib().endpoints.into_iter().map(Parsed))]
    pub endpoints: Vec<Parsed<Endpoint>>,
}

/// `[tls]`: the certificate for tls:// and wss:// endpoints.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain (PEM, leaf first) for tls:// and wss:// endpoints.
    #[arg(
        id = "tls.cert",
        long = "tls-cert",
        env = "PEERD_TLS_CERT",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of that certificate.
    #[arg(
        id = "tls.key",
        long = "tls-key",
        env = "PEERD_TLS_KEY",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
}

/// `[websocket]`: ws:// and wss:// endpoints.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketSettings {
    /// Browser origins allowed on ws:// and wss:// (repeat or separate with commas), e.g.
    /// https://app.example.com; none listed: any. Others get HTTP 403.
    #[arg(
        id = "websocket.origins",
        long = "ws-origin",
        env = "PEERD_WS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub origins: Vec<String>,
}

/// `[runtime]`: shards and the cores they run on.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Number of shards (executor threads). Default: one per core this process may use.
    #[arg(id = "runtime.shards", long = "shards", env = "PEERD_SHARDS", value_name = "N",
          default_value_t = AtLeast(lib().shards), hide_default_value = true)]
    pub shards: AtLeast<usize, 1>,
    /// Cores to pin shards to, e.g. 0,1 (shard i on cores[i % len]); none listed: shard i
    /// on the i-th core this process may use.
    #[arg(
        id = "runtime.cores",
        long = "cores",
        env = "PEERD_CORES",
        value_name = "CORE",
        value_delimiter = ','
    )]
    pub cores: Vec<usize>,
    /// Do not pin shards to cores (variable: 1/true/yes/on or 0/false/no/off).
    #[arg(id = "runtime.no_pin", long = "no-pin", env = "PEERD_NO_PIN",
          value_parser = BoolishValueParser::new())]
    pub no_pin: bool,
    /// Spin this many microseconds before parking an idle shard: lower latency, more CPU.
    #[arg(id = "runtime.spin_us", long = "spin-us", env = "PEERD_SPIN_US", value_name = "US",
          default_value_t = lib().spin_before_park.as_micros() as u64)]
    pub spin_us: u64,
    /// Send with one sendmsg per connection instead of batching a flush's sends through
    /// the shard's io_uring (used when the kernel cannot; set it to compare the two).
    #[arg(id = "runtime.no_batched_sends", long = "no-batched-sends",
          env = "PEERD_NO_BATCHED_SENDS", value_parser = BoolishValueParser::new())]
    pub no_batched_sends: bool,
    /// Experimental: receive through one multishot receive per connection on the shard's
    /// io_uring instead of one recv per read through glommio; an idle connection then costs
    /// under 1 KiB, and floods the core has room for leave well-behaved peers a far lower
    /// tail. Off by default: with the core saturated by floods from 5,000 peers a
    /// well-behaved peer's p99 is 1.2-1.7x higher than through glommio, and echo at 64
    /// connections costs 3 % more CPU (docs/ARCHITECTURE.md).
    #[arg(id = "runtime.ring_receives", long = "ring-receives",
          env = "PEERD_RING_RECEIVES", value_parser = BoolishValueParser::new())]
    pub ring_receives: bool,
    /// Keep connections waiting on glommio's one-shot readiness polls instead of parking
    /// them, after the handshake, on a multishot poll in the shard's own io_uring. Parked, an
    /// idle connection costs about 270 B less server memory, and 5,000 peers sending a
    /// little each cost 15-25 % less server CPU; set it to compare (docs/ARCHITECTURE.md,
    /// "Memory an idle peer costs").
    #[arg(id = "runtime.no_park_idle", long = "no-park-idle",
          env = "PEERD_NO_PARK_IDLE", value_parser = BoolishValueParser::new())]
    pub no_park_idle: bool,
}

/// `[limits]`: what one peer, and all of them, may hold.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Most concurrent connections; past it a connection gets Reject(overloaded) and is
    /// closed (lowered to fit the file-descriptor limit if that is lower).
    #[arg(id = "limits.max_connections", long = "max-connections",
          env = "PEERD_MAX_CONNECTIONS", value_name = "N",
          default_value_t = AtLeast(lib().limits.max_connections))]
    pub max_connections: AtLeast<usize, 1>,
    /// Largest frame body accepted from a peer, in bytes (at least 1024: a Hello may be
    /// that large); larger: Close(too_large).
    #[arg(id = "limits.max_frame_len", long = "max-frame-len", env = "PEERD_MAX_FRAME_LEN",
          value_name = "BYTES", default_value_t = AtLeast(lib().limits.max_frame_len))]
    pub max_frame_len: AtLeast<u32, { MIN_FRAME_LEN as u64 }>,
    /// Bytes queued toward one peer (plus 64 per frame) before it is closed with
    /// Close(slow_consumer).
    #[arg(id = "limits.outbound_queue_bytes", long = "outbound-queue-bytes",
          env = "PEERD_OUTBOUND_QUEUE_BYTES", value_name = "BYTES",
          default_value_t = AtLeast(lib().limits.outbound_queue_bytes))]
    pub outbound_queue_bytes: AtLeast<usize, 1>,
    /// Memory for outbound queues and receive buffers of all shards together, in bytes (at
    /// least 16 MiB); once what they hold passes seven eighths of it the largest holders are
    /// closed (the last eighth is headroom for what is not counted: the connections
    /// themselves, the allocator's overhead). Default: a quarter of the machine's memory.
    #[arg(id = "limits.memory_budget", long = "memory-budget", env = "PEERD_MEMORY_BUDGET",
          value_name = "BYTES", default_value_t = AtLeast(lib().limits.memory_budget),
          hide_default_value = true)]
    pub memory_budget: AtLeast<usize, { MIN_MEMORY_BUDGET as u64 }>,
    /// Per-peer rate limit: frames per second a peer may send (a token bucket holding one
    /// second's worth); frames over it are refused with rate_limited (docs/PROTOCOL.md
    /// §6.9). Not set (and no rate_bytes): no rate limit.
    #[arg(
        id = "limits.rate_frames",
        long = "rate-frames",
        env = "PEERD_RATE_FRAMES",
        value_name = "N"
    )]
    pub rate_frames: Option<AtLeast<u32, 1>>,
    /// Per-peer rate limit: bytes per second a peer may send, headers included. Not set
    /// (and no rate_frames): no rate limit.
    #[arg(
        id = "limits.rate_bytes",
        long = "rate-bytes",
        env = "PEERD_RATE_BYTES",
        value_name = "BYTES"
    )]
    pub rate_bytes: Option<AtLeast<u64, 1>>,
    /// Seconds a peer may stay over its rate limit before Close(rate_limited).
    #[arg(id = "limits.rate_close_after", long = "rate-close-after",
          env = "PEERD_RATE_CLOSE_AFTER", value_name = "SECS", default_value_t = AtLeast(10))]
    pub rate_close_after: AtLeast<u64, 1>,
}

/// `[auth]`: connect tokens (JWT, in Hello's credentials) and anonymous access (README
/// "Authentication and permissions"). No key: no tokens are checked, and a non-loopback
/// endpoint gets a loud warning unless `allow_anonymous` says open access is intended.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Require connect tokens signed HS256 with the secret in this file (at least 32 bytes;
    /// a trailing newline is dropped).
    #[arg(
        id = "auth.hs256_secret",
        long = "auth-hs256-secret",
        env = "PEERD_AUTH_HS256_SECRET",
        value_name = "FILE"
    )]
    pub hs256_secret: Option<PathBuf>,
    /// Require connect tokens signed by the private half of these public keys (PEM; RSA:
    /// RS256, P-256: ES256, P-384: ES384, Ed25519: EdDSA, unless auth.alg says otherwise).
    /// Several keys, e.g. during a rotation: repeat the flag or separate with commas.
    #[arg(
        id = "auth.public_keys",
        long = "auth-public-key",
        env = "PEERD_AUTH_PUBLIC_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub public_keys: Vec<PathBuf>,
    /// The algorithm the public keys verify, instead of the key type's usual one (RS384,
    /// RS512, PS256, PS384, PS512 for RSA keys).
    #[arg(
        id = "auth.alg",
        long = "auth-alg",
        env = "PEERD_AUTH_ALG",
        value_name = "ALG"
    )]
    pub alg: Option<Parsed<TokenAlgorithm>>,
    /// Require tokens' `aud` claim to be this audience.
    #[arg(
        id = "auth.audience",
        long = "auth-audience",
        env = "PEERD_AUTH_AUDIENCE",
        value_name = "AUD"
    )]
    pub audience: Option<String>,
    /// Require tokens' `iss` claim to be this issuer.
    #[arg(
        id = "auth.issuer",
        long = "auth-issuer",
        env = "PEERD_AUTH_ISSUER",
        value_name = "ISS"
    )]
    pub issuer: Option<String>,
    /// Clock skew allowed on tokens' `exp` and `nbf`, in seconds.
    #[arg(
        id = "auth.leeway_secs",
        long = "auth-leeway-secs",
        env = "PEERD_AUTH_LEEWAY_SECS",
        value_name = "SECS",
        default_value_t = 5
    )]
    pub leeway_secs: u64,
    /// Let peers in without a token (variable: 1/true/yes/on or 0/false/no/off). With a key
    /// they get server-assigned ids; without one this says that open access is intended
    /// (no warning on a non-loopback address).
    #[arg(id = "auth.allow_anonymous", long = "allow-anonymous", env = "PEERD_ALLOW_ANONYMOUS",
          value_parser = BoolishValueParser::new())]
    pub allow_anonymous: bool,
    /// What anonymous peers may do, as a token's `peerd` claim in JSON, e.g.
    /// '{"join":["lobby"],"publish":["lobby"]}' (what it does not list is refused). Not set:
    /// everything. Needs auth.allow_anonymous.
    #[arg(
        id = "auth.anonymous_permissions",
        long = "anonymous-permissions",
        env = "PEERD_ANONYMOUS_PERMISSIONS",
        value_name = "JSON"
    )]
    pub anonymous_permissions: Option<Parsed<PermissionsJson>>,
}

impl AuthSettings {
    /// Whether a key to verify tokens with is configured (tokens are then required).
    pub fn has_key(&self) -> bool {
        self.hs256_secret.is_some() || !self.public_keys.is_empty()
    }
}

/// A `peerd` permission claim written as JSON (`auth.anonymous_permissions`), with its
/// patterns checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionsJson(pub PermissionClaims);

impl std::str::FromStr for PermissionsJson {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p: PermissionClaims = serde_json::from_str(s).map_err(|e| e.to_string())?;
        p.to_permissions().map_err(|e| e.to_string())?;
        Ok(PermissionsJson(p))
    }
}

impl std::fmt::Display for PermissionsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(&self.0).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

/// `[cluster]`: join a cluster of peerd nodes over NATS (README "Run a cluster").
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Join the cluster on the NATS at these URLs (nats://host:port, tls://host:port;
    /// several servers of one NATS cluster: repeat the flag, or separate with commas;
    /// credentials as user:password@ or token@ before the host). NATS must run with
    /// JetStream (nats-server -js). Not set: a single node.
    #[arg(
        id = "cluster.urls",
        long = "cluster",
        env = "PEERD_CLUSTER",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// This node's name in the cluster, 1 to 64 of A-Z a-z 0-9 - _ (default:
    /// <hostname>-<pid>).
    #[arg(
        id = "cluster.node_id",
        long = "node-id",
        env = "PEERD_NODE_ID",
        value_name = "NAME"
    )]
    pub node_id: Option<String>,
    /// The cluster's name: its NATS subjects and id bucket are named after it, so that
    /// several clusters can share one NATS.
    #[arg(
        id = "cluster.name",
        long = "cluster-name",
        env = "PEERD_CLUSTER_NAME",
        value_name = "NAME",
        default_value = "peerd"
    )]
    pub name: String,
    /// Nodes send a heartbeat this often; a node silent for three intervals is dead and
    /// its peers leave.
    #[arg(id = "cluster.heartbeat_ms", long = "cluster-heartbeat-ms",
          env = "PEERD_CLUSTER_HEARTBEAT_MS", value_name = "MS",
          default_value_t = AtLeast(1000))]
    pub heartbeat_ms: AtLeast<u64, 50>,
    /// Bytes of cross-node messages that may wait for the link to NATS; past it, events
    /// and calls to peers of other nodes are refused with `overloaded`, and topic messages
    /// and broadcasts for other nodes are dropped and counted (peerd_cluster_dropped_total).
    #[arg(id = "cluster.backlog_bytes", long = "cluster-backlog-bytes",
          env = "PEERD_CLUSTER_BACKLOG_BYTES", value_name = "BYTES",
          default_value_t = AtLeast(64 << 20))]
    pub backlog_bytes: AtLeast<usize, 65536>,
    /// Keep the cluster's peer-id bucket in NATS's memory instead of its disk (faster
    /// connects; a NATS restart then forgets the ids, and nodes claim them again).
    #[arg(id = "cluster.kv_memory", long = "cluster-kv-memory", env = "PEERD_CLUSTER_KV_MEMORY",
          value_parser = BoolishValueParser::new())]
    pub kv_memory: bool,
    /// The CA certificate (PEM) that NATS's TLS certificate must chain to; set, the link
    /// to NATS must be TLS.
    #[arg(
        id = "cluster.ca",
        long = "cluster-ca",
        env = "PEERD_CLUSTER_CA",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
}

/// `[lifecycle]`: draining on SIGTERM, and handing over to a new process (README
/// "Restarts without losses").
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSettings {
    /// On SIGTERM (or when a successor took over), ask peers to reconnect spread evenly
    /// over this many milliseconds, so that a fleet does not reconnect at once; 0: all at
    /// once.
    #[arg(
        id = "lifecycle.drain_window_ms",
        long = "drain-window-ms",
        env = "PEERD_DRAIN_WINDOW_MS",
        value_name = "MS",
        default_value_t = peerd_server::DrainOptions::default().window.as_millis() as u64
    )]
    pub drain_window_ms: u64,
    /// Each draining peer has this many milliseconds from its notice to finish (its calls
    /// answered); then it is closed with `shutdown`. Exit 0 when every peer is gone, or at
    /// the latest after the window, the grace and the close linger.
    #[arg(
        id = "lifecycle.drain_grace_ms",
        long = "drain-grace-ms",
        env = "PEERD_DRAIN_GRACE_MS",
        value_name = "MS",
        default_value_t = peerd_server::DrainOptions::default().grace.as_millis() as u64
    )]
    pub drain_grace_ms: u64,
    /// A Unix socket on which a new `peerd serve --takeover` receives this server's
    /// listening sockets (zero-downtime restart). Not set: no takeover. Both processes
    /// must name the same path; it accepts only connections from the same user (0600).
    #[arg(
        id = "lifecycle.handoff_socket",
        long = "handoff-socket",
        env = "PEERD_HANDOFF_SOCKET",
        value_name = "PATH"
    )]
    pub handoff_socket: Option<PathBuf>,
}

impl AuthSettings {
    /// The token verifier `[auth]` asks for, if any: with a key, tokens are required (anonymous
    /// peers only with `allow_anonymous`); with only `anonymous_permissions`, every peer is
    /// anonymous and restricted. `Err`: a key could not be loaded.
    pub fn verifier(&self) -> Result<Option<JwtAuth>, KeyError> {
        let a = self;
        if !a.has_key() && a.anonymous_permissions.is_none() {
            return Ok(None);
        }
        let mut auth = JwtAuth::new().leeway(Duration::from_secs(a.leeway_secs));
        if let Some(path) = &a.hs256_secret {
            auth = auth.hmac_secret_file(path)?;
        }
        for path in &a.public_keys {
            auth = auth.public_key_file(path, a.alg.as_ref().map(|p| p.0))?;
        }
        if let Some(aud) = &a.audience {
            auth = auth.audience(aud);
        }
        if let Some(iss) = &a.issuer {
            auth = auth.issuer(iss);
        }
        if a.allow_anonymous {
            let permissions = a
                .anonymous_permissions
                .as_ref()
                .map(|p| p.0 .0.to_permissions().expect("checked when parsed"));
            auth = auth.allow_anonymous(permissions);
        }
        Ok(Some(auth))
    }
}

/// `[admin]`: the admin HTTP listener (/metrics, /healthz, /readyz).
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP on this address, e.g.
    /// 127.0.0.1:7480 (port 0: any free port). Not set: no admin listener. Keep it on
    /// loopback or a private network: it has no authentication.
    #[arg(
        id = "admin.listen",
        long = "admin",
        env = "PEERD_ADMIN",
        value_name = "ADDR"
    )]
    pub listen: Option<std::net::SocketAddr>,
}

/// `[timeouts]`: deadlines and intervals, in milliseconds.
#[derive(Args, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutSettings {
    /// A new connection must complete its handshake within this many milliseconds
    /// (slowloris defence).
    #[arg(id = "timeouts.handshake_timeout_ms", long = "handshake-timeout-ms",
          env = "PEERD_HANDSHAKE_TIMEOUT_MS", value_name = "MS",
          default_value_t = AtLeast(lib().handshake_timeout.as_millis() as u64))]
    pub handshake_timeout_ms: AtLeast<u64, 1>,
    /// Ping a peer silent for this many milliseconds; three silent intervals:
    /// Close(idle_timeout).
    #[arg(id = "timeouts.heartbeat_ms", long = "heartbeat-ms", env = "PEERD_HEARTBEAT_MS",
          value_name = "MS", default_value_t = AtLeast(lib().heartbeat.as_millis() as u64))]
    pub heartbeat_ms: AtLeast<u64, 1>,
    /// On SIGINT (a quick stop; SIGTERM drains, see [lifecycle]), give in-flight handlers
    /// this many milliseconds before closing peers and exiting 0.
    #[arg(
        id = "timeouts.drain_ms",
        long = "drain-ms",
        env = "PEERD_DRAIN_MS",
        value_name = "MS",
        default_value_t = 1000
    )]
    pub drain_ms: u64,
}

/// Serde's `#[serde(default)]` for a section is its clap defaults: one default per
/// setting, whichever source leaves it out.
macro_rules! defaults_from_clap {
    ($($t:ty),* $(,)?) => {$(
        impl Default for $t {
            fn default() -> Self {
                crate::config::clap_defaults()
            }
        }
    )*};
}
defaults_from_clap!(
    Settings,
    ListenSettings,
    TlsSettings,
    WebSocketSettings,
    RuntimeSettings,
    LimitSettings,
    TimeoutSettings,
    AdminSettings,
    LifecycleSettings,
    ClusterSettings,
    AuthSettings,
);

/// The `ListenOptions` field `listen()` names when it refuses one
/// (`ListenError::InvalidOptions::option`), and the key that sets it.
pub const LIBRARY_OPTIONS: &[(&str, &str)] = &[
    ("endpoints", "listen.endpoints"),
    ("tls", "tls.cert"),
    ("shards", "runtime.shards"),
    ("cores", "runtime.cores"),
    ("handshake_timeout", "timeouts.handshake_timeout_ms"),
    ("heartbeat", "timeouts.heartbeat_ms"),
    ("limits.max_connections", "limits.max_connections"),
    ("limits.max_frame_len", "limits.max_frame_len"),
    ("limits.outbound_queue_bytes", "limits.outbound_queue_bytes"),
    ("limits.memory_budget", "limits.memory_budget"),
    ("limits.rate_limit", "limits.rate_frames"),
    ("cluster", "cluster.urls"),
];

/// The key behind a `ListenOptions` field `listen()` refused, if a setting sets it.
pub fn key_of_option(option: &str) -> Option<&'static str> {
    LIBRARY_OPTIONS
        .iter()
        .find(|(o, _)| *o == option)
        .map(|(_, k)| *k)
}

impl Settings {
    /// Refuse settings that are fine alone but not together: the key at fault and why.
    /// (Each value alone was checked by its type.)
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.listen.endpoints.is_empty() {
            return Err(("listen.endpoints", "at least one endpoint is needed".into()));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err((
                    "tls.cert",
                    "needs tls.key (--tls-key, PEERD_TLS_KEY) too".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "tls.key",
                    "needs tls.cert (--tls-cert, PEERD_TLS_CERT) too".into(),
                ))
            }
            _ => {}
        }
        if self.tls.cert.is_none() {
            if let Some(e) = self.listen.endpoints.iter().find(|e| e.0.is_tls()) {
                return Err((
                    "listen.endpoints",
                    format!("{e} needs a certificate: set tls.cert and tls.key"),
                ));
            }
        }
        if self.auth.alg.is_some() && self.auth.public_keys.is_empty() {
            return Err((
                "auth.alg",
                "applies to auth.public_keys (--auth-public-key), and none is set".into(),
            ));
        }
        if self.auth.anonymous_permissions.is_some() && !self.auth.allow_anonymous {
            return Err((
                "auth.anonymous_permissions",
                "needs auth.allow_anonymous (--allow-anonymous) too".into(),
            ));
        }
        Ok(())
    }

    /// The library's options for these settings (without the builtin handlers).
    /// `ws_echo`: WebSocket endpoints echo (conformance testing only).
    /// How a drain goes ([lifecycle]).
    pub fn drain_options(&self) -> peerd_server::DrainOptions {
        peerd_server::DrainOptions {
            window: Duration::from_millis(self.lifecycle.drain_window_ms),
            grace: Duration::from_millis(self.lifecycle.drain_grace_ms),
        }
    }

    pub fn listen_options(&self, ws_echo: bool) -> ListenOptions {
        let mut opts = ListenOptions::default();
        opts.endpoints = self.listen.endpoints.iter().map(|e| e.0.clone()).collect();
        if let (Some(cert_chain), Some(key)) = (&self.tls.cert, &self.tls.key) {
            opts.tls = Some(TlsFiles {
                cert_chain: cert_chain.clone(),
                key: key.clone(),
            });
        }
        let origins = &self.websocket.origins;
        opts.websocket = WebSocketOptions {
            origins: (!origins.is_empty()).then(|| origins.clone()),
            echo: ws_echo,
        };
        opts.shards = self.runtime.shards.get();
        opts.cores = self.runtime.cores.clone();
        opts.pin = !self.runtime.no_pin;
        opts.spin_before_park = Duration::from_micros(self.runtime.spin_us);
        opts.batched_sends = !self.runtime.no_batched_sends;
        opts.ring_receives = self.runtime.ring_receives;
        opts.park_idle = !self.runtime.no_park_idle;
        // A server that may hand its sockets to a successor accepts on a thread that can
        // stop without losing a connection (peerd_server::restart).
        opts.handover = self.lifecycle.handoff_socket.is_some();
        opts.limits.max_connections = self.limits.max_connections.get();
        opts.limits.max_frame_len = self.limits.max_frame_len.get();
        opts.limits.outbound_queue_bytes = self.limits.outbound_queue_bytes.get();
        opts.limits.memory_budget = self.limits.memory_budget.get();
        if self.limits.rate_frames.is_some() || self.limits.rate_bytes.is_some() {
            // The one not given is unlimited in practice.
            let mut r = RateLimit::new(
                self.limits.rate_frames.map_or(u32::MAX, |n| n.get()),
                self.limits.rate_bytes.map_or(u64::MAX / 4, |n| n.get()),
            );
            r.close_after = Duration::from_secs(self.limits.rate_close_after.get());
            opts.limits.rate_limit = Some(r);
        }
        opts.handshake_timeout = Duration::from_millis(self.timeouts.handshake_timeout_ms.get());
        opts.heartbeat = Duration::from_millis(self.timeouts.heartbeat_ms.get());
        if !self.cluster.urls.is_empty() {
            let c = &self.cluster;
            let mut cluster = ClusterOptions::new(c.urls.clone());
            cluster.node_id = c.node_id.clone();
            cluster.name = c.name.clone();
            cluster.heartbeat = Duration::from_millis(c.heartbeat_ms.get());
            cluster.backlog_bytes = c.backlog_bytes.get();
            cluster.kv_memory = c.kv_memory;
            cluster.ca = c.ca.clone();
            opts.cluster = Some(cluster);
        }
        opts
    }
}
