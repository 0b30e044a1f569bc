//! TLS for `tls://` and `wss://` endpoints: loading the certificate and key
//! ([`server_config`]), and one connection's TLS state ([`TlsSession`]) driven by the
//! connection's own socket calls.
//!
//! rustls is used sans-io: it never owns the socket. Ciphertext is read from the socket
//! straight into rustls (`read_tls` over a non-blocking `recv`), so nothing is read that
//! rustls cannot take; glommio is asked to wait only when that `recv` would block (with a
//! one-byte read, which arms its poll and hands rustls whatever byte arrived). Plaintext
//! out of rustls lands in the connection's ordinary receive buffer, so everything above
//! (WebSocket deframing, peerd frames) is the same as on plain TCP. On the way out, queued
//! frames are handed to rustls (bounded by its 64 KiB buffer limit, so a slow TLS reader
//! holds at most that much inside rustls besides its charged queue) and the records written
//! with a non-blocking `send`; records the socket would not take are moved into
//! [`TlsSession::stalled`] for the drain task to write when the socket has room.
//!
//! What a TLS connection costs that a plain one does not: rustls's state (a few KiB, plus a
//! 4 KiB receive buffer it keeps while idle), and the copy into and out of rustls.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

use crate::stream;

/// Build the rustls server configuration from PEM files: the certificate chain (leaf
/// first) and its private key. TLS 1.2 and 1.3, ring as the crypto provider, no client
/// certificates. The certificate sits in a [`CertSlot`], which `PeerServer::reload_tls`
/// refills (SIGHUP): handshakes from then on present the new one; sessions already
/// established keep theirs.
pub(crate) fn server_config(
    cert_chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Arc<ServerConfig>, Arc<CertSlot>), String> {
    let slot = Arc::new(CertSlot(RwLock::new(certified_key(cert_chain, key)?)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(slot.clone());
    Ok((Arc::new(config), slot))
}

/// Load a certificate chain and its key, checked to be a pair.
pub(crate) fn certified_key(
    cert_chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_chain)
        .map_err(|e| format!("reading certificate chain {}: {e}", cert_chain.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("parsing certificate chain {}: {e}", cert_chain.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert_chain.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading private key {}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("certificate and key do not make a usable pair: {e}"))
}

/// The server's certificate, replaceable while it runs.
#[derive(Debug)]
pub(crate) struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// One connection's TLS state.
pub(crate) struct TlsSession {
    conn: ServerConnection,
    /// Records rustls produced that the socket would not take yet (written first, by the
    /// drain task when the socket has room).
    pub stalled: Vec<u8>,
    /// Bytes of `stalled` already written.
    pub stalled_sent: usize,
    /// close_notify was queued.
    closed: bool,
    /// The last read from the socket was short: the socket was empty after it, so the next
    /// wait should not start with another `recv` that can only say EAGAIN.
    drained: bool,
}

/// `recv`/`send` on the connection's descriptor without blocking, as rustls's `Read` and
/// `Write`.
struct Fd(RawFd);

/// [`Fd`] for reading, remembering whether the read was short.
struct FdReader {
    fd: RawFd,
    short: bool,
}

impl Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = stream::recv(self.fd, buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match stream::send_vectored(self.0, bufs)? {
            Some(n) => Ok(n),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What reading ciphertext from the socket gave.
pub(crate) enum Fed {
    /// rustls took bytes (and processed them): look for plaintext again.
    Progress,
    /// The socket has nothing now: wait for readability.
    WouldBlock,
    /// End of stream.
    Eof,
}

impl TlsSession {
    pub fn new(config: &Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        Ok(TlsSession {
            conn: ServerConnection::new(config.clone())?,
            stalled: Vec::new(),
            stalled_sent: 0,
            closed: false,
            drained: false,
        })
    }

    /// Copy decrypted bytes into `buf`. `Ok(None)`: none yet; `Ok(Some(0))`: the peer ended
    /// the session (close_notify).
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.conn.reader().read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The socket holds more than its last short read left, its end (a poll said so): the
    /// next [`read_socket`](Self::read_socket) asks it.
    pub fn not_drained(&mut self) {
        self.drained = false;
    }

    /// Read what the socket has into rustls and process it. Right after a short read the
    /// socket is known to be empty: say WouldBlock without asking it (the wait that follows
    /// tries a read of its own first, so bytes that arrived since are not missed).
    pub fn read_socket(&mut self, fd: RawFd) -> io::Result<Fed> {
        if std::mem::take(&mut self.drained) {
            return Ok(Fed::WouldBlock);
        }
        let mut reader = FdReader { fd, short: false };
        match self.conn.read_tls(&mut reader) {
            Ok(0) => Ok(Fed::Eof),
            Ok(_) => {
                self.drained = reader.short;
                self.process()?;
                Ok(Fed::Progress)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fed::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Hand rustls bytes already read from the socket (the byte that ended a wait).
    pub fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.feed_some(&mut bytes)?;
        }
        Ok(())
    }

    /// Hand rustls what it takes now of `bytes` (at most a record's worth, and nothing while
    /// its plaintext buffer is full: read that out first) and decrypt it; `bytes` is
    /// advanced past what it took.
    pub fn feed_some(&mut self, bytes: &mut &[u8]) -> io::Result<()> {
        self.conn.read_tls(bytes)?;
        self.process()
    }

    fn process(&mut self) -> io::Result<()> {
        // A protocol error (a plaintext client, garbage, a bad record) queues an alert for
        // the peer; the caller flushes it and the connection ends.
        self.conn
            .process_new_packets()
            .map(|_| ())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Whether rustls has records to write, or the socket owes some from before.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write() || self.stalled_sent < self.stalled.len()
    }

    /// Encrypt as much of `plaintext` as rustls's buffer takes now; returns how much.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> usize {
        self.conn.writer().write(plaintext).unwrap_or(0)
    }

    /// Write records to the socket until it would block. `Ok(true)`: all written; `Ok(false)`:
    /// the socket is full, the rest is in `stalled` for the drain task.
    pub fn write_socket(&mut self, fd: RawFd) -> io::Result<bool> {
        if self.stalled_sent < self.stalled.len() {
            match stream::send_vectored(fd, &[IoSlice::new(&self.stalled[self.stalled_sent..])])? {
                Some(n) => self.stalled_sent += n,
                None => return Ok(false),
            }
            if self.stalled_sent < self.stalled.len() {
                return Ok(false);
            }
            self.stalled_consumed();
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Fd(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Move what rustls holds out, so the drain task can wait on it.
                    while self.conn.wants_write() {
                        self.conn.write_tls(&mut self.stalled)?;
                    }
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The drain task wrote all of `stalled`.
    pub fn stalled_consumed(&mut self) {
        self.stalled.clear();
        self.stalled_sent = 0;
        if self.stalled.capacity() > 64 * 1024 {
            self.stalled = Vec::new();
        }
    }

    /// End the session cleanly: a close_notify after what is queued.
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
        self.closed = true;
    }

    /// Whether close_notify was queued.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Whether records were left unwritten (a reset rather than a FIN at the end).
    pub fn unsent(&self) -> bool {
        self.conn.wants_write() || self.stalled_sent < self.stalled.len()
    }
}
