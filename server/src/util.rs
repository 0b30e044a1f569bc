//! Small shard-local primitives: a one-shot channel and a single-waiter notification.
//! Shard-local means `Rc`/`Cell`, no atomics: these never cross threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
}

/// Sending half of a shard-local one-shot channel.
pub(crate) struct OneshotTx<T>(Rc<RefCell<Slot<T>>>);

/// Receiving half: resolves to `Some(value)`, or `None` when the sender was dropped.
pub(crate) struct OneshotRx<T>(Rc<RefCell<Slot<T>>>);

pub(crate) fn oneshot<T>() -> (OneshotTx<T>, OneshotRx<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_gone: false,
    }));
    (OneshotTx(slot.clone()), OneshotRx(slot))
}

impl<T> OneshotTx<T> {
    pub fn send(self, v: T) {
        let waker = {
            let mut s = self.0.borrow_mut();
            s.value = Some(v);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        // Drop runs next and sees the value is present.
    }
}

impl<T> Drop for OneshotTx<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.borrow_mut();
            s.sender_gone = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for OneshotRx<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.0.borrow_mut();
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.sender_gone {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Wakes one waiting task; a notification sent while nobody waits is kept until the next
/// wait (so a wake-up can never be lost between a check and the wait).
#[derive(Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once `notify` has been called since the last wait returned.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        futures_lite::future::poll_fn(move |cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn oneshot_delivers_or_reports_drop() {
        let (tx, rx) = oneshot::<u32>();
        tx.send(5);
        assert_eq!(block_on(rx), Some(5));
        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(block_on(rx), None);
    }

    #[test]
    fn notify_is_kept_until_waited_for() {
        let n = Notify::default();
        n.notify();
        block_on(n.notified());
        let mut cx = Context::from_waker(Waker::noop());
        let mut wait = std::pin::pin!(n.notified());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        n.notify();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}
