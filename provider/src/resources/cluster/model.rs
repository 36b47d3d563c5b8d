//! Terraform value → `tandem_runtime::config::Config`, and the model's error paths back to Terraform attribute
//! paths.
//!
//! At plan time some values are unknown (IDs of objects created in the same apply, addresses computed from
//! them). Those stand in as placeholders of the right shape, and the model's errors on them are dropped: the
//! rest of the configuration is still validated. Only unknown names and references (which the model's
//! cross-checks depend on) defer the whole model validation to apply. Values of the wrong shape are reported
//! here with the model's own codes (TDM-CFG-006/007/008/023/026) and replaced by placeholders too, so that one
//! mistake does not hide the others.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tandem_runtime::config::monitor::MonitorType;
use tandem_runtime::config::{self as rc};
use tandem_runtime::config::{
    AwsDns, AwsDnsNode, AwsEip, AwsVip, AwsVipNode, Choice, ConfigPath, ErrorCode, Exec, ExecNode, Group, HostPort,
    Interconnect, MirrorDisk, MirrorDiskNode, Monitor, MonitorKind, MonitorSettings, Node, NpProbe, NpTarget,
    PathSegment, Resource, ResourceKind, parse_duration,
};
use tandem_runtime::net::parse_ipv4;

use super::schema::RESOURCE_KINDS;
use crate::framework::{AttrPath, Diagnostics, Value};

/// Where the rendered config tells each node to find its secrets; the user_data writes them there.
pub(super) const SECRETS_DIR: &str = "/etc/tandem/secrets";

/// Codes of the conversion's own diagnostics (TDM-CLU range).
pub(super) mod code {
    /// A monitor lacks an attribute its kind needs.
    pub const MONITOR_NEEDS: &str = "TDM-CLU-014";
    /// A monitor sets an attribute its kind does not have.
    pub const MONITOR_NOT_APPLICABLE: &str = "TDM-CLU-015";
}

/// Where a group resource of the model came from in the Terraform configuration.
#[derive(Debug, Clone)]
pub(super) struct ResourceAt {
    /// The nested block type (`aws_vip`, ...).
    pub kind: &'static str,
    /// Its index among the blocks of that type.
    pub index: usize,
    /// The `node` of each override block, in block order.
    pub overrides: Vec<String>,
}

/// The model built from a Terraform value, with what is needed to map errors back.
#[derive(Debug)]
pub(super) struct Built {
    pub config: rc::Config,
    /// Per group: model resource index → Terraform block.
    pub resources: Vec<Vec<ResourceAt>>,
    /// Model monitor index → (Terraform monitor index, override nodes), for the written monitors.
    pub monitors: Vec<(usize, Vec<String>)>,
    pub explicit_interconnects: usize,
    /// Node index → its `subnet_id`, when set and known.
    pub subnets: Vec<Option<String>>,
    /// Values that stand in for unknown or invalid ones: the model's errors on them are dropped.
    pub suppressed: Vec<AttrPath>,
    /// Blocks with such a value among settings that are checked together (durations, choices, numbers).
    pub suppressed_blocks: Vec<AttrPath>,
    /// An unknown name or reference: the model cannot be validated before apply.
    pub deferred: bool,
}

impl Built {
    /// True when every value was known and well formed: the config can be rendered as is.
    pub fn complete(&self) -> bool {
        !self.deferred && self.suppressed.is_empty() && self.suppressed_blocks.is_empty()
    }

    pub fn is_suppressed(&self, path: &AttrPath) -> bool {
        self.suppressed.iter().any(|s| starts_with(path, s))
            || self.suppressed_blocks.iter().any(|s| starts_with(path, s))
    }

    /// The Terraform path of the `index`-th resource of group `group`.
    pub fn resource_path(&self, group: usize, index: usize) -> Option<AttrPath> {
        let at = self.resources.get(group)?.get(index)?;
        Some(AttrPath::root("group").index(group).attr(at.kind).index(at.index))
    }

    /// Runs the model's offline rules and reports each error on its attribute (unless it concerns a
    /// placeholder). Deferred models are not checked.
    pub fn validate_into(&self, diags: &mut Diagnostics) {
        if self.deferred {
            return;
        }
        let Err(errors) = self.config.validate() else { return };
        for e in errors.errors {
            let path = self.tf_path(&e.path);
            if path.as_ref().is_some_and(|p| self.is_suppressed(p)) {
                continue;
            }
            let prefix = format!("{}: ", e.path);
            let message = e.message.strip_prefix(&prefix).unwrap_or(&e.message).to_string();
            match path {
                Some(p) => diags.error_at(p, e.code.code(), message, e.hint.clone()),
                None => diags.error(e.code.code(), message, e.hint.clone()),
            }
        }
    }

