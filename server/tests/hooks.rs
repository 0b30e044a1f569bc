//! The embedder's traffic hooks (`ListenOptions::on_traffic`, `on_traffic_error`) through
//! real sockets: what they see of signals, publishes, direct events, broadcasts and calls to
//! peers; a refusal answered like the authorizer's with nothing delivered; the server's own
//! refusals reported; and without hooks, nothing changed.
//!
//! The hooks run on the sender's shard before the frame is delivered or answered, so a
//! receiver getting the frame, or the sender getting its answer, means the hook has run:
//! the tests read the hooks' logs after that, never after a sleep.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use peerd_codec::{self as codec, Code, Frame, SignalKind};
use peerd_server::{Denied, ListenOptions, PeerServer, Traffic};

/// What the hooks saw, one line each, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// One line for `t` sent by `from`.
fn describe(from: &str, t: &Traffic<'_>) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match *t {
        Traffic::Signal {
            room,
            kind,
            to,
            payload,
        } => format!(
            "{from} {kind:?} in {room} to {}: {}",
            to.unwrap_or("*"),
            text(payload)
        ),
        Traffic::Publish { topic, payload } => format!("{from} publish {topic}: {}", text(payload)),
        Traffic::SendToMember { topic, to, payload } => {
            format!("{from} send {topic} to {to}: {}", text(payload))
        }
        Traffic::Emit { name, to, payload } => {
            format!("{from} emit {name} to {to}: {}", text(payload))
        }
        Traffic::Broadcast { name, payload } => {
            format!("{from} broadcast {name}: {}", text(payload))
        }
        Traffic::CallPeer {
            peer,
            method,
            params,
        } => format!("{from} call {peer}.{method}: {}", text(params)),
        _ => format!("{from} {t:?}"),
    }
}

/// A server whose `on_traffic` logs every traffic into `seen` and then asks `verdict`, and
/// whose `on_traffic_error` logs into `errors` with the refusal.
fn hooked(
    seen: &Log,
    errors: &Log,
    verdict: impl Fn(&Traffic<'_>) -> Result<(), Denied> + Send + Sync + 'static,
) -> PeerServer {
    let (seen, errors) = (seen.clone(), errors.clone());
    let o = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(2)
        .on_traffic(move |from, t| {
            seen.push(describe(from, t));
            verdict(t)
        })
        .on_traffic_error(move |from, t, d| {
            errors.push(format!(
                "{} -> {}: {}",
                describe(from, t),
                d.code.name(),
                d.reason
            ))
        });
    server(o)
}

fn join(p: &mut RawPeer, req: u64, topic: &str) {
    let got = req_status(
        p,
        req,
        &codec::Join {
            req,
            topic: topic.to_string().into(),
        },
    );
    assert_eq!(got.0, Code::Ok, "{}", got.1);
}

fn signal(
    req: u64,
    room: &str,
    kind: SignalKind,
    to: Option<&str>,
    payload: &str,
) -> codec::Signal<'static> {
    codec::Signal {
        req,
        room: room.to_string().into(),
        kind,
        peer: to.map(|t| t.to_string().into()),
        payload: payload.as_bytes().to_vec().into(),
    }
}

/// The next Signal `p` receives: (kind, sender, payload).
fn next_signal(p: &mut RawPeer) -> (SignalKind, String, String) {
    p.recv_until(|f| match f {
        Frame::Signal(s) => Some((
            match s.kind {
                codec::ArchivedSignalKind::Offer => SignalKind::Offer,
                codec::ArchivedSignalKind::Answer => SignalKind::Answer,
                codec::ArchivedSignalKind::Candidate => SignalKind::Candidate,
                codec::ArchivedSignalKind::Bye => SignalKind::Bye,
            },
            codec::opt_str(&s.peer).unwrap_or("").to_string(),
            String::from_utf8_lossy(s.payload.as_slice()).into_owned(),
        )),
        _ => None,
    })
}

/// The next TopicMessage `p` receives: (from, payload).
fn next_message(p: &mut RawPeer) -> (String, String) {
    p.recv_until(|f| match f {
        Frame::TopicMessage(m) => Some((
            m.from.as_str().to_string(),
            String::from_utf8_lossy(m.payload.as_slice()).into_owned(),
        )),
        _ => None,
    })
}

/// Call `method` on peer `to` and wait for the answer.
fn call_peer(p: &mut RawPeer, id: u64, to: &str, method: &str, params: &str) {
    p.send(&codec::RpcRequest {
        id,
        method: method.to_string().into(),
        peer: Some(to.to_string().into()),
        timeout_ms: 0,
        params: params.as_bytes().to_vec().into(),
    });
}

