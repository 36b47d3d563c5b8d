//! Failover benchmark and soak, run by hand (not in CI; needs root for the namespaces):
//!
//! ```text
//! cargo run -p tandem-tests --bin bench_failover -- runs 20      # SIGKILL of the active, N times
//! cargo run -p tandem-tests --bin bench_failover -- runs 20 fenced   # … with a fencer per node and the app in a cgroup
//! cargo run -p tandem-tests --bin bench_failover -- soak 600     # default timing, 30 % loss + CPU hog, N seconds
//! cargo run -p tandem-tests --bin bench_failover -- soak 600 fast   # the same at 100 ms / 500 ms, ttl 1 s
//! cargo run -p tandem-tests --bin bench_failover -- aws vip 20   # terraform-examples/vip-cluster, SIGKILL N times
//! cargo run -p tandem-tests --bin bench_failover -- aws eip 20   # … eip-cluster
//! cargo run -p tandem-tests --bin bench_failover -- aws dns 20   # … dns-cluster
//! ```
//! `runs`: interval 100 ms / timeout 500 ms, lease ttl 1 s / renew 200 ms. For each run: time from SIGKILL of the
//! active's process tree to the standby's `exec` start (journal timestamps), split into detection (kill → the
//! standby declares the peer down) and takeover (peer down → resource started, as the standby measured it).
//! `soak`: counts false failovers (starts on another node) and checks the journal for overlaps.
//! `aws`: the example applied against moto, its rendered configs at 100 ms / 500 ms, ttl 1 s / renew 200 ms
//! ([`tandem_tests::topology`]). For each run: time from SIGKILL of the active to the service address (every VIP
//! route / the EIP / the A record) pointing at the standby, as read from moto, split into detection (kill → the
//! standby's "peer down" event), lease (→ the standby's first EC2 / Route 53 call: the dead holder's lease runs
//! out) and AWS (first call → address observed at the standby); and the AWS calls the standby made (proxy log).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use tandem_tests::aws_proxy::Service;
use tandem_tests::cluster::{Cluster, HEARTBEAT_PORT, Options, name};
use tandem_tests::journal;
use tandem_tests::topology::{AwsState, Example, ExampleCluster, Tuning};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(label: &str, v: &mut [f64]) {
    v.sort_by(f64::total_cmp);
    println!(
        "{label:<10} median {:>7.1} ms  p99 {:>7.1} ms  min {:>7.1} ms  max {:>7.1} ms  (n = {})",
        pct(v, 50.0),
        pct(v, 99.0),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    );
}

fn runs(n: usize, fenced: bool) -> Result<()> {
    // fenced: the app in a cgroup per node and a fencer per node, as the rendered units run them.
    let mut c = Cluster::start(Options { fenced_app: fenced, ..Options::default() })?;
    let (mut total, mut detect, mut takeover) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=n {
        let a = c.active()?;
        let b = 1 - a;
        let before = c.starts(b)?;
        let t0 = SystemTime::now();
        c.kill_node(a);
        tandem_tests::nodes::wait_until(Duration::from_secs(20), "failover", || c.starts(b).is_ok_and(|s| s > before))?;
        let text = std::fs::read_to_string(&c.journal)?;
        let started = journal::parse(&text)?
            .iter()
            .filter(|e| e.node == name(b) && e.kind == journal::Kind::Start)
            .map(|e| e.nanos)
            .max()
            .ok_or("no start")?;
        let ms = (started.saturating_sub(nanos(t0))) as f64 / 1e6;
        // The runner records the takeover time just after the resource started: wait for the active role.
        tandem_tests::nodes::wait_until(Duration::from_secs(5), "active role", || {
            c.role(b).is_ok_and(|r| r == "active")
        })?;
        let status = c.status(b)?;
        let take = status["groups"][0]["last_takeover_ms"].as_f64().unwrap_or(f64::NAN);
        println!("run {run:>2}: {} -> {}: {ms:7.1} ms (takeover after detection {take:.0} ms)", name(a), name(b));
        if take < 1.0 {
            // Not a takeover after a loss (e.g. the lease was free): show why.
            let out = c.ctl(b, &["events", "--limit", "12"])?;
            println!("{}", String::from_utf8_lossy(&out.stdout));
        }
        total.push(ms);
        takeover.push(take);
        detect.push(ms - take);
        c.start_node(a)?;
        std::thread::sleep(Duration::from_secs(3));
    }
    c.assert_no_overlap();
    println!();
    summary("total", &mut total);
    summary("detection", &mut detect);
    summary("takeover", &mut takeover);
    Ok(())
}

fn soak(seconds: u64, fast: bool) -> Result<()> {
    let opts = if fast {
        Options::default()
    } else {
        Options { interval: "1s", timeout: "5s", ttl: "5s", renew: "1s", ..Options::default() }
    };
    let c = Cluster::start(opts)?;
    let a = c.active()?;
    c.bed.loss(0, 30, Some(HEARTBEAT_PORT))?;
    c.bed.loss(1, 30, Some(HEARTBEAT_PORT))?;
    let mut hog = c.cpu_hog(a)?;
    let timing = if fast { "fast timing (100 ms / 500 ms, ttl 1 s)" } else { "default timing (1 s / 5 s, ttl 5 s)" };
    println!("soak: {seconds} s, {timing}, 30 % heartbeat loss both ways, 8 busy loops on the active {}", name(a));
    std::thread::sleep(Duration::from_secs(seconds));
    hog.kill();
    c.bed.heal_all()?;
    let false_failovers = c.starts(1 - a)?;
    let restarts = c.starts(a)? - 1;
    let s = c.status(1 - a)?;
    let link = &s["nodes"][a]["links"][0];
    println!(
        "false failovers: {false_failovers}; restarts on the active: {restarts}; heartbeats received by the standby: {}, dropped {}",
        link["received"], link["malformed"]
    );
    c.assert_no_overlap();
    Ok(())
}

fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map(|d| d.as_secs_f64() * 1e3).unwrap_or_else(|e| -e.duration().as_secs_f64() * 1e3)
}

/// The unix time of node i's first event of `kind` whose message contains `text`, after `after`.
fn event_time(c: &ExampleCluster, i: usize, kind: &str, text: &str, after: SystemTime) -> Result<SystemTime> {
    let after_ms = nanos(after) / 1_000_000;
    let e = c
        .events_matching(i, kind, text)?
        .into_iter()
        .find(|e| u128::from(e["unix_ms"].as_u64().unwrap_or(0)) >= after_ms)
        .ok_or_else(|| format!("{}: no {kind} event with {text:?} after the kill", c.names[i]))?;
    Ok(UNIX_EPOCH + Duration::from_millis(e["unix_ms"].as_u64().unwrap_or(0)))
}

fn aws(example: Example, n: usize) -> Result<()> {
    let mut c = ExampleCluster::apply(example, Tuning { fast: true, monitor: None })?;
    println!("{}: applied; nodes {:?}, ENIs {:?}", example.dir(), c.names, c.enis);
    let (mut total, mut detect, mut lease, mut calls_ms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut call_sets: BTreeMap<String, usize> = BTreeMap::new();
    for run in 1..=n {
        let a = c.running()?.first().and_then(|n| c.names.iter().position(|x| x == n)).ok_or("nothing runs")?;
        let b = 1 - a;
        c.proxy.reset_calls();
        let killed = c.kill_node(a).ok_or("active not running")?;
        // Poll moto as fast as it answers: the observed instant is at most one Describe late.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let observed = loop {
            if c.aws_state()? == AwsState::Node(b) {
                break SystemTime::now();
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("run {run}: the address did not move in 20 s\n{}", c.logs()).into());
            }
        };
        let down = event_time(&c, b, "peer", "-> down", killed)?;
        let node_b = std::net::IpAddr::V4(c.bed.node_addr(b));
        let aws_calls: Vec<_> = c
            .proxy
            .calls()
            .into_iter()
            .filter(|x| x.client == node_b && x.at >= killed && x.at <= observed && x.service != Service::DynamoDb)
            .collect();
        // The failover's own calls end with its last write; a monitor's first check may follow before we looked.
        const WRITES: [&str; 4] = ["ReplaceRoute", "CreateRoute", "AssociateAddress", "ChangeResourceRecordSets"];
        let last_write = aws_calls.iter().rposition(|x| WRITES.contains(&x.operation.as_str()));
        let aws_calls = &aws_calls[..last_write.map_or(aws_calls.len(), |i| i + 1)];
        let first = aws_calls.first().map(|x| x.at).ok_or("no AWS call from the standby")?;
        let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
        for x in aws_calls {
            *ops.entry(x.operation.as_str()).or_default() += 1;
        }
        let ops = ops.iter().map(|(k, v)| format!("{k}×{v}")).collect::<Vec<_>>().join(" ");
        let (t, d, l, w) = (
            ms_between(killed, observed),
            ms_between(killed, down),
            ms_between(down, first),
            ms_between(first, observed),
        );
        println!(
            "run {run:>2}: {} -> {}: {t:7.1} ms  (detection {d:6.1}, lease {l:6.1}, AWS {w:6.1})  {ops}",
            c.names[a], c.names[b]
        );
        total.push(t);
        detect.push(d);
        lease.push(l);
        calls_ms.push(w);
        *call_sets.entry(ops).or_default() += 1;
        c.wait_active(b, Duration::from_secs(10))?;
        c.start_node(a)?;
        c.wait_role(a, "standby", Duration::from_secs(20))?;
        std::thread::sleep(Duration::from_secs(2));
    }
    c.assert_no_overlap();
    println!();
    summary("total", &mut total);
    summary("detection", &mut detect);
    summary("lease", &mut lease);
    summary("AWS", &mut calls_ms);
    for (ops, count) in call_sets {
        println!("AWS calls of the standby, {count} run(s): {ops}");
    }
    c.destroy()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["runs", n] => runs(n.parse()?, false),
        ["runs", n, "fenced"] => runs(n.parse()?, true),
        ["soak", s] => soak(s.parse()?, false),
        ["soak", s, "fast"] => soak(s.parse()?, true),
        ["aws", kind, n] => {
            let example = match *kind {
                "vip" => Example::Vip,
                "eip" => Example::Eip,
                "dns" => Example::Dns,
                other => return Err(format!("unknown topology {other}: vip, eip or dns").into()),
            };
            aws(example, n.parse()?)
        }
        [] => runs(20, false),
        _ => Err("usage: bench_failover [runs N [fenced] | soak SECONDS [fast] | aws vip|eip|dns N]".into()),
    }
}
