//! TLS for `tls://` and `wss://`: the rustls configuration from [`TlsOptions`], and one
//! connection's TLS state shared by its reader and its writers.
//!
//! Split IO: the reader thread reads ciphertext from its own socket handle without any
//! lock (it may block there for a whole keepalive interval), then takes the lock only to
//! feed those bytes to rustls, take the plaintext, and write whatever TLS output became
//! due (handshake messages, key updates, alerts). Writers take the same lock to encrypt
//! and write. One lock orders every ciphertext write, which TLS requires (records carry
//! sequence numbers). The cost: a writer blocked on a full socket also holds off the
//! reader's decryption until its write timeout kills the connection.
//!
//! The TLS handshake is not a separate step: the ClientHello is queued when the connection
//! is made, the first write (the WebSocket upgrade or the Hello, which rustls buffers until
//! the handshake completes) sends it, and the reader's loop drives the rest, all under the
//! handshake deadline.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::error::ClientError;
use crate::options::TlsOptions;
use crate::socket::{Got, ReadSome, Socket};

/// Ciphertext read size: a few full TLS records (16 KiB + overhead each).
const CIPHER_CHUNK: usize = 64 * 1024;

/// The rustls configuration for `opts`. With no CA given, the system's roots, loaded once
/// per process.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ClientError> {
    if let Some(c) = &opts.config {
        return Ok(c.clone());
    }
    if opts.ca_file.is_none() && opts.roots.is_empty() {
        static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
        return SYSTEM
            .get_or_init(|| system_roots().and_then(|r| build(r).map(Arc::new)))
            .clone()
            .map_err(ClientError::TlsSetup);
    }
    let mut roots = RootCertStore::empty();
    if let Some(path) = &opts.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClientError::TlsSetup(format!("CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ClientError::TlsSetup(format!(
                "CA file {}: no certificates in it (expected PEM 'BEGIN CERTIFICATE' blocks)",
                path.display()
            )));
        }
        add_all(&mut roots, certs, &path.display().to_string())?;
    }
    add_all(&mut roots, opts.roots.iter().cloned(), "TlsOptions::roots")?;
    build(roots).map(Arc::new).map_err(ClientError::TlsSetup)
}

fn add_all(
    roots: &mut RootCertStore,
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
    from: &str,
) -> Result<(), ClientError> {
    for c in certs {
        roots
            .add(c)
            .map_err(|e| ClientError::TlsSetup(format!("CA certificate from {from}: {e}")))?;
    }
    Ok(())
}

/// The system trust store, found where OpenSSL would look (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, the distribution's bundle such as `/etc/ssl/certs/ca-certificates.crt`).
///
/// rustls-native-certs rather than webpki-roots: it trusts what the machine's
/// administrator trusts (including a company CA installed system-wide) and follows the
/// distribution's updates, where webpki-roots compiles in a snapshot of Mozilla's list
/// that ages with the binary. It is maintained by the rustls project, reads files only (no
/// network), and on Linux adds only `openssl-probe` (a list of paths, no OpenSSL).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "no system CA certificates found{why}; pass a CA file (--ca FILE, \
             TlsOptions::ca_file) or set SSL_CERT_FILE"
        ));
    }
    Ok(roots)
}

fn build(roots: RootCertStore) -> Result<ClientConfig, String> {
    // The provider is named rather than taken from the process default, so that another
    // crate in the program enabling aws-lc-rs cannot make this ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The server name to verify: the endpoint's host, a DNS name or an IP address.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| e.to_string())
}

/// One connection's TLS state and the socket handle its ciphertext is written with.
pub(crate) struct TlsShared {
    state: Mutex<TlsState>,
}

struct TlsState {
    conn: ClientConnection,
    /// Write handle; all ciphertext goes out through it, under the lock.
    sock: Socket,
}

impl TlsState {
    /// Write all pending TLS output.
    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut &self.sock)?;
        }
        Ok(())
    }
}

/// A TLS error from rustls, as an `io::Error` that [`tls_error`] recognises again.
fn rustls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The rustls error inside an `io::Error` made by this module.
pub(crate) fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

