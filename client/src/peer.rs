//! [`Peer`], the handle users hold: connect, state, session facts, ping, disconnect.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use std::borrow::Cow;

use peerd_codec::{Limits, Ping, Refresh};

use crate::endpoint::ToEndpoint;
use crate::error::{ClientError, RequestError};
use crate::handshake;
use crate::listeners::{ListenerId, Sink};
use crate::options::PeerOptions;
use crate::shared::Inner;
use crate::state::{CloseInfo, State};
use crate::supervisor;
use crate::transport::Target;

/// Owned by every [`Peer`] clone; dropping the last one disconnects. The background
/// threads hold `Inner`, not this, so they do not keep the connection alive by themselves.
struct PeerHandle {
    inner: Arc<Inner>,
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.inner.shutdown("client dropped");
    }
}

/// A connection to a peerd server: RPC both ways, events, topics, presence, signaling, with
/// automatic reconnect.
///
/// Cheap to clone (`Arc`), `Send + Sync`: use it from any thread. Dropping the last clone
/// disconnects. A handler that needs the peer should capture a [`WeakPeer`] (from
/// [`Peer::downgrade`]): a strong `Peer` inside a handler is a reference cycle that keeps the
/// connection open until [`Peer::disconnect`] is called explicitly.
#[derive(Clone)]
pub struct Peer {
    h: Arc<PeerHandle>,
}

/// A non-owning reference to a [`Peer`], for use inside its own handlers.
#[derive(Clone)]
pub struct WeakPeer {
    h: Weak<PeerHandle>,
}

impl WeakPeer {
    /// The peer, if some [`Peer`] clone is still alive.
    pub fn upgrade(&self) -> Option<Peer> {
        self.h.upgrade().map(|h| Peer { h })
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("state", &self.state())
            .field("peer_id", &self.peer_id())
            .finish()
    }
}

/// Connect to `addr` and complete the handshake: returns an Active [`Peer`] or why not.
///
/// `addr` is anything [`ToSocketAddrs`] accepts (`"127.0.0.1:7000"`, `("host", 7000)`, a
/// `SocketAddr`). It is resolved once, here; reconnects try the same addresses in order.
/// The first connection is not retried: an error comes back typed by cause. Reconnect
/// (per [`PeerOptions::reconnect`]) applies once the session has been Active.
pub fn connect(
    addr: impl ToSocketAddrs + std::fmt::Debug,
    options: PeerOptions,
) -> Result<Peer, ClientError> {
    let peer = Peer::new(addr, options)?;
    peer.connect()?;
    Ok(peer)
}

/// Connect to `endpoint` and complete the handshake: returns an Active [`Peer`] or why not.
///
/// `endpoint` is an [`Endpoint`](crate::Endpoint) or a string in one of its forms:
/// `host:port`, `tcp://host:port`, `unix:/path`, `tls://host:port`, `ws://host:port/path`,
/// `wss://host:port/path` ([`PeerOptions::tls`] says whom TLS trusts). The host is
/// resolved once, here; reconnects go to the same endpoint (the same addresses, in order).
///
/// ```no_run
/// use peerd_client::{connect_endpoint, PeerOptions};
///
/// let opts = PeerOptions::new().peer_id("alice").ca_file("ca.pem");
/// let peer = connect_endpoint("wss://localhost:7443/", opts)?;
/// # Ok::<(), peerd_client::ClientError>(())
/// ```
pub fn connect_endpoint(
    endpoint: impl ToEndpoint,
    options: PeerOptions,
) -> Result<Peer, ClientError> {
    let peer = Peer::with_endpoint(endpoint, options)?;
    peer.connect()?;
    Ok(peer)
}

impl Peer {
    /// A peer in state [`State::Idle`] for `endpoint` (see [`connect_endpoint`] for the
    /// forms): register handlers and listeners, then call [`Peer::connect`].
    pub fn with_endpoint(
        endpoint: impl ToEndpoint,
        options: PeerOptions,
    ) -> Result<Peer, ClientError> {
        let ep = endpoint
            .to_endpoint()
            .map_err(|source| ClientError::InvalidEndpoint {
                endpoint: format!("{endpoint:?}"),
                source,
            })?;
        validate(&options)?;
        let target = Target::new(&ep, &options)?;
        Ok(Peer::from_inner(Inner::new(options, target)))
    }

