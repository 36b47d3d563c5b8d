//! CLOCK_BOOTTIME, the clock the fencer keeps its deadlines on: it counts time the machine spent suspended, so a
//! node that wakes from hibernation finds its right to run a group ended while it slept. tandemd's deadlines are
//! `Instant`s (CLOCK_MONOTONIC, which stops during a suspend): the conversions below read the two clocks in the
//! order that can only make the converted deadline *earlier* if the process is preempted or frozen between the
//! two reads, and [`suspended_since`] tells tandemd that a suspend happened, after which its `Instant` deadlines
//! are too late by the suspended time (the group runner then stops the group at once).

use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

/// Nanoseconds since boot, suspended time included.
pub fn boottime_ns() -> u64 {
    let t = clock_gettime(ClockId::Boottime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Nanoseconds the machine has spent suspended since boot: CLOCK_BOOTTIME minus CLOCK_MONOTONIC. It grows only
/// across a suspend (or a hibernation), so a difference between two readings is the time suspended in between;
/// the two clocks are read back to back, hence a tolerance of [`SUSPEND_TOLERANCE`] when comparing.
pub fn suspended_ns() -> u64 {
    let mono = || {
        let t = clock_gettime(ClockId::Monotonic);
        u64::try_from(t.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000) + u64::try_from(t.tv_nsec).unwrap_or(0)
    };
    // Bracket the boot-time read between two monotonic reads, so that a preemption between the reads (a loaded
    // machine) is not mistaken for a suspend: retry until the bracket is tight.
    let mut best = None;
    for _ in 0..8 {
        let (a, boot, b) = (mono(), boottime_ns(), mono());
        let width = b.saturating_sub(a);
        let value = boot.saturating_sub(a + width / 2);
        if width < 100_000 {
            return value;
        }
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, value));
        }
    }
    best.map_or(0, |(_, v)| v)
}

/// Differences of [`suspended_ns`] below this are read jitter, not a suspend.
pub const SUSPEND_TOLERANCE: Duration = Duration::from_millis(2);

/// Whether the machine was suspended for more than the tolerance since `since` (a [`suspended_ns`] reading).
pub fn suspended_since(since: u64) -> Option<Duration> {
    suspended_between(since, suspended_ns())
}

/// The time suspended between two [`suspended_ns`] readings, when above the tolerance.
fn suspended_between(earlier: u64, later: u64) -> Option<Duration> {
    let d = Duration::from_nanos(later.saturating_sub(earlier));
    (d > SUSPEND_TOLERANCE).then_some(d)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `deadline` on CLOCK_BOOTTIME. Boot time is read first: a pause before `Instant::now()` shortens what is left.
pub fn to_boottime(deadline: Instant) -> u64 {
    let boot = boottime_ns();
    let left = deadline.saturating_duration_since(Instant::now());
    boot.saturating_add(nanos(left))
}

/// A CLOCK_BOOTTIME deadline as an `Instant`. `Instant::now()` is read first: a pause before the boot-time read
/// shortens what is left. A deadline already past maps to now.
pub fn from_boottime(deadline_ns: u64) -> Instant {
    let now = Instant::now();
    let left = deadline_ns.saturating_sub(boottime_ns());
    now + Duration::from_nanos(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_advances() {
        let a = boottime_ns();
        std::thread::sleep(Duration::from_millis(5));
        assert!(boottime_ns() >= a + 5_000_000);
    }

    #[test]
    fn no_suspend_is_seen_while_the_machine_runs() {
        let base = suspended_ns();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(suspended_since(base), None);
        assert_eq!(suspended_between(base, base + 10_000_000), Some(Duration::from_millis(10)), "10 ms asleep");
        assert_eq!(suspended_between(base, base + 1_000_000), None, "read jitter");
        assert_eq!(suspended_between(base + 5, base), None);
    }

    #[test]
    fn conversions_never_lengthen_a_deadline() {
        let d = Instant::now() + Duration::from_millis(300);
        let ns = to_boottime(d);
        let back = from_boottime(ns);
        assert!(back <= d, "a round trip may only move the deadline earlier");
        assert!(d.duration_since(back) < Duration::from_millis(50), "and only by the time between the reads");
        let past = from_boottime(1);
        assert!(past <= Instant::now());
    }
}
