//! Self-test of the network test bed and the node-process harness, against the real kernel: namespaces, the
//! bridge, every fault kind, process-group kills and cleanup. Needs root, `ip` and `nft`
//! (tests/support/testbed-deps.sh); traffic only goes to the bed's own addresses and loopback.

use std::error::Error;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tandem_tests::Moto;
use tandem_tests::netns::{Testbed, sweep_stale};
use tandem_tests::nodes::{NodeProcess, wait_until};

type TestResult = Result<(), Box<dyn Error>>;

const STARTUP: Duration = Duration::from_secs(30);
/// Connect timeout of a probe: a dropped SYN makes the probe fail after this long.
const PROBE_TIMEOUT_S: &str = "1";

const TCP_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(64)
print("port", s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.close()
"#;

const TCP_PROBE: &str = r#"
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()
"#;

const LOOPBACK_PROBE: &str = r#"
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
socket.create_connection(s.getsockname(), 1).close()
"#;

/// Binds UDP ports A and B, waits for one datagram on B, then counts what arrived on A (sent before B's).
const UDP_RECEIVER: &str = r#"
import socket, sys
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind((sys.argv[1], 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind((sys.argv[1], 0))
print("ports", a.getsockname()[1], b.getsockname()[1], flush=True)
b.settimeout(30)
b.recv(100)
a.setblocking(False)
n = 0
while True:
    try:
        a.recv(100)
        n += 1
    except BlockingIOError:
        break
print("received_a", n, flush=True)
"#;

const UDP_SENDER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"a", (sys.argv[1], int(sys.argv[2])))
s.sendto(b"b", (sys.argv[1], int(sys.argv[3])))
"#;

fn python(bed: &Testbed, node: usize, script: &str, args: &[String]) -> Command {
    let mut cmd = bed.command(node, Path::new("python3"));
    cmd.arg("-c").arg(script).args(args);
    cmd
}

/// Whether node `from` can open a TCP connection to `addr:port`.
fn reachable(bed: &Testbed, from: usize, addr: Ipv4Addr, port: u16) -> Result<bool, Box<dyn Error>> {
    let args = [addr.to_string(), port.to_string(), PROBE_TIMEOUT_S.to_string()];
    let out = python(bed, from, TCP_PROBE, &args).stdin(Stdio::null()).output()?;
    Ok(out.status.success())
}

fn loopback_works(bed: &Testbed, node: usize) -> Result<bool, Box<dyn Error>> {
    Ok(python(bed, node, LOOPBACK_PROBE, &[]).output()?.status.success())
}

/// Waits until `node`'s log has a line starting with `word`, and returns the rest of that line's fields.
fn wait_for_line(node: &NodeProcess, word: &str) -> Result<Vec<String>, Box<dyn Error>> {
    let find = || {
        let log = node.log_tail(100);
        log.lines().find_map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next() == Some(word)).then(|| fields.map(str::to_string).collect::<Vec<_>>())
        })
    };
    wait_until(STARTUP, &format!("`{word}` in the log of pid {}", node.pid()), || find().is_some())
        .map_err(|e| format!("{e}; log:\n{}", node.log_tail(20)))?;
    find().ok_or_else(|| "line vanished".into())
}

fn log_dir() -> Result<tempfile::TempDir, Box<dyn Error>> {
    Ok(tempfile::tempdir()?)
}

/// Sends 5 datagrams to port A and then 1 to port B of node 1 from node 0; returns how many of A's arrived.
fn udp_round(bed: &Testbed, dir: &Path, round: &str, loss: Option<(u8, bool)>) -> Result<u32, Box<dyn Error>> {
    let log: PathBuf = dir.join(format!("udp-{round}.log"));
    let mut receiver = NodeProcess::spawn(python(bed, 1, UDP_RECEIVER, &[bed.node_addr(1).to_string()]), log)?;
    let ports = wait_for_line(&receiver, "ports")?;
    let (a, b) = match ports.as_slice() {
        [a, b] => (a.parse::<u16>()?, b.clone()),
        _ => return Err(format!("bad receiver output: {ports:?}").into()),
    };
    if let Some((percent, only_a)) = loss {
        bed.loss(1, percent, only_a.then_some(a))?;
    }
    let sent = python(bed, 0, UDP_SENDER, &[bed.node_addr(1).to_string(), a.to_string(), b]).output()?;
    assert!(sent.status.success(), "sender: {}", String::from_utf8_lossy(&sent.stderr));
    let count = wait_for_line(&receiver, "received_a")?;
    bed.no_loss(1)?;
    receiver.kill();
    Ok(count.first().ok_or("no count")?.parse()?)
}

