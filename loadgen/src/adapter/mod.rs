//! Protocol adapters: how a scenario's abstract operations become bytes on a socket.
//!
//! Scenarios speak only in terms of this trait (connect and handshake, send a request /
//! publish / direct message / broadcast carrying a payload, parse what comes back), so
//! another server (NATS, Redis, ...) is driven by the same scenario code through one more
//! adapter. Adapters do no IO of their own on the hot path: the engine owns the sockets and
//! hands adapters byte buffers; only the blocking set-up steps ([`Adapter::connect`],
//! [`Adapter::subscribe`]) touch the socket directly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;

pub mod floor;
pub mod link;
pub mod nats;
pub mod peerd;
pub mod redis;
pub mod wsop;

pub use link::{Link, Transport};

/// A connected, handshaken socket, still in blocking mode.
#[derive(Debug)]
pub struct Connected {
    /// The socket (TCP_NODELAY set).
    pub stream: TcpStream,
    /// This connection's identity on the server (peer id), where the protocol has one.
    pub peer_id: Option<String>,
    /// Bytes read during set-up past the last message it consumed: plaintext (after TLS),
    /// still in WebSocket frames over a WebSocket.
    pub leftover: Vec<u8>,
    /// TLS session and WebSocket framing, if any ([`Link::plain`] for plain TCP).
    pub link: Link,
}

impl Connected {
    /// A plain TCP connection.
    pub fn plain(stream: TcpStream, peer_id: Option<String>, leftover: Vec<u8>) -> Connected {
        Connected {
            stream,
            peer_id,
            leftover,
            link: Link::plain(),
        }
    }
}

/// Something the server sent, as a scenario sees it.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// The answer to one of our requests, carrying our payload back.
    Response(&'a [u8]),
    /// A request routed to this connection (p2p callee): answer it with `payload`.
    Request {
        /// Id to answer.
        id: u64,
        /// The caller's payload.
        payload: &'a [u8],
    },
    /// A message delivered to this connection (topic message, direct message, broadcast).
    Delivery(&'a [u8]),
    /// A liveness probe to answer with [`Adapter::encode_pong`].
    Ping(u64),
    /// A failure reported by the server. `ends_request`: it answers one of our requests
    /// (which will get no other answer).
    Error {
        /// Answers one of our requests.
        ends_request: bool,
        /// What the server said.
        message: String,
    },
    /// The server is closing this connection.
    Closed(String),
    /// Anything the scenarios do not look at (acks, presence, pongs).
    Ignored,
}

/// Connection-level options every adapter honours.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Deadline for connect + handshake.
    pub timeout: Duration,
    /// Local address to bind before connecting (to spread many connections over several
    /// loopback source addresses), or `None`.
    pub bind: Option<SocketAddr>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Duration::from_secs(5),
            bind: None,
        }
    }
}

/// A wire protocol, as the scenarios drive it.
pub trait Adapter: Send + Sync {
    /// Short name for reports ("peerd", "floor", "redis").
    fn name(&self) -> &'static str;

