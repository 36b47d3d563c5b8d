//! Heartbeats: authenticated UDP datagrams on every interconnect, per-peer liveness, RTT and counters.
//!
//! [`Plan::from_config`] resolves, for this node, one socket address per interconnect and each peer's address on
//! it; [`Heartbeats::start`] binds one UDP socket per interconnect, sends every `interval` to each peer on each
//! interconnect, feeds received packets to a [`PeerLink`] per (interconnect, peer), and publishes a [`Snapshot`]
//! on a `watch` channel. A peer is [`Liveness::Down`] only when it is down on every interconnect.

pub mod packet;
pub mod peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::packet::{HeartbeatKey, MAX_PACKET, MAX_STATE, Packet, PacketError, cluster_id};
use self::peer::{Counters, Liveness, PeerLink, micros};
use crate::config::{Config, Heartbeat};

/// Why the heartbeat service could not start.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("TDM-HB-012: node {0:?} is not in the cluster config")]
    UnknownNode(String),
    #[error("TDM-HB-013: binding the heartbeat socket of interconnect {interconnect:?} to {addr}: {source}")]
    Bind { interconnect: String, addr: SocketAddr, source: std::io::Error },
    #[error("TDM-HB-014: heartbeat state of {0} bytes is longer than {MAX_STATE}")]
    StateTooLong(usize),
    #[error("TDM-HB-015: the cluster has {0} nodes; heartbeats address at most 65536")]
    TooManyNodes(usize),
}

impl HeartbeatError {
    pub fn code(&self) -> &'static str {
        match self {
            HeartbeatError::UnknownNode(_) => "TDM-HB-012",
            HeartbeatError::Bind { .. } => "TDM-HB-013",
            HeartbeatError::StateTooLong(_) => "TDM-HB-014",
            HeartbeatError::TooManyNodes(_) => "TDM-HB-015",
        }
    }
}

/// One peer as addressed on one interconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPeer {
    pub node: String,
    /// The peer's node id (its index in the config's `nodes`).
    pub id: u16,
    pub addr: SocketAddr,
}

/// One interconnect as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLink {
    pub interconnect: String,
    pub bind: SocketAddr,
    pub peers: Vec<PlanPeer>,
}

/// Everything the service needs, resolved from the config (tests may edit addresses, e.g. to use one host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cluster_id: u64,
    pub node: String,
    pub node_id: u16,
    pub timing: Heartbeat,
    pub links: Vec<PlanLink>,
}

impl Plan {
    /// The plan of node `me`: per interconnect, its own address and port, and every other node's.
    pub fn from_config(config: &Config, me: &str) -> Result<Plan, HeartbeatError> {
        let id = |i: usize| u16::try_from(i).map_err(|_| HeartbeatError::TooManyNodes(config.nodes.len()));
        let me_index =
            config.nodes.iter().position(|n| n.name == me).ok_or_else(|| HeartbeatError::UnknownNode(me.into()))?;
        let me_node = &config.nodes[me_index];
        let mut links = Vec::new();
        for ic in &config.interconnects {
            let mut peers = Vec::new();
            for (i, n) in config.nodes.iter().enumerate() {
                if i != me_index {
                    let addr = SocketAddr::from((ic.address_of(n), ic.port));
                    peers.push(PlanPeer { node: n.name.clone(), id: id(i)?, addr });
                }
            }
            let bind = SocketAddr::from((ic.address_of(me_node), ic.port));
            links.push(PlanLink { interconnect: ic.name.clone(), bind, peers });
        }
        Ok(Plan {
            cluster_id: cluster_id(&config.cluster.name),
            node: me.to_string(),
            node_id: id(me_index)?,
            timing: config.heartbeat.clone(),
            links,
        })
    }
}

/// One peer on one interconnect, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub interconnect: String,
    pub liveness: Liveness,
    pub counters: Counters,
    pub rtt: Option<Duration>,
    pub incarnation: Option<u64>,
}

/// One peer, over every interconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub node: String,
    /// The best liveness over the interconnects: Down only when down on every one.
    pub liveness: Liveness,
    pub links: Vec<LinkStatus>,
    /// The state field of the peer's latest accepted heartbeat.
    pub state: Vec<u8>,
    /// When we sent the packet of ours that this latest heartbeat echoed (our monotonic clock): the peer chose
    /// `state` after it had received that packet.
    pub echo_sent: Option<Instant>,
    /// The last valid heartbeat from this peer on any interconnect.
    pub last_heard: Option<Instant>,
}

impl PeerStatus {
    /// When the peer became (or will become) Down: its last heartbeat plus the timeout.
    pub fn down_at(&self, timeout: Duration) -> Option<Instant> {
        self.last_heard.map(|t| t + timeout)
    }
}

