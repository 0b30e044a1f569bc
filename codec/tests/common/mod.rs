//! Shared test support: one enum over every message, proptest strategies that generate any
//! of them, and helpers to encode and check a decoded frame against the original.
//!
//! Every integration test file includes this module with `mod common;`; not every file uses
//! every item.
#![allow(dead_code)]

use std::borrow::Cow;

use bytes::BytesMut;
use peerd_codec::codec::to_owned;
use peerd_codec::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

macro_rules! any_msg {
    ($( $name:ident => $ty:ty ),* $(,)?) => {
        /// Any message of the protocol, owned.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum AnyMsg {
            $( $name($ty), )*
        }

        impl AnyMsg {
            /// The header kind `Message::KIND` says this message travels under.
            pub fn kind(&self) -> FrameKind {
                match self { $( AnyMsg::$name(_) => <$ty as Message>::KIND, )* }
            }

            /// Append this message as one frame to `dst`.
            pub fn encode_into(&self, dst: &mut BytesMut) {
                self.encode_limited(dst, u32::MAX).expect("encode");
            }

            /// [`encode`] with a body limit of `max` bytes.
            pub fn encode_limited(&self, dst: &mut BytesMut, max: u32) -> Result<(), EncodeError> {
                match self {
                    $( AnyMsg::$name(m) => encode(m, dst, max), )*
                }
            }

            /// [`encode_to_bytes`] of the message inside.
            pub fn to_bytes(&self) -> Result<bytes::Bytes, EncodeError> {
                match self {
                    $( AnyMsg::$name(m) => encode_to_bytes(m), )*
                }
            }

            /// Deserialize a decoded frame back into an owned message of the same kind
            /// (panics on a kind mismatch, which is what the tests want).
            pub fn from_frame(frame: Frame<'_>) -> AnyMsg {
                match frame {
                    $( Frame::$name(a) => AnyMsg::$name(to_owned::<$ty, _>(a)), )*
                    other => panic!("frame kind {:?} not covered by AnyMsg", other.kind()),
                }
            }
        }

        /// Every frame kind's `Message::KIND`, in declaration order.
        pub const MESSAGE_KINDS: &[FrameKind] = &[ $( <$ty as Message>::KIND, )* ];
    };
}

any_msg! {
    Hello => Hello<'static>,
    Welcome => Welcome<'static>,
    Reject => Reject<'static>,
    Refresh => Refresh<'static>,
    RpcRequest => RpcRequest<'static>,
    RpcResponse => RpcResponse<'static>,
    RpcError => RpcError<'static>,
    Event => Event<'static>,
    Broadcast => Broadcast<'static>,
    Join => Join<'static>,
    Leave => Leave<'static>,
    Publish => Publish<'static>,
    TopicSend => TopicSend<'static>,
    TopicMessage => TopicMessage<'static>,
    Watch => Watch<'static>,
    Unwatch => Unwatch<'static>,
    PresenceSnapshot => PresenceSnapshot<'static>,
    Presence => Presence<'static>,
    ListPeers => ListPeers<'static>,
    PeerList => PeerList,
    Signal => Signal<'static>,
    Status => Status<'static>,
    Ping => Ping,
    Pong => Pong,
    Close => Close<'static>,
}

impl AnyMsg {
    /// This message as one complete frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        self.encode_into(&mut b);
        b.to_vec()
    }
}

/// Strings around rkyv's 8-byte inline/out-of-line boundary, ASCII and arbitrary Unicode.
pub fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{0,12}",
        vec(any::<char>(), 0..24).prop_map(String::from_iter),
        "\\PC{0,80}",
    ]
}

pub fn cow_str() -> impl Strategy<Value = Cow<'static, str>> {
    any_string().prop_map(Cow::Owned)
}

pub fn opt_cow_str() -> impl Strategy<Value = Option<Cow<'static, str>>> {
    option::of(cow_str())
}

pub fn cow_bytes() -> impl Strategy<Value = Cow<'static, [u8]>> {
    prop_oneof![
        vec(any::<u8>(), 0..16),
        vec(any::<u8>(), 0..600),
        // All-0xff payloads look like inline-string padding; make sure nothing confuses them.
        (0usize..40).prop_map(|n| vec![0xffu8; n]),
    ]
    .prop_map(Cow::Owned)
}

