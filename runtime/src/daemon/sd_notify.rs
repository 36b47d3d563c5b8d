//! systemd integration (`Type=notify`, `WatchdogSec=`): a minimal sd_notify client and the watchdog loop.
//!
//! [`Notifier`] sends one datagram per message to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! socket when it starts with `@`), std only. Without `$NOTIFY_SOCKET` (tandemd not started by systemd, tests)
//! every method is a no-op. [`watchdog_loop`] pings systemd every half `WatchdogSec`, but only while the heartbeat
//! service demonstrably still publishes: a tandemd whose core is hung stops pinging and systemd restarts it.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Heartbeat;
use crate::membership::heartbeat::Snapshot;
use crate::membership::heartbeat::peer::Liveness;

/// Where systemd listens for our notifications, and the watchdog timeout it expects us to honour.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<SocketAddr>,
    /// `WatchdogSec=` (from `$WATCHDOG_USEC`), when it applies to this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (the watchdog applies to us only when
    /// `$WATCHDOG_PID` is unset or our pid).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::from_vars(socket.as_deref(), usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// From explicit values: `socket` as in `$NOTIFY_SOCKET` (`None`: not under systemd), `watchdog_usec` as in
    /// `$WATCHDOG_USEC` (`None` or 0: no watchdog).
    pub fn new(socket: Option<&OsStr>, watchdog_usec: Option<u64>) -> Notifier {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else { return Notifier::default() };
        let addr = match socket.as_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(Path::new(socket)),
        };
        let socket = match addr {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={socket:?} is not a usable socket address, not notifying systemd: {e}");
                return Notifier::default();
            }
        };
        let watchdog = watchdog_usec.filter(|u| *u > 0).map(Duration::from_micros);
        Notifier { socket: Some(socket), watchdog }
    }

    fn from_vars(socket: Option<&OsStr>, usec: Option<&str>, pid: Option<&str>, me: u32) -> Notifier {
        let ours = pid.is_none_or(|p| p.trim().parse::<u32>().is_ok_and(|p| p == me));
        let usec = usec.and_then(|u| u.trim().parse::<u64>().ok()).filter(|_| ours);
        Notifier::new(socket, usec)
    }

    /// Sends one notification (`KEY=VALUE` lines). Errors are logged at debug level and otherwise ignored: not
    /// being able to tell systemd must not stop the node.
    pub fn notify(&self, state: &str) {
        let Some(addr) = &self.socket else { return };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), addr));
        if let Err(e) = sent {
            tracing::debug!("sd_notify {state:?} to {addr:?} failed: {e}");
        }
    }

    /// `READY=1`: start-up is complete.
    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// `STOPPING=1`: the clean stop has begun.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// `WATCHDOG=1`: we are alive.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// `STATUS=…`: one line shown by `systemctl status` (line breaks become spaces).
    pub fn status(&self, text: &str) {
        self.notify(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
    }

    /// How often to ping: half of `WatchdogSec=`; `None` without a watchdog (or without systemd).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog).map(|w| w / 2)
    }
}

/// Whether the heartbeat snapshot is one a running heartbeat service could still be publishing at `now`.
///
/// The service re-evaluates every peer each tenth of an interval and publishes a peer `Down` once it has been
/// silent for the heartbeat timeout. A snapshot that still shows a peer up (or suspect) although its last
/// heartbeat is older than the timeout plus slack (one interval, at least 1 s) therefore proves that the
/// service has stopped publishing: its task is hung, or starved. `Err` says why.
///
/// Limit: while every peer is down (or there is none) the snapshot legitimately stays unchanged and proves nothing;
/// a hung service then goes unnoticed by this check (its task ending is still noticed: the channel closes).
pub fn heartbeat_current(snapshot: &Snapshot, timing: &Heartbeat, now: Instant) -> Result<(), String> {
    let limit = timing.timeout + timing.interval.max(Duration::from_secs(1));
    for p in snapshot.peers.iter().filter(|p| p.liveness != Liveness::Down) {
        if let Some(heard) = p.last_heard {
            let silent = now.saturating_duration_since(heard);
            if silent > limit {
                return Err(format!(
                    "the heartbeat service is not publishing: peer {} still shows {:?} after {} ms of silence \
                     (timeout {} ms)",
                    p.node,
                    p.liveness,
                    silent.as_millis(),
                    timing.timeout.as_millis()
                ));
            }
        }
    }
    Ok(())
}

