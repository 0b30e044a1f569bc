//! Connection options and the reconnect schedule.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peerd_codec::DEFAULT_MAX_FRAME_LEN;
use rustls::pki_types::CertificateDer;

/// How a [`Peer`](crate::Peer) connects, authenticates and recovers from a dropped
/// connection. Every field has a default ([`PeerOptions::default`]); the builder-style
/// setters consume and return the options so they chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PeerOptions {
    /// Peer id to declare in Hello. `None` lets the server assign a numeric id.
    pub peer_id: Option<String>,
    /// Opaque credentials for the server's authenticator.
    pub credentials: Option<Vec<u8>>,
    /// Client software name sent in Hello (server logs only).
    pub client_name: String,
    /// Limit for the TCP connect of each address tried.
    pub connect_timeout: Duration,
    /// Limit from the first byte written (TLS ClientHello, WebSocket upgrade request or
    /// Hello) to the Welcome/Reject read: covers the TLS and WebSocket handshakes too.
    pub handshake_timeout: Duration,
    /// Whom to trust on `tls://` and `wss://` endpoints (ignored on the others).
    pub tls: TlsOptions,
    /// Deadline of `rpc().call` and of Status-confirmed requests (join, watch, ...).
    pub default_call_timeout: Duration,
    /// What to do when an established connection drops.
    pub reconnect: ReconnectPolicy,
    /// How long a send made while the peer is not connected (reconnecting, or draining:
    /// PROTOCOL.md §6.10) may wait in the reconnect queue for the next connection. Default
    /// 10 s: long enough for a drain (the server waits up to its drain grace, 5 s by
    /// default, before its Close; the client then reconnects at once) and for a plain
    /// restart that takes a few seconds (the default backoff tries again at least every
    /// 5 s); short enough that a caller learns well before the 30 s call deadline that
    /// the server is not coming back. Zero disables the queue: such sends fail at once
    /// with `NotConnected`, as they did before there was one.
    pub reconnect_queue_timeout: Duration,
    /// The most frames the reconnect queue holds. Default 1,024. A send that would exceed
    /// it, or [`reconnect_queue_bytes`](Self::reconnect_queue_bytes), fails at once with
    /// `QueueFull`; what is already queued is kept (dropping the oldest would lose frames
    /// whose senders were told they were accepted). Zero disables the queue.
    pub reconnect_queue_frames: usize,
    /// The most bytes (encoded frames) the reconnect queue holds. Default 1 MiB, the same
    /// as the TypeScript client's: what a reconnecting peer holds stays small next to what
    /// the server buffers per peer. A frame near the server's default limit (a 1 MiB body)
    /// does not fit: raise this if the application sends such frames while reconnecting.
    pub reconnect_queue_bytes: usize,
    /// Largest frame body accepted *from the server*. Larger frames are a protocol
    /// violation and drop the connection. What the client may *send* is governed by the
    /// server's own limit announced in Welcome, not by this field.
    pub max_frame_len: u32,
    /// How long the connection may stay silent before the client probes it with a Ping,
    /// and again before it gives up on it. `None`: follow the server's `heartbeat_ms`
    /// from Welcome (15 s if the server announces 0).
    pub keepalive: Option<Duration>,
    /// Capacity of the queue between the reader thread and the dispatcher thread that runs
    /// handlers and listeners. When it is full the reader stops reading, so TCP flow control
    /// pushes back on the server instead of client memory growing.
    pub dispatch_queue: usize,
    /// Capacity of each receiver handed out by the `subscribe*` methods and by
    /// [`Watcher`](crate::Watcher). A full receiver blocks the dispatcher (backpressure,
    /// as above); a dropped receiver is unsubscribed.
    pub subscription_capacity: usize,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            peer_id: None,
            credentials: None,
            client_name: concat!("peerd-client/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            tls: TlsOptions::default(),
            default_call_timeout: Duration::from_secs(30),
            reconnect: ReconnectPolicy::default(),
            reconnect_queue_timeout: Duration::from_secs(10),
            reconnect_queue_frames: 1024,
            reconnect_queue_bytes: 1 << 20,
            // Relayed frames carry the sender's payload plus an envelope (topic, sender id),
            // so accept more than the server's default body limit.
            max_frame_len: 16 * DEFAULT_MAX_FRAME_LEN,
            keepalive: None,
            dispatch_queue: 1024,
            subscription_capacity: 1024,
        }
    }
}

impl PeerOptions {
    /// Defaults, see [`PeerOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare this peer id in Hello.
    pub fn peer_id(mut self, id: impl Into<String>) -> Self {
        self.peer_id = Some(id.into());
        self
    }

