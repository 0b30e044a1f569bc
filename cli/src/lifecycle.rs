//! `peerd serve` after start-up: signals, reloading, draining, handing over.
//!
//! - SIGHUP: reload the configuration file and apply what can change in place: the TLS
//!   certificate and key, the token keys (`[auth]`: keys, audience, issuer, leeway,
//!   anonymous permissions) and the limits (`PeerServer::set_limits` says which). Settings that need new sockets or shards are named in a
//!   warning (restart with `--takeover` to apply them). No connection is dropped.
//! - SIGTERM, or a successor that took the listening sockets (`crate::handoff`): drain
//!   (lame duck: not ready, peers asked to reconnect over `lifecycle.drain_window_ms`), exit
//!   0 when every peer is gone or at the deadline. A second SIGTERM or SIGINT stops at once.
//! - SIGINT: a quick stop (handlers get `timeouts.drain_ms`), for a terminal's Ctrl-C.

use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use clap::ArgMatches;
use peerd_server::jwt::JwtAuth;
use peerd_server::{PeerServer, TlsFiles};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::{self, Effective};
use crate::notify;
use crate::settings::Settings;

/// What the main thread waits for.
pub enum Event {
    Signal(i32),
    /// A successor took the sockets: drain towards it.
    HandedOver,
}

/// The token verifier in use, replaceable on SIGHUP (the server holds a closure that reads
/// it for each Hello and Refresh).
pub type AuthSlot = Arc<RwLock<Arc<JwtAuth>>>;

/// What a reload needs to rebuild the settings as at start.
pub struct Reload<'a> {
    pub cli: &'a Settings,
    pub matches: &'a ArgMatches,
    pub file: Option<&'a std::path::Path>,
    pub auth: Option<AuthSlot>,
}

/// Run until stopped (see the module doc). `events` carries signals and the handoff.
pub fn run(
    server: &Arc<PeerServer>,
    mut eff: Effective,
    reload: Reload<'_>,
    events: mpsc::Receiver<Event>,
) {
    loop {
        let Ok(event) = events.recv() else { return };
        match event {
            Event::Signal(SIGHUP) => {
                if let Some(next) = reload_settings(server, &eff, &reload) {
                    eff = next;
                }
            }
            Event::Signal(SIGINT) => {
                let drain_ms = eff.settings.timeouts.drain_ms;
                tracing::info!(drain_ms, "SIGINT: stopping");
                notify::stopping();
                server.close_graceful(Duration::from_millis(drain_ms));
                return;
            }
            Event::Signal(_) | Event::HandedOver => {
                notify::stopping();
                let report = server.drain(eff.settings.drain_options());
                if report.remaining > 0 {
                    tracing::warn!(
                        remaining = report.remaining,
                        "drain deadline reached; the peers left were closed with shutdown"
                    );
                }
                return;
            }
        }
    }
}

/// Forward SIGTERM, SIGINT and SIGHUP to `tx`. During a drain the main thread is busy, so a
/// second SIGTERM or SIGINT closes the server from here (the drain then returns).
pub fn forward_signals(
    mut signals: signal_hook::iterator::Signals,
    server: Arc<PeerServer>,
    tx: mpsc::Sender<Event>,
) {
    let spawned = std::thread::Builder::new()
        .name("peerd-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for sig in signals.forever() {
                if stopping && sig != SIGHUP {
                    tracing::info!(signal = sig, "second stop signal: closing now");
                    server.close();
                    return;
                }
                stopping |= sig != SIGHUP;
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the signal thread");
    }
}

/// SIGHUP: re-read the settings, apply what can change in place, name what cannot. `None`
/// (and the old settings stay) when the new ones are refused.
fn reload_settings(server: &PeerServer, eff: &Effective, r: &Reload<'_>) -> Option<Effective> {
    tracing::info!("SIGHUP: reloading the configuration");
    let next = match config::resolve(r.cli, r.matches, r.file) {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; keeping the running configuration");
            return None;
        }
    };
    let (old, new) = (&eff.settings, &next.settings);
    if let (Some(cert_chain), Some(key)) = (&new.tls.cert, &new.tls.key) {
        let files = TlsFiles {
            cert_chain: cert_chain.clone(),
            key: key.clone(),
        };
        if let Err(e) = server.reload_tls(&files) {
            tracing::error!(error = %e, "TLS reload failed; the old certificate stays");
        }
    }
    match (&r.auth, crate::serve::jwt(&new.auth)) {
        (Some(slot), Ok(Some(auth))) => {
            *slot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
            tracing::info!("token keys reloaded");
        }
        (_, Err(e)) => tracing::error!(error = %e, "token keys not reloaded; the old ones stay"),
        (None, Ok(None)) => {}
        (Some(_), Ok(None)) | (None, Ok(Some(_))) => tracing::warn!(
            "turning authentication on or off needs a restart (peerd serve --takeover)"
        ),
    }
    if new.limits != old.limits {
        match server.set_limits(new.listen_options(false).limits) {
            Ok(()) => tracing::info!("limits reloaded"),
            Err(e) => tracing::error!(error = %e, "limits not reloaded; the old ones stay"),
        }
    }
    let fixed = needs_restart(old, new);
    if !fixed.is_empty() {
        tracing::warn!(
            keys = %fixed.join(", "),
            "these settings changed but apply only to a new process: restart with peerd serve --takeover"
        );
    }
    Some(next)
}

/// The keys whose change a reload cannot apply: everything but `[tls]`, `[auth]` and
/// `[limits]` (whose refusals `set_limits` names itself).
fn needs_restart(old: &Settings, new: &Settings) -> Vec<String> {
    let flat = |s: &Settings| -> Vec<(String, serde_json::Value)> {
        let v = serde_json::to_value(s).expect("settings serialize");
        let mut out = Vec::new();
        if let serde_json::Value::Object(sections) = v {
            for (section, keys) in sections {
                if let serde_json::Value::Object(keys) = keys {
                    for (k, v) in keys {
                        out.push((format!("{section}.{k}"), v));
                    }
                }
            }
        }
        out
    };
    let (a, b) = (flat(old), flat(new));
    a.iter()
        .zip(&b)
        .filter(|((k, x), (_, y))| {
            x != y
                && !["tls.", "auth.", "limits."]
                    .iter()
                    .any(|p| k.starts_with(p))
        })
        .map(|((k, _), _)| k.clone())
        .collect()
}

/// Turn the verifier in `slot` into the server's authenticator.
pub fn authenticator(
    slot: AuthSlot,
) -> impl Fn(&peerd_server::AuthRequest<'_>) -> Result<peerd_server::Grant, peerd_server::Denied>
       + Send
       + Sync
       + 'static {
    move |r| {
        let auth = slot.read().unwrap_or_else(|e| e.into_inner()).clone();
        auth.authenticate(r)
    }
}

/// The signals `peerd serve` handles, installed before the shards start so that one that
/// arrives during start-up is not lost (nor kills the process half started).
pub fn install_signals() -> std::io::Result<signal_hook::iterator::Signals> {
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
}
