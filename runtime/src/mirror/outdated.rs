//! The peer's Outdated mark in the group's lease record (issue 7).
//!
//! When the primary loses its peer, before it acknowledges any further write, [`LeaseOutdatedGate`] (the
//! [`PeerLossGate`] of the replicated store) writes `outdated.<resource> = {node: peer, generation, by: me, token}`
//! into the group's lease item with a conditional write that succeeds only while this node holds the lease under
//! its current fencing token ([`LeaseStore::mark_outdated`]). Until that write succeeds the writes are held.
//!
//! A node about to promote its replica reads the lease item (it must hold the lease first, so it reads it after any
//! mark the previous holder could still write) and calls [`promotion_check`]: a replica the lease marks outdated at a
//! generation this node does not have, or whose local metadata says Inconsistent or Outdated, is never promoted
//! automatically. See docs/mirror.md, "The Outdated mark".

use std::sync::Arc;

use async_trait::async_trait;

use super::generations::GenState;
use super::replication::PeerLossGate;
use super::superblock::DiskState;
use crate::membership::lease::{LeaseError, LeaseRecord, LeaseStore};

/// Why the mark could not be written. Codes are stable: never renumber, only append. (`TDM-MIR-064`, "no new
/// generation", is retired: the primary now picks the generation itself and passes it to the gate.)
#[derive(Debug, thiserror::Error)]
pub enum OutdatedError {
    #[error(
        "TDM-MIR-063: mirror {resource}: cannot mark peer {peer} outdated: this node holds no lease token for group \
         {group}; writes stay held until it does (or the store is shut down)"
    )]
    NoToken { group: String, resource: String, peer: String },
    #[error("mirror: marking the peer outdated in the lease failed: {0}")]
    Lease(#[from] LeaseError),
}

impl OutdatedError {
    pub fn code(&self) -> &'static str {
        match self {
            OutdatedError::NoToken { .. } => "TDM-MIR-063",
            OutdatedError::Lease(e) => e.code(),
        }
    }
}

/// Why this node's replica must not be promoted automatically. Codes are stable: never renumber, only append.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorPromoteError {
    #[error(
        "TDM-MIR-060: mirror {resource}: node {node} is marked outdated in the lease by {by} (token {token}) at \
         generation {generation:#018x}; this node has {mine:#018x}: not promoted. Wait for the resync from {by}, or \
         accept the data loss with `tandemctl mirror resolve`"
    )]
    MarkedOutdated { resource: String, node: String, by: String, token: u64, generation: u64, mine: u64 },
    #[error(
        "TDM-MIR-061: mirror {resource}: node {node}'s replica is Inconsistent (generation {mine:#018x}; a sync \
         never completed): not promoted. Wait for the resync to complete, or use `tandemctl mirror resolve`"
    )]
    Inconsistent { resource: String, node: String, mine: u64 },
    #[error(
        "TDM-MIR-062: mirror {resource}: node {node}'s replica is Outdated (generation {mine:#018x}): not promoted. \
         Wait for the resync from the peer, or accept the data loss with `tandemctl mirror resolve`"
    )]
    Outdated { resource: String, node: String, mine: u64 },
}

impl MirrorPromoteError {
    pub fn code(&self) -> &'static str {
        match self {
            MirrorPromoteError::MarkedOutdated { .. } => "TDM-MIR-060",
            MirrorPromoteError::Inconsistent { .. } => "TDM-MIR-061",
            MirrorPromoteError::Outdated { .. } => "TDM-MIR-062",
        }
    }
}

/// May this node promote its replica of mirror `resource`? `record` is the group's lease item as read after this
/// node acquired the lease, `local` its own metadata ([`GenState::of`] the superblock). Refuses a local disk
/// Inconsistent or Outdated, and a lease mark naming this node at a generation other than its current one (a
/// resync makes the target adopt the source's current generation, so an equal generation means it caught up).
/// Marks of other nodes or resources do not matter here.
pub fn promotion_check(
    record: Option<&LeaseRecord>,
    resource: &str,
    me: &str,
    local: &GenState,
) -> Result<(), MirrorPromoteError> {
    let (resource_s, node) = (resource.to_string(), me.to_string());
    match local.disk {
        DiskState::Inconsistent => {
            return Err(MirrorPromoteError::Inconsistent { resource: resource_s, node, mine: local.current });
        }
        DiskState::Outdated => {
            return Err(MirrorPromoteError::Outdated { resource: resource_s, node, mine: local.current });
        }
        DiskState::UpToDate => {}
    }
    match record.and_then(|r| r.outdated_mark(resource)) {
        Some(mark) if mark.node == me && mark.generation != local.current => Err(MirrorPromoteError::MarkedOutdated {
            resource: resource_s,
            node,
            by: mark.by.clone(),
            token: mark.token,
            generation: mark.generation,
            mine: local.current,
        }),
        _ => Ok(()),
    }
}

