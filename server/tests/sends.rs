//! Both send paths deliver a fan-out whole and in order: the sends of a flush batched
//! through the shard's io_uring (the default), and one `sendmsg` per connection
//! (`ListenOptions::batched_sends = false`, the fallback where the kernel cannot). Beside
//! the readers, a member that never reads fills its socket, so the batch meets sockets
//! that take part of a send and sockets that take nothing.

mod common;

use std::borrow::Cow;

use common::*;
use peerd_codec::{self as codec, Frame};
use peerd_server::ListenOptions;

const READERS: usize = 40;
const MESSAGES: u32 = 200;

fn fan_out(batched: bool) {
    let mut opts = ListenOptions::new("127.0.0.1:0").unwrap().shards(1);
    opts.batched_sends = batched;
    let srv = server(opts);
    let addr = srv.local_addr().unwrap();
    let join = |p: &mut RawPeer| {
        p.send(&codec::Join {
            req: 1,
            topic: "t".into(),
        });
        let code = p.recv_until(|f| match f {
            Frame::Status(s) if s.req.to_native() == 1 => Some(s.code.to_native()),
            _ => None,
        });
        assert_eq!(code, 0, "join");
    };
    let mut readers: Vec<RawPeer> = (0..READERS)
        .map(|i| RawPeer::connect(addr, Some(&format!("r{i}"))))
        .collect();
    readers.iter_mut().for_each(join);
    let mut stuck = RawPeer::connect(addr, Some("stuck"));
    join(&mut stuck);
    let mut publisher = RawPeer::connect(addr, Some("pub"));
    // 16 KiB each: the one that does not read stops taking them after a few hundred KiB.
    let mut payload = vec![0u8; 16 * 1024];
    for n in 0..MESSAGES {
        payload[..4].copy_from_slice(&n.to_le_bytes());
        publisher.send(&codec::Publish {
            req: 0,
            topic: "t".into(),
            payload: Cow::Borrowed(&payload),
            echo: false,
        });
        if n % 16 == 15 {
            // The publisher's own socket never fills; readers read as they go.
            publisher.sync(n as u64);
        }
    }
    for (i, r) in readers.iter_mut().enumerate() {
        for n in 0..MESSAGES {
            let got = r.recv_until(|f| match f {
                Frame::TopicMessage(m) => Some(m.payload.to_vec()),
                _ => None,
            });
            assert_eq!(got.len(), payload.len(), "reader {i}, message {n}");
            assert_eq!(
                u32::from_le_bytes(got[..4].try_into().unwrap()),
                n,
                "reader {i} got messages out of order (batched: {batched})"
            );
        }
    }
    drop(stuck);
}

#[test]
fn batched_sends_deliver_a_fan_out_whole_and_in_order() {
    fan_out(true);
}

#[test]
fn one_sendmsg_per_connection_delivers_it_too() {
    fan_out(false);
}
