//! Errors, typed by layer: [`ClientError`] for connecting and the session as a whole,
//! [`CallError`] for RPC, [`RequestError`] for every other request (Status-confirmed or
//! fire-and-forget). Each says who is at fault: the remote end (a code it sent), the
//! transport, or the local caller (bad argument, message too large).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use peerd_codec::{Code, EncodeError, WireError};

/// Connecting, handshaking, or waiting for the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address did not resolve to any socket address.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// What the resolver said.
        #[source]
        source: io::Error,
    },
    /// TCP connect or a socket read/write failed.
    #[error("connecting to {addr}: {source}")]
    Io {
        /// The address that was tried last.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Connecting to a Unix socket, or a read/write on one, failed.
    #[error("connecting to unix:{}: {source}", path.display())]
    UnixIo {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The endpoint string is not one this client understands.
    #[error("invalid endpoint {endpoint}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given (its `Debug` form: a string is quoted).
        endpoint: String,
        /// What is wrong with it.
        #[source]
        source: crate::endpoint::EndpointError,
    },
    /// The TLS handshake failed, or the TLS session broke: an untrusted or mismatched
    /// certificate, no common protocol version or cipher suite, an alert from the server.
    #[error("TLS with {name} at {addr}: {source}")]
    Tls {
        /// The name the server's certificate was checked against (the endpoint's host).
        name: String,
        /// The server's address.
        addr: SocketAddr,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The WebSocket upgrade failed: the server answered with an HTTP status other than
    /// 101 (a peerd server's body says what to fix: the path, the subprotocol), or not
    /// with a valid acceptance of subprotocol `peerd.v1`.
    #[error("WebSocket upgrade at {addr}: {source}")]
    Upgrade {
        /// The server's address.
        addr: SocketAddr,
        /// What was wrong with the response.
        #[source]
        source: crate::UpgradeError,
    },
    /// The TLS options cannot be used (a CA file that cannot be read or holds no
    /// certificate, no system CA certificates found). Local misuse: fix the options.
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// TCP connect did not complete within `connect_timeout` (for every address tried).
    #[error("connect to {addr} timed out")]
    ConnectTimeout {
        /// The address that was tried last.
        addr: SocketAddr,
    },
    /// No Welcome arrived within `handshake_timeout`.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The server refused the session: a Reject frame, or a Close during the handshake.
    #[error("rejected by server: {} ({code}): {reason}", Code::describe(*code))]
    Rejected {
        /// A [`Code`] number (`Unauthorized`, `PeerIdTaken`, `Overloaded`, ...).
        code: u16,
        /// The server's detail.
        reason: String,
    },
    /// The server closed the connection during the handshake without a Reject or Close.
    #[error("server closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// The server sent bytes that are not a valid frame.
    #[error("invalid frame from server: {0}")]
    Wire(#[from] WireError),
    /// The server sent a valid frame that breaks the handshake rules (a frame other than
    /// Welcome/Reject first, or a protocol version this client does not speak).
    #[error("handshake protocol violation: {0}")]
    Protocol(String),
    /// The options cannot be used (an invalid declared peer id, Hello too large, ...).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// `connect()` on a peer that is not idle (already connected, or closed).
    #[error("peer is already {0}")]
    NotIdle(crate::State),
    /// The peer is closed (after `disconnect()`, a replaced session, or reconnect gave up).
    #[error("peer is closed")]
    Closed,
    /// `when_ready` ran out of time.
    #[error("timed out waiting for the session to become active")]
    Timeout,
}

impl ClientError {
    /// The server's code when the server refused the session.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying later cannot help: the server refused who we are or how we speak,
    /// not how busy it is. Reconnect gives up on these.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Rejected { code, .. } => permanent_code(*code),
            // A 4xx says the request is wrong (path, subprotocol, origin), which a retry
            // does not change; a 5xx (a proxy whose backend is restarting) may pass.
            ClientError::Upgrade { source, .. } => match source {
                crate::UpgradeError::Status { status, .. } => {
                    (400..500).contains(status) && !matches!(status, 408 | 429)
                }
                _ => true,
            },
            ClientError::Protocol(_)
            | ClientError::InvalidOptions(_)
            | ClientError::InvalidEndpoint { .. }
            | ClientError::TlsSetup(_)
            | ClientError::Closed => true,
            _ => false,
        }
    }
}

/// Codes after which reconnecting with the same Hello cannot succeed.
pub(crate) fn permanent_code(code: u16) -> bool {
    matches!(
        Code::from_u16(code),
        Some(
            Code::Unauthorized
                | Code::PeerIdTaken
                | Code::UnsupportedVersion
                | Code::InvalidArgument
                | Code::BadFrame
                | Code::TooLarge
        )
    )
}

/// An RPC call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The callee, or the server on its behalf, answered RpcError: `MethodNotFound`,
    /// `UnknownPeer`, `PeerGone`, `Timeout` (the server's deadline), or an application code
    /// in 4000-4999 chosen by the handler.
    #[error("remote error {} ({code}): {message}", Code::describe(*code))]
    Remote {
        /// A [`Code`] number or an application code.
        code: u16,
        /// The remote's detail.
        message: String,
    },
    /// No answer before the local deadline.
    #[error("call timed out")]
    Timeout,
    /// The connection dropped while the call was pending. The call may or may not have run.
    #[error("connection lost while the call was pending")]
    ConnectionLost,
    /// No session yet (made before the first `connect()` completed), or reconnect or the
    /// reconnect queue is disabled; it was not sent. While reconnecting, calls are queued
    /// instead ([`PeerOptions::reconnect_queue_timeout`](crate::PeerOptions)).
    #[error("not connected")]
    NotConnected,
    /// The peer is closed; it will not connect again. A call still in the reconnect queue
    /// when the peer closes (`disconnect()`, a final close, reconnect gave up) fails with
    /// this too: it was never sent.
    #[error("peer is closed")]
    Closed,
    /// The request does not fit the server's frame limit (local misuse).
    #[error("cannot encode request: {0}")]
    Encode(#[from] EncodeError),
    /// A method name or peer id the protocol does not allow (local misuse).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Made while reconnecting, and the reconnect queue was full
    /// ([`PeerOptions::reconnect_queue_frames`](crate::PeerOptions) or
    /// `reconnect_queue_bytes`): not queued, not sent.
    #[error("not sent: the reconnect queue is full")]
    QueueFull,
    /// Made while reconnecting, and still queued when
    /// [`PeerOptions::reconnect_queue_timeout`](crate::PeerOptions) ran out: never sent.
    #[error("not sent: still queued when the reconnect queue timeout ran out")]
    QueueTimeout,
}