    /// Send these credentials in Hello.
    pub fn credentials(mut self, credentials: impl Into<Vec<u8>>) -> Self {
        self.credentials = Some(credentials.into());
        self
    }

    /// Client software name for the server's logs.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// TCP connect limit per address.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Hello -> Welcome limit.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Replace the TLS options.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Trust the CA certificates in this PEM file (one or more) instead of the system's,
    /// on `tls://` and `wss://` endpoints: shorthand for `tls.ca_file`.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Default deadline of calls and confirmed requests.
    pub fn default_call_timeout(mut self, d: Duration) -> Self {
        self.default_call_timeout = d;
        self
    }

    /// Replace the reconnect policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Shorthand for `reconnect(ReconnectPolicy::disabled())`.
    pub fn no_reconnect(mut self) -> Self {
        self.reconnect.enabled = false;
        self
    }

    /// How long a send made while not connected may wait for the next connection
    /// ([`PeerOptions::reconnect_queue_timeout`]); zero disables the queue.
    pub fn reconnect_queue_timeout(mut self, d: Duration) -> Self {
        self.reconnect_queue_timeout = d;
        self
    }

    /// The reconnect queue's bounds: at most `frames` frames and `bytes` bytes.
    pub fn reconnect_queue_limits(mut self, frames: usize, bytes: usize) -> Self {
        self.reconnect_queue_frames = frames;
        self.reconnect_queue_bytes = bytes;
        self
    }

    /// Fail sends made while not connected at once (`NotConnected`) instead of queueing
    /// them for the next connection.
    pub fn no_reconnect_queue(mut self) -> Self {
        self.reconnect_queue_frames = 0;
        self
    }

    /// Whether sends made while not connected are queued (reconnect on, bounds non-zero).
    pub(crate) fn queues_while_reconnecting(&self) -> bool {
        self.reconnect.enabled
            && !self.reconnect_queue_timeout.is_zero()
            && self.reconnect_queue_frames > 0
            && self.reconnect_queue_bytes > 0
    }

    /// Largest frame body accepted from the server.
    pub fn max_frame_len(mut self, n: u32) -> Self {
        self.max_frame_len = n;
        self
    }

    /// Silence interval after which the client probes the connection.
    pub fn keepalive(mut self, d: Duration) -> Self {
        self.keepalive = Some(d);
        self
    }

    /// Capacity of the reader -> dispatcher queue.
    pub fn dispatch_queue(mut self, n: usize) -> Self {
        self.dispatch_queue = n.max(1);
        self
    }

    /// Capacity of each subscription receiver.
    pub fn subscription_capacity(mut self, n: usize) -> Self {
        self.subscription_capacity = n.max(1);
        self
    }
}

/// Whom a `tls://` or `wss://` connection trusts.
///
/// With nothing set, the system's CA certificates (loaded once per process from where
/// OpenSSL looks: `SSL_CERT_FILE`, `SSL_CERT_DIR`, the distribution's bundle). With a CA
/// file or roots, exactly those and not the system's: a private deployment's CA should
/// not widen to every public CA. The server's certificate must name the endpoint's host
/// (a DNS name, or an IP address in an IP SAN).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// A PEM file with one or more CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// CA certificates (DER) to trust, together with `ca_file`'s.
    pub roots: Vec<CertificateDer<'static>>,
    /// A complete rustls configuration (client certificates, a custom verifier, ALPN),
    /// used as it is: the fields above are then ignored.
    pub config: Option<Arc<rustls::ClientConfig>>,
}

impl TlsOptions {
    /// System roots; see the type's docs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA certificates in this PEM file.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Trust this CA certificate (DER) too.
    pub fn root(mut self, cert: CertificateDer<'static>) -> Self {
        self.roots.push(cert);
        self
    }

    /// Use this rustls configuration as it is.
    pub fn client_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.config = Some(config);
        self
    }
}

/// Exponential backoff with full jitter between reconnect attempts.
///
/// Attempt `n` (0-based) waits a uniformly random time in `[0, min(max_backoff,
/// initial_backoff * 2^n)]` (the "full jitter" of the AWS architecture blog): a server
/// restart then sees its clients come back spread over the window instead of in lockstep.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Reconnect at all. Default true.
    pub enabled: bool,
    /// Cap of the first delay. Default 100 ms.
    pub initial_backoff: Duration,
    /// Largest delay. Default 5 s.
    pub max_backoff: Duration,
    /// Give up (state Closed) after this many failed attempts; `None` = never.
    pub max_attempts: Option<u32>,
    /// Randomize each delay in `[0, cap]`. Default true; false waits exactly `cap`.
    pub jitter: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_attempts: None,
            jitter: true,
        }
    }
}

