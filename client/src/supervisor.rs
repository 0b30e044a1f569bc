//! The supervisor: one thread per peer, for the peer's whole life. It reads the current
//! connection until it ends ([`read_loop`]), fails what was pending on it, then
//! reconnects with exponential backoff and full jitter, presenting the last session's
//! resume token, re-joins topics and re-opens presence watches, writes what was queued
//! meanwhile (`outbox`), and reads the next connection.
//!
//! After a drain (the server's Close{reconnect}, PROTOCOL.md §6.10) it reconnects at once,
//! with a few milliseconds of jitter and no backoff: the server already spread its peers
//! over its drain window, and the new process or node is there now.
//!
//! Reading, reconnecting and the handshake are thus never concurrent with each other,
//! which keeps the state machine simple. User code never runs on this thread (it goes to
//! the dispatcher), so a handler that blocks, or makes a blocking call, cannot stall the
//! reader that would complete that call.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use peerd_codec::{Code, Join, Watch};

use crate::handshake::{establish, Established};
use crate::inbound::{read_loop, End};
use crate::link::Link;
use crate::shared::{Inner, Resync};
use crate::state::{CloseInfo, Initiator, State};

/// The most a reconnect after a drain waits: jitter only, so that peers drained in the
/// same instant do not land in the same one.
const DRAIN_JITTER: Duration = Duration::from_millis(5);

/// Make `est` the live connection; on a reconnect, re-join topics and re-watch presence
/// first, then write what was queued while not connected, in order. False if the peer was
/// closed meanwhile (the connection is then dropped).
pub(crate) fn install(inner: &Arc<Inner>, est: &Established, resync: bool) -> bool {
    *inner.session.lock().unwrap() = Some(est.session.clone());
    if resync {
        // Before the queue: a queued publish or send may need its topic joined.
        resync_session(inner, &est.link);
    }
    // Publishes the link once the queue is empty (at once on a first connection).
    let published = inner.flush_queue(&est.link);
    // Same ordering argument as in `establish`: shutdown() closes the gate, then takes
    // the link; if it ran before our store, we see the closed gate here.
    if inner.gate.is_closed() {
        if let Some(l) = inner.link.lock().unwrap().take() {
            l.kill();
        }
        est.link.kill();
        return false;
    }
    if published {
        // From the first session on, sends made without a connection wait for the next.
        inner.outbox.enable();
        inner.set_state(State::Active);
    }
    // Else the link died while the queue was written: the read loop sees it at once.
    true
}

/// Re-establish what the user had on the old connection. Each request carries a req id
/// so a failure is reported through `on_error` (and a topic that cannot be re-joined is
/// dropped from the joined set) instead of being lost.
fn resync_session(inner: &Arc<Inner>, link: &Link) {
    let (topics, watches) = {
        let t = inner.topics.lock().unwrap();
        (t.joined_topics(), t.watch_keys())
    };
    for topic in topics {
        let req = inner.next_id();
        let frame = Join {
            req,
            topic: Cow::Borrowed(&topic),
        };
        inner
            .resync
            .lock()
            .unwrap()
            .insert(req, Resync::Join(topic.clone()));
        if link.send(&frame).is_err() {
            return;
        }
    }
    for key in watches {
        let req = inner.next_id();
        let frame = Watch {
            req,
            topic: key.as_deref().map(Cow::Borrowed),
        };
        inner
            .resync
            .lock()
            .unwrap()
            .insert(req, Resync::Watch(key.clone()));
        if link.send(&frame).is_err() {
            return;
        }
    }
}

/// Run the supervisor thread for the connection `est` and every one after it.
pub(crate) fn spawn(inner: Arc<Inner>, est: Established) {
    std::thread::Builder::new()
        .name("peerd-reader".into())
        .spawn(move || supervise(inner, est))
        .expect("spawn peerd-reader thread");
}

/// Whether to reconnect after `end`. Not after these server closes: Replaced (another
/// connection took over our peer id; coming back would steal it back, a ping-pong between
/// two clients), Normal (the server deliberately ended this session), Unauthorized
/// (credentials were revoked; the same Hello would be refused). Everything else (shutdown,
/// slow consumer, idle timeout, transport failures) is worth retrying: a restarted server
/// comes back at the same address. TokenExpired is retried too: the next Hello presents the
/// credentials `Peer::refresh_token` last gave, so an application that renews its token
/// gets back in; until it does, attempts back off.
fn may_reconnect(end: &End) -> bool {
    match end {
        End::ServerClose { code, .. } => !final_code(*code),
        End::TransportClose { status, .. } => !status
            .and_then(peerd_ws::close::code_for)
            .is_some_and(final_code),
        _ => true,
    }
}

