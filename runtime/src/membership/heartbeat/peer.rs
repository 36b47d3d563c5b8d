//! Receive state of one peer on one interconnect: replay window, incarnations, counters, liveness, RTT.
//!
//! Time is injected: every method takes `now`, so tests drive a fake clock without sleeping.
//!
//! Replay protection: a sliding window of [`REPLAY_WINDOW`] sequence numbers per incarnation, and the last
//! [`RETIRED_INCARNATIONS`] incarnations of the peer are refused. Limits: a packet of an incarnation retired longer
//! ago, or a captured packet that was never delivered (sequence above the highest seen), is accepted once.

use std::time::{Duration, Instant};

use super::packet::{Packet, PacketError};
use crate::config::Heartbeat;

/// Width of the sliding replay window, in sequence numbers.
pub const REPLAY_WINDOW: u64 = 64;
/// How many past incarnations of a peer are remembered (packets of those are replays).
pub const RETIRED_INCARNATIONS: usize = 8;

/// What a node knows of a peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// No valid heartbeat for `timeout` (or never).
    Down,
    /// Heartbeats are late (more than two intervals) but the timeout has not passed.
    Suspect,
    /// A valid heartbeat arrived within the last two intervals.
    Up,
}

/// Packet counters of one peer link (or of the unattributed traffic of an interconnect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Valid heartbeats accepted.
    pub received: u64,
    /// Authentic packets dropped as replays (sequence already seen, too old, or a retired incarnation).
    pub replay: u64,
    /// Packets whose MAC did not verify.
    pub bad_mac: u64,
    /// Packets of another cluster.
    pub foreign: u64,
    /// Packets that are not well-formed heartbeats (or claim a sender they do not come from).
    pub malformed: u64,
    /// New incarnations accepted (peer restarts).
    pub restarts: u64,
}

impl Counters {
    /// Counts a decoder rejection under its reason.
    pub fn reject(&mut self, e: &PacketError) {
        match e {
            PacketError::BadMac => self.bad_mac += 1,
            PacketError::ForeignCluster(_) => self.foreign += 1,
            _ => self.malformed += 1,
        }
    }

    pub fn dropped(&self) -> u64 {
        self.replay + self.bad_mac + self.foreign + self.malformed
    }
}

/// The outcome of feeding one authentic packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A new heartbeat of the current incarnation.
    Fresh,
    /// The first heartbeat of a new incarnation (first contact or restart).
    NewIncarnation,
    /// Dropped as a replay.
    Replay,
}

/// One peer seen on one interconnect.
#[derive(Debug, Clone)]
pub struct PeerLink {
    interval: Duration,
    timeout: Duration,
    /// Our own clock origin: our send times are microseconds since `epoch`.
    epoch: Instant,
    incarnation: Option<u64>,
    retired: [u64; RETIRED_INCARNATIONS],
    retired_len: usize,
    retired_next: usize,
    /// Highest sequence accepted in the current incarnation; bit i of `window` = `highest - i` was seen.
    highest: u64,
    window: u64,
    last_heard: Option<Instant>,
    /// Last packet accepted: its sequence, its send time (peer's clock) and when it arrived (for the echo).
    last_rx: Option<(u64, u64, Instant)>,
    srtt: Option<Duration>,
    last_state: Vec<u8>,
    /// When we sent the packet that the newest accepted packet echoed (our clock), if it echoed one.
    last_echo_sent: Option<Instant>,
    pub counters: Counters,
}

impl PeerLink {
    pub fn new(timing: &Heartbeat, epoch: Instant) -> PeerLink {
        PeerLink {
            interval: timing.interval,
            timeout: timing.timeout,
            epoch,
            incarnation: None,
            retired: [0; RETIRED_INCARNATIONS],
            retired_len: 0,
            retired_next: 0,
            highest: 0,
            window: 0,
            last_heard: None,
            last_rx: None,
            srtt: None,
            last_state: Vec::new(),
            last_echo_sent: None,
            counters: Counters::default(),
        }
    }

