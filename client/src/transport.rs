//! The byte streams under peerd's framing: TCP or a Unix socket, optionally inside TLS,
//! optionally carrying one peerd frame per WebSocket message.
//!
//! A connection is split in two halves that never share a lock on the plain transports:
//! - [`WireReader`], owned by the one reader thread: yields the peerd bytes that arrived
//!   ([`Chunk`]), and over WebSocket the server's Pings (for the caller to answer through
//!   the write half) and its Close;
//! - [`WireWriter`], held by [`Link`](crate::link::Link) under the writers' mutex: writes
//!   one encoded frame (masked into a WebSocket message where needed) or raw bytes.
//!
//! Plus a third handle on the socket (`Socket::shutdown`) to end it from anywhere.
//! Enums, not trait objects: the match costs nothing next to a syscall, and the plain-TCP
//! path stays a direct `read`/`write` on the `TcpStream`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use peerd_codec::HEADER_LEN;
use peerd_ws::close::close_payload;
use peerd_ws::frame::{Opcode, WsError, MAX_CONTROL_PAYLOAD};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::endpoint::{Endpoint, EndpointError};
use crate::error::ClientError;
use crate::options::PeerOptions;
use crate::socket::{Got, ReadSome, Socket};
use crate::tls::{self, TlsReader, TlsShared};
use crate::ws::{self, Upgrading, WsRead, WsReader};

/// Read chunk size. One copy from this buffer into the framer keeps the code free of
/// `unsafe` uninitialized-buffer tricks; the framer then hands out frames zero-copy.
const READ_CHUNK: usize = 64 * 1024;

/// Where a connection attempt went, for errors.
#[derive(Debug, Clone)]
pub(crate) enum Remote {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl Remote {
    /// A socket error on this remote, typed; a TLS failure carried in it becomes
    /// [`ClientError::Tls`].
    pub(crate) fn io_error(&self, e: io::Error, target: &Target) -> ClientError {
        match self {
            Remote::Inet(addr) => match tls::tls_error(&e) {
                Some(t) => ClientError::Tls {
                    name: target.tls_name().unwrap_or_default(),
                    addr: *addr,
                    source: t.clone(),
                },
                None => ClientError::Io {
                    addr: *addr,
                    source: e,
                },
            },
            Remote::Unix(path) => ClientError::UnixIo {
                path: path.clone(),
                source: e,
            },
        }
    }

    /// A refused WebSocket upgrade, typed.
    pub(crate) fn upgrade_error(&self, e: crate::UpgradeError) -> ClientError {
        match self {
            Remote::Inet(addr) => ClientError::Upgrade {
                addr: *addr,
                source: e,
            },
            // No endpoint form puts WebSocket on a Unix socket.
            Remote::Unix(path) => {
                ClientError::Protocol(format!("WebSocket upgrade at {}: {e}", path.display()))
            }
        }
    }
}

/// Where and how a peer connects, worked out once (addresses resolved, TLS configured)
/// when the peer is made; every reconnect uses it again.
pub(crate) struct Target {
    place: Place,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    ws: Option<WsTarget>,
    /// The largest message the WebSocket reader accepts: one whole peerd frame.
    max_message: usize,
}

enum Place {
    /// Tried in order until one accepts.
    Inet(Vec<SocketAddr>),
    Unix(PathBuf),
}

/// What the WebSocket upgrade request names.
struct WsTarget {
    /// The `Host` header: `host:port`, IPv6 in brackets.
    host: String,
    /// The request target.
    path: String,
}

impl Target {
    /// Plain TCP to already resolved addresses (the `ToSocketAddrs` constructors).
    pub(crate) fn tcp(addrs: Vec<SocketAddr>) -> Target {
        Target {
            place: Place::Inet(addrs),
            tls: None,
            ws: None,
            max_message: 0,
        }
    }