fn final_code(code: u16) -> bool {
    matches!(
        Code::from_u16(code),
        Some(Code::Replaced | Code::Normal | Code::Unauthorized)
    )
}

fn supervise(inner: Arc<Inner>, mut est: Established) {
    loop {
        let end = read_loop(&inner, &mut est);
        tracing::debug!(?end, "peerd-client connection ended");
        // Order matters: mark the link dead, unpublish it, then fail waiters (see
        // Inner::request for the other half of this handshake).
        est.link.kill();
        {
            let mut slot = inner.link.lock().unwrap();
            if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &est.link)) {
                *slot = None;
            }
        }
        let failed = inner.fail_pending();
        if inner.gate.is_closed() {
            return;
        }
        let drained = end.is_drained();
        if drained && failed > 0 {
            // The server's Close{reconnect} promises every call before our Close was
            // answered: a server that broke that promise. Failed as lost, like any drop.
            tracing::warn!(
                failed,
                "peerd-client: drain ended with requests unanswered; failed as lost"
            );
        }
        inner.set_last_close(end.info());
        if !may_reconnect(&end) || !inner.opts.reconnect.enabled {
            inner.finish();
            return;
        }
        inner.set_state(State::Reconnecting);
        match reconnect(&inner, drained) {
            Some(next) => est = next,
            None => {
                inner.finish();
                return;
            }
        }
    }
}

/// Reconnect until it works, gives up, or the peer closes. `drained`: the server ended
/// the connection with Close{reconnect}, so the first attempt waits only
/// [`DRAIN_JITTER`] and is not counted as a failure if it fails (the backoff then starts
/// from its first step, as after any other close); later attempts back off as usual.
fn reconnect(inner: &Arc<Inner>, drained: bool) -> Option<Established> {
    let policy = &inner.opts.reconnect;
    let mut rng = fastrand::Rng::new();
    let mut failed = 0u32;
    let mut at_once = drained;
    loop {
        if !policy.may_retry(failed) {
            tracing::warn!(attempts = failed, "peerd-client: giving up reconnecting");
            let mut info = inner
                .last_close
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(CloseInfo {
                    code: None,
                    reason: String::new(),
                    initiator: Initiator::Transport,
                });
            info.reason = format!("{}; reconnect gave up after {failed} attempts", info.reason);
            inner.set_last_close(info);
            return None;
        }
        let immediate = std::mem::take(&mut at_once);
        let delay = if immediate {
            Duration::from_micros(rng.u64(0..=DRAIN_JITTER.as_micros() as u64))
        } else {
            policy.delay(failed, &mut rng)
        };
        if inner.gate.sleep(delay) {
            return None;
        }
        match establish(inner, false) {
            Ok(est) => return install(inner, &est, true).then_some(est),
            Err(e) => {
                if inner.gate.is_closed() {
                    return None;
                }
                tracing::warn!(error = %e, attempt = failed, "peerd-client reconnect failed");
                if e.is_permanent() {
                    inner.set_last_close(CloseInfo {
                        code: e.code(),
                        reason: e.to_string(),
                        initiator: Initiator::Server,
                    });
                    return None;
                }
                if !immediate {
                    failed = failed.saturating_add(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_policy_by_close_code() {
        let close = |c: Code| End::ServerClose {
            code: c.as_u16(),
            reason: String::new(),
        };
        assert!(!may_reconnect(&close(Code::Replaced)));
        assert!(!may_reconnect(&close(Code::Normal)));
        assert!(!may_reconnect(&close(Code::Unauthorized)));
        assert!(may_reconnect(&close(Code::Shutdown)));
        assert!(may_reconnect(&close(Code::SlowConsumer)));
        assert!(may_reconnect(&close(Code::IdleTimeout)));
        assert!(may_reconnect(&close(Code::Reconnect)));
        assert!(close(Code::Reconnect).is_drained());
        assert!(!close(Code::Shutdown).is_drained());
        assert!(!End::Eof.is_drained());
        assert!(may_reconnect(&End::Eof));
        assert!(may_reconnect(&End::Keepalive));
        // A WebSocket Close without a peerd Close before it: its status decides.
        let ws = |status: Option<u16>| End::TransportClose {
            status,
            reason: String::new(),
        };
        assert!(!may_reconnect(&ws(Some(4011))), "replaced");
        assert!(!may_reconnect(&ws(Some(1000))), "normal");
        assert!(may_reconnect(&ws(Some(1001))), "going away");
        assert!(may_reconnect(&ws(Some(1008))));
        assert!(may_reconnect(&ws(None)));
        assert_eq!(ws(Some(4011)).info().code, Some(Code::Replaced.as_u16()));
        assert_eq!(close(Code::Replaced).info().initiator, Initiator::Server);
    }
}