fn call_result(p: &mut RawPeer, id: u64) -> Result<Vec<u8>, (Code, String)> {
    p.recv_until(|f| peerd_testkit::call_answer(f, id))
        .map_err(|(code, why)| (Code::from_u16(code).unwrap(), why))
}

/// Answer the next call `p` receives with its params, returning (from, method, params).
fn answer_next_call(p: &mut RawPeer) -> (String, String, String) {
    let (id, from, method, params) = p.recv_until(|f| match f {
        Frame::RpcRequest(r) => Some((
            r.id.to_native(),
            codec::opt_str(&r.peer).unwrap_or("").to_string(),
            r.method.as_str().to_string(),
            r.params.as_slice().to_vec(),
        )),
        _ => None,
    });
    p.send(&codec::RpcResponse {
        id,
        result: params.clone().into(),
    });
    (from, method, String::from_utf8_lossy(&params).into_owned())
}

#[test]
fn the_hook_sees_an_offer_with_its_room_and_payload_and_refuses_one_with_a_reason() {
    let (seen, errors) = (Log::default(), Log::default());
    let srv = hooked(&seen, &errors, |t| match *t {
        Traffic::Signal {
            kind: SignalKind::Offer,
            payload,
            ..
        } if !payload.starts_with(b"v=0") => Err(Denied::new("an offer must be SDP")),
        _ => Ok(()),
    });
    let addr = srv.local_addr().unwrap();
    let mut alice = RawPeer::connect(addr, Some("alice"));
    let mut bob = RawPeer::connect(addr, Some("bob"));
    join(&mut alice, 1, "call");
    join(&mut bob, 1, "call");

    // An offer to the room: seen, then delivered.
    let ok = signal(2, "call", SignalKind::Offer, None, "v=0 alice");
    assert_eq!(req_status(&mut alice, 2, &ok).0, Code::Ok);
    assert_eq!(
        next_signal(&mut bob),
        (SignalKind::Offer, "alice".into(), "v=0 alice".into())
    );
    assert_eq!(seen.lines(), ["alice Offer in call to *: v=0 alice"]);

    // Refused, to the room and to bob alone: unauthorized with the hook's reason, and bob
    // gets nothing.
    for (req, to) in [(3, None), (4, Some("bob"))] {
        let bad = signal(req, "call", SignalKind::Offer, to, "not sdp");
        let got = req_status(&mut alice, req, &bad);
        assert_eq!(
            got,
            (Code::Unauthorized, "an offer must be SDP".to_string())
        );
    }
    received_nothing(&mut bob, 1);
    assert_eq!(
        seen.lines()[1..],
        [
            "alice Offer in call to *: not sdp",
            "alice Offer in call to bob: not sdp"
        ]
    );
    // The hook's own refusals are not the server's errors.
    assert!(errors.lines().is_empty(), "{:?}", errors.lines());
}

#[test]
fn answers_and_candidates_are_observed_and_signaling_errors_reported() {
    let (seen, errors) = (Log::default(), Log::default());
    let srv = hooked(&seen, &errors, |_| Ok(()));
    let addr = srv.local_addr().unwrap();
    let mut alice = RawPeer::connect(addr, Some("alice"));
    let mut bob = RawPeer::connect(addr, Some("bob"));
    let mut carol = RawPeer::connect(addr, Some("carol"));
    join(&mut alice, 1, "call");
    join(&mut bob, 1, "call");

    bob.send(&signal(
        0,
        "call",
        SignalKind::Answer,
        Some("alice"),
        "v=0 bob",
    ));
    bob.send(&signal(
        0,
        "call",
        SignalKind::Candidate,
        Some("alice"),
        "candidate:1",
    ));
    assert_eq!(
        next_signal(&mut alice),
        (SignalKind::Answer, "bob".into(), "v=0 bob".into())
    );
    assert_eq!(
        next_signal(&mut alice),
        (SignalKind::Candidate, "bob".into(), "candidate:1".into())
    );
    assert_eq!(
        seen.lines(),
        [
            "bob Answer in call to alice: v=0 bob",
            "bob Candidate in call to alice: candidate:1"
        ]
    );
    assert!(errors.lines().is_empty(), "{:?}", errors.lines());

    // The server's own refusals: answered as ever, and reported with the same code.
    let refused = |p: &mut RawPeer, s: codec::Signal<'_>, code: Code, line: &str| {
        let got = req_status(p, s.req, &s);
        assert_eq!(got.0, code, "{}", got.1);
        assert_eq!(errors.lines().last().map(String::as_str), Some(line));
    };
    refused(
        &mut bob,
        signal(2, "call", SignalKind::Answer, Some("ghost"), "v=0"),
        Code::UnknownPeer,
        "bob Answer in call to ghost: v=0 -> unknown_peer: no such peer",
    );
    refused(
        &mut bob,
        signal(3, "call", SignalKind::Candidate, Some("carol"), "c"),
        Code::NotMember,
        "bob Candidate in call to carol: c -> not_member: \
         the target peer is not a member of this topic",
    );
    refused(
        &mut carol,
        signal(4, "call", SignalKind::Offer, None, "v=0"),
        Code::NotMember,
        "carol Offer in call to *: v=0 -> not_member: join the room before signaling in it",
    );
    refused(
        &mut bob,
        signal(5, "call", SignalKind::Answer, None, "v=0"),
        Code::InvalidArgument,
        "bob Answer in call to *: v=0 -> invalid_argument: only offers may go to the whole room",
    );
    assert_eq!(errors.lines().len(), 4);
    received_nothing(&mut alice, 1);
}

