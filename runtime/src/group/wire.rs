//! What a node tells its peers about its groups, in the state field of every heartbeat.
//!
//! Layout: one version byte ([`VERSION`]), one node-flags byte, then one byte per group of the config, in config
//! order: the low nibble is the [`Role`], bit 4 is the vouch ([`GroupWire::vouch`]). Unknown versions decode as
//! "nothing known", so a mixed-version cluster degrades to the lease alone instead of misreading each other.

use super::Role;

pub const VERSION: u8 = 1;
/// Node flag: the node is leaving (clean stop); its groups are moving away.
pub const NODE_LEAVING: u8 = 0x01;
const VOUCH: u8 = 0x10;
const ROLE_MASK: u8 = 0x0f;

/// One group as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupWire {
    pub role: Role,
    /// "I do not contend for this group's lease while I keep sending this": lets the holder keep running the
    /// group on the heartbeat's echo when the lease store is unreachable (docs/architecture.md, "Vouching").
    pub vouch: bool,
}

/// A node's published state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeWire {
    pub flags: u8,
    pub groups: Vec<GroupWire>,
}

impl NodeWire {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.groups.len());
        out.push(VERSION);
        out.push(self.flags);
        for g in &self.groups {
            out.push(g.role.code() | if g.vouch { VOUCH } else { 0 });
        }
        out
    }

    /// Decodes a peer's state; `None` for an empty, foreign-version or malformed field (treated as unknown).
    pub fn decode(bytes: &[u8]) -> Option<NodeWire> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let (&flags, groups) = rest.split_first()?;
        let groups = groups
            .iter()
            .map(|b| Some(GroupWire { role: Role::from_code(b & ROLE_MASK)?, vouch: b & VOUCH != 0 }))
            .collect::<Option<Vec<_>>>()?;
        Some(NodeWire { flags, groups })
    }

    pub fn group(&self, index: usize) -> Option<GroupWire> {
        self.groups.get(index).copied()
    }

    pub fn leaving(&self) -> bool {
        self.flags & NODE_LEAVING != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_role_with_and_without_vouch() {
        let roles = [Role::Offline, Role::Standby, Role::Starting, Role::Active, Role::Stopping, Role::Failed];
        let groups: Vec<GroupWire> = roles
            .iter()
            .flat_map(|&role| [GroupWire { role, vouch: false }, GroupWire { role, vouch: true }])
            .collect();
        let w = NodeWire { flags: NODE_LEAVING, groups };
        let back = NodeWire::decode(&w.encode()).expect("decodes");
        assert_eq!(back, w);
        assert!(back.leaving());
    }

    #[test]
    fn foreign_or_malformed_state_is_unknown() {
        assert_eq!(NodeWire::decode(&[]), None);
        assert_eq!(NodeWire::decode(&[VERSION]), None);
        assert_eq!(NodeWire::decode(&[VERSION + 1, 0, 3]), None);
        assert_eq!(NodeWire::decode(&[VERSION, 0, 0x0e]), None, "role 14 does not exist");
        assert_eq!(NodeWire::decode(&[VERSION, 0]).map(|w| w.groups.len()), Some(0));
    }
}