    /// The Terraform attribute path of a model path; `None` for objects the user did not write (the implied
    /// interconnect and monitors, the fixed secrets paths) and for the config as a whole.
    pub fn tf_path(&self, path: &ConfigPath) -> Option<AttrPath> {
        let mut segments = path.0.iter();
        let first = segments.next()?;
        let PathSegment::Block { ident, index, .. } = first else { return None };
        let mut at = match ident.as_str() {
            "cluster" => match segments.next() {
                Some(PathSegment::Attr(name)) => return Some(AttrPath::root(name)),
                _ => return Some(AttrPath::root("name")),
            },
            "heartbeat" | "mirror_connect" | "arbitration" => AttrPath::root(ident).index(0),
            "np_resolution" => AttrPath::root(ident).index(0),
            "interconnect" if *index < self.explicit_interconnects => AttrPath::root(ident).index(*index),
            "node" => AttrPath::root(ident).index(*index),
            "group" => AttrPath::root(ident).index(*index),
            "monitor" => {
                let (tf, _) = self.monitors.get(*index)?;
                AttrPath::root(ident).index(*tf)
            }
            _ => return None,
        };
        let labeled = |ident: &str| matches!(ident, "interconnect" | "node" | "group" | "monitor");
        let mut at_labeled_block = labeled(ident);
        let mut context: (Option<usize>, Option<usize>) = (None, None); // (group, model resource)
        if ident == "group" {
            context.0 = Some(*index);
        }
        let monitor_index = (ident == "monitor").then_some(*index);
        for segment in segments {
            match segment {
                PathSegment::Block { ident, label, index } => {
                    at_labeled_block = false;
                    match ident.as_str() {
                        "resource" => {
                            let group = context.0?;
                            let r = self.resources.get(group)?.get(*index)?;
                            at = at.attr(r.kind).index(r.index);
                            context.1 = Some(*index);
                            at_labeled_block = true;
                        }
                        "override" => {
                            let nodes = match (context, monitor_index) {
                                ((Some(g), Some(r)), _) => &self.resources.get(g)?.get(r)?.overrides,
                                (_, Some(m)) => &self.monitors.get(m)?.1,
                                _ => return None,
                            };
                            let k = nodes.iter().position(|n| n == label)?;
                            at = at.attr("override").index(k).attr("node");
                            return Some(at);
                        }
                        // np_resolution's ping / tcp / http blocks.
                        _ => at = at.attr(ident).index(*index),
                    }
                }
                PathSegment::Attr(name) => {
                    at_labeled_block = false;
                    at = at.attr(name);
                }
                PathSegment::Key(key) => at = at.key(key),
                PathSegment::Index(i) => at = at.index(*i),
            }
        }
        // An error on a labeled block itself (a bad or duplicate name) points at its name.
        if at_labeled_block {
            at = at.attr("name");
        }
        Some(at)
    }
}

fn starts_with(path: &AttrPath, prefix: &AttrPath) -> bool {
    path.0.len() >= prefix.0.len() && path.0[..prefix.0.len()] == prefix.0[..]
}

/// The block holding the attribute at `path` (a top-level attribute stands for itself).
fn parent(path: &AttrPath) -> AttrPath {
    let mut p = path.clone();
    p.0.pop();
    if p.0.is_empty() { path.clone() } else { p }
}

/// Reads leaf values, reporting malformed ones and standing in for unknown ones.
struct Reader<'d> {
    diags: &'d mut Diagnostics,
    suppressed: Vec<AttrPath>,
    suppressed_blocks: Vec<AttrPath>,
    deferred: bool,
    placeholders: u32,
}

