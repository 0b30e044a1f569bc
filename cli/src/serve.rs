//! `peerd serve`: flags to `ListenOptions`, the builtin RPCs, the ready line, signals.

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use clap::builder::BoolishValueParser;
use clap::Args;
use peerd_server::jwt::{JwtAuth, KeyError, PermissionClaims, TokenAlgorithm};
use peerd_server::{
    listen, CallError, Code, ConnectedPeer, Endpoint, ListenOptions, RpcFailure, TlsFiles,
    WebSocketOptions,
};

/// `peerd serve` flags.
///
/// Every flag `--some-flag` can also be given as the environment variable
/// `PEERD_SOME_FLAG`; a flag on the command line wins over the environment. Values that
/// cannot work (zero shards, a zero frame limit or deadline, ...) are refused here, before
/// anything starts, with clap's usage error naming the flag (exit status 2). `listen()`
/// checks the same again (and what only it can, like cores that exist), naming the field.
#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen; repeat (or separate with commas) for several endpoints:
    /// host:port or tcp://host:port (port 0 = any free port), unix:/path,
    /// ws://host:port[/path], wss://host:port[/path], tls://host:port.
    #[arg(long, default_value = "127.0.0.1:7400", env = "PEERD_LISTEN",
          value_delimiter = ',', value_parser = endpoint)]
    listen: Vec<Endpoint>,
    /// Certificate chain (PEM, leaf first) for tls:// and wss:// endpoints.
    #[arg(long, env = "PEERD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for the certificate of --tls-cert.
    #[arg(long, env = "PEERD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Origins allowed on ws:// and wss:// endpoints (repeat or separate with commas), e.g.
    /// https://app.example.com; default: any. Others get HTTP 403.
    #[arg(long, env = "PEERD_WS_ORIGIN", value_delimiter = ',')]
    ws_origin: Vec<String>,
    /// Conformance testing only: WebSocket endpoints echo every message instead of speaking
    /// peerd (for Autobahn|Testsuite).
    #[arg(long, env = "PEERD_WS_ECHO", hide = true, value_parser = BoolishValueParser::new())]
    ws_echo: bool,
    /// Number of shards (executor threads); default: one per core.
    #[arg(long, env = "PEERD_SHARDS", value_parser = positive::<usize>)]
    shards: Option<usize>,
    /// Cores to pin shards to, e.g. 0,1 (shard i -> cores[i % len]); default: shard i on core i.
    #[arg(long, env = "PEERD_CORES", value_delimiter = ',')]
    cores: Vec<usize>,
    /// Do not pin shards to cores (env: 1/true/yes/on or 0/false/no/off).
    #[arg(long, env = "PEERD_NO_PIN", value_parser = BoolishValueParser::new())]
    no_pin: bool,
    /// Maximum concurrent connections.
    #[arg(long, env = "PEERD_MAX_CONNECTIONS", default_value_t = 100_000,
          value_parser = positive::<usize>)]
    max_connections: usize,
    /// Maximum frame body accepted from a peer, in bytes.
    #[arg(long, env = "PEERD_MAX_FRAME_LEN", default_value_t = peerd_codec::DEFAULT_MAX_FRAME_LEN,
          value_parser = frame_len)]
    max_frame_len: u32,
    /// Bytes queued toward one peer before it is closed as a slow consumer.
    #[arg(long, env = "PEERD_OUTBOUND_QUEUE_BYTES", default_value_t = 8 << 20,
          value_parser = positive::<usize>)]
    outbound_queue_bytes: usize,
    /// Memory for outbound queues and receive buffers, all shards together, in bytes; past
    /// it the largest holders are closed. Default: a quarter of the machine's memory.
    #[arg(long, env = "PEERD_MEMORY_BUDGET", value_parser = memory_budget)]
    memory_budget: Option<usize>,
    /// Handshake deadline in milliseconds.
    #[arg(long, env = "PEERD_HANDSHAKE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = positive::<u64>)]
    handshake_timeout_ms: u64,
    /// Heartbeat interval in milliseconds (three silent intervals close a peer).
    #[arg(long, env = "PEERD_HEARTBEAT_MS", default_value_t = 15000,
          value_parser = positive::<u64>)]
    heartbeat_ms: u64,
    /// Spin this many microseconds before parking an idle shard (lower latency, more CPU).
    #[arg(long, env = "PEERD_SPIN_US", default_value_t = 0)]
    spin_us: u64,
    /// On SIGTERM, give in-flight handlers this many milliseconds before closing peers.
    #[arg(long, env = "PEERD_DRAIN_MS", default_value_t = 1000)]
    drain_ms: u64,
    /// Require connect tokens (JWT, in Hello's credentials) signed HS256 with the secret in
    /// this file (at least 32 bytes; a trailing newline is dropped).
    #[arg(long, value_name = "FILE", env = "PEERD_AUTH_HS256_SECRET")]
    auth_hs256_secret: Option<PathBuf>,
    /// Require connect tokens signed by the private half of this public key (PEM; RSA:
    /// RS256, P-256: ES256, P-384: ES384, Ed25519: EdDSA, unless --auth-alg says otherwise).
    /// Repeat (or separate with commas) for several keys, e.g. during a rotation.
    #[arg(
        long,
        value_name = "FILE",
        env = "PEERD_AUTH_PUBLIC_KEY",
        value_delimiter = ','
    )]
    auth_public_key: Vec<PathBuf>,
    /// The algorithm --auth-public-key keys verify, instead of the key type's usual one
    /// (RS384, RS512, PS256, PS384, PS512 for RSA keys).
    #[arg(long, value_name = "ALG", env = "PEERD_AUTH_ALG", value_parser = token_alg,
          requires = "auth_public_key")]
    auth_alg: Option<TokenAlgorithm>,
    /// Require tokens' `aud` claim to be this audience.
    #[arg(long, value_name = "AUD", env = "PEERD_AUTH_AUDIENCE")]
    auth_audience: Option<String>,
    /// Require tokens' `iss` claim to be this issuer.
    #[arg(long, value_name = "ISS", env = "PEERD_AUTH_ISSUER")]
    auth_issuer: Option<String>,
    /// Clock skew allowed on tokens' `exp` and `nbf`, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "PEERD_AUTH_LEEWAY_SECS",
        default_value_t = 5
    )]
    auth_leeway_secs: u64,
    /// Let peers in without a token (env: 1/true/yes/on or 0/false/no/off). With a key
    /// configured they get server-assigned ids; without one this only says that open access
    /// is intended (no warning on a non-loopback address).
    #[arg(long, env = "PEERD_ALLOW_ANONYMOUS", value_parser = BoolishValueParser::new())]
    allow_anonymous: bool,
    /// What anonymous peers may do, as a token's `peerd` claim in JSON, e.g.
    /// '{"join":["lobby"],"publish":["lobby"]}' (what it does not list is refused); default:
    /// everything. Needs --allow-anonymous.
    #[arg(long, value_name = "JSON", env = "PEERD_ANONYMOUS_PERMISSIONS",
          requires = "allow_anonymous", value_parser = permission_claims)]
    anonymous_permissions: Option<PermissionClaims>,
}

