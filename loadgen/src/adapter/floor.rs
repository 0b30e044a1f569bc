//! The raw floor: a 4-byte little-endian length, then the payload; the server echoes the
//! bytes back unchanged. No handshake, no framing library: what the kernel alone costs.

use std::net::SocketAddr;

use anyhow::{bail, Result};
use bytes::{BufMut, BytesMut};

use super::{tcp_connect, Adapter, ConnectOptions, Connected, Incoming};

/// Largest echoed message the floor accepts.
const MAX_LEN: usize = 64 << 20;

/// The floor adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floor;

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

    fn parse(&self, buf: &[u8], on: &mut dyn FnMut(Incoming<'_>)) -> Result<usize> {
        let mut used = 0;
        while buf.len() - used >= 4 {
            let len = u32::from_le_bytes(buf[used..used + 4].try_into().unwrap()) as usize;
            if len > MAX_LEN {
                bail!("floor message of {len} bytes");
            }
            if buf.len() - used - 4 < len {
                break;
            }
            on(Incoming::Response(&buf[used + 4..used + 4 + len]));
            used += 4 + len;
        }
        Ok(used)
    }

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "rpc" | "floor" | "connect" | "idle")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_partial_is_kept() {
        let mut out = BytesMut::new();
        Floor.encode_request(&mut out, 0, None, b"hello").unwrap();
        Floor.encode_request(&mut out, 0, None, b"").unwrap();
        out.extend_from_slice(&[9, 0, 0, 0, 1]);
        let mut got = Vec::new();
        let used = Floor
            .parse(&out, &mut |i| {
                if let Incoming::Response(p) = i {
                    got.push(p.to_vec())
                }
            })
            .unwrap();
        assert_eq!(used, 9 + 4);
        assert_eq!(got, vec![b"hello".to_vec(), vec![]]);
    }
}