impl Reader<'_> {
    fn next(&mut self) -> u32 {
        self.placeholders += 1;
        self.placeholders
    }

    fn suppress(&mut self, at: &AttrPath) {
        self.suppressed.push(at.clone());
    }

    fn suppress_block(&mut self, at: &AttrPath) {
        self.suppressed_blocks.push(parent(at));
    }

    /// A name or a reference to one: unknown defers the model validation.
    fn name(&mut self, v: &Value, _at: &AttrPath) -> String {
        match v.as_str() {
            Some(s) => s.to_string(),
            None => {
                if !v.is_null() {
                    self.deferred = true;
                }
                String::new()
            }
        }
    }

    fn opt_name(&mut self, v: &Value, at: &AttrPath) -> Option<String> {
        if v.is_null() { None } else { Some(self.name(v, at)) }
    }

    fn names(&mut self, v: &Value, at: &AttrPath) -> Vec<String> {
        if v.is_unknown() {
            self.deferred = true;
            return Vec::new();
        }
        v.elements().iter().enumerate().map(|(i, e)| self.name(e, &at.clone().index(i))).collect()
    }

    /// Free text (commands, paths, URLs): unknown stands in as `placeholder`.
    fn text(&mut self, v: &Value, at: &AttrPath, placeholder: &str) -> Option<String> {
        if v.is_unknown() {
            self.suppress(at);
            return Some(placeholder.to_string());
        }
        v.as_str().map(str::to_string)
    }

    fn req_text(&mut self, v: &Value, at: &AttrPath, placeholder: &str) -> String {
        self.text(v, at, placeholder).unwrap_or_default()
    }

    /// An AWS ID (`prefix-…`; `Z…` for hosted zones): unknown stands in as a unique, well-formed one.
    fn id(&mut self, v: &Value, at: &AttrPath, prefix: &str) -> Option<String> {
        if v.is_unknown() {
            self.suppress(at);
            let n = self.next();
            return Some(if prefix == "Z" { format!("Z{n:08}") } else { format!("{prefix}-{n:08x}") });
        }
        v.as_str().map(str::to_string)
    }

    fn placeholder_ip(&mut self) -> Ipv4Addr {
        let n = self.next();
        let [_, _, hi, lo] = n.to_be_bytes();
        Ipv4Addr::new(0, 255, hi, lo)
    }

    fn ip(&mut self, v: &Value, at: &AttrPath) -> Option<Ipv4Addr> {
        if v.is_unknown() {
            self.suppress(at);
            return Some(self.placeholder_ip());
        }
        let text = v.as_str()?;
        match parse_ipv4(text) {
            Ok(ip) => Some(ip),
            Err(e) => {
                self.diags.error_at(
                    at.clone(),
                    ErrorCode::BadAddress.code(),
                    format!("{text:?} is not an IPv4 address: {e}"),
                    ErrorCode::BadAddress.hint(),
                );
                self.suppress(at);
                Some(self.placeholder_ip())
            }
        }
    }

    fn req_ip(&mut self, v: &Value, at: &AttrPath) -> Ipv4Addr {
        match self.ip(v, at) {
            Some(ip) => ip,
            None => self.placeholder_ip(),
        }
    }

    fn ips(&mut self, v: &Value, at: &AttrPath) -> Vec<Ipv4Addr> {
        if v.is_unknown() {
            self.suppress(at);
            return vec![self.placeholder_ip()];
        }
        v.elements().iter().enumerate().filter_map(|(i, e)| self.ip(e, &at.clone().index(i))).collect()
    }

    /// A per-node address map: the keys are references, the values addresses.
    fn ip_map(&mut self, v: &Value, at: &AttrPath) -> BTreeMap<String, Ipv4Addr> {
        if v.is_unknown() {
            self.deferred = true;
            return BTreeMap::new();
        }
        let mut out = BTreeMap::new();
        for (k, e) in v.entries().into_iter().flatten() {
            if let Some(ip) = self.ip(e, &at.clone().key(k)) {
                out.insert(k.clone(), ip);
            }
        }
        out
    }

    fn string_map(&mut self, v: &Value, at: &AttrPath) -> BTreeMap<String, String> {
        if v.is_unknown() {
            self.suppress(at);
            return BTreeMap::new();
        }
        let mut out = BTreeMap::new();
        for (k, e) in v.entries().into_iter().flatten() {
            if let Some(s) = self.text(e, &at.clone().key(k), "unknown") {
                out.insert(k.clone(), s);
            }
        }
        out
    }

    fn duration(&mut self, v: &Value, at: &AttrPath, default: Duration) -> Duration {
        self.opt_duration(v, at).unwrap_or(default)
    }

    fn opt_duration(&mut self, v: &Value, at: &AttrPath) -> Option<Duration> {
        if v.is_unknown() {
            self.suppress_block(at);
            return None;
        }
        let text = v.as_str()?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(message) => {
                self.diags.error_at(at.clone(), ErrorCode::BadDuration.code(), message, ErrorCode::BadDuration.hint());
                self.suppress_block(at);
                None
            }
        }
    }

    fn opt_choice<C: Choice>(&mut self, v: &Value, at: &AttrPath) -> Option<C> {
        if v.is_unknown() {
            self.suppress_block(at);
            return None;
        }
        let text = v.as_str()?;
        match C::from_str_exact(text) {
            Some(c) => Some(c),
            None => {
                self.diags.error_at(
                    at.clone(),
                    ErrorCode::BadChoice.code(),
                    format!("{text:?} is not one of {}", C::choices()),
                    ErrorCode::BadChoice.hint(),
                );
                self.suppress_block(at);
                None
            }
        }
    }

    fn choice<C: Choice>(&mut self, v: &Value, at: &AttrPath, default: C) -> C {
        self.opt_choice(v, at).unwrap_or(default)
    }

    fn number(&mut self, v: &Value, at: &AttrPath, max: u64) -> Option<u64> {
        if v.is_unknown() {
            self.suppress_block(at);
            return None;
        }
        let n = v.as_number()?;
        match n.as_u64().filter(|n| *n <= max) {
            Some(n) => Some(n),
            None => {
                self.diags.error_at(
                    at.clone(),
                    ErrorCode::OutOfRange.code(),
                    format!("{n} is not a whole number from 0 to {max}"),
                    ErrorCode::OutOfRange.hint(),
                );
                self.suppress_block(at);
                None
            }
        }
    }

    fn port(&mut self, v: &Value, at: &AttrPath, default: u16) -> u16 {
        match self.number(v, at, u64::from(u16::MAX)) {
            Some(0) => {
                self.diags.error_at(
                    at.clone(),
                    ErrorCode::OutOfRange.code(),
                    "port 0 is not a port",
                    "use a port from 1 to 65535",
                );
                self.suppress_block(at);
                default
            }
            Some(n) => u16::try_from(n).unwrap_or(default),
            None => default,
        }
    }

    fn count(&mut self, v: &Value, at: &AttrPath, default: u32) -> u32 {
        self.number(v, at, u64::from(u32::MAX)).and_then(|n| u32::try_from(n).ok()).unwrap_or(default)
    }

    fn boolean(&mut self, v: &Value, at: &AttrPath, default: bool) -> bool {
        if v.is_unknown() {
            self.suppress_block(at);
        }
        v.as_bool().unwrap_or(default)
    }

    fn host_port(&mut self, v: &Value, at: &AttrPath) -> HostPort {
        let fallback = || HostPort { host: "unknown".to_string(), port: 1 };
        let Some(text) = self.text(v, at, "unknown:1") else { return fallback() };
        match HostPort::parse(&text) {
            Ok(hp) => hp,
            Err(message) => {
                self.diags.error_at(at.clone(), ErrorCode::BadEndpoint.code(), message, ErrorCode::BadEndpoint.hint());
                self.suppress(at);
                fallback()
            }
        }
    }

    /// The blocks of a nested list; an unknown list (a `dynamic` block over unknown values) defers.
    fn blocks<'v>(&mut self, parent: &'v Value, name: &str) -> &'v [Value] {
        let v = parent.attr(name);
        if v.is_unknown() {
            self.deferred = true;
        }
        v.elements()
    }

    /// The `override` blocks of a resource or monitor, as (node, block) in order; a node overridden twice is
    /// TDM-CFG-005 on the second block.
    fn overrides<'v>(&mut self, block: &'v Value, at: &AttrPath) -> Vec<(String, &'v Value, AttrPath)> {
        let mut out: Vec<(String, &Value, AttrPath)> = Vec::new();
        for (k, o) in self.blocks(block, "override").iter().enumerate() {
            let oat = at.clone().attr("override").index(k);
            let node = self.name(o.attr("node"), &oat.clone().attr("node"));
            if out.iter().any(|(n, _, _)| *n == node) {
                self.diags.error_at(
                    oat.attr("node"),
                    ErrorCode::Duplicate.code(),
                    format!("node {node:?} is overridden twice"),
                    ErrorCode::Duplicate.hint(),
                );
                continue;
            }
            out.push((node, o, oat));
        }
        out
    }
}

