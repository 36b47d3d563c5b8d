//! `tandemctl mirror status|verify|resolve`: the control API's mirror-disk handlers (docs/mirror.md,
//! "Operating").

use std::sync::Arc;

use tandem_proto::control::{MirrorDiskStatus, MirrorStatusReply};
use tonic::Status;

use super::Daemon;
use crate::config::{Group, MirrorDisk, ResourceKind};
use crate::group::runner::Command;
use crate::mirror::replication::{ReplicationState, ResyncPhase};
use crate::resources::GroupResource;
use crate::resources::mirror_disk::{MirrorDiskResource, disk_state_name, role_name};

/// Stable codes of the mirror commands (docs/troubleshooting.md).
pub const CODE_UNKNOWN_MIRROR: &str = "TDM-MDK-020";
pub const CODE_NOT_SERVED_HERE: &str = "TDM-MDK-021";
pub const CODE_NOT_A_SERVER: &str = "TDM-MDK-022";
pub const CODE_RESOLVE: &str = "TDM-MDK-023";

fn status_error(code: &str, text: String) -> Status {
    Status::failed_precondition(format!("[{code}] {text}"))
}

/// A resource error as a status: "[CODE] message" (without the code a message may already start with).
fn resource_status(e: crate::resources::ResourceError) -> Status {
    let prefix = format!("{}: ", e.code);
    status_error(e.code, e.message.strip_prefix(&prefix).unwrap_or(&e.message).to_string())
}

/// The mirror disks of the config, with their groups; `resource` empty = all.
fn mirror_disks<'a>(daemon: &'a Daemon, resource: &str) -> Result<Vec<(&'a Group, &'a str, &'a MirrorDisk)>, Status> {
    let all: Vec<_> = daemon
        .cx
        .config
        .mirror_disks()
        .filter_map(|(g, r)| match &r.kind {
            ResourceKind::MirrorDisk(md) => Some((g, r.name.as_str(), md)),
            _ => None,
        })
        .collect();
    if resource.is_empty() {
        return Ok(all);
    }
    let known: Vec<&str> = all.iter().map(|(_, name, _)| *name).collect();
    let found: Vec<_> = all.iter().filter(|(_, name, _)| *name == resource).cloned().collect();
    if found.is_empty() {
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        return Err(Status::not_found(format!(
            "[{CODE_UNKNOWN_MIRROR}] no mirror_disk resource {resource:?} in the config (mirror disks: {known})"
        )));
    }
    Ok(found)
}

/// The built resource of mirror disk `name` of `group` on this node.
fn built(daemon: &Daemon, group: &str, name: &str) -> Result<Arc<dyn GroupResource>, Status> {
    daemon.group(group).and_then(|g| g.resource(name)).filter(|r| r.mirror().is_some()).ok_or_else(|| {
        status_error(
            CODE_NOT_SERVED_HERE,
            format!("node {} is not a server of group {group}, which holds mirror disk {name}", daemon.cx.node),
        )
    })
}

fn mirror_of(r: &Arc<dyn GroupResource>) -> Result<&MirrorDiskResource, Status> {
    r.mirror().ok_or_else(|| Status::internal("not a mirror disk"))
}