impl TlsShared {
    /// A client connection to `name` whose ciphertext is written to `sock`. Nothing is
    /// sent yet: the ClientHello goes out with the first write.
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        sock: Socket,
    ) -> io::Result<Arc<TlsShared>> {
        let conn = ClientConnection::new(config, name).map_err(rustls_io)?;
        Ok(Arc::new(TlsShared {
            state: Mutex::new(TlsState { conn, sock }),
        }))
    }

    /// Encrypt and write all of `data`. Before the handshake completes rustls buffers the
    /// plaintext (up to its buffer limit, 64 KiB by default: far more than an upgrade
    /// request and a Hello) and sends it once the handshake is done.
    pub(crate) fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        while !data.is_empty() {
            let n = st.conn.writer().write(data)?;
            st.flush()?;
            if n == 0 {
                // Only possible while the handshake still holds back plaintext.
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "TLS buffer full before the handshake completed",
                ));
            }
            data = &data[n..];
        }
        st.flush()
    }

    /// Send close_notify, best effort (the socket is shut down next anyway).
    pub(crate) fn close_notify(&self) {
        let mut st = self.state.lock().unwrap();
        st.conn.send_close_notify();
        let _ = st.flush();
    }
}

/// The reader's side of a TLS connection: its own socket handle and the ciphertext read
/// but not yet fed to rustls.
pub(crate) struct TlsReader {
    shared: Arc<TlsShared>,
    sock: Socket,
    cbuf: Box<[u8]>,
    fed: usize,
    end: usize,
}

impl TlsReader {
    pub(crate) fn new(shared: Arc<TlsShared>, sock: Socket) -> TlsReader {
        TlsReader {
            shared,
            sock,
            cbuf: vec![0u8; CIPHER_CHUNK].into_boxed_slice(),
            fed: 0,
            end: 0,
        }
    }
}

impl ReadSome for TlsReader {
    /// Plaintext into `dst`. Blocks on the socket (without the lock) at most once per
    /// call, so a caller keeps control of its deadline: `Got::Nothing` means TLS records
    /// arrived that carried no application data (handshake, session tickets).
    fn read_some(&mut self, dst: &mut [u8]) -> io::Result<Got> {
        let mut did_read = false;
        loop {
            {
                let mut guard = self.shared.state.lock().unwrap();
                let st = &mut *guard;
                loop {
                    match st.conn.reader().read(dst) {
                        Ok(0) => return Ok(Got::Eof), // close_notify
                        Ok(n) => return Ok(Got::Bytes(n)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // TCP EOF without close_notify. peerd frames carry their length,
                        // so a truncation cannot pass for a shorter frame: plain EOF.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Got::Eof),
                        Err(e) => return Err(e),
                    }
                    if self.fed == self.end {
                        break;
                    }
                    let n = st.conn.read_tls(&mut &self.cbuf[self.fed..self.end])?;
                    if n == 0 {
                        // rustls took nothing although it had room (its buffers are
                        // drained above): never spin on that.
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "TLS reader made no progress",
                        ));
                    }
                    self.fed += n;
                    let processed = st.conn.process_new_packets();
                    // Handshake replies, or the alert that explains an error to the server.
                    let flushed = st.flush();
                    processed.map_err(rustls_io)?;
                    flushed?;
                }
            }
            if did_read {
                return Ok(Got::Nothing);
            }
            let n = (&self.sock).read(&mut self.cbuf)?;
            did_read = true;
            if n == 0 {
                // Tell rustls, which then reports a clean or an unclean close.
                let mut st = self.shared.state.lock().unwrap();
                st.conn.read_tls(&mut &[][..])?;
                st.conn.process_new_packets().map_err(rustls_io)?;
                match st.conn.reader().read(dst) {
                    Ok(n) if n > 0 => return Ok(Got::Bytes(n)),
                    _ => return Ok(Got::Eof),
                }
            }
            self.fed = 0;
            self.end = n;
        }
    }
}