/// Builds the model from the resource's configuration (or planned state) value.
pub(super) fn build(v: &Value, diags: &mut Diagnostics) -> Built {
    let mut r =
        Reader { diags, suppressed: Vec::new(), suppressed_blocks: Vec::new(), deferred: false, placeholders: 0 };
    let name = r.name(v.attr("name"), &AttrPath::root("name"));
    let mut c = rc::Config::new(&name);
    c.cluster.api_port = r.port(v.attr("api_port"), &AttrPath::root("api_port"), c.cluster.api_port);
    c.secrets = rc::Secrets {
        heartbeat_key_file: PathBuf::from(format!("{SECRETS_DIR}/heartbeat.key")),
        ca_cert_file: PathBuf::from(format!("{SECRETS_DIR}/ca.crt")),
        node_cert_file: PathBuf::from(format!("{SECRETS_DIR}/node.crt")),
        node_key_file: PathBuf::from(format!("{SECRETS_DIR}/node.key")),
    };

    let mut subnets = Vec::new();
    for (i, n) in r.blocks(v, "node").iter().enumerate() {
        let at = AttrPath::root("node").index(i);
        let name = r.name(n.attr("name"), &at.clone().attr("name"));
        let ip = r.req_ip(n.attr("private_ip"), &at.clone().attr("private_ip"));
        let az = r.name(n.attr("availability_zone"), &at.clone().attr("availability_zone"));
        let mut node = Node::new(&name, ip, &az);
        node.instance_id = r.id(n.attr("instance_id"), &at.clone().attr("instance_id"), "i");
        node.eni_id = r.id(n.attr("eni_id"), &at.clone().attr("eni_id"), "eni");
        let subnet_at = at.attr("subnet_id");
        let subnet = n.attr("subnet_id");
        if subnet.is_unknown() {
            r.suppress(&subnet_at);
        }
        if let Some(id) = subnet.as_str()
            && let Err(message) = rc::shape::check_ec2_id(id, "subnet")
        {
            r.diags.error_at(subnet_at.clone(), ErrorCode::BadAwsId.code(), message, ErrorCode::BadAwsId.hint());
            r.suppress(&subnet_at);
        }
        subnets.push(subnet.as_str().map(str::to_string));
        c.nodes.push(node);
    }

    if let Some(h) = r.blocks(v, "heartbeat").first() {
        let at = AttrPath::root("heartbeat").index(0);
        c.heartbeat.interval = r.duration(h.attr("interval"), &at.clone().attr("interval"), c.heartbeat.interval);
        c.heartbeat.timeout = r.duration(h.attr("timeout"), &at.attr("timeout"), c.heartbeat.timeout);
    }

    let interconnects = r.blocks(v, "interconnect");
    for (i, ic) in interconnects.iter().enumerate() {
        let at = AttrPath::root("interconnect").index(i);
        let mut x = Interconnect { name: r.name(ic.attr("name"), &at.clone().attr("name")), ..Interconnect::default() };
        x.port = r.port(ic.attr("port"), &at.clone().attr("port"), x.port);
        x.addresses = r.ip_map(ic.attr("addresses"), &at.attr("addresses"));
        c.interconnects.push(x);
    }
    let explicit_interconnects = c.interconnects.len();

    if let Some(m) = r.blocks(v, "mirror_connect").first() {
        let at = AttrPath::root("mirror_connect").index(0);
        c.mirror_connect.port = r.port(m.attr("port"), &at.clone().attr("port"), c.mirror_connect.port);
        c.mirror_connect.addresses = r.ip_map(m.attr("addresses"), &at.attr("addresses"));
    }

    if let Some(np) = r.blocks(v, "np_resolution").first() {
        let at = AttrPath::root("np_resolution").index(0);
        let d = &mut c.np_resolution;
        d.on_isolated = r.choice(np.attr("on_isolated"), &at.clone().attr("on_isolated"), d.on_isolated);
        d.timeout = r.duration(np.attr("timeout"), &at.clone().attr("timeout"), d.timeout);
        for kind in ["ping", "tcp", "http"] {
            for (k, t) in r.blocks(np, kind).iter().enumerate() {
                let tat = at.clone().attr(kind).index(k);
                let probe = match kind {
                    "ping" => NpProbe::Ping { address: r.req_ip(t.attr("address"), &tat.clone().attr("address")) },
                    "tcp" => NpProbe::Tcp { address: r.host_port(t.attr("address"), &tat.clone().attr("address")) },
                    _ => NpProbe::Http { url: r.req_text(t.attr("url"), &tat.clone().attr("url"), "http://unknown/") },
                };
                let nodes = r.names(t.attr("nodes"), &tat.attr("nodes"));
                c.np_resolution.targets.push(NpTarget { probe, nodes });
            }
        }
    }

    if let Some(a) = r.blocks(v, "arbitration").first() {
        let at = AttrPath::root("arbitration").index(0);
        let d = &mut c.arbitration;
        d.table = r.text(a.attr("table"), &at.clone().attr("table"), "unknown-table");
        d.region = r.opt_name(a.attr("region"), &at.clone().attr("region"));
        d.ttl = r.duration(a.attr("ttl"), &at.clone().attr("ttl"), d.ttl);
        d.renew_interval = r.duration(a.attr("renew_interval"), &at.attr("renew_interval"), d.renew_interval);
    }

    let mut resources = Vec::new();
    for (gi, g) in r.blocks(v, "group").iter().enumerate() {
        let at = AttrPath::root("group").index(gi);
        let name = r.name(g.attr("name"), &at.clone().attr("name"));
        let mut group = Group::new(&name, &[]);
        group.servers = r.names(g.attr("servers"), &at.clone().attr("servers"));
        group.failback = r.choice(g.attr("failback"), &at.clone().attr("failback"), group.failback);
        let mut places = Vec::new();
        for kind in RESOURCE_KINDS {
            for (k, b) in r.blocks(g, kind).iter().enumerate() {
                let rat = at.clone().attr(kind).index(k);
                let (resource, overrides) = read_resource(&mut r, kind, b, &rat);
                group.resources.push(resource);
                places.push(ResourceAt { kind, index: k, overrides });
            }
        }
        resources.push(places);
        c.groups.push(group);
    }

    let mut monitors = Vec::new();
    for (mi, m) in r.blocks(v, "monitor").iter().enumerate() {
        let at = AttrPath::root("monitor").index(mi);
        if let Some((monitor, overrides)) = read_monitor(&mut r, m, &at) {
            c.monitors.push(monitor);
            monitors.push((mi, overrides));
        }
    }
    c.fill_implied();

    Built {
        config: c,
        resources,
        monitors,
        explicit_interconnects,
        subnets,
        suppressed: r.suppressed,
        suppressed_blocks: r.suppressed_blocks,
        deferred: r.deferred,
    }
}

