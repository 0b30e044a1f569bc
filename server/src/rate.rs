//! Per-peer rate limits: two token buckets (frames per second, bytes per second) checked
//! before a frame is acted on.
//!
//! The first frame that finds a bucket empty is not acted on: it is refused with
//! `rate_limited` (docs/PROTOCOL.md §6.9). The frames after it wait: the reader stops
//! reading that peer's socket until the buckets hold enough again, so a flood is shaped to
//! the limit and held back by TCP flow control in the kernel, instead of costing the shard
//! a decode and an answer per frame. A peer that stays over its limit for `close_after` is
//! closed with `rate_limited`. A peer under its limits pays two subtractions per frame; a
//! server without limits pays nothing (the state is allocated only when limits are
//! configured).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Per-peer rate limits (`Limits::rate_limit`; off by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Frames per second a peer may send, sustained.
    pub frames_per_sec: u32,
    /// Bytes per second a peer may send, sustained (frame headers included).
    pub bytes_per_sec: u64,
    /// How much a peer may send at once above the sustained rate: the buckets hold this
    /// many seconds of their rate (default 1 s).
    pub burst: Duration,
    /// A peer over its limit for this long without calming down (letting its buckets fill
    /// up again) is closed with `rate_limited` (default 10 s).
    pub close_after: Duration,
}

impl RateLimit {
    /// `frames_per_sec` and `bytes_per_sec` with the default burst (1 s) and close_after
    /// (10 s).
    pub fn new(frames_per_sec: u32, bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            frames_per_sec,
            bytes_per_sec,
            burst: Duration::from_secs(1),
            close_after: Duration::from_secs(10),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.frames_per_sec == 0 || self.bytes_per_sec == 0 {
            return Err(
                "limits.rate_limit: frames_per_sec and bytes_per_sec must be at least 1".into(),
            );
        }
        if self.burst.is_zero() || self.close_after.is_zero() {
            return Err("limits.rate_limit: burst and close_after must be greater than 0".into());
        }
        Ok(())
    }
}

/// What the limiter says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Within the limits: act on it.
    Yes,
    /// Over a limit. `first`: the first frame of a run over it, to be refused; the others
    /// wait (see [`Throttle::wait`]).
    No { first: bool },
    /// Over the limit for longer than `close_after`: close the connection.
    Abusive,
}

/// A token bucket over `f64` tokens, refilled from the elapsed time when used.
#[derive(Debug)]
struct Bucket {
    tokens: Cell<f64>,
    rate: f64,
    cap: f64,
}

impl Bucket {
    fn new(rate: f64, burst: Duration) -> Bucket {
        let cap = (rate * burst.as_secs_f64()).max(1.0);
        Bucket {
            tokens: Cell::new(cap),
            rate,
            cap,
        }
    }

    fn refill(&self, secs: f64) {
        self.tokens
            .set((self.tokens.get() + secs * self.rate).min(self.cap));
    }

    fn full(&self) -> bool {
        self.tokens.get() >= self.cap
    }

    /// Time until `n` tokens are there (zero if they are).
    fn wait_for(&self, n: f64) -> Duration {
        let missing = n.min(self.cap) - self.tokens.get();
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate)
        }
    }
}

/// One peer's limiter state.
#[derive(Debug)]
pub(crate) struct Throttle {
    frames: Bucket,
    bytes: Bucket,
    last: Cell<Instant>,
    /// When the current run of refusals began (None: not over the limit).
    over_since: Cell<Option<Instant>>,
    /// When the buckets will hold the frame that was last found over the limit.
    resume_at: Cell<Option<Instant>>,
    close_after: Duration,
}

impl Throttle {
    pub fn new(limit: &RateLimit, now: Instant) -> Throttle {
        Throttle {
            frames: Bucket::new(f64::from(limit.frames_per_sec), limit.burst),
            bytes: Bucket::new(limit.bytes_per_sec as f64, limit.burst),
            last: Cell::new(now),
            over_since: Cell::new(None),
            resume_at: Cell::new(None),
            close_after: limit.close_after,
        }
    }

    fn refill(&self, now: Instant) {
        let secs = now.saturating_duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        self.frames.refill(secs);
        self.bytes.refill(secs);
        if self.frames.full() && self.bytes.full() {
            // Calmed down: a run of refusals that ends with full buckets is forgiven.
            self.over_since.set(None);
        }
    }

