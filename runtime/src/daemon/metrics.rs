//! Prometheus text exposition (format 0.0.4) on `GET /metrics`, built from the same status the API serves.
//! A deliberately small HTTP/1.1 responder: one request per connection, request head bounded to 8 KiB.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem_proto::control::{MirrorDiskStatus, StatusReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Daemon, DaemonError, status};

const MAX_HEAD: usize = 8 * 1024;
const ROLES: [&str; 6] = ["offline", "standby", "starting", "active", "stopping", "failed"];

/// A label value, escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(s: &StatusReply) -> String {
    let mut out = String::new();
    let mut lines: Vec<String> = Vec::new();
    let n =
        family(&mut out, "tandem_peer_up", "gauge", "1 when the peer's heartbeats arrive, 0.5 when late, 0 when lost.");
    for node in s.nodes.iter().filter(|n| !n.local) {
        let v = match node.liveness.as_str() {
            "up" => "1",
            "suspect" => "0.5",
            _ => "0",
        };
        lines.push(format!("{n}{{node=\"{}\"}} {v}", label(&node.name)));
    }
    flush(&mut out, &mut lines);
    let n =
        family(&mut out, "tandem_peer_rtt_seconds", "gauge", "Smoothed heartbeat round-trip time per interconnect.");
    for node in &s.nodes {
        for l in &node.links {
            lines.push(format!(
                "{n}{{node=\"{}\",interconnect=\"{}\"}} {}",
                label(&node.name),
                label(&l.interconnect),
                l.rtt_us as f64 / 1e6
            ));
        }
    }
    flush(&mut out, &mut lines);
    let n = family(&mut out, "tandem_heartbeats_received_total", "counter", "Valid heartbeats accepted.");
    for node in &s.nodes {
        for l in &node.links {
            lines.push(format!(
                "{n}{{node=\"{}\",interconnect=\"{}\"}} {}",
                label(&node.name),
                label(&l.interconnect),
                l.received
            ));
        }
    }
    flush(&mut out, &mut lines);
    let n = family(&mut out, "tandem_heartbeats_dropped_total", "counter", "Heartbeat packets dropped, by reason.");
    for node in &s.nodes {
        for l in &node.links {
            for (reason, v) in
                [("replay", l.replay), ("bad_mac", l.bad_mac), ("foreign", l.foreign), ("malformed", l.malformed)]
            {
                lines.push(format!(
                    "{n}{{node=\"{}\",interconnect=\"{}\",reason=\"{reason}\"}} {v}",
                    label(&node.name),
                    label(&l.interconnect)
                ));
            }
        }
    }
    if let Some(u) = &s.unattributed {
        for (reason, v) in
            [("replay", u.replay), ("bad_mac", u.bad_mac), ("foreign", u.foreign), ("malformed", u.malformed)]
        {
            lines.push(format!("{n}{{node=\"\",interconnect=\"all\",reason=\"{reason}\"}} {v}"));
        }
    }
    flush(&mut out, &mut lines);
    let n = family(&mut out, "tandem_group_state", "gauge", "1 for this node's current role in the group.");
    for g in &s.groups {
        for r in ROLES {
            lines.push(format!(
                "{n}{{group=\"{}\",state=\"{r}\"}} {}",
                label(&g.name),
                if g.state == r { 1 } else { 0 }
            ));
        }
    }
    flush(&mut out, &mut lines);
    per_group(
        &mut out,
        s,
        "tandem_group_failovers_total",
        "counter",
        "Takeovers by this node after the holder was lost.",
        |g| g.failovers.to_string(),
    );
    per_group(
        &mut out,
        s,
        "tandem_group_last_failover_seconds",
        "gauge",
        "Time from losing the holder to the group running here, last takeover.",
        |g| (g.last_takeover_ms as f64 / 1e3).to_string(),
    );
    per_group(
        &mut out,
        s,
        "tandem_group_lease_remaining_seconds",
        "gauge",
        "How long this node may still run the group without a renewal (0 when not holding).",
        |g| (g.lease_remaining_ms as f64 / 1e3).to_string(),
    );
    out
}

