//! A fault-injecting HTTP proxy in front of moto: daemons under test reach "AWS" through it
//! (`AWS_ENDPOINT_URL=proxy.endpoint()`), and a test can make matching requests fail as AWS does (throttling,
//! internal errors) or stall them. Every request is recorded, so a test can count the API calls a failover made.
//!
//! Plain std threads and blocking sockets: one thread accepts, one thread serves each client connection.
//! Client connections are kept alive (each response is re-framed with a `Content-Length`); every request is
//! forwarded upstream on a fresh connection with `Connection: close`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The AWS service a request is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Ec2,
    Route53,
    DynamoDb,
    Other,
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The service's throttling error (EC2 `RequestLimitExceeded` 503, Route 53 `Throttling` 400, DynamoDB
    /// `ThrottlingException` 400): retryable for the SDK.
    Throttle,
    /// The service's internal error (EC2 `InternalError`, Route 53 / DynamoDB `InternalFailure`), HTTP 500.
    ServerError,
    /// Hold the request this long, then forward it normally.
    Stall(Duration),
}

/// One request that reached the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub at: SystemTime,
    pub client: IpAddr,
    pub service: Service,
    pub operation: String,
    /// The status sent (or, if the client had hung up, meant to be sent); 0 while the call is still in flight
    /// (stalled or being forwarded).
    pub status: u16,
    pub fault: Option<Fault>,
}

/// The proxy; dropping it stops accepting, closes client connections and ends stalls.
pub struct FaultProxy {
    state: Arc<State>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

struct Rule {
    service: Option<Service>,
    fault: Fault,
    until: Option<Instant>,
}

struct State {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<(u64, Call)>>,
    next_id: AtomicU64,
    shutdown: Mutex<bool>,
    wake: Condvar,
    conns: Mutex<HashMap<u64, TcpStream>>,
}

/// Largest request/response head and body the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
/// A client connection idle this long is closed (hyper's pool drops idle connections after 90 s).
const CLIENT_IDLE: Duration = Duration::from_secs(300);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl FaultProxy {
    /// Listens on (listen, 0); forwards to `upstream` ("http://host:port").
    pub fn start(listen: IpAddr, upstream: &str) -> io::Result<FaultProxy> {
        let authority = upstream
            .strip_prefix("http://")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("upstream {upstream}: not http://")))?;
        let authority = authority.split('/').next().unwrap_or_default().to_string();
        let listener = TcpListener::bind((listen, 0))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: authority,
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
        });
        let accept_state = Arc::clone(&state);
        let accept = std::thread::Builder::new()
            .name("aws-proxy-accept".into())
            .spawn(move || accept_loop(&accept_state, &listener))?;
        Ok(FaultProxy { state, addr, accept: Some(accept) })
    }

    /// "http://ip:port" (IPv6 in brackets).
    pub fn endpoint(&self) -> String {
        match self.addr.ip() {
            IpAddr::V4(v4) => format!("http://{v4}:{}", self.addr.port()),
            IpAddr::V6(v6) => format!("http://[{v6}]:{}", self.addr.port()),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// From now on, requests of `service` (None: every service) get `fault`, until `clear` or, with `for_`, for
    /// that long. A later `inject` replaces an earlier one for the same `service` and takes precedence over any
    /// earlier one that also matches.
    pub fn inject(&self, service: Option<Service>, fault: Fault, for_: Option<Duration>) {
        let mut rules = lock(&self.state.rules);
        rules.retain(|r| r.service != service);
        rules.push(Rule { service, fault, until: for_.map(|d| Instant::now() + d) });
    }

    /// Removes every fault; requests already stalled still complete after their stall.
    pub fn clear(&self) {
        lock(&self.state.rules).clear();
    }

    /// Everything so far, in order of arrival (in-flight calls with status 0).
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).iter().map(|(_, c)| c.clone()).collect()
    }

    pub fn reset_calls(&self) {
        lock(&self.state.calls).clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        *lock(&self.state.shutdown) = true;
        self.state.wake.notify_all();
        // Wake the accept loop with a connection to ourselves.
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let _ = TcpStream::connect_timeout(&SocketAddr::new(ip, self.addr.port()), Duration::from_secs(1));
        for (_, conn) in lock(&self.state.conns).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn accept_loop(state: &Arc<State>, listener: &TcpListener) {
    let mut next_conn = 0u64;
    for conn in listener.incoming() {
        if *lock(&state.shutdown) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let Ok(peer) = conn.peer_addr() else { continue };
        let Ok(registered) = conn.try_clone() else { continue };
        next_conn += 1;
        let id = next_conn;
        {
            // Check and register under the same lock Drop drains, so no connection escapes the shutdown.
            let mut conns = lock(&state.conns);
            if *lock(&state.shutdown) {
                return;
            }
            conns.insert(id, registered);
        }
        let conn_state = Arc::clone(state);
        let spawned = std::thread::Builder::new().name("aws-proxy-conn".into()).spawn(move || {
            let _ = serve_connection(&conn_state, conn, peer.ip().to_canonical());
            lock(&conn_state.conns).remove(&id);
        });
        if spawned.is_err() {
            lock(&state.conns).remove(&id);
        }
    }
}

impl State {
    fn fault_for(&self, service: Service) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let now = Instant::now();
        rules.retain(|r| r.until.is_none_or(|u| u > now));
        rules.iter().rev().find(|r| r.service.is_none_or(|s| s == service)).map(|r| r.fault.clone())
    }

    fn record(&self, call: Call) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.calls).push((id, call));
        id
    }

    fn set_status(&self, id: u64, status: u16) {
        if let Some((_, call)) = lock(&self.calls).iter_mut().rev().find(|(i, _)| *i == id) {
            call.status = status;
        }
    }

    /// Waits `d`; false if the proxy shut down meanwhile.
    fn pause(&self, d: Duration) -> bool {
        let guard = lock(&self.shutdown);
        let (guard, _) = self.wake.wait_timeout_while(guard, d, |down| !*down).unwrap_or_else(PoisonError::into_inner);
        !*guard
    }
}

struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

fn serve_connection(state: &State, client: TcpStream, peer: IpAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(CLIENT_IDLE))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    loop {
        let Some(req) = read_request(&mut reader, &mut writer)? else { return Ok(()) };
        let at = SystemTime::now();
        let (service, operation) = classify(&req);
        let fault = state.fault_for(service);
        let id = state.record(Call { at, client: peer, service, operation, status: 0, fault: fault.clone() });
        let keep_alive = wants_keep_alive(&req);
        let head_only = req.method.eq_ignore_ascii_case("HEAD");
        let resp = match fault {
            Some(Fault::Throttle) => fault_response(service, true),
            Some(Fault::ServerError) => fault_response(service, false),
            Some(Fault::Stall(d)) => {
                if !state.pause(d) {
                    return Ok(());
                }
                forward_or_bad_gateway(&state.upstream, &req)
            }
            None => forward_or_bad_gateway(&state.upstream, &req),
        };
        state.set_status(id, resp.status);
        write_response(&mut writer, &resp, keep_alive, head_only)?;
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

fn wants_keep_alive(req: &Request) -> bool {
    let conn = header(&req.headers, "connection").unwrap_or_default().to_ascii_lowercase();
    if req.version.eq_ignore_ascii_case("HTTP/1.0") { conn.contains("keep-alive") } else { !conn.contains("close") }
}

/// Reads the head's lines (without the line ends); None at a clean end of stream before the first byte.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return if lines.is_empty() && total == 0 { Ok(None) } else { Err(invalid("truncated HTTP head")) };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(invalid("HTTP head too large"));
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            if lines.is_empty() {
                continue; // tolerate empty lines before a request line
            }
            return Ok(Some(lines));
        }
        lines.push(text);
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines.iter().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

/// Reads a message body framed by `Transfer-Encoding: chunked` or `Content-Length`; without either, to the end of
/// the stream if `until_eof` (responses), else none (requests).
fn read_body(reader: &mut impl BufRead, headers: &[(String, String)], until_eof: bool) -> io::Result<Vec<u8>> {
    let chunked = header(headers, "transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader);
    }
    if let Some(len) = header(headers, "content-length") {
        let len: usize = len.parse().map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if until_eof {
        reader.take(MAX_BODY as u64).read_to_end(&mut body)?;
    }
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        let text = String::from_utf8_lossy(&line);
        let size = text.trim().split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let mut trailer = Vec::new();
                let n = reader.read_until(b'\n', &mut trailer)?;
                if n == 0 || trailer.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = Vec::new();
        reader.read_until(b'\n', &mut crlf)?;
    }
}