    /// Feeds an authentic packet (already decoded and attributed to this peer) received at `now`.
    pub fn receive(&mut self, p: &Packet, now: Instant) -> Accept {
        let outcome = if self.incarnation == Some(p.incarnation) {
            if !self.window_accepts(p.seq) {
                self.counters.replay += 1;
                return Accept::Replay;
            }
            Accept::Fresh
        } else {
            if self.is_retired(p.incarnation) {
                self.counters.replay += 1;
                return Accept::Replay;
            }
            if let Some(old) = self.incarnation {
                self.retire(old);
                self.counters.restarts += 1;
            }
            self.incarnation = Some(p.incarnation);
            self.highest = p.seq;
            self.window = 1;
            self.srtt = None;
            Accept::NewIncarnation
        };
        self.counters.received += 1;
        self.last_heard = Some(now);
        // A late (reordered) packet refreshes liveness but not the echo or the state: those follow the newest.
        if self.last_rx.is_none_or(|(seq, _, _)| p.seq >= seq) || outcome == Accept::NewIncarnation {
            self.last_rx = Some((p.seq, p.send_time_us, now));
            self.last_state.clear();
            self.last_state.extend_from_slice(p.state());
            self.last_echo_sent = self.echoed_send_time(p, now);
        }
        self.sample_rtt(p, now);
        outcome
    }

    /// Marks `seq` seen if it is new and inside the window.
    fn window_accepts(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.window = if shift >= REPLAY_WINDOW { 1 } else { (self.window << shift) | 1 };
            self.highest = seq;
            return true;
        }
        let age = self.highest - seq;
        if age >= REPLAY_WINDOW {
            return false;
        }
        let bit = 1u64 << age;
        if self.window & bit != 0 {
            return false;
        }
        self.window |= bit;
        true
    }

    fn is_retired(&self, incarnation: u64) -> bool {
        self.retired[..self.retired_len].contains(&incarnation)
    }

    fn retire(&mut self, incarnation: u64) {
        self.retired[self.retired_next] = incarnation;
        self.retired_next = (self.retired_next + 1) % RETIRED_INCARNATIONS;
        self.retired_len = (self.retired_len + 1).min(RETIRED_INCARNATIONS);
    }

    /// Our send time of the packet `p` echoes; None without an echo or when it lies in the future (an echo of a
    /// packet of an earlier process of ours, whose clock origin differed).
    fn echoed_send_time(&self, p: &Packet, now: Instant) -> Option<Instant> {
        if p.echo_seq == 0 {
            return None;
        }
        let sent = self.epoch.checked_add(Duration::from_micros(p.echo_time_us))?;
        (sent <= now).then_some(sent)
    }

    fn sample_rtt(&mut self, p: &Packet, now: Instant) {
        if p.echo_seq == 0 {
            return;
        }
        let now_us = micros(now.saturating_duration_since(self.epoch));
        let Some(elapsed) = now_us.checked_sub(p.echo_time_us) else { return };
        let Some(rtt_us) = elapsed.checked_sub(u64::from(p.echo_hold_us)) else { return };
        let sample = Duration::from_micros(rtt_us);
        if sample > self.timeout {
            return; // an echo of an earlier process of ours, or nonsense: ignore
        }
        self.srtt = Some(match self.srtt {
            None => sample,
            Some(s) => (s * 7 + sample) / 8,
        });
    }

    /// Liveness at `now`.
    pub fn liveness(&self, now: Instant) -> Liveness {
        let Some(heard) = self.last_heard else { return Liveness::Down };
        let silent = now.saturating_duration_since(heard);
        if silent >= self.timeout {
            Liveness::Down
        } else if silent > self.interval * 2 {
            Liveness::Suspect
        } else {
            Liveness::Up
        }
    }

    /// What to echo back to this peer in our next packet: (its sequence, its send time, how long we held it).
    pub fn echo(&self, now: Instant) -> (u64, u64, u32) {
        match self.last_rx {
            None => (0, 0, 0),
            Some((seq, time, at)) => {
                let hold = micros(now.saturating_duration_since(at));
                (seq, time, u32::try_from(hold).unwrap_or(u32::MAX))
            }
        }
    }

    pub fn incarnation(&self) -> Option<u64> {
        self.incarnation
    }

    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// Smoothed round-trip time (EWMA 1/8), once an echo arrived.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The state field of the last accepted packet.
    pub fn state(&self) -> &[u8] {
        &self.last_state
    }

    /// When we sent the packet the peer echoed in its newest accepted packet: everything that packet's state says
    /// was decided by the peer after this instant (the peer reads its state after its echo; see the service).
    pub fn echo_sent(&self) -> Option<Instant> {
        self.last_echo_sent
    }
}

