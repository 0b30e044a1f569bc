//! Authentication and permissions through real sockets: connect tokens (JWT) of each
//! algorithm accepted, bad ones refused with their code, expiry while connected, Refresh in
//! time, the permissions a token carries (each action refused with `unauthorized` and
//! nothing delivered), and the embedder's per-action callback.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use peerd_codec::codec::decode_bytes;
use peerd_codec::handshake::HandshakeError;
use peerd_codec::{self as codec, Code, Frame, SignalKind};
use peerd_server::jwt::{JwtAuth, PermissionClaims, TokenAlgorithm, TokenClaims, TokenSigner};
use peerd_server::{Action, Denied, ListenOptions, PeerServer};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/auth")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(testdata(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A verifier trusting every test key, without leeway so expiry tests are exact.
fn jwt() -> JwtAuth {
    JwtAuth::new()
        .hmac_secret_file(testdata("hs256.secret"))
        .unwrap()
        .public_key_file(testdata("rsa.pub.pem"), None)
        .unwrap()
        .public_key_file(testdata("ec.pub.pem"), None)
        .unwrap()
        .public_key_file(testdata("ed25519.pub.pem"), None)
        .unwrap()
        .leeway(Duration::ZERO)
}

fn signer(alg: TokenAlgorithm) -> TokenSigner {
    match alg {
        TokenAlgorithm::HS256 => TokenSigner::hmac_file(testdata("hs256.secret")).unwrap(),
        TokenAlgorithm::RS256 => TokenSigner::private_key_pem(alg, &read("rsa.key")).unwrap(),
        TokenAlgorithm::ES256 => TokenSigner::private_key_pem(alg, &read("ec.key")).unwrap(),
        TokenAlgorithm::EdDSA => TokenSigner::private_key_pem(alg, &read("ed25519.key")).unwrap(),
        other => panic!("no test key for {other}"),
    }
}

const ALGS: [TokenAlgorithm; 4] = [
    TokenAlgorithm::HS256,
    TokenAlgorithm::RS256,
    TokenAlgorithm::ES256,
    TokenAlgorithm::EdDSA,
];

fn token(alg: TokenAlgorithm, sub: &str, ttl_secs: u64) -> String {
    signer(alg)
        .sign(&TokenClaims::new(sub, Duration::from_secs(ttl_secs)))
        .unwrap()
}

fn opts(auth: JwtAuth) -> ListenOptions {
    ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(2)
        .handle("echo", |_p, r| async move { Ok(r.params) })
        .handle("peers", |_p, _r| async move { Ok(bytes::Bytes::new()) })
        .jwt(auth)
}

/// Hello declaring `id` (or none) with `token` (or none).
fn hello_with(id: Option<&str>, token: Option<&str>) -> codec::Hello<'static> {
    let mut h = hello(id, None);
    h.credentials = token.map(|t| t.as_bytes().to_vec().into());
    h
}

fn connect(
    srv: &PeerServer,
    id: Option<&str>,
    token: Option<&str>,
) -> Result<RawPeer, (u16, String)> {
    let mut p = RawPeer::tcp(srv.local_addr().unwrap());
    match p.handshake(&hello_with(id, token)) {
        Ok(_) => Ok(p),
        Err(HandshakeError::Refused { code, reason }) => Err((code, reason)),
        Err(e) => panic!("handshake: {e}"),
    }
}

fn refused(srv: &PeerServer, id: Option<&str>, token: Option<&str>) -> (Code, String) {
    match connect(srv, id, token) {
        Ok(p) => panic!("welcomed as {:?}, expected a Reject", p.peer_id),
        Err((code, reason)) => (Code::from_u16(code).expect("a defined code"), reason),
    }
}

#[test]
fn a_token_of_each_algorithm_is_accepted_and_names_the_peer() {
    let srv = server(opts(jwt()));
    for alg in ALGS {
        let sub = format!("user-{}", alg.name().to_lowercase());
        let t = token(alg, &sub, 60);
        // Declaring the token's own id.
        let mut p = connect(&srv, Some(&sub), Some(&t)).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(p.peer_id, sub);
        assert_eq!(p.call(1, "echo", b"hi").unwrap(), b"hi");
        drop(p);
        wait_until("released", || {
            srv.connections().iter().all(|c| c.peer_id != sub)
        });
        // Declaring none: the session takes `sub`.
        let p = connect(&srv, None, Some(&t)).unwrap();
        assert_eq!(p.peer_id, sub, "{alg}");
    }
}