fn read_request(reader: &mut impl BufRead, writer: &mut impl Write) -> io::Result<Option<Request>> {
    let Some(lines) = read_head(reader)? else { return Ok(None) };
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {:?}", lines[0])));
    };
    let headers = parse_headers(&lines[1..]);
    if header(&headers, "expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }
    let body = read_body(reader, &headers, false)?;
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body,
    }))
}

/// The service and operation of a request, from its SigV4 credential scope, `X-Amz-Target`, body and path.
fn classify(req: &Request) -> (Service, String) {
    let scope_service = header(&req.headers, "authorization").and_then(|auth| {
        let cred = auth.split("Credential=").nth(1)?;
        let cred = cred.split([',', ' ']).next()?;
        // AKID/DATE/REGION/SERVICE/aws4_request
        cred.rsplit('/').nth(1).map(str::to_ascii_lowercase)
    });
    let target = header(&req.headers, "x-amz-target");
    let path = req.target.split('?').next().unwrap_or_default();
    let service = match scope_service.as_deref() {
        Some("ec2") => Service::Ec2,
        Some("route53") => Service::Route53,
        Some("dynamodb") => Service::DynamoDb,
        Some(_) => Service::Other,
        None if target.is_some_and(|t| t.starts_with("DynamoDB_")) => Service::DynamoDb,
        None if path.starts_with("/2013-04-01/") => Service::Route53,
        None => Service::Other,
    };
    let after_dot = |t: &str| t.split_once('.').map_or(t, |(_, op)| op).to_string();
    let operation = match service {
        Service::Ec2 => query_action(req),
        Service::DynamoDb => target.map(after_dot),
        Service::Route53 => Some(route53_operation(&req.method, path)),
        Service::Other => query_action(req).or_else(|| target.map(after_dot)),
    };
    (service, operation.unwrap_or_else(|| format!("{} {path}", req.method)))
}

/// `Action=` of a query-protocol request (form body, or the query string).
fn query_action(req: &Request) -> Option<String> {
    let body = String::from_utf8_lossy(&req.body);
    let query = req.target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    [body.as_ref(), query]
        .into_iter()
        .flat_map(|s| s.split('&'))
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(percent_decode)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Route 53's REST operations, from method and path.
fn route53_operation(method: &str, path: &str) -> String {
    let rest = path.strip_prefix("/2013-04-01").unwrap_or(path);
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method_uc = method.to_ascii_uppercase();
    let op = match (method_uc.as_str(), segs.as_slice()) {
        ("POST", ["hostedzone", _, "rrset"]) => "ChangeResourceRecordSets",
        ("GET", ["hostedzone", _, "rrset"]) => "ListResourceRecordSets",
        ("GET", ["change", _]) => "GetChange",
        ("GET", ["hostedzone", _]) => "GetHostedZone",
        ("GET", ["hostedzone"]) => "ListHostedZones",
        ("POST", ["hostedzone"]) => "CreateHostedZone",
        ("DELETE", ["hostedzone", _]) => "DeleteHostedZone",
        ("POST", ["hostedzone", _, "associatevpc"]) => "AssociateVPCWithHostedZone",
        ("POST", ["hostedzone", _, "disassociatevpc"]) => "DisassociateVPCFromHostedZone",
        _ => return format!("{method} {path}"),
    };
    op.to_string()
}

fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = t.as_secs();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        secs & 0xffff_ffff,
        t.subsec_micros() & 0xffff,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n
    )
}