#[test]
fn faults_cut_isolate_block_and_lose_real_traffic() -> TestResult {
    let bed = Testbed::new(2)?;
    let dir = log_dir()?;
    let host = bed.host_addr();
    assert_eq!(bed.node_addr(1).octets()[..3], host.octets()[..3], "one /24 per bed");

    let server_cmd = python(&bed, 1, TCP_SERVER, &[bed.node_addr(1).to_string()]);
    let server = NodeProcess::spawn(server_cmd, dir.path().join("server.log"))?;
    let port: u16 = wait_for_line(&server, "port")?.first().ok_or("no port")?.parse()?;
    let host_listener = TcpListener::bind((host, 0))?;
    let host_port = host_listener.local_addr()?.port();
    let other_listener = TcpListener::bind((host, 0))?;
    let other_port = other_listener.local_addr()?.port();
    let node1 = bed.node_addr(1);

    assert!(reachable(&bed, 0, node1, port)?, "node 1 unreachable from node 0 without faults");
    assert!(reachable(&bed, 0, host, host_port)?, "host unreachable from node 0 without faults");

    bed.cut(0, 1)?;
    assert!(!reachable(&bed, 0, node1, port)?, "cut(0, 1) let node 0 reach node 1");
    assert!(reachable(&bed, 0, host, host_port)?, "cut(0, 1) also cut node 0 from the host");
    assert!(reachable(&bed, 1, host, host_port)?, "cut(0, 1) also cut node 1 from the host");
    bed.heal(0, 1)?;
    assert!(reachable(&bed, 0, node1, port)?, "heal(0, 1) did not restore node 0 -> node 1");

    bed.isolate(0)?;
    assert!(!reachable(&bed, 0, host, host_port)?, "isolate(0) let node 0 reach the host");
    assert!(!reachable(&bed, 0, node1, port)?, "isolate(0) let node 0 reach node 1");
    assert!(loopback_works(&bed, 0)?, "isolate(0) broke node 0's loopback");
    bed.unisolate(0)?;
    assert!(reachable(&bed, 0, host, host_port)?, "unisolate(0) did not restore node 0 -> host");

    bed.block_host_port(0, host_port)?;
    assert!(!reachable(&bed, 0, host, host_port)?, "block_host_port let node 0 reach the port");
    assert!(reachable(&bed, 0, host, other_port)?, "block_host_port blocked another port");
    assert!(reachable(&bed, 1, host, host_port)?, "block_host_port(0, ..) blocked node 1 too");
    bed.unblock_host_port(0, host_port)?;
    assert!(reachable(&bed, 0, host, host_port)?, "unblock_host_port did not restore the port");

    assert_eq!(udp_round(&bed, dir.path(), "clean", None)?, 5, "datagrams lost without a fault");
    assert_eq!(udp_round(&bed, dir.path(), "lossy", Some((100, true)))?, 0, "100% loss on port A let some through");
    bed.loss(1, 100, None)?;
    assert!(!reachable(&bed, 0, node1, port)?, "100% loss on all of node 1's ingress let TCP through");
    bed.no_loss(1)?;
    assert!(reachable(&bed, 0, node1, port)?, "no_loss(1) did not restore node 1");

    bed.cut(0, 1)?;
    bed.isolate(1)?;
    bed.heal_all()?;
    assert!(reachable(&bed, 0, node1, port)?, "heal_all left a fault");
    assert!(reachable(&bed, 1, host, host_port)?, "heal_all left node 1 isolated");
    Ok(())
}

#[test]
fn moto_on_the_host_address_is_reachable_from_nodes_and_blockable_per_node() -> TestResult {
    let bed = Testbed::new(2)?;
    let moto = Moto::start_on(bed.host_addr().into())?;
    assert_eq!(moto.endpoint(), format!("http://{}:{}", bed.host_addr(), moto.port));
    assert!(reachable(&bed, 0, bed.host_addr(), moto.port)?, "moto on host_addr unreachable from node 0");
    bed.block_host_port(0, moto.port)?;
    assert!(!reachable(&bed, 0, bed.host_addr(), moto.port)?, "moto reachable from node 0 despite the block");
    assert!(reachable(&bed, 1, bed.host_addr(), moto.port)?, "blocking node 0 also blocked node 1");
    Ok(())
}

#[test]
fn kill_takes_down_the_node_and_what_it_started() -> TestResult {
    let bed = Testbed::new(1)?;
    let dir = log_dir()?;
    let mut cmd = bed.command(0, Path::new("sh"));
    cmd.args(["-c", "echo self $$; sleep 300 & echo child $!; wait"]);
    let mut node = NodeProcess::spawn(cmd, dir.path().join("node.log"))?;
    let me: u32 = wait_for_line(&node, "self")?.first().ok_or("no pid")?.parse()?;
    assert_eq!(me, node.pid(), "`ip netns exec` did not exec the program in place");
    let child: u32 = wait_for_line(&node, "child")?.first().ok_or("no pid")?.parse()?;
    assert!(bed.pids(0)?.contains(&child), "the child is not in the node's namespace");

    node.pause();
    assert!(node.is_running(), "a paused node counts as running");
    node.resume();
    node.kill();
    assert!(!node.is_running());
    wait_until(Duration::from_secs(10), "the node's namespace to be empty", || {
        bed.pids(0).is_ok_and(|p| p.is_empty())
    })?;
    Ok(())
}