    /// A peer in state [`State::Idle`]: register handlers and listeners, then call
    /// [`Peer::connect`] so they see the very first frame the server sends.
    ///
    /// `addr` is plain TCP, as for [`connect`]; [`Peer::with_endpoint`] takes every
    /// transport.
    pub fn new(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        options: PeerOptions,
    ) -> Result<Peer, ClientError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Resolve {
                addr: format!("{addr:?}"),
                source: e,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::Resolve {
                addr: format!("{addr:?}"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            });
        }
        validate(&options)?;
        Ok(Peer::from_inner(Inner::new(options, Target::tcp(addrs))))
    }

    fn from_inner(inner: Arc<Inner>) -> Peer {
        Peer {
            h: Arc::new(PeerHandle { inner }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.h.inner
    }

    /// Connect and handshake (Idle -> Connecting -> Negotiating -> Active), blocking.
    ///
    /// On failure the peer goes back to Idle and `connect()` may be called again. Only
    /// valid from Idle: [`ClientError::NotIdle`] otherwise.
    pub fn connect(&self) -> Result<(), ClientError> {
        let inner = self.inner();
        if !inner.transition_state(State::Idle, State::Connecting) {
            return Err(match inner.state.get() {
                State::Closed => ClientError::Closed,
                s => ClientError::NotIdle(s),
            });
        }
        inner.ensure_dispatcher();
        match handshake::establish(inner, true) {
            Ok(est) => {
                if !supervisor::install(inner, &est, false) {
                    return Err(ClientError::Closed);
                }
                supervisor::spawn(inner.clone(), est);
                Ok(())
            }
            Err(e) => {
                if inner.gate.is_closed() {
                    return Err(ClientError::Closed);
                }
                for from in [State::Connecting, State::Negotiating] {
                    inner.transition_state(from, State::Idle);
                }
                Err(e)
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner().state.get()
    }

    /// Wait until the session is Active. `Err(Closed)` if it closed (or is Idle and nobody is
    /// connecting it), `Err(Timeout)` when `timeout` passes first.
    pub fn when_ready(&self, timeout: Duration) -> Result<(), ClientError> {
        match self.inner().state.wait_active(timeout) {
            Ok(()) => Ok(()),
            Err(Some(State::Idle)) => Err(ClientError::NotIdle(State::Idle)),
            Err(Some(_)) => Err(ClientError::Closed),
            Err(None) => Err(ClientError::Timeout),
        }
    }

    /// Call `f` with every state change from now on, on the dispatcher thread.
    pub fn on_state(&self, f: impl Fn(State) + Send + Sync + 'static) -> ListenerId {
        let id = self.new_listener_id();
        let since = Arc::new(AtomicU64::new(u64::MAX));
        let cutoff = since.clone();
        let filtered = move |(s, v): (State, u64)| {
            if v > cutoff.load(Ordering::SeqCst) {
                f(s)
            }
        };
        self.inner()
            .registry
            .states
            .add(id, Sink::Callback(Arc::new(filtered)));
        // Read the version only once registered, so no change after it can be missed.
        since.store(self.inner().state.version(), Ordering::SeqCst);
        id
    }

    /// Every state change from now on, as a channel, delivered at once from the thread that
    /// makes the change (not through the dispatcher, so a slow handler cannot delay it).
    /// State is "latest wins": if the receiver is full, changes are dropped rather than
    /// blocking ([`Peer::state`] always has the current one). Drop the receiver to stop.
    pub fn state_changes(&self) -> flume::Receiver<State> {
        let (tx, rx) = self.channel();
        self.inner().state.subscribe(tx);
        rx
    }

    /// This session's peer id (declared or server-assigned); `None` before the first Welcome.
    pub fn peer_id(&self) -> Option<String> {
        self.inner().session().map(|s| s.peer_id.clone())
    }

    /// The server's id for the current (or last) session.
    pub fn session_id(&self) -> Option<u64> {
        self.inner().session().map(|s| s.session_id)
    }

    /// The limits the server announced in the last Welcome.
    pub fn limits(&self) -> Option<Limits> {
        self.inner().session().map(|s| s.limits.clone())
    }

    /// The server's heartbeat interval from the last Welcome.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.inner().session().map(|s| s.heartbeat)
    }

    /// Why the last connection ended (a Close received or sent, or a transport failure).
    pub fn last_close(&self) -> Option<CloseInfo> {
        self.inner().last_close.lock().unwrap().clone()
    }

    /// Replace the credentials with new ones (a fresh connect token) before the current
    /// ones expire: sent to the server now in a Refresh (protocol v2), which answers like
    /// any request, and presented by every later Hello (reconnects).
    ///
    /// - Accepted: the session lives on under the new credentials' expiry and permissions.
    /// - `Err(Rejected { code, .. })`: the server refused them (`unauthorized`,
    ///   `token_expired`); the session keeps the old ones, and so do reconnects.
    /// - `Err(NotConnected)`: nothing was sent, but the credentials are kept for the next
    ///   Hello; this is how a peer closed with `token_expired` gets back in.
    /// - `Err(Unsupported)`: the server speaks protocol v1 and has no Refresh; the
    ///   credentials are kept for the next connection.
    pub fn refresh_token(&self, credentials: impl Into<Vec<u8>>) -> Result<(), RequestError> {
        let inner = self.inner();
        let credentials = credentials.into();
        let live = inner.usable_link().is_some();
        let version = inner.session().map(|s| s.version);
        if !live || version.is_none_or(|v| v < 2) {
            *inner.credentials.lock().unwrap() = Some(credentials);
            return Err(if live {
                RequestError::Unsupported("Refresh needs protocol v2; the server speaks v1")
            } else {
                RequestError::NotConnected
            });
        }
        inner.request(self.default_timeout(), |req| Refresh {
            req,
            credentials: Cow::Borrowed(&credentials),
        })?;
        *inner.credentials.lock().unwrap() = Some(credentials);
        Ok(())
    }

    /// Frames waiting in the reconnect queue for the next connection (sent while not
    /// connected; see [`PeerOptions::reconnect_queue_timeout`]). Zero while connected.
    pub fn queued_frames(&self) -> usize {
        self.inner().outbox.len().0
    }

    /// Bytes (encoded frames) waiting in the reconnect queue; at most
    /// [`PeerOptions::reconnect_queue_bytes`].
    pub fn queued_bytes(&self) -> usize {
        self.inner().outbox.len().1
    }

    /// Round trip of a Ping to the server. Never queued: while not connected it fails at
    /// once with `NotConnected`.
    pub fn ping(&self, timeout: Duration) -> Result<Duration, RequestError> {
        let inner = self.inner();
        let sent = Instant::now();
        let pong = inner
            .start_live(&inner.pings, timeout, |nonce| Ping { nonce })?
            .wait()?;
        Ok(pong.saturating_duration_since(sent))
    }

    /// [`Peer::ping`] as a future; the Ping is sent when this is called.
    pub fn ping_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Duration, RequestError>> + Send + 'static {
        let inner = self.inner();
        let sent = Instant::now();
        let pong =
            inner.wait_async(inner.start_live(&inner.pings, timeout, |nonce| Ping { nonce }));
        async move { Ok(pong.await?.saturating_duration_since(sent)) }
    }

    /// Stop a listener or subscription registered with any `on*`/`subscribe*` method.
    /// False if it was not registered (or already removed).
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.inner().registry.remove(id)
    }

    /// Close the session: sends Close{Normal}, closes the socket, fails pending calls with
    /// `ConnectionLost`, stops reconnecting; state Closed. Idempotent, non-blocking beyond
    /// the Close write, callable from handlers. Background threads exit on their own.
    pub fn disconnect(&self) {
        self.inner().shutdown("client disconnect");
    }

    /// A [`WeakPeer`] for use inside handlers (see the type's docs about cycles).
    pub fn downgrade(&self) -> WeakPeer {
        WeakPeer {
            h: Arc::downgrade(&self.h),
        }
    }

    pub(crate) fn new_listener_id(&self) -> ListenerId {
        ListenerId(self.inner().next_id())
    }

    /// A bounded channel for a subscription.
    pub(crate) fn channel<T>(&self) -> (flume::Sender<T>, flume::Receiver<T>) {
        flume::bounded(self.inner().opts.subscription_capacity.max(1))
    }

    /// The default deadline.
    pub(crate) fn default_timeout(&self) -> Duration {
        self.inner().opts.default_call_timeout
    }
}

