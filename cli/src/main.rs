//! The `peerd` binary: `peerd serve` runs the server; client subcommands talk to one.
//!
//! The server itself is the `peerd-server` library; this crate adds what only a program
//! needs: the command line, the builtin `echo` and `peers` RPCs, and signal handling.

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
    /// Call an RPC method and print the result (exit status 1 on an error answer).
    Call {
        #[command(flatten)]
        c: ClientArgs,
        /// Method name (the server has `echo` and `peers` built in).
        method: String,
        /// Parameters (UTF-8 text; `-` reads stdin).
        #[arg(default_value = "")]
        params: String,
        /// Call this peer through the server instead of the server itself.
        #[arg(long)]
        peer: Option<String>,
        /// Deadline in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Measure round trips (Ping/Pong) to the server.
    Ping {
        #[command(flatten)]
        c: ClientArgs,
        /// Number of pings.
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Publish a message on a topic.
    Pub {
        #[command(flatten)]
        c: ClientArgs,
        /// Topic.
        topic: String,
        /// Message (`-` reads stdin).
        message: String,
    },
    /// Join a topic and print messages as they arrive.
    Sub {
        #[command(flatten)]
        c: ClientArgs,
        /// Topic.
        topic: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send a message to one member of a topic.
    Send {
        #[command(flatten)]
        c: ClientArgs,
        /// Topic.
        topic: String,
        /// Receiving peer id.
        to: String,
        /// Message (`-` reads stdin).
        message: String,
    },
    /// List connected peers, or the members of a topic.
    Peers {
        #[command(flatten)]
        c: ClientArgs,
        /// Only members of this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Print presence: current members as joins, then joins and leaves as they happen.
    Watch {
        #[command(flatten)]
        c: ClientArgs,
        /// Watch one topic instead of every connected peer.
        #[arg(long)]
        topic: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// WebRTC signaling relay: send one signal, or wait for signals in a room.
    Signal {
        #[command(flatten)]
        c: ClientArgs,
        /// Room (a topic) to signal in.
        #[arg(long)]
        room: String,
        /// offer | answer | candidate | bye | wait
        action: String,
        /// Target peer (required for answer/candidate/bye; an offer without it goes to
        /// the whole room).
        #[arg(long)]
        to: Option<String>,
        /// Payload (SDP or candidate; `-` reads stdin, `@FILE` reads a file).
        #[arg(default_value = "")]
        payload: String,
        /// For `wait`: exit after this many signals.
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
}

#[derive(Args)]
struct ClientArgs {
    /// Server address (host:port).
    #[arg(
        long,
        short = 's',
        default_value = "127.0.0.1:7400",
        env = "PEERD_SERVER"
    )]
    server: String,
    /// Peer id to connect as (default: server-assigned).
    #[arg(long)]
    id: Option<String>,
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
    let r = match cli.cmd {
        Cmd::Serve(a) => return serve(a),
        Cmd::Call {
            c,
            method,
            params,
            peer,
            timeout_ms,
        } => client::call(&c, &method, &params, peer.as_deref(), timeout_ms),
        Cmd::Ping { c, count } => client::ping(&c, count),
        Cmd::Pub { c, topic, message } => client::publish(&c, &topic, &message),
        Cmd::Sub { c, topic, count } => client::sub(&c, &topic, count),
        Cmd::Send {
            c,
            topic,
            to,
            message,
        } => client::send(&c, &topic, &to, &message),
        Cmd::Peers { c, topic } => client::peers(&c, topic.as_deref()),
        Cmd::Watch { c, topic, count } => client::watch(&c, topic.as_deref(), count),
        Cmd::Signal {
            c,
            room,
            action,
            to,
            payload,
            count,
        } => client::signal(&c, &room, &action, to.as_deref(), &payload, count),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Client subcommands, on the Rust client library.
mod client {
    use std::io::{Read, Write};
    use std::time::Duration;

    use peerd_client::{connect, Peer, PeerOptions, PresenceEvent, SignalKind};

    use super::ClientArgs;

    type R = Result<(), String>;

    fn open(c: &ClientArgs) -> Result<Peer, String> {
        let mut o = PeerOptions::new().client_name("peerd-cli").no_reconnect();
        if let Some(id) = &c.id {
            o = o.peer_id(id.clone());
        }
        connect(c.server.as_str(), o).map_err(|e| format!("connecting to {}: {e}", c.server))
    }

    fn arg_bytes(s: &str) -> Result<Vec<u8>, String> {
        if s == "-" {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| e.to_string())?;
            Ok(v)
        } else if let Some(path) = s.strip_prefix('@') {
            std::fs::read(path).map_err(|e| format!("{path}: {e}"))
        } else {
            Ok(s.as_bytes().to_vec())
        }
    }

    fn print_bytes(b: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b);
        if !b.ends_with(b"\n") {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    pub fn call(
        c: &ClientArgs,
        method: &str,
        params: &str,
        peer: Option<&str>,
        timeout_ms: u64,
    ) -> R {
        let p = open(c)?;
        let params = arg_bytes(params)?;
        let t = Duration::from_millis(timeout_ms);
        let r = p.rpc().call_to(peer, method, &params, t);
        let out = r.map_err(|e| format!("{method}: {e}"))?;
        print_bytes(&out);
        p.disconnect();
        Ok(())
    }

    pub fn ping(c: &ClientArgs, count: u32) -> R {
        let p = open(c)?;
        for i in 0..count {
            let rtt = p.ping(Duration::from_secs(5)).map_err(|e| e.to_string())?;
            println!(
                "pong from {}: seq={i} time={:.1} us",
                c.server,
                rtt.as_secs_f64() * 1e6
            );
            if i + 1 < count {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        p.disconnect();
        Ok(())
    }

    pub fn publish(c: &ClientArgs, topic: &str, message: &str) -> R {
        let p = open(c)?;
        let m = arg_bytes(message)?;
        p.publish_confirmed(topic, &m, false)
            .map_err(|e| e.to_string())?;
        p.disconnect();
        Ok(())
    }

    pub fn sub(c: &ClientArgs, topic: &str, count: Option<u64>) -> R {
        let p = open(c)?;
        let rx = p.subscribe(topic);
        p.join(topic).map_err(|e| e.to_string())?;
        eprintln!("joined {topic} as {}", p.peer_id().unwrap_or_default());
        let mut n = 0;
        while count.is_none_or(|c| n < c) {
            let m = rx.recv().map_err(|_| "connection closed".to_string())?;
            let kind = if m.direct { " (direct)" } else { "" };
            println!("{}{kind}: {}", m.from, String::from_utf8_lossy(&m.payload));
            n += 1;
        }
        p.disconnect();
        Ok(())
    }

    pub fn send(c: &ClientArgs, topic: &str, to: &str, message: &str) -> R {
        let p = open(c)?;
        let m = arg_bytes(message)?;
        p.send_confirmed(topic, to, &m).map_err(|e| e.to_string())?;
        p.disconnect();
        Ok(())
    }

    pub fn peers(c: &ClientArgs, topic: Option<&str>) -> R {
        let p = open(c)?;
        for id in p.list_peers(topic).map_err(|e| e.to_string())? {
            println!("{id}");
        }
        p.disconnect();
        Ok(())
    }

    pub fn watch(c: &ClientArgs, topic: Option<&str>, count: Option<u64>) -> R {
        let p = open(c)?;
        let w = p.watch(topic).map_err(|e| e.to_string())?;
        let mut n = 0;
        while count.is_none_or(|c| n < c) {
            match w.recv() {
                Some(PresenceEvent::Join(id)) => println!("join {id}"),
                Some(PresenceEvent::Leave(id)) => println!("leave {id}"),
                None => return Err("connection closed".into()),
            }
            n += 1;
        }
        p.disconnect();
        Ok(())
    }

    pub fn signal(
        c: &ClientArgs,
        room: &str,
        action: &str,
        to: Option<&str>,
        payload: &str,
        count: u64,
    ) -> R {
        let p = open(c)?;
        let rx = p.subscribe_signals();
        p.join(room).map_err(|e| e.to_string())?;
        let kind = match action {
            "offer" => SignalKind::Offer,
            "answer" => SignalKind::Answer,
            "candidate" => SignalKind::Candidate,
            "bye" => SignalKind::Bye,
            "wait" => {
                eprintln!("waiting in {room} as {}", p.peer_id().unwrap_or_default());
                for _ in 0..count {
                    let s = rx.recv().map_err(|_| "connection closed".to_string())?;
                    eprintln!(
                        "{:?} from {}",
                        s.kind,
                        s.from.as_deref().unwrap_or("server")
                    );
                    print_bytes(&s.payload);
                }
                p.disconnect();
                return Ok(());
            }
            other => {
                return Err(format!(
                    "unknown signal action {other:?} (offer|answer|candidate|bye|wait)"
                ))
            }
        };
        let data = arg_bytes(payload)?;
        p.signal_confirmed(room, kind, to, &data)
            .map_err(|e| e.to_string())?;
        p.disconnect();
        Ok(())
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