impl CallError {
    /// The remote code, if the remote answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            CallError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The remote code as a known [`Code`], if it is one.
    pub fn known_code(&self) -> Option<Code> {
        self.code().and_then(Code::from_u16)
    }
}

/// A non-RPC request failed: join, leave, publish, send, watch, list_peers, signal, emit,
/// broadcast, ping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The server answered Status with a non-zero code (`NotMember`, `UnknownPeer`,
    /// `LimitExceeded`, `InvalidArgument`, ...).
    #[error("server refused: {} ({code}): {message}", Code::describe(*code))]
    Rejected {
        /// A [`Code`] number.
        code: u16,
        /// The server's detail.
        message: String,
    },
    /// No answer before the local deadline.
    #[error("request timed out")]
    Timeout,
    /// The connection dropped before the answer arrived (or while writing).
    #[error("connection lost")]
    ConnectionLost,
    /// No session yet (before the first `connect()` completed), or reconnect or the
    /// reconnect queue is disabled, or a request that is never queued (`ping`, `refresh`);
    /// nothing was sent.
    #[error("not connected")]
    NotConnected,
    /// The peer is closed; it will not connect again. A request still in the reconnect
    /// queue when the peer closes fails with this too: it was never sent.
    #[error("peer is closed")]
    Closed,
    /// The message does not fit the server's frame limit (local misuse).
    #[error("cannot encode request: {0}")]
    Encode(#[from] EncodeError),
    /// A topic, name or peer id the protocol does not allow (local misuse).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session's protocol version lacks what was asked (a Refresh on a v1 session).
    #[error("not supported by this session: {0}")]
    Unsupported(&'static str),
    /// Made while reconnecting, and the reconnect queue was full: not queued, not sent.
    #[error("not sent: the reconnect queue is full")]
    QueueFull,
    /// Made while reconnecting, and still queued when the reconnect queue timeout ran
    /// out: never sent.
    #[error("not sent: still queued when the reconnect queue timeout ran out")]
    QueueTimeout,
}

impl RequestError {
    /// The server's code, if it answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            RequestError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's code as a known [`Code`], if it is one.
    pub fn known_code(&self) -> Option<Code> {
        self.code().and_then(Code::from_u16)
    }
}

/// Why a frame could not be written; converted into the caller's error type.
#[derive(Debug)]
pub(crate) enum SendFailure {
    NotConnected,
    Closed,
    /// The write failed part-way: the connection is dead, and the frame may or may not
    /// have reached the server.
    ConnectionLost,
    /// Nothing was written: the link was already dead, or half-closed by a drain. The
    /// sender tries again on whatever is current (the reconnect queue); only a caller
    /// that cannot would see it, as `ConnectionLost`.
    Unusable,
    Encode(EncodeError),
    QueueFull,
    QueueTimeout,
}

impl From<SendFailure> for CallError {
    fn from(e: SendFailure) -> Self {
        match e {
            SendFailure::NotConnected => CallError::NotConnected,
            SendFailure::Closed => CallError::Closed,
            SendFailure::ConnectionLost | SendFailure::Unusable => CallError::ConnectionLost,
            SendFailure::Encode(e) => CallError::Encode(e),
            SendFailure::QueueFull => CallError::QueueFull,
            SendFailure::QueueTimeout => CallError::QueueTimeout,
        }
    }
}

impl From<SendFailure> for RequestError {
    fn from(e: SendFailure) -> Self {
        match e {
            SendFailure::NotConnected => RequestError::NotConnected,
            SendFailure::Closed => RequestError::Closed,
            SendFailure::ConnectionLost | SendFailure::Unusable => RequestError::ConnectionLost,
            SendFailure::Encode(e) => RequestError::Encode(e),
            SendFailure::QueueFull => RequestError::QueueFull,
            SendFailure::QueueTimeout => RequestError::QueueTimeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_rejections_stop_reconnect() {
        let rej = |c: Code| ClientError::Rejected {
            code: c.as_u16(),
            reason: String::new(),
        };
        assert!(rej(Code::PeerIdTaken).is_permanent());
        assert!(rej(Code::Unauthorized).is_permanent());
        assert!(!rej(Code::Overloaded).is_permanent());
        assert!(!rej(Code::Shutdown).is_permanent());
        assert!(!ClientError::HandshakeTimeout.is_permanent());
    }

    #[test]
    fn messages_name_the_code() {
        let e = CallError::Remote {
            code: Code::MethodNotFound.as_u16(),
            message: "nope".into(),
        };
        assert_eq!(e.to_string(), "remote error method_not_found (1007): nope");
        assert_eq!(e.known_code(), Some(Code::MethodNotFound));
        let e = RequestError::Rejected {
            code: 4001,
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "server refused: app_4001 (4001): x");
    }
}