/// Microseconds of `d`, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing() -> Heartbeat {
        Heartbeat { interval: 100 * MS, timeout: 500 * MS }
    }

    fn pkt(inc: u64, seq: u64) -> Packet {
        Packet::new(1, 9, inc, seq, seq * 100_000)
    }

    #[test]
    fn never_heard_is_down_then_up_suspect_down_and_recovery() {
        let t0 = Instant::now();
        let mut l = PeerLink::new(&timing(), t0);
        assert_eq!(l.liveness(t0), Liveness::Down);
        assert_eq!(l.receive(&pkt(1, 1), t0), Accept::NewIncarnation);
        assert_eq!(l.liveness(t0), Liveness::Up);
        assert_eq!(l.liveness(t0 + 200 * MS), Liveness::Up);
        // Packets lost from here on.
        assert_eq!(l.liveness(t0 + 201 * MS), Liveness::Suspect);
        assert_eq!(l.liveness(t0 + 499 * MS), Liveness::Suspect);
        assert_eq!(l.liveness(t0 + 500 * MS), Liveness::Down);
        assert_eq!(l.liveness(t0 + 5000 * MS), Liveness::Down);
        // Recovery.
        assert_eq!(l.receive(&pkt(1, 60), t0 + 5000 * MS), Accept::Fresh);
        assert_eq!(l.liveness(t0 + 5000 * MS), Liveness::Up);
        assert_eq!(l.counters.received, 2);
        assert_eq!(l.counters.dropped(), 0);
    }

    #[test]
    fn replays_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut l = PeerLink::new(&timing(), t0);
        l.receive(&pkt(1, 10), t0);
        assert_eq!(l.receive(&pkt(1, 10), t0), Accept::Replay);
        assert_eq!(l.receive(&pkt(1, 12), t0), Accept::Fresh);
        assert_eq!(l.receive(&pkt(1, 11), t0), Accept::Fresh); // reordered, inside the window
        assert_eq!(l.receive(&pkt(1, 11), t0), Accept::Replay);
        assert_eq!(l.receive(&pkt(1, 12 + REPLAY_WINDOW), t0), Accept::Fresh);
        assert_eq!(l.receive(&pkt(1, 12), t0), Accept::Replay); // too old
        assert_eq!(l.receive(&pkt(1, 13), t0), Accept::Fresh); // the oldest inside the window
        assert_eq!(l.counters.replay, 3);
        assert_eq!(l.counters.received, 5);
        // A replay does not refresh liveness.
        let later = t0 + 600 * MS;
        assert_eq!(l.receive(&pkt(1, 11), later), Accept::Replay);
        assert_eq!(l.liveness(later), Liveness::Down);
    }

    #[test]
    fn restart_with_new_incarnation_is_accepted_and_old_one_is_not() {
        let t0 = Instant::now();
        let mut l = PeerLink::new(&timing(), t0);
        l.receive(&pkt(1, 500), t0);
        assert_eq!(l.receive(&pkt(2, 1), t0 + MS), Accept::NewIncarnation);
        assert_eq!(l.incarnation(), Some(2));
        assert_eq!(l.counters.restarts, 1);
        assert_eq!(l.receive(&pkt(2, 2), t0 + 2 * MS), Accept::Fresh);
        // A captured packet of the previous incarnation, even with a high sequence, is a replay.
        assert_eq!(l.receive(&pkt(1, 501), t0 + 3 * MS), Accept::Replay);
        assert_eq!(l.incarnation(), Some(2));
        assert_eq!(l.counters.replay, 1);
    }

    #[test]
    fn rtt_from_echoes() {
        let t0 = Instant::now();
        let mut l = PeerLink::new(&timing(), t0);
        // We sent at 10 ms (our clock); the peer held it 2 ms; it arrives at 16 ms: RTT 4 ms.
        let mut p = pkt(1, 1);
        p.echo_seq = 3;
        p.echo_time_us = 10_000;
        p.echo_hold_us = 2_000;
        l.receive(&p, t0 + 16 * MS);
        assert_eq!(l.rtt(), Some(4 * MS));
        // Nonsense echoes are ignored.
        let mut q = pkt(1, 2);
        q.echo_seq = 4;
        q.echo_time_us = 1_000_000_000;
        l.receive(&q, t0 + 17 * MS);
        assert_eq!(l.rtt(), Some(4 * MS));
        // Our echo back: its last sequence and time, with the hold time.
        assert_eq!(l.echo(t0 + 20 * MS), (2, 200_000, 3_000));
        // The newest packet echoed a send time in the future of our clock: no echo instant is claimed.
        assert_eq!(l.echo_sent(), None);
        let mut r = pkt(1, 3);
        r.echo_seq = 5;
        r.echo_time_us = 18_000;
        l.receive(&r, t0 + 21 * MS);
        assert_eq!(l.echo_sent(), Some(t0 + 18 * MS));
    }
}
