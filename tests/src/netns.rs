//! A network test bed for multi-node runtime tests: one network namespace per node, all joined by a bridge that
//! lives in its own namespace, plus one veth into the root namespace (where moto and witness servers listen).
//! Faults (partitions, isolation, a blocked port, random loss) are nftables rules inside the node's namespace.
//!
//! ```text
//!  root ns                 tdm-<pid>-<n>-br                    tdm-<pid>-<n>-n<i>
//!  tdm<X>h 10.213.X.1 ──── host ─┐
//!                                br0 ── n0 ──────────────────── eth0 10.213.X.10   (node 0)
//!                                    └─ n1 ──────────────────── eth0 10.213.X.11   (node 1)
//! ```
//!
//! Every name starts with `tdm-<pid>-<n>` (the bed id) or, for the one link in the root namespace, `tdm<X>h` with
//! the bed id as its alias, so [`sweep_stale`] can remove what a killed run left behind. Needs root, `ip` and
//! `nft` (tests/support/testbed-deps.sh installs them). See docs/testing.md.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

/// Prefix of every namespace and link a bed creates.
pub const PREFIX: &str = "tdm";
/// The nftables table that holds a node's faults (in the node's namespace only).
const FAULT_TABLE: &str = "tandem_faults";
/// First host number of the nodes: node i is 10.213.X.(10+i).
const FIRST_NODE_HOST: usize = 10;
/// Most nodes a bed can hold (host numbers up to .254).
pub const MAX_NODES: usize = 254 - FIRST_NODE_HOST;
/// The script that installs what the bed needs.
pub const DEPS_SCRIPT: &str = "tests/support/testbed-deps.sh";

static BED_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Errors of the test bed; each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("the network test bed needs `{tool}`; run {DEPS_SCRIPT} as root (CI does this in .ci/run)")]
    MissingTool { tool: &'static str },
    #[error("`{command}` failed (exit {code:?}): {stderr}; the test bed needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")]
    Command { command: String, code: Option<i32>, stderr: String },
    #[error("running `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("no free 10.213.X.0/24 subnet for a test bed; list leftovers with `ip -o link show | grep {PREFIX}`")]
    NoSubnet,
    #[error("a test bed holds 1 to {MAX_NODES} nodes, {asked} were asked for")]
    NodeCount { asked: usize },
}

impl TestbedError {
    /// Stable code of the error (docs/troubleshooting.md).
    pub fn code(&self) -> &'static str {
        match self {
            TestbedError::MissingTool { .. } => "TDM-TESTBED-001",
            TestbedError::Command { .. } => "TDM-TESTBED-002",
            TestbedError::Spawn { .. } => "TDM-TESTBED-003",
            TestbedError::NoSubnet => "TDM-TESTBED-004",
            TestbedError::NodeCount { .. } => "TDM-TESTBED-005",
        }
    }
}

/// The faults currently set on one node; the node's nft table is rendered from this as a whole.
#[derive(Debug, Default, Clone, PartialEq)]
struct NodeFaults {
    cut_from: BTreeSet<usize>,
    isolated: bool,
    blocked_host_ports: BTreeSet<u16>,
    /// (percent, only this UDP port)
    loss: Option<(u8, Option<u16>)>,
}

/// A bed of `nodes` network namespaces; dropping it removes everything it created.
pub struct Testbed {
    id: String,
    subnet: u8,
    nodes: usize,
    /// Namespaces created so far (bridge first), deleted in reverse order by Drop.
    namespaces: Vec<String>,
    host_link: Option<String>,
    faults: Mutex<Vec<NodeFaults>>,
}

