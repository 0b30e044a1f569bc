//! The `peerd` binary: `peerd serve` runs the server; client subcommands talk to one.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use peerd_server::{listen, ListenOptions};

#[derive(Parser)]
#[command(
    name = "peerd",
    version,
    about = "A thread-per-core io_uring peer server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> ExitCode {
    let mut opts = ListenOptions::new(&a.listen);
    if let Some(n) = a.shards {
        opts.shards = n;
    }
    opts.cores = a.cores;
    opts.pin = !a.no_pin;
    opts.limits.max_connections = a.max_connections;
    opts.limits.max_frame_len = a.max_frame_len;
    opts.limits.outbound_queue_bytes = a.outbound_queue_bytes;
    opts.handshake_timeout = Duration::from_millis(a.handshake_timeout_ms);
    opts.heartbeat = Duration::from_millis(a.heartbeat_ms);
    opts.spin_before_park = Duration::from_micros(a.spin_us);
    // Built-in services, so the binary is useful with no user code.
    let opts = opts
        .handle("echo", |_peer, req| async move { Ok(req.params) })
        .handle("peers", |peer, _req| async move {
            let ids = peer.connected_peers();
            Ok(Bytes::from(
                serde_json::to_vec(&ids).expect("strings serialize"),
            ))
        });
    // Block the signals before any shard thread starts so they all inherit the mask and
    // only our signal-hook thread sees SIGINT/SIGTERM.
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
    println!(
        "peerd listening on {} shards={} pid={}",
        server.endpoint_string(),
        server.shards(),
        std::process::id()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Some(sig) = signals.forever().next() {
        eprintln!("peerd: signal {sig}, draining up to {} ms", a.drain_ms);
    }
    server.close_graceful(Duration::from_millis(a.drain_ms));
    eprintln!("peerd: stopped");
    ExitCode::SUCCESS
}
