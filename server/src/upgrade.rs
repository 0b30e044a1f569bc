//! The HTTP/1.1 upgrade that starts a `ws://` or `wss://` connection (RFC 6455 §4), under
//! the same handshake deadline as Hello.
//!
//! The request is parsed from the connection's ordinary receive buffer
//! (`peerd_ws::handshake`, httparse underneath); headers larger than [`MAX_REQUEST`] are
//! refused (431) rather than buffered. Any answer but 101 is a short, complete HTTP
//! response (the status and a line of text saying what to do), after which the socket is
//! shut: a browser, `curl` or a load balancer's health check gets a readable answer, never
//! peerd's binary frames.

use std::rc::Rc;

use futures_lite::future::poll_fn;
use peerd_ws::handshake::{parse_upgrade, Refusal, UpgradePolicy};

use crate::inbound::{poll_fill, RxBuf};
use crate::outbound::Outbound;
use crate::shard::Shard;

/// The WebSocket subprotocol peerd speaks: one peerd frame per binary message.
pub(crate) const SUBPROTOCOL: &str = "peerd.v1";

/// Largest upgrade request (request line and headers) accepted.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;

/// The answer to an upgrade request that did not complete before the handshake deadline
/// (a slowloris): the connection is still HTTP, so an HTTP 408, not a peerd Close frame.
pub(crate) fn timeout_response() -> bytes::Bytes {
    Refusal::new(
        408,
        "no complete WebSocket upgrade request before the handshake deadline",
    )
    .response()
    .into()
}

/// The answer to a WebSocket client arriving when the server is at its connection limit:
/// the connection is still HTTP, so a 503 rather than a peerd Reject frame.
pub(crate) fn unavailable_response(reason: &str) -> bytes::Bytes {
    Refusal::new(503, reason).response().into()
}

/// Read the upgrade request for `path` and answer it. `true`: upgraded, `rx` and `out` now
/// speak WebSocket. `false`: refused (and answered) or the peer went away.
pub(crate) async fn read_upgrade(
    shard: &Rc<Shard>,
    out: &Rc<Outbound>,
    rx: &mut RxBuf,
    path: &str,
) -> bool {
    let config = &shard.shared().config;
    let ws = &config.websocket;
    let policy = UpgradePolicy {
        path: Some(path),
        protocol: Some(SUBPROTOCOL),
        origins: ws.origins.as_deref(),
        max_header: MAX_REQUEST,
    };
    loop {
        match parse_upgrade(rx.pending(), &policy) {
            Ok(Some((upgrade, n))) => {
                rx.consume(n);
                let _ = out.push_bytes(upgrade.response().into());
                out.flush();
                out.start_websocket();
                rx.start_websocket(config.limits.max_frame_len, ws.echo, out);
                return true;
            }
            Ok(None) => {}
            Err(refusal) => {
                tracing::debug!(
                    shard = shard.index(),
                    status = refusal.status,
                    reason = refusal.reason,
                    "WebSocket upgrade refused"
                );
                let metrics = &shard.local.metrics;
                metrics.rejected(format!("http_{}", refusal.status));
                let _ = out.push_bytes(refusal.response().into());
                out.push_last(None, false, None);
                return false;
            }
        }
        match poll_fn(|cx| poll_fill(out, rx, &shard.local.rx_pool, cx)).await {
            Ok(0) | Err(_) => {
                shard.local.metrics.rejected("disconnected");
                return false;
            }
            Ok(_) => {}
        }
    }
}