#[test]
fn expired_early_wrongly_signed_alg_none_and_malformed_tokens_are_refused() {
    let srv = server(opts(jwt()));
    for alg in ALGS {
        let s = signer(alg);
        let mut c = TokenClaims::new("alice", Duration::ZERO);
        c.exp = now() - 5;
        let (code, reason) = refused(&srv, Some("alice"), Some(&s.sign(&c).unwrap()));
        assert_eq!(code, Code::TokenExpired, "{alg}: {reason}");

        let mut c = TokenClaims::new("alice", Duration::from_secs(60));
        c.nbf = Some(now() + 60);
        let (code, reason) = refused(&srv, Some("alice"), Some(&s.sign(&c).unwrap()));
        assert_eq!(code, Code::Unauthorized, "{alg}");
        assert!(reason.contains("not valid yet"), "{reason}");
    }
    // Wrongly signed: another secret, another RSA key, and a valid signature over other
    // claims (the payload swapped for one naming someone else).
    let other_hs = TokenSigner::hmac(&[b'x'; 32]).unwrap();
    let other_rsa =
        TokenSigner::private_key_pem(TokenAlgorithm::RS256, &read("rsa-other.key")).unwrap();
    for s in [other_hs, other_rsa] {
        let t = s
            .sign(&TokenClaims::new("alice", Duration::from_secs(60)))
            .unwrap();
        let (code, reason) = refused(&srv, Some("alice"), Some(&t));
        assert_eq!(
            (code, reason.as_str()),
            (Code::Unauthorized, "token signature does not verify")
        );
    }
    let alice = token(TokenAlgorithm::HS256, "alice", 60);
    let mallory = token(TokenAlgorithm::HS256, "mallory", 60);
    let parts: Vec<&str> = alice.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        mallory.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_eq!(refused(&srv, None, Some(&swapped)).0, Code::Unauthorized);

    // alg none: the claims of a good token, no signature.
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
        let none = format!("{}.{}.", b64(header), parts[1]);
        let (code, reason) = refused(&srv, Some("alice"), Some(&none));
        assert_eq!(code, Code::Unauthorized);
        assert!(reason.contains("not accepted"), "{reason}");
    }
    // An HMAC over the token made with the RSA *public* key as the secret (the classic
    // key-confusion attack): HS256 is pinned to the secret, never to a public key.
    let pem = read("rsa.pub.pem");
    let confused = TokenSigner::hmac(&pem)
        .unwrap()
        .sign(&TokenClaims::new("alice", Duration::from_secs(60)))
        .unwrap();
    assert_eq!(
        refused(&srv, Some("alice"), Some(&confused)).0,
        Code::Unauthorized
    );

    for junk in ["", "abc", "a.b.c", "....", "\u{1F600}"] {
        let (code, _) = refused(&srv, Some("alice"), Some(junk));
        assert_eq!(code, Code::Unauthorized, "{junk:?}");
    }
    // No token at all: this server has no anonymous access.
    let (code, reason) = refused(&srv, Some("alice"), None);
    assert_eq!(code, Code::Unauthorized);
    assert!(reason.contains("requires a token"), "{reason}");
    // And it still serves.
    assert!(connect(&srv, None, Some(&alice)).is_ok());
}

#[test]
fn a_token_for_one_peer_cannot_claim_another() {
    let srv = server(opts(jwt()));
    for alg in ALGS {
        let bob = token(alg, "bob", 60);
        let (code, reason) = refused(&srv, Some("alice"), Some(&bob));
        assert_eq!(code, Code::Unauthorized, "{alg}");
        assert!(reason.contains("\"bob\""), "{reason}");
    }
    // A subject that is not a usable peer id (all digits are the server's to assign).
    let numeric = token(TokenAlgorithm::HS256, "42", 60);
    assert_eq!(refused(&srv, None, Some(&numeric)).0, Code::Unauthorized);
    assert_eq!(
        refused(&srv, Some("42"), Some(&numeric)).0,
        Code::InvalidArgument
    );
}

#[test]
fn a_replayed_token_is_accepted_while_it_is_valid() {
    // JWT has no replay protection: the same token opens a session again, as long as it has
    // not expired. It cannot take over a live session (that needs the resume token).
    let srv = server(opts(jwt()));
    let t = token(TokenAlgorithm::HS256, "alice", 60);
    let first = connect(&srv, None, Some(&t)).unwrap();
    assert_eq!(refused(&srv, None, Some(&t)).0, Code::PeerIdTaken);
    drop(first);
    wait_until("alice gone", || srv.connection_count() == 0);
    for _ in 0..3 {
        let p = connect(&srv, None, Some(&t)).unwrap();
        drop(p);
        wait_until("alice gone", || srv.connection_count() == 0);
    }
}

