//! Byte-literal tests: the exact bytes of a few frames, hard-coded, so that any change to the
//! wire format (field order, rkyv features, rkyv version, header layout) fails here first.
//!
//! The expected bytes were derived by hand from rkyv 0.8's layout rules with the
//! `little_endian`, `unaligned` and `pointer_width_32` features (see docs/PROTOCOL.md,
//! "Archive layout"): fields in declaration order with no padding, out-of-line data first and
//! the root object at the end of the body, relative pointers as i32 offsets from the pointer
//! field itself. If one of these tests fails, the wire format changed: that needs a protocol
//! version bump, not an edit of the expected bytes.

mod common;

use std::borrow::Cow;

use bytes::BytesMut;
use common::{assert_decodes_to, AnyMsg};
use peerd_codec::codec::decode_bytes;
use peerd_codec::*;

fn frame_of(msg: AnyMsg) -> Vec<u8> {
    let bytes = msg.frame();
    // Every pinned frame must also decode back to itself.
    assert_decodes_to(&bytes, &msg);
    bytes
}

#[test]
fn header_layout() {
    let mut h = [0u8; HEADER_LEN];
    Header {
        body_len: 0x0102_0304,
        kind: FrameKind::Publish,
    }
    .write(&mut h);
    // u32 LE length | kind | flags | reserved u16
    assert_eq!(h, [0x04, 0x03, 0x02, 0x01, 0x32, 0x00, 0x00, 0x00]);
    assert_eq!(
        Header::parse(&h, u32::MAX),
        Ok(Some(Header {
            body_len: 0x0102_0304,
            kind: FrameKind::Publish
        }))
    );
}

#[test]
fn frame_kind_numbers() {
    let pinned: &[(FrameKind, u8)] = &[
        (FrameKind::Hello, 0x01),
        (FrameKind::Welcome, 0x02),
        (FrameKind::Reject, 0x03),
        (FrameKind::Refresh, 0x04),
        (FrameKind::RpcRequest, 0x10),
        (FrameKind::RpcResponse, 0x11),
        (FrameKind::RpcError, 0x12),
        (FrameKind::Event, 0x20),
        (FrameKind::Broadcast, 0x21),
        (FrameKind::Join, 0x30),
        (FrameKind::Leave, 0x31),
        (FrameKind::Publish, 0x32),
        (FrameKind::TopicSend, 0x33),
        (FrameKind::TopicMessage, 0x34),
        (FrameKind::Watch, 0x40),
        (FrameKind::Unwatch, 0x41),
        (FrameKind::PresenceSnapshot, 0x42),
        (FrameKind::Presence, 0x43),
        (FrameKind::ListPeers, 0x44),
        (FrameKind::PeerList, 0x45),
        (FrameKind::Signal, 0x50),
        (FrameKind::Status, 0x60),
        (FrameKind::Ping, 0x70),
        (FrameKind::Pong, 0x71),
        (FrameKind::Close, 0x7f),
    ];
    assert_eq!(pinned.len(), FrameKind::ALL.len());
    for (k, v) in pinned {
        assert_eq!(*k as u8, *v, "{k:?}");
        assert_eq!(FrameKind::from_u8(*v), Some(*k));
    }
}

#[test]
fn ping_nonce_1() {
    // body: u64 LE nonce; nothing out of line, so the root is the whole body.
    let expected: &[u8] = &[
        0x08, 0x00, 0x00, 0x00, // body length 8
        0x70, // kind Ping
        0x00, // flags
        0x00, 0x00, // reserved
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nonce = 1
    ];
    assert_eq!(frame_of(AnyMsg::Ping(Ping { nonce: 1 })), expected);
    let Frame::Ping(p) = decode_bytes(expected).unwrap() else {
        panic!()
    };
    assert_eq!(p.nonce.to_native(), 1);
}

#[test]
fn pong_byte_order() {
    let expected: &[u8] = &[
        0x08, 0x00, 0x00, 0x00, 0x71, 0x00, 0x00, 0x00, // header
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // nonce, little-endian
    ];
    assert_eq!(
        frame_of(AnyMsg::Pong(Pong {
            nonce: 0x0102_0304_0506_0708
        })),
        expected
    );
}

