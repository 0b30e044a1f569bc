//! What rkyv's validator (and so every peerd receiver) accepts and refuses, rule by rule, as
//! docs/PROTOCOL.md §3 and §4 state it. Where the wire fixtures show one case of a rule,
//! these tests sweep it: every string length around the inline limit, every filler byte,
//! every pointer target position around the allowed range.

mod common;

use common::{raw_frame, AnyMsg, Body};
use peerd_codec::check::rule;
use peerd_codec::codec::decode_bytes;
use peerd_codec::*;

/// Decode a whole frame into its owned message, or the rule it broke.
fn outcome(frame: &[u8]) -> Result<AnyMsg, &'static str> {
    decode_bytes(frame)
        .map(AnyMsg::from_frame)
        .map_err(|e| e.check().expect("an archive rule"))
}

fn close(reason: &str) -> AnyMsg {
    AnyMsg::Close(Close {
        code: 1000,
        reason: reason.to_string().into(),
    })
}

#[test]
fn strings_of_at_most_8_bytes_must_be_inline_and_longer_ones_out_of_line() {
    let text = "abcdefghijkl";
    for len in 0..=text.len() {
        let s = &text[..len];
        // Out of line: the bytes, then the root (code, string object).
        let mut ool = Body::new();
        ool.raw(s.as_bytes());
        ool.u16(1000).ool(len as u32, 0);
        let ool = ool.frame(FrameKind::Close);
        if len <= 8 {
            assert_eq!(outcome(&ool), Err(rule::SHORT_STRINGS_INLINE), "{len}");
            let mut inline = Body::new();
            inline.u16(1000).inline(s.as_bytes());
            let inline = inline.frame(FrameKind::Close);
            assert_eq!(outcome(&inline), Ok(close(s)), "{len}");
            assert_eq!(close(s).frame(), inline, "writers put {len} bytes inline");
        } else {
            // 9 bytes and more cannot be inline (8 bytes of room); out of line they are
            // accepted, and that is what writers write.
            assert_eq!(outcome(&ool), Ok(close(s)), "{len}");
            assert_eq!(close(s).frame(), ool, "writers put {len} bytes out of line");
        }
    }
}

#[test]
fn bytes_after_the_first_ff_of_an_inline_string_are_ignored() {
    for len in 0..8 {
        for v in 0..=255u8 {
            let mut repr = [v; 8];
            repr[..len].copy_from_slice(&b"abcdefgh"[..len]);
            repr[len] = 0xff;
            let mut x = Body::new();
            x.u16(1000).raw(&repr);
            let got = outcome(&x.frame(FrameKind::Close));
            assert_eq!(
                got,
                Ok(close(&"abcdefgh"[..len])),
                "len {len}, filler {v:#04x}"
            );
        }
    }
    // Writers fill with 0xff.
    let f = close("bye").frame();
    assert_eq!(&f[HEADER_LEN + 2..], b"bye\xff\xff\xff\xff\xff");
}

#[test]
fn the_bytes_of_none_are_ignored() {
    let none = AnyMsg::Watch(Watch {
        req: 1,
        topic: None,
    });
    for v in 0..=255u8 {
        let mut x = Body::new();
        x.u64(1).u8(0).raw(&[v; 8]);
        assert_eq!(
            outcome(&x.frame(FrameKind::Watch)),
            Ok(none.clone()),
            "{v:#04x}"
        );
    }
    // Writers write zeros.
    assert_eq!(&none.frame()[HEADER_LEN + 8..], &[0; 9]);
}

/// The range a pointer's target may occupy, swept: a 12-byte string at body 0..12, then a
/// 6-byte gap, then the root of an Event { name: that string, peer: None, payload } at 18.
/// `payload` (a byte vector of `len` bytes) may point anywhere from the end of the name's
/// bytes (12) to the start of the root (18): that is the whole rule, for empty vectors too.
#[test]
fn a_target_lies_between_the_previous_target_and_the_enclosing_object() {
    const NAME_END: isize = 12;
    const ROOT: isize = 18;
    const BODY_LEN: isize = ROOT + 25;
    for len in [0u32, 1, 3, 6] {
        for t in -3..=BODY_LEN + 3 {
            let mut x = Body::new();
            x.raw(b"announcement");
            x.raw(&[0xee; 6]);
            assert_eq!(x.pos() as isize, ROOT);
            x.ool(12, 0).u8(0).raw(&[0; 8]).vec(t, len);
            let frame = x.frame(FrameKind::Event);
            let end = t + len as isize;
            let expected = if t < 0 || end > BODY_LEN {
                Err(rule::TARGET_INSIDE_THE_BODY)
            } else if t < NAME_END {
                Err(rule::TARGETS_IN_ORDER)
            } else if end > ROOT {
                // Between the root's start and the payload field (or overlapping either):
                // the limit is the start of the root, not of the field that points.
                Err(rule::TARGET_BEFORE_THE_ENCLOSING_OBJECT)
            } else {
                Ok(AnyMsg::Event(Event {
                    name: "announcement".into(),
                    peer: None,
                    payload: vec![0xee; len as usize].into(),
                }))
            };
            assert_eq!(outcome(&frame), expected, "len {len} at {t}");
        }
    }
}

