//! What user code is given and gives back: the values handed to handlers, listeners and
//! receivers ([`EventInfo`], [`RpcRequestInfo`], [`TopicMessageInfo`], [`PresenceEvent`],
//! [`SignalInfo`], [`ServerError`]) and what an RPC handler answers ([`RpcFailure`]).
//!
//! They live below every thread and API module (the reader builds them, the dispatcher
//! delivers them, the API modules re-export them), so no module needs a module above it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use peerd_codec::{Code, SignalKind};

/// An event or a broadcast, as listeners see it. Both reach the listeners of their name:
/// `broadcast` says which it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventInfo {
    /// Event name.
    pub name: String,
    /// The sending peer; `None` when the server itself sent it.
    pub from: Option<String>,
    /// Payload (a zero-copy slice of the received frame).
    pub payload: Bytes,
    /// `true` for a Broadcast (sent to every peer), `false` for an Event (sent to this peer
    /// alone, or emitted by the server to it).
    pub broadcast: bool,
}

/// An asynchronous failure the server reported with `Status{req: 0, code != 0}`: a
/// fire-and-forget request failed (a direct event to an unknown peer, a publish to an
/// invalid topic, ...), or a topic/watch could not be re-established after a reconnect.
///
/// The client reports here too the fire-and-forget frames it dropped from its reconnect
/// queue without sending them: `timeout` when they waited longer than
/// `reconnect_queue_timeout`, `too_large` when the next connection's frame limit was
/// below them (the message names their kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerError {
    /// A [`Code`] number.
    pub code: u16,
    /// The server's detail.
    pub message: String,
}

impl ServerError {
    /// The code as a known [`Code`], if it is one.
    pub fn known_code(&self) -> Option<Code> {
        Code::from_u16(self.code)
    }
}

/// `name (code): message`, how every coded error reads.
fn write_coded(f: &mut fmt::Formatter<'_>, code: u16, message: &str) -> fmt::Result {
    write!(f, "{} ({code}): {message}", Code::describe(code))
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_coded(f, self.code, &self.message)
    }
}

/// An incoming call, as a handler sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RpcRequestInfo {
    /// The calling peer; `None` when the server itself calls.
    pub from: Option<String>,
    /// The method name.
    pub method: String,
    /// The parameters (a zero-copy slice of the received frame).
    pub params: Bytes,
}

/// How a handler fails a call: a code and a message, sent back as RpcError.
///
/// Use an application code in 4000-4999 for your own failures ([`RpcFailure::app`]), or a
/// protocol [`Code`] (`RpcFailure::from(Code::InvalidArgument)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFailure {
    /// A [`Code`] number or an application code in 4000-4999.
    pub code: u16,
    /// Detail for the caller.
    pub message: String,
}

impl RpcFailure {
    /// A failure with any code.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        RpcFailure {
            code,
            message: message.into(),
        }
    }

    /// An application failure; `code` should be in 4000-4999 (other values are sent as
    /// given, but may collide with protocol codes).
    pub fn app(code: u16, message: impl Into<String>) -> Self {
        debug_assert!(
            (4000..5000).contains(&code),
            "application codes are 4000-4999"
        );
        Self::new(code, message)
    }

    /// `Internal` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal.as_u16(), message)
    }
}

impl From<Code> for RpcFailure {
    fn from(c: Code) -> Self {
        RpcFailure::new(c.as_u16(), c.name())
    }
}

impl fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_coded(f, self.code, &self.message)
    }
}

impl std::error::Error for RpcFailure {}

/// A registered RPC handler.
pub type Handler =
    Arc<dyn Fn(RpcRequestInfo) -> Result<Vec<u8>, RpcFailure> + Send + Sync + 'static>;

/// A message delivered on a topic this client has joined.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicMessageInfo {
    /// The topic.
    pub topic: String,
    /// The sending peer.
    pub from: String,
    /// true: sent to this peer alone ([`Peer::send`](crate::Peer::send)); false: published to all members.
    pub direct: bool,
    /// Payload (a zero-copy slice of the received frame).
    pub payload: Bytes,
}

/// A presence change seen by a [`Watcher`](crate::Watcher). The members present when the watch started
/// arrive first, as `Join`s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PresenceEvent {
    /// The peer connected (global watch) or joined the topic.
    Join(String),
    /// The peer disconnected or left the topic.
    Leave(String),
}

impl PresenceEvent {
    /// The peer concerned.
    pub fn peer(&self) -> &str {
        match self {
            PresenceEvent::Join(p) | PresenceEvent::Leave(p) => p,
        }
    }
}

/// A relayed WebRTC signaling message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalInfo {
    /// The room (topic) it was sent in.
    pub room: String,
    /// Offer, answer, candidate or bye.
    pub kind: SignalKind,
    /// The sending peer.
    pub from: Option<String>,
    /// The SDP / candidate blob, untouched by the server.
    pub payload: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_codes() {
        assert_eq!(
            RpcFailure::from(Code::InvalidArgument).code,
            Code::InvalidArgument.as_u16()
        );
        assert_eq!(
            RpcFailure::app(4001, "nope").to_string(),
            "app_4001 (4001): nope"
        );
    }

    #[test]
    fn server_error_display() {
        let e = ServerError {
            code: Code::UnknownPeer.as_u16(),
            message: "bob".into(),
        };
        assert_eq!(e.to_string(), "unknown_peer (1006): bob");
    }
}
