//! peerd-loadgen: an open-loop load generator for peerd and the servers it is compared with.
//!
//! It offers a fixed rate of messages on a schedule and measures every latency from the
//! message's intended send time (wrk2's correction of coordinated omission), records full
//! HdrHistograms, sweeps rates to find the knee, reads server and loadgen CPU time, and
//! writes JSON reports, `.hgrm` percentile files and SVG plots. See loadgen/README.md.
//!
//! # Layout
//!
//! - [`cli`]: the command line (one subcommand per scenario).
//! - [`scenarios`]: target resolution (external, spawned peerd, in-process floor), roles of
//!   connections per scenario, sweeps; the `connect` and `idle` scenarios.
//! - [`engine`]: the per-thread mio event loop that sends on schedule and records answers.
//! - [`schedule`]: exact intended send times (of messages, or of writes of `--batch`
//!   messages) and measurement windows.
//! - [`adapter`]: the protocol trait and its `peerd`, `wsop`, `floor`, `redis` and `nats`
//!   implementations; `adapter::link`: TLS and WebSocket under any adapter.
//! - [`payload`]: the stamps (intended send time, sequence) every message carries.
//! - [`hist`]: histograms, percentile summaries, the `.hgrm` writer and reader.
//! - [`report`]: the JSON report and its assembly.
//! - [`output`]: terminal table, markdown, SVG plot.
//! - [`attack`]: hostile peers of one kind against the server while a well-behaved peer
//!   measures; [`soak`]: a bounded mixed run with well-behaved pub/sub checking sequence
//!   numbers; [`hostile`]: the hostile connections both use; [`sampler`]: server RSS and CPU
//!   over time.
//! - [`server`]: starting and stopping `peerd serve`.
//! - [`echo`]: the floors' blocking server (thread per connection, pinned, its threads' CPU
//!   the server CPU) and the echo floor on it; [`fanout_floor`]: the fan-out floor on it,
//!   which writes each publisher's bytes to every subscriber (`fanout --protocol floor`).
//! - [`envinfo`], [`sys`]: environment, /proc readings, pinning, limits.
//! - [`clock`]: the process clock and a nanosecond timerfd.

pub mod adapter;
pub mod attack;
pub mod cli;
pub mod clock;
pub mod echo;
pub mod engine;
pub mod envinfo;
pub mod fanout_floor;
pub mod hist;
pub mod hostile;
pub mod output;
pub mod payload;
pub mod report;
pub mod sampler;
pub mod scenarios;
pub mod schedule;
pub mod server;
pub mod soak;
pub mod sys;

use std::sync::Mutex;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Cmd};
use scenarios::Shape;

/// The arguments of the last [`main_with_args`] call, for the reports (so that a run
/// started in-process, from a test, records its own command line rather than the test's).
static COMMAND_LINE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The command line reports record.
pub fn command_line() -> Vec<String> {
    let v = COMMAND_LINE.lock().map(|v| v.clone()).unwrap_or_default();
    if v.is_empty() {
        std::env::args().collect()
    } else {
        v
    }
}

/// Parse the command line and run it.
pub fn main_with_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    if let Ok(mut v) = COMMAND_LINE.lock() {
        *v = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
    }
    let cli = Cli::parse_from(args);
    match &cli.cmd {
        Cmd::Rpc(a) => {
            scenarios::run_messages("rpc", a, Shape::default(), serde_json::to_value(a)?)
        }
        Cmd::Floor(a) => {
            scenarios::run_messages("floor", a, Shape::default(), serde_json::to_value(a)?)
        }
        Cmd::P2p(a) => {
            scenarios::run_messages("p2p", a, Shape::default(), serde_json::to_value(a)?)
        }
        Cmd::Direct(a) => {
            scenarios::run_messages("direct", a, Shape::default(), serde_json::to_value(a)?)
        }
        Cmd::Fanout(f) => scenarios::run_messages(
            "fanout",
            &f.msg,
            Shape {
                publishers: f.publishers,
                subscribers: f.subscribers,
                topics: f.topics,
                publisher_target: f.publisher_target,
            },
            serde_json::to_value(f)?,
        ),
        Cmd::Broadcast(b) => scenarios::run_messages(
            "broadcast",
            &b.msg,
            Shape {
                publishers: b.publishers,
                ..Default::default()
            },
            serde_json::to_value(b)?,
        ),
        Cmd::Connect(a) => scenarios::run_connect(a, serde_json::to_value(a)?),
        Cmd::Idle(a) => scenarios::run_idle(a, serde_json::to_value(a)?),
        Cmd::Plot(p) => scenarios::run_plot(p),
        Cmd::Attack(a) => attack::run_attack(a, serde_json::to_value(a)?),
        Cmd::Soak(s) => soak::run_soak(s, serde_json::to_value(s)?),
    }
}