/// What can be checked before connecting.
fn validate(options: &PeerOptions) -> Result<(), ClientError> {
    if let Some(id) = &options.peer_id {
        peerd_codec::validate_declared_peer_id(id)
            .map_err(|e| ClientError::InvalidOptions(format!("peer_id {id:?}: {e}")))?;
    }
    Ok(())
}

/// Test helper: an `Inner` that never connects.
#[cfg(test)]
pub(crate) fn test_peer() -> Peer {
    Peer::new("127.0.0.1:9", PeerOptions::default()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_is_send_sync_clone() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<Peer>();
        assert::<WeakPeer>();
    }

    #[test]
    fn idle_peer_fails_requests_fast_and_disconnect_is_idempotent() {
        let p = test_peer();
        assert_eq!(p.state(), State::Idle);
        assert_eq!(p.peer_id(), None);
        assert_eq!(
            p.ping(Duration::from_secs(5)),
            Err(RequestError::NotConnected)
        );
        p.disconnect();
        p.disconnect();
        assert_eq!(p.state(), State::Closed);
        assert_eq!(p.ping(Duration::from_secs(5)), Err(RequestError::Closed));
        assert!(matches!(p.connect(), Err(ClientError::Closed)));
        assert!(matches!(
            p.when_ready(Duration::from_millis(1)),
            Err(ClientError::Closed)
        ));
    }

    #[test]
    fn invalid_declared_peer_id_is_refused_before_connecting() {
        let e = Peer::new("127.0.0.1:9", PeerOptions::new().peer_id("123")).unwrap_err();
        assert!(matches!(e, ClientError::InvalidOptions(_)), "{e}");
        let e = Peer::new("127.0.0.1:9", PeerOptions::new().peer_id("a b")).unwrap_err();
        assert!(matches!(e, ClientError::InvalidOptions(_)), "{e}");
    }

    #[test]
    fn refused_connect_is_an_io_error_and_the_peer_stays_idle() {
        // A port nobody listens on (bound, then released).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let p = Peer::new(addr, PeerOptions::default()).unwrap();
        let states = p.state_changes();
        let e = p.connect().unwrap_err();
        assert!(matches!(e, ClientError::Io { .. }), "{e}");
        assert_eq!(p.state(), State::Idle, "connect() may be retried");
        assert_eq!(
            states.try_iter().collect::<Vec<_>>(),
            vec![State::Connecting, State::Idle]
        );
    }

    #[test]
    fn a_silent_server_is_a_handshake_timeout_and_a_hangup_is_closed_during_handshake() {
        use std::io::Read;
        let opts = PeerOptions::new().handshake_timeout(Duration::from_millis(100));

        // The listen backlog completes the TCP connect; nobody ever answers the Hello.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Peer::new(silent.local_addr().unwrap(), opts.clone()).unwrap();
        let e = p.connect().unwrap_err();
        assert!(matches!(e, ClientError::HandshakeTimeout), "{e}");
        assert_eq!(p.state(), State::Idle);

        // Reads the Hello, then hangs up without a word.
        let rude = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Peer::new(rude.local_addr().unwrap(), opts).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = rude.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "a Hello arrived");
        });
        let e = p.connect().unwrap_err();
        server.join().unwrap();
        assert!(matches!(e, ClientError::ClosedDuringHandshake), "{e}");
    }

    #[test]
    fn unresolvable_addresses_name_the_address() {
        let e = Peer::new("no-port-here", PeerOptions::default()).unwrap_err();
        assert!(matches!(e, ClientError::Resolve { .. }), "{e}");
        assert!(e.to_string().contains("no-port-here"), "{e}");
    }

    #[test]
    fn weak_peer_does_not_keep_the_peer_alive() {
        let p = test_peer();
        let w = p.downgrade();
        assert!(w.upgrade().is_some());
        let inner = p.inner().clone();
        drop(p);
        assert!(w.upgrade().is_none());
        assert_eq!(
            inner.state.get(),
            State::Closed,
            "dropping the last handle disconnects"
        );
    }
}
