//! Topics (join, leave, publish, send to one member), presence (watch, list peers) and
//! WebRTC signaling relay.
//!
//! The client remembers which topics it joined and which presence watches are open: the
//! joined set filters incoming topic messages (a message for a topic this client has not
//! joined is discarded on receipt, the peersockets rule), and both are re-established
//! after a reconnect.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use peerd_codec::{
    Join, Leave, ListPeers, Publish, Signal, SignalKind, TopicSend, Unwatch, Watch,
    DEFAULT_MAX_TOPIC_LEN,
};

use crate::dispatch::Control;
use crate::error::RequestError;
use crate::listeners::{ListenerId, Sink};
use crate::membership::WatchKey;
use crate::peer::Peer;
use crate::shared::{Inner, Reply};

pub use crate::messages::{PresenceEvent, SignalInfo, TopicMessageInfo};

/// A presence watch: yields [`PresenceEvent`]s, the current members first (as joins),
/// then changes as they happen. Survives reconnects (after one, watchers see only the
/// difference between what they knew and the new snapshot). Dropping it stops the watch
/// (an Unwatch is sent when the last watcher of that topic goes).
pub struct Watcher {
    key: WatchKey,
    id: u64,
    rx: flume::Receiver<PresenceEvent>,
    inner: Arc<Inner>,
    unwatch_on_drop: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("topic", &self.key).finish()
    }
}

impl Watcher {
    /// The watched topic; `None` for the global watch.
    pub fn topic(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Wait for the next event. `None` once the peer is closed.
    pub fn recv(&self) -> Option<PresenceEvent> {
        self.rx.recv().ok()
    }

    /// Wait up to `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<PresenceEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<PresenceEvent> {
        self.rx.try_recv().ok()
    }

    /// Wait for the next event, as a future (no particular runtime needed).
    pub async fn recv_async(&self) -> Option<PresenceEvent> {
        self.rx.recv_async().await.ok()
    }

    /// The underlying channel, for `select!`-style use.
    pub fn receiver(&self) -> &flume::Receiver<PresenceEvent> {
        &self.rx
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let last = self.inner.topics.lock().unwrap().remove_watch(&self.key);
        let _ = self.inner.ctl.send(Control::Detach {
            key: self.key.clone(),
            id: self.id,
        });
        if last && self.unwatch_on_drop {
            // Fire-and-forget, never queued: if not connected there is nothing to stop
            // server-side (the next connection is not re-watched for this key).
            self.inner.send_if_connected(&Unwatch {
                req: 0,
                topic: self.key.as_deref().map(Cow::Borrowed),
            });
        }
    }
}

impl Peer {
    fn check_topic(&self, topic: &str) -> Result<(), RequestError> {
        let max = self.inner().session().map_or(DEFAULT_MAX_TOPIC_LEN, |s| {
            match s.limits.max_topic_len {
                0 => DEFAULT_MAX_TOPIC_LEN,
                n => n,
            }
        });
        peerd_codec::validate_topic(topic, max)
            .map_err(|e| RequestError::InvalidArgument(format!("topic {topic:?}: {e}")))
    }

    fn check_peer(&self, peer: &str) -> Result<(), RequestError> {
        peerd_codec::validate_peer_id(peer)
            .map_err(|e| RequestError::InvalidArgument(format!("peer id {peer:?}: {e}")))
    }

    /// Join `topic` and wait for the server's confirmation. Messages on it are delivered
    /// from now on; the membership is renewed after a reconnect. Made while reconnecting,
    /// it waits in the reconnect queue like any request.
    pub fn join(&self, topic: &str) -> Result<(), RequestError> {
        self.check_topic(topic)?;
        let inner = self.inner();
        inner.can_send()?;
        let newly = inner.topics.lock().unwrap().mark_joined(topic);
        let r = inner.request(self.default_timeout(), |req| Join {
            req,
            topic: Cow::Borrowed(topic),
        });
        if r.is_err() && newly {
            inner.topics.lock().unwrap().forget_topic(topic);
        }
        r.map(|_| ())
    }