/// Sends `WATCHDOG=1` every [`Notifier::watchdog_interval`] while the heartbeat service is alive: its channel is
/// open (its task has not ended) and its latest snapshot is current ([`heartbeat_current`]). Otherwise the ping
/// is withheld (with `STATUS=` saying why), so systemd's `WatchdogSec=` expires: it aborts tandemd (SIGABRT) and
/// `Restart=` starts it again. A frozen process or a wedged runtime sends nothing either. Returns at once
/// without a watchdog.
pub async fn watchdog_loop(notifier: Notifier, heartbeat: watch::Receiver<Snapshot>, timing: Heartbeat) {
    let Some(every) = notifier.watchdog_interval() else { return };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    loop {
        tick.tick().await;
        let verdict = match heartbeat.has_changed() {
            Err(_) => Err("the heartbeat service has stopped".to_string()),
            Ok(_) => heartbeat_current(&heartbeat.borrow(), &timing, Instant::now()),
        };
        match verdict {
            Ok(()) => {
                if withheld {
                    tracing::info!("heartbeat service publishing again; systemd watchdog pings resumed");
                    notifier.status("running");
                    withheld = false;
                }
                notifier.watchdog();
            }
            Err(why) => {
                if !withheld {
                    tracing::error!("withholding the systemd watchdog ping: {why}");
                    notifier.status(&format!("watchdog ping withheld: {why}"));
                    withheld = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::membership::heartbeat::PeerStatus;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn listen() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (dir, path, socket)
    }

    fn timing() -> Heartbeat {
        Heartbeat { interval: Duration::from_secs(1), timeout: Duration::from_secs(5) }
    }

    fn peer(liveness: Liveness, last_heard: Option<Instant>) -> PeerStatus {
        PeerStatus { node: "n1".into(), liveness, links: Vec::new(), state: Vec::new(), echo_sent: None, last_heard }
    }

    #[test]
    fn notifications_are_exact_datagrams() {
        let (_dir, path, socket) = listen();
        let n = Notifier::new(Some(path.as_os_str()), Some(10_000_000));
        n.ready();
        n.watchdog();
        n.status("leaving:\nmoving 2 groups");
        n.stopping();
        assert_eq!(receive(&socket), "READY=1");
        assert_eq!(receive(&socket), "WATCHDOG=1");
        assert_eq!(receive(&socket), "STATUS=leaving: moving 2 groups");
        assert_eq!(receive(&socket), "STOPPING=1");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn abstract_socket_is_named_with_at() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("tandem-sd-notify-test-{}-{nanos}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = Notifier::new(Some(OsStr::new(&format!("@{name}"))), None);
        n.ready();
        assert_eq!(receive(&socket), "READY=1");
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn without_notify_socket_everything_is_a_noop() {
        let n = Notifier::new(None, Some(10_000_000));
        n.ready();
        n.watchdog();
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::from_vars(None, Some("10000000"), None, 1);
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn watchdog_applies_only_to_our_pid() {
        let s = Some(OsStr::new("/run/systemd/notify"));
        let interval = |usec, pid| Notifier::from_vars(s, usec, pid, 4242).watchdog_interval();
        assert_eq!(interval(Some("4000000"), None), Some(Duration::from_secs(2)));
        assert_eq!(interval(Some("4000000"), Some("4242")), Some(Duration::from_secs(2)));
        assert_eq!(interval(Some("4000000"), Some("17")), None);
        assert_eq!(interval(Some("4000000"), Some("x")), None);
        assert_eq!(interval(Some("0"), None), None);
        assert_eq!(interval(Some("ten"), None), None);
        assert_eq!(interval(None, None), None);
    }

    #[test]
    fn snapshot_with_a_stale_live_peer_is_not_current() {
        let heard = Instant::now();
        let now = heard + Duration::from_secs(600);
        let t = timing();
        let at = |secs| Some(now - Duration::from_secs(secs));
        let snap = |peers| Snapshot { peers, ..Snapshot::default() };
        assert!(heartbeat_current(&Snapshot::default(), &t, now).is_ok());
        assert!(heartbeat_current(&snap(vec![peer(Liveness::Up, at(1))]), &t, now).is_ok());
        assert!(heartbeat_current(&snap(vec![peer(Liveness::Suspect, at(4))]), &t, now).is_ok());
        // Down long ago: the service said so itself.
        assert!(heartbeat_current(&snap(vec![peer(Liveness::Down, at(600))]), &t, now).is_ok());
        // Still "up" 7 s after its last heartbeat (timeout 5 s + 1 s slack): nobody re-evaluated it.
        let err = heartbeat_current(&snap(vec![peer(Liveness::Up, at(7))]), &t, now).unwrap_err();
        assert!(err.contains("peer n1"), "{err}");
        assert!(heartbeat_current(&snap(vec![peer(Liveness::Suspect, at(7))]), &t, now).is_err());
    }

    async fn first_datagram(snapshot: watch::Receiver<Snapshot>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()), Some(20_000));
        let task = tokio::spawn(watchdog_loop(n, snapshot, timing()));
        let mut buf = [0u8; 512];
        let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf)).await.unwrap().unwrap();
        task.abort();
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    #[tokio::test]
    async fn watchdog_pings_while_the_heartbeat_service_publishes() {
        let (_tx, rx) = watch::channel(Snapshot::default());
        assert_eq!(first_datagram(rx).await, "WATCHDOG=1");
    }

    #[tokio::test]
    async fn watchdog_ping_is_withheld_when_the_heartbeat_service_is_gone() {
        let (tx, rx) = watch::channel(Snapshot::default());
        drop(tx);
        let first = first_datagram(rx).await;
        assert!(first.starts_with("STATUS=watchdog ping withheld: the heartbeat service has stopped"), "{first}");
    }

    #[tokio::test]
    async fn watchdog_ping_is_withheld_for_a_stale_snapshot() {
        let stale = Instant::now().checked_sub(Duration::from_secs(10));
        let (_tx, rx) = watch::channel(Snapshot { peers: vec![peer(Liveness::Up, stale)], ..Snapshot::default() });
        let first = first_datagram(rx).await;
        assert!(first.starts_with("STATUS=watchdog ping withheld: the heartbeat service is not publishing"), "{first}");
    }
}
