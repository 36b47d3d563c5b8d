//! Provider benchmarks (run by hand, not in CI; see docs/benchmarks.md):
//!   cargo build --release -p terraform-provider-tandem && \
//!   cargo run --release -p tandem-tests --bin bench_provider -- [RUNS]
//!   cargo run --release -p tandem-tests --bin bench_provider -- scale 1 10 50   # N subnets + N route tables
//!   cargo run --release -p tandem-tests --bin bench_provider -- examples 3      # the HA topology examples
//! Figures: start → handshake line, GetProviderSchema (in process, incl. protobuf encoding), wall time of
//! init/apply/plan/destroy of terraform-examples/network against moto, peak RSS of provider processes during
//! apply, release binary size.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use tandem_proto::tfplugin6 as pb;
use tandem_proto::tfplugin6::provider_server::Provider;
use tandem_provider::server::TandemProvider;
use tandem_tests::{Env, workspace_root};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "| {name} | {:.3} ms | {:.3} ms | {:.3} ms | {} |",
        v[0].as_secs_f64() * 1e3,
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.len()
    );
}

/// A client certificate like Terraform's: self-signed ECDSA P-521/SHA-512, CA flag, SAN localhost.
fn terraform_like_client_cert() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).expect("P-521 key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("self-signed").pem()
}

fn handshake_times(bin: &PathBuf, runs: usize) -> Vec<Duration> {
    let cert = terraform_like_client_cert();
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut child = Command::new(bin)
                .env("TF_PLUGIN_MAGIC_COOKIE", "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2")
                .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
                .env("PLUGIN_MIN_PORT", "10000")
                .env("PLUGIN_MAX_PORT", "25000")
                .env("PLUGIN_CLIENT_CERT", &cert)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn provider");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("handshake line");
            let took = start.elapsed();
            assert!(line.starts_with("1|6|"), "unexpected handshake line {line:?}");
            let _ = child.kill();
            let _ = child.wait();
            took
        })
        .collect()
}

fn schema_times(runs: usize) -> (Vec<Duration>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let provider = TandemProvider::new();
    let mut size = 0;
    let times = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let resp = rt
                .block_on(provider.get_provider_schema(tonic::Request::new(pb::get_provider_schema::Request {})))
                .expect("schema")
                .into_inner();
            size = resp.encode_to_vec().len();
            start.elapsed()
        })
        .collect();
    (times, size)
}