/// The error AWS answers for a throttled (`throttle`) or internally failed request of `service`.
fn fault_response(service: Service, throttle: bool) -> Response {
    let rid = request_id();
    let xml = "text/xml;charset=UTF-8";
    let (status, reason, content_type, body) = match (service, throttle) {
        (Service::Ec2, true) => (503, "Service Unavailable", xml, ec2_error("RequestLimitExceeded", "Request limit exceeded.", &rid)),
        (Service::Ec2, false) => (
            500,
            "Internal Server Error",
            xml,
            ec2_error("InternalError", "An internal error has occurred.", &rid),
        ),
        (Service::DynamoDb, true) => (
            400,
            "Bad Request",
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#.to_string(),
        ),
        (Service::DynamoDb, false) => (
            500,
            "Internal Server Error",
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazon.coral.service#InternalFailure","message":"The request processing has failed because of an unknown error, exception or failure."}"#.to_string(),
        ),
        (Service::Route53, true) => (400, "Bad Request", xml, route53_error("Sender", "Throttling", "Rate exceeded", &rid, true)),
        (Service::Route53, false) => (
            500,
            "Internal Server Error",
            xml,
            route53_error("Receiver", "InternalFailure", "An internal error occurred.", &rid, true),
        ),
        (Service::Other, true) => (400, "Bad Request", xml, route53_error("Sender", "Throttling", "Rate exceeded", &rid, false)),
        (Service::Other, false) => (
            500,
            "Internal Server Error",
            xml,
            route53_error("Receiver", "InternalFailure", "An internal error occurred.", &rid, false),
        ),
    };
    Response {
        status,
        reason: reason.to_string(),
        headers: vec![("x-amzn-RequestId".to_string(), rid), ("Content-Type".to_string(), content_type.to_string())],
        body: body.into_bytes(),
    }
}

/// The ec2Query error envelope (`Response/Errors/Error/{Code,Message}`), as aws-sdk-ec2's `ec2_query_errors` parses.
fn ec2_error(code: &str, message: &str, rid: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
    )
}

/// The restXml / awsQuery wrapped error envelope (`ErrorResponse/Error/{Type,Code,Message}`).
fn route53_error(kind: &str, code: &str, message: &str, rid: &str, route53_ns: bool) -> String {
    let ns = if route53_ns { " xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"" } else { "" };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse{ns}><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    )
}

fn forward_or_bad_gateway(upstream: &str, req: &Request) -> Response {
    forward(upstream, req).unwrap_or_else(|e| Response {
        status: 502,
        reason: "Bad Gateway".to_string(),
        headers: vec![("Content-Type".to_string(), "text/plain".to_string())],
        body: format!("aws_proxy: upstream {upstream}: {e}").into_bytes(),
    })
}

/// Sends `req` to `upstream` on a fresh connection and reads the whole response.
fn forward(upstream: &str, req: &Request) -> io::Result<Response> {
    let mut conn = TcpStream::connect(upstream)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    conn.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if !is_hop_by_hop(k) && !k.eq_ignore_ascii_case("expect") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    let framed =
        header(&req.headers, "content-length").is_some() || header(&req.headers, "transfer-encoding").is_some();
    if framed || !req.body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&req.body);
    conn.write_all(&bytes)?;
    conn.flush()?;
    let mut reader = BufReader::new(conn);
    loop {
        let lines = read_head(&mut reader)?.ok_or_else(|| invalid("upstream closed without a response"))?;
        let mut parts = lines[0].splitn(3, ' ');
        let (_version, status, reason) = (parts.next(), parts.next(), parts.next().unwrap_or_default());
        let status: u16 =
            status.and_then(|s| s.parse().ok()).ok_or_else(|| invalid(format!("bad status line {:?}", lines[0])))?;
        let headers = parse_headers(&lines[1..]);
        if (100..200).contains(&status) {
            continue; // interim response
        }
        let no_body = req.method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
        let body = if no_body { Vec::new() } else { read_body(&mut reader, &headers, true)? };
        return Ok(Response { status, reason: reason.to_string(), headers, body });
    }
}