impl ReconnectPolicy {
    /// A policy that never reconnects.
    pub fn disabled() -> Self {
        ReconnectPolicy {
            enabled: false,
            ..Self::default()
        }
    }

    /// First delay cap.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Largest delay.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Give up after `n` failed attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Turn jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The upper bound of the delay before attempt `attempt` (0-based):
    /// `min(max_backoff, initial_backoff * 2^attempt)`, without overflow.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff)
    }

    /// The delay before attempt `attempt`, drawing jitter from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let cap = self.cap(attempt);
        if !self.jitter || cap.is_zero() {
            return cap;
        }
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=nanos))
    }

    /// Whether another attempt may follow `failed` failed ones.
    pub fn may_retry(&self, failed: u32) -> bool {
        self.enabled && self.max_attempts.is_none_or(|max| failed < max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let o = PeerOptions::default();
        assert_eq!(o.peer_id, None);
        assert_eq!(o.credentials, None);
        assert!(o.client_name.starts_with("peerd-client/"));
        assert_eq!(o.default_call_timeout, Duration::from_secs(30));
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.handshake_timeout, Duration::from_secs(5));
        assert_eq!(o.dispatch_queue, 1024);
        assert_eq!(o.reconnect_queue_timeout, Duration::from_secs(10));
        assert_eq!(
            (o.reconnect_queue_frames, o.reconnect_queue_bytes),
            (1024, 1 << 20)
        );
        assert!(o.queues_while_reconnecting());
        assert!(!o.clone().no_reconnect_queue().queues_while_reconnecting());
        assert!(!o.clone().no_reconnect().queues_while_reconnecting());
        assert!(!o
            .clone()
            .reconnect_queue_timeout(Duration::ZERO)
            .queues_while_reconnecting());
        assert!(o.max_frame_len > DEFAULT_MAX_FRAME_LEN);
        let r = o.reconnect;
        assert!(r.enabled);
        assert!(r.jitter);
        assert_eq!(r.initial_backoff, Duration::from_millis(100));
        assert_eq!(r.max_backoff, Duration::from_secs(5));
        assert_eq!(r.max_attempts, None);
    }

    #[test]
    fn builders_set_fields() {
        let o = PeerOptions::new()
            .peer_id("alice")
            .credentials(b"secret".to_vec())
            .no_reconnect()
            .dispatch_queue(0);
        assert_eq!(o.peer_id.as_deref(), Some("alice"));
        assert_eq!(o.credentials.as_deref(), Some(&b"secret"[..]));
        assert!(!o.reconnect.enabled);
        assert_eq!(
            o.dispatch_queue, 1,
            "a zero-capacity queue would be a rendezvous channel"
        );
    }

    #[test]
    fn backoff_cap_doubles_then_saturates() {
        let p = ReconnectPolicy::default().jitter(false);
        let ms = |a| p.cap(a).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)],
            [100, 200, 400, 800, 1600, 3200, 5000]
        );
        // No overflow, however many attempts.
        assert_eq!(p.cap(64), Duration::from_secs(5));
        assert_eq!(p.cap(u32::MAX), Duration::from_secs(5));
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(p.delay(3, &mut rng), Duration::from_millis(800));
    }

    #[test]
    fn jittered_delays_stay_within_zero_and_cap_and_spread() {
        let p = ReconnectPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 0..40 {
            let cap = p.cap(attempt);
            let samples: Vec<Duration> = (0..200).map(|_| p.delay(attempt, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "attempt {attempt}");
            // Full jitter: the samples cover the window, they do not cluster at the cap.
            let below_half = samples.iter().filter(|d| **d < cap / 2).count();
            assert!(
                (40..=160).contains(&below_half),
                "attempt {attempt}: {below_half}"
            );
        }
    }

    #[test]
    fn huge_backoffs_do_not_overflow() {
        let p = ReconnectPolicy::default()
            .initial_backoff(Duration::from_secs(u64::MAX / 4))
            .max_backoff(Duration::MAX);
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(p.cap(10), Duration::MAX);
        let _ = p.delay(10, &mut rng);
    }

    #[test]
    fn max_attempts_limits_retries() {
        let p = ReconnectPolicy::default().max_attempts(3);
        assert!(p.may_retry(0));
        assert!(p.may_retry(2));
        assert!(!p.may_retry(3));
        assert!(ReconnectPolicy::default().may_retry(1_000_000));
        assert!(!ReconnectPolicy::disabled().may_retry(0));
    }
}
