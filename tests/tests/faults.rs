//! The partition test matrix: real tandemd processes in network namespaces, a real lease table (moto), a TCP
//! witness, and faults made by the kernel (nftables drops, SIGKILL, SIGSTOP). Each node's `exec` resource journals
//! start/stop with timestamps; every test ends by proving that no two nodes' active intervals overlap, and checks
//! where the group ends up. Needs root, `ip` and `nft` (tests/support/testbed-deps.sh).

use std::time::Duration;

use tandem_tests::cluster::{Cluster, HEARTBEAT_PORT, Options, Result};

const FAILOVER: Duration = Duration::from_secs(15);
/// Long enough for several lease ttls and heartbeat timeouts at the test settings.
const SETTLE: Duration = Duration::from_secs(4);

fn other(i: usize) -> usize {
    1 - i
}

#[test]
fn active_crash_fails_over_and_the_restarted_node_rejoins_as_standby() -> Result<()> {
    let mut c = Cluster::start(Options::default())?;
    let a = c.active()?;
    c.kill_node(a);
    c.wait_running_on(other(a), FAILOVER)?;
    c.start_node(a)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, other(a), "the group stays where it failed over to (failback = manual)");
    assert_eq!(c.role(a)?, "standby", "{}", c.log(a));
    let s = c.status(other(a))?;
    assert_eq!(s["groups"][0]["failovers"], 1, "{s:#}");
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn standby_crash_changes_nothing() -> Result<()> {
    let mut c = Cluster::start(Options::default())?;
    let a = c.active()?;
    c.kill_node(other(a));
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, a);
    assert_eq!(c.starts(a)?, 1, "the active never restarted the group");
    c.start_node(other(a))?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, a);
    assert_eq!(c.role(other(a))?, "standby");
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn interconnect_cut_with_witness_reachable_keeps_the_group_in_place() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    c.bed.cut(0, 1)?;
    std::thread::sleep(SETTLE * 2);
    assert_eq!(c.active()?, a, "the holder keeps renewing, so the standby cannot take over");
    assert_eq!(c.starts(other(a))?, 0);
    let s = c.status(other(a))?;
    assert_eq!(s["nodes"][a]["liveness"], "down", "{s:#}");
    c.bed.heal(0, 1)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, a);
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn isolated_active_stops_and_the_standby_takes_over() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    c.bed.isolate(a)?;
    c.wait_running_on(other(a), FAILOVER)?;
    c.bed.unisolate(a)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, other(a));
    assert_eq!(c.role(a)?, "standby", "{}", c.log(a));
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn witness_down_alone_changes_nothing() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    let w = c.witness_port().ok_or("witness")?;
    c.bed.block_host_port(0, w)?;
    c.bed.block_host_port(1, w)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, a);
    assert_eq!(c.starts(a)?, 1);
    // Losing the peer while the witness is down too: nobody may act on an unverified partition.
    c.bed.cut(0, 1)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.starts(other(a))?, 0, "no takeover without a witness answer");
    c.bed.heal_all()?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.running()?.len(), 1);
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn lease_store_unreachable_alone_keeps_the_group_running_on_the_peers_vouch() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    c.bed.block_host_port(0, c.moto_port())?;
    c.bed.block_host_port(1, c.moto_port())?;
    std::thread::sleep(SETTLE * 2);
    assert_eq!(c.active()?, a, "both nodes see each other: nothing moves\n{}", c.log(a));
    assert_eq!(c.starts(a)?, 1, "and nothing restarts");
    c.bed.heal_all()?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, a);
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn lease_store_unreachable_with_interconnect_cut_stops_the_group_everywhere() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    c.bed.block_host_port(0, c.moto_port())?;
    c.bed.block_host_port(1, c.moto_port())?;
    c.bed.cut(0, 1)?;
    // No lease renewal and no vouch: the holder must stop before its lease can expire; nobody can take it.
    c.wait_running_nowhere(FAILOVER)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.starts(other(a))?, 0);
    c.bed.heal_all()?;
    c.wait_running_somewhere(FAILOVER)?;
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn manual_move_stops_on_the_source_before_starting_on_the_target() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    let target = format!("n{}", other(a));
    let out = c.ctl(a, &["group", "move", "g", "--to", &target, "--timeout", "20"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("running on {target}")));
    assert_eq!(c.active()?, other(a));
    // And back, asked on the node that does not run it, without naming a target.
    let out = c.ctl(other(a), &["group", "move", "g", "--timeout", "20"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait_running_on(a, FAILOVER)?;
    // Stop and start through the operator commands.
    let out = c.ctl(a, &["group", "stop", "g", "--timeout", "20"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(c.running()?.is_empty());
    std::thread::sleep(SETTLE);
    assert!(c.running()?.is_empty(), "an operator stop is not a failure: nobody restarts it");
    let out = c.ctl(other(a), &["group", "start", "g", "--timeout", "20"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait_running_somewhere(FAILOVER)?;
    let bad = c.ctl(a, &["group", "move", "nope"])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("TDM-GRP-006"), "{}", String::from_utf8_lossy(&bad.stderr));
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn rolling_restart_moves_the_group_away_cleanly() -> Result<()> {
    let mut c = Cluster::start(Options::default())?;
    let a = c.active()?;
    let b = other(a);
    c.stop_node(b)?;
    c.start_node(b)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, a);
    c.stop_node(a)?;
    // A clean stop hands over at once (release + move target), not after a lease expiry.
    c.wait_running_on(b, FAILOVER)?;
    c.start_node(a)?;
    std::thread::sleep(SETTLE);
    assert_eq!(c.active()?, b);
    assert_eq!(c.role(a)?, "standby");
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn flapping_link_with_30_percent_loss_causes_no_failover() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    c.bed.loss(0, 30, Some(HEARTBEAT_PORT))?;
    c.bed.loss(1, 30, Some(HEARTBEAT_PORT))?;
    std::thread::sleep(Duration::from_secs(15));
    c.bed.no_loss(0)?;
    c.bed.no_loss(1)?;
    assert_eq!(c.active()?, a);
    assert_eq!(c.starts(other(a))?, 0, "no false failover");
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn cpu_starved_active_keeps_the_group_without_overlap() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    // Four busy loops per core in the active's namespace for 10 s, competing with tandemd for the CPU.
    let mut hog = c.cpu_hog(a)?;
    std::thread::sleep(Duration::from_secs(10));
    hog.kill();
    std::thread::sleep(SETTLE);
    assert_eq!(c.running()?.len(), 1, "the group runs on exactly one node");
    assert_eq!(c.starts(other(a))?, 0, "no false failover under CPU load\n{}", c.log(a));
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn node_with_a_shifted_clock_fails_over_both_ways() -> Result<()> {
    // Node 1's monotonic clock is a day ahead of node 0's: nothing may compare clocks across nodes.
    let mut c = Cluster::start(Options { clock_offset: Some((1, 86_400)), ..Options::default() })?;
    let a = c.active()?;
    c.kill_node(a);
    c.wait_running_on(other(a), FAILOVER)?;
    c.start_node(a)?;
    std::thread::sleep(SETTLE);
    c.kill_node(other(a));
    c.wait_running_on(a, FAILOVER)?;
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn garbage_on_the_control_socket_and_the_heartbeat_port_is_counted_and_harmless() -> Result<()> {
    use std::io::{Read, Write};
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    // Not HTTP/2, then a half-open connection, then an oversized frame header: the API answers each with an error
    // or a close, and keeps serving.
    for junk in
        [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x04\x00", b"\x00"]
    {
        let mut s = std::os::unix::net::UnixStream::connect(c.socket(a))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(junk)?;
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
    // Forged heartbeats from the host: not authentic, so dropped and counted, and the peers stay up.
    let sock = std::net::UdpSocket::bind((c.bed.host_addr(), 0))?;
    let target = (c.bed.node_addr(a), HEARTBEAT_PORT);
    for i in 0..50u8 {
        sock.send_to(&[b'T', b'D', b'M', b'H', 1, i, 0, 0], target)?;
        sock.send_to(&[i; 200], target)?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let s = c.status(a)?;
    assert_eq!(s["groups"][0]["state"], "active", "{s:#}");
    assert_eq!(s["nodes"][other(a)]["liveness"], "up", "{s:#}");
    let u = &s["unattributed"];
    let dropped = ["bad_mac", "foreign", "malformed", "replay"].iter().map(|k| u[k].as_u64().unwrap_or(0)).sum::<u64>();
    assert!(dropped >= 100, "every forged datagram is counted: {u}");
    assert_eq!(c.starts(other(a))?, 0);
    let out = c.ctl(a, &["status"])?;
    assert!(out.status.success(), "the API still serves after the junk");
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn peer_api_serves_every_nodes_status_and_refuses_foreign_certificates() -> Result<()> {
    let c = Cluster::start(Options::default())?;
    let a = c.active()?;
    let out = c.ctl(other(a), &["status", "--all", "--json"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(all["errors"].as_array().map(Vec::len), Some(0), "{all:#}");
    let nodes: Vec<&str> = all["nodes"].as_array().ok_or("nodes")?.iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "{all:#}");
    // The active's own view, fetched over mutual TLS, says it runs the group.
    let active_view =
        all["nodes"].as_array().ok_or("nodes")?.iter().find(|n| n["node"] == format!("n{a}")).ok_or("active")?;
    assert_eq!(active_view["groups"][0]["state"], "active", "{all:#}");

    // A client with a certificate of another CA, and a client that speaks no TLS at all: both refused, counted.
    let rogue_key = rcgen::KeyPair::generate()?;
    let rogue = rcgen::CertificateParams::new(vec!["n0".to_string()])?.self_signed(&rogue_key)?;
    let (cert, key) = (c.dir.path().join("rogue.crt"), c.dir.path().join("rogue.key"));
    std::fs::write(&cert, rogue.pem())?;
    std::fs::write(&key, rogue_key.serialize_pem())?;
    let script = "import socket, ssl, sys\n\
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
ctx.load_cert_chain(sys.argv[3], sys.argv[4]); ctx.set_alpn_protocols(['h2'])\n\
try:\n    s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)); s.sendall(b'x' * 64); s.recv(64)\n\
except Exception as e:\n    print('refused:', e)\n\
t = socket.create_connection((sys.argv[1], int(sys.argv[2])), 3); t.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
try:\n    t.recv(64)\nexcept Exception:\n    pass\n";
    let addr = c.bed.node_addr(a).to_string();
    let py = std::process::Command::new("python3").args(["-c", script, &addr, "7402"]).arg(&cert).arg(&key).output()?;
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    tandem_tests::nodes::wait_until(Duration::from_secs(10), "refusals counted", || {
        c.status(a).is_ok_and(|s| s["peer_tls_rejected"].as_u64().unwrap_or(0) >= 2)
    })?;
    let s = c.status(a)?;
    assert_eq!(s["groups"][0]["state"], "active", "the node keeps serving: {s:#}");
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn failback_auto_returns_the_group_to_the_first_server() -> Result<()> {
    let mut c = Cluster::start(Options { failback: "auto", ..Options::default() })?;
    assert_eq!(c.active()?, 0, "the first server starts the group");
    c.kill_node(0);
    c.wait_running_on(1, FAILOVER)?;
    c.start_node(0)?;
    // Once n0 has been an eligible standby for two heartbeat timeouts, n1 hands the group back (a move).
    c.wait_running_on(0, FAILOVER)?;
    assert_eq!(c.role(1)?, "standby");
    c.assert_no_overlap();
    Ok(())
}

const APP_MONITOR: &str = r#"
monitor "custom" "app-health" {
  command         = "test -e DIR/up-$TANDEM_NODE"
  interval        = "200ms"
  timeout         = "2s"
  retries         = 1
  when            = "active"
  recovery_target = "app"
  recovery_action = "restart"
}
"#;

#[test]
fn monitor_restarts_a_failed_resource_in_place_then_fails_over_when_it_cannot() -> Result<()> {
    let c = Cluster::start(Options { extra: APP_MONITOR, ..Options::default() })?;
    let a = c.active()?;
    let dir = c.dir.path().to_path_buf();
    // The application dies behind tandemd's back: the monitor sees it and the resource is restarted here.
    std::fs::remove_file(dir.join(format!("up-n{a}")))?;
    tandem_tests::nodes::wait_until(FAILOVER, "restart in place", || c.starts(a).is_ok_and(|n| n == 2))?;
    assert_eq!(c.active()?, a);
    assert_eq!(c.starts(other(a))?, 0);
    // Now it dies and cannot start again on this node: the restart fails, the group fails over.
    std::fs::write(dir.join(format!("broken-n{a}")), b"")?;
    std::fs::remove_file(dir.join(format!("up-n{a}")))?;
    c.wait_running_on(other(a), FAILOVER)?;
    tandem_tests::nodes::wait_until(FAILOVER, "failed role", || c.role(a).is_ok_and(|r| r == "failed"))?;
    let s = c.status(a)?;
    let monitors = s["monitors"].as_array().ok_or("monitors")?;
    assert!(monitors.iter().any(|m| m["name"] == "app-health"), "{s:#}");
    // The operator clears the failure: the node is a standby again.
    std::fs::remove_file(dir.join(format!("broken-n{a}")))?;
    let out = c.ctl(a, &["group", "start", "g", "--timeout", "10"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tandem_tests::nodes::wait_until(FAILOVER, "standby again", || c.role(a).is_ok_and(|r| r == "standby"))?;
    assert_eq!(c.active()?, other(a));
    c.assert_no_overlap();
    Ok(())
}