    /// Resolve `ep`'s host and set up TLS as `opts` say.
    pub(crate) fn new(ep: &Endpoint, opts: &PeerOptions) -> Result<Target, ClientError> {
        let place = match ep {
            Endpoint::Unix(p) => Place::Unix(p.clone()),
            _ => {
                let hp = ep.host_port().expect("every endpoint but unix has a host");
                let addrs: Vec<SocketAddr> = (hp.host.as_str(), hp.port)
                    .to_socket_addrs()
                    .map_err(|e| ClientError::Resolve {
                        addr: ep.to_string(),
                        source: e,
                    })?
                    .collect();
                if addrs.is_empty() {
                    return Err(ClientError::Resolve {
                        addr: ep.to_string(),
                        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
                    });
                }
                Place::Inet(addrs)
            }
        };
        let tls = match ep.host_port() {
            Some(hp) if ep.uses_tls() => {
                let name =
                    tls::server_name(&hp.host).map_err(|_| ClientError::InvalidEndpoint {
                        endpoint: format!("{:?}", ep.to_string()),
                        source: EndpointError::InvalidHost(hp.host.clone()),
                    })?;
                Some((tls::client_config(&opts.tls)?, name))
            }
            _ => None,
        };
        let ws = match (ep.host_port(), ep.websocket_path()) {
            (Some(hp), Some(path)) => Some(WsTarget {
                host: hp.to_string(),
                path: path.to_string(),
            }),
            _ => None,
        };
        Ok(Target {
            place,
            tls,
            ws,
            max_message: opts.max_frame_len as usize + HEADER_LEN,
        })
    }

    fn tls_name(&self) -> Option<String> {
        self.tls.as_ref().map(|(_, n)| n.to_str().into_owned())
    }

    /// Connect the socket: each address in turn, each within `timeout`. `stop` is asked
    /// before each attempt (a disconnect meanwhile ends the loop with `Closed`).
    pub(crate) fn connect(
        &self,
        timeout: Duration,
        stop: impl Fn() -> bool,
    ) -> Result<(Socket, Remote), ClientError> {
        match &self.place {
            Place::Inet(addrs) => {
                let mut last_err = None;
                for addr in addrs {
                    if stop() {
                        return Err(ClientError::Closed);
                    }
                    match TcpStream::connect_timeout(addr, timeout) {
                        Ok(s) => {
                            let r = Remote::Inet(*addr);
                            s.set_nodelay(true).map_err(|e| r.io_error(e, self))?;
                            return Ok((Socket::Tcp(s), r));
                        }
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            last_err = Some(ClientError::ConnectTimeout { addr: *addr });
                        }
                        Err(e) => {
                            last_err = Some(ClientError::Io {
                                addr: *addr,
                                source: e,
                            })
                        }
                    }
                }
                Err(last_err.unwrap_or(ClientError::Closed))
            }
            Place::Unix(path) => {
                if stop() {
                    return Err(ClientError::Closed);
                }
                let r = Remote::Unix(path.clone());
                // No connect timeout: a local connect either completes or fails at once.
                #[cfg(unix)]
                return UnixStream::connect(path)
                    .map(|s| (Socket::Unix(s), r.clone()))
                    .map_err(|e| r.io_error(e, self));
                #[cfg(not(unix))]
                return Err(r.io_error(io::ErrorKind::Unsupported.into(), self));
            }
        }
    }

    /// The two halves of a connection over `sock`. Nothing is sent yet.
    pub(crate) fn open(&self, sock: &Socket) -> io::Result<(WireReader, WireWriter)> {
        let (src, sink) = match &self.tls {
            None => (
                Source::Plain(sock.try_clone()?),
                Sink::Plain(sock.try_clone()?),
            ),
            Some((config, name)) => {
                let shared = TlsShared::new(config.clone(), name.clone(), sock.try_clone()?)?;
                (
                    Source::Tls(TlsReader::new(shared.clone(), sock.try_clone()?)),
                    Sink::Tls(shared),
                )
            }
        };
        let ws = self.ws.as_ref().map(|_| WsReader::new(self.max_message));
        let reader = WireReader {
            src,
            // The WebSocket reader has its own buffer.
            buf: vec![0u8; if ws.is_some() { 0 } else { READ_CHUNK }].into_boxed_slice(),
            ws,
            ping: [0; MAX_CONTROL_PAYLOAD],
        };
        let writer = WireWriter {
            sink,
            ws: self.ws.is_some(),
        };
        Ok((reader, writer))
    }
}

/// The layer under peerd (or under WebSocket): the socket, or TLS on it.
pub(crate) enum Source {
    Plain(Socket),
    Tls(TlsReader),
}

