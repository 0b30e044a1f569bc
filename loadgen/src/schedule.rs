//! Intended send times for an open-loop generator (wrk2's model).
//!
//! A run offers `rate` messages per second in total. The aggregate stream is evenly spaced:
//! message `n` of the run is due at `start + n / rate`. With `stride` senders, sender `phase`
//! owns messages `phase, phase + stride, phase + 2*stride, ...`, so its k-th message is due
//! at `start + (phase + k*stride) / rate`. Times are computed from `k` with integer
//! arithmetic each time (never accumulated), so they are exact and never drift.
//!
//! The batched pattern ([`Schedule::batched`]) schedules writes instead of messages: each
//! write carries `per_write` messages, so at the same offered rate write `n` of the run is
//! due at `start + n * per_write / rate`, and every message of a write keeps that write's
//! time as its intended send time.
//!
//! A sender that wakes up late sends every message whose time has come ([`Pacer::due`]) and
//! each keeps its *intended* time: the latency of a message is measured from that time, so
//! the generator's own lateness (or a stalled server that kept it from sending) counts
//! against the result instead of silently vanishing (coordinated omission).

/// Exact intended send times for one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Time of the run's message 0 (ns, [`crate::clock::now_ns`]'s clock).
    pub start_ns: u64,
    /// Offered rate of the whole run in milli-messages per second (rate * 1000), so that a
    /// fractional rate is exact to 1/1000 msg/s.
    pub rate_milli: u64,
    /// Number of senders sharing the run's rate.
    pub stride: u64,
    /// This sender's index among them.
    pub phase: u64,
    /// Messages per write (1: the evenly spaced pattern, a write per message).
    pub per_write: u64,
}

impl Schedule {
    /// A schedule for sender `phase` of `stride` at `rate` msgs/s in total.
    pub fn new(start_ns: u64, rate: f64, stride: u64, phase: u64) -> Schedule {
        assert!(rate > 0.0, "rate must be positive");
        assert!(stride > 0 && phase < stride);
        Schedule {
            start_ns,
            rate_milli: (rate * 1000.0).round().max(1.0) as u64,
            stride,
            phase,
            per_write: 1,
        }
    }

    /// The same offered rate in writes of `per_write` messages: `at(k)` is then the
    /// intended time of this sender's `k`-th write (every message in it carries that time).
    pub fn batched(self, per_write: u64) -> Schedule {
        Schedule {
            per_write: per_write.max(1),
            ..self
        }
    }

    /// Intended send time of this sender's `k`-th message (of its `k`-th write when
    /// batched).
    #[inline]
    pub fn at(&self, k: u64) -> u64 {
        let n = (self.phase as u128 + k as u128 * self.stride as u128) * self.per_write as u128;
        self.start_ns + (n * 1_000_000_000_000 / self.rate_milli as u128) as u64
    }
}

/// Walks a [`Schedule`]: which messages are due now.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// The schedule.
    pub schedule: Schedule,
    /// Index of the next message not yet handed out.
    pub next_k: u64,
    /// No message intended at or after this time is sent.
    pub end_ns: u64,
}

impl Pacer {
    /// A pacer over `schedule` that stops at `end_ns`.
    pub fn new(schedule: Schedule, end_ns: u64) -> Pacer {
        Pacer {
            schedule,
            next_k: 0,
            end_ns,
        }
    }

    /// Intended time of the next message, or `None` when the schedule has ended.
    #[inline]
    pub fn next_time(&self) -> Option<u64> {
        let t = self.schedule.at(self.next_k);
        (t < self.end_ns).then_some(t)
    }

    /// Hand out the next message if it is due at `now`: its (k, intended time).
    #[inline]
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, u64)> {
        let t = self.next_time()?;
        if t <= now {
            let k = self.next_k;
            self.next_k += 1;
            Some((k, t))
        } else {
            None
        }
    }

    /// All messages due at `now`, in order (catching up after a late wake-up).
    pub fn due(&mut self, now: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        while let Some(x) = self.pop_due(now) {
            v.push(x);
        }
        v
    }
}

/// Latency of a message received at `received_ns` that was intended to be sent at
/// `intended_ns` (0 if the clock readings are out of order, which CLOCK_MONOTONIC forbids).
#[inline]
pub fn latency_ns(intended_ns: u64, received_ns: u64) -> u64 {
    received_ns.saturating_sub(intended_ns)
}

/// Which measured window (repetition) a message intended at `t` belongs to: `None` for
/// warm-up or for the tail after the last window.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Start of the first measured window (end of warm-up).
    pub measure_start_ns: u64,
    /// Length of one window.
    pub window_ns: u64,
    /// Number of windows (repetitions).
    pub count: usize,
}