#[test]
fn anonymous_peers_only_when_allowed_and_with_assigned_ids() {
    let srv = server(opts(jwt().allow_anonymous(None)));
    let p = connect(&srv, None, None).unwrap();
    assert!(
        p.peer_id.bytes().all(|b| b.is_ascii_digit()),
        "{}",
        p.peer_id
    );
    // Declaring an id needs a token proving it, or anyone could be "alice".
    let (code, reason) = refused(&srv, Some("alice"), None);
    assert_eq!(code, Code::Unauthorized, "{reason}");
    assert!(connect(
        &srv,
        Some("alice"),
        Some(&token(TokenAlgorithm::ES256, "alice", 60))
    )
    .is_ok());
}

#[test]
fn a_v1_client_is_served_as_v1() {
    let srv = server(opts(jwt()));
    let mut p = RawPeer::tcp(srv.local_addr().unwrap());
    let mut h = hello_with(None, Some(&token(TokenAlgorithm::HS256, "old", 60)));
    h.version = 1;
    assert_eq!(p.handshake(&h).unwrap().version, 1);
    let mut p = RawPeer::tcp(srv.local_addr().unwrap());
    let mut h = hello_with(None, Some(&token(TokenAlgorithm::HS256, "new", 60)));
    h.version = 7;
    assert_eq!(p.handshake(&h).unwrap().version, 2);
}

/// A server whose heartbeat ticks often enough to see an expiry within half a second.
fn quick(auth: JwtAuth) -> PeerServer {
    let mut o = opts(auth);
    o.heartbeat = Duration::from_secs(2);
    server(o)
}

/// A token that expires `secs` from now (exp has second granularity: between secs - 1 and
/// secs seconds).
fn short(alg: TokenAlgorithm, sub: &str, secs: u64) -> String {
    let mut c = TokenClaims::new(sub, Duration::ZERO);
    c.exp = now() + secs;
    signer(alg).sign(&c).unwrap()
}

/// The Close the server ends the session with, skipping anything before it; how long it
/// took to come.
fn close_code(p: &mut RawPeer, within: Duration) -> (u16, Duration) {
    let start = Instant::now();
    loop {
        let b = match p.recv_within(within) {
            Recv::Frame(b) => b,
            other => panic!("no Close within {within:?}: {other:?}"),
        };
        if let Frame::Close(c) = decode_bytes(&b).unwrap() {
            return (c.code.to_native(), start.elapsed());
        }
    }
}

#[test]
fn a_session_whose_token_expires_is_closed_with_token_expired() {
    let srv = quick(jwt());
    // One peer per algorithm, all due within the same two seconds.
    let mut peers: Vec<(TokenAlgorithm, RawPeer)> = ALGS
        .iter()
        .map(|&alg| {
            let sub = format!("brief-{}", alg.name().to_lowercase());
            let mut p = connect(&srv, None, Some(&short(alg, &sub, 2))).unwrap();
            assert_eq!(p.call(1, "echo", b"x").unwrap(), b"x");
            (alg, p)
        })
        .collect();
    let start = Instant::now();
    for (alg, p) in peers.iter_mut() {
        let (code, _) = close_code(p, Duration::from_secs(6));
        assert_eq!(Code::from_u16(code), Some(Code::TokenExpired), "{alg}");
        p.expect_end(WAIT);
    }
    // Due within 2 s; noticed at the next heartbeat tick (a quarter of 2 s).
    let took = start.elapsed();
    assert!(took < Duration::from_millis(3_500), "closed after {took:?}");
    wait_until("gone", || srv.connection_count() == 0);
}

#[test]
fn an_action_after_expiry_closes_at_once_and_is_not_carried_out() {
    // The heartbeat is slow here: the expiry is caught by the peer's own next action.
    let mut o = opts(jwt());
    o.heartbeat = Duration::from_secs(60);
    let srv = server(o);
    let mut watcher = connect(&srv, None, Some(&token(TokenAlgorithm::HS256, "w", 60))).unwrap();
    watcher.send(&codec::Join {
        req: 1,
        topic: "t".into(),
    });
    watcher.recv_until(|f| matches!(f, Frame::Status(_)).then_some(()));
    let mut p = connect(&srv, None, Some(&short(TokenAlgorithm::HS256, "late", 1))).unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    p.send(&codec::Publish {
        req: 1,
        topic: "t".into(),
        echo: false,
        payload: b"after exp"[..].into(),
    });
    let (code, _) = close_code(&mut p, WAIT);
    assert_eq!(Code::from_u16(code), Some(Code::TokenExpired));
    let before = watcher.sync(9);
    assert!(
        before.is_empty(),
        "nothing delivered after expiry: {} frames",
        before.len()
    );
}