impl Testbed {
    /// Creates a bed of `nodes` namespaces; removes the leftovers of killed runs first (once per process).
    pub fn new(nodes: usize) -> Result<Testbed, TestbedError> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(TestbedError::NodeCount { asked: nodes });
        }
        check_tools()?;
        SWEEP.call_once(sweep_stale);
        let id = format!("{PREFIX}-{}-{}", std::process::id(), BED_COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut bed = Testbed {
            id,
            subnet: 0,
            nodes,
            namespaces: Vec::new(),
            host_link: None,
            faults: Mutex::new(vec![NodeFaults::default(); nodes]),
        };
        // On error `bed` is dropped here and removes what was built so far.
        bed.build()?;
        Ok(bed)
    }

    fn build(&mut self) -> Result<(), TestbedError> {
        let bridge_ns = format!("{}-br", self.id);
        run("ip", &["netns", "add", &bridge_ns])?;
        self.namespaces.push(bridge_ns.clone());
        run("ip", &["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &bridge_ns, "link", "set", "dev", "br0", "up"])?;

        let (subnet, host_link) = self.claim_subnet(&bridge_ns)?;
        self.subnet = subnet;
        self.host_link = Some(host_link.clone());
        run("ip", &["-n", &bridge_ns, "link", "set", "dev", "host", "master", "br0", "up"])?;
        run("ip", &["addr", "add", &format!("{}/24", self.host_addr()), "dev", &host_link])?;
        run("ip", &["link", "set", "dev", &host_link, "up"])?;

        for i in 0..self.nodes {
            let ns = format!("{}-n{i}", self.id);
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let port = format!("n{i}");
            run("ip", &["-n", &bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run("ip", &["-n", &bridge_ns, "link", "set", "dev", &port, "master", "br0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "dev", "lo", "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", self.node_addr(i)), "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "dev", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Picks X for 10.213.X.0/24: free of addresses in the root namespace, and claimed atomically by creating the
    /// root-side veth `tdm<X>h` (a second bed, even in another process, gets "File exists" and tries the next X).
    fn claim_subnet(&self, bridge_ns: &str) -> Result<(u8, String), TestbedError> {
        let used = used_subnets()?;
        let start = (std::process::id() as usize).wrapping_mul(31).wrapping_add(self.counter()) % 254;
        for k in 0..254 {
            let x = ((start + k) % 254 + 1) as u8;
            if used.contains(&x) {
                continue;
            }
            let link = format!("{PREFIX}{x}h");
            let args = ["link", "add", &link, "type", "veth", "peer", "name", "host", "netns", bridge_ns];
            match run("ip", &args) {
                // `ip link add NAME alias A` ignores the alias silently: set it separately (for sweep_stale).
                Ok(_) => {
                    run("ip", &["link", "set", "dev", &link, "alias", &self.id])?;
                    return Ok((x, link));
                }
                Err(TestbedError::Command { stderr, .. }) if stderr.contains("File exists") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(TestbedError::NoSubnet)
    }

    fn counter(&self) -> usize {
        self.id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// The bed's id, `tdm-<pid>-<n>`: the prefix of its namespaces.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Name of the root-namespace veth (`tdm<X>h`).
    pub fn host_link(&self) -> &str {
        self.host_link.as_deref().unwrap_or_default()
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Address of the root-namespace veth: bind moto / witness servers here so that nodes reach them.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    /// Address of node `i` (its `eth0`).
    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        self.check_node(i);
        Ipv4Addr::new(10, 213, self.subnet, (FIRST_NODE_HOST + i) as u8)
    }

    /// Name of node `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        self.check_node(i);
        // namespaces[0] is the bridge.
        self.namespaces.get(i + 1).map(String::as_str).unwrap_or_default()
    }

    /// `ip netns exec NS program`: `ip` execs `program` in place, so the child's pid is the program's.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(i)]).arg(program);
        cmd
    }

    /// Gives node `i`'s eth0 a further address (`addr/prefix`, e.g. the private IP a Terraform example chose for
    /// the node) and an on-link route to `onlink` (e.g. the example's VPC range), so that nodes reach each other's
    /// further addresses over the bridge, from that address (`src`: as on the instance, where it is the only one).
    /// The bed's own addresses and faults are unchanged.
    pub fn add_node_address(&self, i: usize, addr: &str, onlink: &str) -> Result<(), TestbedError> {
        let ns = self.ns(i);
        let src = addr.split('/').next().unwrap_or(addr);
        run("ip", &["-n", ns, "addr", "add", addr, "dev", "eth0"])?;
        match run("ip", &["-n", ns, "route", "add", onlink, "dev", "eth0", "src", src]) {
            // The subnet route of `addr` may already be `onlink` itself.
            Err(TestbedError::Command { stderr, .. }) if stderr.contains("File exists") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Pids of every process in node `i`'s namespace.
    pub fn pids(&self, i: usize) -> Result<Vec<u32>, TestbedError> {
        netns_pids(self.ns(i))
    }

    /// Drops every packet between node `a` and node `b`, both directions (established connections too); the host
    /// and other nodes stay reachable. Cuts add up; [`Testbed::heal`] removes one.
    pub fn cut(&self, a: usize, b: usize) -> Result<(), TestbedError> {
        self.set_pair(a, b, true)
    }

    /// Removes the cut between `a` and `b` (no-op when there is none).
    pub fn heal(&self, a: usize, b: usize) -> Result<(), TestbedError> {
        self.set_pair(a, b, false)
    }

    fn set_pair(&self, a: usize, b: usize, cut: bool) -> Result<(), TestbedError> {
        self.check_node(a);
        self.check_node(b);
        if a == b {
            return Ok(());
        }
        self.change(&[a, b], |faults| {
            for (x, y) in [(a, b), (b, a)] {
                if let Some(f) = faults.get_mut(x) {
                    if cut {
                        f.cut_from.insert(y);
                    } else {
                        f.cut_from.remove(&y);
                    }
                }
            }
        })
    }

    /// Node `i` reaches nobody (neither host nor nodes) and nobody reaches it; its loopback still works.
    pub fn isolate(&self, i: usize) -> Result<(), TestbedError> {
        self.check_node(i);
        self.change_node(i, |f| f.isolated = true)
    }

    /// Ends [`Testbed::isolate`] (other faults of the node stay).
    pub fn unisolate(&self, i: usize) -> Result<(), TestbedError> {
        self.check_node(i);
        self.change_node(i, |f| f.isolated = false)
    }

    /// TCP between node `i` and `host_addr():port` is dropped (e.g. the lease store unreachable from node `i`
    /// only); connects time out rather than being refused. Blocked ports add up.
    pub fn block_host_port(&self, i: usize, port: u16) -> Result<(), TestbedError> {
        self.check_node(i);
        self.change_node(i, |f| {
            f.blocked_host_ports.insert(port);
        })
    }

    /// Ends [`Testbed::block_host_port`] for `port`.
    pub fn unblock_host_port(&self, i: usize, port: u16) -> Result<(), TestbedError> {
        self.check_node(i);
        self.change_node(i, |f| {
            f.blocked_host_ports.remove(&port);
        })
    }

    /// Drops `percent` % of the packets arriving at node `i` on `eth0` at random (all of them at 100, which nft
    /// needs as a rule without `numgen`), or only those to UDP port `udp_port`. Replaces the node's previous loss.
    pub fn loss(&self, i: usize, percent: u8, udp_port: Option<u16>) -> Result<(), TestbedError> {
        self.check_node(i);
        let loss = (percent > 0).then_some((percent.min(100), udp_port));
        self.change_node(i, |f| f.loss = loss)
    }

    /// Ends [`Testbed::loss`] on node `i`.
    pub fn no_loss(&self, i: usize) -> Result<(), TestbedError> {
        self.loss(i, 0, None)
    }

    /// Removes every fault on every node.
    pub fn heal_all(&self) -> Result<(), TestbedError> {
        let all: Vec<usize> = (0..self.nodes).collect();
        self.change(&all, |faults| faults.iter_mut().for_each(|f| *f = NodeFaults::default()))
    }

    fn change_node(&self, i: usize, edit: impl FnOnce(&mut NodeFaults)) -> Result<(), TestbedError> {
        self.change(&[i], |faults| {
            if let Some(f) = faults.get_mut(i) {
                edit(f);
            }
        })
    }

    /// Applies `edit` to the fault state and re-renders the tables of `touched` nodes, each atomically.
    fn change(&self, touched: &[usize], edit: impl FnOnce(&mut Vec<NodeFaults>)) -> Result<(), TestbedError> {
        let mut faults = self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        edit(&mut faults);
        for &i in touched {
            let rules = faults.get(i).map(|f| self.render(f)).unwrap_or_default();
            nft(self.ns(i), &rules)?;
        }
        Ok(())
    }

    /// The nft script that replaces node's fault table atomically (create, delete, re-create in one transaction).
    fn render(&self, f: &NodeFaults) -> String {
        let mut script = format!("table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n");
        if *f == NodeFaults::default() {
            return script;
        }
        let host = self.host_addr();
        let mut input = vec!["iifname \"lo\" accept".to_string()];
        let mut output = vec!["oifname \"lo\" accept".to_string()];
        if f.isolated {
            input.push("drop".into());
            output.push("drop".into());
        }
        for &peer in &f.cut_from {
            let addr = self.node_addr(peer);
            input.push(format!("ip saddr {addr} drop"));
            output.push(format!("ip daddr {addr} drop"));
        }
        for port in &f.blocked_host_ports {
            input.push(format!("ip saddr {host} tcp sport {port} drop"));
            output.push(format!("ip daddr {host} tcp dport {port} drop"));
        }
        if let Some((percent, udp_port)) = f.loss {
            let port = udp_port.map(|p| format!(" udp dport {p}")).unwrap_or_default();
            // `numgen random mod 100 < 100` is rejected by nft ("exceeds valid range 0-99").
            let random = if percent >= 100 { String::new() } else { format!(" numgen random mod 100 < {percent}") };
            input.push(format!("iifname \"eth0\"{port}{random} drop"));
        }
        let chain = |name: &str, hook: &str, rules: &[String]| {
            let body: String = rules.iter().map(|r| format!("    {r}\n")).collect();
            format!("  chain {name} {{\n    type filter hook {hook} priority -10; policy accept;\n{body}  }}\n")
        };
        script.push_str(&format!(
            "table inet {FAULT_TABLE} {{\n{}{}}}\n",
            chain("input", "input", &input),
            chain("output", "output", &output)
        ));
        script
    }

    fn check_node(&self, i: usize) {
        assert!(i < self.nodes, "test bed {} has {} nodes, node {i} does not exist", self.id, self.nodes);
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_netns_processes(ns);
        }
        if let Some(link) = &self.host_link {
            let _ = run("ip", &["link", "del", "dev", link]);
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("test bed {}: removing namespace {ns}: {e}", self.id);
            }
        }
    }
}

/// Fails with a message naming the deps script when `ip` or `nft` is missing.
fn check_tools() -> Result<(), TestbedError> {
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let found = Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !found {
            return Err(TestbedError::MissingTool { tool });
        }
    }
    Ok(())
}

/// Runs a command, returning its stdout; errors carry the command line and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, TestbedError> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, TestbedError> {
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let spawn_err = |source| TestbedError::Spawn { command: command.clone(), source };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(text) = input {
            stderr.push_str(&format!("\ninput was:\n{text}"));
        }
        return Err(TestbedError::Command { command, code: out.status.code(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Loads an nft script inside namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<(), TestbedError> {
    run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(script)).map(|_| ())
}

/// The X of every 10.213.X.* address in the root namespace (another bed's or anybody's: never reused).
fn used_subnets() -> Result<HashSet<u8>, TestbedError> {
    let out = run("ip", &["-4", "-o", "addr", "show"])?;
    Ok(out
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("10.213."))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect())
}

fn netns_pids(ns: &str) -> Result<Vec<u32>, TestbedError> {
    let out = run("ip", &["netns", "pids", ns])?;
    Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

/// SIGKILLs whatever still runs in `ns` (so the namespace really goes away when it is deleted).
fn kill_netns_processes(ns: &str) {
    if let Ok(pids) = netns_pids(ns)
        && !pids.is_empty()
    {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut args = vec!["-KILL"];
        args.extend(pids.iter().map(String::as_str));
        let _ = run("kill", &args);
    }
}

/// The pid in a bed id `tdm-<pid>-<n>…`, if `name` is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    Some(pid)
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the namespaces and root-namespace links of beds whose process is gone (a killed test run); beds of
/// live processes, including concurrent test binaries, are left alone. Best effort: never fails.
pub fn sweep_stale() {
    let me = std::process::id();
    let stale = |name: &str| owner_pid(name).is_some_and(|pid| pid != me && !process_alive(pid));
    if let Ok(out) = run("ip", &["-o", "link", "show"]) {
        // "5: tdm7h@if3: <…> … \    alias tdm-123-0"
        for line in out.lines() {
            let name = line.split(": ").nth(1).and_then(|n| n.split('@').next()).unwrap_or_default();
            let alias = line.split("alias ").nth(1).map(str::trim).unwrap_or_default();
            if name.starts_with(PREFIX) && stale(alias) {
                let _ = run("ip", &["link", "del", "dev", name]);
            }
        }
    }
    if let Ok(out) = run("ip", &["netns", "list"]) {
        for name in out.lines().filter_map(|l| l.split_whitespace().next()) {
            if stale(name) {
                kill_netns_processes(name);
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bed_without_kernel(nodes: usize) -> Testbed {
        Testbed {
            id: "tdm-1-0".into(),
            subnet: 7,
            nodes,
            namespaces: Vec::new(),
            host_link: None,
            faults: Mutex::new(vec![NodeFaults::default(); nodes]),
        }
    }

    #[test]
    fn owner_pid_recognises_only_bed_names() {
        assert_eq!(owner_pid("tdm-123-4-n0"), Some(123));
        assert_eq!(owner_pid("tdm-123-4"), Some(123));
        assert_eq!(owner_pid("tdm-x-4-n0"), None);
        assert_eq!(owner_pid("tdm-123"), None);
        assert_eq!(owner_pid("other-123-4"), None);
    }

    #[test]
    fn render_without_faults_only_deletes_the_table() {
        let bed = bed_without_kernel(2);
        let script = bed.render(&NodeFaults::default());
        assert_eq!(script, "table inet tandem_faults\ndelete table inet tandem_faults\n");
    }

    #[test]
    fn render_full_loss_has_no_numgen() {
        let bed = bed_without_kernel(2);
        let faults = NodeFaults { loss: Some((100, Some(5000))), ..NodeFaults::default() };
        let script = bed.render(&faults);
        assert!(script.contains("iifname \"eth0\" udp dport 5000 drop"), "{script}");
        assert!(!script.contains("numgen"), "{script}");
    }

    #[test]
    fn render_cut_drops_peer_both_ways_and_keeps_loopback() {
        let bed = bed_without_kernel(3);
        let faults = NodeFaults { cut_from: BTreeSet::from([2]), ..NodeFaults::default() };
        let script = bed.render(&faults);
        assert!(script.contains("ip saddr 10.213.7.12 drop"), "{script}");
        assert!(script.contains("ip daddr 10.213.7.12 drop"), "{script}");
        assert!(script.contains("iifname \"lo\" accept"), "{script}");
    }
}