fn write_response(w: &mut impl Write, resp: &Response, keep_alive: bool, head_only: bool) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for (k, v) in &resp.headers {
        if !is_hop_by_hop(k) {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    let no_body = resp.status == 204 || resp.status == 304;
    if head_only {
        if let Some(len) = header(&resp.headers, "content-length") {
            out.push_str(&format!("Content-Length: {len}\r\n"));
        }
    } else if !no_body {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    out.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    let mut bytes = out.into_bytes();
    if !head_only && !no_body {
        bytes.extend_from_slice(&resp.body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moto::Moto;
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    struct World {
        // Field order: the proxy stops before moto.
        proxy: FaultProxy,
        moto: Moto,
        rt: tokio::runtime::Runtime,
    }

    fn world() -> World {
        let moto = Moto::start().expect("moto starts");
        let proxy = FaultProxy::start(LOCALHOST, &moto.endpoint()).expect("proxy starts");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        World { proxy, moto, rt }
    }

    impl World {
        fn config(&self, endpoint: &str, retry: RetryConfig, timeout: Option<TimeoutConfig>) -> aws_config::SdkConfig {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(endpoint)
                .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
                .retry_config(retry);
            if let Some(t) = timeout {
                loader = loader.timeout_config(t);
            }
            self.rt.block_on(loader.load())
        }

        /// Clients through the proxy, retries off.
        fn via_proxy(&self) -> aws_config::SdkConfig {
            self.config(&self.proxy.endpoint(), RetryConfig::disabled(), None)
        }
    }

    fn last_call(proxy: &FaultProxy, service: Service) -> Call {
        proxy.calls().into_iter().rev().find(|c| c.service == service).expect("a call of the service")
    }

    #[test]
    fn requests_pass_through_and_are_recorded() {
        let w = world();
        let conf = w.via_proxy();
        w.rt.block_on(async {
            aws_sdk_ec2::Client::new(&conf).describe_vpcs().send().await.expect("DescribeVpcs");
            aws_sdk_dynamodb::Client::new(&conf).list_tables().send().await.expect("ListTables");
            aws_sdk_route53::Client::new(&conf).list_hosted_zones().send().await.expect("ListHostedZones");
        });
        let calls = w.proxy.calls();
        let seen: Vec<(Service, &str, IpAddr, u16, Option<Fault>)> =
            calls.iter().map(|c| (c.service, c.operation.as_str(), c.client, c.status, c.fault.clone())).collect();
        assert_eq!(
            seen,
            vec![
                (Service::Ec2, "DescribeVpcs", LOCALHOST, 200, None),
                (Service::DynamoDb, "ListTables", LOCALHOST, 200, None),
                (Service::Route53, "ListHostedZones", LOCALHOST, 200, None),
            ]
        );
        w.proxy.reset_calls();
        assert!(w.proxy.calls().is_empty());
    }

    #[test]
    fn throttled_ec2_fails_with_request_limit_exceeded_while_dynamodb_passes() {
        let w = world();
        let conf = w.via_proxy();
        w.proxy.inject(Some(Service::Ec2), Fault::Throttle, None);
        w.rt.block_on(async {
            let err = aws_sdk_ec2::Client::new(&conf).describe_vpcs().send().await.expect_err("throttled");
            assert_eq!(err.code(), Some("RequestLimitExceeded"), "{err:?}");
            assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
            aws_sdk_dynamodb::Client::new(&conf).list_tables().send().await.expect("DynamoDB unaffected");
        });
        let ec2 = last_call(&w.proxy, Service::Ec2);
        assert_eq!((ec2.status, ec2.fault), (503, Some(Fault::Throttle)));
        assert_eq!(last_call(&w.proxy, Service::DynamoDb).status, 200);
    }

    #[test]
    fn sdk_retries_a_throttle_until_it_ends() {
        let w = world();
        // Standard retry (exponential backoff from 1 s with jitter); enough attempts that they cannot all fall
        // within the 300 ms throttle.
        let conf = w.config(&w.proxy.endpoint(), RetryConfig::standard().with_max_attempts(6), None);
        w.proxy.inject(Some(Service::Ec2), Fault::Throttle, Some(Duration::from_millis(300)));
        w.rt.block_on(async {
            aws_sdk_ec2::Client::new(&conf).describe_vpcs().send().await.expect("succeeds after retries");
        });
        let calls: Vec<Call> = w.proxy.calls().into_iter().filter(|c| c.operation == "DescribeVpcs").collect();
        assert!(calls.len() >= 2, "{calls:?}");
        assert_eq!((calls[0].status, calls[0].fault.clone()), (503, Some(Fault::Throttle)));
        let last = calls.last().expect("calls");
        assert_eq!((last.status, last.fault.clone()), (200, None));
    }

    #[test]
    fn route53_server_error_and_dynamodb_throttle_carry_aws_codes() {
        let w = world();
        let conf = w.via_proxy();
        w.proxy.inject(Some(Service::Route53), Fault::ServerError, None);
        w.proxy.inject(Some(Service::DynamoDb), Fault::Throttle, None);
        w.rt.block_on(async {
            let err = aws_sdk_route53::Client::new(&conf).list_hosted_zones().send().await.expect_err("500");
            assert_eq!(err.code(), Some("InternalFailure"), "{err:?}");
            assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
            let err = aws_sdk_dynamodb::Client::new(&conf).list_tables().send().await.expect_err("throttled");
            assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
            assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
            aws_sdk_ec2::Client::new(&conf).describe_vpcs().send().await.expect("EC2 unaffected");
        });
        w.proxy.inject(Some(Service::Ec2), Fault::ServerError, None);
        w.proxy.inject(Some(Service::Route53), Fault::Throttle, None);
        w.rt.block_on(async {
            let err = aws_sdk_ec2::Client::new(&conf).describe_vpcs().send().await.expect_err("500");
            assert_eq!(err.code(), Some("InternalError"), "{err:?}");
            let err = aws_sdk_route53::Client::new(&conf).list_hosted_zones().send().await.expect_err("throttled");
            assert_eq!(err.code(), Some("Throttling"), "{err:?}");
        });
        w.proxy.clear();
        w.rt.block_on(async {
            aws_sdk_route53::Client::new(&conf).list_hosted_zones().send().await.expect("cleared");
        });
    }

    #[test]
    fn stall_outlasts_the_client_timeout_and_clear_restores_service() {
        let w = world();
        let attempt_timeout = |ms| {
            let timeout = TimeoutConfig::builder().operation_attempt_timeout(Duration::from_millis(ms)).build();
            aws_sdk_ec2::Client::new(&w.config(&w.proxy.endpoint(), RetryConfig::disabled(), Some(timeout)))
        };
        // moto builds its EC2 backend on the first call (slow): warm it up without the stall.
        w.rt.block_on(attempt_timeout(30_000).describe_vpcs().send()).expect("warm-up DescribeVpcs");
        w.proxy.reset_calls();
        w.proxy.inject(Some(Service::Ec2), Fault::Stall(Duration::from_secs(2)), None);
        let err = w.rt.block_on(attempt_timeout(200).describe_vpcs().send()).expect_err("times out");
        assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
        w.proxy.clear();
        // Well within the 2 s stall: the new call is not queued behind the stalled one.
        w.rt.block_on(attempt_timeout(1_500).describe_vpcs().send()).expect("passes after clear");
        // The stalled request still completes upstream after its stall, and is recorded although its client left.
        let deadline = Instant::now() + Duration::from_secs(20);
        let stalled = loop {
            let first = w.proxy.calls().into_iter().next().expect("recorded at arrival");
            if first.status != 0 || Instant::now() > deadline {
                break first;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!((stalled.status, stalled.fault), (200, Some(Fault::Stall(Duration::from_secs(2)))));
    }

    #[test]
    fn route53_change_batch_is_forwarded_intact() {
        let w = world();
        let r53 = aws_sdk_route53::Client::new(&w.via_proxy());
        let direct = aws_sdk_route53::Client::new(&w.config(&w.moto.endpoint(), RetryConfig::disabled(), None));
        let record = ResourceRecordSet::builder()
            .name("app.example.com")
            .r#type(RrType::A)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value("10.0.0.5").build().expect("record"))
            .build()
            .expect("record set");
        let change =
            Change::builder().action(ChangeAction::Upsert).resource_record_set(record).build().expect("change");
        let sets = w.rt.block_on(async {
            let zone = r53
                .create_hosted_zone()
                .name("example.com")
                .caller_reference("aws-proxy-test")
                .send()
                .await
                .expect("CreateHostedZone");
            let zone_id = zone.hosted_zone().map(|z| z.id().to_string()).expect("zone id");
            r53.change_resource_record_sets()
                .hosted_zone_id(&zone_id)
                .change_batch(ChangeBatch::builder().changes(change).build().expect("batch"))
                .send()
                .await
                .expect("ChangeResourceRecordSets");
            direct.list_resource_record_sets().hosted_zone_id(&zone_id).send().await.expect("read back")
        });
        let found = sets.resource_record_sets().iter().any(|s| {
            s.name() == "app.example.com."
                && s.r#type() == &RrType::A
                && s.ttl() == Some(60)
                && s.resource_records().iter().any(|r| r.value() == "10.0.0.5")
        });
        assert!(found, "{sets:?}");
        let ops: Vec<String> = w.proxy.calls().into_iter().map(|c| c.operation).collect();
        assert_eq!(ops, vec!["CreateHostedZone", "ChangeResourceRecordSets"]);
    }

    #[test]
    fn one_client_connection_carries_several_requests_including_chunked_and_expect_continue() {
        let w = world();
        let mut conn = TcpStream::connect(("127.0.0.1", w.proxy.port())).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        let auth = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, \
                    SignedHeaders=host, Signature=0";
        let ec2 = format!(
            "POST / HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        );
        conn.write_all(ec2.as_bytes()).expect("write head");
        let continue_head = read_head(&mut reader).expect("read").expect("interim response");
        assert_eq!(continue_head, vec!["HTTP/1.1 100 Continue".to_string()]);
        conn.write_all(b"f\r\nAction=Describe\r\n11\r\nVpcs&Version=2016\r\n6\r\n-11-15\r\n0\r\n\r\n").expect("body");
        let ddb = "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n\
                   Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, \
                   SignedHeaders=host, Signature=0\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{}";
        for expected in ["DescribeVpcsResponse", "TableNames"] {
            let head = read_head(&mut reader).expect("read").expect("response");
            assert!(head[0].starts_with("HTTP/1.1 200"), "{head:?}");
            assert!(head.iter().any(|h| h.eq_ignore_ascii_case("connection: keep-alive")), "{head:?}");
            let body = read_body(&mut reader, &parse_headers(&head[1..]), false).expect("body");
            assert!(String::from_utf8_lossy(&body).contains(expected), "{}", String::from_utf8_lossy(&body));
            conn.write_all(ddb.as_bytes()).expect("second request, same connection");
        }
        let ops: Vec<(Service, String)> = w.proxy.calls().into_iter().map(|c| (c.service, c.operation)).collect();
        assert_eq!(ops[..2], [(Service::Ec2, "DescribeVpcs".into()), (Service::DynamoDb, "ListTables".into())]);
    }

    #[test]
    fn boto3_clients_work_through_the_proxy_and_see_the_throttle() {
        let w = world();
        let moto_server = crate::moto::moto_server_binary().expect("moto venv");
        let python = std::path::Path::new(&moto_server).with_file_name("python3");
        w.proxy.inject(Some(Service::DynamoDb), Fault::Throttle, None);
        let script = r#"
import sys, boto3, botocore.config, botocore.exceptions
cfg = botocore.config.Config(retries={"total_max_attempts": 1})
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing",
          aws_secret_access_key="testing", config=cfg)
boto3.client("ec2", **kw).describe_vpcs()
z = boto3.client("route53", **kw).create_hosted_zone(Name="example.org", CallerReference="boto3")
boto3.client("route53", **kw).get_hosted_zone(Id=z["HostedZone"]["Id"])
try:
    boto3.client("dynamodb", **kw).list_tables()
    print("no error")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
"#;
        let out = std::process::Command::new(python)
            .args(["-c", script, w.proxy.endpoint().as_str()])
            .output()
            .expect("run python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ThrottlingException 400");
        let ops: Vec<(String, u16)> = w.proxy.calls().into_iter().map(|c| (c.operation, c.status)).collect();
        let expected = [("DescribeVpcs", 200), ("CreateHostedZone", 201), ("GetHostedZone", 200), ("ListTables", 400)];
        assert_eq!(ops, expected.map(|(o, s)| (o.to_string(), s)));
    }

    #[test]
    fn operations_are_derived_from_route53_paths_and_ec2_forms() {
        assert_eq!(route53_operation("GET", "/2013-04-01/change/C123"), "GetChange");
        assert_eq!(route53_operation("GET", "/2013-04-01/hostedzone/Z1/rrset"), "ListResourceRecordSets");
        assert_eq!(route53_operation("POST", "/2013-04-01/hostedzone/Z1/rrset/"), "ChangeResourceRecordSets");
        assert_eq!(route53_operation("GET", "/2013-04-01/hostedzone/Z1"), "GetHostedZone");
        assert_eq!(route53_operation("GET", "/2013-04-01/healthcheck"), "GET /2013-04-01/healthcheck");
        assert_eq!(percent_decode("Describe%56pcs+x"), "DescribeVpcs x");
    }

    #[test]
    fn chunked_bodies_are_dechunked() {
        let mut input: &[u8] = b"4\r\nAct;\r\n6;ext=1\r\nion=Ru\r\n0\r\nX-T: 1\r\n\r\nrest";
        let body = read_chunked(&mut input).expect("dechunk");
        assert_eq!(body, b"Act;ion=Ru");
        assert_eq!(input, b"rest");
    }
}
