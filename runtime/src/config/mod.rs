//! The cluster config: the one contract between the Terraform provider (`tandem_cluster` renders it) and the
//! node daemon (tandemd reads it). HCL in, validated typed config out; errors carry a stable code
//! (`TDM-CFG-NNN`), a message naming the object, a fix hint, a [`ConfigPath`] and, for text, line and column.
//!
//! ```text
//! parse / parse_named / load   text -> Config (syntax, types, implied objects, validation)
//! Config::validate             the same rules for a Config built in code (the provider)
//! render                       Config -> canonical HCL; parse(render(c)) == c
//! Config::find_self            which node this machine is (--node NAME, or a local address)
//! ```
//! docs/runtime-config.md documents every block, field, default and error code.

pub(crate) mod choice;
pub mod duration;
pub mod error;
pub mod parse;
pub mod render;
pub mod shape;
pub mod validate;

pub mod arbitration;
pub mod cluster;
pub mod group;
pub mod interconnect;
pub mod monitor;
pub mod np;
pub mod overrides;
pub mod resources;
pub mod secrets;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use hcl::edit::structure::Body;

pub use self::arbitration::Arbitration;
pub use self::choice::Choice;
pub use self::cluster::{Cluster, Node};
pub use self::duration::{format_duration, parse_duration};
pub use self::error::{ConfigError, ConfigErrors, ConfigPath, ErrorCode, Location, PathSegment};
pub use self::group::{Failback, Group};
pub use self::interconnect::{Heartbeat, Interconnect, MirrorConnect};
pub use self::monitor::{
    AwsErrorPolicy, FinalAction, HostPort, Monitor, MonitorKind, MonitorSettings, RecoveryAction, RecoveryTarget, When,
};
pub use self::np::{IsolationAction, NpProbe, NpResolution, NpTarget};
pub use self::parse::{load, parse, parse_named};
pub use self::render::render;
pub use self::resources::{
    AwsDns, AwsEip, AwsVip, Exec, Filesystem, MirrorDisk, Resource, ResourceKind, aws_dns::AwsDnsNode,
    aws_vip::AwsVipNode, exec::ExecNode, mirror_disk::MirrorDiskNode,
};
pub use self::secrets::Secrets;

use self::parse::{Cx, Reader, open_block};
use self::render::HclBlock;

/// A whole cluster config. Build one in code (every section has `Default` with the documented defaults), call
/// [`Config::fill_implied`], [`Config::validate`] and [`render`]; or [`parse`] text, which does all three checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cluster: Cluster,
    pub secrets: Secrets,
    pub heartbeat: Heartbeat,
    /// Networks for heartbeats; at least one (the parser adds `interconnect "primary"` when none is written).
    pub interconnects: Vec<Interconnect>,
    pub mirror_connect: MirrorConnect,
    pub np_resolution: NpResolution,
    pub arbitration: Arbitration,
    pub nodes: Vec<Node>,
    pub groups: Vec<Group>,
    /// Explicit monitors and, after [`Config::fill_implied`], the implied ones.
    pub monitors: Vec<Monitor>,
}

impl Config {
    /// A config with `name`, no nodes, no groups and every other section at its defaults.
    pub fn new(name: &str) -> Config {
        Config {
            cluster: Cluster::new(name),
            secrets: Secrets::default(),
            heartbeat: Heartbeat::default(),
            interconnects: Vec::new(),
            mirror_connect: MirrorConnect::default(),
            np_resolution: NpResolution::default(),
            arbitration: Arbitration::default(),
            nodes: Vec::new(),
            groups: Vec::new(),
            monitors: Vec::new(),
        }
    }