/// The fencing token under which this node holds the group's lease now (None: it does not hold it).
pub trait TokenSource: Send + Sync {
    fn lease_token(&self) -> Option<u64>;
}

impl<F: Fn() -> Option<u64> + Send + Sync> TokenSource for F {
    fn lease_token(&self) -> Option<u64> {
        self()
    }
}

/// The [`PeerLossGate`] that writes the peer's Outdated mark into the group's lease item. The generation named in
/// the mark is the one the primary passes: the new current generation it adopts for its degraded writes.
pub struct LeaseOutdatedGate {
    store: Arc<LeaseStore>,
    group: String,
    resource: String,
    me: String,
    peer: String,
    tokens: Arc<dyn TokenSource>,
}

impl LeaseOutdatedGate {
    /// A gate for mirror `resource` of `group`, run by node `me` against its `peer`.
    pub fn new(
        store: Arc<LeaseStore>,
        group: impl Into<String>,
        resource: impl Into<String>,
        me: impl Into<String>,
        peer: impl Into<String>,
        tokens: Arc<dyn TokenSource>,
    ) -> Self {
        LeaseOutdatedGate {
            store,
            group: group.into(),
            resource: resource.into(),
            me: me.into(),
            peer: peer.into(),
            tokens,
        }
    }

    /// Writes the mark once at `generation`: the token, then the conditional write.
    pub async fn mark(&self, generation: u64) -> Result<(), OutdatedError> {
        let token = self.tokens.lease_token().ok_or_else(|| OutdatedError::NoToken {
            group: self.group.clone(),
            resource: self.resource.clone(),
            peer: self.peer.clone(),
        })?;
        self.store.mark_outdated(&self.group, &self.resource, &self.peer, generation, &self.me, token).await?;
        Ok(())
    }
}

#[async_trait]
impl PeerLossGate for LeaseOutdatedGate {
    async fn mark_peer_outdated(&self, generation: u64) -> Result<(), String> {
        self.mark(generation).await.map_err(|e| format!("{}: {e}", e.code()))
    }

