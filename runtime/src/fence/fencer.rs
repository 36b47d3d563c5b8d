//! The fencer's state: what each group may run until, and what to kill when that time passes. Pure (time is a
//! parameter, the kill is the caller's), so every rule is a unit test; `server.rs` does the I/O.

use std::collections::BTreeMap;

use super::protocol::{Fired, GroupState, Reply, Request};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    token: u64,
    deadline_ns: u64,
    cgroups: Vec<String>,
    fired: Option<Fired>,
}

/// The groups tandemd armed, by name.
#[derive(Debug, Default)]
pub struct Fencer {
    groups: BTreeMap<String, Entry>,
}

/// A kill that is due: the group and its cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub group: String,
    pub cgroups: Vec<String>,
}

impl Fencer {
    /// Applies one request. The newest ARM of a group wins, earlier or later than the one before: requests arrive
    /// in the order tandemd made them, and a deadline tandemd computed can only be one it was entitled to then.
    pub fn handle(&mut self, req: Request) -> Vec<Reply> {
        match req {
            Request::Arm { group, token, deadline_ns, cgroups } => {
                self.groups.insert(group, Entry { token, deadline_ns, cgroups, fired: None });
                vec![Reply::Ok]
            }
            Request::Disarm { group } => {
                self.groups.remove(&group);
                vec![Reply::Ok]
            }
            Request::State => {
                let mut out: Vec<Reply> = self
                    .groups
                    .iter()
                    .map(|(g, e)| {
                        Reply::Group(GroupState {
                            group: g.clone(),
                            token: e.token,
                            deadline_ns: e.deadline_ns,
                            fired: e.fired,
                        })
                    })
                    .collect();
                out.push(Reply::End);
                out
            }
        }
    }

    /// The earliest deadline still to enforce.
    pub fn next_deadline(&self) -> Option<u64> {
        self.groups.values().filter(|e| e.fired.is_none()).map(|e| e.deadline_ns).min()
    }

    /// Groups whose deadline is at or before `now_ns` and that were not fired yet.
    pub fn due(&self, now_ns: u64) -> Vec<Due> {
        self.groups
            .iter()
            .filter(|(_, e)| e.fired.is_none() && e.deadline_ns <= now_ns)
            .map(|(g, e)| Due { group: g.clone(), cgroups: e.cgroups.clone() })
            .collect()
    }

    pub fn deadline_of(&self, group: &str) -> Option<u64> {
        self.groups.get(group).map(|e| e.deadline_ns)
    }

    /// Records that the kill of `group` ran at `at_ns` (`ok`: every cgroup emptied). A group re-armed meanwhile
    /// keeps its new arm.
    pub fn fired(&mut self, group: &str, at_ns: u64, ok: bool) {
        if let Some(e) = self.groups.get_mut(group)
            && e.fired.is_none()
            && e.deadline_ns <= at_ns
        {
            e.fired = Some(Fired { at_ns, ok });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(group: &str, token: u64, deadline_ns: u64) -> Request {
        Request::Arm { group: group.into(), token, deadline_ns, cgroups: vec![format!("/cg/{group}")] }
    }

    #[test]
    fn nothing_is_due_before_the_deadline_and_everything_at_it() {
        let mut f = Fencer::default();
        assert_eq!(f.handle(arm("a", 1, 100)), vec![Reply::Ok]);
        f.handle(arm("b", 1, 200));
        assert_eq!(f.next_deadline(), Some(100));
        assert!(f.due(99).is_empty());
        assert_eq!(f.due(100), vec![Due { group: "a".into(), cgroups: vec!["/cg/a".into()] }]);
        assert_eq!(f.due(250).len(), 2);
    }

    #[test]
    fn a_renewal_moves_the_deadline_and_a_disarm_forgets_the_group() {
        let mut f = Fencer::default();
        f.handle(arm("a", 1, 100));
        f.handle(arm("a", 1, 300));
        assert!(f.due(200).is_empty());
        f.handle(Request::Disarm { group: "a".into() });
        assert!(f.due(1000).is_empty());
        assert_eq!(f.next_deadline(), None);
    }

    #[test]
    fn a_fired_group_is_not_fired_twice_and_reports_it() {
        let mut f = Fencer::default();
        f.handle(arm("a", 4, 100));
        f.fired("a", 101, true);
        assert!(f.due(500).is_empty());
        assert_eq!(f.next_deadline(), None);
        let state = f.handle(Request::State);
        assert_eq!(
            state,
            vec![
                Reply::Group(GroupState {
                    group: "a".into(),
                    token: 4,
                    deadline_ns: 100,
                    fired: Some(Fired { at_ns: 101, ok: true })
                }),
                Reply::End
            ]
        );
    }

    #[test]
    fn a_stale_arm_after_the_deadline_fires_again_at_once() {
        // A frozen tandemd that resumes may send an ARM it computed before the freeze: its deadline has passed,
        // so the kill runs again rather than waiting.
        let mut f = Fencer::default();
        f.handle(arm("a", 1, 100));
        f.fired("a", 100, true);
        f.handle(arm("a", 1, 90));
        assert_eq!(f.due(500).len(), 1);
    }

    #[test]
    fn a_kill_result_for_an_arm_that_was_replaced_is_ignored() {
        let mut f = Fencer::default();
        f.handle(arm("a", 1, 100));
        f.handle(arm("a", 2, 900));
        f.fired("a", 150, true);
        assert_eq!(f.next_deadline(), Some(900), "the new arm stands");
    }
}