#[test]
fn close_with_inline_string() {
    // A string of at most 8 bytes is stored inline: its bytes, then 0xff filler.
    let expected: &[u8] = &[
        0x0a, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, // header: 10-byte Close
        0xe8, 0x03, // code 1000 (normal)
        b'b', b'y', b'e', 0xff, 0xff, 0xff, 0xff, 0xff, // reason "bye", inline
    ];
    assert_eq!(
        frame_of(AnyMsg::Close(Close {
            code: Code::Normal.as_u16(),
            reason: Cow::Borrowed("bye"),
        })),
        expected
    );

    // Empty string: all filler. Exactly 8 bytes: no filler at all.
    let empty: &[u8] = &[
        0x0a, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0xe9, 0x03, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff,
    ];
    assert_eq!(
        frame_of(AnyMsg::Close(Close {
            code: 1001,
            reason: Cow::Borrowed("")
        })),
        empty
    );
    let eight: &[u8] = &[
        0x0a, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0xe9, 0x03, b'1', b'2', b'3', b'4', b'5',
        b'6', b'7', b'8',
    ];
    assert_eq!(
        frame_of(AnyMsg::Close(Close {
            code: 1001,
            reason: Cow::Borrowed("12345678")
        })),
        eight
    );
}

#[test]
fn close_with_out_of_line_string() {
    // 20 bytes of text first, then the root: code, then the string repr
    // { len: u32 with bits 6..7 of the first byte = 0b10, offset: i32 relative to the repr }.
    let mut expected = vec![0x1e, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x00]; // 30-byte body
    expected.extend_from_slice(b"server shutting down"); // body offset 0..20
    expected.extend_from_slice(&[0xe9, 0x03]); // code 1001, body offset 20
                                               // len 20 = 0b01_0100 -> (20 & 0x3f) | 0x80 | ((20 & !0x3f) << 2) = 0x94
    expected.extend_from_slice(&[0x94, 0x00, 0x00, 0x00]); // body offset 22
    expected.extend_from_slice(&(-22i32).to_le_bytes()); // from offset 22 back to 0
    assert_eq!(
        frame_of(AnyMsg::Close(Close {
            code: Code::Shutdown.as_u16(),
            reason: Cow::Borrowed("server shutting down"),
        })),
        expected
    );
}

#[test]
fn long_string_length_encoding() {
    // 300 = 0b1_0010_1100: low 6 bits 0x2c | 0x80 = 0xac, the rest shifted left by 2.
    let text = "x".repeat(300);
    let f = frame_of(AnyMsg::Close(Close {
        code: 0,
        reason: Cow::Owned(text),
    }));
    let body = &f[HEADER_LEN..];
    assert_eq!(body.len(), 300 + 2 + 8);
    let repr = &body[302..];
    let len_word = u32::from_le_bytes(repr[0..4].try_into().unwrap());
    assert_eq!(len_word, (300 & 0x3f) | 0x80 | ((300 & !0x3f) << 2));
    assert_eq!(repr[0..4], [0xac, 0x04, 0x00, 0x00]);
    assert_eq!(i32::from_le_bytes(repr[4..8].try_into().unwrap()), -302);
}

