//! `peerd serve`: flags to `ListenOptions`, the builtin RPCs, the ready line, signals.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use peerd_server::{listen, ListenOptions};

/// `peerd serve` flags.
#[derive(Args)]
pub struct ServeArgs {
    /// host:port (port 0 = any free port) or unix:/path.
    #[arg(long, default_value = "127.0.0.1:7400", env = "PEERD_LISTEN")]
    listen: String,
    /// Number of shards (executor threads); default: one per core.
    #[arg(long)]
    shards: Option<usize>,
    /// Cores to pin shards to, e.g. 0,1 (shard i -> cores[i % len]); default: shard i on core i.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Do not pin shards to cores.
    #[arg(long)]
    no_pin: bool,
    /// Maximum concurrent connections.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Maximum frame body accepted from a peer, in bytes.
    #[arg(long, default_value_t = peerd_codec::DEFAULT_MAX_FRAME_LEN)]
    max_frame_len: u32,
    /// Bytes queued toward one peer before it is closed as a slow consumer.
    #[arg(long, default_value_t = 8 << 20)]
    outbound_queue_bytes: usize,
    /// Handshake deadline in milliseconds.
    #[arg(long, default_value_t = 5000)]
    handshake_timeout_ms: u64,
    /// Heartbeat interval in milliseconds (three silent intervals close a peer).
    #[arg(long, default_value_t = 15000)]
    heartbeat_ms: u64,
    /// Spin this many microseconds before parking an idle shard (lower latency, more CPU).
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// On SIGTERM, give in-flight handlers this many milliseconds before closing peers.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
}

impl ServeArgs {
    /// The library's options for these flags (without the builtins).
    fn listen_options(&self) -> ListenOptions {
        let mut opts = ListenOptions::new(&self.listen);
        if let Some(n) = self.shards {
            opts.shards = n;
        }
        opts.cores = self.cores.clone();
        opts.pin = !self.no_pin;
        opts.limits.max_connections = self.max_connections;
        opts.limits.max_frame_len = self.max_frame_len;
        opts.limits.outbound_queue_bytes = self.outbound_queue_bytes;
        opts.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        opts.heartbeat = Duration::from_millis(self.heartbeat_ms);
        opts.spin_before_park = Duration::from_micros(self.spin_us);
        opts
    }
}

/// Builtin services, so the binary is useful with no user code: RPC `echo` returns its
/// params, RPC `peers` a JSON array of the connected peer ids. They live here rather than
/// in the library so that the library carries no JSON dependency.
fn with_builtins(opts: ListenOptions) -> ListenOptions {
    opts.handle("echo", |_peer, req| async move { Ok(req.params) })
        .handle("peers", |peer, _req| async move {
            let ids = peer.connected_peers();
            Ok(Bytes::from(
                serde_json::to_vec(&ids).expect("strings serialize"),
            ))
        })
}

/// Run the server until SIGINT/SIGTERM, then drain and stop.
pub fn serve(a: ServeArgs) -> ExitCode {
    let opts = with_builtins(a.listen_options());
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
    // The loadgen and the tests parse this line; keep it byte for byte.
    println!(
        "peerd listening on {} shards={} pid={}",
        server.endpoint_string(),
        server.shards(),
        std::process::id()
    );
    let _ = std::io::stdout().flush();
    if let Some(sig) = signals.forever().next() {
        eprintln!("peerd: signal {sig}, draining up to {} ms", a.drain_ms);
    }
    server.close_graceful(Duration::from_millis(a.drain_ms));
    eprintln!("peerd: stopped");
    ExitCode::SUCCESS
}