fn read_resource(r: &mut Reader, kind: &'static str, b: &Value, at: &AttrPath) -> (Resource, Vec<String>) {
    let a = |name: &str| at.clone().attr(name);
    let overrides = r.overrides(b, at);
    let nodes: Vec<String> = overrides.iter().map(|(n, _, _)| n.clone()).collect();
    let kind_value = match kind {
        "aws_vip" => {
            let ip = match b.attr("ip").as_str() {
                Some(text) if text.contains('/') => vip_address(r, text, &a("ip")),
                _ => r.req_ip(b.attr("ip"), &a("ip")),
            };
            let vpc_id = r.id(b.attr("vpc_id"), &a("vpc_id"), "vpc").unwrap_or_default();
            let mut vip = AwsVip::new(ip, &vpc_id);
            let rt = b.attr("route_table_ids");
            if rt.is_unknown() {
                r.suppress(&a("route_table_ids"));
            }
            vip.route_table_ids = rt
                .elements()
                .iter()
                .enumerate()
                .filter_map(|(i, e)| r.id(e, &a("route_table_ids").index(i), "rtb"))
                .collect();
            vip.device = r.text(b.attr("device"), &a("device"), "eth0");
            for (node, o, oat) in &overrides {
                let device = r.text(o.attr("device"), &oat.clone().attr("device"), "eth0");
                vip.per_node.insert(node.clone(), AwsVipNode { device });
            }
            ResourceKind::AwsVip(vip)
        }
        "aws_eip" => ResourceKind::AwsEip(AwsEip::new(
            &r.id(b.attr("allocation_id"), &a("allocation_id"), "eipalloc").unwrap_or_default(),
        )),
        "aws_dns" => {
            let zone = r.id(b.attr("hosted_zone_id"), &a("hosted_zone_id"), "Z").unwrap_or_default();
            let record = r.req_text(b.attr("record_name"), &a("record_name"), "unknown.example.com.");
            let mut dns = AwsDns::new(&zone, &record);
            dns.ttl = r.count(b.attr("ttl"), &a("ttl"), dns.ttl);
            dns.ip = r.ip(b.attr("ip"), &a("ip"));
            dns.delete_on_deactivate =
                r.boolean(b.attr("delete_on_deactivate"), &a("delete_on_deactivate"), dns.delete_on_deactivate);
            for (node, o, oat) in &overrides {
                let ip = r.ip(o.attr("ip"), &oat.clone().attr("ip"));
                dns.per_node.insert(node.clone(), AwsDnsNode { ip });
            }
            ResourceKind::AwsDns(dns)
        }
        "mirror_disk" => {
            let data = r.req_text(b.attr("data_device"), &a("data_device"), "/dev/unknown-data");
            let meta = r.req_text(b.attr("metadata_device"), &a("metadata_device"), "/dev/unknown-metadata");
            let mut md = MirrorDisk::new(&data, &meta, "/");
            md.mount_point = r.text(b.attr("mount_point"), &a("mount_point"), "/unknown").map(PathBuf::from);
            md.filesystem = r.choice(b.attr("filesystem"), &a("filesystem"), md.filesystem);
            for (node, o, oat) in &overrides {
                let data = r.text(o.attr("data_device"), &oat.clone().attr("data_device"), "/dev/unknown-data");
                let meta = r.text(o.attr("metadata_device"), &oat.clone().attr("metadata_device"), "/dev/unknown-meta");
                md.per_node.insert(
                    node.clone(),
                    MirrorDiskNode { data_device: data.map(PathBuf::from), metadata_device: meta.map(PathBuf::from) },
                );
            }
            ResourceKind::MirrorDisk(md)
        }
        _ => {
            let mut exec = Exec::new(&r.req_text(b.attr("start"), &a("start"), "true"));
            exec.stop = r.text(b.attr("stop"), &a("stop"), "true");
            exec.probe = r.text(b.attr("probe"), &a("probe"), "true");
            exec.start_timeout = r.duration(b.attr("start_timeout"), &a("start_timeout"), exec.start_timeout);
            exec.stop_timeout = r.duration(b.attr("stop_timeout"), &a("stop_timeout"), exec.stop_timeout);
            exec.probe_timeout = r.duration(b.attr("probe_timeout"), &a("probe_timeout"), exec.probe_timeout);
            exec.cgroup = r.text(b.attr("cgroup"), &a("cgroup"), "tandem.unknown");
            exec.env = r.string_map(b.attr("env"), &a("env"));
            for (node, o, oat) in &overrides {
                let env = r.string_map(o.attr("env"), &oat.clone().attr("env"));
                exec.per_node.insert(node.clone(), ExecNode { env });
            }
            ResourceKind::Exec(exec)
        }
    };
    let name = r.name(b.attr("name"), &a("name"));
    let mut resource = Resource::new(&name, kind_value);
    resource.depends_on = r.names(b.attr("depends_on"), &a("depends_on"));
    resource.activation_retries = r.count(b.attr("activation_retries"), &a("activation_retries"), 0);
    resource.deactivation_retries = r.count(b.attr("deactivation_retries"), &a("deactivation_retries"), 0);
    resource.activation_final_action =
        r.choice(b.attr("activation_final_action"), &a("activation_final_action"), resource.activation_final_action);
    resource.deactivation_final_action = r.choice(
        b.attr("deactivation_final_action"),
        &a("deactivation_final_action"),
        resource.deactivation_final_action,
    );
    (resource, nodes)
}

