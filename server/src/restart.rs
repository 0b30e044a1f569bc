//! Restarts without losses: stop accepting, drain, and hand the listening sockets to a
//! successor (docs/PROTOCOL.md §6.10, README "Restarts without losses").
//!
//! - [`PeerServer::stop_accepting`]: Node's `server.close()`: no new connections, the
//!   connected peers stay.
//! - [`PeerServer::reload_tls`], [`PeerServer::set_limits`]: a new certificate, new
//!   limits, without dropping anyone.
//! - [`PeerServer::drain`]: lame-duck mode (NATS's): not ready, no new connections, each
//!   peer asked to finish and reconnect, spread over a window, then closed.
//! - [`PeerServer::listener_fds`] and [`ListenOptions::inherit`]: a successor (in this
//!   process, or in another one that received the sockets over a Unix socket) accepts on the
//!   very sockets this server listens on, so no connection attempt is refused while the two
//!   overlap. [`PeerServer::forward_accepted`] then sends whatever this server still accepts
//!   to the successor, which serves it with [`PeerServer::adopt`].
//!
//! Why the sockets themselves, not a second SO_REUSEPORT group member: a socket closed with
//! connections in its accept queue resets them (unless `net.ipv4.tcp_migrate_req` is on),
//! so the old process could never close its own without losing some. Shared sockets keep
//! one accept queue that outlives the old process.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::msg::ShardMsg;
use crate::options::InheritedListener;
use crate::server::PeerServer;

/// How a drain goes (docs/PROTOCOL.md §6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOptions {
    /// The peers' notices are spread evenly over this window, so that a fleet of clients
    /// does not reconnect in one burst (default 10 s).
    pub window: Duration,
    /// Each peer has this long from its notice to finish (send its Close{reconnect} and see
    /// its calls answered); then it is closed with `shutdown` (default 5 s).
    pub grace: Duration,
}

impl Default for DrainOptions {
    fn default() -> DrainOptions {
        DrainOptions {
            window: Duration::from_secs(10),
            grace: Duration::from_secs(5),
        }
    }
}

impl DrainOptions {
    /// The longest a drain can take: the window, the last peer's grace, and the close
    /// linger after its Close.
    pub fn deadline(&self, close_linger: Duration) -> Duration {
        self.window + self.grace + close_linger
    }
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections open when the drain started.
    pub connections: usize,
    /// Connections still open at the deadline (closed with `shutdown` by the close that
    /// ends every drain).
    pub remaining: usize,
    /// How long it took.
    pub elapsed: Duration,
}

