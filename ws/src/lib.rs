//! peerd-ws: sans-io WebSocket (RFC 6455) pieces for peerd's `ws`/`wss` transports, the
//! blocking Rust client and loadgen.
//!
//! No sockets, no clock, no executor, no buffers of its own: the caller reads and writes,
//! these functions only look at and rewrite byte slices.
//!
//! - [`frame`]: frame headers ([`header`], [`write_frame`], [`write_masked_frame`]), masking
//!   ([`apply_mask`]), and the in-place [`Deframer`] that turns the raw bytes in a receive
//!   buffer into contiguous, unmasked message payloads without a second buffer and without
//!   allocating.
//! - [`handshake`]: the HTTP/1.1 upgrade. Server: [`parse_upgrade`] under an
//!   [`UpgradePolicy`] gives an [`Upgrade`] (101 response) or a [`Refusal`] (an HTTP error
//!   response that says what to fix). Client: [`client_key`], [`client_request`],
//!   [`check_response`].
//! - [`close`]: the mapping between peerd close codes and WebSocket close statuses
//!   ([`status_for`], [`code_for`]) and [`close_payload`].
//!
//! A server read loop, in outline (the real one reads from a socket into `buf[end..]`):
//!
//! ```
//! use peerd_ws::{write_masked_frame, Deframer, Event, Opcode, Role};
//!
//! // Two frames from a client, already in the receive buffer.
//! let mut buf = Vec::new();
//! write_masked_frame(Opcode::Binary, false, b"hello ", [1, 2, 3, 4], &mut buf);
//! write_masked_frame(Opcode::Continuation, true, b"world", [5, 6, 7, 8], &mut buf);
//! let end = buf.len();
//!
//! let mut d = Deframer::new(Role::Server, 1 << 20, false);
//! let (mut app_end, mut raw) = (0, 0);
//! loop {
//!     let step = d.step(&mut buf, app_end, raw, end).expect("a valid stream");
//!     raw += step.consumed;
//!     match step.event {
//!         Event::NeedMore { want } => {
//!             // Read more; make sure raw + want bytes fit (compacting [raw..end) down to
//!             // app_end if needed), then step again.
//!             assert_eq!(want, 2);
//!             break;
//!         }
//!         Event::Data { len, end_of_message } => {
//!             app_end += len;
//!             if let Some((_kind, total)) = end_of_message {
//!                 // The whole message is buf[app_end - total..app_end].
//!                 assert_eq!(&buf[app_end - total..app_end], b"hello world");
//!             }
//!         }
//!         Event::Ping { payload } => { /* send a pong with buf[payload] */ }
//!         Event::Pong => {}
//!         Event::Close { .. } => { /* answer the close and stop reading */ }
//!     }
//! }
//! ```
//!
//! tungstenite is used for its pieces (the accept key, close-status validity; its frame
//! header codec as the test oracle), httparse for HTTP; the stream, the state machine and
//! masking are here.

pub mod close;
pub mod frame;
pub mod handshake;

pub use close::{close_payload, code_for, status_for};
pub use frame::{
    apply_mask, close_status_allowed, header, random_mask, write_frame, write_masked_frame,
    Deframer, Event, MessageKind, Opcode, Role, Step, WsError, MAX_CLIENT_HEADER,
    MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER,
};
pub use handshake::{
    check_response, client_key, client_request, parse_upgrade, HandshakeError, Refusal, Upgrade,
    UpgradePolicy,
};
