//! What handlers and listeners receive: [`Request`], [`EventRef`], and the future a
//! handler returns ([`HandlerFuture`]). Plain types, below the connection in the module
//! graph, so that a connection can hold its handlers without knowing the public API.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::RpcFailure;

/// An incoming RPC request, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The caller's request id.
    pub id: u64,
    /// The method called.
    pub method: Box<str>,
    /// The calling peer for a relayed peer-to-peer call; `None` when the peer on this
    /// connection called the server.
    pub from: Option<Arc<str>>,
    /// The parameters: one copy out of the receive buffer, so the handler may hold them
    /// across awaits.
    pub params: Bytes,
}

/// An event as a listener sees it, borrowed from the receive buffer (no copy).
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    /// The event name.
    pub name: &'a str,
    /// The payload.
    pub payload: &'a [u8],
}

/// The future an RPC handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, RpcFailure>>>>;
