//! Untrusted input: truncated frames, oversized length prefixes, bit-flipped archives, random
//! bytes, invalid UTF-8 and invalid enum tags. Nothing may panic; every failure is a typed
//! `WireError`; an incomplete frame is `Ok(None)`, never an error.

mod common;

use common::{samples, AnyMsg};
use peerd_codec::codec::decode_bytes;
use peerd_codec::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// Outcome of decoding a body that may be garbage: must be Ok or InvalidArchive naming the
/// header's kind. When it is Ok, the frame must also deserialize and re-encode cleanly.
fn check_body(kind: FrameKind, body: &[u8]) -> bool {
    match decode(kind, body) {
        Ok(frame) => {
            assert_eq!(frame.kind(), kind);
            let owned = AnyMsg::from_frame(frame);
            let again = owned.frame();
            assert_eq!(AnyMsg::from_frame(decode_bytes(&again).unwrap()), owned);
            true
        }
        Err(WireError::InvalidArchive {
            kind: k,
            check,
            detail,
        }) => {
            assert_eq!(k, kind);
            assert!(!detail.is_empty());
            // Every failure names one of PROTOCOL.md's rules, and speaks of body offsets,
            // not of addresses in the receiver's memory.
            assert_ne!(check, peerd_codec::check::rule::ARCHIVE, "{detail}");
            assert!(!detail.contains("0x"), "{detail}");
            false
        }
        Err(e) => panic!("decode({kind:?}) returned {e:?}, expected InvalidArchive"),
    }
}

#[test]
fn every_truncation_is_incomplete() {
    for msg in samples() {
        let frame = msg.frame();
        for n in 0..frame.len() {
            assert!(
                matches!(split_frame(&frame[..n], DEFAULT_MAX_FRAME_LEN), Ok(None)),
                "{:?} prefix {n}",
                msg.kind()
            );
            let mut framer = Framer::new(DEFAULT_MAX_FRAME_LEN);
            framer.extend(&frame[..n]);
            assert!(matches!(framer.next_frame(), Ok(None)));
            assert!(framer.needed().unwrap() > 0);
            // decode_bytes on a partial frame is a (typed) error, not a panic.
            assert!(decode_bytes(&frame[..n]).is_err());
        }
    }
}

#[test]
fn truncated_bodies_never_panic() {
    // A peer can announce a shorter body than the archive needs; validating every prefix
    // and suffix of a real body as a whole body must fail cleanly (or, by chance, be a
    // valid archive).
    for msg in samples() {
        let frame = msg.frame();
        let body = &frame[HEADER_LEN..];
        for n in 0..body.len() {
            check_body(msg.kind(), &body[..n]);
            check_body(msg.kind(), &body[n..]);
        }
        // The empty body is never a valid archive (every message has a non-empty root).
        assert!(!check_body(msg.kind(), &[]));
    }
}