    /// [`Peer::join`] as a future; the Join is sent when this is called.
    pub fn join_async(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<(), RequestError>> + Send + 'static {
        let inner = self.inner().clone();
        let topic_owned = topic.to_string();
        let start = self
            .check_topic(topic)
            .and_then(|()| inner.can_send().map_err(RequestError::from))
            .map(|_| {
                let newly = inner.topics.lock().unwrap().mark_joined(topic);
                let started = inner.start(&inner.requests, self.default_timeout(), |req| Join {
                    req,
                    topic: Cow::Borrowed(topic),
                });
                (newly, inner.wait_async(started))
            });
        async move {
            let (newly, wait) = start?;
            let r = wait.await;
            if r.is_err() && newly {
                inner.topics.lock().unwrap().forget_topic(&topic_owned);
            }
            r.map(|_| ())
        }
    }

    /// Leave `topic` and wait for the confirmation. Messages for it are discarded from
    /// this call on, even those already in flight. Made while reconnecting, the Leave is
    /// queued; the topic is not re-joined either way.
    pub fn leave(&self, topic: &str) -> Result<(), RequestError> {
        self.check_topic(topic)?;
        let inner = self.inner();
        inner.can_send()?;
        inner.topics.lock().unwrap().forget_topic(topic);
        let waiter = inner.start(&inner.requests, self.default_timeout(), |req| Leave {
            req,
            topic: Cow::Borrowed(topic),
        })?;
        let queued = waiter.was_queued();
        left(waiter.wait(), queued)
    }

    /// [`Peer::leave`] as a future; the Leave is sent (or queued) when this is called.
    pub fn leave_async(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<(), RequestError>> + Send + 'static {
        let inner = self.inner().clone();
        let start = self
            .check_topic(topic)
            .and_then(|()| inner.can_send().map_err(RequestError::from))
            .and_then(|()| {
                inner.topics.lock().unwrap().forget_topic(topic);
                let waiter = inner.start(&inner.requests, self.default_timeout(), |req| Leave {
                    req,
                    topic: Cow::Borrowed(topic),
                })?;
                let queued = waiter.was_queued();
                Ok((queued, inner.wait_async(Ok(waiter))))
            });
        async move {
            let (queued, wait) = start?;
            left(wait.await, queued)
        }
    }

    /// The topics this client is in (as far as it knows), sorted.
    pub fn joined_topics(&self) -> Vec<String> {
        self.inner().topics.lock().unwrap().joined_topics()
    }

