//! Logging: `tracing` events from peerd and its libraries, as text lines on stderr.
//!
//! `RUST_LOG` picks what is shown, in `tracing_subscriber::EnvFilter` syntax (`debug`,
//! `peerd_server=debug`, `warn,peerd_server::shard=trace`, ...). Unset or empty, it is
//! [`DEFAULT_FILTER`]: peerd's own crates at `info`, everything else (glommio, through its
//! `log` records, included) at `warn`. stdout is left to the ready line and to the client
//! subcommands' output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is unset or empty. `peerd` is this binary's own target.
pub const DEFAULT_FILTER: &str =
    "warn,peerd=info,peerd_server=info,peerd_client=info,peerd_codec=info";

/// Install the stderr subscriber. An unparsable `RUST_LOG` is reported and replaced by
/// the default rather than refused: logging must not keep a server from starting.
pub fn init() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => EnvFilter::try_new(&s).unwrap_or_else(|e| {
            eprintln!("peerd: ignoring RUST_LOG={s:?} ({e}); using {DEFAULT_FILTER:?}");
            EnvFilter::new(DEFAULT_FILTER)
        }),
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
