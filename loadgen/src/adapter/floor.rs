//! The raw floor: a 4-byte little-endian length, then the payload. No handshake, no framing
//! library: what the kernel alone costs. The echo floor sends each request's bytes back
//! unchanged; the fan-out floor ([`crate::fanout_floor`]) writes each publisher's bytes
//! unchanged to every subscriber. A subscriber is a connection whose first frame is empty
//! (the only empty frame: a payload carries at least its stamps), answered with an empty
//! frame once it receives every publish.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{BufMut, BytesMut};

use super::{read_until, tcp_connect, write_all, Adapter, ConnectOptions, Connected, Incoming};

/// Largest message the floor accepts.
pub const MAX_LEN: usize = 64 << 20;

/// The empty frame: a subscription, and the fan-out floor's confirmation of it.
pub const SUBSCRIBE: [u8; 4] = [0; 4];

/// The floor adapter. Its frames do not say whether they answer or deliver, so the role
/// comes from the scenario ([`Floor::for_scenario`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Floor {
    /// What arrives is a delivery (fan-out) rather than an echoed response.
    deliveries: bool,
}

impl Floor {
    /// The echo floor's client.
    pub const ECHO: Floor = Floor { deliveries: false };
    /// The fan-out floor's client.
    pub const FANOUT: Floor = Floor { deliveries: true };

    /// The client for `scenario`: fan-out's, or echo's for everything else.
    pub fn for_scenario(scenario: &str) -> Floor {
        if scenario == "fanout" {
            Floor::FANOUT
        } else {
            Floor::ECHO
        }
    }
}

/// Call `on` with the payload of every whole frame at the start of `buf`; return the bytes
/// they take (a partial frame at the end is left). Both the adapter and the fan-out floor
/// cut the byte stream here.
pub fn frames(buf: &[u8], mut on: impl FnMut(&[u8])) -> Result<usize> {
    let mut used = 0;
    while buf.len() - used >= 4 {
        let len = u32::from_le_bytes(buf[used..used + 4].try_into().unwrap()) as usize;
        if len > MAX_LEN {
            bail!("floor message of {len} bytes");
        }
        if buf.len() - used - 4 < len {
            break;
        }
        on(&buf[used + 4..used + 4 + len]);
        used += 4 + len;
    }
    Ok(used)
}

impl Adapter for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn connect(
        &self,
        addr: SocketAddr,
        _: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<Connected> {
        Ok(Connected::plain(tcp_connect(addr, opts)?, None, Vec::new()))
    }

    /// The fan-out floor has one topic: every subscriber gets every publish.
    fn subscribe(&self, conn: &mut Connected, _topic: &str) -> Result<()> {
        if !self.deliveries {
            bail!("the echo floor has no topics");
        }
        write_all(&mut conn.stream, &SUBSCRIBE)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = std::mem::take(&mut conn.leftover);
        read_until(&mut conn.stream, &mut buf, deadline, |b| {
            Ok(match b.get(..4) {
                Some(h) if h == SUBSCRIBE => Some(((), 4)),
                Some(h) => bail!("expected the floor's empty frame, got {h:?}"),
                None => None,
            })
        })?;
        conn.leftover = buf;
        Ok(())
    }

    fn encode_request(
        &self,
        out: &mut BytesMut,
        _: u64,
        target: Option<&str>,
        payload: &[u8],
    ) -> Result<()> {
        if target.is_some() {
            bail!("the floor has no peers");
        }
        out.put_u32_le(payload.len() as u32);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The same frame as a request: the fan-out floor forwards it as it is.
    fn encode_publish(&self, out: &mut BytesMut, _topic: &str, payload: &[u8]) -> Result<()> {
        self.encode_request(out, 0, None, payload)
    }

    fn parse(&self, buf: &[u8], on: &mut dyn FnMut(Incoming<'_>)) -> Result<usize> {
        frames(buf, |p| {
            on(if self.deliveries {
                Incoming::Delivery(p)
            } else {
                Incoming::Response(p)
            })
        })
    }

    fn supports(&self, scenario: &str) -> bool {
        match scenario {
            "fanout" => self.deliveries,
            s => !self.deliveries && matches!(s, "rpc" | "floor" | "connect" | "idle"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_partial_is_kept() {
        let mut out = BytesMut::new();
        Floor::ECHO
            .encode_request(&mut out, 0, None, b"hello")
            .unwrap();
        Floor::ECHO.encode_request(&mut out, 0, None, b"").unwrap();
        out.extend_from_slice(&[9, 0, 0, 0, 1]);
        let mut got = Vec::new();
        let used = Floor::ECHO
            .parse(&out, &mut |i| {
                if let Incoming::Response(p) = i {
                    got.push(p.to_vec())
                }
            })
            .unwrap();
        assert_eq!(used, 9 + 4);
        assert_eq!(got, vec![b"hello".to_vec(), vec![]]);
    }

    #[test]
    fn fanout_frames_are_deliveries() {
        let mut out = BytesMut::new();
        Floor::FANOUT
            .encode_publish(&mut out, "any", b"stamped")
            .unwrap();
        let mut got = Vec::new();
        let used = Floor::FANOUT
            .parse(&out, &mut |i| match i {
                Incoming::Delivery(p) => got.push(p.to_vec()),
                other => panic!("{other:?}"),
            })
            .unwrap();
        assert_eq!((used, got), (4 + 7, vec![b"stamped".to_vec()]));
        assert!(Floor::for_scenario("fanout").supports("fanout"));
        assert!(!Floor::for_scenario("rpc").supports("fanout"));
        assert!(Floor::for_scenario("floor").supports("floor"));
        // Too long a frame is refused rather than waited for.
        assert!(frames(&[0xff, 0xff, 0xff, 0xff], |_| ()).is_err());
    }
}