#[test]
fn terminate_ends_a_node_gracefully_or_by_force() -> TestResult {
    let bed = Testbed::new(1)?;
    let dir = log_dir()?;
    let mut cmd = bed.command(0, Path::new("sleep"));
    cmd.arg("300");
    let mut polite = NodeProcess::spawn(cmd, dir.path().join("polite.log"))?;
    let ended = polite.terminate(Duration::from_secs(10))?;
    assert!(matches!(ended, tandem_tests::nodes::Ended::Exited(_)), "{ended:?}");

    let mut cmd = bed.command(0, Path::new("sh"));
    cmd.args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]);
    let mut stubborn = NodeProcess::spawn(cmd, dir.path().join("stubborn.log"))?;
    wait_for_line(&stubborn, "ready")?;
    let ended = stubborn.terminate(Duration::from_millis(300))?;
    assert!(matches!(ended, tandem_tests::nodes::Ended::Killed(_)), "{ended:?}");
    assert!(!stubborn.is_running());
    Ok(())
}

#[test]
fn drop_removes_namespaces_and_host_link_and_beds_do_not_collide() -> TestResult {
    let a = Testbed::new(2)?;
    let b = Testbed::new(1)?;
    assert_ne!(a.host_addr(), b.host_addr(), "two live beds share a subnet");
    assert_ne!(a.id(), b.id());
    let names: Vec<String> = (0..2).map(|i| a.ns(i).to_string()).collect();
    let link = a.host_link().to_string();
    let shown = String::from_utf8(Command::new("ip").args(["-o", "link", "show", "dev", &link]).output()?.stdout)?;
    assert!(shown.contains(&format!("alias {}", a.id())), "host link not tagged for sweep_stale: {shown}");
    // A process left running in a namespace must not keep it alive.
    let mut cmd = a.command(0, Path::new("sleep"));
    cmd.arg("300").stdout(Stdio::null());
    let mut straggler = cmd.spawn()?;
    drop(a);
    let killed = wait_until(Duration::from_secs(10), "Drop to kill the straggler", || {
        straggler.try_wait().is_ok_and(|status| status.is_some())
    });
    if killed.is_err() {
        let _ = straggler.kill();
        let _ = straggler.wait();
    }
    killed?;
    let list = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    for name in &names {
        assert!(!list.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} survived Drop:\n{list}");
    }
    assert!(!list.contains(&format!("{}-br", names[0].trim_end_matches("-n0"))), "bridge namespace survived:\n{list}");
    let link_gone = !Command::new("ip").args(["link", "show", "dev", &link]).output()?.status.success();
    assert!(link_gone, "{link} survived Drop");
    assert!(b.pids(0).is_ok(), "dropping one bed touched the other");
    Ok(())
}

#[test]
fn sweep_removes_leftovers_of_dead_processes_only() -> TestResult {
    // A pid that is certainly dead: a child we reaped.
    let mut gone = Command::new("true").spawn()?;
    let dead = gone.id();
    gone.wait()?;
    let stale = format!("tdm-{dead}-0-n0");
    let live_bed = Testbed::new(1)?;
    run(&["netns", "add", &stale])?;
    let link = format!("tdm{}s", dead % 100_000);
    let peer = format!("tdm{}p", dead % 100_000);
    let alias = format!("tdm-{dead}-0");
    run(&["link", "add", &link, "type", "veth", "peer", "name", &peer])?;
    run(&["link", "set", "dev", &link, "alias", &alias])?;

    sweep_stale();

    let list = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    let stale_left = list.lines().any(|l| l.split_whitespace().next() == Some(stale.as_str()));
    let link_left = Command::new("ip").args(["link", "show", "dev", &link]).output()?.status.success();
    // Clean up before asserting, so a failure leaves nothing behind.
    if stale_left {
        let _ = run(&["netns", "del", &stale]);
    }
    if link_left {
        let _ = run(&["link", "del", "dev", &link]);
    }
    assert!(!stale_left, "sweep_stale left namespace {stale}");
    assert!(!link_left, "sweep_stale left link {link}");
    assert!(list.contains(live_bed.ns(0)), "sweep_stale removed a live bed's namespace");
    Ok(())
}

fn run(args: &[&str]) -> TestResult {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}
