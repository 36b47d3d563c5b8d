//! NP-resolution witnesses: how a node that lost its peer finds out whether *it* is the isolated one.
//!
//! [`Witnesses::from_config`] takes the witnesses of `np_resolution { }` that apply to this node;
//! [`Witnesses::check`] probes all of them in parallel, each bounded by `np_resolution.timeout`, and answers
//! [`Verdict::Reachable`] as soon as any one answers (without waiting for the slow ones), or
//! [`Verdict::Isolated`] with every witness's failure once all of them have failed.
//!
//! Probes:
//! - `tcp`: resolve the host, connect (any resolved address will do);
//! - `http`: `HEAD` over HTTP/1.1 (plain `http://` only), the answer's status must be 200;
//! - `ping`: one ICMP echo, through an unprivileged ICMP datagram socket or, failing that, a raw socket.
//!
//! Every failure carries a stable code (`TDM-NP-0NN`, see [`WitnessError::code`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::config::monitor::HostPort;
use crate::config::np::{NpProbe, NpResolution};

/// Most bytes of an HTTP answer read while looking for its status line.
pub const MAX_HTTP_HEAD: usize = 8 * 1024;

/// Why one witness did not answer; `code()` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("{target} is unreachable: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("{target} did not answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("{target} answered HTTP status {status} (expected 200)")]
    BadStatus { target: String, status: u16 },
    #[error("{target} sent a malformed HTTP answer: {detail}")]
    MalformedHttp { target: String, detail: String },
    #[error("cannot open an ICMP socket to ping {target}: {detail}")]
    IcmpSocket { target: String, detail: String },
    #[error("cannot resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    #[error("{url}: https witnesses are not supported yet; use an http:// URL, or a tcp witness on port 443")]
    HttpsUnsupported { url: String },
    #[error("{url} is not a usable http:// URL: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("probe of {target} ended abnormally")]
    Internal { target: String },
}

impl WitnessError {
    pub fn code(&self) -> &'static str {
        match self {
            WitnessError::Unreachable { .. } => "TDM-NP-001",
            WitnessError::Timeout { .. } => "TDM-NP-002",
            WitnessError::BadStatus { .. } => "TDM-NP-003",
            WitnessError::MalformedHttp { .. } => "TDM-NP-004",
            WitnessError::IcmpSocket { .. } => "TDM-NP-005",
            WitnessError::Resolve { .. } => "TDM-NP-006",
            WitnessError::HttpsUnsupported { .. } => "TDM-NP-007",
            WitnessError::BadUrl { .. } => "TDM-NP-008",
            WitnessError::Internal { .. } => "TDM-NP-009",
        }
    }

    /// `"<code>: <message>"`, the reason reported in [`Verdict::Isolated`].
    pub fn reason(&self) -> String {
        format!("{}: {self}", self.code())
    }
}

/// The outcome of one round of probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No witness applies to this node: only the lease decides.
    NoWitness,
    /// At least this witness answered: the node is not isolated.
    Reachable { witness: String },
    /// Every witness failed: `(witness, "<code>: <reason>")`, in declaration order.
    Isolated { failures: Vec<(String, String)> },
}

/// One witness of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    probe: NpProbe,
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.probe {
            NpProbe::Ping { address } => write!(f, "ping {address}"),
            NpProbe::Tcp { address } => write!(f, "tcp {address}"),
            NpProbe::Http { url } => write!(f, "http {url}"),
        }
    }
}

impl Witness {
    pub fn new(probe: NpProbe) -> Witness {
        Witness { probe }
    }

    /// Probes once, bounded by `timeout` (name resolution, connection and answer together).
    pub async fn probe(&self, timeout: Duration) -> Result<(), WitnessError> {
        let work = async {
            match &self.probe {
                NpProbe::Ping { address } => ping(*address, timeout).await,
                NpProbe::Tcp { address } => tcp_connect(address).await.map(drop),
                NpProbe::Http { url } => http_head(url).await,
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(WitnessError::Timeout { target: self.to_string(), timeout }),
        }
    }
}

/// The witnesses one node probes, with the time limit of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnesses {
    timeout: Duration,
    witnesses: Vec<Witness>,
}

