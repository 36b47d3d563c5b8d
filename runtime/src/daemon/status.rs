//! The status reply: the cluster as this node sees it, assembled from the heartbeat view, the group runners and
//! the witness verdict. Shared by the control API and the metrics endpoint.

use std::time::Instant;

use tandem_proto::control::{GroupStatus, LinkStatus, NodeStatus, PeerRole, ResourceStatus, StatusReply};

use super::{Daemon, liveness_name};
use crate::group::wire::NodeWire;
use crate::membership::witness::Verdict;

pub fn status(d: &Daemon) -> StatusReply {
    let cx = &d.cx;
    let snap = d.snapshot();
    let now = Instant::now();
    let mut nodes = Vec::new();
    for n in &cx.config.nodes {
        let local = n.name == cx.node;
        let peer = snap.peer(&n.name);
        nodes.push(NodeStatus {
            name: n.name.clone(),
            address: n.private_ip.to_string(),
            liveness: if local { "local".into() } else { peer.map_or("down", |p| liveness_name(p.liveness)).into() },
            local,
            links: peer
                .map(|p| {
                    p.links
                        .iter()
                        .map(|l| LinkStatus {
                            interconnect: l.interconnect.clone(),
                            liveness: liveness_name(l.liveness).into(),
                            rtt_us: l.rtt.map_or(0, |r| u64::try_from(r.as_micros()).unwrap_or(u64::MAX)),
                            received: l.counters.received,
                            replay: l.counters.replay,
                            bad_mac: l.counters.bad_mac,
                            foreign: l.counters.foreign,
                            malformed: l.counters.malformed,
                            restarts: l.counters.restarts,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    let mut groups = Vec::new();
    for g in &d.groups {
        let v = g.view();
        let peers = v
            .servers
            .iter()
            .filter(|s| **s != cx.node)
            .map(|s| PeerRole {
                node: s.clone(),
                state: snap
                    .peer(s)
                    .filter(|p| p.liveness != crate::membership::heartbeat::peer::Liveness::Down)
                    .and_then(|p| NodeWire::decode(&p.state))
                    .and_then(|w| w.group(g.index))
                    .map_or("unknown", |w| w.role.name())
                    .into(),
            })
            .collect();
        groups.push(GroupStatus {
            name: v.name.clone(),
            state: v.role.name().into(),
            active_on: v.active_on.clone().unwrap_or_default(),
            lease_token: v.token,
            lease_remaining_ms: v.valid_until.map_or(0, |t| {
                let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                if t >= now { ms(t - now) } else { -ms(now - t) }
            }),
            admin_stopped: v.record.as_ref().is_some_and(|r| r.stopped),
            move_target: v.record.as_ref().and_then(|r| r.target.clone()).unwrap_or_default(),
            resources: v
                .resources
                .iter()
                .map(|r| ResourceStatus {
                    name: r.name.clone(),
                    kind: r.kind.into(),
                    state: r.state.into(),
                    last_error: r.last_error.clone(),
                })
                .collect(),
            failovers: v.failovers,
            last_error: v.last_error.clone(),
            servers: v.servers.clone(),
            peers,
            last_takeover_ms: v.last_takeover.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        });
    }
    let witness = if !cx.witness_configured {
        "none".to_string()
    } else {
        match &cx.witness.borrow().verdict {
            None => "unchecked".into(),
            Some(Verdict::NoWitness) => "none".into(),
            Some(Verdict::Reachable { witness }) => format!("reachable {witness}"),
            Some(Verdict::Isolated { .. }) => "isolated".into(),
        }
    };
    StatusReply {
        cluster: cx.config.cluster.name.clone(),
        node: cx.node.clone(),
        incarnation: cx.incarnation,
        daemon_state: if cx.leaving() { "stopping".into() } else { "running".into() },
        uptime_ms: u64::try_from(cx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        nodes,
        groups,
        monitors: d
            .monitors
            .iter()
            .map(|m| {
                let st = m.state();
                tandem_proto::control::MonitorStatus {
                    name: st.name,
                    kind: st.kind.into(),
                    state: st.state.into(),
                    message: match st.code {
                        Some(code) if !st.message.is_empty() => format!("[{code}] {}", st.message),
                        _ => st.message,
                    },
                }
            })
            .collect(),
        witness,
        lease_table: cx.store.table().to_string(),
        peer_tls_rejected: d.peer_tls_rejected.load(std::sync::atomic::Ordering::Relaxed),
        peer_api: d.peer_api.lock().map(|p| p.clone()).unwrap_or_default(),
        unattributed: Some(snap.unattributed.iter().fold(
            LinkStatus { interconnect: "all".into(), liveness: String::new(), ..Default::default() },
            |mut acc, c| {
                acc.replay += c.replay;
                acc.bad_mac += c.bad_mac;
                acc.foreign += c.foreign;
                acc.malformed += c.malformed;
                acc
            },
        )),
    }
}
