//! The `peerd` binary: `peerd serve` runs the server; client subcommands talk to one.
//!
//! The server itself is the `peerd-server` library; this crate adds what only a program
//! needs: the command line and config file, the builtin `echo` and `peers` RPCs, signal
//! handling and systemd readiness.
//!
//! Layout: `main.rs` the command line and dispatch, `serve.rs` `peerd serve` (settings to
//! `ListenOptions`, builtins, signals, authentication), `settings.rs` every setting of
//! `serve` (key, flag, variable, default, help: how to add one is there), `config.rs`
//! merging them from the file, the environment and flags, and `--print-config`,
//! `notify.rs` sd_notify, `admin.rs` the admin HTTP listener of `serve --admin` (metrics,
//! health, readiness), `stats.rs` `peerd stats` (a summary of an admin listener's
//! metrics), `token.rs` `peerd token` (sign a connect token), `client.rs` the client
//! subcommands, `logging.rs` the `tracing` subscriber (stderr, `RUST_LOG`).

mod admin;
mod client;
mod config;
mod handoff;
mod lifecycle;
mod logging;
mod notify;
mod serve;
mod settings;
mod stats;
mod token;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::ClientArgs;
use crate::serve::ServeArgs;
use crate::stats::StatsArgs;
use crate::token::TokenArgs;

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
    // Boxed: the settings are by far the largest variant (clippy: large_enum_variant).
    Serve(Box<ServeArgs>),
    /// Sign a connect token (JWT) for a peer id and print it, for `--token` / PEERD_TOKEN.
    Token(TokenArgs),
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
    /// Print a summary of a server's metrics, read from its admin listener
    /// (`peerd serve --admin`).
    Stats(StatsArgs),
}

fn main() -> ExitCode {
    // Matches kept, not just the parsed struct: `serve` asks them where each value came
    // from (flag, environment or default) to merge its config file under flags and env.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    logging::init();
    let r = match cli.cmd {
        Cmd::Serve(a) => {
            let m = matches
                .subcommand_matches("serve")
                .expect("the serve subcommand");
            return serve::serve(*a, m);
        }
        Cmd::Token(a) => token::token(&a),
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
        Cmd::Stats(a) => stats::stats(&a).map_err(|e| e.to_string()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerd: {e}");
            ExitCode::FAILURE
        }
    }
}