    /// Publish to every other member of `topic`. Fire-and-forget: a failure arrives through
    /// [`Peer::on_error`]. The publisher need not be a member.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), RequestError> {
        self.publish_frame(topic, payload, false, false)
    }

    /// Like [`Peer::publish`], and this client gets a copy too if it is a member.
    pub fn publish_with_echo(&self, topic: &str, payload: &[u8]) -> Result<(), RequestError> {
        self.publish_frame(topic, payload, true, false)
    }

    /// Publish and wait for the server's confirmation (or its refusal).
    pub fn publish_confirmed(
        &self,
        topic: &str,
        payload: &[u8],
        echo: bool,
    ) -> Result<(), RequestError> {
        self.publish_frame(topic, payload, echo, true)
    }

    fn publish_frame(
        &self,
        topic: &str,
        payload: &[u8],
        echo: bool,
        confirmed: bool,
    ) -> Result<(), RequestError> {
        self.check_topic(topic)?;
        let build = |req| Publish {
            req,
            topic: Cow::Borrowed(topic),
            echo,
            payload: Cow::Borrowed(payload),
        };
        self.maybe_confirmed(confirmed, build)
    }

    /// Send to one member `to` of `topic` (it receives `direct: true`). Fire-and-forget:
    /// `UnknownPeer` / `NotMember` arrive through [`Peer::on_error`].
    pub fn send(&self, topic: &str, to: &str, payload: &[u8]) -> Result<(), RequestError> {
        self.send_frame(topic, to, payload, false)
    }

    /// [`Peer::send`], waiting for the server's confirmation.
    pub fn send_confirmed(
        &self,
        topic: &str,
        to: &str,
        payload: &[u8],
    ) -> Result<(), RequestError> {
        self.send_frame(topic, to, payload, true)
    }

    fn send_frame(
        &self,
        topic: &str,
        to: &str,
        payload: &[u8],
        confirmed: bool,
    ) -> Result<(), RequestError> {
        self.check_topic(topic)?;
        self.check_peer(to)?;
        let build = |req| TopicSend {
            req,
            topic: Cow::Borrowed(topic),
            to: Cow::Borrowed(to),
            payload: Cow::Borrowed(payload),
        };
        self.maybe_confirmed(confirmed, build)
    }

    /// Fire-and-forget (`req` 0) or confirmed (a req id, wait for Status).
    fn maybe_confirmed<M>(
        &self,
        confirmed: bool,
        build: impl FnOnce(u64) -> M,
    ) -> Result<(), RequestError>
    where
        M: peerd_codec::Encode,
    {
        let inner = self.inner();
        if confirmed {
            inner.request(self.default_timeout(), build).map(|_| ())
        } else {
            inner.send(&build(0)).map_err(RequestError::from)
        }
    }

    /// Call `f` for every message on `topic` (only delivered while joined). Runs on the
    /// dispatcher thread; survives reconnects.
    pub fn on_message(
        &self,
        topic: &str,
        f: impl Fn(TopicMessageInfo) + Send + Sync + 'static,
    ) -> ListenerId {
        let id = self.new_listener_id();
        self.inner()
            .registry
            .topic_sinks
            .add(topic, id, Sink::Callback(Arc::new(f)));
        id
    }

    /// Messages on `topic` from now on, as a channel. Does not join: call [`Peer::join`]
    /// too (messages for topics not joined are discarded). Drop the receiver to stop.
    pub fn subscribe(&self, topic: &str) -> flume::Receiver<TopicMessageInfo> {
        let (tx, rx) = self.channel();
        let id = self.new_listener_id();
        self.inner()
            .registry
            .topic_sinks
            .add(topic, id, Sink::Channel(tx));
        rx
    }

    /// Watch presence: every connected peer (`None`) or the members of a topic. The first
    /// watcher of a topic sends Watch and waits for the server's confirmation; further
    /// watchers of the same topic share it and start with the members known so far.
    pub fn watch(&self, topic: Option<&str>) -> Result<Watcher, RequestError> {
        if let Some(t) = topic {
            self.check_topic(t)?;
        }
        let inner = self.inner();
        inner.can_send()?;
        let key: WatchKey = topic.map(str::to_string);
        let first = inner.topics.lock().unwrap().add_watch(&key);
        let id = inner.next_id();
        let (tx, rx) = self.channel();
        // Attach before the Watch is sent, so the snapshot it provokes finds the watcher.
        let _ = inner.ctl.send(Control::Attach {
            key: key.clone(),
            id,
            tx,
        });
        let mut w = Watcher {
            key,
            id,
            rx,
            inner: inner.clone(),
            unwatch_on_drop: true,
        };
        if first {
            let r = inner.request(self.default_timeout(), |req| Watch {
                req,
                topic: topic.map(Cow::Borrowed),
            });
            if let Err(e) = r {
                w.unwatch_on_drop = false;
                return Err(e);
            }
        }
        Ok(w)
    }

    /// The connected peers (`None`) or the members of `topic`.
    pub fn list_peers(&self, topic: Option<&str>) -> Result<Vec<String>, RequestError> {
        if let Some(t) = topic {
            self.check_topic(t)?;
        }
        let r = self
            .inner()
            .request(self.default_timeout(), |req| ListPeers {
                req,
                topic: topic.map(Cow::Borrowed),
            })?;
        peers_reply(r)
    }

    /// [`Peer::list_peers`] as a future; the request is sent when this is called.
    pub fn list_peers_async(
        &self,
        topic: Option<&str>,
    ) -> impl Future<Output = Result<Vec<String>, RequestError>> + Send + 'static {
        let checked = topic.map_or(Ok(()), |t| self.check_topic(t));
        let inner = self.inner();
        let wait = checked.map(|()| {
            let started = inner.start(&inner.requests, self.default_timeout(), |req| ListPeers {
                req,
                topic: topic.map(Cow::Borrowed),
            });
            inner.wait_async(started)
        });
        async move { peers_reply(wait?.await?) }
    }

    /// Relay a signaling message in `room` (this client must be a member): to one peer, or
    /// with `to: None` (offers only) to every other member. Fire-and-forget.
    pub fn signal(
        &self,
        room: &str,
        kind: SignalKind,
        to: Option<&str>,
        payload: &[u8],
    ) -> Result<(), RequestError> {
        self.signal_frame(room, kind, to, payload, false)
    }

    /// [`Peer::signal`], waiting for the server's confirmation.
    pub fn signal_confirmed(
        &self,
        room: &str,
        kind: SignalKind,
        to: Option<&str>,
        payload: &[u8],
    ) -> Result<(), RequestError> {
        self.signal_frame(room, kind, to, payload, true)
    }

    fn signal_frame(
        &self,
        room: &str,
        kind: SignalKind,
        to: Option<&str>,
        payload: &[u8],
        confirmed: bool,
    ) -> Result<(), RequestError> {
        self.check_topic(room)?;
        match to {
            Some(p) => self.check_peer(p)?,
            None if kind != SignalKind::Offer => {
                return Err(RequestError::InvalidArgument(format!(
                    "{kind:?} needs a target peer; only offers go to the whole room"
                )))
            }
            None => {}
        }
        let build = |req| Signal {
            req,
            room: Cow::Borrowed(room),
            kind,
            peer: to.map(Cow::Borrowed),
            payload: Cow::Borrowed(payload),
        };
        self.maybe_confirmed(confirmed, build)
    }

    /// Call `f` for every signaling message relayed to this client.
    pub fn on_signal(&self, f: impl Fn(SignalInfo) + Send + Sync + 'static) -> ListenerId {
        let id = self.new_listener_id();
        self.inner()
            .registry
            .signals
            .add(id, Sink::Callback(Arc::new(f)));
        id
    }

    /// Signaling messages from now on, as a channel.
    pub fn subscribe_signals(&self) -> flume::Receiver<SignalInfo> {
        let (tx, rx) = self.channel();
        self.inner()
            .registry
            .signals
            .add(self.new_listener_id(), Sink::Channel(tx));
        rx
    }
}