    /// Charge a frame of `len` bytes that is acted on whatever the limits say (an answer to
    /// a call, a Pong, a Close: refusing those would hurt others, not the sender). A peer
    /// that goes into debt with them is still held back: the reader waits until the debt
    /// is paid, so a flood of answers is shaped like any other.
    pub fn charge(&self, now: Instant, len: usize) {
        self.refill(now);
        self.frames.tokens.set(self.frames.tokens.get() - 1.0);
        self.bytes.tokens.set(self.bytes.tokens.get() - len as f64);
        let debt = self.frames.wait_for(0.0).max(self.bytes.wait_for(0.0));
        if !debt.is_zero() {
            self.resume_at.set(Some(now + debt));
        }
    }

    /// Whether a frame of `len` bytes may be acted on now; takes its tokens if so.
    pub fn admit(&self, now: Instant, len: usize) -> Admit {
        self.refill(now);
        let len = len as f64;
        if self.frames.tokens.get() >= 1.0 && self.bytes.tokens.get() >= len.min(self.bytes.cap) {
            self.frames.tokens.set(self.frames.tokens.get() - 1.0);
            self.bytes.tokens.set(self.bytes.tokens.get() - len);
            return Admit::Yes;
        }
        let first = match self.over_since.get() {
            None => {
                self.over_since.set(Some(now));
                true
            }
            Some(since) if now.saturating_duration_since(since) > self.close_after => {
                return Admit::Abusive
            }
            Some(_) => false,
        };
        let wait = self.frames.wait_for(1.0).max(self.bytes.wait_for(len));
        self.resume_at.set(Some(now + wait));
        Admit::No { first }
    }

    /// How long the reader should wait before it tries the held frame again (zero: go on).
    pub fn wait(&self, now: Instant) -> Duration {
        match self.resume_at.get() {
            Some(at) if at > now => at - now,
            _ => {
                self.resume_at.set(None);
                Duration::ZERO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(fps: u32) -> RateLimit {
        RateLimit {
            frames_per_sec: fps,
            bytes_per_sec: 1 << 30,
            burst: Duration::from_secs(1),
            close_after: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_burst_is_admitted_then_refused_then_refilled_at_the_rate() {
        let t0 = Instant::now();
        let t = Throttle::new(&limit(10), t0);
        for _ in 0..10 {
            assert_eq!(t.admit(t0, 64), Admit::Yes);
        }
        assert_eq!(
            t.admit(t0, 64),
            Admit::No { first: true },
            "the 11th frame of a 10/s burst is refused"
        );
        let wait = t.wait(t0);
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert_eq!(t.admit(t0, 64), Admit::No { first: false });
        // 100 ms later one frame's worth is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(t.admit(t1, 64), Admit::Yes);
        assert!(matches!(t.admit(t1, 64), Admit::No { .. }));
    }

    #[test]
    fn bytes_are_limited_too_and_a_frame_larger_than_the_burst_still_passes_when_full() {
        let t0 = Instant::now();
        let l = RateLimit {
            bytes_per_sec: 1000,
            ..limit(1_000_000)
        };
        let t = Throttle::new(&l, t0);
        assert_eq!(t.admit(t0, 600), Admit::Yes);
        assert!(matches!(t.admit(t0, 600), Admit::No { .. }));
        // A frame larger than the whole bucket waits for a full bucket, not for ever.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(t.admit(t1, 5000), Admit::Yes);
    }

    #[test]
    fn answers_always_pass_but_a_flood_of_them_is_held_back() {
        let t0 = Instant::now();
        let t = Throttle::new(&limit(10), t0);
        for _ in 0..15 {
            t.charge(t0, 64);
        }
        // 5 frames of debt at 10/s: the reader waits half a second.
        let wait = t.wait(t0);
        assert!(wait > Duration::from_millis(450) && wait <= Duration::from_millis(500));
        assert_eq!(t.wait(t0 + Duration::from_millis(500)), Duration::ZERO);
    }

    #[test]
    fn sustained_abuse_closes_and_calming_down_forgives() {
        let t0 = Instant::now();
        let t = Throttle::new(&limit(10), t0);
        // 100 frames a second, 10x the limit, for 3 s: refused after 1 s of credit, then
        // closed once the run of refusals passes close_after (2 s).
        let mut closed_at = None;
        for i in 0..300 {
            let now = t0 + Duration::from_millis(10 * i);
            if t.admit(now, 64) == Admit::Abusive {
                closed_at = Some(now - t0);
                break;
            }
        }
        let at = closed_at.expect("closed");
        assert!(
            at > Duration::from_secs(2) && at < Duration::from_secs(3),
            "{at:?}"
        );
        // Another peer that stops when refused and waits for full buckets starts afresh.
        let t = Throttle::new(&limit(10), t0);
        for _ in 0..11 {
            t.admit(t0, 64);
        }
        let later = t0 + Duration::from_secs(5);
        assert_eq!(t.wait(later), Duration::ZERO);
        assert_eq!(t.admit(later, 64), Admit::Yes);
    }
}