    /// Runs every offline validation rule; the errors carry paths (no positions: there is no text).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let errors = validate::check(self);
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors { file: "<config>".to_string(), errors }) }
    }

    /// Adds what the guides add without being asked, so that the rendered file is explicit:
    /// - `interconnect "primary"` (port 7400, each node's private IP) when there is no interconnect;
    /// - one monitor per `aws_vip` / `aws_eip` / `aws_dns` resource that no monitor of the same kind targets,
    ///   named `<resource>-monitor` (with a numeric suffix if that name is taken), at the kind's defaults.
    ///
    /// Idempotent: a second call adds nothing.
    pub fn fill_implied(&mut self) {
        if self.interconnects.is_empty() {
            self.interconnects.push(Interconnect::default());
        }
        let mut implied = Vec::new();
        for group in &self.groups {
            for resource in &group.resources {
                let Some(kind) = MonitorKind::implied_for(resource) else { continue };
                let covered = self.monitors.iter().chain(implied.iter()).any(|m: &Monitor| {
                    m.kind.kind_name() == kind.kind_name() && m.kind.resource() == Some(&resource.name)
                });
                if covered {
                    continue;
                }
                let base = format!("{}-monitor", resource.name);
                let taken = |n: &str| self.monitors.iter().chain(implied.iter()).any(|m| m.name == n);
                let mut name = base.clone();
                let mut suffix = 2;
                while taken(&name) {
                    name = format!("{base}-{suffix}");
                    suffix += 1;
                }
                implied.push(Monitor::new(&name, kind));
            }
        }
        self.monitors.extend(implied);
    }

    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The resource `name` and its group.
    pub fn resource_by_name(&self, name: &str) -> Option<(&Group, &Resource)> {
        self.groups.iter().find_map(|g| g.resources.iter().find(|r| r.name == name).map(|r| (g, r)))
    }

    pub fn monitor_by_name(&self, name: &str) -> Option<&Monitor> {
        self.monitors.iter().find(|m| m.name == name)
    }

    /// Every address that identifies `node`: its private IP, its interconnect and its mirror addresses.
    pub fn addresses_of(&self, node: &Node) -> Vec<Ipv4Addr> {
        let mut out = vec![node.private_ip];
        out.extend(self.interconnects.iter().map(|i| i.address_of(node)));
        out.push(self.mirror_connect.address_of(node));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The node that owns one of `local` (this machine's addresses): matches private IPs and interconnect /
    /// mirror addresses. Exactly one node must match.
    pub fn node_by_local_addresses(&self, local: &[IpAddr]) -> Result<&Node, ConfigError> {
        let local_v4: Vec<Ipv4Addr> = local
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(v6) => v6.to_ipv4_mapped(),
            })
            .collect();
        let matches: Vec<&Node> =
            self.nodes.iter().filter(|n| self.addresses_of(n).iter().any(|a| local_v4.contains(a))).collect();
        match matches.as_slice() {
            [node] => Ok(node),
            [] => {
                let shown: Vec<String> = local.iter().map(ToString::to_string).collect();
                Err(ConfigError::new(
                    ErrorCode::SelfNotFound,
                    ConfigPath::root(),
                    format!(
                        "no node of cluster {:?} has one of this machine's addresses ({})",
                        self.cluster.name,
                        shown.join(", ")
                    ),
                ))
            }
            several => {
                let names: Vec<String> = several.iter().map(|n| format!("{:?}", n.name)).collect();
                Err(ConfigError::new(
                    ErrorCode::SelfAmbiguous,
                    ConfigPath::root(),
                    format!("this machine has addresses of several nodes: {}", names.join(", ")),
                ))
            }
        }
    }

    /// Which node this machine is: `--node NAME` when given, else by local address.
    pub fn find_self(&self, name: Option<&str>, local: &[IpAddr]) -> Result<&Node, ConfigError> {
        match name {
            Some(name) => self.node_by_name(name).ok_or_else(|| {
                let known: Vec<String> = self.nodes.iter().map(|n| format!("{:?}", n.name)).collect();
                ConfigError::new(
                    ErrorCode::UnknownSelf,
                    ConfigPath::root(),
                    format!(
                        "--node {name:?} is not a node of cluster {:?} (nodes: {})",
                        self.cluster.name,
                        known.join(", ")
                    ),
                )
            }),
            None => self.node_by_local_addresses(local),
        }
    }

    /// The lease table's region: `arbitration.region`, else the region of the first node's zone.
    pub fn lease_region(&self) -> Option<String> {
        self.arbitration
            .region
            .clone()
            .or_else(|| self.nodes.first().and_then(|n| shape::region_of_az(&n.availability_zone).ok()))
    }

    /// The lease table's name: `arbitration.table`, else `tandem-<cluster>-leases`.
    pub fn lease_table(&self) -> String {
        self.arbitration.table.clone().unwrap_or_else(|| format!("tandem-{}-leases", self.cluster.name))
    }

    /// Every TCP/UDP port the cluster listens on, for security group rules: (what, protocol, port).
    pub fn ports(&self) -> Vec<(String, &'static str, u16)> {
        let mut out = vec![("control API".to_string(), "tcp", self.cluster.api_port)];
        for i in &self.interconnects {
            out.push((format!("interconnect {:?} heartbeat", i.name), "udp", i.port));
        }
        for (i, (g, r)) in self.mirror_disks().enumerate() {
            let what =
                if i == 0 { "mirror connect".to_string() } else { format!("mirror connect ({}/{})", g.name, r.name) };
            if let Some(port) = self.mirror_connect.port.checked_add(i as u16) {
                out.push((what, "tcp", port));
            }
        }
        out
    }

    /// Every mirror_disk resource with its group, in config order.
    pub fn mirror_disks(&self) -> impl Iterator<Item = (&Group, &Resource)> {
        self.groups
            .iter()
            .flat_map(|g| g.resources.iter().map(move |r| (g, r)))
            .filter(|(_, r)| matches!(r.kind, ResourceKind::MirrorDisk(_)))
    }

    /// The TCP port of mirror_disk `resource`'s replication link: `mirror_connect.port` for the first mirror disk
    /// of the config, the next port for the second, and so on (one link per disk, no multiplexing).
    pub fn mirror_port(&self, resource: &str) -> Option<u16> {
        let index = self.mirror_disks().position(|(_, r)| r.name == resource)?;
        self.mirror_connect.port.checked_add(u16::try_from(index).ok()?)
    }

    fn read(cx: &mut Cx, body: &Body) -> Option<Config> {
        let root = ConfigPath::root();
        let mut r = Reader::new(body, root.clone());
        let mut ok = true;

        let cluster = match r.single_block(cx, "cluster") {
            Some(block) => open_block(cx, &root, block, 0, &["name"]).and_then(|(mut br, labels)| {
                let c = Cluster::read(cx, &mut br, &labels[0]);
                br.finish(cx);
                c
            }),
            None => {
                cx.error(
                    ErrorCode::Missing,
                    &root,
                    "the config has no cluster block (write: cluster \"<name>\" { })".to_string(),
                );
                None
            }
        };
        ok &= cluster.is_some();

        let secrets = read_singleton(cx, &mut r, "secrets", Secrets::read, &mut ok);
        let heartbeat = read_singleton(cx, &mut r, "heartbeat", Heartbeat::read, &mut ok);
        let mirror_connect = read_singleton(cx, &mut r, "mirror_connect", MirrorConnect::read, &mut ok);
        let np_resolution = read_singleton(cx, &mut r, "np_resolution", NpResolution::read, &mut ok);
        let arbitration = read_singleton(cx, &mut r, "arbitration", Arbitration::read, &mut ok);

        let interconnects = read_named(cx, &mut r, "interconnect", &mut ok, Interconnect::read);
        let nodes = read_named(cx, &mut r, "node", &mut ok, Node::read);
        let groups = read_named(cx, &mut r, "group", &mut ok, Group::read);

        let mut monitors = Vec::new();
        for (index, block) in r.blocks("monitor").into_iter().enumerate() {
            let monitor = open_block(cx, &root, block, index, &["kind", "name"]).and_then(|(mut br, labels)| {
                let m = Monitor::read(cx, &mut br, &labels[0], &labels[1]);
                br.finish(cx);
                m
            });
            match monitor {
                Some(m) => monitors.push(m),
                None => ok = false,
            }
        }
        r.finish(cx);

        if !ok {
            return None;
        }
        Some(Config {
            cluster: cluster?,
            secrets,
            heartbeat,
            interconnects,
            mirror_connect,
            np_resolution,
            arbitration,
            nodes,
            groups,
            monitors,
        })
    }

    pub(crate) fn render_into(&self, top: &mut HclBlock) {
        top.child("cluster", &[&self.cluster.name], |b| self.cluster.render(b));
        top.child("secrets", &[], |b| self.secrets.render(b));
        top.child("heartbeat", &[], |b| self.heartbeat.render(b));
        for i in &self.interconnects {
            top.child("interconnect", &[&i.name], |b| i.render(b));
        }
        top.child("mirror_connect", &[], |b| self.mirror_connect.render(b));
        top.child("np_resolution", &[], |b| self.np_resolution.render(b));
        top.child("arbitration", &[], |b| self.arbitration.render(b));
        for n in &self.nodes {
            top.child("node", &[&n.name], |b| n.render(b));
        }
        for g in &self.groups {
            top.child("group", &[&g.name], |b| g.render(b));
        }
        for m in &self.monitors {
            top.child("monitor", &[m.kind.kind_name(), &m.name], |b| m.render(b));
        }
    }
}