pub fn opt_cow_bytes() -> impl Strategy<Value = Option<Cow<'static, [u8]>>> {
    option::of(cow_bytes())
}

pub fn limits() -> impl Strategy<Value = Limits> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(a, b, c, d, e)| Limits {
            max_frame_len: a,
            max_topics_per_peer: b,
            max_members_per_topic: c,
            max_topic_len: d,
            outbound_queue_bytes: e,
        })
}

pub fn presence_change() -> impl Strategy<Value = PresenceChange> {
    prop_oneof![Just(PresenceChange::Join), Just(PresenceChange::Leave)]
}

pub fn signal_kind() -> impl Strategy<Value = SignalKind> {
    prop_oneof![
        Just(SignalKind::Offer),
        Just(SignalKind::Answer),
        Just(SignalKind::Candidate),
        Just(SignalKind::Bye),
    ]
}

/// Any of the 25 messages with arbitrary field values.
pub fn any_msg() -> impl Strategy<Value = AnyMsg> {
    prop_oneof![
        (
            any::<u16>(),
            opt_cow_str(),
            opt_cow_bytes(),
            opt_cow_bytes(),
            cow_str()
        )
            .prop_map(|(version, peer_id, credentials, resume_token, client)| {
                AnyMsg::Hello(Hello {
                    version,
                    peer_id,
                    credentials,
                    resume_token,
                    client,
                })
            }),
        (
            any::<u16>(),
            cow_str(),
            any::<u64>(),
            cow_bytes(),
            limits(),
            any::<u32>()
        )
            .prop_map(
                |(version, peer_id, session_id, resume_token, limits, heartbeat_ms)| {
                    AnyMsg::Welcome(Welcome {
                        version,
                        peer_id,
                        session_id,
                        resume_token,
                        limits,
                        heartbeat_ms,
                    })
                }
            ),
        (any::<u16>(), cow_str())
            .prop_map(|(code, reason)| AnyMsg::Reject(Reject { code, reason })),
        (any::<u64>(), cow_bytes())
            .prop_map(|(req, credentials)| AnyMsg::Refresh(Refresh { req, credentials })),
        (
            any::<u64>(),
            cow_str(),
            opt_cow_str(),
            any::<u32>(),
            cow_bytes()
        )
            .prop_map(|(id, method, peer, timeout_ms, params)| AnyMsg::RpcRequest(
                RpcRequest {
                    id,
                    method,
                    peer,
                    timeout_ms,
                    params
                }
            )),
        (any::<u64>(), cow_bytes())
            .prop_map(|(id, result)| AnyMsg::RpcResponse(RpcResponse { id, result })),
        (any::<u64>(), any::<u16>(), cow_str())
            .prop_map(|(id, code, message)| { AnyMsg::RpcError(RpcError { id, code, message }) }),
        (cow_str(), opt_cow_str(), cow_bytes()).prop_map(|(name, peer, payload)| AnyMsg::Event(
            Event {
                name,
                peer,
                payload
            }
        )),
        (cow_str(), opt_cow_str(), cow_bytes()).prop_map(|(name, peer, payload)| {
            AnyMsg::Broadcast(Broadcast {
                name,
                peer,
                payload,
            })
        }),
        (any::<u64>(), cow_str()).prop_map(|(req, topic)| AnyMsg::Join(Join { req, topic })),
        (any::<u64>(), cow_str()).prop_map(|(req, topic)| AnyMsg::Leave(Leave { req, topic })),
        (any::<u64>(), cow_str(), any::<bool>(), cow_bytes()).prop_map(
            |(req, topic, echo, payload)| AnyMsg::Publish(Publish {
                req,
                topic,
                echo,
                payload
            })
        ),
        (any::<u64>(), cow_str(), cow_str(), cow_bytes()).prop_map(|(req, topic, to, payload)| {
            AnyMsg::TopicSend(TopicSend {
                req,
                topic,
                to,
                payload,
            })
        }),
        (cow_str(), cow_str(), any::<bool>(), cow_bytes()).prop_map(
            |(topic, from, direct, payload)| AnyMsg::TopicMessage(TopicMessage {
                topic,
                from,
                direct,
                payload
            })
        ),
        (any::<u64>(), opt_cow_str()).prop_map(|(req, topic)| AnyMsg::Watch(Watch { req, topic })),
        (any::<u64>(), opt_cow_str())
            .prop_map(|(req, topic)| AnyMsg::Unwatch(Unwatch { req, topic })),
        (opt_cow_str(), vec(any_string(), 0..10)).prop_map(|(topic, peers)| {
            AnyMsg::PresenceSnapshot(PresenceSnapshot { topic, peers })
        }),
        (opt_cow_str(), cow_str(), presence_change()).prop_map(|(topic, peer, change)| {
            AnyMsg::Presence(Presence {
                topic,
                peer,
                change,
            })
        }),
        (any::<u64>(), opt_cow_str())
            .prop_map(|(req, topic)| AnyMsg::ListPeers(ListPeers { req, topic })),
        (any::<u64>(), vec(any_string(), 0..10))
            .prop_map(|(req, peers)| AnyMsg::PeerList(PeerList { req, peers })),
        (
            any::<u64>(),
            cow_str(),
            signal_kind(),
            opt_cow_str(),
            cow_bytes()
        )
            .prop_map(|(req, room, kind, peer, payload)| AnyMsg::Signal(Signal {
                req,
                room,
                kind,
                peer,
                payload
            })),
        (any::<u64>(), any::<u16>(), cow_str())
            .prop_map(|(req, code, message)| { AnyMsg::Status(Status { req, code, message }) }),
        any::<u64>().prop_map(|nonce| AnyMsg::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| AnyMsg::Pong(Pong { nonce })),
        (any::<u16>(), cow_str()).prop_map(|(code, reason)| AnyMsg::Close(Close { code, reason })),
    ]
}

