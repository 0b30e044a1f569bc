//! The `peerd` binary: `peerd serve` runs the server; client subcommands talk to one.
//!
//! The server itself is the `peerd-server` library; this crate adds what only a program
//! needs: the command line, the builtin `echo` and `peers` RPCs, and signal handling.
//!
//! Layout: `main.rs` the command line and dispatch, `serve.rs` `peerd serve` (flags to
//! `ListenOptions`, builtins, signals, authentication flags), `client.rs` the client
//! subcommands, `token.rs` `peerd token` (sign a connect token), `logging.rs` the `tracing`
//! subscriber (stderr, `RUST_LOG`).

mod client;
mod logging;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::ClientArgs;
use crate::serve::ServeArgs;
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
    Serve(ServeArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let r = match cli.cmd {
        Cmd::Serve(a) => return serve::serve(a),
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
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerd: {e}");
            ExitCode::FAILURE
        }
    }
}