/// A VIP written with a prefix length: `/32` is one address, anything else is TDM-CFG-015.
fn vip_address(r: &mut Reader, text: &str, at: &AttrPath) -> Ipv4Addr {
    let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
    let (code, message) = match parse_ipv4(addr) {
        Ok(ip) if len == "32" => return ip,
        Ok(_) => (ErrorCode::VipNotSingleAddress, format!("{text:?} is a network; a VIP is a single address (/32)")),
        Err(e) => (ErrorCode::BadAddress, format!("{text:?} is not an IPv4 address: {e}")),
    };
    r.diags.error_at(at.clone(), code.code(), message, code.hint());
    r.suppress(at);
    r.placeholder_ip()
}

/// The attributes only some monitor kinds have, with the kinds that have them.
const KIND_ATTRS: [(&str, &[MonitorType]); 6] = [
    ("resource", &[MonitorType::AwsVip, MonitorType::AwsEip, MonitorType::AwsDns, MonitorType::Mirror]),
    ("check_resolution", &[MonitorType::AwsDns]),
    ("targets", &[MonitorType::Ip]),
    ("address", &[MonitorType::Tcp]),
    ("command", &[MonitorType::Custom]),
    ("env", &[MonitorType::Custom]),
];

fn read_monitor(r: &mut Reader, m: &Value, at: &AttrPath) -> Option<(Monitor, Vec<String>)> {
    let a = |name: &str| at.clone().attr(name);
    let name = r.name(m.attr("name"), &a("name"));
    let kind_value = m.attr("kind");
    if kind_value.is_unknown() {
        r.deferred = true;
        return None;
    }
    let kind_text = kind_value.as_str()?;
    let Some(kind) = MonitorType::from_str_exact(kind_text) else {
        r.diags.error_at(
            a("kind"),
            ErrorCode::BadChoice.code(),
            format!("{kind_text:?} is not a monitor kind: {}", MonitorType::choices()),
            ErrorCode::BadChoice.hint(),
        );
        return None;
    };
    let mut ok = true;
    for (attr, kinds) in KIND_ATTRS {
        if !m.attr(attr).is_null() && !kinds.contains(&kind) {
            r.diags.error_at(
                a(attr),
                code::MONITOR_NOT_APPLICABLE,
                format!("a monitor of kind {kind_text:?} has no {attr:?}"),
                format!("Remove {attr}; it applies to monitors of kind {}.", kind_list(kinds)),
            );
            ok = false;
        }
    }
    let has_overrides = !m.attr("override").elements().is_empty();
    if has_overrides && kind != MonitorType::Ip {
        r.diags.error_at(
            a("override").index(0),
            code::MONITOR_NOT_APPLICABLE,
            format!("a monitor of kind {kind_text:?} has nothing to set per node"),
            "Remove the override blocks; only ip monitors take per-node targets.",
        );
        ok = false;
    }
    let needs = |r: &mut Reader, attr: &str| -> bool {
        if m.attr(attr).is_null() {
            r.diags.error_at(
                a("kind"),
                code::MONITOR_NEEDS,
                format!("a monitor of kind {kind_text:?} needs {attr:?}"),
                format!("Set {attr} in monitor {name:?}."),
            );
            false
        } else {
            true
        }
    };
    let kind = match kind {
        MonitorType::AwsVip | MonitorType::AwsEip | MonitorType::AwsDns | MonitorType::Mirror => {
            ok &= needs(r, "resource");
            let resource = r.name(m.attr("resource"), &a("resource"));
            match kind {
                MonitorType::AwsVip => MonitorKind::AwsVip { resource },
                MonitorType::AwsEip => MonitorKind::AwsEip { resource },
                MonitorType::Mirror => MonitorKind::Mirror { resource },
                _ => MonitorKind::AwsDns {
                    resource,
                    check_resolution: r.boolean(m.attr("check_resolution"), &a("check_resolution"), true),
                },
            }
        }
        MonitorType::AwsAz => MonitorKind::AwsAz,
        MonitorType::Ip => {
            let targets = r.ips(m.attr("targets"), &a("targets"));
            let mut per_node = BTreeMap::new();
            for (node, o, oat) in r.overrides(m, at) {
                per_node.insert(node, r.ips(o.attr("targets"), &oat.attr("targets")));
            }
            MonitorKind::Ip { targets, per_node }
        }
        MonitorType::Tcp => {
            ok &= needs(r, "address");
            MonitorKind::Tcp { address: r.host_port(m.attr("address"), &a("address")) }
        }
        MonitorType::Custom => {
            ok &= needs(r, "command");
            let command = r.req_text(m.attr("command"), &a("command"), "true");
            MonitorKind::Custom { command, env: r.string_map(m.attr("env"), &a("env")) }
        }
    };
    if !ok {
        return None;
    }
    let d = MonitorSettings::defaults_for(&kind);
    let settings = MonitorSettings {
        interval: r.duration(m.attr("interval"), &a("interval"), d.interval),
        timeout: r.duration(m.attr("timeout"), &a("timeout"), d.timeout),
        retries: r.count(m.attr("retries"), &a("retries"), d.retries),
        start_wait: r.duration(m.attr("start_wait"), &a("start_wait"), d.start_wait),
        when: r.choice(m.attr("when"), &a("when"), d.when),
        on_aws_error: r.opt_choice(m.attr("on_aws_error"), &a("on_aws_error")),
        recovery_target: r.opt_name(m.attr("recovery_target"), &a("recovery_target")),
        recovery_action: r.choice(m.attr("recovery_action"), &a("recovery_action"), d.recovery_action),
        final_action: r.choice(m.attr("final_action"), &a("final_action"), d.final_action),
    };
    let overrides = match &kind {
        MonitorKind::Ip { per_node, .. } => {
            // Block order, for mapping errors back (per_node is sorted by node).
            let mut nodes: Vec<String> = Vec::new();
            for o in m.attr("override").elements() {
                if let Some(n) = o.attr("node").as_str()
                    && per_node.contains_key(n)
                    && !nodes.iter().any(|x| x == n)
                {
                    nodes.push(n.to_string());
                }
            }
            nodes
        }
        _ => Vec::new(),
    };
    Some((Monitor { name, settings, kind }, overrides))
}

