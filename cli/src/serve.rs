//! `peerd serve`: settings to `ListenOptions`, the builtin RPCs, the ready line, readiness
//! notification, signals.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::builder::BoolishValueParser;
use clap::{ArgMatches, Args};
use peerd_server::{
    listen, CallError, Code, ConnectedPeer, Endpoint, ListenError, ListenOptions, RpcFailure,
};

use crate::config::{self, ConfigError, Effective};
use crate::notify;
use crate::settings::{self, AuthSettings, Settings};
use crate::{handoff, lifecycle};

/// Exit status for a configuration refused before anything started (clap uses the same
/// for a bad flag).
const CONFIG_REFUSED: u8 = 2;

/// `peerd serve` arguments: the settings (each a flag, a `PEERD_*` variable and a key of
/// the `--config` file; see `crate::settings`), and what is not a setting.
///
/// A value that cannot work is refused before anything starts, naming the flag (clap's
/// usage error) or the key (file and line for the file), with exit status 2.
#[derive(Args)]
pub struct ServeArgs {
    /// TOML file of settings (flags and PEERD_* variables win over it); see docs/CONFIG.md.
    #[arg(long, env = "PEERD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML, with where each value came from, and
    /// exit without listening.
    #[arg(long)]
    print_config: bool,
    /// Conformance testing only: WebSocket endpoints echo every message instead of speaking
    /// peerd (for Autobahn|Testsuite). Not a setting: no config key, not printed.
    #[arg(long, env = "PEERD_WS_ECHO", hide = true, value_parser = BoolishValueParser::new())]
    ws_echo: bool,
    /// Take over from the `peerd serve` running with the same `--handoff-socket`: receive
    /// its listening sockets, serve on them, then let it drain its peers towards this
    /// process (zero-downtime restart; README "Restarts without losses").
    #[arg(long)]
    takeover: bool,
    #[command(flatten)]
    settings: Settings,
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

/// The endpoints where anyone who can reach the machine can connect with no credentials at
/// all: TCP-based endpoints not on a loopback address, when no key is configured and open
/// access was not asked for (`allow_anonymous`).
fn open_to_anyone<'a>(a: &AuthSettings, endpoints: &'a [Endpoint]) -> Vec<&'a Endpoint> {
    if a.has_key() || a.allow_anonymous {
        return Vec::new();
    }
    endpoints
        .iter()
        .filter(|e| e.tcp_addr().is_some_and(|a| !is_loopback(a)))
        .collect()
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

/// Say, loudly, that these endpoints take anyone (Redis's protected mode is the model: an
/// unprotected server reachable from the network is a mistake more often than a choice, so
/// the choice has to be spelled out).
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

