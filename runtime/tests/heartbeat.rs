//! Heartbeat service over real UDP on 127.0.0.1: discovery, loss, restart, foreign and replayed packets.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tandem_runtime::config::{Config, Heartbeat, Node};
use tandem_runtime::membership::heartbeat::packet::{HeartbeatKey, Packet, cluster_id};
use tandem_runtime::membership::heartbeat::peer::Liveness;
use tandem_runtime::membership::heartbeat::{Heartbeats, Plan, Snapshot};
use tokio::sync::watch;

const INTERVAL: Duration = Duration::from_millis(50);
const TIMEOUT: Duration = Duration::from_millis(300);

fn key() -> HeartbeatKey {
    HeartbeatKey::new(b"the cluster heartbeat key, 32 b.").expect("key")
}

/// A free UDP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port").port()
}

/// Nodes a, b and c (c is played by the test itself); all on 127.0.0.1, told apart by port.
fn plans() -> (Plan, Plan, SocketAddr) {
    let mut c = Config::new("hb-test");
    for n in ["a", "b", "c"] {
        c.nodes.push(Node::new(n, Ipv4Addr::LOCALHOST, "us-east-1a"));
    }
    c.heartbeat = Heartbeat { interval: INTERVAL, timeout: TIMEOUT };
    c.fill_implied();
    let ports = [free_port(), free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from((Ipv4Addr::LOCALHOST, ports[i]));
    let plan = |me: &str, i: usize| {
        let mut p = Plan::from_config(&c, me).expect("plan");
        assert_eq!(p.links.len(), 1);
        p.links[0].bind = addr(i);
        for peer in &mut p.links[0].peers {
            peer.addr = addr(usize::from(peer.id));
        }
        p
    };
    (plan("a", 0), plan("b", 1), addr(2))
}

/// Waits until `cond` holds for the published snapshot, at most `limit`; returns the snapshot and the time taken.
async fn wait_for(
    rx: &mut watch::Receiver<Snapshot>,
    limit: Duration,
    what: &str,
    cond: impl Fn(&Snapshot) -> bool,
) -> (Snapshot, Duration) {
    let start = Instant::now();
    let found = match tokio::time::timeout(limit, rx.wait_for(|s| cond(s))).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    match found {
        Some(s) => (s, start.elapsed()),
        None => panic!("timed out after {limit:?} waiting for {what}; last snapshot: {:#?}", *rx.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_come_up_go_down_and_come_back() {
    let (plan_a, plan_b, _) = plans();
    let a = Heartbeats::start(plan_a.clone(), key(), b"g1".to_vec()).await.unwrap();
    let b = Heartbeats::start(plan_b, key(), Vec::new()).await.unwrap();
    let (mut wa, mut wb) = (a.watch(), b.watch());

    let up = INTERVAL * 5;
    wait_for(&mut wa, up, "a sees b up", |s| s.liveness("b") == Some(Liveness::Up)).await;
    let (s, _) = wait_for(&mut wb, up, "b sees a up", |s| s.liveness("a") == Some(Liveness::Up)).await;
    let pa = s.peer("a").unwrap();
    assert_eq!(pa.state, b"g1");
    assert_eq!(pa.links[0].incarnation, Some(a.incarnation()));
    assert_eq!(s.liveness("c"), Some(Liveness::Down), "c never spoke");
    // RTT from echoes, once a round trip completed.
    let (s, _) =
        wait_for(&mut wb, up, "an RTT estimate", |s| s.peer("a").is_some_and(|p| p.links[0].rtt.is_some())).await;
    assert!(s.peer("a").unwrap().links[0].rtt.unwrap() < TIMEOUT);

    // Stop a: b sees it down within timeout + interval (plus scheduling slack for a loaded CI box).
    let first = a.incarnation();
    a.stop().await;
    let (_, took) =
        wait_for(&mut wb, (TIMEOUT + INTERVAL) * 3, "b sees a down", |s| s.liveness("a") == Some(Liveness::Down)).await;
    assert!(took <= TIMEOUT + INTERVAL * 2, "down after {took:?}");

    // Restart a (new incarnation, same port): up again, counted as a restart.
    let a = Heartbeats::start(plan_a, key(), Vec::new()).await.unwrap();
    assert_ne!(a.incarnation(), first);
    let (s, _) = wait_for(&mut wb, up, "b sees a up again", |s| s.liveness("a") == Some(Liveness::Up)).await;
    let link = &s.peer("a").unwrap().links[0];
    assert_eq!(link.incarnation, Some(a.incarnation()));
    assert_eq!(link.counters.restarts, 1);
    assert_eq!(link.counters.dropped(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_replayed_packets_are_dropped_and_counted() {
    let (_, plan_b, c_addr) = plans();
    let b_addr = plan_b.links[0].bind;
    let b = Heartbeats::start(plan_b, key(), Vec::new()).await.unwrap();
    let mut wb = b.watch();
    // The test plays node c (id 2) from c's address.
    let c = tokio::net::UdpSocket::bind(c_addr).await.unwrap();
    let cid = cluster_id("hb-test");
    let limit = Duration::from_secs(5);

    // A genuine packet from c: c is up. We keep it as the "captured" packet.
    let captured = Packet::new(2, cid, 77, 1, 0).encode(&key());
    c.send_to(&captured, b_addr).await.unwrap();
    wait_for(&mut wb, limit, "c up", |s| s.liveness("c") == Some(Liveness::Up)).await;

    // The captured packet, replayed: dropped as a replay.
    c.send_to(&captured, b_addr).await.unwrap();
    let (s, _) =
        wait_for(&mut wb, limit, "a replay counted", |s| s.peer("c").unwrap().links[0].counters.replay == 1).await;
    assert_eq!(s.peer("c").unwrap().links[0].counters.received, 1);

    // Signed with another key: bad MAC.
    let foreign_key = HeartbeatKey::new(b"not the cluster key at all......").unwrap();
    c.send_to(&Packet::new(2, cid, 77, 2, 0).encode(&foreign_key), b_addr).await.unwrap();
    wait_for(&mut wb, limit, "a bad MAC counted", |s| s.peer("c").unwrap().links[0].counters.bad_mac == 1).await;

    // Another cluster's packet, from an address that is no peer: foreign, unattributed.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(&Packet::new(2, cluster_id("other"), 1, 1, 0).encode(&key()), b_addr).await.unwrap();
    wait_for(&mut wb, limit, "a foreign packet counted", |s| s.unattributed[0].foreign == 1).await;

    // Garbage and a genuine packet naming c but sent from the stranger's address: malformed.
    stranger.send_to(b"garbage", b_addr).await.unwrap();
    stranger.send_to(&Packet::new(2, cid, 77, 3, 0).encode(&key()), b_addr).await.unwrap();
    wait_for(&mut wb, limit, "malformed counted", |s| s.unattributed[0].malformed == 2).await;

    // None of it refreshed or changed c: still the same incarnation, one packet received.
    let s = wb.borrow().clone();
    let link = &s.peer("c").unwrap().links[0];
    assert_eq!((link.counters.received, link.incarnation, link.counters.restarts), (1, Some(77), 0));
    b.stop().await;
}