impl ReadSome for Source {
    fn read_some(&mut self, dst: &mut [u8]) -> io::Result<Got> {
        match self {
            Source::Plain(s) => s.read_some(dst),
            Source::Tls(t) => t.read_some(dst),
        }
    }
}

/// What the reader got for peerd.
pub(crate) enum Chunk<'a> {
    /// peerd bytes (possibly none: something arrived that was not for peerd).
    Data(&'a [u8]),
    /// A WebSocket Ping: answer with a Pong carrying this payload.
    Ping(&'a [u8]),
    /// The server's WebSocket Close frame.
    Closed { status: Option<u16>, reason: String },
    /// The server broke the WebSocket protocol; close with this status.
    Violation(WsError),
    /// The stream ended without a transport-level close.
    Eof,
}

/// The read half of a connection; owned by the reader thread.
pub(crate) struct WireReader {
    src: Source,
    buf: Box<[u8]>,
    ws: Option<WsReader>,
    ping: [u8; MAX_CONTROL_PAYLOAD],
}

impl WireReader {
    /// Block (up to the socket's read timeout) until something arrives.
    pub(crate) fn read(&mut self) -> io::Result<Chunk<'_>> {
        let Some(ws) = &mut self.ws else {
            return match self.src.read_some(&mut self.buf)? {
                Got::Bytes(n) => Ok(Chunk::Data(&self.buf[..n])),
                Got::Nothing => Ok(Chunk::Data(&[])),
                Got::Eof => Ok(Chunk::Eof),
            };
        };
        Ok(match ws.read(&mut self.src)? {
            WsRead::Data(n) => Chunk::Data(ws.data(n)),
            WsRead::Ping { payload, len } => {
                self.ping = payload;
                Chunk::Ping(&self.ping[..len])
            }
            WsRead::Closed { status, reason } => Chunk::Closed { status, reason },
            WsRead::Violation(e) => Chunk::Violation(e),
            WsRead::Eof => Chunk::Eof,
        })
    }

    /// For a WebSocket transport, the upgrade request (sent before anything else), whose
    /// response [`read_upgrade`](Self::read_upgrade) then reads.
    pub(crate) fn upgrade_request(&mut self, target: &Target) -> Option<Vec<u8>> {
        let t = target.ws.as_ref()?;
        Some(self.ws.as_mut()?.upgrade_request(&t.host, &t.path))
    }

    /// Read (at most once) and check the upgrade response.
    pub(crate) fn read_upgrade(&mut self) -> io::Result<Upgrading> {
        let ws = self.ws.as_mut().expect("a WebSocket transport");
        ws.read_upgrade(&mut self.src)
    }
}

/// The write half of a connection; held under the writers' mutex.
pub(crate) struct WireWriter {
    sink: Sink,
    /// Frames go out as masked WebSocket messages.
    ws: bool,
}

enum Sink {
    Plain(Socket),
    Tls(Arc<TlsShared>),
}

impl WireWriter {
    /// Bytes to leave free in front of an encoded frame for the transport's own header.
    pub(crate) fn headroom(&self) -> usize {
        if self.ws {
            ws::HEADROOM
        } else {
            0
        }
    }

    /// Write `buf`: [`headroom`](Self::headroom) free bytes, then one whole peerd frame.
    pub(crate) fn write_frame(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.ws {
            let start = ws::frame_in_place(buf);
            self.write_raw(&buf[start..])
        } else {
            self.write_raw(buf)
        }
    }

    /// Write bytes as they are (below any WebSocket framing).
    pub(crate) fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(s) => (&*s).write_all(data),
            Sink::Tls(t) => t.write_all(data),
        }
    }

    /// A WebSocket Pong.
    pub(crate) fn write_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        debug_assert!(self.ws);
        self.write_raw(&ws::control_frame(Opcode::Pong, payload))
    }

    /// End the transport's own session, best effort: a WebSocket Close with `status`
    /// (none: an empty Close), then TLS close_notify.
    pub(crate) fn close(&mut self, status: Option<u16>, reason: &str) {
        if self.ws {
            let payload = status.map_or(Vec::new(), |s| close_payload(s, reason));
            let _ = self.write_raw(&ws::control_frame(Opcode::Close, &payload));
        }
        if let Sink::Tls(t) = &self.sink {
            t.close_notify();
        }
    }
}
