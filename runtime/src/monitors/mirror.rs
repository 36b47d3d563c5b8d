//! `monitor "mirror"`: the replication state of a mirror disk, on both servers of its group (default
//! `when = "always"`).
//!
//! - On the primary (this node serves the export): the resource's probe decides first (a failed store or a dead
//!   export is an error with the resource's code, and recovery runs); a primary that lost its peer is a *warning*
//!   (TDM-MON-036: the writes are on this node only, the message says since when and how many bytes the peer
//!   misses); a running resync is ok, with its progress in the status.
//! - On the secondary: a primary's link being applied here is ok; no link is a *warning* (TDM-MON-037) — the
//!   group may be stopped everywhere, or the primary is degraded and will reconnect — never an error: a standby
//!   has nothing to recover.

use std::sync::Arc;

use super::{Check, Outcome};
use crate::mirror::replication::ReplicationState;
use crate::resources::{GroupResource, Invocation, Probe};

/// The primary runs without its peer: every write is on this node only.
pub const CODE_MIRROR_DEGRADED: &str = "TDM-MON-036";
/// This secondary receives no primary's link.
pub const CODE_MIRROR_NO_LINK: &str = "TDM-MON-037";

pub struct MirrorCheck {
    resource: Arc<dyn GroupResource>,
}

impl MirrorCheck {
    /// `resource` must be a mirror_disk (checked by [`super::build`]).
    pub fn new(resource: Arc<dyn GroupResource>) -> MirrorCheck {
        MirrorCheck { resource }
    }
}

#[async_trait::async_trait]
impl Check for MirrorCheck {
    fn kind(&self) -> &'static str {
        "mirror"
    }

    async fn check(&self) -> Outcome {
        let name = self.resource.name().to_string();
        let Some(mirror) = self.resource.mirror() else {
            return Outcome::error(super::resource::CODE_MIRROR_STOPPED, format!("{name} is not a mirror disk"));
        };
        let Some(status) = mirror.mirror_status().await else {
            return Outcome::Warn(format!("[{CODE_MIRROR_NO_LINK}] mirror disk {name}: its metadata is not open yet"));
        };
        if !status.serving && status.replication.is_none() {
            return if status.secondary_link {
                Outcome::Ok
            } else {
                Outcome::Warn(format!(
                    "[{CODE_MIRROR_NO_LINK}] mirror disk {name}: secondary ({}), no link from a primary: the group \
                     is stopped, or its primary runs degraded and reconnects",
                    crate::resources::mirror_disk::disk_state_name(status.disk)
                ))
            };
        }
        match self.resource.probe(&Invocation::default()).await {
            Ok(Probe::Running) => {}
            Ok(Probe::Stopped) => {
                return Outcome::error(
                    super::resource::CODE_MIRROR_STOPPED,
                    format!("mirror disk {name} is no longer active on this node"),
                );
            }
            Err(e) => return Outcome::Error { code: e.code, message: e.message },
        }
        match status.replication {
            Some(ReplicationState::Degraded { since, dirty_bytes, code, reason }) => {
                let since = since.elapsed().map_or_else(|_| "now".to_string(), |d| format!("{} s", d.as_secs()));
                let why = if code.is_empty() { reason } else { format!("[{code}] {reason}") };
                Outcome::Warn(format!(
                    "[{CODE_MIRROR_DEGRADED}] mirror disk {name}: the peer is lost for {since} ({why}); writes are \
                     on this node only, {dirty_bytes} bytes to resync when it returns"
                ))
            }
            _ => Outcome::Ok,
        }
    }
}