fn kind_list(kinds: &[MonitorType]) -> String {
    let names: Vec<String> = kinds.iter().map(|k| format!("{:?}", k.as_str())).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn obj(pairs: &[(&str, Value)]) -> Value {
        Value::object(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())))
    }

    fn list(items: Vec<Value>) -> Value {
        Value::List(items)
    }

    fn strings(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| Value::from(*s)).collect())
    }

    fn node(name: &str, ip: &str, az: &str) -> Value {
        obj(&[("name", name.into()), ("private_ip", ip.into()), ("availability_zone", az.into())])
    }

    fn cluster(group: Value, monitors: Vec<Value>) -> Value {
        obj(&[
            ("name", "web".into()),
            ("node", list(vec![node("a", "10.0.1.10", "us-east-1a"), node("b", "10.0.2.10", "us-east-1b")])),
            ("group", list(vec![group])),
            ("monitor", list(monitors)),
        ])
    }

    fn vip(ip: Value, vpc: Value) -> Value {
        obj(&[("name", "vip".into()), ("ip", ip), ("vpc_id", vpc)])
    }

    fn group(blocks: &[(&str, Value)]) -> Value {
        let mut pairs = vec![("name", Value::from("g")), ("servers", strings(&["a", "b"]))];
        pairs.extend(blocks.iter().cloned());
        obj(&pairs)
    }

    fn errors(v: &Value) -> Vec<(String, String)> {
        let mut d = Diagnostics::new();
        let built = build(v, &mut d);
        built.validate_into(&mut d);
        d.0.iter()
            .map(|x| {
                let code = x.summary.trim_start_matches('[').split(']').next().unwrap_or_default().to_string();
                (code, x.path.as_ref().map(ToString::to_string).unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn a_valid_cluster_builds_and_validates() {
        let v = cluster(group(&[("aws_vip", list(vec![vip("10.1.0.10".into(), "vpc-0a1b2c3d".into())]))]), vec![]);
        let mut d = Diagnostics::new();
        let built = build(&v, &mut d);
        assert!(built.complete());
        built.validate_into(&mut d);
        assert!(d.0.is_empty(), "{:?}", d.0);
        let names: Vec<&str> = built.config.monitors.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["vip-monitor"], "the VIP monitor is implied");
        assert_eq!(built.config.secrets.node_key_file, PathBuf::from("/etc/tandem/secrets/node.key"));
    }

    #[test]
    fn model_errors_land_on_terraform_paths() {
        let mut g = group(&[
            ("aws_eip", list(vec![obj(&[("name", "e".into()), ("allocation_id", "54.1.2.3".into())])])),
            ("aws_vip", list(vec![vip("10.0.1.10".into(), "vpc-0a1b2c3d".into())])),
        ]);
        g.attrs_mut().unwrap().insert("servers".into(), strings(&["a", "zz"]));
        let found = errors(&cluster(g, vec![]));
        assert!(found.contains(&("TDM-CFG-011".into(), "group[0].servers[1]".into())), "{found:?}");
        assert!(found.contains(&("TDM-CFG-025".into(), "group[0].aws_eip[0].allocation_id".into())), "{found:?}");
        assert!(found.contains(&("TDM-CFG-016".into(), "group[0].aws_vip[0].ip".into())), "{found:?}");
    }

    #[test]
    fn duplicate_names_point_at_the_name_attribute() {
        let mut v = cluster(group(&[]), vec![]);
        v.attrs_mut().unwrap().insert(
            "node".into(),
            list(vec![node("a", "10.0.1.10", "us-east-1a"), node("a", "10.0.1.10", "us-east-1b")]),
        );
        let found = errors(&v);
        assert!(found.contains(&("TDM-CFG-010".into(), "node[1].name".into())), "{found:?}");
        assert!(found.contains(&("TDM-CFG-014".into(), "node[1].private_ip".into())), "{found:?}");
    }

    #[test]
    fn unknown_ids_and_addresses_are_placeholders_and_their_errors_are_dropped() {
        let v = cluster(group(&[("aws_vip", list(vec![vip(Value::Unknown, Value::Unknown)]))]), vec![]);
        let mut d = Diagnostics::new();
        let built = build(&v, &mut d);
        assert!(!built.deferred && !built.complete());
        built.validate_into(&mut d);
        assert!(d.0.is_empty(), "{:?}", d.0);
    }

    #[test]
    fn unknown_names_defer_validation() {
        let mut g = group(&[]);
        g.attrs_mut().unwrap().insert("servers".into(), Value::Unknown);
        let mut d = Diagnostics::new();
        let built = build(&cluster(g, vec![]), &mut d);
        assert!(built.deferred);
    }

    #[test]
    fn shape_errors_use_the_model_codes() {
        let mut v =
            cluster(group(&[("aws_vip", list(vec![vip("10.1.0.0/24".into(), "vpc-0a1b2c3d".into())]))]), vec![]);
        v.attrs_mut()
            .unwrap()
            .insert("heartbeat".into(), list(vec![obj(&[("interval", "1.5s".into()), ("timeout", Value::Null)])]));
        let found = errors(&v);
        assert!(found.contains(&("TDM-CFG-015".into(), "group[0].aws_vip[0].ip".into())), "{found:?}");
        assert!(found.contains(&("TDM-CFG-007".into(), "heartbeat[0].interval".into())), "{found:?}");
        assert_eq!(found.len(), 2, "no follow-up errors from placeholders: {found:?}");
    }

    #[test]
    fn vip_accepts_a_slash_32() {
        let v = cluster(group(&[("aws_vip", list(vec![vip("10.1.0.10/32".into(), "vpc-0a1b2c3d".into())]))]), vec![]);
        assert!(errors(&v).is_empty());
    }

    #[test]
    fn monitor_attributes_must_fit_the_kind() {
        let tcp = obj(&[("name", "t".into()), ("kind", "tcp".into()), ("resource", "x".into())]);
        let found = errors(&cluster(group(&[]), vec![tcp]));
        assert!(found.contains(&("TDM-CLU-015".into(), "monitor[0].resource".into())), "{found:?}");
        assert!(found.contains(&("TDM-CLU-014".into(), "monitor[0].kind".into())), "{found:?}");
        let az = obj(&[("name", "z".into()), ("kind", "aws_az".into()), ("on_aws_error", "warn".into())]);
        assert!(errors(&cluster(group(&[]), vec![az])).is_empty());
    }

    #[test]
    fn monitor_reference_errors_point_at_the_monitor() {
        let m = obj(&[("name", "m".into()), ("kind", "aws_vip".into()), ("resource", "nope".into())]);
        let found = errors(&cluster(group(&[]), vec![m]));
        assert_eq!(found, vec![("TDM-CFG-012".to_string(), "monitor[0].resource".to_string())]);
    }

    #[test]
    fn override_errors_point_at_the_override_block() {
        let o = obj(&[("node", "zz".into()), ("device", "eth1".into())]);
        let mut r = vip("10.1.0.10".into(), "vpc-0a1b2c3d".into());
        r.attrs_mut().unwrap().insert("override".into(), list(vec![o]));
        let found = errors(&cluster(group(&[("aws_vip", list(vec![r]))]), vec![]));
        assert_eq!(found, vec![("TDM-CFG-011".to_string(), "group[0].aws_vip[0].override[0].node".to_string())]);
    }

    #[test]
    fn resources_join_the_group_in_kind_order() {
        let exec = obj(&[("name", "app".into()), ("start", "true".into())]);
        let g = group(&[
            ("exec", list(vec![exec])),
            ("aws_vip", list(vec![vip("10.1.0.10".into(), "vpc-0a1b2c3d".into())])),
        ]);
        let mut d = Diagnostics::new();
        let built = build(&cluster(g, vec![]), &mut d);
        let names: Vec<&str> = built.config.groups[0].resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["vip", "app"]);
        assert_eq!(built.resource_path(0, 1).unwrap().to_string(), "group[0].exec[0]");
    }
}
