//! Property tests: every message kind survives encode -> split -> validated decode ->
//! deserialize unchanged, wherever in a buffer the frame starts.

mod common;

use bytes::BytesMut;
use common::{any_msg, samples, AnyMsg, MESSAGE_KINDS};
use peerd_codec::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// encode after a random prefix (so the archive starts at any alignment), split, decode,
    /// deserialize, compare.
    #[test]
    fn any_message_round_trips(msg in any_msg(), prefix in vec(any::<u8>(), 0..9)) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&prefix);
        msg.encode_into(&mut buf);

        // The prefix is untouched and the frame bytes do not depend on where they start.
        prop_assert_eq!(&buf[..prefix.len()], &prefix[..]);
        let frame = &buf[prefix.len()..];
        prop_assert_eq!(frame, &msg.frame()[..]);

        let (raw, used) = split_frame(frame, u32::MAX).unwrap().expect("whole frame");
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(raw.header.kind, msg.kind());
        prop_assert_eq!(raw.header.body_len as usize, frame.len() - HEADER_LEN);
        prop_assert_eq!(&frame[5..8], &[0u8, 0, 0][..], "flags and reserved are zero");

        let decoded = raw.decode().expect("valid frame decodes");
        prop_assert_eq!(decoded.kind(), msg.kind());
        prop_assert_eq!(AnyMsg::from_frame(decoded), msg);
    }

    /// The body limit passed to `encode` is exact, for every kind: a limit one byte short
    /// fails and leaves the buffer as it was.
    #[test]
    fn encode_limit_is_exact(msg in any_msg()) {
        let body_len = (msg.frame().len() - HEADER_LEN) as u32;
        let mut buf = BytesMut::from(&b"keep"[..]);
        prop_assert!(msg.encode_limited(&mut buf, body_len).is_ok());
        prop_assert_eq!(&buf[4..], &msg.frame()[..]);
        buf.truncate(4);
        // Every message has a non-empty body (at least its fixed-size fields).
        prop_assert!(body_len > 0);
        let err = msg.encode_limited(&mut buf, body_len - 1).unwrap_err();
        let is_too_large = matches!(err, EncodeError::TooLarge { kind, len, max }
            if kind == msg.kind() && len == body_len as usize && max == body_len - 1);
        prop_assert!(is_too_large, "unexpected error {:?}", err);
        prop_assert_eq!(&buf[..], b"keep");
    }
}

#[test]
fn any_msg_generates_every_kind() {
    // The properties above quantify over `any_msg()`; they cover every frame kind only if
    // the strategy does. 2048 draws over 25 equally weighted kinds miss one with odds
    // around 1e-36; the runner is deterministic anyway.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = any_msg();
    let mut seen = std::collections::BTreeMap::<u8, usize>::new();
    for _ in 0..2048 {
        let msg = strategy.new_tree(&mut runner).unwrap().current();
        *seen.entry(msg.kind() as u8).or_default() += 1;
    }
    let kinds: Vec<u8> = seen.keys().copied().collect();
    let all: Vec<u8> = FrameKind::ALL.iter().map(|k| *k as u8).collect();
    assert_eq!(kinds, all, "kinds drawn: {seen:?}");
}

#[test]
fn message_kinds_cover_every_frame_kind() {
    // Message::KIND is distinct per message and the 25 messages cover FrameKind::ALL.
    let mut kinds = MESSAGE_KINDS.to_vec();
    kinds.sort_by_key(|k| *k as u8);
    kinds.dedup();
    assert_eq!(kinds.len(), MESSAGE_KINDS.len());
    assert_eq!(kinds, FrameKind::ALL);
    assert_eq!(FrameKind::ALL.len(), 25);
    // ... and the sample list has one of each, in the same order.
    let sample_kinds: Vec<FrameKind> = samples().iter().map(AnyMsg::kind).collect();
    assert_eq!(sample_kinds, MESSAGE_KINDS);
}

#[test]
fn samples_round_trip_at_every_alignment() {
    for msg in samples() {
        for pad in 0..16 {
            let mut buf = BytesMut::with_capacity(pad + 1024);
            buf.extend_from_slice(&vec![0x5a; pad]);
            msg.encode_into(&mut buf);
            let (raw, _) = split_frame(&buf[pad..], DEFAULT_MAX_FRAME_LEN)
                .unwrap()
                .unwrap();
            let body_addr = raw.body.as_ptr() as usize;
            let decoded = raw.decode().unwrap_or_else(|e| {
                panic!(
                    "{:?} at body address {body_addr:#x} (mod 8 = {}): {e}",
                    msg.kind(),
                    body_addr % 8
                )
            });
            assert_eq!(AnyMsg::from_frame(decoded), msg);
        }
    }
}

#[test]
fn decode_borrows_from_the_receive_buffer() {
    // Zero-copy: strings and bytes of a decoded frame point into the buffer.
    let payload = vec![0x11u8; 200];
    let msg = RpcRequest {
        id: 1,
        method: "a.rather.long.method.name".into(),
        peer: Some("bob".into()),
        timeout_ms: 0,
        params: payload.as_slice().into(),
    };
    let mut buf = BytesMut::new();
    encode(&msg, &mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
    let Frame::RpcRequest(r) = decode_bytes_ok(&buf) else {
        panic!("wrong kind")
    };
    let range = buf.as_ptr_range();
    assert!(range.contains(&r.params.as_slice().as_ptr()));
    assert!(range.contains(&r.method.as_str().as_ptr()));
    assert_eq!(opt_str(&r.peer), Some("bob"));
    assert_eq!(r.timeout_ms.to_native(), 0);
}

fn decode_bytes_ok(buf: &[u8]) -> Frame<'_> {
    peerd_codec::codec::decode_bytes(buf).unwrap()
}

#[test]
fn encode_to_bytes_matches_encode() {
    for msg in samples() {
        assert_eq!(
            &msg.to_bytes().unwrap()[..],
            &msg.frame()[..],
            "{:?}",
            msg.kind()
        );
    }
}

#[test]
fn unencodable_message_leaves_the_buffer_intact() {
    // A string past rkyv's 32-bit string limit (2^30 - 1 bytes) cannot be archived. The
    // allocation is calloc'd zeros that nothing touches: rkyv checks the length first.
    let huge = vec![0u8; 1 << 30];
    // SAFETY: all-zero bytes are valid UTF-8 (NUL characters).
    let reason = unsafe { std::str::from_utf8_unchecked(&huge) };
    let mut buf = BytesMut::new();
    encode(&Ping { nonce: 1 }, &mut buf, u32::MAX).unwrap();
    let queued = buf.clone();
    let err = encode(
        &Close {
            code: 1000,
            reason: reason.into(),
        },
        &mut buf,
        u32::MAX,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            EncodeError::Serialize {
                kind: FrameKind::Close,
                ..
            }
        ),
        "{err:?}"
    );
    // Frames already queued in the buffer survive the failed encode.
    assert_eq!(buf, queued);
}