#[test]
fn a_refresh_in_time_keeps_the_session_and_a_bad_one_changes_nothing() {
    let srv = quick(jwt());
    let mut p = connect(&srv, None, Some(&short(TokenAlgorithm::RS256, "carol", 2))).unwrap();
    let refresh = |p: &mut RawPeer, req: u64, t: &str| -> (u16, String) {
        p.send(&codec::Refresh {
            req,
            credentials: t.as_bytes().into(),
        });
        p.recv_until(|f| match f {
            Frame::Status(s) if s.req.to_native() == req => {
                Some((s.code.to_native(), s.message.as_str().to_string()))
            }
            _ => None,
        })
    };
    // Refused refreshes: another peer's token, an expired one, garbage.
    let (code, why) = refresh(&mut p, 1, &token(TokenAlgorithm::RS256, "dave", 60));
    assert_eq!(Code::from_u16(code), Some(Code::Unauthorized), "{why}");
    let mut old = TokenClaims::new("carol", Duration::ZERO);
    old.exp = now() - 5;
    let expired = signer(TokenAlgorithm::ES256).sign(&old).unwrap();
    assert_eq!(refresh(&mut p, 2, &expired).0, Code::TokenExpired.as_u16());
    assert_eq!(refresh(&mut p, 3, "garbage").0, Code::Unauthorized.as_u16());
    // A good one, with another algorithm even: the session outlives the first token.
    assert_eq!(
        refresh(&mut p, 4, &token(TokenAlgorithm::EdDSA, "carol", 60)).0,
        0
    );
    std::thread::sleep(Duration::from_millis(3_000));
    assert_eq!(p.call(5, "echo", b"still here").unwrap(), b"still here");

    // A refresh that was refused left the old deadline in place.
    let mut q = connect(&srv, None, Some(&short(TokenAlgorithm::HS256, "erin", 2))).unwrap();
    assert_eq!(refresh(&mut q, 1, "garbage").0, Code::Unauthorized.as_u16());
    let (code, _) = close_code(&mut q, Duration::from_secs(6));
    assert_eq!(Code::from_u16(code), Some(Code::TokenExpired));
}

fn restricted() -> PermissionClaims {
    PermissionClaims {
        join: Some(vec!["chat".into(), "room-*".into()]),
        publish: Some(vec!["chat".into()]),
        watch: Some(vec!["chat".into()]),
        call: Some(vec!["echo".into()]),
        call_peers: Some(vec!["ping".into()]),
        emit: Some(vec!["hello".into()]),
        signal: Some(vec!["room-*".into()]),
        broadcast: None,
        peers: None,
    }
}

fn with_perms(sub: &str, p: PermissionClaims) -> String {
    let mut c = TokenClaims::new(sub, Duration::from_secs(60));
    c.peerd = Some(p);
    signer(TokenAlgorithm::HS256).sign(&c).unwrap()
}

