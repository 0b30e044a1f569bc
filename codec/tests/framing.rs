//! Framing: frames come out whole and in order however the byte stream is chunked, and
//! `Framer::needed` says exactly how many bytes are missing.

mod common;

use bytes::{BufMut, BytesMut};
use common::{any_msg, assert_decodes_to, samples, AnyMsg};
use peerd_codec::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// Drain every whole frame out of `framer`.
fn drain(framer: &mut Framer) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame().expect("valid stream") {
        out.push(f);
    }
    out
}

#[test]
fn one_byte_at_a_time() {
    for msg in samples() {
        let frame = msg.frame();
        let mut framer = Framer::new(DEFAULT_MAX_FRAME_LEN);
        for (i, b) in frame.iter().enumerate() {
            // Before the header is complete only the header's remainder is known.
            let want = if i < HEADER_LEN {
                HEADER_LEN - i
            } else {
                frame.len() - i
            };
            assert_eq!(framer.needed().unwrap(), want, "{:?}", msg.kind());
            assert!(framer.next_frame().unwrap().is_none());
            framer.extend(std::slice::from_ref(b));
        }
        assert_eq!(framer.needed().unwrap(), 0);
        let got = framer.next_frame().unwrap().expect("whole frame");
        assert_eq!(&got[..], &frame[..]);
        assert_decodes_to(&got, &msg);
        assert_eq!(framer.buffered(), 0);
        assert!(framer.next_frame().unwrap().is_none());
        assert_eq!(framer.needed().unwrap(), HEADER_LEN);
    }
}

#[test]
fn split_into_two_chunks_at_every_offset() {
    for msg in samples() {
        let frame = msg.frame();
        for cut in 0..=frame.len() {
            let mut framer = Framer::new(DEFAULT_MAX_FRAME_LEN);
            framer.extend(&frame[..cut]);
            let first = framer.next_frame().unwrap();
            assert_eq!(first.is_some(), cut == frame.len());
            // split_frame on the same prefix agrees.
            assert_eq!(
                split_frame(&frame[..cut], DEFAULT_MAX_FRAME_LEN)
                    .unwrap()
                    .is_some(),
                cut == frame.len()
            );
            framer.extend(&frame[cut..]);
            let got = first.or_else(|| framer.next_frame().unwrap()).unwrap();
            assert_eq!(&got[..], &frame[..]);
            assert_decodes_to(&got, &msg);
            assert_eq!(framer.buffered(), 0);
        }
    }
}

#[test]
fn all_samples_concatenated_split_at_every_offset() {
    let msgs = samples();
    let mut stream = BytesMut::new();
    for m in &msgs {
        m.encode_into(&mut stream);
    }
    for cut in 0..=stream.len() {
        let mut framer = Framer::new(DEFAULT_MAX_FRAME_LEN);
        framer.extend(&stream[..cut]);
        let mut got = drain(&mut framer);
        framer.extend(&stream[cut..]);
        got.extend(drain(&mut framer));
        assert_eq!(got.len(), msgs.len(), "cut at {cut}");
        for (f, m) in got.iter().zip(&msgs) {
            assert_decodes_to(f, m);
        }
        assert_eq!(framer.buffered(), 0);
    }
}