pub async fn status(daemon: &Daemon, resource: &str) -> Result<MirrorStatusReply, Status> {
    let mut disks = Vec::new();
    for (group, name, md) in mirror_disks(daemon, resource)? {
        let Ok(r) = built(daemon, &group.name, name) else { continue };
        let mirror = mirror_of(&r)?;
        let mut d = MirrorDiskStatus {
            resource: name.to_string(),
            group: group.name.clone(),
            peer: mirror.peer_name().to_string(),
            export_socket: mirror.socket_path().display().to_string(),
            mount_point: md.mount_point.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            ..MirrorDiskStatus::default()
        };
        match mirror.mirror_status().await {
            None => d.note = "the metadata is not open yet (see `tandemctl events`)".into(),
            Some(s) => {
                d.role = role_name(s.role).into();
                d.disk = disk_state_name(s.disk).into();
                d.generation = s.generation;
                d.serving = s.serving;
                d.dirty_bytes = s.dirty_bytes;
                d.size_bytes = s.size;
                d.link = match &s.replication {
                    Some(ReplicationState::Connected) => "connected".into(),
                    Some(ReplicationState::Degraded { code, reason, .. }) => {
                        d.link_error = if code.is_empty() { reason.clone() } else { format!("[{code}] {reason}") };
                        "degraded".into()
                    }
                    None if s.secondary_link => "secondary-linked".into(),
                    None => "standby".into(),
                };
                if let Some(p) = &s.resync {
                    d.resyncing = p.phase == ResyncPhase::Running;
                    d.resync_kind = p.decision.map(|x| format!("{x:?}")).unwrap_or_default();
                    d.resync_done_bytes = p.done_bytes;
                    d.resync_total_bytes = p.total_bytes;
                    d.resync_bytes_per_sec = p.bytes_per_sec;
                    if d.resyncing && p.bytes_per_sec > 0 {
                        let left = p.total_bytes.saturating_sub(p.done_bytes);
                        d.resync_eta_ms = left.saturating_mul(1000) / p.bytes_per_sec;
                    }
                    if let ResyncPhase::Aborted(why) = &p.phase {
                        d.note = format!("the last resync was aborted: {why}");
                    }
                }
            }
        }
        disks.push(d);
    }
    Ok(MirrorStatusReply { disks })
}

pub async fn verify(daemon: &Daemon, resource: &str) -> Result<String, Status> {
    if resource.is_empty() {
        return Err(Status::invalid_argument(format!("[{CODE_UNKNOWN_MIRROR}] name the mirror disk to verify")));
    }
    let (group, name, _) = mirror_disks(daemon, resource)?.remove(0);
    let r = built(daemon, &group.name, name)?;
    let mirror = mirror_of(&r)?;
    let report = mirror.verify().await.map_err(resource_status)?;
    daemon.cx.events.record(&group.name, "mirror", "", format!("verify of {name}: {report}"));
    Ok(format!("mirror disk {name}: {report}"))
}

/// `--discard NODE`: this node (its data is given up: a full sync target) or the peer (this node's replica is
/// accepted as the current one: its Outdated mark in the lease is cleared and the group may start here).
pub async fn resolve(daemon: &Daemon, resource: &str, discard: &str) -> Result<String, Status> {
    let (group, name, _) = mirror_disks(daemon, resource)?.remove(0);
    let r = built(daemon, &group.name, name)?;
    let mirror = mirror_of(&r)?;
    let me = daemon.cx.node.as_str();
    if !group.servers.iter().any(|s| s == discard) {
        return Err(status_error(
            CODE_NOT_A_SERVER,
            format!(
                "--discard {discard:?}: not a server of group {} (servers: {})",
                group.name,
                group.servers.join(", ")
            ),
        ));
    }
    let resolve_err = |text: String| status_error(CODE_RESOLVE, text);
    if discard == me {
        mirror.discard_local().await.map_err(resource_status)?;
        let text = format!(
            "mirror disk {name}: the data of {me} is given up; it resyncs in full from {} once linked",
            mirror.peer_name()
        );
        daemon.cx.events.record(&group.name, "mirror", "", text.clone());
        return Ok(text);
    }
    let record = daemon.cx.store.read(&group.name).await.map_err(|e| resolve_err(format!("[{}] {e}", e.code())))?;
    if let Some(mark) = record.as_ref().and_then(|r| r.outdated_mark(name)).filter(|m| m.node == me) {
        daemon
            .cx
            .store
            .clear_outdated(&group.name, name, me, mark.generation)
            .await
            .map_err(|e| resolve_err(format!("clearing the Outdated mark: [{}] {e}", e.code())))?;
    }
    mirror.accept_local().await.map_err(resource_status)?;
    if let Some(g) = daemon.group(&group.name) {
        g.send(Command::ClearFailed).await;
    }
    let text = format!(
        "mirror disk {name}: the writes only {discard} has are given up; {me}'s replica is the current one and may be \
         promoted. When {discard} returns, run `tandemctl mirror resolve {name} --discard {discard}` there"
    );
    daemon.cx.events.record(&group.name, "mirror", "", text.clone());
    Ok(text)
}
