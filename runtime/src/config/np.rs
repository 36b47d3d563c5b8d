//! `np_resolution { }`: how a node that lost its peer decides whether *it* is the isolated one. It probes its
//! witnesses (ping, TCP connect, HTTP HEAD -> 200); when every witness that applies to it fails, it is
//! isolated and acts as `on_isolated` says.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::choice::choice;
use super::error::{ConfigPath, ErrorCode};
use super::monitor::HostPort;
use super::parse::{self, Cx, Reader, open_block};
use super::render::HclBlock;
use super::shape;
use super::validate::Validator;

pub const DEFAULT_NP_TIMEOUT: Duration = Duration::from_secs(2);

choice!(
    /// What an isolated node does with the groups it runs.
    pub enum IsolationAction {
        /// Log and keep running (the lease still stops it if it cannot renew).
        Warn = "warn",
        /// Stop every group it runs (default).
        StopGroups = "stop_groups",
        /// Stop the groups, then shut the OS down.
        Shutdown = "shutdown",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpResolution {
    /// Default stop_groups.
    pub on_isolated: IsolationAction,
    /// Time limit of one probe. Default 2s.
    pub timeout: Duration,
    /// The witnesses, in declaration order. Default: none (then only the lease decides).
    pub targets: Vec<NpTarget>,
}

impl Default for NpResolution {
    fn default() -> NpResolution {
        NpResolution { on_isolated: IsolationAction::StopGroups, timeout: DEFAULT_NP_TIMEOUT, targets: Vec::new() }
    }
}

/// One witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpTarget {
    pub probe: NpProbe,
    /// The nodes that use this witness (e.g. the NAT of their own zone). Default: empty = every node.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpProbe {
    /// ICMP echo to an address (e.g. the NAT instance of the node's zone).
    Ping { address: Ipv4Addr },
    /// TCP connect (e.g. the regional EC2 endpoint on 443).
    Tcp { address: HostPort },
    /// HTTP HEAD that must answer 200.
    Http { url: String },
}

impl NpProbe {
    pub fn kind_name(&self) -> &'static str {
        match self {
            NpProbe::Ping { .. } => "ping",
            NpProbe::Tcp { .. } => "tcp",
            NpProbe::Http { .. } => "http",
        }
    }
}

impl NpTarget {
    pub fn applies_to(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n == node)
    }
}

impl NpResolution {
    pub(crate) fn path() -> ConfigPath {
        ConfigPath::root().block("np_resolution", "", 0)
    }

    /// The witnesses `node` probes.
    pub fn targets_for<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a NpTarget> + 'a {
        self.targets.iter().filter(move |t| t.applies_to(node))
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<NpResolution> {
        let on_isolated = r.or(cx, "on_isolated", parse::choice::<IsolationAction>, IsolationAction::StopGroups);
        let timeout = r.or(cx, "timeout", parse::duration, DEFAULT_NP_TIMEOUT);
        let mut targets = Vec::new();
        let mut ok = true;
        let path = r.path.clone();
        for (ident, index, block) in r.blocks_of(&["ping", "tcp", "http"]) {
            let Some((mut br, _)) = open_block(cx, &path, block, index, &[]) else {
                ok = false;
                continue;
            };
            let probe = match ident {
                "ping" => br.req(cx, "address", parse::ipv4).map(|address| NpProbe::Ping { address }),
                "tcp" => br.req(cx, "address", HostPort::read).map(|address| NpProbe::Tcp { address }),
                _ => br.req(cx, "url", parse::string).map(|url| NpProbe::Http { url }),
            };
            let nodes = br.or(cx, "nodes", parse::string_list, Vec::new());
            br.finish(cx);
            match probe {
                Some(probe) => targets.push(NpTarget { probe, nodes }),
                None => ok = false,
            }
        }
        ok.then_some(NpResolution { on_isolated, timeout, targets })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.choice("on_isolated", self.on_isolated);
        b.duration("timeout", self.timeout);
        for target in &self.targets {
            b.child(target.probe.kind_name(), &[], |tb| {
                match &target.probe {
                    NpProbe::Ping { address } => tb.display("address", address),
                    NpProbe::Tcp { address } => tb.display("address", address),
                    NpProbe::Http { url } => tb.str("url", url),
                }
                tb.list("nodes", &target.nodes);
            });
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        let path = NpResolution::path();
        v.positive(&path.attr("timeout"), self.timeout);
        let mut counts = [0usize; 3];
        for target in &self.targets {
            let k = match target.probe {
                NpProbe::Ping { .. } => 0,
                NpProbe::Tcp { .. } => 1,
                NpProbe::Http { .. } => 2,
            };
            let tpath = path.block(target.probe.kind_name(), "", counts[k]);
            counts[k] += 1;
            match &target.probe {
                NpProbe::Ping { .. } => {}
                NpProbe::Tcp { address } => address.validate(v, &tpath.attr("address")),
                NpProbe::Http { url } => {
                    if let Err(message) = shape::check_http_url(url) {
                        let at = tpath.attr("url");
                        v.error(ErrorCode::BadEndpoint, &at, format!("{at}: {message}"));
                    }
                }
            }
            for (i, node) in target.nodes.iter().enumerate() {
                v.node_ref(&tpath.attr("nodes").index(i), node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{codes, two_nodes};

    #[test]
    fn targets_apply_to_listed_nodes_or_to_all() {
        let mut np = NpResolution::default();
        np.targets
            .push(NpTarget { probe: NpProbe::Ping { address: Ipv4Addr::new(10, 0, 0, 1) }, nodes: vec!["a".into()] });
        np.targets.push(NpTarget { probe: NpProbe::Http { url: "http://x/".into() }, nodes: vec![] });
        assert_eq!(np.targets_for("a").count(), 2);
        assert_eq!(np.targets_for("b").map(|t| t.probe.kind_name()).collect::<Vec<_>>(), vec!["http"]);
    }

    #[test]
    fn witnesses_keep_declaration_order_across_kinds() {
        let src = "cluster \"c\" {}\nnode \"a\" {\n  private_ip = \"10.0.0.1\"\n  availability_zone = \"us-east-1a\"\n}\n\
                   np_resolution {\n  tcp {\n    address = \"h:1\"\n  }\n  ping {\n    address = \"10.0.0.9\"\n  }\n  \
                   tcp {\n    address = \"h:2\"\n  }\n}\n";
        let c = crate::config::parse(src).unwrap();
        let kinds: Vec<&str> = c.np_resolution.targets.iter().map(|t| t.probe.kind_name()).collect();
        assert_eq!(kinds, vec!["tcp", "ping", "tcp"]);
        assert_eq!(crate::config::parse(&crate::config::render(&c)).unwrap(), c);
    }

    #[test]
    fn witness_nodes_and_urls_are_checked() {
        let mut c = two_nodes();
        c.np_resolution
            .targets
            .push(NpTarget { probe: NpProbe::Http { url: "ftp://x".into() }, nodes: vec!["z".into()] });
        assert_eq!(codes(&c), vec!["TDM-CFG-026", "TDM-CFG-011"]);
    }
}
