//! The control API on the node's Unix socket (tandemctl). Handlers stay thin: they validate the request, then
//! either read the status or write an operator request into the group's lease item, which every node's runner
//! follows (so a move or stop works from any node and survives the loss of the node that received it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tandem_proto::control::control_server::{Control, ControlServer};
use tandem_proto::control::{
    ClusterStatusReply, ClusterStopRequest, CommandReply, EventsReply, EventsRequest, GroupRequest, MirrorRequest,
    MirrorResolveRequest, MirrorStatusReply, StatusReply, StatusRequest,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::{Daemon, DaemonError, status};
use crate::group::GroupError;
use crate::group::runner::Command;

pub struct ControlService {
    daemon: Arc<Daemon>,
}

fn group_status(e: &GroupError) -> Status {
    let text = format!("[{}] {e}", e.code());
    match e {
        GroupError::UnknownGroup { .. } => Status::not_found(text),
        GroupError::NotAServer { .. } | GroupError::NoTarget { .. } | GroupError::TargetNotReady { .. } => {
            Status::failed_precondition(text)
        }
        _ => Status::unavailable(text),
    }
}

impl ControlService {
    /// Why `target` will not take group `index` (None: it will). A state just changed on the target (a failed
    /// mark cleared by `group start` there) reaches this node with the target's next heartbeat: asked again for
    /// two heartbeat intervals before the answer stands.
    async fn wont_take(&self, index: usize, group: &str, target: &str) -> Option<String> {
        let grace = (self.daemon.cx.config.heartbeat.interval * 2).min(std::time::Duration::from_secs(2));
        let until = tokio::time::Instant::now() + grace;
        loop {
            let my_role = self.daemon.group(group).map_or(crate::group::Role::Offline, |g| g.view().role);
            let why = crate::group::wont_take(&self.daemon.snapshot(), index, target, &self.daemon.cx.node, my_role);
            if why.is_none() || tokio::time::Instant::now() >= until {
                return why;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn index_of(&self, group: &str) -> Result<usize, Status> {
        let cfg = &self.daemon.cx.config;
        cfg.groups.iter().position(|g| g.name == group).ok_or_else(|| {
            let known: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
            group_status(&GroupError::UnknownGroup { group: group.into(), known: known.join(", ") })
        })
    }

    fn store_error(group: &str, e: crate::membership::lease::LeaseError) -> Status {
        group_status(&GroupError::Store { group: group.into(), detail: format!("[{}] {e}", e.code()) })
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(status::status(&self.daemon)))
    }

    async fn group_start(&self, req: Request<GroupRequest>) -> Result<Response<CommandReply>, Status> {
        let group = req.into_inner().group;
        self.index_of(&group)?;
        self.daemon.cx.store.set_stopped(&group, false).await.map_err(|e| Self::store_error(&group, e))?;
        if let Some(g) = self.daemon.group(&group) {
            g.send(Command::ClearFailed).await;
        }
        self.daemon.cx.events.record(&group, "admin", "", "group start requested");
        Ok(Response::new(CommandReply { message: format!("group {group}: start requested") }))
    }

    async fn group_stop(&self, req: Request<GroupRequest>) -> Result<Response<CommandReply>, Status> {
        let group = req.into_inner().group;
        self.index_of(&group)?;
        self.daemon.cx.store.set_stopped(&group, true).await.map_err(|e| Self::store_error(&group, e))?;
        self.daemon.cx.events.record(&group, "admin", "", "group stop requested");
        Ok(Response::new(CommandReply { message: format!("group {group}: stop requested") }))
    }

    async fn group_move(&self, req: Request<GroupRequest>) -> Result<Response<CommandReply>, Status> {
        let GroupRequest { group, target } = req.into_inner();
        let index = self.index_of(&group)?;
        let cfg = &self.daemon.cx.config.groups[index];
        let current = self.daemon.group(&group).and_then(|g| g.view().active_on).unwrap_or_default();
        let target = if target.is_empty() {
            let me = &self.daemon.cx.node;
            let me_standby = self.daemon.group(&group).is_some_and(|g| g.view().role == crate::group::Role::Standby);
            cfg.servers
                .iter()
                .filter(|s| **s != current)
                .find(|s| if *s == me { me_standby } else { self.daemon.eligible_peer(index, s) })
                .cloned()
                .ok_or_else(|| group_status(&GroupError::NoTarget { group: group.clone() }))?
        } else {
            if cfg.priority_of(&target).is_none() {
                return Err(group_status(&GroupError::NotAServer {
                    group: group.clone(),
                    node: target,
                    servers: cfg.servers.join(", "),
                }));
            }
            // Refused at once: a request the target would never act on would only time out.
            if target != current
                && let Some(state) = self.wont_take(index, &group, &target).await
            {
                let hint = if state == crate::group::Role::Failed.name() {
                    format!("; clear its failed mark with `tandemctl group start {group}` on {target}")
                } else {
                    String::new()
                };
                return Err(group_status(&GroupError::TargetNotReady { group, node: target, state, hint }));
            }
            target
        };
        if target == current {
            return Ok(Response::new(CommandReply { message: format!("group {group}: already on {target}") }));
        }
        self.daemon.cx.store.request_move(&group, Some(&target)).await.map_err(|e| Self::store_error(&group, e))?;
        self.daemon.cx.events.record(&group, "admin", "", format!("move to {target} requested"));
        Ok(Response::new(CommandReply { message: format!("group {group}: move to {target} requested") }))
    }

    async fn cluster_status(&self, _: Request<StatusRequest>) -> Result<Response<ClusterStatusReply>, Status> {
        let mut nodes = vec![status::status(&self.daemon)];
        let mut errors = Vec::new();
        let cfg = self.daemon.cx.config.clone();
        let Some(tls) = self.daemon.peer_tls.clone() else {
            errors.push(format!("{}: [TDM-PEER-001] the peer API is off on this node", self.daemon.cx.node));
            return Ok(Response::new(ClusterStatusReply { nodes, errors }));
        };
        let mut asks = tokio::task::JoinSet::new();
        for n in cfg.nodes.iter().filter(|n| n.name != self.daemon.cx.node) {
            let addr = std::net::SocketAddr::from((n.private_ip, cfg.cluster.api_port));
            let (tls, name) = (tls.clone(), n.name.clone());
            asks.spawn(async move {
                let r = super::peer::fetch_status(&tls, &name, addr, std::time::Duration::from_secs(2)).await;
                (name, r)
            });
        }
        let mut answers = Vec::new();
        while let Some(done) = asks.join_next().await {
            if let Ok(a) = done {
                answers.push(a);
            }
        }
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, r) in answers {
            match r {
                Ok(s) => nodes.push(s),
                Err(e) => errors.push(format!("{name}: [{}] {e}", e.code())),
            }
        }
        Ok(Response::new(ClusterStatusReply { nodes, errors }))
    }

    async fn cluster_stop(&self, _: Request<ClusterStopRequest>) -> Result<Response<CommandReply>, Status> {
        self.daemon.request_stop();
        Ok(Response::new(CommandReply {
            message: format!("node {}: clean stop started (groups move away first)", self.daemon.cx.node),
        }))
    }

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<EventsReply>, Status> {
        Ok(Response::new(super::events::reply(&self.daemon.cx.events, req.into_inner().limit)))
    }

    async fn mirror_status(&self, req: Request<MirrorRequest>) -> Result<Response<MirrorStatusReply>, Status> {
        Ok(Response::new(super::mirror_api::status(&self.daemon, &req.into_inner().resource).await?))
    }

    async fn mirror_verify(&self, req: Request<MirrorRequest>) -> Result<Response<CommandReply>, Status> {
        let message = super::mirror_api::verify(&self.daemon, &req.into_inner().resource).await?;
        Ok(Response::new(CommandReply { message }))
    }

    async fn mirror_resolve(&self, req: Request<MirrorResolveRequest>) -> Result<Response<CommandReply>, Status> {
        let MirrorResolveRequest { resource, discard } = req.into_inner();
        let message = super::mirror_api::resolve(&self.daemon, &resource, &discard).await?;
        Ok(Response::new(CommandReply { message }))
    }
}

/// Binds the socket (replacing a stale file no daemon listens on) and serves the API in the background.
pub async fn serve(daemon: Arc<Daemon>, path: &Path) -> Result<(), DaemonError> {
    let err = |source| DaemonError::Socket { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another daemon answers on it")));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Operators (root, or the group the admin gives the socket to) only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    let service = ControlServer::new(ControlService { daemon });
    tokio::spawn(async move {
        let incoming = UnixListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
            tracing::error!("control API stopped: {e}");
        }
    });
    Ok(())
}
