//! The admin listener of `peerd serve --admin ADDR`: `GET /metrics` (Prometheus text),
//! `/healthz` (200 while the process runs) and `/readyz` (200 while the server accepts
//! connections, 503 from the start of a drain).
//!
//! Why here and not in the library: an embedding program usually has an HTTP server of its
//! own, and the library should not impose a second one; what the library gives is the
//! data (`PeerServer::metrics`, `Metrics::to_prometheus`) and the readiness
//! (`PeerServer::is_ready`). Why plain blocking std sockets on threads of their own: this
//! is off the shards' path entirely (a scrape only puts one message in each shard's inbox),
//! it is a handful of requests a minute, and a thread per request needs no runtime.
//!
//! Every request is bounded: [`MAX_REQUEST`] bytes of request head (httparse parses it),
//! [`IO_TIMEOUT`] for reading it and for writing the answer, [`MAX_ACTIVE`] requests at
//! once (past that: 503 at once). One request per connection (`Connection: close`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerd_server::PeerServer;

/// Largest request head (request line and headers) read.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long a client has to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests served at once; more are answered 503 straight away.
pub const MAX_ACTIVE: usize = 8;

/// The admin address could not be listened on.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Something else listens there.
    #[error(
        "admin address {0} is already in use (another peerd or another program is listening there)"
    )]
    InUse(SocketAddr),
    /// Binding failed for another reason.
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The thread could not be started.
    #[error("cannot start the admin thread: {0}")]
    Thread(#[source] io::Error),
}

/// Bind the admin address: before the server starts, so that a taken address stops
/// `peerd serve` before anything else has started.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            AdminError::InUse(addr)
        } else {
            AdminError::Bind { addr, source: e }
        }
    })
}

/// Serve `listener` on a thread of its own until the process ends.
pub fn spawn(listener: TcpListener, server: Arc<PeerServer>) -> Result<(), AdminError> {
    std::thread::Builder::new()
        .name("peerd-admin".into())
        .spawn(move || accept_loop(listener, server))
        .map(drop)
        .map_err(AdminError::Thread)
}

fn accept_loop(listener: TcpListener, server: Arc<PeerServer>) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut last_warning: Option<Instant> = None;
    loop {
        let s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: say so at most once a second, and do
                // not spin.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "admin accept failed");
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_ACTIVE {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            respond(
                s,
                false,
                503,
                "text/plain",
                b"busy: too many admin requests at once\n",
            );
            continue;
        }
        let (server, done) = (server.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("peerd-admin-req".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve(s, &server);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "admin request thread not started");
        }
    }
}

/// Read one request and answer it.
fn serve(mut s: TcpStream, server: &PeerServer) {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if len == buf.len() {
            let body = b"request head larger than 8 KiB\n";
            return respond(s, false, 431, "text/plain", body);
        }
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let head = req.method == Some("HEAD");
                let (status, ctype, body) = route(req.method, req.path, server);
                return respond(s, head, status, ctype, &body);
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return respond(s, false, 431, "text/plain", b"too many headers\n");
            }
            Err(e) => {
                let body = format!("bad request: {e}\n");
                return respond(s, false, 400, "text/plain", body.as_bytes());
            }
        }
    }
}

/// What a request gets: status, content type, body.
fn route(
    method: Option<&str>,
    path: Option<&str>,
    server: &PeerServer,
) -> (u16, &'static str, Vec<u8>) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if !matches!(method, Some("GET" | "HEAD")) {
        return (405, TEXT, b"only GET and HEAD\n".to_vec());
    }
    let path = path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match path {
        "/metrics" => match server.metrics() {
            Ok(m) => {
                let ctype = peerd_server::prometheus::CONTENT_TYPE;
                (200, ctype, m.to_prometheus().into_bytes())
            }
            Err(e) => (503, TEXT, format!("{e}\n").into_bytes()),
        },
        "/healthz" => (200, TEXT, b"ok\n".to_vec()),
        "/readyz" if server.is_ready() => (200, TEXT, b"ready\n".to_vec()),
        "/readyz" => (503, TEXT, b"not ready: draining\n".to_vec()),
        _ => (
            404,
            TEXT,
            b"not found: /metrics, /healthz or /readyz\n".to_vec(),
        ),
    }
}

fn respond(mut s: TcpStream, head: bool, status: u16, ctype: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    let _ = s.write_all(&out);
    // Closing a socket with unread input makes the kernel send a reset, which can destroy
    // the answer before the client has read it: end our side, then read (and drop) what
    // the client still sends until it closes, for a short while at most.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 1024];
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match s.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}
