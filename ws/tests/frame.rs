//! The deframer, headers and masking: every refusal, fragmentation, in-place compaction, and
//! chunking independence (any split of the input gives the same result).

use std::io::Cursor;

use peerd_ws::{
    apply_mask, header, write_frame, write_masked_frame, Deframer, Event, MessageKind, Opcode,
    Role, Step, WsError, MAX_SERVER_HEADER,
};
use proptest::collection::vec;
use proptest::prelude::*;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// What a caller saw, with ranges resolved to bytes so runs with different buffer layouts
/// compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Data(usize, Option<(MessageKind, usize)>),
    Message(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, Vec<u8>),
    Error(WsError),
}

/// A caller like the server's read loop: one fixed buffer, raw bytes appended at `end`,
/// compaction (raw region moved down to `app_end`) only when the deframer needs more, and
/// a completed message taken out of the front of the buffer.
struct Caller {
    d: Deframer,
    buf: Vec<u8>,
    app_end: usize,
    raw: usize,
    end: usize,
    seen: Vec<Seen>,
    failed: bool,
}

impl Caller {
    fn new(role: Role, max: usize, text: bool) -> Caller {
        Caller {
            d: Deframer::new(role, max, text),
            buf: vec![0; 1 << 22],
            app_end: 0,
            raw: 0,
            end: 0,
            seen: Vec::new(),
            failed: false,
        }
    }

    /// Append `bytes` and deframe as far as possible.
    fn feed(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.end + bytes.len() > self.buf.len() {
            self.compact();
        }
        assert!(
            self.end + bytes.len() <= self.buf.len(),
            "test buffer too small"
        );
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        self.run();
    }

    fn compact(&mut self) {
        self.buf.copy_within(self.raw..self.end, self.app_end);
        self.end -= self.raw - self.app_end;
        self.raw = self.app_end;
    }

    fn run(&mut self) {
        loop {
            let before = self.end - self.raw;
            match self.d.step(&mut self.buf, self.app_end, self.raw, self.end) {
                Err(e) => {
                    self.seen.push(Seen::Error(e));
                    self.failed = true;
                    return;
                }
                Ok(Step {
                    consumed,
                    event: Event::NeedMore { want },
                }) => {
                    assert_eq!(consumed, 0);
                    assert!(
                        want > before,
                        "NeedMore want {want} with {before} available"
                    );
                    return;
                }
                Ok(Step { consumed, event }) => {
                    assert!(consumed >= 2 && consumed <= before);
                    match event {
                        Event::NeedMore { .. } => unreachable!(),
                        Event::Data {
                            len,
                            end_of_message,
                        } => {
                            self.seen.push(Seen::Data(len, end_of_message));
                            self.app_end += len;
                            self.raw += consumed;
                            if let Some((kind, total)) = end_of_message {
                                // Only the current message is ever in the app region.
                                assert_eq!(self.app_end, total);
                                let msg = self.buf[..total].to_vec();
                                self.seen.push(Seen::Message(kind, msg));
                                self.app_end = 0;
                                self.compact();
                            }
                            assert_eq!(self.d.message_in_progress().unwrap_or(0), self.app_end);
                        }
                        Event::Ping { payload } => {
                            assert!(
                                payload.start >= self.raw && payload.end == self.raw + consumed
                            );
                            self.seen.push(Seen::Ping(self.buf[payload].to_vec()));
                            self.raw += consumed;
                        }
                        Event::Pong => {
                            self.seen.push(Seen::Pong);
                            self.raw += consumed;
                        }
                        Event::Close { status, reason } => {
                            assert!(reason.end == self.raw + consumed);
                            self.seen
                                .push(Seen::Close(status, self.buf[reason].to_vec()));
                            self.raw += consumed;
                        }
                    }
                }
            }
        }
    }
}

fn masked(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_masked_frame(opcode, fin, payload, MASK, &mut v);
    v
}

/// Feed `input` whole to a server-side deframer.
fn server(input: &[u8], max: usize, text: bool) -> Vec<Seen> {
    let mut c = Caller::new(Role::Server, max, text);
    c.feed(input);
    c.seen
}

