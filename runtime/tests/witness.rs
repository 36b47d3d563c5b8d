//! NP-resolution witnesses against servers on 127.0.0.1 (no traffic leaves the loopback interface).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tandem_runtime::config::monitor::HostPort;
use tandem_runtime::config::np::{NpProbe, NpResolution, NpTarget};
use tandem_runtime::membership::witness::{Verdict, Witnesses};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

fn np(timeout: Duration, probes: Vec<NpProbe>) -> NpResolution {
    NpResolution {
        timeout,
        targets: probes.into_iter().map(|probe| NpTarget { probe, nodes: Vec::new() }).collect(),
        ..NpResolution::default()
    }
}

fn tcp(addr: SocketAddr) -> NpProbe {
    NpProbe::Tcp { address: HostPort { host: addr.ip().to_string(), port: addr.port() } }
}

fn http(addr: SocketAddr, path: &str) -> NpProbe {
    NpProbe::Http { url: format!("http://{addr}{path}") }
}

async fn check(np: &NpResolution) -> Verdict {
    Witnesses::from_config(np, "a").check().await
}

/// The failure reasons of an `Isolated` verdict; panics on any other verdict.
fn reasons(verdict: Verdict) -> Vec<String> {
    match verdict {
        Verdict::Isolated { failures } => failures.into_iter().map(|(_, why)| why).collect(),
        other => panic!("expected Isolated, got {other:?}"),
    }
}

async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.expect("read the request");
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    request
}

/// An HTTP server answering one request with `answer`; the request it received arrives on the channel.
async fn serve_once(answer: &'static [u8]) -> (SocketAddr, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let request = read_request(&mut stream).await;
        // The client may hang up before reading everything (the flood test): not an error here.
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
        let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
    });
    (addr, rx)
}

/// A server that accepts, reads the request and never answers (a blackholed witness, on loopback).
async fn serve_silence() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            read_request(&mut stream).await;
            held.push(stream);
        }
    });
    addr
}

async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    addr
}

#[tokio::test]
async fn no_witness_for_this_node_gives_no_witness() {
    let mut np = np(Duration::from_secs(1), vec![tcp(closed_port().await)]);
    np.targets[0].nodes = vec!["b".into()];
    let w = Witnesses::from_config(&np, "a");
    assert!(w.is_empty());
    assert_eq!(w.check().await, Verdict::NoWitness);
    assert!(!Witnesses::from_config(&np, "b").is_empty());
}

#[tokio::test]
async fn tcp_witness_listening_is_reachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let verdict = check(&np(Duration::from_secs(5), vec![tcp(addr)])).await;
    assert_eq!(verdict, Verdict::Reachable { witness: format!("tcp {addr}") });
}

#[tokio::test]
async fn tcp_witness_on_closed_port_is_refused() {
    let addr = closed_port().await;
    let why = reasons(check(&np(Duration::from_secs(5), vec![tcp(addr)])).await);
    assert_eq!(why.len(), 1);
    assert!(why[0].starts_with("TDM-NP-001: "), "{why:?}");
    assert!(why[0].contains("refused"), "{why:?}");
}

#[tokio::test]
async fn http_witness_answering_200_is_reachable_and_gets_a_head_request() {
    let (addr, request) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let verdict = check(&np(Duration::from_secs(5), vec![http(addr, "/health?x=1")])).await;
    assert_eq!(verdict, Verdict::Reachable { witness: format!("http http://{addr}/health?x=1") });
    let request = request.await.unwrap();
    assert!(request.starts_with("HEAD /health?x=1 HTTP/1.1\r\n"), "{request:?}");
    assert!(request.contains(&format!("\r\nHost: {addr}\r\n")), "{request:?}");
    assert!(request.contains("\r\nConnection: close\r\n"), "{request:?}");
}

