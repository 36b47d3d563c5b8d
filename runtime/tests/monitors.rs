//! The monitor checks against real sockets, processes and a moto server (pinned venv from
//! tests/support/moto-venv.sh), and one monitor end to end through the runner.

#[path = "support/moto.rs"]
mod moto;

use moto::Moto;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use tandem_runtime::config::{HostPort, Monitor, MonitorKind, Node, RecoveryTarget};
use tandem_runtime::monitors::runner::{self, Recovery};
use tandem_runtime::monitors::{Check, Outcome, build};
use tokio::sync::{mpsc, watch};

fn node(zone: &str) -> Node {
    Node::new("a", Ipv4Addr::new(10, 0, 0, 1), zone)
}

fn check_of(kind: MonitorKind) -> Box<dyn Check> {
    let mut monitor = Monitor::new("m", kind);
    monitor.settings.timeout = Duration::from_secs(2);
    build(&monitor, &node("us-east-1a"), None, None).expect("build")
}

fn tcp(port: u16) -> MonitorKind {
    MonitorKind::Tcp { address: HostPort { host: "127.0.0.1".into(), port } }
}

/// A loopback port nobody listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn tcp_listening_port_is_ok() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    assert_eq!(check_of(tcp(port)).check().await, Outcome::Ok);
}

#[tokio::test]
async fn tcp_closed_port_is_an_error() {
    let outcome = check_of(tcp(closed_port().await)).check().await;
    assert_eq!((outcome.name(), outcome.code()), ("error", Some("TDM-MON-012")), "{outcome}");
}

fn ip(targets: Vec<Ipv4Addr>) -> MonitorKind {
    MonitorKind::Ip { targets, per_node: BTreeMap::new() }
}

/// The limited broadcast address: an echo to it is refused locally (no SO_BROADCAST), on any network.
const SILENT: Ipv4Addr = Ipv4Addr::BROADCAST;

#[tokio::test]
async fn ip_loopback_is_ok() {
    assert_eq!(check_of(ip(vec![Ipv4Addr::LOCALHOST])).check().await, Outcome::Ok);
}

#[tokio::test]
async fn ip_some_targets_silent_is_a_warning_and_all_silent_an_error() {
    let outcome = check_of(ip(vec![Ipv4Addr::LOCALHOST, SILENT])).check().await;
    assert_eq!(outcome.name(), "warn", "{outcome}");
    assert!(outcome.message().contains("1 of 2") && outcome.message().contains("255.255.255.255"), "{outcome}");
    let outcome = check_of(ip(vec![SILENT])).check().await;
    assert_eq!((outcome.name(), outcome.code()), ("error", Some("TDM-MON-013")), "{outcome}");
}

#[tokio::test]
async fn ip_per_node_targets_replace_the_common_list() {
    let kind =
        MonitorKind::Ip { targets: vec![SILENT], per_node: BTreeMap::from([("a".into(), vec![Ipv4Addr::LOCALHOST])]) };
    assert_eq!(check_of(kind).check().await, Outcome::Ok);
}

fn custom(command: &str) -> MonitorKind {
    MonitorKind::Custom { command: command.into(), env: BTreeMap::from([("WHO".into(), "tandem".into())]) }
}

#[tokio::test]
async fn custom_exit_zero_is_ok_and_exit_one_an_error_with_output() {
    assert_eq!(check_of(custom("test \"$WHO\" = tandem")).check().await, Outcome::Ok);
    let outcome = check_of(custom("echo disk full >&2; exit 1")).check().await;
    assert_eq!((outcome.name(), outcome.code()), ("error", Some("TDM-MON-015")), "{outcome}");
    assert!(outcome.message().contains("status 1; last output: disk full"), "{outcome}");
}

#[tokio::test]
async fn failing_tcp_monitor_requests_recovery_of_its_target() {
    let mut monitor = Monitor::new("port", tcp(closed_port().await));
    monitor.settings.interval = Duration::from_millis(50);
    monitor.settings.timeout = Duration::from_secs(2);
    monitor.settings.retries = 1;
    let check = build(&monitor, &node("us-east-1a"), None, None).expect("build");
    let (_active_tx, active) = watch::channel(true);
    let (tx, mut rx) = mpsc::channel(4);
    let handle = runner::spawn("port", check, monitor.settings, RecoveryTarget::Group("g".into()), active, tx);
    let request = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("a request").expect("open");
    assert_eq!(request.recovery, Recovery::Failover { group: "g".into() });
    assert_eq!((request.code, request.failures, request.kind), ("TDM-MON-012", 2, "tcp"));
    assert_eq!(handle.state().recoveries, 1);
}

async fn ec2(endpoint: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&moto::sdk_config(endpoint, Duration::from_secs(5)).await)
}

async fn az_outcome(client: &aws_sdk_ec2::Client, zone: &str) -> Outcome {
    let check = build(&Monitor::new("az", MonitorKind::AwsAz), &node(zone), Some(client), None).expect("build");
    assert!(check.calls_aws());
    check.check().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_az_against_moto() {
    let moto = Moto::start();
    let client = ec2(&moto.endpoint()).await;
    assert_eq!(az_outcome(&client, "us-east-1a").await, Outcome::Ok);
    let bogus = az_outcome(&client, "us-east-1z").await;
    assert_eq!((bogus.name(), bogus.code()), ("error", Some("TDM-MON-021")), "{bogus}");
    assert!(bogus.message().contains("us-east-1z"), "{bogus}");
}

#[tokio::test]
async fn aws_az_with_an_unreachable_endpoint_is_unknown() {
    let client = ec2(&format!("http://127.0.0.1:{}", closed_port().await)).await;
    let outcome = az_outcome(&client, "us-east-1a").await;
    assert_eq!((outcome.name(), outcome.code()), ("unknown", Some("TDM-MON-022")), "{outcome}");
}

/// Answers one EC2 request with `xml`, after reading the whole request.
async fn serve_ec2_once(xml: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let Ok(n) = stream.read(&mut chunk).await else { return };
            if n == 0 {
                return;
            }
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
    });
    port
}

#[tokio::test]
async fn aws_az_impaired_zone_is_an_error_quoting_aws() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeAvailabilityZonesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <availabilityZoneInfo>
    <item>
      <zoneName>us-east-1a</zoneName>
      <zoneState>impaired</zoneState>
      <regionName>us-east-1</regionName>
      <messageSet><item><message>power event</message></item></messageSet>
    </item>
  </availabilityZoneInfo>
</DescribeAvailabilityZonesResponse>"#;
    let port = serve_ec2_once(xml).await;
    let client = ec2(&format!("http://127.0.0.1:{port}")).await;
    let outcome = az_outcome(&client, "us-east-1a").await;
    assert_eq!((outcome.name(), outcome.code()), ("error", Some("TDM-MON-020")), "{outcome}");
    assert!(outcome.message().contains("is impaired") && outcome.message().contains("power event"), "{outcome}");
}