/// The error a server-side deframer gives for `input` (fed whole), panicking if none.
fn refusal(input: &[u8], max: usize, text: bool) -> WsError {
    match server(input, max, text).pop() {
        Some(Seen::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

// ---- headers ------------------------------------------------------------------------------

#[test]
fn header_lengths() {
    let cases: [(usize, &[u8]); 5] = [
        (0, &[0x82, 0]),
        (125, &[0x82, 125]),
        (126, &[0x82, 126, 0, 126]),
        (65535, &[0x82, 126, 0xff, 0xff]),
        (65536, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ];
    for (len, want) in cases {
        let (h, n) = header(Opcode::Binary, true, len);
        assert_eq!(&h[..n], want, "len {len}");
        assert!(n <= MAX_SERVER_HEADER);
        // tungstenite agrees, both ways.
        let th = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        let mut theirs = Vec::new();
        th.format(len as u64, &mut theirs).unwrap();
        assert_eq!(&h[..n], &theirs[..]);
        let (parsed, plen) = FrameHeader::parse(&mut Cursor::new(&h[..n]))
            .unwrap()
            .unwrap();
        assert_eq!((parsed, plen), (th, len as u64));
    }
    let (h, n) = header(Opcode::Continuation, false, 3);
    assert_eq!(&h[..n], &[0x00, 3]);
    let (h, n) = header(Opcode::Text, true, 1);
    assert_eq!(&h[..n], &[0x81, 1]);
}

#[test]
fn opcodes_match_tungstenite() {
    let all = [
        (Opcode::Continuation, OpCode::Data(Data::Continue)),
        (Opcode::Text, OpCode::Data(Data::Text)),
        (Opcode::Binary, OpCode::Data(Data::Binary)),
        (Opcode::Close, OpCode::Control(Control::Close)),
        (Opcode::Ping, OpCode::Control(Control::Ping)),
        (Opcode::Pong, OpCode::Control(Control::Pong)),
    ];
    for (ours, theirs) in all {
        assert_eq!(ours.as_u8(), u8::from(theirs));
        assert_eq!(Opcode::from_u8(ours.as_u8()), Some(ours));
        assert_eq!(ours.is_control(), matches!(theirs, OpCode::Control(_)));
    }
    for reserved in (3..=7).chain(11..=15) {
        assert_eq!(Opcode::from_u8(reserved), None);
    }
}

#[test]
fn masked_frame_matches_tungstenite() {
    for len in [0usize, 5, 125, 126, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let frame = masked(Opcode::Binary, true, &payload);
        let mut cur = Cursor::new(&frame[..]);
        let (h, plen) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        assert_eq!(h.mask, Some(MASK));
        assert_eq!(plen, len as u64);
        let mut body = frame[cur.position() as usize..].to_vec();
        apply_mask(&mut body, MASK, 0);
        assert_eq!(body, payload);
    }
}

// ---- masking ------------------------------------------------------------------------------

fn naive_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

#[test]
fn mask_round_trip() {
    let original: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let mut buf = original.clone();
    apply_mask(&mut buf, MASK, 0);
    assert_ne!(buf, original);
    apply_mask(&mut buf, MASK, 0);
    assert_eq!(buf, original);
    // Unmasking in pieces with the running offset equals unmasking at once.
    let mut whole = original.clone();
    apply_mask(&mut whole, MASK, 0);
    let mut pieces = original.clone();
    let (a, rest) = pieces.split_at_mut(13);
    let (b, c) = rest.split_at_mut(501);
    apply_mask(a, MASK, 0);
    apply_mask(b, MASK, 13);
    apply_mask(c, MASK, 514);
    assert_eq!(pieces, whole);
}

proptest! {
    #[test]
    fn mask_matches_naive(
        data in vec(any::<u8>(), 0..300),
        start in 0usize..16,
        mask in any::<[u8; 4]>(),
        offset in 0usize..1000,
    ) {
        // A sub-slice starting at `start` exercises every alignment.
        let start = start.min(data.len());
        let mut fast = data.clone();
        let mut slow = data.clone();
        apply_mask(&mut fast[start..], mask, offset);
        naive_mask(&mut slow[start..], mask, offset);
        prop_assert_eq!(fast, slow);
    }
}

// ---- whole frames -------------------------------------------------------------------------

#[test]
fn binary_and_text_messages() {
    let mut input = masked(Opcode::Binary, true, b"hello");
    input.extend(masked(Opcode::Text, true, "κόσμε".as_bytes()));
    input.extend(masked(Opcode::Binary, true, b""));
    assert_eq!(
        server(&input, 1024, true),
        vec![
            Seen::Data(5, Some((MessageKind::Binary, 5))),
            Seen::Message(MessageKind::Binary, b"hello".to_vec()),
            Seen::Data(10, Some((MessageKind::Text, 10))),
            Seen::Message(MessageKind::Text, "κόσμε".as_bytes().to_vec()),
            Seen::Data(0, Some((MessageKind::Binary, 0))),
            Seen::Message(MessageKind::Binary, Vec::new()),
        ]
    );
}

#[test]
fn client_role_reads_unmasked_frames() {
    let mut input = Vec::new();
    write_frame(Opcode::Binary, false, b"ab", &mut input);
    write_frame(Opcode::Ping, true, b"p", &mut input);
    write_frame(Opcode::Continuation, true, b"cd", &mut input);
    let mut c = Caller::new(Role::Client, 1024, false);
    c.feed(&input);
    assert_eq!(
        c.seen,
        vec![
            Seen::Data(2, None),
            Seen::Ping(b"p".to_vec()),
            Seen::Data(2, Some((MessageKind::Binary, 4))),
            Seen::Message(MessageKind::Binary, b"abcd".to_vec()),
        ]
    );
}

#[test]
fn fragments_with_control_frames_between() {
    let mut input = masked(Opcode::Binary, false, b"one ");
    input.extend(masked(Opcode::Ping, true, b"are you there"));
    input.extend(masked(Opcode::Continuation, false, b"two "));
    input.extend(masked(Opcode::Pong, true, b"unsolicited"));
    input.extend(masked(Opcode::Continuation, false, b""));
    input.extend(masked(Opcode::Continuation, true, b"three"));
    input.extend(masked(
        Opcode::Close,
        true,
        &peerd_ws::close_payload(1000, "bye"),
    ));
    assert_eq!(
        server(&input, 1024, false),
        vec![
            Seen::Data(4, None),
            Seen::Ping(b"are you there".to_vec()),
            Seen::Data(4, None),
            Seen::Pong,
            Seen::Data(0, None),
            Seen::Data(5, Some((MessageKind::Binary, 13))),
            Seen::Message(MessageKind::Binary, b"one two three".to_vec()),
            Seen::Close(Some(1000), b"bye".to_vec()),
        ]
    );
}

#[test]
fn in_place_compaction_of_several_frames() {
    // Two messages, four data frames and a ping, all in one buffer; the caller steps through
    // them without compacting, and the payloads end up back to back at the front.
    let mut buf = masked(Opcode::Binary, false, b"alpha-");
    buf.extend(masked(Opcode::Ping, true, b"p1"));
    buf.extend(masked(Opcode::Continuation, true, &[b'b'; 300]));
    buf.extend(masked(Opcode::Binary, false, b"gamma-"));
    buf.extend(masked(Opcode::Continuation, true, b"delta"));
    let end = buf.len();
    let mut d = Deframer::new(Role::Server, 1 << 20, false);
    let (mut app_end, mut raw) = (0, 0);
    let mut ends = Vec::new();
    loop {
        let step = d.step(&mut buf, app_end, raw, end).unwrap();
        match step.event {
            Event::NeedMore { want } => {
                assert_eq!(want, 2);
                break;
            }
            Event::Data {
                len,
                end_of_message,
            } => {
                app_end += len;
                if let Some((kind, total)) = end_of_message {
                    assert_eq!(kind, MessageKind::Binary);
                    ends.push((app_end, total));
                }
            }
            Event::Ping { payload } => assert_eq!(&buf[payload], b"p1"),
            other => panic!("unexpected {other:?}"),
        }
        raw += step.consumed;
    }
    assert_eq!(raw, end);
    let mut want = b"alpha-".to_vec();
    want.extend([b'b'; 300]);
    want.extend(b"gamma-delta");
    assert_eq!(&buf[..app_end], &want[..]);
    assert_eq!(ends, vec![(306, 306), (317, 11)]);
}

#[test]
fn need_more_reports_what_the_frame_needs() {
    let mut d = Deframer::new(Role::Server, 1 << 20, false);
    let want = |d: &mut Deframer, bytes: &[u8]| {
        let mut b = bytes.to_vec();
        match d.step(&mut b, 0, 0, bytes.len()).unwrap().event {
            Event::NeedMore { want } => want,
            other => panic!("{other:?}"),
        }
    };
    let small = masked(Opcode::Binary, true, &[1; 10]);
    let mid = masked(Opcode::Binary, true, &[1; 300]);
    let big = masked(Opcode::Binary, true, &[1; 70000]);
    assert_eq!(want(&mut d, &[]), 2);
    assert_eq!(want(&mut d, &small[..1]), 2);
    assert_eq!(want(&mut d, &small[..2]), 16);
    assert_eq!(want(&mut d, &small[..15]), 16);
    assert_eq!(want(&mut d, &mid[..2]), 8);
    assert_eq!(want(&mut d, &mid[..3]), 8);
    assert_eq!(want(&mut d, &mid[..4]), 308);
    assert_eq!(want(&mut d, &big[..2]), 14);
    assert_eq!(want(&mut d, &big[..9]), 14);
    assert_eq!(want(&mut d, &big[..10]), 70014);
    assert_eq!(want(&mut d, &big[..70013]), 70014);
    // None of those changed the deframer: the whole frame still goes through.
    let mut b = small.clone();
    let step = d.step(&mut b, 0, 0, small.len()).unwrap();
    assert_eq!(step.consumed, 16);
}

// ---- refusals -----------------------------------------------------------------------------

#[test]
fn refuses_reserved_bits() {
    for rsv in [0x40u8, 0x20, 0x10] {
        let mut f = masked(Opcode::Binary, true, b"x");
        f[0] |= rsv;
        assert_eq!(refusal(&f[..2], 100, false).status, 1002);
    }
}

#[test]
fn refuses_reserved_opcodes() {
    for op in (3u8..=7).chain(11..=15) {
        let mut f = masked(Opcode::Binary, true, b"x");
        f[0] = 0x80 | op;
        assert_eq!(refusal(&f, 100, false).status, 1002, "opcode {op}");
    }
}

#[test]
fn refuses_wrong_masking() {
    let mut unmasked = Vec::new();
    write_frame(Opcode::Binary, true, b"x", &mut unmasked);
    assert_eq!(refusal(&unmasked, 100, false).status, 1002);

    let mut c = Caller::new(Role::Client, 100, false);
    c.feed(&masked(Opcode::Binary, true, b"x"));
    assert!(matches!(
        &c.seen[..],
        [Seen::Error(WsError { status: 1002, .. })]
    ));
}

#[test]
fn refuses_bad_control_frames() {
    // Over 125 bytes: refused on the first two bytes.
    let ping = masked(Opcode::Ping, true, &[0; 126]);
    assert_eq!(refusal(&ping[..2], 100, false).status, 1002);
    // Fragmented.
    for op in [Opcode::Ping, Opcode::Pong, Opcode::Close] {
        let f = masked(op, false, b"");
        assert_eq!(refusal(&f, 100, false).status, 1002);
    }
}

#[test]
fn refuses_continuation_without_message() {
    let f = masked(Opcode::Continuation, true, b"x");
    assert_eq!(refusal(&f, 100, false).status, 1002);
}

#[test]
fn refuses_new_message_inside_message() {
    for op in [Opcode::Binary, Opcode::Text] {
        let mut f = masked(Opcode::Binary, false, b"x");
        f.extend(masked(op, true, b"y"));
        assert_eq!(refusal(&f, 100, true).status, 1002);
    }
}

#[test]
fn refuses_text_unless_allowed() {
    let f = masked(Opcode::Text, true, b"hi");
    let e = refusal(&f[..2], 100, false);
    assert_eq!(e.status, 1003);
    assert!(matches!(
        &server(&f, 100, true)[..],
        [
            Seen::Data(2, Some((MessageKind::Text, 2))),
            Seen::Message(..)
        ]
    ));
}

#[test]
fn refuses_oversized_messages_before_the_payload() {
    // A single frame: its header alone is enough.
    let f = masked(Opcode::Binary, true, &[0; 101]);
    assert_eq!(refusal(&f[..2], 100, false).status, 1009);
    let big = masked(Opcode::Binary, true, &[0; 70000]);
    assert_eq!(refusal(&big[..10], 65535, false).status, 1009);
    // Exactly the limit is fine.
    let f = masked(Opcode::Binary, true, &[0; 100]);
    assert!(matches!(
        server(&f, 100, false)[0],
        Seen::Data(100, Some(_))
    ));
    // Across fragments: the message so far counts.
    let mut f = masked(Opcode::Binary, false, &[0; 60]);
    let second = masked(Opcode::Continuation, true, &[0; 41]);
    f.extend_from_slice(&second[..2]);
    let seen = server(&f, 100, false);
    assert_eq!(seen[0], Seen::Data(60, None));
    assert!(matches!(seen[1], Seen::Error(WsError { status: 1009, .. })));
    // Control frames do not count against the message.
    let mut f = masked(Opcode::Binary, false, &[0; 100]);
    f.extend(masked(Opcode::Ping, true, &[0; 125]));
    f.extend(masked(Opcode::Continuation, true, b""));
    assert_eq!(server(&f, 100, false).len(), 4);
}

#[test]
fn refuses_length_with_top_bit() {
    let mut f = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    f.extend(MASK);
    assert_eq!(refusal(&f, usize::MAX, false).status, 1002);
}

#[test]
fn refuses_invalid_utf8() {
    // Whole message.
    let f = masked(Opcode::Text, true, b"ab\xffcd");
    assert_eq!(refusal(&f, 100, true).status, 1007);
    // Fail fast: the second of three fragments is bad; the error comes with it.
    let mut f = masked(Opcode::Text, false, "κόσμε".as_bytes());
    f.extend(masked(
        Opcode::Continuation,
        false,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xed\xa0\x80",
    ));
    let seen = server(&f, 100, true);
    assert_eq!(seen[0], Seen::Data(10, None));
    assert!(matches!(seen[1], Seen::Error(WsError { status: 1007, .. })));
    // A bad continuation of a character split across fragments.
    let mut f = masked(Opcode::Text, false, b"a\xe2\x82");
    f.extend(masked(Opcode::Continuation, false, b"\x28"));
    assert!(matches!(
        server(&f, 100, true)[1],
        Seen::Error(WsError { status: 1007, .. })
    ));
    // A truncated character at the end of the message.
    let mut f = masked(Opcode::Text, false, b"a");
    f.extend(masked(Opcode::Continuation, true, b"\xf0\x9f\x98"));
    assert!(matches!(
        server(&f, 100, true)[1],
        Seen::Error(WsError { status: 1007, .. })
    ));
    // A prefix that can never become valid (F4 90 is above U+10FFFF) fails at once.
    let f = masked(Opcode::Text, false, b"\xf4\x90");
    assert_eq!(refusal(&f, 100, true).status, 1007);
}

#[test]
fn characters_split_across_fragments_are_fine() {
    // U+1F600 (4 bytes) split 1+1+1+1, with empty fragments and a ping between.
    let emoji = "😀".as_bytes();
    let mut f = masked(Opcode::Text, false, b"x");
    f.extend(masked(Opcode::Continuation, false, &emoji[..1]));
    f.extend(masked(Opcode::Continuation, false, b""));
    f.extend(masked(Opcode::Continuation, false, &emoji[1..2]));
    f.extend(masked(Opcode::Ping, true, b""));
    f.extend(masked(Opcode::Continuation, false, &emoji[2..3]));
    f.extend(masked(Opcode::Continuation, true, &emoji[3..]));
    let seen = server(&f, 100, true);
    assert_eq!(
        seen.last(),
        Some(&Seen::Message(MessageKind::Text, "x😀".as_bytes().to_vec()))
    );
}

#[test]
fn close_frames() {
    let close = |payload: &[u8]| server(&masked(Opcode::Close, true, payload), 100, false);
    assert_eq!(close(b""), vec![Seen::Close(None, Vec::new())]);
    assert_eq!(
        close(&[0x03, 0xe8]),
        vec![Seen::Close(Some(1000), Vec::new())]
    );
    for ok in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 3999, 4000, 4999,
    ] {
        assert_eq!(
            close(&peerd_ws::close_payload(ok, "r")),
            vec![Seen::Close(Some(ok), b"r".to_vec())],
            "{ok}"
        );
    }
    // A 1-byte payload.
    assert!(matches!(
        &close(&[3])[..],
        [Seen::Error(WsError { status: 1002, .. })]
    ));
    // Statuses that must not appear on the wire.
    for bad in [
        0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        assert!(
            matches!(
                &close(&bad.to_be_bytes())[..],
                [Seen::Error(WsError { status: 1002, .. })]
            ),
            "{bad}"
        );
    }
    // A reason that is not UTF-8.
    assert!(matches!(
        &close(&[0x03, 0xe8, 0xce, 0xba, 0xff])[..],
        [Seen::Error(WsError { status: 1007, .. })]
    ));
}

#[test]
fn poisoned_after_an_error() {
    let mut d = Deframer::new(Role::Server, 100, false);
    let mut bad = masked(Opcode::Continuation, true, b"x");
    let n = bad.len();
    let e = d.step(&mut bad, 0, 0, n).unwrap_err();
    assert_eq!(e.status, 1002);
    assert!(!e.to_string().is_empty());
    let mut good = masked(Opcode::Binary, true, b"x");
    let n = good.len();
    assert_eq!(d.step(&mut good, 0, 0, n), Err(e.clone()));
    assert_eq!(d.step(&mut good, 0, 0, 0), Err(e));
}

// ---- chunking independence ----------------------------------------------------------------

/// One test message: its kind, payload, where it is cut into fragments, and whether a ping
/// (with the given payload) follows each fragment.
#[derive(Clone, Debug)]
struct Msg {
    kind: MessageKind,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    pings: Vec<Option<Vec<u8>>>,
}

fn msg() -> impl Strategy<Value = Msg> {
    let payload = prop_oneof![
        vec(any::<u8>(), 0..400).prop_map(|p| (MessageKind::Binary, p)),
        ".{0,60}".prop_map(|s: String| (MessageKind::Text, s.into_bytes())),
        // Lengths around the 126 and 65536 encoding boundaries.
        (120usize..140).prop_map(|n| (MessageKind::Binary, vec![7; n])),
        Just((MessageKind::Binary, vec![9; 65540])),
    ];
    (
        payload,
        vec(any::<prop::sample::Index>(), 0..4),
        vec(prop::option::of(vec(any::<u8>(), 0..126)), 5),
    )
        .prop_map(|((kind, payload), cuts, pings)| {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
            cuts.sort_unstable();
            Msg {
                kind,
                payload,
                cuts,
                pings,
            }
        })
}

/// The masked wire bytes of `msgs` (a fresh random mask per frame) and what a caller must
/// see for them.
fn encode(msgs: &[Msg]) -> (Vec<u8>, Vec<Seen>) {
    let mut wire = Vec::new();
    let mut seen = Vec::new();
    for m in msgs {
        let mut bounds = vec![0];
        bounds.extend(&m.cuts);
        bounds.push(m.payload.len());
        let n = bounds.len() - 1;
        for i in 0..n {
            let piece = &m.payload[bounds[i]..bounds[i + 1]];
            let op = match (i, m.kind) {
                (0, MessageKind::Text) => Opcode::Text,
                (0, MessageKind::Binary) => Opcode::Binary,
                _ => Opcode::Continuation,
            };
            let fin = i + 1 == n;
            write_masked_frame(op, fin, piece, peerd_ws::random_mask(), &mut wire);
            let eom = fin.then_some((m.kind, m.payload.len()));
            seen.push(Seen::Data(piece.len(), eom));
            if fin {
                seen.push(Seen::Message(m.kind, m.payload.clone()));
            }
            if let Some(p) = &m.pings[i % m.pings.len()] {
                write_masked_frame(Opcode::Ping, true, p, peerd_ws::random_mask(), &mut wire);
                seen.push(Seen::Ping(p.clone()));
            }
        }
    }
    write_masked_frame(Opcode::Close, true, &[0x03, 0xe9, b'k'], MASK, &mut wire);
    seen.push(Seen::Close(Some(1001), b"k".to_vec()));
    (wire, seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_split_gives_the_same_result(
        msgs in vec(msg(), 1..5),
        splits in vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let (wire, expected) = encode(&msgs);
        let whole = server(&wire, 1 << 20, true);
        prop_assert_eq!(&whole, &expected);

        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.push(0);
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut c = Caller::new(Role::Server, 1 << 20, true);
        for w in cuts.windows(2) {
            c.feed(&wire[w[0]..w[1]]);
        }
        prop_assert_eq!(&c.seen, &expected);
    }
}

#[test]
fn byte_at_a_time_and_every_two_way_split() {
    let msgs = [
        Msg {
            kind: MessageKind::Text,
            payload: "héllo wörld".as_bytes().to_vec(),
            cuts: vec![2, 5],
            pings: vec![Some(b"pp".to_vec()), None, None],
        },
        Msg {
            kind: MessageKind::Binary,
            payload: vec![3; 300],
            cuts: vec![],
            pings: vec![None],
        },
    ];
    let (wire, expected) = encode(&msgs);
    let mut c = Caller::new(Role::Server, 1 << 20, true);
    for b in &wire {
        c.feed(std::slice::from_ref(b));
    }
    assert_eq!(c.seen, expected);
    for split in 0..=wire.len() {
        let mut c = Caller::new(Role::Server, 1 << 20, true);
        c.feed(&wire[..split]);
        c.feed(&wire[split..]);
        assert_eq!(c.seen, expected, "split at {split}");
    }
}

proptest! {
    /// Fail-fast UTF-8: however a byte string is cut into fragments, the message is refused
    /// exactly at the first fragment after which the bytes so far can no longer be the start
    /// of valid UTF-8, and accepted iff the whole is valid.
    #[test]
    fn utf8_fails_fast_at_the_right_fragment(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..24),
            ".{0,12}".prop_map(String::into_bytes),
            (".{0,8}", any::<u8>(), ".{0,8}").prop_map(|(a, b, c)| {
                let mut v = a.into_bytes();
                v.push(b);
                v.extend(c.into_bytes());
                v
            }),
        ],
        cuts in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut wire = Vec::new();
        let frames = cuts.len() - 1;
        for (i, w) in cuts.windows(2).enumerate() {
            let op = if i == 0 { Opcode::Text } else { Opcode::Continuation };
            write_masked_frame(op, i + 1 == frames, &bytes[w[0]..w[1]], MASK, &mut wire);
        }
        let seen = server(&wire, 1 << 20, true);
        let could_continue = |end: usize, last: bool| match std::str::from_utf8(&bytes[..end]) {
            Ok(_) => true,
            Err(e) => !last && e.error_len().is_none(),
        };
        let first_bad = (1..cuts.len()).find(|&i| !could_continue(cuts[i], i == frames));
        match first_bad {
            None => prop_assert!(
                matches!(seen.last(), Some(Seen::Message(MessageKind::Text, _))),
                "{:?}",
                seen
            ),
            Some(i) => {
                prop_assert_eq!(seen.len(), i);
                prop_assert!(
                    matches!(seen[i - 1], Seen::Error(WsError { status: 1007, .. })),
                    "{:?}",
                    seen
                );
            }
        }
    }
}

#[test]
fn deframer_is_small() {
    // Per-connection state on the server: a few words, no buffer.
    assert!(
        std::mem::size_of::<Deframer>() <= 48,
        "{}",
        std::mem::size_of::<Deframer>()
    );
}