impl PeerServer {
    /// Stop accepting new connections; the connected peers stay, and the server runs on
    /// until closed (Node's `net.Server.close()`). The ports are free when this returns,
    /// unless the sockets were handed to a successor ([`listener_fds`](Self::listener_fds)),
    /// which keeps them. Not ready from now on (`/readyz`). Idempotent.
    pub fn stop_accepting(&self) {
        self.shared.start_draining();
        for i in 0..self.shared.shards() {
            self.shared.send(i, ShardMsg::StopAccepting);
        }
        self.stop_accept_thread();
        // Our duplicates would keep the sockets listening (unanswered) after the accept
        // thread closed its own: let them go too.
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drain (lame-duck mode; docs/PROTOCOL.md §6.10): stop accepting (unless accepted
    /// connections are forwarded to a successor, [`forward_accepted`](Self::forward_accepted)),
    /// mark the server not ready, ask each peer to finish and reconnect, spread over
    /// `opts.window`, and close it with `reconnect` once it has. Blocks until no connection
    /// is left or the deadline ([`DrainOptions::deadline`]) passed, then closes the server
    /// (the peers left get `shutdown`). Call it from outside the server's shards.
    pub fn drain(&self, opts: DrainOptions) -> DrainReport {
        let started = Instant::now();
        let connections = self.connection_count();
        tracing::info!(
            connections,
            window_ms = opts.window.as_millis() as u64,
            grace_ms = opts.grace.as_millis() as u64,
            "draining"
        );
        if self.shared.forward.get().is_none() {
            self.stop_accepting();
        } else {
            self.shared.start_draining();
        }
        for i in 0..self.shared.shards() {
            self.shared.send(
                i,
                ShardMsg::Drain {
                    window: opts.window,
                    grace: opts.grace,
                },
            );
        }
        let deadline = started + opts.deadline(self.shared.config.close_linger);
        // The shards drain on their own; this thread only watches the count. A 10 ms
        // poll keeps the drain's own end within 10 ms of the last peer leaving.
        while self.connection_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let remaining = self.connection_count();
        self.close();
        let report = DrainReport {
            connections,
            remaining,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            connections,
            remaining,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "drained"
        );
        report
    }

    /// Duplicates of this server's TCP listening sockets (every shard's, for every
    /// TCP-based endpoint), for a successor to [`inherit`](ListenOptions::inherit). From
    /// now on stopping or closing this server leaves the sockets listening: the successor
    /// owns them too. Unix-socket endpoints are not included (a successor binds its own
    /// socket file in their place).
    ///
    /// Only for a server started with [`ListenOptions::handover`] (else an error): its
    /// accepting can stop without taking a connection that it then cannot serve.
    pub fn listener_fds(&self) -> std::io::Result<Vec<InheritedListener>> {
        if !self.shared.config.handover {
            return Err(std::io::Error::other(
                "this server was not started with ListenOptions::handover(true)",
            ));
        }
        self.shared.share_listeners();
        let held = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        held.iter()
            .map(|(addr, fd)| {
                Ok(InheritedListener {
                    addr: *addr,
                    fd: fd.try_clone()?,
                })
            })
            .collect()
    }

    /// From now on, hand every connection this server accepts to `f` (a successor serves
    /// it, see [`adopt`](Self::adopt)) instead of serving it. Set once; a second call is
    /// ignored. The connection has not been read from.
    pub fn forward_accepted(&self, f: impl Fn(OwnedFd) + Send + Sync + 'static) {
        let _ = self.shared.forward.set(Arc::new(f));
    }

    /// Load a new certificate chain and key for the `tls://` and `wss://` endpoints (a
    /// renewed certificate, SIGHUP in `peerd serve`): TLS handshakes from now on present
    /// it; connections already established keep theirs and stay connected. On an error
    /// (unreadable files, a key that does not match) the old certificate stays.
    pub fn reload_tls(&self, files: &crate::TlsFiles) -> Result<(), crate::ListenError> {
        let Some(slot) = &self.cert_slot else {
            return Err(crate::ListenError::Tls(
                "this server has no tls:// or wss:// endpoint".into(),
            ));
        };
        let key = crate::tls::certified_key(&files.cert_chain, &files.key)
            .map_err(crate::ListenError::Tls)?;
        slot.replace(key);
        tracing::info!(cert = %files.cert_chain.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Change the limits while running (SIGHUP in `peerd serve`), without dropping anyone:
    /// `max_connections` and the memory budget at once; the outbound queue limit, rate
    /// limits and call limits for what starts after (a connection keeps the queue limit
    /// and rate limiter it was welcomed with; a new Welcome announces the new ones). The
    /// limits peers were told in Welcome and check themselves (`max_frame_len`,
    /// `max_topic_len`, `max_topics_per_peer`, `max_members_per_topic`) cannot change in a
    /// running server: that is refused, naming the limit (start a successor instead).
    pub fn set_limits(&self, limits: crate::Limits) -> Result<(), crate::ListenError> {
        let invalid = |(option, reason): (&'static str, String)| {
            crate::ListenError::InvalidOptions { option, reason }
        };
        limits.validate().map_err(invalid)?;
        let mut current = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let fixed = [
            (
                "limits.max_frame_len",
                limits.max_frame_len != current.max_frame_len,
            ),
            (
                "limits.max_topic_len",
                limits.max_topic_len != current.max_topic_len,
            ),
            (
                "limits.max_topics_per_peer",
                limits.max_topics_per_peer != current.max_topics_per_peer,
            ),
            (
                "limits.max_members_per_topic",
                limits.max_members_per_topic != current.max_members_per_topic,
            ),
        ];
        if let Some((option, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(invalid((
                option,
                format!(
                    "{option}: connected peers were told it in Welcome; it cannot change \
                     while they are connected (start a successor with the new value)"
                ),
            )));
        }
        self.shared
            .max_connections
            .store(limits.max_connections, std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.shared.shards() {
            self.shared
                .send(i, ShardMsg::Limits(Box::new(limits.clone())));
        }
        tracing::info!(?limits, "limits changed");
        *current = limits;
        Ok(())
    }

    /// Serve a connection accepted elsewhere (by a predecessor that handed its listeners
    /// over), as if accepted on the endpoint whose address it was accepted on.
    pub fn adopt(&self, fd: OwnedFd) -> std::io::Result<()> {
        let local = socket2::SockRef::from(&fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("not an inet socket"))?;
        let transport = self
            .endpoints
            .iter()
            .zip(&self.addrs)
            .find(|(_, a)| a.is_some_and(|a| same_listener(a, local)))
            .map(|(e, _)| e.transport())
            .ok_or_else(|| std::io::Error::other(format!("no endpoint listens on {local}")))?;
        let shard = fd.as_raw_fd() as usize % self.shared.shards();
        self.shared.send(shard, ShardMsg::Adopt(fd, transport));
        Ok(())
    }
}

/// Whether a connection accepted at `local` came through a listener bound to `bound` (which
/// may be a wildcard address).
fn same_listener(bound: SocketAddr, local: SocketAddr) -> bool {
    bound.port() == local.port() && (bound.ip().is_unspecified() || bound.ip() == local.ip())
}
