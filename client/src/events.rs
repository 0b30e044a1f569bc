//! Named events (to the server or directly to one peer), broadcasts to every peer, and
//! asynchronous errors the server reports. Incoming events and broadcasts reach the same
//! listeners, by name; [`EventInfo::broadcast`] says which one arrived.

use std::borrow::Cow;
use std::sync::Arc;

use peerd_codec::{Broadcast, Event};

use crate::error::RequestError;
use crate::listeners::{ListenerId, Sink};
use crate::peer::Peer;

pub use crate::messages::{EventInfo, ServerError};

/// Event operations of a [`Peer`]; from [`Peer::events`].
#[derive(Clone, Copy)]
pub struct Events<'a> {
    peer: &'a Peer,
}

impl Peer {
    /// Events and broadcasts.
    pub fn events(&self) -> Events<'_> {
        Events { peer: self }
    }

    /// Call `f` for every asynchronous server error (see [`ServerError`]). Errors are also
    /// logged through `tracing` at warn level whether or not anyone listens.
    pub fn on_error(&self, f: impl Fn(ServerError) + Send + Sync + 'static) -> ListenerId {
        let id = self.new_listener_id();
        self.inner()
            .registry
            .errors
            .add(id, Sink::Callback(Arc::new(f)));
        id
    }

    /// Asynchronous server errors from now on, as a channel.
    pub fn errors(&self) -> flume::Receiver<ServerError> {
        let (tx, rx) = self.channel();
        self.inner()
            .registry
            .errors
            .add(self.new_listener_id(), Sink::Channel(tx));
        rx
    }
}

impl Events<'_> {
    /// Send an event to the server's listeners. Fire-and-forget: a failure the server
    /// notices later arrives through [`Peer::on_error`].
    pub fn emit(&self, name: &str, payload: &[u8]) -> Result<(), RequestError> {
        self.send_event(None, name, payload)
    }

    /// Send an event directly to one peer (it receives it with `from` = this peer). An
    /// unknown target is reported later through [`Peer::on_error`] (`UnknownPeer`).
    pub fn emit_to(&self, peer: &str, name: &str, payload: &[u8]) -> Result<(), RequestError> {
        peerd_codec::validate_peer_id(peer)
            .map_err(|e| RequestError::InvalidArgument(format!("peer id {peer:?}: {e}")))?;
        self.send_event(Some(peer), name, payload)
    }

    fn send_event(
        &self,
        peer: Option<&str>,
        name: &str,
        payload: &[u8],
    ) -> Result<(), RequestError> {
        validate_event_name(name)?;
        self.peer.inner().send(&Event {
            name: Cow::Borrowed(name),
            peer: peer.map(Cow::Borrowed),
            payload: Cow::Borrowed(payload),
        })?;
        Ok(())
    }

    /// Relay an event to every other connected peer, whose listeners for `name` receive it
    /// flagged as a broadcast. Fire-and-forget.
    pub fn broadcast(&self, name: &str, payload: &[u8]) -> Result<(), RequestError> {
        validate_event_name(name)?;
        self.peer.inner().send(&Broadcast {
            name: Cow::Borrowed(name),
            peer: None,
            payload: Cow::Borrowed(payload),
        })?;
        Ok(())
    }

    /// Call `f` for every event or broadcast named `name`, from the server or a peer
    /// ([`EventInfo::broadcast`] tells them apart). Runs on the dispatcher thread; survives
    /// reconnects.
    pub fn on(&self, name: &str, f: impl Fn(EventInfo) + Send + Sync + 'static) -> ListenerId {
        let id = self.peer.new_listener_id();
        self.peer
            .inner()
            .registry
            .events
            .add(name, id, Sink::Callback(Arc::new(f)));
        id
    }

    /// Events and broadcasts named `name` from now on, as a channel.
    pub fn subscribe(&self, name: &str) -> flume::Receiver<EventInfo> {
        let (tx, rx) = self.peer.channel();
        let id = self.peer.new_listener_id();
        self.peer
            .inner()
            .registry
            .events
            .add(name, id, Sink::Channel(tx));
        rx
    }

    /// Call `f` for every event and broadcast, whatever its name (filter on
    /// [`EventInfo::broadcast`] for broadcasts only).
    pub fn on_any(&self, f: impl Fn(EventInfo) + Send + Sync + 'static) -> ListenerId {
        let id = self.peer.new_listener_id();
        self.peer
            .inner()
            .registry
            .any_events
            .add(id, Sink::Callback(Arc::new(f)));
        id
    }
}

fn validate_event_name(name: &str) -> Result<(), RequestError> {
    peerd_codec::validate_name(name)
        .map_err(|e| RequestError::InvalidArgument(format!("event name {name:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::test_peer;

    #[test]
    fn emits_without_connection_fail_fast_and_names_are_checked() {
        let p = test_peer();
        assert_eq!(p.events().emit("hi", b""), Err(RequestError::NotConnected));
        assert_eq!(
            p.events().broadcast("hi", b""),
            Err(RequestError::NotConnected)
        );
        assert!(matches!(
            p.events().emit("", b""),
            Err(RequestError::InvalidArgument(_))
        ));
        assert!(matches!(
            p.events().emit_to("no spaces", "hi", b""),
            Err(RequestError::InvalidArgument(_))
        ));
    }

    #[test]
    fn listeners_can_be_removed() {
        let p = test_peer();
        let a = p.events().on("x", |_| {});
        let b = p.events().on_any(|_| {});
        let c = p.on_error(|_| {});
        let d = p.on_state(|_| {});
        for id in [a, b, c, d] {
            assert!(p.remove_listener(id));
            assert!(!p.remove_listener(id));
        }
    }
}