#[test]
fn oversized_length_prefix_rejected_from_header_alone() {
    for &len in &[DEFAULT_MAX_FRAME_LEN + 1, 1 << 31, u32::MAX - 1, u32::MAX] {
        for &kind in FrameKind::ALL {
            let mut header = [0u8; HEADER_LEN];
            header[..4].copy_from_slice(&len.to_le_bytes());
            header[4] = kind as u8;
            let want = WireError::TooLarge {
                len,
                max: DEFAULT_MAX_FRAME_LEN,
            };
            // Only the header is present: the error comes before any body byte.
            assert_eq!(
                split_frame(&header, DEFAULT_MAX_FRAME_LEN).unwrap_err(),
                want
            );
            assert_eq!(want.code(), Code::TooLarge);
            let mut framer = Framer::new(DEFAULT_MAX_FRAME_LEN);
            framer.extend(&header);
            assert_eq!(framer.needed(), Err(want.clone()));
            assert_eq!(framer.next_frame(), Err(want.clone()));
            // Nothing was reserved for the announced body.
            assert!(framer.buffer_mut().capacity() < 1 << 16);
            // With a few body bytes after it, still TooLarge.
            let mut more = header.to_vec();
            more.extend_from_slice(&[0; 32]);
            assert_eq!(split_frame(&more, DEFAULT_MAX_FRAME_LEN).unwrap_err(), want);
        }
    }
    // u32::MAX with no limit is just incomplete (nothing overflows computing the length).
    let header = [0xff, 0xff, 0xff, 0xff, 0x70, 0, 0, 0];
    assert!(matches!(split_frame(&header, u32::MAX), Ok(None)));
    // The Hello cap: a 16 KiB + 1 Hello is refused when the caller passes MAX_HELLO_LEN.
    let mut hello = [0u8; HEADER_LEN];
    hello[..4].copy_from_slice(&(MAX_HELLO_LEN + 1).to_le_bytes());
    hello[4] = FrameKind::Hello as u8;
    assert!(matches!(
        split_frame(&hello, MAX_HELLO_LEN),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn bad_header_bytes() {
    for kind in 0..=255u8 {
        let h = [0, 0, 0, 0, kind, 0, 0, 0];
        match FrameKind::from_u8(kind) {
            Some(k) => assert!(matches!(
                split_frame(&h, 10),
                Ok(Some((raw, 8))) if raw.header.kind == k && raw.body.is_empty()
            )),
            None => {
                let e = split_frame(&h, 10).unwrap_err();
                assert_eq!(e, WireError::UnknownKind(kind));
                assert_eq!(e.code(), Code::BadFrame);
            }
        }
    }
    for (i, v) in [(5usize, 0x01u8), (5, 0x80), (6, 0x01), (7, 0x80)] {
        let mut h = [0, 0, 0, 0, 0x70, 0, 0, 0];
        h[i] = v;
        let e = split_frame(&h, 10).unwrap_err();
        assert!(matches!(e, WireError::ReservedBits { .. }), "{e:?}");
        assert_eq!(e.code(), Code::BadFrame);
    }
}

#[test]
fn every_single_bit_flip_is_handled() {
    // Flip each bit of each sample frame, header included. Outcomes allowed: a header
    // error, an incomplete frame (the length grew), or a frame whose body validates or
    // fails with InvalidArchive.
    let mut accepted = 0usize;
    let mut rejected = 0usize;
    for msg in samples() {
        let frame = msg.frame();
        for bit in 0..frame.len() * 8 {
            let mut f = frame.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            match split_frame(&f, DEFAULT_MAX_FRAME_LEN) {
                Ok(None) => {}
                Ok(Some((raw, _))) => {
                    if check_body(raw.header.kind, raw.body) {
                        accepted += 1
                    } else {
                        rejected += 1
                    }
                }
                Err(
                    WireError::TooLarge { .. }
                    | WireError::UnknownKind(_)
                    | WireError::ReservedBits { .. },
                ) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
    // Both outcomes occur (payload bytes are opaque; pointers and tags are checked).
    assert!(accepted > 0 && rejected > 0, "{accepted} {rejected}");
}

#[test]
fn body_bit_flips_under_every_kind() {
    // The same bodies validated as every other kind: a confused or hostile peer can put
    // any body under any kind byte.
    for msg in samples() {
        let frame = msg.frame();
        let body = &frame[HEADER_LEN..];
        for &kind in FrameKind::ALL {
            check_body(kind, body);
            for byte in 0..body.len() {
                let mut b = body.to_vec();
                b[byte] ^= 0x80;
                check_body(kind, &b);
            }
        }
    }
}

#[test]
fn invalid_utf8_is_rejected() {
    // Inline string: Close { code: 1000, reason: "bye" } with "b" replaced by a lone
    // UTF-8 lead byte (0xc3 followed by 'y' is not a valid sequence).
    let mut inline = AnyMsg::Close(Close {
        code: 1000,
        reason: "bye".into(),
    })
    .frame();
    assert_eq!(inline[10], b'b');
    inline[10] = 0xc3;
    assert!(matches!(
        decode_bytes(&inline),
        Err(WireError::InvalidArchive {
            kind: FrameKind::Close,
            ..
        })
    ));
    // Surrogate code point encoded in UTF-8 (ed a0 80) is not valid UTF-8 either.
    inline[10..13].copy_from_slice(&[0xed, 0xa0, 0x80]);
    assert!(decode_bytes(&inline).is_err());

    // Out-of-line string: the text lives at the start of the body.
    let mut outline = AnyMsg::Close(Close {
        code: 1001,
        reason: "server shutting down".into(),
    })
    .frame();
    assert_eq!(outline[HEADER_LEN], b's');
    outline[HEADER_LEN + 3] = 0xff;
    assert!(matches!(
        decode_bytes(&outline),
        Err(WireError::InvalidArchive {
            kind: FrameKind::Close,
            ..
        })
    ));

    // Strings inside a vector (PeerList.peers) are checked too.
    let mut list = AnyMsg::PeerList(PeerList {
        req: 1,
        peers: vec!["ok".into(), "a-long-peer-id-1234".into()],
    })
    .frame();
    assert_eq!(list[HEADER_LEN], b'a');
    list[HEADER_LEN + 1] = 0xfe;
    assert!(decode_bytes(&list).is_err());

    // Bytes fields are not text: the same byte in a payload is fine.
    let payload = AnyMsg::RpcResponse(RpcResponse {
        id: 1,
        result: vec![0xff, 0xfe, 0xc3].into(),
    });
    common::assert_decodes_to(&payload.frame(), &payload);
}

#[test]
fn invalid_enum_and_bool_tags_are_rejected() {
    // Presence.change is the last body byte: 0 = Join, 1 = Leave, nothing else.
    let mut p = AnyMsg::Presence(Presence {
        topic: None,
        peer: "a".into(),
        change: PresenceChange::Join,
    })
    .frame();
    let last = p.len() - 1;
    assert_eq!(p[last], 0);
    for tag in 2..=255u8 {
        p[last] = tag;
        assert!(matches!(
            decode_bytes(&p),
            Err(WireError::InvalidArchive {
                kind: FrameKind::Presence,
                ..
            })
        ));
    }
    p[last] = 1;
    assert!(decode_bytes(&p).is_ok());

    // Signal.kind sits after req (8) and room (8): body offset 16 when nothing is out of
    // line. 0..=3 are valid.
    let mut s = AnyMsg::Signal(Signal {
        req: 1,
        room: "r".into(),
        kind: SignalKind::Bye,
        peer: None,
        payload: Vec::new().into(),
    })
    .frame();
    assert_eq!(s[HEADER_LEN + 16], 3);
    s[HEADER_LEN + 16] = 4;
    assert!(matches!(
        decode_bytes(&s),
        Err(WireError::InvalidArchive {
            kind: FrameKind::Signal,
            ..
        })
    ));

    // bool: only 0 and 1. TopicMessage.direct follows two inline strings.
    let mut t = AnyMsg::TopicMessage(TopicMessage {
        topic: "t".into(),
        from: "f".into(),
        direct: true,
        payload: Vec::new().into(),
    })
    .frame();
    assert_eq!(t[HEADER_LEN + 16], 1);
    t[HEADER_LEN + 16] = 2;
    assert!(decode_bytes(&t).is_err());

    // Option tag: only 0 (None) and 1 (Some). Watch.topic starts at body offset 8.
    let mut w = AnyMsg::Watch(Watch {
        req: 1,
        topic: None,
    })
    .frame();
    assert_eq!(w[HEADER_LEN + 8], 0);
    w[HEADER_LEN + 8] = 2;
    assert!(decode_bytes(&w).is_err());
}

#[test]
fn bad_relative_pointers_are_rejected() {
    // RpcResponse { id: 1, result: [1, 2, 3] }: body = 3 bytes of result, id, then
    // { offset: i32 at body offset 11, len: u32 }.
    let good = AnyMsg::RpcResponse(RpcResponse {
        id: 1,
        result: vec![1, 2, 3].into(),
    })
    .frame();
    let ptr_at = HEADER_LEN + 11;
    let len_at = HEADER_LEN + 15;
    assert_eq!(
        i32::from_le_bytes(good[ptr_at..ptr_at + 4].try_into().unwrap()),
        -11
    );
    let with = |off: i32, len: u32| {
        let mut f = good.clone();
        f[ptr_at..ptr_at + 4].copy_from_slice(&off.to_le_bytes());
        f[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        decode_bytes(&f).map(|_| ())
    };
    assert!(with(-11, 3).is_ok());
    // Before the start of the buffer.
    assert!(with(-12, 3).is_err());
    assert!(with(i32::MIN, 3).is_err());
    // Length running into the root object (data must end before the object pointing to it).
    assert!(with(-11, 4).is_err());
    // Pointing at or after the root (into itself, past the end).
    assert!(with(0, 3).is_err());
    assert!(with(4, 0).is_err());
    assert!(with(i32::MAX, 1).is_err());
    // Huge lengths.
    assert!(with(-11, u32::MAX).is_err());
    assert!(with(-11, 1 << 30).is_err());
    // A shorter length or an empty slice inside the buffer is fine (just unreferenced bytes).
    assert!(with(-11, 2).is_ok());
    assert!(with(-10, 0).is_ok());
}

#[test]
fn decode_bytes_rejects_trailing_and_missing_bytes() {
    let mut f = AnyMsg::Ping(Ping { nonce: 1 }).frame();
    f.push(0);
    assert_eq!(
        decode_bytes(&f).unwrap_err(),
        WireError::Violation("trailing bytes after frame")
    );
    f.truncate(10);
    assert_eq!(
        decode_bytes(&f).unwrap_err(),
        WireError::Violation("incomplete frame")
    );
}

#[test]
fn fuzz_roundtrip_entry_point_accepts_every_sample() {
    // decode_roundtrip's first byte indexes FrameKind::ALL; feed it every valid sample body
    // so the fuzz target's full path (decode, to_owned, re-encode, compare) runs in tests.
    for msg in samples() {
        let index = FrameKind::ALL
            .iter()
            .position(|k| *k == msg.kind())
            .unwrap() as u8;
        let frame = msg.frame();
        let mut data = vec![index];
        data.extend_from_slice(&frame[HEADER_LEN..]);
        peerd_codec::fuzzing::decode_roundtrip(&data);
        for byte in 1..data.len() {
            let mut d = data.clone();
            d[byte] ^= 0x01;
            peerd_codec::fuzzing::decode_roundtrip(&d);
        }
    }
}

#[test]
fn wire_error_codes() {
    assert_eq!(
        WireError::TooLarge { len: 1, max: 0 }.code(),
        Code::TooLarge
    );
    assert_eq!(WireError::UnknownKind(0).code(), Code::BadFrame);
    assert_eq!(WireError::Violation("x").code(), Code::BadFrame);
    assert_eq!(
        WireError::InvalidArchive {
            kind: FrameKind::Ping,
            check: peerd_codec::check::rule::ROOT_FITS_IN_THE_BODY,
            detail: String::new()
        }
        .code(),
        Code::BadFrame
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Random bytes as a body of every kind: no panic, only Ok or InvalidArchive.
    #[test]
    fn random_bodies(body in vec(any::<u8>(), 0..256)) {
        for &kind in FrameKind::ALL {
            check_body(kind, &body);
        }
    }

    /// Random bytes as a stream: the fuzzing entry points never panic.
    #[test]
    fn random_streams(data in vec(any::<u8>(), 0..1024)) {
        peerd_codec::fuzzing::decode_stream(&data);
        peerd_codec::fuzzing::framer_chunks(&data);
        peerd_codec::fuzzing::decode_roundtrip(&data);
    }

    /// Random bytes after a valid header of a random kind.
    #[test]
    fn random_bodies_behind_valid_headers(
        kind in proptest::sample::select(FrameKind::ALL),
        body in vec(any::<u8>(), 0..128),
    ) {
        let mut f = Vec::with_capacity(HEADER_LEN + body.len());
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&[kind as u8, 0, 0, 0]);
        f.extend_from_slice(&body);
        let (raw, used) = split_frame(&f, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(used, f.len());
        check_body(raw.header.kind, raw.body);
    }

    /// Random multi-byte corruption of valid frames.
    #[test]
    fn random_corruption_of_valid_frames(
        which in 0usize..samples().len(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let msg = &samples()[which];
        let mut f = msg.frame();
        let n = f.len() - HEADER_LEN;
        for (i, v) in edits {
            f[HEADER_LEN + i.index(n)] = v;
        }
        check_body(msg.kind(), &f[HEADER_LEN..]);
    }
}
