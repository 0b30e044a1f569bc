//! End to end through the real binary over WebSocket and WebSocket-in-TLS: a small wsop
//! server in this process (thread per connection, blocking, peerd-ws for the upgrade and
//! the deframing, rustls with the test certificate for wss) answers echo, subscribe and
//! publish; the loadgen's rpc, fanout and idle scenarios run against it and must see every
//! answer. This exercises the loadgen's WebSocket framing (masked client frames, whole
//! messages out of the receive buffer) and its non-blocking TLS in the engine.
//!
//! No wall-clock assertions; every run is bounded by its own --duration/--drain.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};

use peerd_ws::{write_frame, Deframer, Event, Opcode, Role, UpgradePolicy};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

mod common;
use common::{loadgen, out_dir};

fn testdata(f: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/tls")
        .join(f)
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// Each connection's queue of messages from publishers (its own thread writes them).
#[derive(Default)]
struct Topics(Mutex<HashMap<String, Vec<mpsc::Sender<Vec<u8>>>>>);

fn send(io: &mut dyn Io, msg: &[u8]) -> bool {
    let mut f = Vec::with_capacity(msg.len() + 10);
    write_frame(Opcode::Binary, true, msg, &mut f);
    io.write_all(&f).and_then(|_| io.flush()).is_ok()
}

/// One connection: upgrade, then wsop until the client goes. The thread owns the stream
/// (a TLS stream cannot be split): it reads with a short timeout, then writes what
/// publishers queued for it.
fn serve(mut io: Box<dyn Io>, sock: TcpStream, topics: Arc<Topics>) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut buf = vec![0u8; 1 << 16];
    let mut end = 0;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(1)))
        .unwrap();
    let read = |io: &mut Box<dyn Io>, buf: &mut [u8]| -> Option<usize> {
        match io.read(buf) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Some(0)
            }
            Err(_) => None,
        }
    };
    let policy = UpgradePolicy {
        path: None,
        protocol: None,
        origins: None,
        max_header: 8192,
    };
    let used = loop {
        if let Some((up, n)) = peerd_ws::parse_upgrade(&buf[..end], &policy).unwrap() {
            io.write_all(&up.response()).unwrap();
            io.flush().unwrap();
            break n;
        }
        match read(&mut io, &mut buf[end..]) {
            Some(n) => end += n,
            None => return,
        }
    };
    buf.copy_within(used..end, 0);
    end -= used;
    let mut d = Deframer::new(Role::Server, 1 << 20, false);
    let (mut app, mut raw) = (0, 0);
    loop {
        loop {
            let step = d.step(&mut buf, app, raw, end).unwrap();
            raw += step.consumed;
            match step.event {
                Event::NeedMore { .. } => break,
                Event::Data {
                    len,
                    end_of_message,
                } => {
                    app += len;
                    if let Some((_, total)) = end_of_message {
                        let m = buf[app - total..app].to_vec();
                        app -= total;
                        match m[0] {
                            b'E' => {
                                send(&mut *io, &m);
                            }
                            b'S' => {
                                let t = String::from_utf8(m[1..].to_vec()).unwrap();
                                topics
                                    .0
                                    .lock()
                                    .unwrap()
                                    .entry(t)
                                    .or_default()
                                    .push(tx.clone());
                                let mut a = m.clone();
                                a[0] = b'A';
                                send(&mut *io, &a);
                            }
                            b'P' => {
                                let n = m[1] as usize;
                                let t = std::str::from_utf8(&m[2..2 + n]).unwrap();
                                let subs = topics.0.lock().unwrap().get(t).cloned();
                                for s in subs.unwrap_or_default() {
                                    let _ = s.send(m[2 + n..].to_vec());
                                }
                            }
                            op => panic!("op {op}"),
                        }
                    }
                }
                Event::Ping { .. } | Event::Pong => {}
                Event::Close { .. } => return,
            }
        }
        if raw == end {
            raw = app;
            end = app;
        } else if end == buf.len() {
            buf.copy_within(raw..end, app);
            end -= raw - app;
            raw = app;
        }
        while let Ok(m) = rx.try_recv() {
            if !send(&mut *io, &m) {
                return;
            }
        }
        match read(&mut io, &mut buf[end..]) {
            Some(n) => end += n,
            None => return,
        }
    }
}