/// `--auth-alg`: a JOSE algorithm name peerd knows.
pub(crate) fn token_alg(s: &str) -> Result<TokenAlgorithm, String> {
    s.parse().map_err(|e: KeyError| e.to_string())
}

/// `--anonymous-permissions`: the `peerd` claim's JSON, with valid patterns.
pub(crate) fn permission_claims(s: &str) -> Result<PermissionClaims, String> {
    let p: PermissionClaims = serde_json::from_str(s).map_err(|e| e.to_string())?;
    p.to_permissions().map_err(|e| e.to_string())?;
    Ok(p)
}

/// The floors `listen()` enforces for `--max-frame-len` and `--memory-budget`.
use peerd_server::options::{MIN_FRAME_LEN, MIN_MEMORY_BUDGET};

/// A number of at least `min` (clap names the flag in front of the message).
fn at_least<T>(s: &str, min: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    let v: T = s.parse().map_err(|e: T::Err| e.to_string())?;
    if v < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(v)
}

/// A count, size or duration of at least 1.
fn positive<T>(s: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display + From<u8>,
    T::Err: Display,
{
    at_least(s, T::from(1))
}

/// `--memory-budget`: at least [`MIN_MEMORY_BUDGET`].
fn memory_budget(s: &str) -> Result<usize, String> {
    at_least(s, MIN_MEMORY_BUDGET)
}

/// `--listen`: an endpoint `Endpoint::parse` takes.
fn endpoint(s: &str) -> Result<Endpoint, String> {
    Endpoint::parse(s).map_err(|e| e.to_string())
}

/// `--max-frame-len`: at least [`MIN_FRAME_LEN`].
fn frame_len(s: &str) -> Result<u32, String> {
    at_least(s, MIN_FRAME_LEN)
}

impl ServeArgs {
    /// The token verifier these flags ask for, if any: with a key, tokens are required
    /// (anonymous peers only with --allow-anonymous); with only --anonymous-permissions,
    /// every peer is anonymous and restricted. `Err`: a key could not be loaded.
    fn jwt(&self) -> Result<Option<JwtAuth>, KeyError> {
        let has_key = self.auth_hs256_secret.is_some() || !self.auth_public_key.is_empty();
        if !has_key && self.anonymous_permissions.is_none() {
            return Ok(None);
        }
        let mut auth = JwtAuth::new().leeway(Duration::from_secs(self.auth_leeway_secs));
        if let Some(path) = &self.auth_hs256_secret {
            auth = auth.hmac_secret_file(path)?;
        }
        for path in &self.auth_public_key {
            auth = auth.public_key_file(path, self.auth_alg)?;
        }
        if let Some(aud) = &self.auth_audience {
            auth = auth.audience(aud);
        }
        if let Some(iss) = &self.auth_issuer {
            auth = auth.issuer(iss);
        }
        if self.allow_anonymous {
            let permissions = self
                .anonymous_permissions
                .as_ref()
                .map(|p| p.to_permissions().expect("checked when parsed"));
            auth = auth.allow_anonymous(permissions);
        }
        Ok(Some(auth))
    }

    /// The endpoints where anyone who can reach the machine can connect with no credentials
    /// at all: TCP-based endpoints not on a loopback address, when no key is configured
    /// and open access was not asked for (`--allow-anonymous`).
    fn open_to_anyone<'a>(&self, endpoints: &'a [Endpoint]) -> Vec<&'a Endpoint> {
        let has_key = self.auth_hs256_secret.is_some() || !self.auth_public_key.is_empty();
        if has_key || self.allow_anonymous {
            return Vec::new();
        }
        endpoints
            .iter()
            .filter(|e| e.tcp_addr().is_some_and(|a| !is_loopback(a)))
            .collect()
    }

    /// The library's options for these flags (without the builtins).
    fn listen_options(&self) -> ListenOptions {
        let mut opts = ListenOptions::default();
        opts.endpoints = self.listen.clone();
        if let (Some(cert_chain), Some(key)) = (&self.tls_cert, &self.tls_key) {
            opts.tls = Some(TlsFiles {
                cert_chain: cert_chain.clone(),
                key: key.clone(),
            });
        }
        opts.websocket = WebSocketOptions {
            origins: (!self.ws_origin.is_empty()).then(|| self.ws_origin.clone()),
            echo: self.ws_echo,
        };
        if let Some(n) = self.shards {
            opts.shards = n;
        }
        opts.cores = self.cores.clone();
        opts.pin = !self.no_pin;
        opts.limits.max_connections = self.max_connections;
        opts.limits.max_frame_len = self.max_frame_len;
        opts.limits.outbound_queue_bytes = self.outbound_queue_bytes;
        if let Some(b) = self.memory_budget {
            opts.limits.memory_budget = b;
        }
        opts.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        opts.heartbeat = Duration::from_millis(self.heartbeat_ms);
        opts.spin_before_park = Duration::from_micros(self.spin_us);
        opts
    }
}