/// A Leave's outcome. One made while not connected reached a new connection, which is
/// in no topic until it re-joins (and this one is not re-joined): `NotMember` means the
/// membership it asked to end ended with the old connection. Done, then.
fn left(r: Result<Reply, RequestError>, queued: bool) -> Result<(), RequestError> {
    match r {
        Err(e) if queued && e.known_code() == Some(peerd_codec::Code::NotMember) => Ok(()),
        r => r.map(|_| ()),
    }
}

fn peers_reply(r: Reply) -> Result<Vec<String>, RequestError> {
    match r {
        Reply::Peers(p) => Ok(p),
        // The server must answer ListPeers with PeerList; a bare success Status is a
        // protocol slip we surface rather than mistake for "nobody is there".
        Reply::Ok => Err(RequestError::Rejected {
            code: peerd_codec::Code::BadFrame.as_u16(),
            message: "server answered ListPeers with Status instead of PeerList".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::test_peer;

    #[test]
    fn requests_without_connection_fail_fast_and_validate() {
        let p = test_peer();
        assert_eq!(p.join("chat"), Err(RequestError::NotConnected));
        assert!(
            p.joined_topics().is_empty(),
            "a failed join is not remembered"
        );
        assert_eq!(p.publish("chat", b"x"), Err(RequestError::NotConnected));
        assert!(matches!(p.join(""), Err(RequestError::InvalidArgument(_))));
        assert!(matches!(
            p.join(&"x".repeat(1000)),
            Err(RequestError::InvalidArgument(_))
        ));
        assert!(matches!(
            p.signal("room", SignalKind::Answer, None, b"sdp"),
            Err(RequestError::InvalidArgument(_))
        ));
        assert_eq!(
            p.signal("room", SignalKind::Offer, None, b"sdp"),
            Err(RequestError::NotConnected)
        );
        assert_eq!(p.watch(None).unwrap_err(), RequestError::NotConnected);
        assert!(p.inner().topics.lock().unwrap().watch_keys().is_empty());
        assert_eq!(
            crate::test_util::block_on(p.join_async("chat")),
            Err(RequestError::NotConnected)
        );
    }
}
