//! The handshake decision from generation identifiers (DRBD's rules, simplified). Pure code.
//!
//! Each node keeps a *current* generation (random, non-zero), a *history* of the previous four (most recent first)
//! and a *bitmap generation* (the generation its dirty bitmap is relative to, 0 = none). A primary that loses its
//! peer starts a new generation before its first degraded acknowledgement (old current → history, bitmap
//! generation = old current), so the peer's current is found in its history when the peer returns. A sync target
//! adopts the source's generations when its sync completes.
//!
//! [`decide`] is evaluated on both nodes with the arguments swapped and gives mirrored answers. Rules, first match
//! wins ("related" = the peer's current equals my bitmap generation or is in my history; "fresh" = Inconsistent
//! with an empty history):
//!
//! | # | condition | decision |
//! |---|---|---|
//! | 1 | same current, neither Inconsistent | `InSync` |
//! | 2 | same current, I am Inconsistent and the peer UpToDate (or the reverse) | `TargetFull` (`SourceFull`) |
//! | 2b | same current, I am Outdated and the peer UpToDate (or the reverse) | `TargetBitmap` (`SourceBitmap`) |
//! | 3 | both fresh | the Primary is `SourceFull`, the other `TargetFull`; same role → `Unrelated` |
//! | 4 | related both ways (a cycle) | `SplitBrain` |
//! | 5 | the peer's current is related to me and I am UpToDate | `SourceBitmap` |
//! | 6 | my current is related to the peer and the peer is UpToDate | `TargetBitmap` |
//! | 7 | I am UpToDate, the peer Inconsistent (no relation) | `SourceFull` |
//! | 8 | the peer is UpToDate, I am Inconsistent (no relation) | `TargetFull` |
//! | 9 | both consistent, different currents, a common ancestor in the histories | `SplitBrain` |
//! | 10 | anything else | `Unrelated` |
//!
//! `SplitBrain` and `Unrelated` refuse the link; nothing is written. An operator resolves them with `tandemctl
//! mirror resolve --discard NODE` ([`resolve_discard`](super::meta::resolve_discard)): the discarded node becomes
//! fresh, so rule 7/8 makes it a full sync target.

use super::superblock::{DiskState, HISTORY, Role, Superblock};

/// One node's generation state, as carried in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenState {
    pub current: u64,
    pub history: [u64; HISTORY],
    pub bitmap_uuid: u64,
    pub disk: DiskState,
    pub role: Role,
}

impl GenState {
    pub fn of(sb: &Superblock) -> Self {
        GenState { current: sb.current, history: sb.history, bitmap_uuid: sb.bitmap_uuid, disk: sb.disk, role: sb.role }
    }

    /// A fresh replica: Inconsistent with an empty history (never synced; e.g. a new node's first start).
    pub fn fresh(&self) -> bool {
        self.disk == DiskState::Inconsistent && self.history.iter().all(|g| *g == 0)
    }

    /// `other` is an ancestor of this state: my bitmap generation or in my history.
    fn knows(&self, other: u64) -> bool {
        other != 0 && (self.bitmap_uuid == other || self.history.contains(&other))
    }

    fn common_ancestor(&self, peer: &GenState) -> bool {
        let mine = self.history.iter().chain(std::iter::once(&self.bitmap_uuid));
        mine.filter(|g| **g != 0).any(|g| peer.history.contains(g) || peer.bitmap_uuid == *g)
    }
}

/// What the link does after the handshake, from this node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    InSync,
    /// I send the chunks of my dirty bitmap to the peer.
    SourceBitmap,
    /// The peer sends me the chunks of its dirty bitmap.
    TargetBitmap,
    /// I send the whole disk.
    SourceFull,
    /// The peer sends me the whole disk.
    TargetFull,
    /// Both nodes wrote independently since a common generation: refuse.
    SplitBrain,
    /// No usable relation: refuse.
    Unrelated,
}

