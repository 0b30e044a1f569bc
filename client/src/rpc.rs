//! RPC in both directions: calls to the server or (through it) to another peer, and
//! handlers the server or other peers call.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peerd_codec::RpcRequest;

use crate::error::CallError;
use crate::peer::Peer;
use crate::pending::Waiter;

pub use crate::messages::{Handler, RpcFailure, RpcRequestInfo};

/// RPC operations of a [`Peer`]; from [`Peer::rpc`].
#[derive(Clone, Copy)]
pub struct Rpc<'a> {
    peer: &'a Peer,
}

impl Peer {
    /// RPC: calls out, handlers in.
    pub fn rpc(&self) -> Rpc<'_> {
        Rpc { peer: self }
    }
}

impl Rpc<'_> {
    /// Call `method` on the server with the default deadline.
    pub fn call(&self, method: &str, params: &[u8]) -> Result<Bytes, CallError> {
        self.call_to(None, method, params, self.peer.default_timeout())
    }

    /// Call `method` on the server with `timeout` (also sent to the server as the call's
    /// deadline).
    pub fn call_with_timeout(
        &self,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        self.call_to(None, method, params, timeout)
    }

    /// Call `method` on another peer, relayed by the server, with the default deadline.
    pub fn call_peer(&self, peer: &str, method: &str, params: &[u8]) -> Result<Bytes, CallError> {
        self.call_to(Some(peer), method, params, self.peer.default_timeout())
    }

    /// The general form: `target` `None` = the server, `Some(id)` = that peer.
    pub fn call_to(
        &self,
        target: Option<&str>,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        self.start(target, method, params, timeout)?.wait()
    }

    /// [`Rpc::call`] as a future. The request is written when this is called; the future
    /// only waits for the answer, needs no particular async runtime, and un-registers the
    /// call when dropped.
    pub fn call_async(
        &self,
        method: &str,
        params: &[u8],
    ) -> impl Future<Output = Result<Bytes, CallError>> + Send + 'static {
        self.call_to_async(None, method, params, self.peer.default_timeout())
    }

    /// [`Rpc::call_peer`] as a future (see [`Rpc::call_async`]).
    pub fn call_peer_async(
        &self,
        peer: &str,
        method: &str,
        params: &[u8],
    ) -> impl Future<Output = Result<Bytes, CallError>> + Send + 'static {
        self.call_to_async(Some(peer), method, params, self.peer.default_timeout())
    }

    /// [`Rpc::call_to`] as a future (see [`Rpc::call_async`]).
    pub fn call_to_async(
        &self,
        target: Option<&str>,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, CallError>> + Send + 'static {
        let started = self.start(target, method, params, timeout);
        self.peer.inner().wait_async(started)
    }

    /// Register the handler for `method`, replacing any previous one. Works before
    /// `connect()` and survives reconnects. Handlers run one at a time on the dispatcher
    /// thread, in arrival order; they may make blocking calls themselves. Calls for methods
    /// without a handler are answered `MethodNotFound`.
    pub fn handle<F>(&self, method: &str, handler: F)
    where
        F: Fn(RpcRequestInfo) -> Result<Vec<u8>, RpcFailure> + Send + Sync + 'static,
    {
        self.peer
            .inner()
            .registry
            .handlers
            .write()
            .unwrap()
            .insert(method.to_string(), Arc::new(handler));
    }

    /// Remove the handler for `method`; false if there was none.
    pub fn remove_handler(&self, method: &str) -> bool {
        self.peer
            .inner()
            .registry
            .handlers
            .write()
            .unwrap()
            .remove(method)
            .is_some()
    }

    /// Validate, then write the request with its waiter registered.
    fn start(
        &self,
        target: Option<&str>,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> Result<Waiter<Bytes, CallError>, CallError> {
        peerd_codec::validate_name(method)
            .map_err(|e| CallError::InvalidArgument(format!("method {method:?}: {e}")))?;
        if let Some(t) = target {
            peerd_codec::validate_peer_id(t)
                .map_err(|e| CallError::InvalidArgument(format!("peer id {t:?}: {e}")))?;
        }
        // 0 on the wire means "the receiver's default"; a sub-millisecond deadline is 1 ms.
        let timeout_ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        let inner = self.peer.inner();
        inner.start(&inner.calls, timeout, |id| RpcRequest {
            id,
            method: Cow::Borrowed(method),
            peer: target.map(Cow::Borrowed),
            timeout_ms,
            params: Cow::Borrowed(params),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::test_peer;
    use crate::test_util::block_on;

    #[test]
    fn calls_without_a_connection_fail_fast_and_validate_arguments() {
        let p = test_peer();
        assert_eq!(p.rpc().call("echo", b"x"), Err(CallError::NotConnected));
        assert!(matches!(
            p.rpc().call("", b"x"),
            Err(CallError::InvalidArgument(_))
        ));
        assert!(matches!(
            p.rpc().call_peer("bad id", "echo", b"x"),
            Err(CallError::InvalidArgument(_))
        ));
        p.disconnect();
        assert_eq!(p.rpc().call("echo", b"x"), Err(CallError::Closed));
    }

    #[test]
    fn async_call_without_connection_resolves_at_once() {
        let p = test_peer();
        let f = p.rpc().call_async("echo", b"x");
        assert_eq!(block_on(f), Err(CallError::NotConnected));
    }

    #[test]
    fn handlers_register_before_connect_and_can_be_removed() {
        let p = test_peer();
        p.rpc().handle("echo", |req| Ok(req.params.to_vec()));
        assert!(p
            .inner()
            .registry
            .handlers
            .read()
            .unwrap()
            .contains_key("echo"));
        assert!(p.rpc().remove_handler("echo"));
        assert!(!p.rpc().remove_handler("echo"));
    }
}
