//! Server errors, typed by layer.
//!
//! - [`ListenError`]: `listen()` could not start (bad address, port taken, io_uring or
//!   memlock unavailable). Local environment at fault; the message names the fix.
//! - [`CallError`]: a server -> peer RPC failed (the peer answered with an error, went away,
//!   or the deadline passed).
//! - [`SendError`]: a frame could not be queued to a peer (closed, or too large).
//! - [`MetricsError`]: a metrics snapshot could not be taken (closed, or asked from a
//!   shard's own thread).
//! - `Refused` (crate-internal): what the server answers a peer's frame that it will not
//!   carry out, with the wire code: sent back as Status, RpcError or, for a protocol
//!   violation, Close. Every arm of the dispatch table refuses with this one type.

use std::borrow::Cow;
use std::path::PathBuf;

use peerd_codec::handshake::Refusal;
use peerd_codec::{Code, EncodeError, WireError};

/// `listen()` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The cluster could not be joined (`ListenOptions::cluster`): NATS unreachable,
    /// JetStream off, a bad URL or node id.
    #[error("cannot join the cluster: {detail}")]
    Cluster {
        /// What failed, and what to do about it.
        detail: String,
    },
    /// The address is already bound by another socket (EADDRINUSE).
    #[error(
        "address {addr} is already in use (another peerd or another program is listening there)"
    )]
    AddrInUse {
        /// The address asked for.
        addr: String,
    },
    /// Binding or listening on the address failed for another reason.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The address string is not `host:port` or resolves to nothing.
    #[error("invalid listen address {addr:?}: {reason}")]
    BadAddress {
        /// What was given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// A Unix socket path is in use by a live listener.
    #[error("unix socket {path} is in use by a running server")]
    UnixPathInUse {
        /// The path.
        path: PathBuf,
    },
    /// io_uring cannot be used on this machine.
    #[error(
        "io_uring is unavailable: {detail}. peerd needs io_uring (Linux >= 5.8); \
             check `sysctl kernel.io_uring_disabled` (must be 0, or 1 with this user in \
             the io_uring group) and container seccomp profiles"
    )]
    IoUringUnavailable {
        /// What was observed.
        detail: String,
    },
    /// The locked-memory limit is too low for the io_uring rings.
    #[error(
        "locked-memory limit too low: {detail}. Raise it: `ulimit -l 65536` in the \
             shell, `LimitMEMLOCK=64M` in a systemd unit, or `--ulimit memlock=67108864` \
             for docker"
    )]
    MemlockTooLow {
        /// What was observed.
        detail: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// An option cannot work (zero shards, a core that does not exist, ...).
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// The `ListenOptions` field at fault, as its Rust path (`shards`, `cores`,
        /// `limits.max_frame_len`, ...): a program that built the options from settings of
        /// its own (the `peerd` binary from its config keys) names its setting with it.
        option: &'static str,
        /// Why, naming the option.
        reason: String,
    },
    /// A shard thread could not be started.
    #[error("starting shard {shard}: {detail}")]
    Shard {
        /// Shard index.
        shard: usize,
        /// What failed.
        detail: String,
    },
}

/// [`PeerServer::metrics`](crate::PeerServer::metrics) could not take a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The server was closed: its shards are gone.
    #[error("the server is closed")]
    Closed,
    /// Called on one of the server's own shard threads, which would have to answer the
    /// scrape while blocked waiting for it.
    #[error("metrics() cannot be called from one of the server's own shards")]
    OnOwnShard,
}

/// A server -> peer call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The peer answered with RpcError.
    #[error("peer answered {}: {message}", Code::describe(*code))]
    Remote {
        /// The code it sent.
        code: u16,
        /// Its message.
        message: String,
    },
    /// The peer disconnected before answering.
    #[error("peer gone before answering")]
    PeerGone,
    /// No answer before the deadline.
    #[error("no answer within the deadline")]
    Timeout,
    /// The call could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
}

impl CallError {
    /// The protocol code for this failure, as a caller across the wire would see it.
    pub fn code(&self) -> u16 {
        match self {
            CallError::Remote { code, .. } => *code,
            CallError::PeerGone => Code::PeerGone.as_u16(),
            CallError::Timeout => Code::Timeout.as_u16(),
            CallError::Send(SendError::Closed) => Code::PeerGone.as_u16(),
            CallError::Send(_) => Code::Internal.as_u16(),
        }
    }
}

/// A frame could not be queued toward a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed or closing.
    #[error("connection closed")]
    Closed,
    /// The message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Too many calls in flight toward this peer.
    #[error("too many calls in flight")]
    TooManyInFlight,
}

/// What an RPC handler returns on failure: a code (a protocol [`Code`] or an application
/// code in 4000-4999) and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({code}): {message}", Code::describe(*code))]
pub struct RpcFailure {
    /// The code sent in RpcError.
    pub code: u16,
    /// The message sent in RpcError.
    pub message: String,
}

impl RpcFailure {
    /// A failure with an application code (4000-4999 by convention).
    pub fn new(code: u16, message: impl Into<String>) -> RpcFailure {
        RpcFailure {
            code,
            message: message.into(),
        }
    }

    /// A failure with a protocol code.
    pub fn code(code: Code, message: impl Into<String>) -> RpcFailure {
        RpcFailure::new(code.as_u16(), message)
    }
}

impl From<CallError> for RpcFailure {
    fn from(e: CallError) -> RpcFailure {
        RpcFailure::new(e.code(), e.to_string())
    }
}

/// A peer's frame refused: the code and reason the peer gets back. The peer is at fault
/// (bad name, limit reached, not a member, ...) or the server cannot serve it now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", Code::describe(code.as_u16()))]
pub(crate) struct Refused {
    /// The wire code.
    pub code: Code,
    /// Why, for the peer.
    pub reason: Cow<'static, str>,
    /// A protocol violation: the connection is closed with `code` instead of answered.
    pub closes: bool,
}

impl Refused {
    /// Answer the frame with `code` and go on.
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Refused {
        Refused {
            code,
            reason: reason.into(),
            closes: false,
        }
    }

    /// Close the connection with `code`.
    pub fn close(code: Code, reason: impl Into<Cow<'static, str>>) -> Refused {
        Refused {
            closes: true,
            ..Refused::new(code, reason)
        }
    }
}

impl From<WireError> for Refused {
    /// Bytes that are not a valid frame close the connection.
    fn from(e: WireError) -> Refused {
        Refused::close(e.code(), e.to_string())
    }
}

impl From<EncodeError> for Refused {
    /// What the peer asked for does not fit in a frame (a relayed message grown past the
    /// format's limit by the ids and names the server adds).
    fn from(e: EncodeError) -> Refused {
        Refused::new(Code::TooLarge, e.to_string())
    }
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Refused {
        Refused::close(r.code, r.reason)
    }
}
