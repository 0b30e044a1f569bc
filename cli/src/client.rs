//! Client subcommands (`call`, `ping`, `pub`, `sub`, `send`, `peers`, `watch`, `signal`), on
//! the Rust client library.
//!
//! `--server`, `--ca` and `--token` have environment variables (`PEERD_SERVER`, `PEERD_CA`,
//! `PEERD_TOKEN`): where the server is, whom it is trusted through and who one is hold for
//! a whole shell session.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use peerd_client::{connect_endpoint, Endpoint, Peer, PeerOptions, PresenceEvent, SignalKind};

/// Flags every client subcommand takes.
///
/// `--server`, `--ca` and `--token` have environment variables (`PEERD_SERVER`, `PEERD_CA`,
/// `PEERD_TOKEN`): they say where the server is, whom it is trusted through and who one is
/// for a whole shell session, while `--id` is chosen per command.
#[derive(Args)]
pub struct ClientArgs {
    /// Server endpoint: host:port, tcp://host:port, unix:/path, tls://host:port,
    /// ws://host:port[/path] or wss://host:port[/path].
    #[arg(
        long,
        short = 's',
        value_name = "ENDPOINT",
        default_value = "127.0.0.1:7400",
        env = "PEERD_SERVER",
        value_parser = parse_endpoint
    )]
    server: Endpoint,
    /// CA certificate(s) to trust for tls:// and wss:// (PEM file), instead of the
    /// system's.
    #[arg(long, value_name = "FILE", env = "PEERD_CA")]
    ca: Option<PathBuf>,
    /// Peer id to connect as (default: the token's, or server-assigned).
    #[arg(long)]
    id: Option<String>,
    /// Connect token (a JWT, e.g. from `peerd token`) for a server that requires one.
    #[arg(long, value_name = "JWT", env = "PEERD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

type R = Result<(), String>;

/// A malformed endpoint is a usage error (exit status 2) naming `--server`, like every
/// other flag's nonsense value.
fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    Endpoint::parse(s).map_err(|e| e.to_string())
}

fn open(c: &ClientArgs) -> Result<Peer, String> {
    let mut o = PeerOptions::new().client_name("peerd-cli").no_reconnect();
    if let Some(id) = &c.id {
        o = o.peer_id(id.clone());
    }
    if let Some(ca) = &c.ca {
        o = o.ca_file(ca.clone());
    }
    if let Some(t) = &c.token {
        o = o.credentials(t.trim().as_bytes().to_vec());
    }
    connect_endpoint(&c.server, o).map_err(|e| format!("connecting to {}: {e}", c.server))
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

pub fn call(c: &ClientArgs, method: &str, params: &str, peer: Option<&str>, timeout_ms: u64) -> R {
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
