//! [`ConnectedPeer`]: the server-side handle of one peer.

use std::borrow::Cow;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use peerd_codec::{self as codec, Code};

use crate::conn::Conn;
use crate::error::{CallError, RpcFailure, SendError};
use crate::request::{EventRef, Request};

/// The server side of one connected peer. Lives on the peer's shard (`!Send`): handlers,
/// listeners and calls run there. Cloning is cheap (a reference count).
#[derive(Clone)]
pub struct ConnectedPeer {
    pub(crate) conn: Rc<Conn>,
}

impl std::fmt::Debug for ConnectedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectedPeer")
            .field("peer_id", &self.peer_id())
            .field("session", &self.session_id())
            .field("shard", &self.shard())
            .finish()
    }
}

impl ConnectedPeer {
    pub(crate) fn from_conn(conn: Rc<Conn>) -> ConnectedPeer {
        ConnectedPeer { conn }
    }

    /// The peer id from the handshake.
    pub fn peer_id(&self) -> &str {
        &self.conn.peer_id
    }

    /// The session id announced in Welcome.
    pub fn session_id(&self) -> u64 {
        self.conn.session
    }

    /// The shard this peer lives on.
    pub fn shard(&self) -> usize {
        self.conn.local.index
    }

    /// Whether the connection is still active.
    pub fn is_connected(&self) -> bool {
        self.conn.is_active()
    }

    /// RPC in both directions.
    pub fn rpc(&self) -> Rpc<'_> {
        Rpc(self)
    }

    /// Named events in both directions.
    pub fn events(&self) -> Events<'_> {
        Events(self)
    }

    /// Call `f` with the close code once the peer is gone (at once if it already is). The
    /// peer is gone once the server has torn the connection down: after `disconnect()`,
    /// that happens when the current batch of work on the shard ends, not inside the call.
    pub fn on_disconnected(&self, f: impl FnOnce(u16) + 'static) {
        self.conn.add_on_disconnect(Box::new(f));
    }

    /// Close this peer with Close{Normal}. Idempotent.
    pub fn disconnect(&self) {
        self.close_with(Code::Normal, "disconnected by server");
    }

    /// Close this peer with a chosen code and reason. Idempotent.
    pub fn close_with(&self, code: Code, reason: &str) {
        self.conn.close(code, reason);
    }
}

/// RPC on one peer: handle its calls, call it.
pub struct Rpc<'a>(&'a ConnectedPeer);

impl Rpc<'_> {
    /// Handle calls to `method` from this peer. Replaces an earlier handler of the same
    /// name. The handler runs on this peer's shard; calls are served concurrently.
    pub fn handle<F, Fut>(&self, method: &str, f: F)
    where
        F: Fn(Request) -> Fut + 'static,
        Fut: Future<Output = Result<Bytes, RpcFailure>> + 'static,
    {
        self.0
            .conn
            .add_handler(method, Rc::new(move |r| Box::pin(f(r))));
    }

    /// Call `method` on the peer with the server's default deadline.
    pub fn call(
        &self,
        method: &str,
        params: &[u8],
    ) -> impl Future<Output = Result<Bytes, CallError>> + 'static {
        let t = self.0.conn.local.shared.config.default_call_timeout;
        self.call_with_timeout(method, params, t)
    }

    /// Call `method` on the peer; fail with [`CallError::Timeout`] after `timeout` and with
    /// [`CallError::PeerGone`] as soon as the peer disconnects. The request is queued when
    /// this function is called, not when the future is first polled.
    pub fn call_with_timeout(
        &self,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, CallError>> + 'static {
        let conn = self.0.conn.clone();
        let started = conn.start_call(method, params, timeout);
        conn.local.writes.flush();
        async move {
            let (id, rx) = started?;
            let r = glommio::timer::timeout(timeout, async { Ok(rx.await) }).await;
            match r {
                Ok(Some(result)) => result,
                Ok(None) => Err(CallError::PeerGone),
                Err(_) => {
                    conn.forget_call(id);
                    Err(CallError::Timeout)
                }
            }
        }
    }
}

/// Events on one peer.
pub struct Events<'a>(&'a ConnectedPeer);

impl Events<'_> {
    /// Send event `name` to the peer.
    pub fn emit(&self, name: &str, payload: &[u8]) -> Result<(), SendError> {
        let conn = &self.0.conn;
        conn.queue_msg(&codec::Event {
            name: Cow::Borrowed(name),
            peer: None,
            payload: Cow::Borrowed(payload),
        })?;
        conn.local.writes.flush();
        Ok(())
    }

    /// Call `f` for every event `name` the peer sends to the server.
    pub fn on(&self, name: &str, f: impl Fn(EventRef<'_>) + 'static) {
        self.0.conn.add_listener(name, Rc::new(f));
    }
}

impl ConnectedPeer {
    /// Ids of every peer connected to this server, across all shards (sorted).
    pub fn connected_peers(&self) -> Vec<String> {
        self.conn.local.shared.directory.sorted_ids()
    }
}