/// What the service publishes on its watch channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub peers: Vec<PeerStatus>,
    /// Per interconnect (in plan order): packets dropped that could not be attributed to a peer.
    pub unattributed: Vec<Counters>,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
}

impl Snapshot {
    pub fn peer(&self, node: &str) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.node == node)
    }

    pub fn liveness(&self, node: &str) -> Option<Liveness> {
        self.peer(node).map(|p| p.liveness)
    }
}

/// A running heartbeat service. Dropping it stops it (without waiting); [`Heartbeats::stop`] waits.
#[derive(Debug)]
pub struct Heartbeats {
    rx: watch::Receiver<Snapshot>,
    incarnation: u64,
    stop: Option<oneshot::Sender<()>>,
    main: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    state: watch::Sender<Vec<u8>>,
}

/// A datagram as read, decoded by the reader task.
struct Received {
    link: usize,
    from: SocketAddr,
    at: Instant,
    packet: Result<Packet, PacketError>,
}

impl Heartbeats {
    /// Binds every interconnect's socket and starts sending and receiving. Must run inside a tokio runtime.
    pub async fn start(plan: Plan, key: HeartbeatKey, state: Vec<u8>) -> Result<Heartbeats, HeartbeatError> {
        if state.len() > MAX_STATE {
            return Err(HeartbeatError::StateTooLong(state.len()));
        }
        let mut sockets = Vec::new();
        for l in &plan.links {
            let s = UdpSocket::bind(l.bind).await.map_err(|source| HeartbeatError::Bind {
                interconnect: l.interconnect.clone(),
                addr: l.bind,
                source,
            })?;
            sockets.push(Arc::new(s));
        }
        let incarnation = random_incarnation();
        let (tx, rx) = watch::channel(Snapshot::default());
        let (state_tx, state_rx) = watch::channel(state);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (pkt_tx, pkt_rx) = mpsc::channel(1024);
        let mut readers = Vec::new();
        for (i, s) in sockets.iter().enumerate() {
            readers.push(tokio::spawn(read_loop(i, s.clone(), key.clone(), plan.cluster_id, pkt_tx.clone())));
        }
        drop(pkt_tx);
        let service = Service::new(plan, key, incarnation, sockets, tx, state_rx);
        let main = tokio::spawn(service.run(pkt_rx, stop_rx));
        Ok(Heartbeats { rx, incarnation, stop: Some(stop_tx), main: Some(main), readers, state: state_tx })
    }

    /// A receiver of the published snapshots.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.rx.clone()
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Replaces the state field of the heartbeats sent from now on; `false` when it is too long.
    pub fn set_state(&self, state: Vec<u8>) -> bool {
        if state.len() > MAX_STATE {
            return false;
        }
        self.state.send_replace(state);
        true
    }

    /// Stops sending and receiving and closes the sockets.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        for r in self.readers.drain(..) {
            r.abort();
            let _ = r.await;
        }
        if let Some(m) = self.main.take() {
            let _ = m.await;
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
        if let Some(m) = &self.main {
            m.abort();
        }
    }
}

fn random_incarnation() -> u64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // Never expected; fall back to the wall clock, which still differs between restarts.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return micros(t) | 1;
    }
    u64::from_be_bytes(b)
}

async fn read_loop(link: usize, socket: Arc<UdpSocket>, key: HeartbeatKey, cluster: u64, tx: mpsc::Sender<Received>) {
    // One byte more than the largest packet, so that an oversize datagram is seen as such, not truncated.
    let mut buf = [0u8; MAX_PACKET + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors surface here on some platforms (e.g. port unreachable); keep reading.
            Err(_) => continue,
        };
        let at = Instant::now();
        let packet = Packet::decode(&buf[..n], &key, cluster);
        if tx.send(Received { link, from, at, packet }).await.is_err() {
            return;
        }
    }
}

struct Service {
    plan: Plan,
    key: HeartbeatKey,
    incarnation: u64,
    epoch: Instant,
    seq: u64,
    sockets: Vec<Arc<UdpSocket>>,
    /// `links[i][j]`: peer j of interconnect i.
    links: Vec<Vec<PeerLink>>,
    unattributed: Vec<Counters>,
    send_errors: u64,
    tx: watch::Sender<Snapshot>,
    state: watch::Receiver<Vec<u8>>,
}