/// Peak resident set (VmHWM) over all provider processes seen while `running` is true, in KiB.
fn watch_provider_rss(running: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    while running.load(Ordering::Relaxed) {
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if !comm.starts_with("terraform-provi") {
                    continue;
                }
                let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// moto builds a region's EC2 backend (default VPC, AMI and instance-type catalogues) on the first EC2 call,
/// which takes about a second; do that before timing, so the figures are the provider's and Terraform's.
fn warm_env() -> Env {
    let env = Env::start();
    env.block_on(async { env.ec2.describe_availability_zones().send().await.expect("warm-up call") });
    env
}

/// A VPC with `n` subnets, each with its own route table and association: how apply/plan/destroy grow.
fn scale_config(n: usize) -> String {
    format!(
        r#"{}
resource "tandem_vpc" "v" {{
  cidr_block = "10.0.0.0/16"
}}

resource "tandem_subnet" "s" {{
  count      = {n}
  vpc_id     = tandem_vpc.v.id
  cidr_block = cidrsubnet("10.0.0.0/16", 8, count.index)
}}

resource "tandem_route_table" "r" {{
  count  = {n}
  vpc_id = tandem_vpc.v.id
}}

resource "tandem_route_table_association" "a" {{
  count          = {n}
  subnet_id      = tandem_subnet.s[count.index].id
  route_table_id = tandem_route_table.r[count.index].id
}}
"#,
        tandem_tests::terraform::provider_block()
    )
}

fn scale(sizes: &[usize]) {
    println!("| N | resources | apply | plan | destroy |\n|---|---|---|---|---|");
    for &n in sizes {
        let env = warm_env();
        let wd = env.workdir(&format!("scale{n}"), &scale_config(n));
        wd.init();
        let timed = |args: &[&str]| {
            let s = Instant::now();
            wd.ok(args);
            s.elapsed().as_secs_f64()
        };
        let apply = timed(&["apply", "-auto-approve", "-input=false", "-no-color"]);
        let plan = timed(&["plan", "-input=false", "-no-color"]);
        let destroy = timed(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
        println!("| {n} | {} | {apply:.2} s | {plan:.2} s | {destroy:.2} s |", 3 * n + 1);
    }
}

/// Wall time of init/apply/plan/destroy of each HA topology example (all its resources) against moto.
fn examples(runs: usize) {
    println!("| example | resources | init | apply | plan | destroy |\n|---|---|---|---|---|---|");
    for example in ["vip-cluster", "eip-cluster", "dns-cluster"] {
        let mut walls: [Vec<f64>; 4] = Default::default();
        let mut resources = 0;
        for _ in 0..runs {
            let env = warm_env();
            let wd = env.example_workdir(example, "ami_name = \"amzn2-ami-hvm-*-x86_64-gp2\"\n");
            let timed = |args: &[&str]| {
                let s = Instant::now();
                let out = wd.ok(args);
                (s.elapsed().as_secs_f64(), out.stdout)
            };
            walls[0].push(timed(&["init", "-input=false", "-no-color"]).0);
            let (apply, out) = timed(&["apply", "-auto-approve", "-input=false", "-no-color"]);
            walls[1].push(apply);
            resources = out
                .lines()
                .find_map(|l| l.strip_prefix("Apply complete! Resources: "))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            walls[2].push(timed(&["plan", "-input=false", "-no-color"]).0);
            walls[3].push(timed(&["destroy", "-auto-approve", "-input=false", "-no-color"]).0);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let [mut i, mut a, mut p, mut d] = walls;
        println!(
            "| {example} | {resources} | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            median(&mut i),
            median(&mut a),
            median(&mut p),
            median(&mut d)
        );
    }
}

fn main() {
    let target =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    let bin = target.join("release/terraform-provider-tandem");
    assert!(bin.exists(), "build it first: cargo build --release -p terraform-provider-tandem ({})", bin.display());
    assert!(tandem_tests::provider::use_provider_binary(bin.clone()), "the harness had chosen a binary already");
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("examples") {
        return examples(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3));
    }
    if args.first().map(String::as_str) == Some("scale") {
        let sizes: Vec<usize> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
        return scale(if sizes.is_empty() { &[1, 10, 50] } else { &sizes });
    }
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let size = std::fs::metadata(&bin).expect("binary").len();

    println!("## terraform-provider-tandem, release build\n");
    println!("binary: {:.1} MB ({size} bytes)\n", size as f64 / 1e6);
    println!("| measure | min | median | p99 | runs |\n|---|---|---|---|---|");
    summary("start → handshake line", handshake_times(&bin, runs.max(20) * 4));
    let (times, schema_bytes) = schema_times(2000);
    summary(&format!("GetProviderSchema in process ({schema_bytes} B encoded)"), times);

    let example =
        std::fs::read_to_string(workspace_root().join("terraform-examples/network/main.tf")).expect("example");
    let mut walls: [Vec<Duration>; 4] = Default::default();
    let mut peak_kib = 0;
    for i in 0..runs {
        let env = warm_env();
        let wd = env.workdir(&format!("net{i}"), &example);
        let timed = |args: &[&str]| {
            let s = Instant::now();
            wd.ok(args);
            s.elapsed()
        };
        walls[0].push(timed(&["init", "-input=false", "-no-color"]));
        let running = Arc::new(AtomicBool::new(true));
        let peak = Arc::new(AtomicU64::new(0));
        let watcher = {
            let (r, p) = (running.clone(), peak.clone());
            std::thread::spawn(move || watch_provider_rss(r, p))
        };
        walls[1].push(timed(&["apply", "-auto-approve", "-input=false", "-no-color"]));
        running.store(false, Ordering::Relaxed);
        let _ = watcher.join();
        peak_kib = peak_kib.max(peak.load(Ordering::Relaxed));
        walls[2].push(timed(&["plan", "-input=false", "-no-color"]));
        walls[3].push(timed(&["destroy", "-auto-approve", "-input=false", "-no-color"]));
        assert!(env.non_default_vpcs().is_empty());
    }
    for (name, v) in ["init", "apply", "plan", "destroy"].iter().zip(walls) {
        summary(&format!("terraform {name}, network example (4 resources + 1 data source)"), v);
    }
    println!("\npeak RSS of a provider process during apply: {:.1} MB", peak_kib as f64 / 1024.0);
}