impl Windows {
    /// Window index of intended time `t`.
    #[inline]
    pub fn index(&self, t: u64) -> Option<usize> {
        if t < self.measure_start_ns || self.window_ns == 0 {
            return None;
        }
        let i = ((t - self.measure_start_ns) / self.window_ns) as usize;
        (i < self.count).then_some(i)
    }

    /// End of the last window.
    pub fn end_ns(&self) -> u64 {
        self.measure_start_ns + self.window_ns * self.count as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_at_fixed_rate_are_exact() {
        let s = Schedule::new(5_000, 1000.0, 1, 0);
        for k in 0..100_000u64 {
            assert_eq!(s.at(k), 5_000 + k * 1_000_000);
        }
        // 3 msg/s: n/3 s, floored to the ns, never accumulated.
        let s = Schedule::new(0, 3.0, 1, 0);
        assert_eq!(s.at(1), 333_333_333);
        assert_eq!(s.at(2), 666_666_666);
        assert_eq!(s.at(3), 1_000_000_000);
        assert_eq!(s.at(3_000_000), 1_000_000_000_000_000);
    }

    #[test]
    fn senders_interleave_into_one_even_stream() {
        // 4 senders sharing 4000 msg/s: together one message every 250 µs.
        let mut all: Vec<u64> = (0..4)
            .flat_map(|p| {
                let s = Schedule::new(0, 4000.0, 4, p);
                (0..1000).map(move |k| s.at(k))
            })
            .collect();
        all.sort_unstable();
        for (n, t) in all.iter().enumerate() {
            assert_eq!(*t, n as u64 * 250_000);
        }
    }

    #[test]
    fn batched_writes_keep_the_offered_rate() {
        // 2 senders sharing 1000 msg/s in writes of 8: together a write every 8 ms (125
        // writes/s, 1000 msg/s), alternating between the senders, never drifting.
        let a = Schedule::new(0, 1000.0, 2, 0).batched(8);
        let b = Schedule::new(0, 1000.0, 2, 1).batched(8);
        for k in 0..10_000u64 {
            assert_eq!(a.at(k), 2 * k * 8_000_000);
            assert_eq!(b.at(k), (2 * k + 1) * 8_000_000);
        }
        // A rate that does not divide into whole writes per second stays exact: 1000/s in
        // writes of 3 is a write every 3 ms.
        let s = Schedule::new(0, 1000.0, 1, 0).batched(3);
        assert_eq!(s.at(1_000_000), 3_000_000_000_000);
        // Batches of 1 are the evenly spaced schedule.
        assert_eq!(
            Schedule::new(7, 3.0, 1, 0).batched(1),
            Schedule::new(7, 3.0, 1, 0)
        );
    }

    #[test]
    fn late_sender_catches_up_and_latency_counts_from_intended_time() {
        let start = 1_000_000_000;
        let mut p = Pacer::new(Schedule::new(start, 1000.0, 1, 0), start + 1_000_000_000);
        // On time: only message 0 is due.
        assert_eq!(p.due(start), vec![(0, start)]);
        assert_eq!(p.due(start + 999_999), vec![]);
        // The sender stalls for 5.2 ms: messages 1..=5 are all due now, each keeping its
        // own intended time.
        let now = start + 5_200_000;
        let due = p.due(now);
        assert_eq!(
            due,
            (1..=5)
                .map(|k| (k, start + k * 1_000_000))
                .collect::<Vec<_>>()
        );
        // Sent at `now`, answered 100 µs later: latency counts the stall, not just the 100 µs.
        let recv = now + 100_000;
        let lat: Vec<u64> = due.iter().map(|&(_, t)| latency_ns(t, recv)).collect();
        assert_eq!(
            lat,
            vec![4_300_000, 3_300_000, 2_300_000, 1_300_000, 300_000]
        );
        // Back on schedule afterwards.
        assert_eq!(p.next_time(), Some(start + 6_000_000));
    }

    #[test]
    fn pacer_stops_at_end() {
        let mut p = Pacer::new(Schedule::new(0, 1000.0, 1, 0), 3_000_000);
        assert_eq!(p.due(u64::MAX / 2).len(), 3);
        assert_eq!(p.next_time(), None);
    }

    #[test]
    fn windows_bucket_by_intended_time() {
        let w = Windows {
            measure_start_ns: 100,
            window_ns: 10,
            count: 3,
        };
        assert_eq!(w.index(99), None);
        assert_eq!(w.index(100), Some(0));
        assert_eq!(w.index(119), Some(1));
        assert_eq!(w.index(129), Some(2));
        assert_eq!(w.index(130), None);
        assert_eq!(w.end_ns(), 130);
    }
}