impl Service {
    fn new(
        plan: Plan,
        key: HeartbeatKey,
        incarnation: u64,
        sockets: Vec<Arc<UdpSocket>>,
        tx: watch::Sender<Snapshot>,
        state: watch::Receiver<Vec<u8>>,
    ) -> Service {
        let epoch = Instant::now();
        let links =
            plan.links.iter().map(|l| l.peers.iter().map(|_| PeerLink::new(&plan.timing, epoch)).collect()).collect();
        let unattributed = vec![Counters::default(); plan.links.len()];
        Service { plan, key, incarnation, epoch, seq: 0, sockets, links, unattributed, send_errors: 0, tx, state }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Received>, mut stop: oneshot::Receiver<()>) {
        let mut send = tokio::time::interval(self.plan.timing.interval);
        send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Liveness changes with time alone: re-evaluate often enough to publish Down within a tenth of an interval.
        let mut eval = tokio::time::interval((self.plan.timing.interval / 10).max(Duration::from_millis(5)));
        eval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = send.tick() => self.send_all().await,
                _ = eval.tick() => {}
                r = rx.recv() => match r {
                    Some(r) => self.receive(r),
                    None => return,
                },
            }
            self.publish();
        }
    }

    async fn send_all(&mut self) {
        let mut buf = [0u8; MAX_PACKET];
        for (i, l) in self.plan.links.iter().enumerate() {
            for (j, peer) in l.peers.iter().enumerate() {
                self.seq += 1;
                let now = Instant::now();
                let (echo_seq, echo_time_us, echo_hold_us) = self.links[i][j].echo(now);
                // The state is read after the echo: a peer that trusts a statement in `state` because it echoes
                // its packet (the standby's vouch) relies on this order.
                let state = self.state.borrow().clone();
                let mut p = Packet::new(
                    self.plan.node_id,
                    self.plan.cluster_id,
                    self.incarnation,
                    self.seq,
                    micros(now - self.epoch),
                );
                p.echo_seq = echo_seq;
                p.echo_time_us = echo_time_us;
                p.echo_hold_us = echo_hold_us;
                let Some(p) = p.with_state(&state) else { continue };
                let n = p.encode_into(&self.key, &mut buf);
                if self.sockets[i].send_to(&buf[..n], peer.addr).await.is_err() {
                    self.send_errors += 1;
                }
            }
        }
    }

    fn receive(&mut self, r: Received) {
        let peers = &self.plan.links[r.link].peers;
        let by_addr = peers.iter().position(|p| p.addr == r.from);
        match (r.packet, by_addr) {
            (Err(e), Some(j)) => self.links[r.link][j].counters.reject(&e),
            (Err(e), None) => self.unattributed[r.link].reject(&e),
            (Ok(p), Some(j)) if peers[j].id == p.sender => {
                self.links[r.link][j].receive(&p, r.at);
            }
            // Authentic, but not from the address of the node it names (or from ourselves): drop.
            (Ok(_), Some(j)) => self.links[r.link][j].counters.malformed += 1,
            (Ok(_), None) => self.unattributed[r.link].malformed += 1,
        }
    }

    fn publish(&self) {
        let now = Instant::now();
        let mut peers: Vec<PeerStatus> = Vec::new();
        let mut heard: Vec<Option<Instant>> = Vec::new();
        for (i, l) in self.plan.links.iter().enumerate() {
            for (j, peer) in l.peers.iter().enumerate() {
                let pl = &self.links[i][j];
                let link = LinkStatus {
                    interconnect: l.interconnect.clone(),
                    liveness: pl.liveness(now),
                    counters: pl.counters,
                    rtt: pl.rtt(),
                    incarnation: pl.incarnation(),
                };
                let idx = match peers.iter().position(|p| p.node == peer.node) {
                    Some(idx) => idx,
                    None => {
                        peers.push(PeerStatus {
                            node: peer.node.clone(),
                            liveness: Liveness::Down,
                            links: Vec::new(),
                            state: Vec::new(),
                            echo_sent: None,
                            last_heard: None,
                        });
                        heard.push(None);
                        peers.len() - 1
                    }
                };
                let ps = &mut peers[idx];
                if link.liveness > ps.liveness {
                    ps.liveness = link.liveness;
                }
                if pl.last_heard().is_some() && pl.last_heard() >= heard[idx] {
                    heard[idx] = pl.last_heard();
                    ps.state = pl.state().to_vec();
                    ps.echo_sent = pl.echo_sent();
                    ps.last_heard = pl.last_heard();
                }
                ps.links.push(link);
            }
        }
        let snapshot = Snapshot { peers, unattributed: self.unattributed.clone(), send_errors: self.send_errors };
        self.tx.send_if_modified(|s| {
            if *s == snapshot {
                false
            } else {
                *s = snapshot;
                true
            }
        });
    }
}
