//! The control API's client side for tandemctl: connect over the Unix socket, render status and events as text
//! or JSON, and wait for group operations to complete.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tandem_proto::control::control_client::ControlClient;
use tandem_proto::control::{Event, MirrorDiskStatus, StatusReply, StatusRequest};
use tonic::transport::{Channel, Endpoint};

/// Why tandemctl could not talk to tandemd; `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to tandemd at {path}: {detail}; is tandemd running (systemctl status tandemd)? use --socket"
    )]
    Connect { path: PathBuf, detail: String },
    #[error("{0}")]
    Api(String),
    #[error("timed out after {0} s waiting for: {1}")]
    Timeout(u64, String),
}

impl ClientError {
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "TDM-CTL-001",
            ClientError::Api(_) => "TDM-CTL-002",
            ClientError::Timeout(..) => "TDM-CTL-003",
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> ClientError {
        ClientError::Api(s.message().to_string())
    }
}

pub async fn connect(path: &Path) -> Result<ControlClient<Channel>, ClientError> {
    let socket = path.to_path_buf();
    let err = |detail: String| ClientError::Connect { path: path.to_path_buf(), detail };
    // The URI is required by the API but unused: the connector below always dials the socket.
    let endpoint = Endpoint::try_from("http://tandemd.invalid").map_err(|e| err(e.to_string()))?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| {
            err(format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()))
        })?;
    Ok(ControlClient::new(channel))
}