#[test]
fn a_publish_is_refused_by_its_content_after_the_authorizer() {
    let (seen, errors) = (Log::default(), Log::default());
    let (s, e) = (seen.clone(), errors.clone());
    let o = ListenOptions::new("127.0.0.1:0")
        .unwrap()
        .shards(2)
        .authorize(|_, a| match a {
            peerd_server::Action::Publish { topic: "closed" } => Err(Denied::new("closed")),
            _ => Ok(()),
        })
        .on_traffic(move |from, t| {
            s.push(describe(from, t));
            // One content filter for every kind: `payload()`.
            if t.payload().windows(4).any(|w| w == b"spam") {
                return Err(Denied::new("no spam"));
            }
            Ok(())
        })
        .on_traffic_error(move |from, t, d| e.push(format!("{} -> {}", describe(from, t), d)));
    let srv = server(o);
    let addr = srv.local_addr().unwrap();
    let mut alice = RawPeer::connect(addr, Some("alice"));
    let mut bob = RawPeer::connect(addr, Some("bob"));
    join(&mut bob, 1, "chat");
    join(&mut bob, 2, "closed");

    let publish = |req, topic: &str, text: &str| codec::Publish {
        req,
        topic: topic.to_string().into(),
        echo: false,
        payload: text.as_bytes().to_vec().into(),
    };
    assert_eq!(
        req_status(&mut alice, 1, &publish(1, "chat", "hello")).0,
        Code::Ok
    );
    assert_eq!(next_message(&mut bob), ("alice".into(), "hello".into()));
    let got = req_status(&mut alice, 2, &publish(2, "chat", "buy spam"));
    assert_eq!(got, (Code::Unauthorized, "no spam".to_string()));
    let send = codec::TopicSend {
        req: 3,
        topic: "chat".into(),
        to: "bob".into(),
        payload: b"spam for you"[..].into(),
    };
    assert_eq!(req_status(&mut alice, 3, &send).0, Code::Unauthorized);
    received_nothing(&mut bob, 1);
    // The authorizer refuses first: the hook never sees it.
    assert_eq!(
        req_status(&mut alice, 4, &publish(4, "closed", "hi")),
        (Code::Unauthorized, "closed".to_string())
    );
    // A TopicSend to someone outside the topic: the server's refusal, reported.
    let send = codec::TopicSend {
        req: 5,
        topic: "chat".into(),
        to: "alice".into(),
        payload: b"hi"[..].into(),
    };
    assert_eq!(req_status(&mut alice, 5, &send).0, Code::NotMember);
    assert_eq!(
        seen.lines(),
        [
            "alice publish chat: hello",
            "alice publish chat: buy spam",
            "alice send chat to bob: spam for you",
            "alice send chat to alice: hi",
        ]
    );
    assert_eq!(
        errors.lines(),
        ["alice send chat to alice: hi -> not_member: the target peer is not a member of this topic"]
    );
}

#[test]
fn a_direct_event_and_a_broadcast_are_observed_and_events_to_the_server_are_not() {
    let (seen, errors) = (Log::default(), Log::default());
    let srv = hooked(&seen, &errors, |_| Ok(()));
    let addr = srv.local_addr().unwrap();
    let mut alice = RawPeer::connect(addr, Some("alice"));
    let mut bob = RawPeer::connect(addr, Some("bob"));

    alice.send(&codec::Event {
        name: "typing".into(),
        peer: Some("bob".into()),
        payload: b"..."[..].into(),
    });
    let got = bob.recv_until(|f| match f {
        Frame::Event(e) => Some((
            e.name.as_str().to_string(),
            codec::opt_str(&e.peer).map(str::to_string),
            e.payload.as_slice().to_vec(),
        )),
        _ => None,
    });
    assert_eq!(
        got,
        ("typing".into(), Some("alice".into()), b"...".to_vec())
    );
    assert_eq!(seen.lines(), ["alice emit typing to bob: ..."]);

    alice.send(&codec::Broadcast {
        name: "news".into(),
        peer: None,
        payload: b"extra"[..].into(),
    });
    bob.recv_until(|f| matches!(f, Frame::Broadcast(_)).then_some(()));
    assert_eq!(seen.lines()[1..], ["alice broadcast news: extra"]);

    // An event to the server is not traffic between peers.
    alice.send(&codec::Event {
        name: "log".into(),
        peer: None,
        payload: b"x"[..].into(),
    });
    alice.sync(1);
    assert_eq!(seen.lines().len(), 2);
    // An event to nobody: unknown_peer, reported.
    alice.send(&codec::Event {
        name: "typing".into(),
        peer: Some("ghost".into()),
        payload: b""[..].into(),
    });
    let got = alice.recv_until(|f| match f {
        Frame::Status(s) => Some(Code::from_u16(s.code.to_native()).unwrap()),
        _ => None,
    });
    assert_eq!(got, Code::UnknownPeer);
    assert_eq!(
        errors.lines(),
        ["alice emit typing to ghost:  -> unknown_peer: no such peer"]
    );
}