/// A family with one sample per group, labelled by the group's name.
fn per_group(
    out: &mut String,
    s: &StatusReply,
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&tandem_proto::control::GroupStatus) -> String,
) {
    let n = family(out, name, kind, help);
    for g in &s.groups {
        let _ = writeln!(out, "{n}{{group=\"{}\"}} {}", label(&g.name), value(g));
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) -> String {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name.to_string()
}

fn flush(out: &mut String, lines: &mut Vec<String>) {
    for l in lines.drain(..) {
        out.push_str(&l);
        out.push('\n');
    }
}

pub async fn serve(daemon: Arc<Daemon>, addr: SocketAddr) -> Result<(), DaemonError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| DaemonError::Metrics { addr, source })?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let read = async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                };
                if !matches!(tokio::time::timeout(Duration::from_secs(5), read).await, Ok(true)) {
                    return;
                }
                let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
                let (code, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET /metrics?") {
                    let mirrors = super::mirror_api::status(&daemon, "").await.map(|r| r.disks).unwrap_or_default();
                    ("200 OK", render(&status::status(&daemon)) + &render_mirrors(&mirrors))
                } else {
                    ("404 Not Found", "only GET /metrics is served\n".to_string())
                };
                let reply = format!(
                    "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// The mirror disks' families: link state, bytes behind, resync progress.
pub fn render_mirrors(disks: &[MirrorDiskStatus]) -> String {
    let mut out = String::new();
    if disks.is_empty() {
        return out;
    }
    let mut lines: Vec<String> = Vec::new();
    let key = |d: &MirrorDiskStatus| format!("resource=\"{}\",group=\"{}\"", label(&d.resource), label(&d.group));
    let n = family(
        &mut out,
        "tandem_mirror_primary",
        "gauge",
        "1 when this node serves the mirror disk (its primary), else 0.",
    );
    for d in disks {
        lines.push(format!("{n}{{{}}} {}", key(d), u8::from(d.serving)));
    }
    flush(&mut out, &mut lines);
    let n = family(
        &mut out,
        "tandem_mirror_link",
        "gauge",
        "The mirror's link here: 1 for the state it is in (connected, degraded, secondary-linked, standby).",
    );
    for d in disks {
        for state in ["connected", "degraded", "secondary-linked", "standby"] {
            lines.push(format!("{n}{{{},state=\"{state}\"}} {}", key(d), u8::from(d.link == state)));
        }
    }
    flush(&mut out, &mut lines);
    let n = family(
        &mut out,
        "tandem_mirror_up_to_date",
        "gauge",
        "1 when this node's replica is UpToDate, 0 when Outdated or Inconsistent.",
    );
    for d in disks {
        lines.push(format!("{n}{{{}}} {}", key(d), u8::from(d.disk == "UpToDate")));
    }
    flush(&mut out, &mut lines);
    let n = family(
        &mut out,
        "tandem_mirror_dirty_bytes",
        "gauge",
        "Bytes the peer's copy may miss (the persistent bitmap): what a resync will copy.",
    );
    for d in disks {
        lines.push(format!("{n}{{{}}} {}", key(d), d.dirty_bytes));
    }
    flush(&mut out, &mut lines);
    let n = family(&mut out, "tandem_mirror_resync_remaining_bytes", "gauge", "Bytes left in the running resync.");
    for d in disks {
        let left = if d.resyncing { d.resync_total_bytes.saturating_sub(d.resync_done_bytes) } else { 0 };
        lines.push(format!("{n}{{{}}} {left}", key(d)));
    }
    flush(&mut out, &mut lines);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::control::{GroupStatus, NodeStatus};

    #[test]
    fn renders_groups_and_peers_with_escaped_labels() {
        let s = StatusReply {
            nodes: vec![NodeStatus { name: "b\"1".into(), liveness: "suspect".into(), ..Default::default() }],
            groups: vec![GroupStatus {
                name: "web".into(),
                state: "active".into(),
                failovers: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("tandem_peer_up{node=\"b\\\"1\"} 0.5"), "{text}");
        assert!(text.contains("tandem_group_state{group=\"web\",state=\"active\"} 1"));
        assert!(text.contains("tandem_group_state{group=\"web\",state=\"standby\"} 0"));
        assert!(text.contains("tandem_group_failovers_total{group=\"web\"} 3"));
        assert!(text.contains("# TYPE tandem_group_failovers_total counter"));
    }

    #[test]
    fn renders_the_mirror_state_and_what_the_peer_misses() {
        let d = MirrorDiskStatus {
            resource: "data".into(),
            group: "db".into(),
            link: "degraded".into(),
            disk: "UpToDate".into(),
            serving: true,
            dirty_bytes: 4096,
            ..Default::default()
        };
        let text = render_mirrors(&[d]);
        assert!(text.contains("tandem_mirror_primary{resource=\"data\",group=\"db\"} 1"), "{text}");
        assert!(text.contains("tandem_mirror_link{resource=\"data\",group=\"db\",state=\"degraded\"} 1"), "{text}");
        assert!(text.contains("tandem_mirror_link{resource=\"data\",group=\"db\",state=\"connected\"} 0"), "{text}");
        assert!(text.contains("tandem_mirror_dirty_bytes{resource=\"data\",group=\"db\"} 4096"), "{text}");
        assert!(text.contains("tandem_mirror_up_to_date{resource=\"data\",group=\"db\"} 1"), "{text}");
        assert_eq!(render_mirrors(&[]), "");
    }
}