/// Run the server until SIGINT/SIGTERM, then drain and stop. `matches` are `serve`'s, which
/// say where each flag's value came from.
pub fn serve(a: ServeArgs, matches: &ArgMatches) -> ExitCode {
    let eff = match config::resolve(&a.settings, matches, a.config.as_deref()) {
        Ok(eff) => eff,
        Err(e) => return refused(&e),
    };
    if a.print_config {
        return match eff.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => refused(&e),
        };
    }
    tune_allocator();
    let mut opts = eff.settings.listen_options(a.ws_echo);
    let mut auth_slot = None;
    match eff.settings.auth.verifier() {
        Ok(Some(auth)) => {
            tracing::info!(algorithms = ?auth.algorithms(), anonymous = auth.allows_anonymous(), "connect tokens required");
            let slot: lifecycle::AuthSlot = Arc::new(std::sync::RwLock::new(Arc::new(auth)));
            opts = opts.authenticate_with(lifecycle::authenticator(slot.clone()));
            auth_slot = Some(slot);
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("peerd: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut opts = with_builtins(opts);
    let signals = match lifecycle::install_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peerd: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handoff_path = eff.settings.lifecycle.handoff_socket.clone();
    let mut predecessor = None;
    if a.takeover {
        let Some(path) = &handoff_path else {
            eprintln!("peerd: --takeover needs lifecycle.handoff_socket (--handoff-socket PATH)");
            return ExitCode::from(CONFIG_REFUSED);
        };
        match handoff::Predecessor::connect(path) {
            Ok((p, listeners)) => {
                tracing::info!(
                    sockets = listeners.len(),
                    "took the predecessor's listening sockets"
                );
                opts = opts.inherit(listeners);
                predecessor = Some(p);
            }
            Err(e) => {
                eprintln!("peerd: takeover failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Bound before the server starts: a taken admin address stops everything here.
    let admin = match eff
        .settings
        .admin
        .listen
        .map(crate::admin::bind)
        .transpose()
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("peerd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match listen(opts) {
        Ok(s) => Arc::new(s),
        Err(e) => return listen_failed(&eff, e),
    };
    warn_open(&open_to_anyone(&eff.settings.auth, server.endpoints()));
    // The loadgen and the tests parse these lines (one per endpoint, in the order given;
    // the first is the one tools read); keep them byte for byte.
    let endpoints: Vec<String> = server.endpoints().iter().map(|e| e.to_string()).collect();
    for e in &endpoints {
        println!(
            "peerd listening on {} shards={} pid={}",
            e,
            server.shards(),
            std::process::id()
        );
    }
    if let Some(c) = server.cluster() {
        println!(
            "peerd cluster node={} epoch={:016x} nodes={}",
            c.node_id, c.epoch, c.nodes
        );
    }
    if let Some(l) = admin {
        let addr = l
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        if let Err(e) = crate::admin::spawn(l, server.clone()) {
            eprintln!("peerd: {e}");
            server.close();
            return ExitCode::FAILURE;
        }
        // After the endpoints' lines, which tools read first; the port is the one bound.
        println!("peerd admin on http://{addr}/ pid={}", std::process::id());
    }
    let (tx, events) = std::sync::mpsc::channel();
    let mut socket_file = None;
    if let Some(path) = &handoff_path {
        if let Some(p) = predecessor {
            // The predecessor drains from here on; we serve what it still accepts.
            if let Err(e) = p.ready(server.clone()) {
                tracing::warn!(error = %e, "the predecessor went away during the takeover");
            }
        }
        let (handed_tx, handed) = std::sync::mpsc::channel();
        match handoff::HandoffListener::bind(path, a.takeover) {
            Ok(l) => socket_file = Some(l.spawn(server.clone(), handed_tx)),
            Err(e) => {
                eprintln!("peerd: {e}");
                server.close();
                return ExitCode::FAILURE;
            }
        }
        let tx = tx.clone();
        let _ = std::thread::Builder::new()
            .name("peerd-handed".into())
            .spawn(move || {
                if handed.recv().is_ok() {
                    let _ = tx.send(lifecycle::Event::HandedOver);
                }
            });
    }
    lifecycle::forward_signals(signals, server.clone(), tx);
    let _ = std::io::stdout().flush();
    // After the ready lines: whoever waits on either sees the same moment.
    notify::ready(&format!("listening on {}", endpoints.join(", ")));
    let reload = lifecycle::Reload {
        cli: &a.settings,
        matches,
        file: a.config.as_deref(),
        auth: auth_slot,
    };
    lifecycle::run(&server, eff, reload, events);
    drop(socket_file);
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Report a refused configuration; exit status 2.
fn refused(e: &ConfigError) -> ExitCode {
    eprintln!("peerd: {e}");
    ExitCode::from(CONFIG_REFUSED)
}

/// Report a failed `listen()`: an option it refused as the setting's key (exit status 2),
/// anything else (address in use, io_uring, memlock) as it says (exit status 1).
fn listen_failed(eff: &Effective, e: ListenError) -> ExitCode {
    if let ListenError::InvalidOptions { option, reason } = &e {
        if let Some(key) = settings::key_of_option(option) {
            return refused(&eff.invalid(key, reason.clone()));
        }
    }
    eprintln!("peerd: {e}");
    ExitCode::FAILURE
}