/// glibc malloc, tuned so that memory the server frees goes back to the system.
///
/// Receive buffers for large frames and queued large frames are big allocations. By
/// default glibc serves those from `mmap` only until the first is freed, then raises its
/// threshold and keeps later ones in its heaps, where freed memory stays resident: after a
/// flood of partial frames was cut, the server kept its peak. A fixed threshold keeps every
/// allocation of 128 KiB or more in its own mapping, returned on free (one `mmap` and
/// `munmap` per large buffer, which is small next to filling it). Small allocations are
/// trimmed by the shards after a burst (`malloc_trim`). The library leaves the allocator to
/// the embedding program; this is the binary's choice.
fn tune_allocator() {
    // SAFETY: mallopt only changes glibc's allocation parameters; called before any
    // thread of ours exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Builtin services, so the binary is useful with no user code: RPC `echo` returns its
/// params, RPC `peers` a JSON array of the connected peer ids, RPC `callback` makes the
/// server call the caller back (see [`callback`]). They live here rather than in the
/// library so that the library carries no JSON dependency.
fn with_builtins(opts: ListenOptions) -> ListenOptions {
    opts.handle("echo", |_peer, req| async move { Ok(req.params) })
        .handle("peers", |peer, _req| async move {
            let ids = peer.connected_peers();
            Ok(Bytes::from(
                serde_json::to_vec(&ids).expect("strings serialize"),
            ))
        })
        .handle("callback", |peer, req| callback(peer, req.params))
}

/// What `callback` asks for: call `method` on me with the UTF-8 bytes of `params`.
#[derive(serde::Deserialize)]
struct CallbackRequest {
    method: String,
    #[serde(default)]
    params: String,
}

/// RPC `callback`: the server calls `method` on the *calling* peer and answers with that
/// call's result (or its failure, code and message unchanged). It lets any client, a
/// browser included, see a server-to-client call from the stock binary; it reaches only the
/// caller, so it gives a peer no power over others.
async fn callback(peer: ConnectedPeer, params: Bytes) -> Result<Bytes, RpcFailure> {
    let ask: CallbackRequest = serde_json::from_slice(&params).map_err(|e| {
        RpcFailure::code(
            Code::InvalidArgument,
            format!("callback wants {{\"method\": .., \"params\": ..}}: {e}"),
        )
    })?;
    peer.rpc()
        .call(&ask.method, ask.params.as_bytes())
        .await
        .map_err(|e| match e {
            CallError::Remote { code, message } => RpcFailure::new(code, message),
            other => RpcFailure::new(other.code(), other.to_string()),
        })
}

/// Whether `host:port` names a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
/// Anything else, the unspecified `0.0.0.0`/`::` (every interface) and host names included,
/// is taken as reachable from elsewhere.
fn is_loopback(host_port: &str) -> bool {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Say, loudly, that these endpoints take anyone (Redis's protected mode is the model:
/// an unprotected server reachable from the network is a mistake more often than a
/// choice, so the choice has to be spelled out).
fn warn_open(open: &[&Endpoint]) {
    if open.is_empty() {
        return;
    }
    let list: Vec<String> = open.iter().map(|e| e.to_string()).collect();
    let list = list.join(", ");
    tracing::warn!(endpoints = %list, "no authentication: anyone who can reach these endpoints can connect");
    eprintln!(
        "peerd: WARNING: no authentication on {list} (not loopback): anyone who can reach \
         the server there can connect, take any peer id, list every peer and broadcast to \
         everyone.\n\
         peerd: WARNING: require tokens with --auth-hs256-secret FILE or --auth-public-key FILE, \
         or pass --allow-anonymous to say open access is intended."
    );
}

/// Run the server until SIGINT/SIGTERM, then drain and stop.
pub fn serve(a: ServeArgs) -> ExitCode {
    tune_allocator();
    let mut opts = a.listen_options();
    match a.jwt() {
        Ok(Some(auth)) => {
            tracing::info!(algorithms = ?auth.algorithms(), anonymous = auth.allows_anonymous(), "connect tokens required");
            opts = opts.jwt(auth);
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("peerd: {e}");
            return ExitCode::FAILURE;
        }
    }
    let opts = with_builtins(opts);
    // Install the handlers before the shards start, so a signal that arrives during
    // start-up is seen by the loop below instead of killing the process half started.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peerd: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match listen(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peerd: {e}");
            return ExitCode::FAILURE;
        }
    };
    warn_open(&a.open_to_anyone(server.endpoints()));
    // The loadgen and the tests parse these lines (one per endpoint, in the order given;
    // the first is the one tools read); keep them byte for byte.
    for e in server.endpoints() {
        println!(
            "peerd listening on {} shards={} pid={}",
            e,
            server.shards(),
            std::process::id()
        );
    }
    let _ = std::io::stdout().flush();
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, drain_ms = a.drain_ms, "draining");
    }
    server.close_graceful(Duration::from_millis(a.drain_ms));
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