impl Witnesses {
    /// The witnesses of `np` that apply to `node`, in declaration order.
    pub fn from_config(np: &NpResolution, node: &str) -> Witnesses {
        let witnesses = np.targets_for(node).map(|t| Witness::new(t.probe.clone())).collect();
        Witnesses { timeout: np.timeout, witnesses }
    }

    pub fn is_empty(&self) -> bool {
        self.witnesses.is_empty()
    }

    pub fn len(&self) -> usize {
        self.witnesses.len()
    }

    /// Probes every witness in parallel. Answers `Reachable` as soon as one answers (the other probes are
    /// cancelled), `Isolated` once all have failed; each probe is bounded by the configured timeout.
    pub async fn check(&self) -> Verdict {
        if self.witnesses.is_empty() {
            return Verdict::NoWitness;
        }
        // Dropping the set (on return) aborts the probes still running.
        let mut probes = JoinSet::new();
        let mut index_of = HashMap::new();
        for (i, witness) in self.witnesses.iter().enumerate() {
            let witness = witness.clone();
            let timeout = self.timeout;
            let handle = probes.spawn(async move { witness.probe(timeout).await });
            index_of.insert(handle.id(), i);
        }
        let mut outcomes: Vec<Option<WitnessError>> = vec![None; self.witnesses.len()];
        while let Some(joined) = probes.join_next_with_id().await {
            let (id, result) = match joined {
                Ok((id, result)) => (id, result),
                Err(e) => {
                    let target = index_of.get(&e.id()).map(|&i| self.witnesses[i].to_string()).unwrap_or_default();
                    (e.id(), Err(WitnessError::Internal { target }))
                }
            };
            let Some(&i) = index_of.get(&id) else { continue };
            match result {
                Ok(()) => return Verdict::Reachable { witness: self.witnesses[i].to_string() },
                Err(e) => outcomes[i] = Some(e),
            }
        }
        let failures = self
            .witnesses
            .iter()
            .zip(outcomes)
            .map(|(w, e)| {
                let e = e.unwrap_or_else(|| WitnessError::Internal { target: w.to_string() });
                (w.to_string(), e.reason())
            })
            .collect();
        Verdict::Isolated { failures }
    }
}

async fn tcp_connect(address: &HostPort) -> Result<TcpStream, WitnessError> {
    let target = address.to_string();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((address.host.as_str(), address.port))
        .await
        .map_err(|e| WitnessError::Resolve { host: address.host.clone(), detail: e.to_string() })?
        .collect();
    if addrs.is_empty() {
        return Err(WitnessError::Resolve { host: address.host.clone(), detail: "no address found".into() });
    }
    let mut last = String::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => last = format!("{addr} refused the connection"),
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(WitnessError::Unreachable { target, detail: last })
}

/// The parts of an `http://` URL a HEAD request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpTarget {
    /// As written in the URL, for the Host header.
    authority: String,
    address: HostPort,
    /// Path and query; `/` when the URL has none.
    path: String,
}