#[test]
fn a_call_to_a_peer_is_seen_with_its_params_and_refused_by_method() {
    let (seen, errors) = (Log::default(), Log::default());
    let srv = hooked(&seen, &errors, |t| match *t {
        Traffic::CallPeer { method, .. } if method.starts_with("admin.") => Err(Denied {
            code: Code::Unauthorized,
            reason: "peers may not call admin methods".into(),
        }),
        _ => Ok(()),
    });
    let addr = srv.local_addr().unwrap();
    let mut alice = RawPeer::connect(addr, Some("alice"));
    let mut bob = RawPeer::connect(addr, Some("bob"));

    call_peer(&mut alice, 1, "bob", "admin.reset", "all");
    assert_eq!(
        call_result(&mut alice, 1),
        Err((
            Code::Unauthorized,
            "peers may not call admin methods".into()
        ))
    );
    received_nothing(&mut bob, 1);

    call_peer(&mut alice, 2, "bob", "ping", "p");
    assert_eq!(
        answer_next_call(&mut bob),
        ("alice".into(), "ping".into(), "p".into())
    );
    assert_eq!(call_result(&mut alice, 2), Ok(b"p".to_vec()));

    call_peer(&mut alice, 3, "ghost", "ping", "");
    assert_eq!(call_result(&mut alice, 3).unwrap_err().0, Code::UnknownPeer);
    assert_eq!(
        seen.lines(),
        [
            "alice call bob.admin.reset: all",
            "alice call bob.ping: p",
            "alice call ghost.ping: "
        ]
    );
    assert_eq!(
        errors.lines(),
        ["alice call ghost.ping:  -> unknown_peer: no such peer"]
    );
}

#[test]
fn without_hooks_everything_is_delivered_and_refused_as_before() {
    let srv = server(ListenOptions::new("127.0.0.1:0").unwrap().shards(2));
    let addr = srv.local_addr().unwrap();
    let mut alice = RawPeer::connect(addr, Some("alice"));
    let mut bob = RawPeer::connect(addr, Some("bob"));
    join(&mut alice, 1, "call");
    join(&mut bob, 1, "call");

    // What the hooks above refuse goes through.
    let s = signal(2, "call", SignalKind::Offer, None, "not sdp");
    assert_eq!(req_status(&mut alice, 2, &s).0, Code::Ok);
    assert_eq!(
        next_signal(&mut bob),
        (SignalKind::Offer, "alice".into(), "not sdp".into())
    );
    let p = codec::Publish {
        req: 3,
        topic: "call".into(),
        echo: false,
        payload: b"buy spam"[..].into(),
    };
    assert_eq!(req_status(&mut alice, 3, &p).0, Code::Ok);
    assert_eq!(next_message(&mut bob), ("alice".into(), "buy spam".into()));
    call_peer(&mut alice, 4, "bob", "admin.reset", "all");
    assert_eq!(
        answer_next_call(&mut bob),
        ("alice".into(), "admin.reset".into(), "all".into())
    );
    assert_eq!(call_result(&mut alice, 4), Ok(b"all".to_vec()));
    bob.send(&signal(
        0,
        "call",
        SignalKind::Answer,
        Some("alice"),
        "v=0 bob",
    ));
    assert_eq!(
        next_signal(&mut alice),
        (SignalKind::Answer, "bob".into(), "v=0 bob".into())
    );

    // And the server's refusals are the same.
    let s = signal(5, "call", SignalKind::Answer, Some("ghost"), "v=0");
    assert_eq!(req_status(&mut bob, 5, &s).0, Code::UnknownPeer);
    let s = signal(6, "call", SignalKind::Answer, None, "v=0");
    assert_eq!(req_status(&mut bob, 6, &s).0, Code::InvalidArgument);
    received_nothing(&mut alice, 1);
}