/// The same sweep one level down: the strings of a `Vec<String>` must lie after the previous
/// sibling's target (PresenceSnapshot.topic's bytes, 0..12) and before the element array
/// (at 28), not merely before the root.
#[test]
fn element_targets_lie_between_the_previous_target_and_the_element_array() {
    const TOPIC_END: isize = 12;
    const ARRAY: isize = 28;
    const ROOT: isize = ARRAY + 8;
    for t in -2..=ROOT + 4 {
        let mut x = Body::new();
        x.raw(b"chat/general");
        x.raw(b"0123456789abcdef");
        assert_eq!(x.pos() as isize, ARRAY);
        x.ool(10, t);
        x.u8(1).ool(12, 0).vec(ARRAY, 1);
        let frame = x.frame(FrameKind::PresenceSnapshot);
        let end = t + 10;
        let body_len = ROOT + 17;
        let expected = if t < 0 || end > body_len {
            Err(rule::TARGET_INSIDE_THE_BODY)
        } else if t < TOPIC_END {
            Err(rule::TARGETS_IN_ORDER)
        } else if end > ARRAY {
            Err(rule::TARGET_BEFORE_THE_ENCLOSING_OBJECT)
        } else {
            let text = b"chat/general0123456789abcdef";
            let elem = std::str::from_utf8(&text[t as usize..end as usize]).unwrap();
            Ok(AnyMsg::PresenceSnapshot(PresenceSnapshot {
                topic: Some("chat/general".into()),
                peers: vec![elem.to_string()],
            }))
        };
        assert_eq!(outcome(&frame), expected, "element at {t}");
    }
}

/// Where writers put an empty vector: at the serializer's position when the field is
/// reached, which is the end of the previous target (the body start for the first). A
/// pointer is read from the frame as (field position + offset).
#[test]
fn writers_point_an_empty_vector_at_the_end_of_the_previous_target() {
    fn target(frame: &[u8], field: usize) -> usize {
        let at = frame.len() - HEADER_LEN - field;
        let off = i32::from_le_bytes(frame[HEADER_LEN + at..][..4].try_into().unwrap());
        (at as isize + off as isize) as usize
    }
    let b = |v: &[u8]| std::borrow::Cow::Owned(v.to_vec());
    // RpcResponse.result, the only target: body 0, which is also the root start.
    let f = AnyMsg::RpcResponse(RpcResponse {
        id: 1,
        result: b(&[]),
    })
    .frame();
    assert_eq!(target(&f, 8), 0);
    // Event.payload after a 12-byte name: 12, the root start again.
    let f = AnyMsg::Event(Event {
        name: "announcement".into(),
        peer: None,
        payload: b(&[]),
    })
    .frame();
    assert_eq!(target(&f, 8), 12);
    assert_eq!(f.len() - HEADER_LEN - 25, 12);
    // Hello.credentials Some(empty) before resume_token Some(3 bytes): both at 0, the empty
    // one first, so its target is not the root start.
    let f = AnyMsg::Hello(Hello {
        version: 1,
        peer_id: None,
        credentials: Some(b(&[])),
        resume_token: Some(b(&[1, 2, 3])),
        client: "x".into(),
    })
    .frame();
    // credentials' vector object is at root offset 12 (after its tag at 11).
    assert_eq!(target(&f, 37 - 12), 0);
    assert_eq!(target(&f, 37 - 21), 0);
    // An empty Vec<String> after an out-of-line topic: the end of the topic's bytes.
    let f = AnyMsg::PresenceSnapshot(PresenceSnapshot {
        topic: Some("chat/general".into()),
        peers: vec![],
    })
    .frame();
    assert_eq!(target(&f, 8), 12);
}

#[test]
fn a_body_shorter_than_its_root_is_refused() {
    for len in 0..10 {
        let f = raw_frame(len, 0x7f, 0, 0, &[0x20; 10][..len as usize]);
        assert_eq!(outcome(&f), Err(rule::ROOT_FITS_IN_THE_BODY), "{len}");
    }
}