fn parse_http_url(url: &str) -> Result<HttpTarget, WitnessError> {
    let bad = |detail: &str| WitnessError::BadUrl { url: url.to_string(), detail: detail.to_string() };
    let lower = url.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    if lower.starts_with("https://") {
        return Err(WitnessError::HttpsUnsupported { url: url.to_string() });
    }
    let rest = match url.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &url[7..],
        _ => return Err(bad("it does not start with http://")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad("it has no host"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if url.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    let address = if authority.ends_with(']') || !authority.contains(':') {
        let host = authority.trim_start_matches('[').trim_end_matches(']');
        HostPort { host: host.to_string(), port: 80 }
    } else {
        HostPort::parse(authority).map_err(|e| bad(&e))?
    };
    if address.host.is_empty() {
        return Err(bad("it has no host"));
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Ok(HttpTarget { authority: authority.to_string(), address, path })
}

async fn http_head(url: &str) -> Result<(), WitnessError> {
    let target = parse_http_url(url)?;
    let mut stream = tcp_connect(&target.address).await?;
    let request = format!(
        "HEAD {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tandem-witness\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    let io_err = |e: io::Error| WitnessError::Unreachable { target: url.to_string(), detail: e.to_string() };
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.contains(&b'\n') {
        if head.len() >= MAX_HTTP_HEAD {
            let detail = format!("no status line in the first {MAX_HTTP_HEAD} bytes");
            return Err(WitnessError::MalformedHttp { target: url.to_string(), detail });
        }
        let room = (MAX_HTTP_HEAD - head.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await.map_err(io_err)?;
        if n == 0 {
            let detail = format!("connection closed after {} bytes, before a complete status line", head.len());
            return Err(WitnessError::MalformedHttp { target: url.to_string(), detail });
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let status =
        parse_status_line(&head).map_err(|detail| WitnessError::MalformedHttp { target: url.to_string(), detail })?;
    if status == 200 { Ok(()) } else { Err(WitnessError::BadStatus { target: url.to_string(), status }) }
}

/// The status code of an HTTP/1.x answer whose first line is in `head`:
/// `HTTP/<digit>.<digit> SP <3 digits> [SP reason] CRLF` (a bare LF is tolerated).
fn parse_status_line(head: &[u8]) -> Result<u16, String> {
    let end = head.iter().position(|&b| b == b'\n').ok_or("the status line is not terminated")?;
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    let shown = || String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
    let rest = line.strip_prefix(b"HTTP/").ok_or_else(|| format!("{:?} does not start with HTTP/", shown()))?;
    let version_ok = matches!(rest, [major, b'.', minor, ..] if major.is_ascii_digit() && minor.is_ascii_digit());
    if !version_ok || rest[0] != b'1' {
        return Err(format!("{:?} is not an HTTP/1.x status line", shown()));
    }
    let after_version = &rest[3..];
    let code = match after_version {
        [b' ', a, b, c, tail @ ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit()) && matches!(tail, [] | [b' ', ..]) =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(format!("{:?} has no three-digit status code", shown())),
    };
    if !(100..=599).contains(&code) {
        return Err(format!("status code {code} is out of range"));
    }
    if line.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(format!("{:?} contains control characters", shown()));
    }
    Ok(code)
}

/// The failure of opening the ICMP socket (datagram, then raw), saying when it is a matter of permission.
fn icmp_socket_error(address: Ipv4Addr, e: &io::Error) -> WitnessError {
    let denied = e.kind() == io::ErrorKind::PermissionDenied || matches!(e.raw_os_error(), Some(1 | 13));
    let detail = if denied {
        format!(
            "{e}: not permitted; allow unprivileged ICMP (sysctl net.ipv4.ping_group_range) or give the daemon \
             CAP_NET_RAW"
        )
    } else {
        e.to_string()
    };
    WitnessError::IcmpSocket { target: address.to_string(), detail }
}

/// Identifier of the next echo request (the kernel replaces it on datagram ICMP sockets).
static NEXT_PING_ID: AtomicU16 = AtomicU16::new(0);

async fn ping(address: Ipv4Addr, timeout: Duration) -> Result<(), WitnessError> {
    use surge_ping::{Client, Config, PingIdentifier, PingSequence, SurgeError};
    let target = format!("ping {address}");
    let client = Client::new(&Config::default()).map_err(|e| icmp_socket_error(address, &e))?;
    let low = (std::process::id() & 0xffff) as u16;
    let id = PingIdentifier(low ^ NEXT_PING_ID.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37));
    let mut pinger = client.pinger(IpAddr::V4(address), id).await;
    pinger.timeout(timeout);
    match pinger.ping(PingSequence(0), b"tandem-witness").await {
        Ok(_) => Ok(()),
        Err(SurgeError::Timeout { .. }) => Err(WitnessError::Timeout { target, timeout }),
        Err(e) => Err(WitnessError::Unreachable { target, detail: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_of_http_1_1_ok_is_200() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"), Ok(200));
    }

    #[test]
    fn status_line_accepts_http_1_0_bare_lf_and_empty_reason() {
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Service Unavailable\n"), Ok(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n"), Ok(204));
        assert_eq!(parse_status_line(b"HTTP/1.1 404 \r\n"), Ok(404));
    }

    #[test]
    fn status_line_rejects_garbage() {
        for bad in [
            &b"hello world\r\n"[..],
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 2x0 OK\r\n",
            b"HTTP/1.1  200 OK\r\n",
            b"HTTP/1.1 200OK\r\n",
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 099 Low\r\n",
            b"HTTP/1.1 600 High\r\n",
            b"HTTP/1.1 200 O\x00K\r\n",
            b"HTTP/\r\n",
            b"\r\n",
        ] {
            assert!(parse_status_line(bad).is_err(), "{:?} was accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn status_line_must_be_terminated() {
        assert!(parse_status_line(b"HTTP/1.1 200 OK").is_err());
    }

    #[test]
    fn status_line_does_not_panic_on_non_utf8() {
        assert!(parse_status_line(b"\xff\xfe\xfd 200\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 200 \xff\r\n").is_ok());
    }

    #[test]
    fn url_default_port_and_path() {
        let t = parse_http_url("http://example.com").unwrap();
        assert_eq!(t.address, HostPort { host: "example.com".into(), port: 80 });
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("example.com", "/"));
    }

    #[test]
    fn url_with_port_path_query_and_fragment() {
        let t = parse_http_url("http://10.0.0.1:8080/health?x=1#top").unwrap();
        assert_eq!(t.address, HostPort { host: "10.0.0.1".into(), port: 8080 });
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("10.0.0.1:8080", "/health?x=1"));
        assert_eq!(parse_http_url("http://h?q").unwrap().path, "/?q");
    }

    #[test]
    fn url_with_ipv6_host() {
        assert_eq!(parse_http_url("http://[::1]/").unwrap().address, HostPort { host: "::1".into(), port: 80 });
        assert_eq!(parse_http_url("http://[::1]:81/").unwrap().address, HostPort { host: "::1".into(), port: 81 });
    }

    #[test]
    fn https_urls_are_refused_with_their_own_code() {
        assert_eq!(parse_http_url("https://example.com/").unwrap_err().code(), "TDM-NP-007");
    }

    #[test]
    fn unusable_urls_are_refused() {
        for url in ["ftp://x/", "http:///path", "http://u:p@h/", "http://h:99999/", "http://h/a b"] {
            assert_eq!(parse_http_url(url).map_err(|e| e.code()), Err("TDM-NP-008"), "{url}");
        }
    }

    #[test]
    fn icmp_socket_permission_errors_say_so() {
        let e = icmp_socket_error(Ipv4Addr::LOCALHOST, &io::Error::from_raw_os_error(1));
        assert_eq!(e.code(), "TDM-NP-005");
        assert!(e.reason().contains("not permitted") && e.reason().contains("CAP_NET_RAW"), "{e}");
        let other = icmp_socket_error(Ipv4Addr::LOCALHOST, &io::Error::from_raw_os_error(97));
        assert_eq!(other.code(), "TDM-NP-005");
        assert!(!other.reason().contains("not permitted"), "{other}");
    }

    #[test]
    fn every_reason_starts_with_its_code() {
        let e = WitnessError::BadStatus { target: "http://h/".into(), status: 503 };
        assert_eq!(e.reason(), "TDM-NP-003: http://h/ answered HTTP status 503 (expected 200)");
    }
}
