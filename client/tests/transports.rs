//! The client over its other transports against the real server: a Unix socket
//! (`unix:/path`); `tls://`, `ws://` and `wss://` against the server's own listeners
//! (`peerd_server::listen` with several endpoints and the test certificate); and `tls://`
//! through a small rustls terminator in this file that decrypts and forwards to the
//! server's TCP port (an independent TLS server, and one whose connections a test can cut).
//! Features, presence across transports, reconnect with resume, and the typed failures
//! (untrusted or mismatched certificate, a plaintext port, a silent server, a refused
//! upgrade, a bad CA file).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerd_client::rustls;
use peerd_client::{
    connect, connect_endpoint, ClientError, Code, Peer, PeerOptions, PresenceEvent,
    ReconnectPolicy, State,
};
use peerd_server::{listen, Endpoint as ServerEndpoint, ListenOptions, PeerServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const WAIT: Duration = Duration::from_secs(10);

fn pki(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/tls")
        .join(file)
}

fn server_opts() -> ListenOptions {
    let mut o = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(2)
        .handle("echo", |_p, r| async move { Ok(r.params) });
    o.pin = false;
    o
}

fn tcp_server() -> PeerServer {
    listen(server_opts()).expect("listen")
}

fn unix_server(path: &Path) -> PeerServer {
    let mut o = server_opts();
    o.endpoints = vec![ServerEndpoint::Unix(path.to_path_buf())];
    listen(o).expect("listen on a unix socket")
}

/// A socket path of its own per test, removed at the end.
struct TempSock(PathBuf);

impl TempSock {
    fn new(name: &str) -> TempSock {
        let p =
            std::env::temp_dir().join(format!("peerd-client-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempSock(p)
    }
}

impl Drop for TempSock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::default()
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(200))
}

/// Wait until `srv` lists `id`.
fn wait_listed(srv: &PeerServer, id: &str) {
    let deadline = Instant::now() + WAIT;
    while !srv.connections().iter().any(|c| c.peer_id == id) {
        assert!(Instant::now() < deadline, "{id} never showed up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// Unix sockets

#[test]
fn unix_socket_rpc_topics_and_presence_with_a_tcp_peer() {
    let sock = TempSock::new("features");
    let srv = unix_server(&sock.0);
    let ep = format!("unix:{}", sock.0.display());
    let a = connect_endpoint(&ep, PeerOptions::new().peer_id("ux-alice")).unwrap();
    assert_eq!(
        &a.rpc().call("echo", b"over unix").unwrap()[..],
        b"over unix"
    );
    assert!(a.ping(WAIT).is_ok());

    let w = a.watch(Some("room")).unwrap();
    let b = connect_endpoint(ep.as_str(), PeerOptions::new().peer_id("ux-bob")).unwrap();
    let msgs = b.subscribe("room");
    b.join("room").unwrap();
    assert_eq!(
        w.recv_timeout(WAIT),
        Some(PresenceEvent::Join("ux-bob".into()))
    );
    a.publish_confirmed("room", b"hi", false).unwrap();
    let m = msgs.recv_timeout(WAIT).unwrap();
    assert_eq!((m.from.as_str(), &m.payload[..]), ("ux-alice", &b"hi"[..]));
    b.rpc()
        .handle("triple", |r| Ok([&r.params[..]; 3].concat()));
    assert_eq!(
        &a.rpc().call_peer("ux-bob", "triple", b"ab").unwrap()[..],
        b"ababab"
    );
    b.disconnect();
    assert_eq!(
        w.recv_timeout(WAIT),
        Some(PresenceEvent::Leave("ux-bob".into()))
    );
    drop(srv);
}

#[test]
fn unix_socket_reconnects_and_resumes_on_the_same_path() {
    let sock = TempSock::new("resume");
    let srv = unix_server(&sock.0);
    let ep = format!("unix:{}", sock.0.display());
    let p = connect_endpoint(
        &ep,
        PeerOptions::new()
            .peer_id("ux-phoenix")
            .reconnect(fast_reconnect())
            .keepalive(Duration::from_millis(250)),
    )
    .unwrap();
    p.join("t").unwrap();
    let states = p.state_changes();
    srv.close();
    assert_eq!(states.recv_timeout(WAIT), Ok(State::Reconnecting));
    drop(srv);

    let srv2 = unix_server(&sock.0);
    wait_listed(&srv2, "ux-phoenix");
    p.when_ready(WAIT).unwrap();
    assert_eq!(p.peer_id().as_deref(), Some("ux-phoenix"));
    assert_eq!(&p.rpc().call("echo", b"back").unwrap()[..], b"back");
    // The topic was re-joined on the new server.
    let q = connect_endpoint(&ep, PeerOptions::new().peer_id("ux-q")).unwrap();
    let deadline = Instant::now() + WAIT;
    while q.list_peers(Some("t")).unwrap() != vec!["ux-phoenix".to_string()] {
        assert!(Instant::now() < deadline, "re-joined after the reconnect");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_missing_unix_socket_is_a_typed_error() {
    let sock = TempSock::new("nobody");
    let p = Peer::with_endpoint(format!("unix:{}", sock.0.display()), PeerOptions::new()).unwrap();
    let e = p.connect().unwrap_err();
    assert!(
        matches!(&e, ClientError::UnixIo { path, .. } if *path == sock.0),
        "{e}"
    );
    assert!(e.to_string().contains("unix:"), "{e}");
    assert_eq!(p.state(), State::Idle);
}

// ---------------------------------------------------------------------------------------
// TLS through a terminator

fn server_tls_config() -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// Accepts TLS on `bind`, and pipes each connection's plaintext to `backend` over TCP
/// and back: a TLS-terminating proxy in front of the real server. `cut()` drops every
/// connection it carries (both sides), as a network failure would.
struct Terminator {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Terminator {
    fn start(bind: &str, backend: SocketAddr) -> Terminator {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let live = Arc::new(Mutex::new(Vec::new()));
        let config = server_tls_config();
        let l = live.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(up) = TcpStream::connect(backend) else {
                    continue;
                };
                {
                    let mut l = l.lock().unwrap();
                    l.push(client.try_clone().unwrap());
                    l.push(up.try_clone().unwrap());
                }
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                pipe(client, up, conn);
            }
        });
        Terminator { addr, live }
    }

    fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Two threads per connection sharing the TLS state (the same split the client does).
fn pipe(client: TcpStream, up: TcpStream, conn: rustls::ServerConnection) {
    let tls = Arc::new(Mutex::new(conn));
    let flush = |c: &mut rustls::ServerConnection, mut s: &TcpStream| -> std::io::Result<()> {
        while c.wants_write() {
            c.write_tls(&mut s)?;
        }
        Ok(())
    };
    // client -> backend
    {
        let (tls, client, up) = (
            tls.clone(),
            client.try_clone().unwrap(),
            up.try_clone().unwrap(),
        );
        std::thread::spawn(move || {
            let mut cbuf = vec![0u8; 64 * 1024];
            let mut plain = Vec::new();
            'outer: loop {
                let n = match (&client).read(&mut cbuf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                {
                    let mut c = tls.lock().unwrap();
                    let mut rest = &cbuf[..n];
                    while !rest.is_empty() {
                        if c.read_tls(&mut rest).is_err() || c.process_new_packets().is_err() {
                            let _ = flush(&mut c, &client);
                            break 'outer;
                        }
                        let mut chunk = [0u8; 16 * 1024];
                        while let Ok(k) = c.reader().read(&mut chunk) {
                            if k == 0 {
                                break;
                            }
                            plain.extend_from_slice(&chunk[..k]);
                        }
                    }
                    if flush(&mut c, &client).is_err() {
                        break;
                    }
                }
                if (&up).write_all(&plain).is_err() {
                    break;
                }
                plain.clear();
            }
            let _ = up.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
        });
    }
    // backend -> client
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match (&up).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut c = tls.lock().unwrap();
            if c.writer().write_all(&buf[..n]).is_err() || flush(&mut c, &client).is_err() {
                break;
            }
        }
        let mut c = tls.lock().unwrap();
        c.send_close_notify();
        let _ = flush(&mut c, &client);
        let _ = client.shutdown(Shutdown::Both);
    });
}

fn tls_opts(id: &str) -> PeerOptions {
    PeerOptions::new().peer_id(id).ca_file(pki("ca.pem"))
}

#[test]
fn tls_rpc_topics_and_presence_with_a_tcp_peer() {
    let srv = tcp_server();
    let term = Terminator::start("127.0.0.1:0", srv.local_addr().unwrap());
    for host in ["localhost", "127.0.0.1"] {
        let ep = format!("tls://{host}:{}", term.addr.port());
        let id = format!("tls-{}", host.replace('.', "-"));
        let a = connect_endpoint(&ep, tls_opts(&id)).unwrap();
        assert_eq!(a.peer_id().as_deref(), Some(id.as_str()));
        assert_eq!(&a.rpc().call("echo", b"secret").unwrap()[..], b"secret");
        // A large frame spans many TLS records both ways.
        let big = vec![7u8; 300 * 1024];
        assert_eq!(a.rpc().call("echo", &big).unwrap().len(), big.len());
        assert!(a.ping(WAIT).is_ok());

        // A plain TCP peer and the TLS peer see each other.
        let w = a.watch(Some("mixed")).unwrap();
        let b = connect(
            srv.local_addr().unwrap(),
            PeerOptions::new().peer_id("tcp-b"),
        )
        .unwrap();
        let msgs = a.subscribe("mixed");
        a.join("mixed").unwrap();
        b.join("mixed").unwrap();
        let mut joined = Vec::new();
        while joined.len() < 2 {
            match w.recv_timeout(WAIT) {
                Some(PresenceEvent::Join(p)) => joined.push(p),
                other => panic!("{other:?}"),
            }
        }
        joined.sort();
        assert!(joined.contains(&"tcp-b".to_string()), "{joined:?}");
        b.publish_confirmed("mixed", b"from tcp", false).unwrap();
        let m = msgs.recv_timeout(WAIT).unwrap();
        assert_eq!(
            (m.from.as_str(), &m.payload[..]),
            ("tcp-b", &b"from tcp"[..])
        );
        b.rpc()
            .handle("who", |r| Ok(r.from.unwrap_or_default().into_bytes()));
        assert_eq!(
            a.rpc().call_peer("tcp-b", "who", b"").unwrap(),
            id.as_bytes()
        );
        b.disconnect();
        a.disconnect();
        assert_eq!(a.state(), State::Closed);
    }
}

#[test]
fn tls_reconnects_through_the_same_endpoint_and_resumes() {
    let srv = tcp_server();
    let term = Terminator::start("127.0.0.1:0", srv.local_addr().unwrap());
    let p = connect_endpoint(
        format!("tls://localhost:{}", term.addr.port()),
        tls_opts("tls-phoenix")
            .reconnect(fast_reconnect())
            .keepalive(Duration::from_millis(250)),
    )
    .unwrap();
    p.join("t").unwrap();
    let first_session = p.session_id();
    let states = p.state_changes();
    term.cut();
    assert_eq!(states.recv_timeout(WAIT), Ok(State::Reconnecting));
    assert_eq!(states.recv_timeout(WAIT), Ok(State::Active));
    assert_eq!(p.peer_id().as_deref(), Some("tls-phoenix"));
    assert_ne!(p.session_id(), first_session, "a new session");
    assert_eq!(&p.rpc().call("echo", b"again").unwrap()[..], b"again");
    let q = connect(srv.local_addr().unwrap(), PeerOptions::new()).unwrap();
    let deadline = Instant::now() + WAIT;
    while q.list_peers(Some("t")).unwrap() != vec!["tls-phoenix".to_string()] {
        assert!(Instant::now() < deadline, "re-joined after the reconnect");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_untrusted_certificate_is_a_typed_tls_error() {
    let srv = tcp_server();
    let term = Terminator::start("127.0.0.1:0", srv.local_addr().unwrap());
    // The server's own certificate as the only "CA": its issuer is not trusted.
    let p = Peer::with_endpoint(
        format!("tls://localhost:{}", term.addr.port()),
        PeerOptions::new().ca_file(pki("server.pem")),
    )
    .unwrap();
    let e = p.connect().unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Tls {
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                name,
                ..
            } if name == "localhost"
        ),
        "{e:?}"
    );
    assert!(!e.is_permanent(), "a certificate can be fixed server-side");
    assert_eq!(p.state(), State::Idle);
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let srv = tcp_server();
    // 127.0.0.2 is loopback too, but not a name in the certificate.
    let term = Terminator::start("127.0.0.2:0", srv.local_addr().unwrap());
    let e = connect_endpoint(
        format!("tls://127.0.0.2:{}", term.addr.port()),
        tls_opts("x"),
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Tls {
                source: rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                ),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn tls_to_a_plaintext_port_fails_fast() {
    let srv = tcp_server();
    let start = Instant::now();
    let e = connect_endpoint(
        format!("tls://127.0.0.1:{}", srv.local_addr().unwrap().port()),
        tls_opts("x").handshake_timeout(Duration::from_secs(30)),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Tls { .. } | ClientError::ClosedDuringHandshake
        ),
        "{e:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "not at the deadline"
    );
}

#[test]
fn the_handshake_deadline_covers_the_tls_handshake_and_the_websocket_upgrade() {
    // The backlog completes the TCP connect; nobody answers the ClientHello.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let e = connect_endpoint(
        format!("tls://localhost:{}", silent.local_addr().unwrap().port()),
        tls_opts("x").handshake_timeout(Duration::from_millis(200)),
    )
    .unwrap_err();
    assert!(matches!(e, ClientError::HandshakeTimeout), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Nobody answers the WebSocket upgrade request either.
    let start = Instant::now();
    let e = connect_endpoint(
        format!("ws://127.0.0.1:{}/", silent.local_addr().unwrap().port()),
        PeerOptions::new().handshake_timeout(Duration::from_millis(200)),
    )
    .unwrap_err();
    assert!(matches!(e, ClientError::HandshakeTimeout), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_ca_files_are_setup_errors_before_connecting() {
    let e = Peer::with_endpoint(
        "tls://localhost:1",
        PeerOptions::new().ca_file("/nonexistent/ca.pem"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ClientError::TlsSetup(m) if m.contains("/nonexistent/ca.pem")),
        "{e}"
    );
    // A PEM file with a key and no certificate.
    let e = Peer::with_endpoint(
        "tls://localhost:1",
        PeerOptions::new().ca_file(pki("server.key")),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ClientError::TlsSetup(m) if m.contains("no certificates")),
        "{e}"
    );
    // Only TLS endpoints read it.
    assert!(Peer::with_endpoint(
        "tcp://localhost:1",
        PeerOptions::new().ca_file("/nonexistent/ca.pem")
    )
    .is_ok());
    let e = Peer::with_endpoint("http://localhost:1", PeerOptions::new()).unwrap_err();
    assert!(matches!(e, ClientError::InvalidEndpoint { .. }), "{e}");
    assert!(e.is_permanent());
    let _ = Code::Normal;
}

// ---------------------------------------------------------------------------------------
// Every transport against the real server's own listeners (tcp, unix, tls, ws, wss)

/// A server listening on `endpoints`, with the test certificate for tls:// and wss://, a
/// `kick` RPC that disconnects the caller, and `echo`.
fn multi_server(endpoints: Vec<ServerEndpoint>) -> PeerServer {
    let mut o = server_opts().handle("kick", |p, _r| async move {
        p.disconnect();
        Ok(Vec::new().into())
    });
    o.endpoints = endpoints;
    o.tls = Some(peerd_server::TlsFiles {
        cert_chain: pki("server.pem"),
        key: pki("server.key"),
    });
    listen(o).expect("listen on every transport")
}

/// The client endpoints of a server's listeners, in order, with the host of the TLS
/// ones as `localhost` (the name in the certificate, so that name checks are exercised
/// too) where `by_name`.
fn client_endpoints(srv: &PeerServer, by_name: bool) -> Vec<String> {
    srv.endpoints()
        .iter()
        .map(|e| {
            let s = e.to_string();
            if by_name && e.is_tls() {
                s.replace("127.0.0.1", "localhost")
            } else {
                s
            }
        })
        .collect()
}

fn every_endpoint(sock: &TempSock) -> Vec<ServerEndpoint> {
    [
        "127.0.0.1:0",
        "tls://127.0.0.1:0",
        "ws://127.0.0.1:0/peerd",
        "wss://127.0.0.1:0/peerd",
    ]
    .iter()
    .map(|s| ServerEndpoint::parse(s).unwrap())
    .chain([ServerEndpoint::Unix(sock.0.clone())])
    .collect()
}

#[test]
fn every_transport_reaches_every_other_through_the_real_server() {
    let sock = TempSock::new("every");
    let srv = multi_server(every_endpoint(&sock));
    let eps = client_endpoints(&srv, true);
    assert_eq!(eps.len(), 5, "{eps:?}");
    let names = ["tcp", "tls", "ws", "wss", "unix"];
    let peers: Vec<Peer> = eps
        .iter()
        .zip(names)
        .map(|(ep, name)| {
            connect_endpoint(ep, tls_opts(&format!("p-{name}")))
                .unwrap_or_else(|e| panic!("{ep}: {e}"))
        })
        .collect();
    let watcher = peers[0].watch(Some("all")).unwrap();
    let inboxes: Vec<_> = peers.iter().map(|p| p.subscribe("all")).collect();
    for (p, name) in peers.iter().zip(names) {
        // A frame far larger than one read, one TLS record or one WebSocket read buffer.
        let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(p.rpc().call("echo", &big).unwrap(), big, "{name}");
        assert!(p.ping(WAIT).is_ok(), "{name}");
        p.rpc()
            .handle("name", move |_| Ok(name.as_bytes().to_vec()));
        p.join("all").unwrap();
    }
    let mut joined = Vec::new();
    while joined.len() < names.len() {
        match watcher.recv_timeout(WAIT) {
            Some(PresenceEvent::Join(id)) => joined.push(id),
            other => panic!("{other:?} after {joined:?}"),
        }
    }
    let mut listed = peers[2].list_peers(Some("all")).unwrap();
    listed.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("p-{n}")).collect();
    want.sort();
    assert_eq!(listed, want);

    // Every transport calls every other, peer to peer.
    for (i, from) in peers.iter().enumerate() {
        for (j, to) in names.iter().enumerate() {
            if i != j {
                let r = from
                    .rpc()
                    .call_peer(&format!("p-{to}"), "name", b"")
                    .unwrap();
                assert_eq!(&r[..], to.as_bytes(), "{} -> {to}", names[i]);
            }
        }
    }
    // A publish from WebSocket over TLS reaches every member, whatever its transport.
    peers[3]
        .publish_confirmed("all", b"to everyone", true)
        .unwrap();
    for (inbox, name) in inboxes.iter().zip(names) {
        let m = inbox
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (m.from.as_str(), &m.payload[..]),
            ("p-wss", &b"to everyone"[..])
        );
    }
    // Our own close over WebSocket (peerd Close, then a WebSocket Close) is a clean leave.
    for (i, name) in [(2, "ws"), (3, "wss"), (1, "tls")] {
        peers[i].disconnect();
        assert_eq!(
            watcher.recv_timeout(WAIT),
            Some(PresenceEvent::Leave(format!("p-{name}")))
        );
    }
}

#[test]
fn websocket_and_tls_peers_reconnect_to_the_same_endpoint_and_resume() {
    let sock = TempSock::new("ws-resume");
    let srv = multi_server(every_endpoint(&sock));
    // The ports actually bound, so that the second server listens where the first did.
    let bound: Vec<ServerEndpoint> = srv.endpoints().to_vec();
    let eps = client_endpoints(&srv, true);
    let mut peers = Vec::new();
    for (ep, name) in eps[1..4].iter().zip(["tls", "ws", "wss"]) {
        let p = connect_endpoint(
            ep,
            tls_opts(&format!("r-{name}"))
                .reconnect(fast_reconnect())
                .keepalive(Duration::from_millis(250)),
        )
        .unwrap();
        p.join("t").unwrap();
        let states = p.state_changes();
        peers.push((p, states, name));
    }
    srv.close();
    for (p, states, name) in &peers {
        assert_eq!(states.recv_timeout(WAIT), Ok(State::Reconnecting), "{name}");
        let close = p.last_close().unwrap();
        assert_eq!(
            close.known_code(),
            Some(Code::Shutdown),
            "{name}: {close:?}"
        );
    }
    drop(srv);

    let srv2 = multi_server(bound);
    for (p, _, name) in &peers {
        let id = format!("r-{name}");
        wait_listed(&srv2, &id);
        p.when_ready(WAIT).unwrap();
        assert_eq!(p.peer_id().as_deref(), Some(id.as_str()));
        assert_eq!(
            &p.rpc().call("echo", b"back").unwrap()[..],
            b"back",
            "{name}"
        );
    }
    let q = connect(srv2.local_addr().unwrap(), PeerOptions::new()).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut members = q.list_peers(Some("t")).unwrap();
        members.sort();
        if members == ["r-tls", "r-ws", "r-wss"] {
            break;
        }
        assert!(Instant::now() < deadline, "re-joined: {members:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_server_side_disconnect_over_websocket_is_final() {
    let sock = TempSock::new("kick");
    let srv = multi_server(every_endpoint(&sock));
    let eps = client_endpoints(&srv, false);
    for ep in &eps[2..4] {
        let p = connect_endpoint(ep, tls_opts("kicked").reconnect(fast_reconnect())).unwrap();
        let states = p.state_changes();
        // The answer may or may not beat the Close; either way the session ends.
        let _ = p.rpc().call("kick", b"");
        let deadline = Instant::now() + WAIT;
        while p.state() != State::Closed {
            assert!(Instant::now() < deadline, "{ep}: {}", p.state());
            let _ = states.recv_timeout(Duration::from_millis(50));
        }
        let close = p.last_close().unwrap();
        assert_eq!(close.known_code(), Some(Code::Normal), "{ep}: {close:?}");
        assert_eq!(close.initiator, peerd_client::Initiator::Server, "{ep}");
    }
}

#[test]
fn websocket_refusals_are_typed() {
    let sock = TempSock::new("ws-refused");
    let srv = multi_server(every_endpoint(&sock));
    let eps = client_endpoints(&srv, false);
    // A path the server does not serve: HTTP 404, which a retry cannot fix.
    let wrong = eps[2].replace("/peerd", "/elsewhere");
    let e = connect_endpoint(&wrong, PeerOptions::new()).unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Upgrade {
                source: peerd_client::UpgradeError::Status { status: 404, .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_permanent());
    // ws:// to a port that speaks plain peerd: the answer is no HTTP at all.
    let plain = format!("ws://{}/", srv.local_addr().unwrap());
    let start = Instant::now();
    let e = connect_endpoint(&plain, PeerOptions::new()).unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Upgrade { .. } | ClientError::ClosedDuringHandshake
        ),
        "{e:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // wss:// with the wrong trust: a TLS error, before any HTTP.
    let e = connect_endpoint(&eps[3], PeerOptions::new().ca_file(pki("server.pem"))).unwrap_err();
    assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
    // Plain ws:// to the wss:// port.
    let e = connect_endpoint(
        eps[3].replace("wss://", "ws://"),
        PeerOptions::new().handshake_timeout(Duration::from_secs(2)),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Upgrade { .. }
                | ClientError::ClosedDuringHandshake
                | ClientError::HandshakeTimeout
                | ClientError::Io { .. }
        ),
        "{e:?}"
    );
}