#[test]
fn split_frame_walks_a_stream() {
    let msgs = samples();
    let mut stream = BytesMut::new();
    for m in &msgs {
        m.encode_into(&mut stream);
    }
    let mut rest = &stream[..];
    let mut seen = Vec::new();
    while let Some((raw, used)) = split_frame(rest, DEFAULT_MAX_FRAME_LEN).unwrap() {
        seen.push(AnyMsg::from_frame(raw.decode().unwrap()));
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(seen, msgs);
}

#[test]
fn needed_behaviour() {
    let ping = AnyMsg::Ping(Ping { nonce: 9 }).frame(); // 8 + 8 bytes
    let close = AnyMsg::Close(Close {
        code: 1000,
        reason: "bye".into(),
    })
    .frame(); // 8 + 10 bytes

    let mut f = Framer::new(DEFAULT_MAX_FRAME_LEN);
    // Nothing buffered: a header's worth.
    assert_eq!(f.needed(), Ok(HEADER_LEN));
    // Part of a header: the rest of the header (the body length is not known yet).
    f.extend(&ping[..3]);
    assert_eq!(f.needed(), Ok(HEADER_LEN - 3));
    // Whole header: exactly the body.
    f.extend(&ping[3..8]);
    assert_eq!(f.needed(), Ok(8));
    f.extend(&ping[8..15]);
    assert_eq!(f.needed(), Ok(1));
    // Whole frame, plus part of the next: 0 (a frame is ready).
    f.extend(&ping[15..]);
    f.extend(&close[..4]);
    assert_eq!(f.needed(), Ok(0));
    assert_eq!(&f.next_frame().unwrap().unwrap()[..], &ping[..]);
    // After taking the frame, the partial header of the next one counts.
    assert_eq!(f.needed(), Ok(HEADER_LEN - 4));
    f.extend(&close[4..]);
    assert_eq!(f.needed(), Ok(0));
    assert_eq!(&f.next_frame().unwrap().unwrap()[..], &close[..]);
    assert_eq!(f.needed(), Ok(HEADER_LEN));

    // A zero-length body (not a valid archive, but valid framing) needs nothing after the
    // header.
    f.extend(&[0, 0, 0, 0, 0x70, 0, 0, 0]);
    assert_eq!(f.needed(), Ok(0));
    let empty = f.next_frame().unwrap().unwrap();
    assert_eq!(empty.len(), HEADER_LEN);
    assert!(matches!(
        peerd_codec::codec::decode_bytes(&empty),
        Err(WireError::InvalidArchive {
            kind: FrameKind::Ping,
            ..
        })
    ));

    // An oversized or invalid header is an error from `needed` too, as soon as the 8 header
    // bytes are in.
    let mut f = Framer::new(100);
    f.extend(&[101, 0, 0, 0, 0x70, 0, 0]);
    assert_eq!(f.needed(), Ok(1));
    f.extend(&[0]);
    assert_eq!(f.needed(), Err(WireError::TooLarge { len: 101, max: 100 }));
    let mut f = Framer::new(100);
    f.extend(&[1, 0, 0, 0, 0xee, 0, 0, 0]);
    assert_eq!(f.needed(), Err(WireError::UnknownKind(0xee)));
    // Exactly at the limit is fine.
    let mut f = Framer::new(100);
    f.extend(&[100, 0, 0, 0, 0x70, 0, 0, 0]);
    assert_eq!(f.needed(), Ok(100));
}

#[test]
fn buffer_mut_and_clear() {
    let frame = AnyMsg::Ping(Ping { nonce: 3 }).frame();
    let mut f = Framer::new(DEFAULT_MAX_FRAME_LEN);
    // Reading straight into the internal buffer, the way a socket read would.
    f.buffer_mut().put_slice(&frame[..10]);
    assert_eq!(f.buffered(), 10);
    assert!(f.next_frame().unwrap().is_none());
    // next_frame reserved room for the rest of the announced frame.
    assert!(f.buffer_mut().capacity() >= frame.len());
    f.buffer_mut().put_slice(&frame[10..]);
    assert_eq!(&f.next_frame().unwrap().unwrap()[..], &frame[..]);

    f.extend(&frame[..5]);
    f.clear();
    assert_eq!(f.buffered(), 0);
    assert_eq!(f.needed(), Ok(HEADER_LEN));
    f.extend(&frame);
    assert_eq!(&f.next_frame().unwrap().unwrap()[..], &frame[..]);
}

#[test]
fn yielded_frames_outlive_later_reads() {
    // Frames are split off without copying; later reads into the framer must not disturb
    // a frame that is still held (e.g. queued for dispatch).
    let a = AnyMsg::Publish(Publish {
        req: 1,
        topic: "t".into(),
        echo: false,
        payload: vec![1; 100].into(),
    });
    let b = AnyMsg::Ping(Ping { nonce: 2 });
    let mut f = Framer::new(DEFAULT_MAX_FRAME_LEN);
    f.extend(&a.frame());
    let held = f.next_frame().unwrap().unwrap();
    for _ in 0..100 {
        f.extend(&b.frame());
    }
    assert_decodes_to(&held, &a);
    assert_eq!(drain(&mut f).len(), 100);
    assert_decodes_to(&held, &a);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any sequence of messages, cut into any chunks, comes out whole and in order.
    #[test]
    fn random_chunking_preserves_frames(
        msgs in vec(any_msg(), 1..12),
        cuts in vec(1usize..64, 0..200),
    ) {
        let mut stream = BytesMut::new();
        for m in &msgs {
            m.encode_into(&mut stream);
        }
        let mut framer = Framer::new(u32::MAX);
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cuts = cuts.into_iter();
        while pos < stream.len() {
            let step = cuts.next().unwrap_or(stream.len());
            let end = (pos + step).min(stream.len());
            framer.extend(&stream[pos..end]);
            pos = end;
            let needed = framer.needed().unwrap();
            let mut drained = drain(&mut framer);
            // needed() == 0 exactly when a frame was ready.
            prop_assert_eq!(needed == 0, !drained.is_empty());
            got.append(&mut drained);
        }
        prop_assert_eq!(got.len(), msgs.len());
        for (f, m) in got.iter().zip(&msgs) {
            let d = peerd_codec::codec::decode_bytes(f).unwrap();
            prop_assert_eq!(d.kind(), m.kind());
            prop_assert_eq!(&AnyMsg::from_frame(d), m);
        }
    }
}