/// Polls the status until `done` says the operation finished; returns the last status.
pub async fn wait_for(
    client: &mut ControlClient<Channel>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&StatusReply) -> bool,
) -> Result<StatusReply, ClientError> {
    let start = Instant::now();
    loop {
        let s = client.status(StatusRequest {}).await?.into_inner();
        if done(&s) {
            return Ok(s);
        }
        if start.elapsed() >= timeout {
            return Err(ClientError::Timeout(timeout.as_secs(), what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the group runs as this node sees it: this node if it is active, else a peer that reports active.
pub fn running_on(s: &StatusReply, group: &str) -> Option<String> {
    let g = s.groups.iter().find(|g| g.name == group)?;
    if g.state == "active" {
        return Some(s.node.clone());
    }
    g.peers.iter().find(|p| p.state == "active").map(|p| p.node.clone())
}

/// True when no node (this one or a live peer) runs any part of the group.
pub fn stopped_everywhere(s: &StatusReply, group: &str) -> bool {
    let running = |state: &str| matches!(state, "starting" | "active" | "stopping");
    s.groups
        .iter()
        .find(|g| g.name == group)
        .is_some_and(|g| !running(&g.state) && !g.peers.iter().any(|p| running(&p.state)))
}

fn ms(v: u64) -> String {
    if v >= 10_000 { format!("{:.1} s", v as f64 / 1000.0) } else { format!("{v} ms") }
}

pub fn render_status(s: &StatusReply) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Cluster {}  node {} ({})  up {}  lease table {}  witness {}\n",
        s.cluster,
        s.node,
        s.daemon_state,
        ms(s.uptime_ms),
        s.lease_table,
        s.witness
    ));
    out.push_str(&format!("peer API {}  (refused TLS connections: {})\n", s.peer_api, s.peer_tls_rejected));
    out.push_str("\nNodes\n");
    for n in &s.nodes {
        out.push_str(&format!("  {:<16} {:<15} {}\n", n.name, n.address, n.liveness));
        for l in &n.links {
            let dropped = l.replay + l.bad_mac + l.foreign + l.malformed;
            out.push_str(&format!(
                "      {:<12} {:<8} rtt {:>7.2} ms  received {}  dropped {} (replay {}, bad mac {}, foreign {}, malformed {})  restarts {}\n",
                l.interconnect,
                l.liveness,
                l.rtt_us as f64 / 1000.0,
                l.received,
                dropped,
                l.replay,
                l.bad_mac,
                l.foreign,
                l.malformed,
                l.restarts
            ));
        }
    }
    if let Some(u) = &s.unattributed {
        let n = u.replay + u.bad_mac + u.foreign + u.malformed;
        if n > 0 {
            out.push_str(&format!(
                "  (from unknown senders: {n} dropped: bad mac {}, foreign {}, malformed {}, replay {})\n",
                u.bad_mac, u.foreign, u.malformed, u.replay
            ));
        }
    }
    out.push_str("\nGroups\n");
    for g in &s.groups {
        let on = running_on(s, &g.name).unwrap_or_else(|| "-".into());
        let mut flags = Vec::new();
        if g.admin_stopped {
            flags.push("stopped by operator".to_string());
        }
        if !g.move_target.is_empty() {
            flags.push(format!("moving to {}", g.move_target));
        }
        out.push_str(&format!(
            "  {:<16} running on {:<12} here: {:<9} servers {}{}\n",
            g.name,
            on,
            g.state,
            g.servers.join(" > "),
            if flags.is_empty() { String::new() } else { format!("  [{}]", flags.join(", ")) }
        ));
        if g.state == "active" || g.state == "starting" {
            out.push_str(&format!("      lease token {}  valid for {} ms\n", g.lease_token, g.lease_remaining_ms));
        }
        for p in &g.peers {
            out.push_str(&format!("      peer {:<12} {}\n", p.node, p.state));
        }
        for r in &g.resources {
            out.push_str(&format!("      resource {:<16} {:<8} {}\n", r.name, r.kind, r.state));
            if !r.last_error.is_empty() {
                out.push_str(&format!("          last error: {}\n", r.last_error));
            }
        }
        if g.failovers > 0 {
            out.push_str(&format!("      failovers here {}  last took {} ms\n", g.failovers, g.last_takeover_ms));
        }
        if !g.last_error.is_empty() {
            out.push_str(&format!("      last error: {}\n", g.last_error));
        }
    }
    if !s.monitors.is_empty() {
        out.push_str("\nMonitors\n");
        for m in &s.monitors {
            out.push_str(&format!("  {:<16} {:<8} {:<8} {}\n", m.name, m.kind, m.state, m.message));
        }
    }
    out
}

pub fn status_json(s: &StatusReply) -> Value {
    json!({
        "cluster": s.cluster,
        "node": s.node,
        "incarnation": format!("{:016x}", s.incarnation),
        "daemon_state": s.daemon_state,
        "uptime_ms": s.uptime_ms,
        "lease_table": s.lease_table,
        "peer_api": s.peer_api,
        "peer_tls_rejected": s.peer_tls_rejected,
        "witness": s.witness,
        "unattributed": s.unattributed.as_ref().map(|u| json!({
            "replay": u.replay, "bad_mac": u.bad_mac, "foreign": u.foreign, "malformed": u.malformed,
        })),
        "nodes": s.nodes.iter().map(|n| json!({
            "name": n.name,
            "address": n.address,
            "liveness": n.liveness,
            "local": n.local,
            "links": n.links.iter().map(|l| json!({
                "interconnect": l.interconnect,
                "liveness": l.liveness,
                "rtt_us": l.rtt_us,
                "received": l.received,
                "replay": l.replay,
                "bad_mac": l.bad_mac,
                "foreign": l.foreign,
                "malformed": l.malformed,
                "restarts": l.restarts,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "groups": s.groups.iter().map(|g| json!({
            "name": g.name,
            "state": g.state,
            "running_on": running_on(s, &g.name),
            "servers": g.servers,
            "lease_token": g.lease_token,
            "lease_remaining_ms": g.lease_remaining_ms,
            "admin_stopped": g.admin_stopped,
            "move_target": g.move_target,
            "failovers": g.failovers,
            "last_takeover_ms": g.last_takeover_ms,
            "last_error": g.last_error,
            "peers": g.peers.iter().map(|p| json!({"node": p.node, "state": p.state})).collect::<Vec<_>>(),
            "resources": g.resources.iter().map(|r| json!({
                "name": r.name, "kind": r.kind, "state": r.state, "last_error": r.last_error,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "monitors": s.monitors.iter().map(|m| json!({
            "name": m.name, "kind": m.kind, "state": m.state, "message": m.message,
        })).collect::<Vec<_>>(),
    })
}

pub fn render_event(e: &Event) -> String {
    let secs = e.unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let code = if e.code.is_empty() { String::new() } else { format!(" [{}]", e.code) };
    let group = if e.group.is_empty() { String::new() } else { format!(" group {}", e.group) };
    format!("{h:02}:{m:02}:{s:02}.{:03} {} {}{group}{code}: {}", e.unix_ms % 1000, e.node, e.kind, e.message)
}

pub fn event_json(e: &Event) -> Value {
    json!({"unix_ms": e.unix_ms, "node": e.node, "group": e.group, "kind": e.kind, "message": e.message, "code": e.code})
}

fn bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut x, mut unit) = (v as f64, 0);
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{v} B") } else { format!("{x:.1} {}", UNITS[unit]) }
}

/// `tandemctl mirror status`: one block per mirror disk.
pub fn render_mirror_status(disks: &[MirrorDiskStatus]) -> String {
    let mut out = String::new();
    if disks.is_empty() {
        out.push_str("no mirror disk on this node\n");
    }
    for d in disks {
        out.push_str(&format!(
            "{}  (group {}, peer {})\n  role {:<9} disk {:<12} link {}{}\n",
            d.resource,
            d.group,
            d.peer,
            d.role,
            d.disk,
            d.link,
            if d.link_error.is_empty() { String::new() } else { format!(": {}", d.link_error) }
        ));
        out.push_str(&format!(
            "  generation {:#018x}  size {}  behind (dirty) {}\n",
            d.generation,
            bytes(d.size_bytes),
            bytes(d.dirty_bytes)
        ));
        if d.resyncing {
            let pct = (d.resync_done_bytes * 100).checked_div(d.resync_total_bytes).unwrap_or(100);
            out.push_str(&format!(
                "  resync {} {}% ({} of {}) at {}/s, ETA {}\n",
                d.resync_kind,
                pct,
                bytes(d.resync_done_bytes),
                bytes(d.resync_total_bytes),
                bytes(d.resync_bytes_per_sec),
                if d.resync_eta_ms == 0 { "unknown".to_string() } else { ms(d.resync_eta_ms) }
            ));
        }
        if d.serving {
            let mount =
                if d.mount_point.is_empty() { String::new() } else { format!(", mounted on {}", d.mount_point) };
            out.push_str(&format!("  serving NBD on {}{mount}\n", d.export_socket));
        }
        if !d.note.is_empty() {
            out.push_str(&format!("  note: {}\n", d.note));
        }
    }
    out
}

pub fn mirror_json(d: &MirrorDiskStatus) -> Value {
    json!({
        "resource": d.resource, "group": d.group, "peer": d.peer, "role": d.role, "disk": d.disk, "link": d.link,
        "link_error": d.link_error, "generation": d.generation, "serving": d.serving, "dirty_bytes": d.dirty_bytes,
        "resyncing": d.resyncing, "resync_kind": d.resync_kind, "resync_done_bytes": d.resync_done_bytes,
        "resync_total_bytes": d.resync_total_bytes, "resync_bytes_per_sec": d.resync_bytes_per_sec,
        "resync_eta_ms": d.resync_eta_ms, "size_bytes": d.size_bytes, "export_socket": d.export_socket,
        "mount_point": d.mount_point, "note": d.note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_status_shows_state_progress_and_eta() {
        let d = MirrorDiskStatus {
            resource: "data".into(),
            group: "db".into(),
            peer: "node2".into(),
            role: "Primary".into(),
            disk: "UpToDate".into(),
            link: "connected".into(),
            serving: true,
            export_socket: "/run/tandem/db/data.nbd".into(),
            resyncing: true,
            resync_kind: "SourceBitmap".into(),
            resync_done_bytes: 1 << 20,
            resync_total_bytes: 4 << 20,
            resync_bytes_per_sec: 1 << 20,
            resync_eta_ms: 3000,
            dirty_bytes: 3 << 20,
            ..MirrorDiskStatus::default()
        };
        let text = render_mirror_status(std::slice::from_ref(&d));
        assert!(text.contains("role Primary   disk UpToDate"), "{text}");
        assert!(text.contains("resync SourceBitmap 25% (1.0 MiB of 4.0 MiB) at 1.0 MiB/s, ETA 3000 ms"), "{text}");
        assert!(text.contains("behind (dirty) 3.0 MiB"), "{text}");
        assert!(text.contains("serving NBD on /run/tandem/db/data.nbd"), "{text}");
        assert_eq!(mirror_json(&d)["resync_eta_ms"], 3000);
        assert_eq!(render_mirror_status(&[]), "no mirror disk on this node\n");
    }
}