#[test]
fn rpc_response_bytes_field() {
    // Vec<u8>: the bytes first, then { offset: i32 from the field, len: u32 }.
    let expected: &[u8] = &[
        0x13, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, // header: RpcResponse, 19 bytes
        0x01, 0x02, 0x03, // result bytes, body offset 0
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // id = 1, body offset 3
        0xf5, 0xff, 0xff, 0xff, // offset -11: from body offset 11 to 0
        0x03, 0x00, 0x00, 0x00, // len 3
    ];
    assert_eq!(
        frame_of(AnyMsg::RpcResponse(RpcResponse {
            id: 1,
            result: Cow::Borrowed(&[1, 2, 3]),
        })),
        expected
    );
    // An empty vec still carries a pointer (to where its bytes would have been: offset 0).
    let empty: &[u8] = &[
        0x10, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xf8, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(
        frame_of(AnyMsg::RpcResponse(RpcResponse {
            id: 1,
            result: Cow::Borrowed(&[]),
        })),
        empty
    );
}

#[test]
fn option_tag() {
    // Option<String>: a u8 tag (0 = None, 1 = Some) followed by the 8-byte string repr, which
    // is zero for None.
    let none: &[u8] = &[
        0x11, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, // header: Watch, 17 bytes
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // req = 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // topic: None
    ];
    assert_eq!(
        frame_of(AnyMsg::Watch(Watch {
            req: 1,
            topic: None
        })),
        none
    );
    let some: &[u8] = &[
        0x11, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, // req = 1
        0x01, b't', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // topic: Some("t")
    ];
    assert_eq!(
        frame_of(AnyMsg::Watch(Watch {
            req: 1,
            topic: Some(Cow::Borrowed("t"))
        })),
        some
    );
}

#[test]
fn hello_is_frozen() {
    // The Hello layout must never change: version negotiation depends on every server being
    // able to parse every client's Hello.
    let expected: &[u8] = &[
        0x25, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // header: Hello, 37 bytes
        0x01, 0x00, // version 1
        0x01, b'a', b'l', b'i', b'c', b'e', 0xff, 0xff, 0xff, // peer_id Some("alice")
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // credentials None
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // resume_token None
        b'p', b'e', b'e', b'r', b'd', b'-', b'r', b's', // client "peerd-rs" (8 bytes, inline)
    ];
    assert_eq!(
        frame_of(AnyMsg::Hello(Hello {
            version: 1,
            peer_id: Some(Cow::Borrowed("alice")),
            credentials: None,
            resume_token: None,
            client: Cow::Borrowed("peerd-rs"),
        })),
        expected
    );
}

#[test]
fn welcome_layout() {
    let expected: &[u8] = &[
        0x36, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // header: Welcome, 54 bytes
        0xaa, 0xaa, 0xaa, 0xaa, // resume_token bytes, body offset 0
        0x01, 0x00, // version 1, body offset 4 (root starts here)
        b'7', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // peer_id "7"
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // session_id 2
        0xea, 0xff, 0xff, 0xff, 0x04, 0x00, 0x00, 0x00, // resume_token: offset -22, len 4
        0x00, 0x00, 0x10, 0x00, // limits.max_frame_len 1 MiB
        0x40, 0x00, 0x00, 0x00, // limits.max_topics_per_peer 64
        0xe8, 0x03, 0x00, 0x00, // limits.max_members_per_topic 1000
        0x80, 0x00, 0x00, 0x00, // limits.max_topic_len 128
        0x00, 0x00, 0x40, 0x00, // limits.outbound_queue_bytes 4 MiB
        0x98, 0x3a, 0x00, 0x00, // heartbeat_ms 15000
    ];
    assert_eq!(
        frame_of(AnyMsg::Welcome(Welcome {
            version: 1,
            peer_id: Cow::Borrowed("7"),
            session_id: 2,
            resume_token: Cow::Borrowed(&[0xaa; 4]),
            limits: Limits {
                max_frame_len: 1 << 20,
                max_topics_per_peer: 64,
                max_members_per_topic: 1000,
                max_topic_len: 128,
                outbound_queue_bytes: 4 << 20,
            },
            heartbeat_ms: 15_000,
        })),
        expected
    );
}

#[test]
fn peer_list_vec_of_strings() {
    let expected: &[u8] = &[
        0x2c, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x00, // header: PeerList, 44 bytes
        b'b', b'b', b'b', b'b', b'b', b'b', b'b', b'b', b'b', b'b', b'b',
        b'b', // out-of-line text of the 2nd id, body offset 0..12
        b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // element 0: "a" inline, offset 12
        0x8c, 0x00, 0x00, 0x00, 0xec, 0xff, 0xff, 0xff, // element 1: len 12, -20 -> offset 0
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // root: req = 2, offset 28
        0xe8, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, // peers: -24 from 36 -> 12, len 2
    ];
    assert_eq!(
        frame_of(AnyMsg::PeerList(PeerList {
            req: 2,
            peers: vec!["a".into(), "bbbbbbbbbbbb".into()],
        })),
        expected
    );
}

#[test]
fn presence_enum_and_publish_bool() {
    let presence: &[u8] = &[
        0x12, 0x00, 0x00, 0x00, 0x43, 0x00, 0x00, 0x00, // header: Presence, 18 bytes
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // topic None
        b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // peer "a"
        0x01, // change = Leave
    ];
    assert_eq!(
        frame_of(AnyMsg::Presence(Presence {
            topic: None,
            peer: Cow::Borrowed("a"),
            change: PresenceChange::Leave,
        })),
        presence
    );

    let mut publish = vec![0x25, 0x00, 0x00, 0x00, 0x32, 0x00, 0x00, 0x00]; // 37-byte Publish
    publish.extend_from_slice(b"hello world!"); // payload, body offset 0..12
    publish.extend_from_slice(&[0; 8]); // req = 0
    publish.extend_from_slice(b"chat\xff\xff\xff\xff"); // topic
    publish.push(0x01); // echo = true
    publish.extend_from_slice(&[0xe3, 0xff, 0xff, 0xff, 0x0c, 0, 0, 0]); // -29 -> 0, len 12
    assert_eq!(
        frame_of(AnyMsg::Publish(Publish {
            req: 0,
            topic: Cow::Borrowed("chat"),
            echo: true,
            payload: Cow::Borrowed(b"hello world!"),
        })),
        publish
    );
}

#[test]
fn two_frames_back_to_back() {
    let mut buf = BytesMut::new();
    encode(&Ping { nonce: 1 }, &mut buf, u32::MAX).unwrap();
    encode(
        &Close {
            code: 1000,
            reason: "bye".into(),
        },
        &mut buf,
        u32::MAX,
    )
    .unwrap();
    assert_eq!(
        &buf[..],
        &[
            0x08, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, // Ping
            0x0a, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0xe8, 0x03, b'b', b'y', b'e', 0xff,
            0xff, 0xff, 0xff, 0xff, // Close
        ][..]
    );
}

/// The root object of every message: its size and each field's offset, exactly as the
/// tables in docs/PROTOCOL.md ("Frame catalogue") give them. Alignment is 1 everywhere
/// (`unaligned`), so fields follow each other with no padding.
#[test]
fn archived_layout_matches_protocol_tables() {
    use peerd_codec::frames::*;
    use std::mem::{align_of, offset_of, size_of};

    macro_rules! layout {
        ($t:ty, $size:literal; $($f:ident @ $off:literal),*) => {{
            assert_eq!(size_of::<$t>(), $size, "size of {}", stringify!($t));
            assert_eq!(align_of::<$t>(), 1, "align of {}", stringify!($t));
            $( assert_eq!(offset_of!($t, $f), $off, "{}.{}", stringify!($t), stringify!($f)); )*
        }};
    }
    // Building blocks.
    assert_eq!(size_of::<rkyv::string::ArchivedString>(), 8);
    assert_eq!(size_of::<rkyv::vec::ArchivedVec<u8>>(), 8);
    assert_eq!(
        size_of::<rkyv::option::ArchivedOption<rkyv::string::ArchivedString>>(),
        9
    );
    assert_eq!(size_of::<ArchivedPresenceChange>(), 1);
    assert_eq!(size_of::<ArchivedSignalKind>(), 1);

    layout!(ArchivedLimits, 20; max_frame_len @ 0, max_topics_per_peer @ 4,
        max_members_per_topic @ 8, max_topic_len @ 12, outbound_queue_bytes @ 16);
    layout!(ArchivedHello<'static>, 37; version @ 0, peer_id @ 2, credentials @ 11,
        resume_token @ 20, client @ 29);
    layout!(ArchivedWelcome<'static>, 50; version @ 0, peer_id @ 2, session_id @ 10,
        resume_token @ 18, limits @ 26, heartbeat_ms @ 46);
    layout!(ArchivedReject<'static>, 10; code @ 0, reason @ 2);
    layout!(ArchivedRefresh<'static>, 16; req @ 0, credentials @ 8);
    layout!(ArchivedRpcRequest<'static>, 37; id @ 0, method @ 8, peer @ 16, timeout_ms @ 25,
        params @ 29);
    layout!(ArchivedRpcResponse<'static>, 16; id @ 0, result @ 8);
    layout!(ArchivedRpcError<'static>, 18; id @ 0, code @ 8, message @ 10);
    layout!(ArchivedEvent<'static>, 25; name @ 0, peer @ 8, payload @ 17);
    layout!(ArchivedBroadcast<'static>, 25; name @ 0, peer @ 8, payload @ 17);
    layout!(ArchivedJoin<'static>, 16; req @ 0, topic @ 8);
    layout!(ArchivedLeave<'static>, 16; req @ 0, topic @ 8);
    layout!(ArchivedPublish<'static>, 25; req @ 0, topic @ 8, echo @ 16, payload @ 17);
    layout!(ArchivedTopicSend<'static>, 32; req @ 0, topic @ 8, to @ 16, payload @ 24);
    layout!(ArchivedTopicMessage<'static>, 25; topic @ 0, from @ 8, direct @ 16, payload @ 17);
    layout!(ArchivedWatch<'static>, 17; req @ 0, topic @ 8);
    layout!(ArchivedUnwatch<'static>, 17; req @ 0, topic @ 8);
    layout!(ArchivedPresenceSnapshot<'static>, 17; topic @ 0, peers @ 9);
    layout!(ArchivedPresence<'static>, 18; topic @ 0, peer @ 9, change @ 17);
    layout!(ArchivedListPeers<'static>, 17; req @ 0, topic @ 8);
    layout!(ArchivedPeerList, 16; req @ 0, peers @ 8);
    layout!(ArchivedSignal<'static>, 34; req @ 0, room @ 8, kind @ 16, peer @ 17, payload @ 26);
    layout!(ArchivedStatus<'static>, 18; req @ 0, code @ 8, message @ 10);
    layout!(ArchivedPing, 8; nonce @ 0);
    layout!(ArchivedPong, 8; nonce @ 0);
    layout!(ArchivedClose<'static>, 10; code @ 0, reason @ 2);
}