impl Decision {
    /// The same decision seen from the peer.
    pub fn mirrored(self) -> Decision {
        match self {
            Decision::SourceBitmap => Decision::TargetBitmap,
            Decision::TargetBitmap => Decision::SourceBitmap,
            Decision::SourceFull => Decision::TargetFull,
            Decision::TargetFull => Decision::SourceFull,
            other => other,
        }
    }

    pub fn is_source(self) -> bool {
        matches!(self, Decision::SourceBitmap | Decision::SourceFull)
    }

    pub fn is_target(self) -> bool {
        matches!(self, Decision::TargetBitmap | Decision::TargetFull)
    }
}

/// Decide from my state and the peer's (see the module doc's table).
pub fn decide(mine: &GenState, peer: &GenState) -> Decision {
    use DiskState::{Inconsistent, Outdated, UpToDate};
    if mine.current == peer.current {
        return match (mine.disk, peer.disk) {
            (Inconsistent, UpToDate) => Decision::TargetFull,
            (UpToDate, Inconsistent) => Decision::SourceFull,
            // The peer's disk failed (or missed unflushed writes) while the generation did not move: the source's
            // bitmap holds what it may miss, and it turns UpToDate only at SYNC_DONE.
            (Outdated, UpToDate) => Decision::TargetBitmap,
            (UpToDate, Outdated) => Decision::SourceBitmap,
            (Inconsistent, _) | (_, Inconsistent) => Decision::Unrelated,
            _ => Decision::InSync,
        };
    }
    if mine.fresh() && peer.fresh() {
        return match (mine.role, peer.role) {
            (Role::Primary, Role::Secondary) => Decision::SourceFull,
            (Role::Secondary, Role::Primary) => Decision::TargetFull,
            _ => Decision::Unrelated,
        };
    }
    let peer_is_behind = mine.knows(peer.current);
    let i_am_behind = peer.knows(mine.current);
    match (peer_is_behind, i_am_behind) {
        (true, true) => return Decision::SplitBrain,
        (true, false) if mine.disk == UpToDate => return Decision::SourceBitmap,
        (false, true) if peer.disk == UpToDate => return Decision::TargetBitmap,
        _ => {}
    }
    match (mine.disk, peer.disk) {
        (UpToDate, Inconsistent) => Decision::SourceFull,
        (Inconsistent, UpToDate) => Decision::TargetFull,
        (Inconsistent, _) | (_, Inconsistent) => Decision::Unrelated,
        _ if mine.common_ancestor(peer) => Decision::SplitBrain,
        _ => Decision::Unrelated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiskState::{Inconsistent, Outdated, UpToDate};

    fn st(current: u64, history: [u64; 4], bitmap_uuid: u64, disk: DiskState, role: Role) -> GenState {
        GenState { current, history, bitmap_uuid, disk, role }
    }

    /// Every case is checked from both sides: the peer must reach the mirrored decision.
    fn check(mine: GenState, peer: GenState, want: Decision) {
        assert_eq!(decide(&mine, &peer), want, "mine {mine:?} peer {peer:?}");
        assert_eq!(decide(&peer, &mine), want.mirrored(), "mirrored: mine {peer:?} peer {mine:?}");
    }

    const P: Role = Role::Primary;
    const S: Role = Role::Secondary;
    const E: [u64; 4] = [0; 4];

    #[test]
    fn same_current_and_consistent_is_in_sync() {
        check(st(5, [4, 0, 0, 0], 0, UpToDate, P), st(5, [4, 0, 0, 0], 0, UpToDate, S), Decision::InSync);
        check(st(5, E, 0, Outdated, P), st(5, E, 0, Outdated, S), Decision::InSync);
    }

    #[test]
    fn same_current_with_an_outdated_side_resyncs_the_bitmap_from_the_up_to_date_one() {
        // The secondary's disk failed and the primary acknowledged nothing degraded (no new generation): the
        // secondary must get the primary's dirty chunks and turn UpToDate only at SYNC_DONE, not at the handshake.
        check(st(5, E, 0, UpToDate, P), st(5, E, 0, Outdated, S), Decision::SourceBitmap);
    }

    #[test]
    fn same_current_with_an_inconsistent_side_is_a_full_sync_from_the_up_to_date_one() {
        check(st(5, E, 0, UpToDate, P), st(5, E, 0, Inconsistent, S), Decision::SourceFull);
        check(st(5, [1, 0, 0, 0], 0, Outdated, P), st(5, E, 0, Inconsistent, S), Decision::Unrelated);
    }

    #[test]
    fn a_fresh_pair_syncs_fully_from_the_primary() {
        check(st(1, E, 0, Inconsistent, P), st(2, E, 0, Inconsistent, S), Decision::SourceFull);
        check(st(1, E, 0, Inconsistent, S), st(2, E, 0, Inconsistent, S), Decision::Unrelated);
        check(st(1, E, 0, Inconsistent, P), st(2, E, 0, Inconsistent, P), Decision::Unrelated);
    }

    #[test]
    fn a_returning_peer_found_in_my_history_gets_my_bitmap() {
        check(st(9, [5, 0, 0, 0], 5, UpToDate, P), st(5, E, 0, UpToDate, S), Decision::SourceBitmap);
        check(st(9, [8, 5, 0, 0], 8, UpToDate, P), st(5, E, 0, Outdated, S), Decision::SourceBitmap);
        // Only the bitmap generation knows it (history rotated out): still a bitmap sync.
        check(st(9, [8, 7, 6, 4], 5, UpToDate, P), st(5, E, 0, UpToDate, S), Decision::SourceBitmap);
        // An interrupted bitmap sync target is Inconsistent with its old current: the sync resumes.
        check(st(9, [5, 0, 0, 0], 5, UpToDate, P), st(5, E, 0, Inconsistent, S), Decision::SourceBitmap);
    }

    #[test]
    fn a_newer_peer_that_is_not_up_to_date_cannot_be_a_source() {
        check(st(9, [5, 0, 0, 0], 5, Outdated, S), st(5, E, 0, UpToDate, P), Decision::Unrelated);
    }

    #[test]
    fn no_common_ancestor_and_one_side_inconsistent_is_a_full_sync() {
        check(st(9, [8, 0, 0, 0], 0, UpToDate, S), st(3, [1, 0, 0, 0], 0, Inconsistent, P), Decision::SourceFull);
        // A discarded node (resolve --discard) is fresh: full target whatever its role.
        check(st(9, [5, 0, 0, 0], 5, UpToDate, P), st(77, E, 0, Inconsistent, S), Decision::SourceFull);
    }

    #[test]
    fn independent_advances_from_a_common_generation_are_split_brain() {
        check(st(9, [5, 0, 0, 0], 5, UpToDate, P), st(7, [5, 0, 0, 0], 5, UpToDate, P), Decision::SplitBrain);
        check(st(9, [6, 5, 0, 0], 6, UpToDate, P), st(7, [5, 0, 0, 0], 5, Outdated, S), Decision::SplitBrain);
        // A cycle (each knows the other's current) cannot be ordered.
        check(st(9, [7, 0, 0, 0], 0, UpToDate, P), st(7, [9, 0, 0, 0], 0, UpToDate, S), Decision::SplitBrain);
    }

    #[test]
    fn unrelated_consistent_disks_are_refused() {
        check(st(9, [8, 0, 0, 0], 0, UpToDate, P), st(7, [6, 0, 0, 0], 0, UpToDate, S), Decision::Unrelated);
        check(st(9, E, 0, UpToDate, P), st(7, E, 0, Outdated, S), Decision::Unrelated);
        check(st(9, [8, 0, 0, 0], 0, Outdated, P), st(7, [1, 0, 0, 0], 0, Inconsistent, S), Decision::Unrelated);
    }

    #[test]
    fn zero_is_never_an_ancestor() {
        let a = st(9, E, 0, UpToDate, P);
        assert!(!a.knows(0));
        assert!(!a.common_ancestor(&st(7, E, 0, UpToDate, S)));
    }
}