/// Reads an optional unlabeled block that appears at most once; absent means `T::default()`.
fn read_singleton<T: Default>(
    cx: &mut Cx,
    r: &mut Reader,
    ident: &'static str,
    read: impl FnOnce(&mut Cx, &mut Reader) -> Option<T>,
    ok: &mut bool,
) -> T {
    let Some(block) = r.single_block(cx, ident) else { return T::default() };
    let Some((mut br, _)) = open_block(cx, &ConfigPath::root(), block, 0, &[]) else {
        *ok = false;
        return T::default();
    };
    let value = read(cx, &mut br);
    br.finish(cx);
    value.unwrap_or_else(|| {
        *ok = false;
        T::default()
    })
}

/// Reads every block `ident "<name>" { }` of the top level, in order.
fn read_named<T>(
    cx: &mut Cx,
    r: &mut Reader,
    ident: &'static str,
    ok: &mut bool,
    read: impl Fn(&mut Cx, &mut Reader, &str) -> Option<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (index, block) in r.blocks(ident).into_iter().enumerate() {
        let value = open_block(cx, &ConfigPath::root(), block, index, &["name"]).and_then(|(mut br, labels)| {
            let v = read(cx, &mut br, &labels[0]);
            br.finish(cx);
            v
        });
        match value {
            Some(v) => out.push(v),
            None => *ok = false,
        }
    }
    out
}

