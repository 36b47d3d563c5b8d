//! How tandemd builds a `mirror_disk`'s [`MirrorEnv`] from the cluster config: the two mirror-connect addresses
//! and the disk's port, the cluster certificates for the link, the lease-backed [`PromotionGuard`] and the
//! lease-backed [`PeerLossGate`] (the peer's Outdated mark). See docs/mirror.md, "In tandemd".

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::mirror_disk::{MirrorEnv, PromotionGuard};
use super::{ErrorClass, ResourceError};
use crate::config::Config;
use crate::daemon::peer::PeerTls;
use crate::membership::lease::LeaseStore;
use crate::mirror::generations::GenState;
use crate::mirror::outdated::{LeaseOutdatedGate, TokenSource, promotion_check};

/// Stable codes of this module (never renumbered; listed in docs/troubleshooting.md).
pub const CODE_NO_PEER: &str = "TDM-MDK-010";
pub const CODE_LEASE_READ: &str = "TDM-MDK-011";

/// What the daemon shares with every mirror_disk it builds.
#[derive(Clone)]
pub struct MirrorDeps {
    pub config: Arc<Config>,
    pub lease: Arc<LeaseStore>,
    /// The cluster certificates; the link is always TLS in tandemd.
    pub tls: Arc<PeerTls>,
}

/// The fencing token under which this node holds the group's lease while the mirror is promoted here: set by the
/// resource at start (from the invocation), cleared at stop; the Outdated gate writes under it.
#[derive(Debug, Default)]
pub struct TokenCell(Mutex<Option<u64>>);

impl TokenCell {
    pub fn set(&self, token: Option<u64>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }

    pub fn get(&self) -> Option<u64> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenSource for TokenCell {
    fn lease_token(&self) -> Option<u64> {
        self.get()
    }
}

/// The guard tandemd uses: the group's lease item, read after this node acquired the lease, and the local
/// metadata must both allow the promotion ([`promotion_check`]). A **fresh** replica (never synced, see
/// [`GenState::fresh`]) passes here: the resource then promotes it only through a link whose handshake makes it
/// the full-sync source of a peer that is fresh too, never alone.
pub struct LeaseGuard {
    lease: Arc<LeaseStore>,
    group: String,
    resource: String,
    me: String,
}

impl LeaseGuard {
    pub fn new(lease: Arc<LeaseStore>, group: &str, resource: &str, me: &str) -> LeaseGuard {
        LeaseGuard { lease, group: group.into(), resource: resource.into(), me: me.into() }
    }
}

#[async_trait::async_trait]
impl PromotionGuard for LeaseGuard {
    async fn check(&self, local: &GenState) -> Result<(), ResourceError> {
        if local.fresh() {
            return Ok(());
        }
        let record = self.lease.read(&self.group).await.map_err(|e| {
            ResourceError::new(
                ErrorClass::Soft,
                CODE_LEASE_READ,
                format!(
                    "mirror_disk {}: reading the lease of group {} before the promotion failed: [{}] {e}",
                    self.resource,
                    self.group,
                    e.code()
                ),
            )
        })?;
        promotion_check(record.as_ref(), &self.resource, &self.me, local)
            .map_err(|e| ResourceError::new(ErrorClass::Hard, e.code(), e.to_string()))
    }
}

/// The [`MirrorEnv`] of mirror_disk `resource` of `group` on node `me`, and the token cell its gate reads.
pub fn env_for(deps: &MirrorDeps, group: &str, resource: &str, me: &str) -> Result<MirrorEnv, ResourceError> {
    let config = &deps.config;
    let no_peer = |detail: String| {
        ResourceError::new(ErrorClass::Fatal, CODE_NO_PEER, format!("mirror_disk {resource}: {detail}"))
    };
    let g = config.groups.iter().find(|g| g.name == group).ok_or_else(|| no_peer(format!("no group {group:?}")))?;
    let peer_name = match g.servers.iter().filter(|s| *s != me).collect::<Vec<_>>().as_slice() {
        [peer] => (*peer).clone(),
        _ => return Err(no_peer(format!("group {group} must have exactly two servers, one of them {me}"))),
    };
    let port = config.mirror_port(resource).ok_or_else(|| no_peer("no mirror port (too many mirror disks)".into()))?;
    let address = |node: &str| {
        config
            .node_by_name(node)
            .map(|n| SocketAddr::from((config.mirror_connect.address_of(n), port)))
            .ok_or_else(|| no_peer(format!("node {node:?} is not in the config")))
    };
    let (local, peer) = (address(me)?, address(&peer_name)?);
    let token = Arc::new(TokenCell::default());
    let guard = Arc::new(LeaseGuard::new(Arc::clone(&deps.lease), group, resource, me));
    let gate = Arc::new(LeaseOutdatedGate::new(
        Arc::clone(&deps.lease),
        group,
        resource,
        me,
        peer_name.as_str(),
        Arc::clone(&token) as Arc<dyn TokenSource>,
    ));
    let mut env = MirrorEnv::new(local, peer, peer_name, Some(Arc::clone(&deps.tls)), guard, gate);
    env.token = token;
    let mount = g.resource(resource).and_then(|r| match &r.kind {
        crate::config::ResourceKind::MirrorDisk(md) => md.mount_point.clone(),
        _ => None,
    });
    env.attach = mount.is_some();
    tune(&mut env, config.heartbeat.timeout);
    Ok(env)
}

/// Link timing from the cluster's heartbeat timeout W: a peer that acknowledges nothing for W (clamped to
/// 1..5 s) is lost, like a node that sends no heartbeat for W; pings four times per W keep an idle link alive;
/// the secondary gives up a silent link after 3 W so that a returning primary's new link is not kept waiting.
fn tune(env: &mut MirrorEnv, heartbeat_timeout: Duration) {
    let ack = heartbeat_timeout.clamp(Duration::from_secs(1), Duration::from_secs(5));
    env.replication.ack_timeout = ack;
    env.replication.ping_interval = ack / 4;
    env.secondary.idle_timeout = ack * 3;
    env.reconnect_interval = Duration::from_secs(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_timing_follows_the_heartbeat_timeout_within_bounds() {
        let guard: Arc<dyn PromotionGuard> = Arc::new(|_: &GenState| Ok(()));
        let gate: Arc<dyn crate::mirror::replication::PeerLossGate> = Arc::new(AlwaysMarks);
        let addr: SocketAddr = "127.0.0.1:7410".parse().expect("addr");
        let mut env = MirrorEnv::new(addr, addr, "b", None, guard, gate);
        tune(&mut env, Duration::from_millis(500));
        assert_eq!(
            (env.replication.ack_timeout, env.secondary.idle_timeout),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
        tune(&mut env, Duration::from_secs(30));
        assert_eq!(env.replication.ack_timeout, Duration::from_secs(5));
        assert_eq!(env.replication.ping_interval, Duration::from_millis(1250));
    }

    struct AlwaysMarks;

    #[async_trait::async_trait]
    impl crate::mirror::replication::PeerLossGate for AlwaysMarks {
        async fn mark_peer_outdated(&self, _generation: u64) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn the_token_cell_is_what_the_gate_reads() {
        let cell = TokenCell::default();
        assert_eq!(cell.lease_token(), None);
        cell.set(Some(7));
        assert_eq!(cell.lease_token(), Some(7));
        cell.set(None);
        assert_eq!(cell.lease_token(), None);
    }
}