#[test]
fn each_action_outside_the_tokens_permissions_is_refused_and_nothing_is_delivered() {
    let srv = server(opts(jwt()));
    let mut a = connect(&srv, None, Some(&with_perms("alice", restricted()))).unwrap();
    // bob's token has no `peerd` claim: he may do everything.
    let mut b = connect(&srv, None, Some(&token(TokenAlgorithm::HS256, "bob", 60))).unwrap();
    for t in ["chat", "chat-admin", "room-1"] {
        assert_eq!(
            req_status(
                &mut b,
                1,
                &codec::Join {
                    req: 1,
                    topic: t.into()
                }
            )
            .0,
            Code::Ok
        );
    }
    let unauthorized = |r: (Code, String)| {
        assert_eq!(r.0, Code::Unauthorized, "{}", r.1);
        r.1
    };

    // Topics: `chat` is not a prefix of `chat-admin`.
    assert_eq!(
        req_status(
            &mut a,
            1,
            &codec::Join {
                req: 1,
                topic: "chat".into()
            }
        )
        .0,
        Code::Ok
    );
    let why = unauthorized(req_status(
        &mut a,
        2,
        &codec::Join {
            req: 2,
            topic: "chat-admin".into(),
        },
    ));
    assert_eq!(why, "not allowed to join topic \"chat-admin\"");
    assert_eq!(
        req_status(
            &mut a,
            3,
            &codec::Join {
                req: 3,
                topic: "room-1".into()
            }
        )
        .0,
        Code::Ok
    );
    unauthorized(req_status(
        &mut a,
        4,
        &codec::Join {
            req: 4,
            topic: "rooms".into(),
        },
    ));
    let publish = |topic: &str| codec::Publish {
        req: 5,
        topic: topic.to_string().into(),
        echo: false,
        payload: b"x"[..].into(),
    };
    unauthorized(req_status(&mut a, 5, &publish("chat-admin")));
    received_nothing(&mut b, 1);
    assert_eq!(req_status(&mut a, 5, &publish("chat")).0, Code::Ok);
    b.recv_until(|f| matches!(f, Frame::TopicMessage(_)).then_some(()));
    unauthorized(req_status(
        &mut a,
        6,
        &codec::TopicSend {
            req: 6,
            topic: "chat-admin".into(),
            to: "bob".into(),
            payload: b"x"[..].into(),
        },
    ));
    received_nothing(&mut b, 2);

    // Presence: a topic watch, the global watch, and both kinds of list.
    unauthorized(req_status(
        &mut a,
        7,
        &codec::Watch {
            req: 7,
            topic: Some("chat-admin".into()),
        },
    ));
    assert_eq!(
        req_status(
            &mut a,
            8,
            &codec::Watch {
                req: 8,
                topic: Some("chat".into())
            }
        )
        .0,
        Code::Ok
    );
    unauthorized(req_status(
        &mut a,
        9,
        &codec::Watch {
            req: 9,
            topic: None,
        },
    ));
    unauthorized(req_status(
        &mut a,
        10,
        &codec::ListPeers {
            req: 10,
            topic: None,
        },
    ));
    unauthorized(req_status(
        &mut a,
        11,
        &codec::ListPeers {
            req: 11,
            topic: Some("chat-admin".into()),
        },
    ));

    // RPC to the server and to peers.
    assert_eq!(a.call(12, "echo", b"ok").unwrap(), b"ok");
    let (code, why) = a.call(13, "peers", b"").unwrap_err();
    assert_eq!(Code::from_u16(code), Some(Code::Unauthorized), "{why}");
    a.send(&codec::RpcRequest {
        id: 14,
        method: "secret".into(),
        peer: Some("bob".into()),
        timeout_ms: 0,
        params: b""[..].into(),
    });
    let code = a.recv_until(|f| match f {
        Frame::RpcError(e) if e.id.to_native() == 14 => Some(e.code.to_native()),
        _ => None,
    });
    assert_eq!(code, Code::Unauthorized.as_u16());
    received_nothing(&mut b, 3);
    a.send(&codec::RpcRequest {
        id: 15,
        method: "ping".into(),
        peer: Some("bob".into()),
        timeout_ms: 0,
        params: b""[..].into(),
    });
    b.recv_until(|f| match f {
        Frame::RpcRequest(r) => {
            assert_eq!(r.method.as_str(), "ping");
            Some(())
        }
        _ => None,
    });

    // Events, broadcast (answered with Status{0}).
    let event = |name: &str| codec::Event {
        name: name.to_string().into(),
        peer: Some("bob".into()),
        payload: b""[..].into(),
    };
    unauthorized(req_status(&mut a, 0, &event("other")));
    unauthorized(req_status(
        &mut a,
        0,
        &codec::Broadcast {
            name: "hello".into(),
            peer: None,
            payload: b""[..].into(),
        },
    ));
    received_nothing(&mut b, 4);
    a.send(&event("hello"));
    b.recv_until(|f| matches!(f, Frame::Event(_)).then_some(()));

    // Signaling: `chat` is joined but not a signaling room; `room-1` is.
    let signal = |room: &str| codec::Signal {
        req: 16,
        room: room.to_string().into(),
        kind: SignalKind::Offer,
        peer: None,
        payload: b"sdp"[..].into(),
    };
    unauthorized(req_status(&mut a, 16, &signal("chat")));
    received_nothing(&mut b, 5);
    assert_eq!(req_status(&mut a, 16, &signal("room-1")).0, Code::Ok);
    b.recv_until(|f| matches!(f, Frame::Signal(_)).then_some(()));

    // Leaving needs no permission.
    assert_eq!(
        req_status(
            &mut a,
            17,
            &codec::Leave {
                req: 17,
                topic: "chat".into()
            }
        )
        .0,
        Code::Ok
    );
}