/// Loads `path`, and when `node` is given checks that it names a node. On success returns the one-line
/// summary `ok: cluster X, N nodes, M groups` (what `tandemctl config check` prints).
pub fn check_file(path: &Path, node: Option<&str>) -> Result<String, ConfigErrors> {
    let config = load(path)?;
    if let Some(name) = node {
        config.find_self(Some(name), &[]).map_err(|e| ConfigErrors::single(&path.display().to_string(), e))?;
    }
    Ok(config.summary())
}

impl Config {
    /// `ok: cluster X, N nodes, M groups`.
    pub fn summary(&self) -> String {
        let plural = |n: usize, one: &str| if n == 1 { format!("{n} {one}") } else { format!("{n} {one}s") };
        format!(
            "ok: cluster {}, {}, {}",
            self.cluster.name,
            plural(self.nodes.len(), "node"),
            plural(self.groups.len(), "group")
        )
    }
}

/// Shared fixtures for the unit tests of this module.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A valid two-node config with one group and no resources.
    pub(crate) fn two_nodes() -> Config {
        let mut c = Config::new("web");
        c.nodes.push(Node::new("a", Ipv4Addr::new(10, 0, 1, 10), "us-east-1a"));
        c.nodes.push(Node::new("b", Ipv4Addr::new(10, 0, 2, 10), "us-east-1b"));
        c.groups.push(Group::new("g", &["a", "b"]));
        c.fill_implied();
        c
    }

    /// The codes `check` reports for `c`.
    pub(crate) fn codes(c: &Config) -> Vec<&'static str> {
        validate::check(c).iter().map(|e| e.code.code()).collect()
    }

    /// The codes `parse` reports for `src`.
    pub(crate) fn parse_codes(src: &str) -> Vec<&'static str> {
        parse(src).err().map(|e| e.codes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn config_built_in_code_validates_and_renders() {
        let mut c = two_nodes();
        let mut vip = AwsVip::new(Ipv4Addr::new(10, 1, 0, 10), "vpc-0a1b2c3d");
        vip.vpc_cidrs = vec!["10.0.0.0/16".parse().unwrap()];
        c.groups[0].resources.push(Resource::new("vip", ResourceKind::AwsVip(vip)));
        c.fill_implied();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(parse(&render(&c)), Ok(c));
    }

    #[test]
    fn fill_implied_adds_one_monitor_per_vip_eip_dns_resource_once() {
        let mut c = two_nodes();
        c.groups[0].resources.push(Resource::new("e", ResourceKind::AwsEip(AwsEip::new("eipalloc-12345678"))));
        c.groups[0].resources.push(Resource::new("x", ResourceKind::Exec(Exec::new("true"))));
        c.fill_implied();
        c.fill_implied();
        let names: Vec<&str> = c.monitors.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["e-monitor"]);
        assert_eq!(c.interconnects.len(), 1);
    }

    #[test]
    fn local_address_lookup_needs_exactly_one_match() {
        let c = two_nodes();
        let a: IpAddr = "10.0.1.10".parse().unwrap();
        let b: IpAddr = "10.0.2.10".parse().unwrap();
        assert_eq!(c.node_by_local_addresses(&[a]).unwrap().name, "a");
        assert_eq!(c.node_by_local_addresses(&[a, b]).unwrap_err().code, ErrorCode::SelfAmbiguous);
        assert_eq!(c.node_by_local_addresses(&[]).unwrap_err().code, ErrorCode::SelfNotFound);
        assert_eq!(c.find_self(Some("zz"), &[a]).unwrap_err().code, ErrorCode::UnknownSelf);
    }

    #[test]
    fn ports_list_mirror_only_with_a_mirror_disk() {
        let mut c = two_nodes();
        assert_eq!(c.ports().iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(), vec![("tcp", 7402), ("udp", 7400)]);
        let md = MirrorDisk::new("/dev/xvdf2", "/dev/xvdf1", "/srv");
        c.groups[0].resources.push(Resource::new("md", ResourceKind::MirrorDisk(md)));
        assert_eq!(c.ports().last().map(|p| (p.1, p.2)), Some(("tcp", 7410)));
        let second = MirrorDisk::new("/dev/xvdg2", "/dev/xvdg1", "/srv2");
        c.groups[0].resources.push(Resource::new("md2", ResourceKind::MirrorDisk(second)));
        assert_eq!(c.ports().last().map(|p| (p.1, p.2)), Some(("tcp", 7411)));
        assert_eq!((c.mirror_port("md"), c.mirror_port("md2"), c.mirror_port("x")), (Some(7410), Some(7411), None));
    }

    #[test]
    fn lease_defaults_derive_from_cluster_and_zones() {
        let mut c = two_nodes();
        assert_eq!(c.lease_table(), "tandem-web-leases");
        assert_eq!(c.lease_region().as_deref(), Some("us-east-1"));
        c.arbitration.region = Some("us-east-2".into());
        assert_eq!(c.lease_region().as_deref(), Some("us-east-2"));
        assert_eq!(codes(&c), vec!["TDM-CFG-028", "TDM-CFG-028"]);
    }

    #[test]
    fn summary_counts_nodes_and_groups() {
        let mut c = two_nodes();
        assert_eq!(c.summary(), "ok: cluster web, 2 nodes, 1 group");
        c.nodes.truncate(1);
        c.groups.clear();
        assert_eq!(c.summary(), "ok: cluster web, 1 node, 0 groups");
    }

    #[test]
    fn missing_cluster_block_is_reported_without_position() {
        let e =
            parse("node \"a\" {\n  private_ip = \"10.0.0.1\"\n  availability_zone = \"us-east-1a\"\n}\n").unwrap_err();
        assert_eq!(e.codes(), vec!["TDM-CFG-003"]);
        assert_eq!(e.errors[0].location, None);
    }
}