    /// Open a connection to `addr` and complete the protocol's handshake, declaring
    /// `peer_id` where the protocol has identities.
    fn connect(
        &self,
        addr: SocketAddr,
        peer_id: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<Connected>;

    /// Join `topic` on a connected socket and wait until the server confirms.
    fn subscribe(&self, _conn: &mut Connected, _topic: &str) -> Result<()> {
        bail!("protocol {} has no topics", self.name())
    }

    /// A request answered with `payload` echoed back: by the server's echo method when
    /// `target` is `None`, by peer `target` (p2p through the server) otherwise.
    fn encode_request(
        &self,
        out: &mut BytesMut,
        id: u64,
        target: Option<&str>,
        payload: &[u8],
    ) -> Result<()>;

    /// The answer to an [`Incoming::Request`].
    fn encode_response(&self, _out: &mut BytesMut, _id: u64, _payload: &[u8]) -> Result<()> {
        bail!("protocol {} cannot answer requests", self.name())
    }

    /// Publish `payload` to every subscriber of `topic`.
    fn encode_publish(&self, _out: &mut BytesMut, _topic: &str, _payload: &[u8]) -> Result<()> {
        bail!("protocol {} has no publish", self.name())
    }

    /// Send `payload` to one peer by id.
    fn encode_direct(&self, _out: &mut BytesMut, _target: &str, _payload: &[u8]) -> Result<()> {
        bail!("protocol {} has no direct messages", self.name())
    }

    /// Send `payload` to every other connected peer.
    fn encode_broadcast(&self, _out: &mut BytesMut, _payload: &[u8]) -> Result<()> {
        bail!("protocol {} has no broadcast", self.name())
    }

    /// Answer an [`Incoming::Ping`].
    fn encode_pong(&self, _out: &mut BytesMut, _nonce: u64) -> Result<()> {
        Ok(())
    }

    /// Parse every complete message at the start of `buf`, calling `on` for each; return how
    /// many bytes were consumed. An incomplete message at the end is left for the next call.
    fn parse(&self, buf: &[u8], on: &mut dyn FnMut(Incoming<'_>)) -> Result<usize>;

    /// Whether this adapter can do what `scenario` needs.
    fn supports(&self, scenario: &str) -> bool;
}

/// Connect a blocking TCP socket with TCP_NODELAY, optionally bound to a local address.
pub fn tcp_connect(addr: SocketAddr, opts: &ConnectOptions) -> Result<TcpStream> {
    let stream = match opts.bind {
        None => TcpStream::connect_timeout(&addr, opts.timeout)
            .with_context(|| format!("connecting to {addr}"))?,
        Some(local) => {
            let domain = socket2::Domain::for_address(addr);
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&local.into())
                .with_context(|| format!("binding {local}"))?;
            s.connect_timeout(&addr.into(), opts.timeout)
                .with_context(|| format!("connecting to {addr} from {local}"))?;
            s.into()
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Read from `stream` into `buf` until `parse` returns `Some`, or the deadline passes.
/// `parse` gets the whole buffer and returns (result, bytes consumed).
pub fn read_until<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>>,
) -> Result<T> {
    loop {
        if let Some((t, used)) = parse(buf)? {
            buf.drain(..used);
            return Ok(t);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out waiting for the server's answer");
        }
        stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).context("reading handshake")?;
        if n == 0 {
            bail!("server closed the connection during set-up");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Write all of `bytes` in blocking mode.
pub fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    stream.write_all(bytes).context("writing to server")
}

/// The adapter called `name` for `scenario`, over plain TCP.
pub fn by_name(name: &str, scenario: &str) -> Result<Box<dyn Adapter>> {
    build(name, scenario, Transport::default())
}

/// The adapter called `name` for `scenario` over `transport` (peerd: any; wsop: a
/// WebSocket; floor, redis and nats: plain TCP only). Only the floor's depends on the
/// scenario: its frames do not say whether they are answers or deliveries.
pub fn build(name: &str, scenario: &str, transport: Transport) -> Result<Box<dyn Adapter>> {
    let plain_only = |p: &str| -> Result<()> {
        if !transport.is_plain() {
            bail!(
                "protocol {p} runs over plain TCP only, not {}",
                transport.scheme()
            );
        }
        Ok(())
    };
    Ok(match name {
        "peerd" => {
            let mut transport = transport;
            if let Some(w) = &mut transport.ws {
                if w.subprotocol.is_empty() {
                    w.subprotocol = peerd::WS_SUBPROTOCOL.into();
                }
            }
            Box::new(peerd::Peerd::over(transport))
        }
        "wsop" => Box::new(wsop::WsOp::new(transport)?),
        "floor" => {
            plain_only(name)?;
            Box::new(floor::Floor::for_scenario(scenario))
        }
        "redis" => {
            plain_only(name)?;
            Box::new(redis::Redis)
        }
        "nats" => {
            plain_only(name)?;
            Box::new(nats::Nats::default())
        }
        other => {
            bail!("unknown protocol {other:?} (expected peerd, wsop, floor, redis or nats)")
        }
    })
}