#[test]
fn a_refresh_replaces_the_permissions() {
    let srv = server(opts(jwt()));
    let mut a = connect(&srv, None, Some(&with_perms("alice", restricted()))).unwrap();
    let join = |p: &mut RawPeer, req| {
        req_status(
            p,
            req,
            &codec::Join {
                req,
                topic: "vip".into(),
            },
        )
        .0
    };
    assert_eq!(join(&mut a, 1), Code::Unauthorized);
    let more = PermissionClaims {
        join: Some(vec!["*".into()]),
        ..restricted()
    };
    let (code, _) = req_status(
        &mut a,
        2,
        &codec::Refresh {
            req: 2,
            credentials: with_perms("alice", more).into_bytes().into(),
        },
    );
    assert_eq!(code, Code::Ok);
    assert_eq!(join(&mut a, 3), Code::Ok);
}

#[test]
fn the_embedders_callback_decides_per_action_after_the_token() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let o = opts(jwt()).authorize(move |peer, action| {
        counted.fetch_add(1, Ordering::SeqCst);
        match action {
            Action::Join { topic: "vip" } if peer != "boss" => Err(Denied::new("vip only")),
            Action::Publish { topic } if topic.starts_with("chat") && peer == "alice" => {
                Err(Denied::new("alice is muted"))
            }
            _ => Ok(()),
        }
    });
    let srv = server(o);
    let mut boss = connect(&srv, None, Some(&token(TokenAlgorithm::HS256, "boss", 60))).unwrap();
    let mut bob = connect(&srv, None, Some(&token(TokenAlgorithm::HS256, "bob", 60))).unwrap();
    let mut alice = connect(&srv, None, Some(&with_perms("alice", restricted()))).unwrap();
    let join = |p: &mut RawPeer, req, t: &str| {
        req_status(
            p,
            req,
            &codec::Join {
                req,
                topic: t.to_string().into(),
            },
        )
    };
    assert_eq!(join(&mut boss, 1, "vip").0, Code::Ok);
    assert_eq!(
        join(&mut bob, 1, "vip"),
        (Code::Unauthorized, "vip only".to_string())
    );
    assert_eq!(join(&mut bob, 2, "chat").0, Code::Ok);
    assert_eq!(join(&mut alice, 1, "chat").0, Code::Ok);
    // The token allows alice to publish to chat; the callback refuses it.
    let (code, why) = req_status(
        &mut alice,
        2,
        &codec::Publish {
            req: 2,
            topic: "chat".into(),
            echo: false,
            payload: b"x"[..].into(),
        },
    );
    assert_eq!((code, why.as_str()), (Code::Unauthorized, "alice is muted"));
    received_nothing(&mut bob, 1);
    // The token refuses first: the callback is not even asked.
    let before = asked.load(Ordering::SeqCst);
    let (code, why) = join(&mut alice, 3, "chat-admin");
    assert_eq!(code, Code::Unauthorized);
    assert!(why.contains("chat-admin"), "{why}");
    assert_eq!(asked.load(Ordering::SeqCst), before);
}

#[test]
fn a_custom_authenticator_names_the_peer_and_its_rights() {
    let o = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .authenticate_with(|r| match r.credentials {
            Some(b"key-of-zoe") => Ok(peerd_server::Grant {
                peer_id: Some("zoe".into()),
                expires_at: None,
                permissions: Some(peerd_server::Permissions::none()),
            }),
            _ => Err(Denied::new("unknown key")),
        });
    let srv = server(o);
    let mut p = RawPeer::tcp(srv.local_addr().unwrap());
    let mut h = hello(None, None);
    h.credentials = Some(b"key-of-zoe"[..].into());
    assert_eq!(p.handshake(&h).unwrap().peer_id, "zoe");
    assert_eq!(
        req_status(
            &mut p,
            1,
            &codec::Join {
                req: 1,
                topic: "t".into()
            }
        )
        .0,
        Code::Unauthorized
    );
    let mut q = RawPeer::tcp(srv.local_addr().unwrap());
    let mut h = hello(Some("yves"), None);
    h.credentials = Some(b"key-of-zoe"[..].into());
    assert!(
        matches!(q.handshake(&h), Err(HandshakeError::Refused { code, .. }) if code == Code::Unauthorized.as_u16())
    );
}
