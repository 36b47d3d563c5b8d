//! `group "<name>" { }`: a failover group — the servers that may run it, in priority order, the failback
//! policy, and its resources, started in dependency order (declaration order among independent ones) and
//! stopped in the reverse order.

use super::choice::choice;
use super::error::{ConfigPath, ErrorCode};
use super::parse::{self, Cx, Reader, open_block};
use super::render::HclBlock;
use super::resources::Resource;
use super::validate::Validator;

choice!(
    /// What happens when a server with a higher priority than the current one comes back.
    pub enum Failback {
        /// Stay where it is until an operator moves it (default).
        Manual = "manual",
        /// Move back to the highest-priority server that is up.
        Auto = "auto",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Node names, highest priority first. At least one.
    pub servers: Vec<String>,
    /// Default manual.
    pub failback: Failback,
    /// In declaration order.
    pub resources: Vec<Resource>,
}

impl Group {
    pub fn new(name: &str, servers: &[&str]) -> Group {
        Group {
            name: name.to_string(),
            servers: servers.iter().map(ToString::to_string).collect(),
            failback: Failback::Manual,
            resources: Vec::new(),
        }
    }

    pub(crate) fn path(&self, index: usize) -> ConfigPath {
        ConfigPath::root().block("group", &self.name, index)
    }

    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// 0 for the first server; None for a node that may not run the group.
    pub fn priority_of(&self, node: &str) -> Option<usize> {
        self.servers.iter().position(|s| s == node)
    }

    /// The order in which to start the resources: every resource after its dependencies, otherwise in
    /// declaration order. (For a config with a cycle, which validation rejects, the resources of the cycle
    /// come last in declaration order.)
    pub fn start_order(&self) -> Vec<&Resource> {
        let mut done = vec![false; self.resources.len()];
        let mut order = Vec::with_capacity(self.resources.len());
        loop {
            let next = (0..self.resources.len()).find(|&i| {
                !done[i]
                    && self.resources[i]
                        .depends_on
                        .iter()
                        .all(|d| self.resources.iter().position(|r| &r.name == d).is_none_or(|j| done[j]))
            });
            match next {
                Some(i) => {
                    done[i] = true;
                    order.push(&self.resources[i]);
                }
                None => break,
            }
        }
        order.extend(self.resources.iter().enumerate().filter(|(i, _)| !done[*i]).map(|(_, r)| r));
        order
    }

    /// The reverse of [`Group::start_order`].
    pub fn stop_order(&self) -> Vec<&Resource> {
        let mut order = self.start_order();
        order.reverse();
        order
    }

    /// The dependency cycles, one per back edge of a depth-first search: the resource indices along the cycle,
    /// and the index (in the first one's `depends_on`) of the edge that leaves it.
    fn cycles(&self) -> Vec<(Vec<usize>, usize)> {
        #[derive(Clone, Copy, PartialEq)]
        enum Colour {
            White,
            Grey,
            Black,
        }
        fn visit(
            g: &Group,
            i: usize,
            colour: &mut [Colour],
            stack: &mut Vec<(usize, usize)>,
            found: &mut Vec<(Vec<usize>, usize)>,
        ) {
            colour[i] = Colour::Grey;
            for (k, dep) in g.resources[i].depends_on.iter().enumerate() {
                let Some(j) = g.resources.iter().position(|r| &r.name == dep) else { continue };
                stack.push((i, k));
                match colour[j] {
                    Colour::White => visit(g, j, colour, stack, found),
                    Colour::Grey => {
                        let start = stack.iter().position(|(n, _)| *n == j).unwrap_or(0);
                        let cycle: Vec<usize> = stack[start..].iter().map(|(n, _)| *n).collect();
                        found.push((cycle, stack[start].1));
                    }
                    Colour::Black => {}
                }
                stack.pop();
            }
            colour[i] = Colour::Black;
        }
        let mut colour = vec![Colour::White; self.resources.len()];
        let mut found = Vec::new();
        for i in 0..self.resources.len() {
            if colour[i] == Colour::White {
                visit(self, i, &mut colour, &mut Vec::new(), &mut found);
            }
        }
        found
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader, name: &str) -> Option<Group> {
        let servers = r.req(cx, "servers", parse::string_list);
        let failback = r.or(cx, "failback", parse::choice::<Failback>, Failback::Manual);
        let path = r.path.clone();
        let mut resources = Vec::new();
        let mut ok = true;
        for (index, block) in r.blocks("resource").into_iter().enumerate() {
            let resource = open_block(cx, &path, block, index, &["kind", "name"]).and_then(|(mut br, labels)| {
                let res = Resource::read(cx, &mut br, &labels[0], &labels[1]);
                br.finish(cx);
                res
            });
            match resource {
                Some(res) => resources.push(res),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(Group { name: name.to_string(), servers: servers?, failback, resources })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.list("servers", &self.servers);
        b.choice("failback", self.failback);
        for resource in &self.resources {
            b.child("resource", &[resource.kind.kind_name(), &resource.name], |rb| resource.render(rb));
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator, index: usize) {
        let path = self.path(index);
        v.name(&path, &self.name, "group");
        if self.servers.is_empty() {
            let at = path.attr("servers");
            v.error(ErrorCode::Empty, &at, format!("{at}: group {:?} has no servers", self.name));
        }
        v.distinct(&path.attr("servers"), &self.servers, "server");
        for (i, server) in self.servers.iter().enumerate() {
            v.node_ref(&path.attr("servers").index(i), server);
        }
        for (ri, resource) in self.resources.iter().enumerate() {
            let rpath = path.block("resource", &resource.name, ri);
            resource.validate(v, &rpath, self);
            for (k, dep) in resource.depends_on.iter().enumerate() {
                if self.resource(dep).is_none() {
                    let at = rpath.attr("depends_on").index(k);
                    let elsewhere = v.config.resource_by_name(dep).map(|(g, _)| g.name.clone());
                    let message = match elsewhere {
                        Some(other) => {
                            format!("{at}: {dep:?} is a resource of group {other:?}; dependencies stay within a group")
                        }
                        None => format!("{at}: group {:?} has no resource named {dep:?}", self.name),
                    };
                    v.error(ErrorCode::UnknownReference, &at, message);
                }
            }
            v.distinct(&rpath.attr("depends_on"), &resource.depends_on, "dependency");
        }
        for (cycle, edge) in self.cycles() {
            let first = &self.resources[cycle[0]];
            let at = path.block("resource", &first.name, cycle[0]).attr("depends_on").index(edge);
            let mut names: Vec<&str> = cycle.iter().map(|&i| self.resources[i].name.as_str()).collect();
            names.push(&first.name);
            v.error(ErrorCode::DependencyCycle, &at, format!("{at}: dependency cycle {}", names.join(" -> ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resources::{Exec, ResourceKind};

    fn group(deps: &[(&str, &[&str])]) -> Group {
        let mut g = Group::new("g", &["a"]);
        for (name, on) in deps {
            let mut r = Resource::new(name, ResourceKind::Exec(Exec::new("true")));
            r.depends_on = on.iter().map(ToString::to_string).collect();
            g.resources.push(r);
        }
        g
    }

    fn names(rs: Vec<&Resource>) -> Vec<&str> {
        rs.into_iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn start_order_puts_dependencies_first_and_keeps_declaration_order_otherwise() {
        let g = group(&[("vip", &["app"]), ("app", &["disk"]), ("disk", &[]), ("dns", &[])]);
        assert_eq!(names(g.start_order()), vec!["disk", "app", "vip", "dns"]);
        assert_eq!(names(g.stop_order()), vec!["dns", "vip", "app", "disk"]);
    }

    #[test]
    fn cycles_are_found_with_the_edge_that_closes_them() {
        let g = group(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["d"])]);
        let cycles = g.cycles();
        assert_eq!(cycles, vec![(vec![0, 1, 2], 0), (vec![3], 0)]);
        assert!(group(&[("a", &["b"]), ("b", &[])]).cycles().is_empty());
    }
}