/// A wsop server on 127.0.0.1 (wss with the test certificate when `tls`).
fn start(tls: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let config = tls.then(|| {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(testdata("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(testdata("server.key")).unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        )
    });
    let topics = Arc::new(Topics::default());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            s.set_nodelay(true).unwrap();
            let topics = topics.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                let sock = s.try_clone().unwrap();
                let io: Box<dyn Io> = match config {
                    None => Box::new(s),
                    Some(c) => Box::new(rustls::StreamOwned::new(
                        rustls::ServerConnection::new(c).unwrap(),
                        s,
                    )),
                };
                serve(io, sock, topics);
            });
        }
    });
    addr
}

fn assert_all_answered(json: &serde_json::Value, sent: u64, per_msg: u64) {
    let run = &json["runs"][0];
    assert_eq!(run["sent"], sent, "{run}");
    assert_eq!(run["received"], sent * per_msg, "{run}");
    assert_eq!(run["missing"], 0);
    assert_eq!(run["errors"], 0, "{}", run["error_samples"]);
    assert_eq!(run["dead_connections"], 0);
}

#[test]
fn rpc_and_fanout_over_ws_and_wss() {
    let dir = out_dir("ws");
    let ca = testdata("ca.pem");
    for tls in [false, true] {
        let addr = start(tls);
        let url = format!("{}://{addr}/", if tls { "wss" } else { "ws" });
        let common = [
            "--protocol",
            "wsop",
            "--target",
            &url,
            "--ca",
            ca.to_str().unwrap(),
        ];
        let window = [
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--repetitions",
            "1",
            "--drain",
            "30",
        ];
        let tag = if tls { "wss" } else { "ws" };
        // 4 connections, 2000/s: 1000 requests in the window, each echoed.
        let mut a = vec!["rpc", "--rate", "2000", "--connections", "4"];
        a.extend(common);
        a.extend(window);
        let j = loadgen(&a, &dir, &format!("rpc-{tag}"));
        assert_eq!(j["protocol"], if tls { "wsop-tls" } else { "wsop" });
        assert_all_answered(&j, 1000, 1);
        // 1 publisher -> 5 subscribers at 400/s: 200 publishes, 1000 deliveries.
        let mut a = vec!["fanout", "--rate", "400", "--subscribers", "5"];
        a.extend(common);
        a.extend(window);
        let j = loadgen(&a, &dir, &format!("fanout-{tag}"));
        assert_all_answered(&j, 200, 5);
        // Idle connections: every one upgraded (and, for wss, through the TLS handshake).
        let mut a = vec!["idle", "--connections", "20", "--duration", "1"];
        a.extend(common);
        let j = loadgen(&a, &dir, &format!("idle-{tag}"));
        assert_eq!(j["idle"]["connected"], 20, "{}", j["idle"]);
        assert_eq!(j["idle"]["failed"], 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wss_needs_a_ca_for_an_external_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
        .args(["rpc", "--target", "wss://127.0.0.1:1/", "--no-progress"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca"), "{err}");
}

#[test]
fn a_wrong_ca_fails_the_tls_handshake() {
    let addr = start(true);
    let dir = out_dir("wrongca");
    std::fs::create_dir_all(&dir).unwrap();
    // A CA that did not sign the server's certificate: the server's own leaf.
    let out = Command::new(env!("CARGO_BIN_EXE_peerd-loadgen"))
        .args(["rpc", "--protocol", "wsop", "--no-progress", "--no-pin"])
        .arg("--target")
        .arg(format!("wss://{addr}/"))
        .arg("--ca")
        .arg(testdata("server.pem"))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS handshake"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
