//! CLOCK_BOOTTIME, the clock the fencer keeps its deadlines on: it counts time the machine spent suspended, so a
//! node that wakes from hibernation knows at once that its right to run a group ended while it slept. tandemd's
//! deadlines are `Instant`s (CLOCK_MONOTONIC); the conversions below read the two clocks in the order that can
//! only make the converted deadline *earlier* if the process is preempted or frozen between the two reads.

use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

/// Nanoseconds since boot, suspended time included.
pub fn boottime_ns() -> u64 {
    let t = clock_gettime(ClockId::Boottime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
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