    /// Clears the peer's mark if it still names the peer at `generation` (`LeaseStore::clear_outdated`).
    async fn peer_caught_up(&self, generation: u64) -> Result<(), String> {
        self.store
            .clear_outdated(&self.group, &self.resource, &self.peer, generation)
            .await
            .map_err(|e| format!("{}: {e}", e.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::lease::{Holder, OutdatedMark};
    use crate::mirror::superblock::Role;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const RES: &str = "db-disk";

    fn local(disk: DiskState, current: u64) -> GenState {
        GenState { current, history: [0x10, 0, 0, 0], bitmap_uuid: 0, disk, role: Role::Secondary }
    }

    fn record(marks: &[(&str, &str, u64)]) -> LeaseRecord {
        let outdated: BTreeMap<String, OutdatedMark> = marks
            .iter()
            .map(|(res, node, generation)| {
                let mark = OutdatedMark { node: (*node).into(), generation: *generation, by: "a".into(), token: 4 };
                ((*res).to_string(), mark)
            })
            .collect();
        LeaseRecord {
            group: "g".into(),
            holder: Some(Holder { node: "b".into(), incarnation: 1 }),
            token: 5,
            ttl: Duration::from_secs(5),
            version: 9,
            target: None,
            stopped: false,
            outdated,
        }
    }

    fn code(r: Result<(), MirrorPromoteError>) -> Option<&'static str> {
        r.err().map(|e| e.code())
    }

    #[test]
    fn every_combination_of_disk_state_and_mark_is_decided() {
        use DiskState::{Inconsistent, Outdated, UpToDate};
        let mine = 0x20;
        // (disk, record, expected code)
        let none: Option<LeaseRecord> = None;
        let cases: Vec<(DiskState, Option<LeaseRecord>, Option<&str>)> = vec![
            (UpToDate, none.clone(), None),
            (UpToDate, Some(record(&[])), None),
            // Marked at a newer generation: refused.
            (UpToDate, Some(record(&[(RES, "b", 0x30)])), Some("TDM-MIR-060")),
            // Marked at this node's generation: the resync gave it that generation.
            (UpToDate, Some(record(&[(RES, "b", mine)])), None),
            // Marked at an older generation (an ancestor of mine): still a different one: refused.
            (UpToDate, Some(record(&[(RES, "b", 0x10)])), Some("TDM-MIR-060")),
            // Another node marked, or another resource: not this node's concern.
            (UpToDate, Some(record(&[(RES, "a", 0x30)])), None),
            (UpToDate, Some(record(&[("other-disk", "b", 0x30)])), None),
            (UpToDate, Some(record(&[("other-disk", "b", 0x30), (RES, "b", 0x30)])), Some("TDM-MIR-060")),
            // The local disk state refuses whatever the lease says.
            (Inconsistent, none.clone(), Some("TDM-MIR-061")),
            (Inconsistent, Some(record(&[(RES, "b", mine)])), Some("TDM-MIR-061")),
            (Inconsistent, Some(record(&[(RES, "b", 0x30)])), Some("TDM-MIR-061")),
            (Outdated, none.clone(), Some("TDM-MIR-062")),
            (Outdated, Some(record(&[(RES, "b", mine)])), Some("TDM-MIR-062")),
            (Outdated, Some(record(&[(RES, "a", 0x30)])), Some("TDM-MIR-062")),
        ];
        for (disk, rec, want) in cases {
            let got = code(promotion_check(rec.as_ref(), RES, "b", &local(disk, mine)));
            assert_eq!(got, want, "{disk:?} {rec:?}");
        }
    }

    #[test]
    fn refusal_names_the_node_the_generations_and_the_fix() {
        let rec = record(&[(RES, "b", 0x30)]);
        let e = promotion_check(Some(&rec), RES, "b", &local(DiskState::UpToDate, 0x20)).unwrap_err();
        let text = e.to_string();
        for part in ["TDM-MIR-060", "node b", "0x0000000000000030", "0x0000000000000020", "resync", "mirror resolve"] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        let e = promotion_check(None, RES, "b", &local(DiskState::Outdated, 0x20)).unwrap_err();
        assert!(e.to_string().contains("mirror resolve") && e.to_string().contains("node b"), "{e}");
    }

    #[test]
    fn the_other_node_may_promote_over_the_outdated_one() {
        let rec = record(&[(RES, "b", 0x30)]);
        assert!(promotion_check(Some(&rec), RES, "a", &local(DiskState::UpToDate, 0x30)).is_ok());
        assert!(promotion_check(Some(&rec), RES, "b", &local(DiskState::UpToDate, 0x20)).is_err());
    }

    #[test]
    fn error_codes_are_stable_and_distinct() {
        let p = [
            MirrorPromoteError::MarkedOutdated {
                resource: "r".into(),
                node: "b".into(),
                by: "a".into(),
                token: 1,
                generation: 2,
                mine: 3,
            },
            MirrorPromoteError::Inconsistent { resource: "r".into(), node: "b".into(), mine: 3 },
            MirrorPromoteError::Outdated { resource: "r".into(), node: "b".into(), mine: 3 },
        ];
        let codes: Vec<_> = p.iter().map(MirrorPromoteError::code).collect();
        assert_eq!(codes, ["TDM-MIR-060", "TDM-MIR-061", "TDM-MIR-062"]);
        for e in &p {
            assert!(e.to_string().starts_with(e.code()), "{e}");
        }
        let o = [
            OutdatedError::NoToken { group: "g".into(), resource: "r".into(), peer: "b".into() },
            OutdatedError::Lease(LeaseError::NotHolder { group: "g".into(), node: "a".into(), token: 1 }),
        ];
        let codes: Vec<_> = o.iter().map(OutdatedError::code).collect();
        assert_eq!(codes, ["TDM-MIR-063", "TDM-LEASE-002"]);
    }
}