/// One fixed, non-trivial sample of every message kind: short and long (out-of-line)
/// strings, empty and non-empty bytes, `Some` and `None` options. Used where a test walks a
/// valid frame byte by byte (bit flips, truncation, chunking).
pub fn samples() -> Vec<AnyMsg> {
    let s = |v: &str| Cow::Owned(v.to_string());
    let b = |v: &[u8]| Cow::Owned(v.to_vec());
    vec![
        AnyMsg::Hello(Hello {
            version: 1,
            peer_id: Some(s("alice")),
            credentials: Some(b(b"token-0123456789")),
            resume_token: None,
            client: s("peerd-client/0.1"),
        }),
        AnyMsg::Welcome(Welcome {
            version: 1,
            peer_id: s("alice@example"),
            session_id: 0xdead_beef,
            resume_token: b(&[9; 16]),
            limits: Limits {
                max_frame_len: DEFAULT_MAX_FRAME_LEN,
                max_topics_per_peer: 64,
                max_members_per_topic: 10_000,
                max_topic_len: DEFAULT_MAX_TOPIC_LEN,
                outbound_queue_bytes: 4 << 20,
            },
            heartbeat_ms: 15_000,
        }),
        AnyMsg::Reject(Reject {
            code: Code::PeerIdTaken.as_u16(),
            reason: s("peer id alice is taken"),
        }),
        AnyMsg::Refresh(Refresh {
            req: 3,
            credentials: b(b"eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        }),
        AnyMsg::RpcRequest(RpcRequest {
            id: 42,
            method: s("math.add"),
            peer: Some(s("bob-the-builder")),
            timeout_ms: 1000,
            params: b(b"[1,2]"),
        }),
        AnyMsg::RpcResponse(RpcResponse {
            id: 42,
            result: b(b"3"),
        }),
        AnyMsg::RpcError(RpcError {
            id: 42,
            code: Code::MethodNotFound.as_u16(),
            message: s("no such method: math.sub"),
        }),
        AnyMsg::Event(Event {
            name: s("typing"),
            peer: Some(s("bob")),
            payload: b(&[]),
        }),
        AnyMsg::Broadcast(Broadcast {
            name: s("announcement"),
            peer: None,
            payload: b(b"hello everyone"),
        }),
        AnyMsg::Join(Join {
            req: 1,
            topic: s("chat/general"),
        }),
        AnyMsg::Leave(Leave {
            req: 0,
            topic: s("chat"),
        }),
        AnyMsg::Publish(Publish {
            req: 3,
            topic: s("chat/general"),
            echo: true,
            payload: b(&[0xab; 64]),
        }),
        AnyMsg::TopicSend(TopicSend {
            req: 4,
            topic: s("chat"),
            to: s("carol-the-second"),
            payload: b(b"psst"),
        }),
        AnyMsg::TopicMessage(TopicMessage {
            topic: s("chat/general"),
            from: s("alice"),
            direct: false,
            payload: b(b"hi all"),
        }),
        AnyMsg::Watch(Watch {
            req: 5,
            topic: Some(s("chat")),
        }),
        AnyMsg::Unwatch(Unwatch {
            req: 6,
            topic: None,
        }),
        AnyMsg::PresenceSnapshot(PresenceSnapshot {
            topic: Some(s("chat/general")),
            peers: vec!["alice".into(), "bob".into(), "a-much-longer-peer-id".into()],
        }),
        AnyMsg::Presence(Presence {
            topic: None,
            peer: s("bob"),
            change: PresenceChange::Leave,
        }),
        AnyMsg::ListPeers(ListPeers {
            req: 7,
            topic: Some(s("room-1")),
        }),
        AnyMsg::PeerList(PeerList {
            req: 7,
            peers: vec!["1".into(), "2".into(), "a-long-peer-id-1234".into()],
        }),
        AnyMsg::Signal(Signal {
            req: 8,
            room: s("room-1"),
            kind: SignalKind::Offer,
            peer: None,
            payload: b(b"v=0\r\no=- 46117317 2 IN IP4 127.0.0.1\r\n"),
        }),
        AnyMsg::Status(Status {
            req: 9,
            code: Code::NotMember.as_u16(),
            message: s("carol is not a member of chat"),
        }),
        AnyMsg::Ping(Ping { nonce: 7 }),
        AnyMsg::Pong(Pong { nonce: 7 }),
        AnyMsg::Close(Close {
            code: Code::Shutdown.as_u16(),
            reason: s("server shutting down"),
        }),
    ]
}

/// Decode one whole frame (header included) and compare it with `msg`.
pub fn assert_decodes_to(frame: &[u8], msg: &AnyMsg) {
    let decoded = peerd_codec::codec::decode_bytes(frame).expect("valid frame decodes");
    assert_eq!(decoded.kind(), msg.kind());
    assert_eq!(&AnyMsg::from_frame(decoded), msg);
}

/// A body built field by field, for hand-made (non-canonical or invalid) frames. Pointers are
/// given as the body position of their target; the builder turns that into the offset from
/// the 8-byte object being written.
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn new() -> Body {
        Body(Vec::new())
    }
    pub fn pos(&self) -> usize {
        self.0.len()
    }
    /// Append raw bytes; returns where they start.
    pub fn put(&mut self, bytes: &[u8]) -> usize {
        let at = self.pos();
        self.0.extend_from_slice(bytes);
        at
    }
    /// Append raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Body {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Body {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Body {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// An inline string: `bytes` then 0xff up to 8 bytes (pass 8 bytes for custom filler).
    pub fn inline(&mut self, bytes: &[u8]) -> &mut Body {
        assert!(bytes.len() <= 8);
        let mut repr = [0xff; 8];
        repr[..bytes.len()].copy_from_slice(bytes);
        self.raw(&repr)
    }
    /// An out-of-line string of `len` bytes at body position `target`.
    pub fn ool(&mut self, len: u32, target: isize) -> &mut Body {
        let w = (len & 0x3f) | 0x80 | ((len & !0x3f) << 2);
        let at = self.pos() as isize;
        self.u32(w);
        self.0
            .extend_from_slice(&((target - at) as i32).to_le_bytes());
        self
    }
    /// A vector of `len` elements at body position `target`.
    pub fn vec(&mut self, target: isize, len: u32) -> &mut Body {
        let at = self.pos() as isize;
        self.0
            .extend_from_slice(&((target - at) as i32).to_le_bytes());
        self.u32(len);
        self
    }
    pub fn frame(&self, kind: FrameKind) -> Vec<u8> {
        raw_frame(self.0.len() as u32, kind as u8, 0, 0, &self.0)
    }
}

/// A frame with any header fields around `body`.
pub fn raw_frame(body_len: u32, kind: u8, flags: u8, reserved: u16, body: &[u8]) -> Vec<u8> {
    let mut f = body_len.to_le_bytes().to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&reserved.to_le_bytes());
    f.extend_from_slice(body);
    f
}
