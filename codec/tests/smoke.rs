use std::borrow::Cow;

use bytes::BytesMut;
use peerd_codec::*;

#[test]
fn publish_round_trips_zero_copy() {
    let payload = vec![7u8; 100];
    let msg = Publish {
        req: 9,
        topic: Cow::Borrowed("chat"),
        echo: true,
        payload: Cow::Borrowed(&payload),
    };
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"x"); // misalign the frame start on purpose
    encode(&msg, &mut buf, DEFAULT_MAX_FRAME_LEN).unwrap();
    let (raw, n) = split_frame(&buf[1..], DEFAULT_MAX_FRAME_LEN)
        .unwrap()
        .unwrap();
    assert_eq!(n, buf.len() - 1);
    let Frame::Publish(p) = raw.decode().unwrap() else {
        panic!("wrong kind")
    };
    assert_eq!(p.topic.as_str(), "chat");
    assert_eq!(p.req.to_native(), 9);
    assert!(p.echo);
    // The payload is borrowed from the receive buffer, not copied.
    let range = buf.as_ptr_range();
    assert!(range.contains(&p.payload.as_slice().as_ptr()));
    let owned: Publish<'static> = peerd_codec::codec::to_owned(p);
    assert_eq!(owned, msg);
}