#[tokio::test]
async fn http_witness_answering_503_is_a_failure_naming_the_status() {
    let (addr, _request) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
    let why = reasons(check(&np(Duration::from_secs(5), vec![http(addr, "/")])).await);
    assert!(why[0].starts_with("TDM-NP-003: "), "{why:?}");
    assert!(why[0].contains("503"), "{why:?}");
}

#[tokio::test]
async fn http_witness_answering_garbage_is_malformed() {
    let (addr, _request) = serve_once(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    let why = reasons(check(&np(Duration::from_secs(5), vec![http(addr, "/")])).await);
    assert!(why[0].starts_with("TDM-NP-004: "), "{why:?}");
}

#[tokio::test]
async fn http_witness_closing_without_status_line_is_malformed() {
    let (addr, _request) = serve_once(b"HTTP/1.1 200").await;
    let why = reasons(check(&np(Duration::from_secs(5), vec![http(addr, "/")])).await);
    assert!(why[0].starts_with("TDM-NP-004: "), "{why:?}");
}

#[tokio::test]
async fn http_witness_flooding_without_newline_is_malformed() {
    static FLOOD: [u8; 20_000] = [b'x'; 20_000];
    let (addr, _request) = serve_once(&FLOOD).await;
    let why = reasons(check(&np(Duration::from_secs(5), vec![http(addr, "/")])).await);
    assert!(why[0].starts_with("TDM-NP-004: "), "{why:?}");
    assert!(why[0].contains("8192"), "{why:?}");
}

#[tokio::test]
async fn https_witness_is_reported_as_unsupported() {
    let probe = NpProbe::Http { url: "https://127.0.0.1:1/".into() };
    let why = reasons(check(&np(Duration::from_secs(5), vec![probe])).await);
    assert!(why[0].starts_with("TDM-NP-007: "), "{why:?}");
    assert!(why[0].contains("not supported"), "{why:?}");
}

#[tokio::test]
async fn silent_witness_times_out_after_the_configured_timeout() {
    let addr = serve_silence().await;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let why = reasons(check(&np(timeout, vec![http(addr, "/")])).await);
    let took = started.elapsed();
    assert!(why[0].starts_with("TDM-NP-002: "), "{why:?}");
    assert!(took >= timeout, "gave up after {took:?}");
    assert!(took < timeout + Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn one_good_witness_is_enough_and_the_dead_one_is_not_awaited() {
    let dead = serve_silence().await;
    let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good_addr = good.local_addr().unwrap();
    let timeout = Duration::from_secs(60);
    let started = Instant::now();
    let verdict = check(&np(timeout, vec![http(dead, "/"), tcp(good_addr)])).await;
    assert_eq!(verdict, Verdict::Reachable { witness: format!("tcp {good_addr}") });
    assert!(started.elapsed() < Duration::from_secs(20), "waited {:?} for the dead witness", started.elapsed());
}

#[tokio::test]
async fn every_failure_is_reported_in_declaration_order() {
    let closed = closed_port().await;
    let (bad, _request) = serve_once(b"HTTP/1.1 500 Oops\r\n\r\n").await;
    let np = np(Duration::from_secs(5), vec![http(bad, "/"), tcp(closed)]);
    let Verdict::Isolated { failures } = check(&np).await else { panic!("expected Isolated") };
    let witnesses: Vec<&str> = failures.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(witnesses, vec![format!("http http://{bad}/"), format!("tcp {closed}")]);
    assert!(failures[0].1.starts_with("TDM-NP-003: ") && failures[1].1.starts_with("TDM-NP-001: "), "{failures:?}");
}

/// We run as root: the ICMP socket must open. A failure to open it fails this test; it is not skipped.
#[tokio::test]
async fn ping_of_loopback_is_reachable() {
    let probe = NpProbe::Ping { address: Ipv4Addr::LOCALHOST };
    let verdict = check(&np(Duration::from_secs(5), vec![probe])).await;
    assert_eq!(verdict, Verdict::Reachable { witness: "ping 127.0.0.1".into() });
}
