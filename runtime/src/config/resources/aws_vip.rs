//! `resource "aws_vip"`: a virtual IP outside the VPC CIDR, reached through a /32 route in the VPC's route
//! tables that targets the active node's ENI, and bound on that node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hcl::edit::expr::Expression;
use ipnet::Ipv4Net;

use crate::config::error::{ConfigPath, ErrorCode};
use crate::config::group::Group;
use crate::config::overrides;
use crate::config::parse::{self, Cx, Reader};
use crate::config::render::HclBlock;
use crate::config::validate::Validator;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsVip {
    /// The virtual IP: one address (`"10.1.0.10"` or `"10.1.0.10/32"`), outside every CIDR block of the VPC.
    pub ip: Ipv4Addr,
    /// The VPC whose route tables carry the VIP route.
    pub vpc_id: String,
    /// The route tables to update. Default []: every route table of the VPC that has a route for the VIP.
    pub route_table_ids: Vec<String>,
    /// The VPC's CIDR blocks, when known, so the "VIP outside the VPC" rule can be checked offline (the provider
    /// also checks it at plan time against AWS). Default [].
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Network device the VIP is bound on. Default (None): the device that holds the node's private IP.
    pub device: Option<String>,
    /// Per-node overrides.
    pub per_node: BTreeMap<String, AwsVipNode>,
}

/// What an aws_vip may set per node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsVipNode {
    pub device: Option<String>,
}

impl AwsVip {
    pub fn new(ip: Ipv4Addr, vpc_id: &str) -> AwsVip {
        AwsVip {
            ip,
            vpc_id: vpc_id.to_string(),
            route_table_ids: Vec::new(),
            vpc_cidrs: Vec::new(),
            device: None,
            per_node: BTreeMap::new(),
        }
    }

    /// The device to bind the VIP on, on `node` (None: the device of the node's private IP).
    pub fn device_for(&self, node: &str) -> Option<&str> {
        self.per_node.get(node).and_then(|o| o.device.as_deref()).or(self.device.as_deref())
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<AwsVip> {
        let ip = r.req(cx, "ip", vip_address);
        let vpc_id = r.req(cx, "vpc_id", parse::string);
        let route_table_ids = r.or(cx, "route_table_ids", parse::string_list, Vec::new());
        let vpc_cidrs = r.or(cx, "vpc_cidrs", |cx, p, e| parse::list_of(cx, p, e, parse::cidr), Vec::new());
        let device = r.opt(cx, "device", parse::string);
        let per_node =
            overrides::read(cx, r, |cx, or| Some(AwsVipNode { device: or.opt(cx, "device", parse::string) }));
        Some(AwsVip { ip: ip?, vpc_id: vpc_id?, route_table_ids, vpc_cidrs, device, per_node: per_node? })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.display("ip", self.ip);
        b.str("vpc_id", &self.vpc_id);
        b.list("route_table_ids", &self.route_table_ids);
        b.display_list("vpc_cidrs", &self.vpc_cidrs);
        b.opt_str("device", self.device.as_deref());
    }

    pub(crate) fn render_overrides(&self, b: &mut HclBlock) {
        overrides::render(b, &self.per_node, |ob, o| ob.opt_str("device", o.device.as_deref()));
    }

    pub(crate) fn validate(&self, v: &mut Validator, path: &ConfigPath, group: &Group) {
        v.aws_id(&path.attr("vpc_id"), &self.vpc_id, "vpc");
        for (i, id) in self.route_table_ids.iter().enumerate() {
            v.aws_id(&path.attr("route_table_ids").index(i), id, "rtb");
        }
        v.distinct(&path.attr("route_table_ids"), &self.route_table_ids, "route table");
        let at = path.attr("ip");
        if let Some(cidr) = self.vpc_cidrs.iter().find(|c| c.contains(&self.ip)) {
            v.error(
                ErrorCode::VipInsideVpc,
                &at,
                format!("{at}: VIP {} is inside the VPC CIDR {cidr}; a VIP route only works outside it", self.ip),
            );
        } else if let Some(node) = v.config.nodes.iter().find(|n| n.private_ip == self.ip) {
            v.error(
                ErrorCode::VipInsideVpc,
                &at,
                format!("{at}: VIP {} is the private IP of node {:?}, so it is inside the VPC", self.ip, node.name),
            );
        }
        check_device(v, &path.attr("device"), self.device.as_deref());
        overrides::validate_nodes(v, path, &self.per_node, &group.servers);
        for (node, o) in &self.per_node {
            check_device(v, &overrides::path(path, node).attr("device"), o.device.as_deref());
        }
    }
}

fn check_device(v: &mut Validator, at: &ConfigPath, device: Option<&str>) {
    if let Some(device) = device {
        let ok = !device.is_empty()
            && device.len() <= 15
            && device.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'));
        if !ok {
            v.error(ErrorCode::BadName, at, format!("{at}: {device:?} is not a network device name such as \"ens5\""));
        }
    }
}

/// `"10.1.0.10"` or `"10.1.0.10/32"`; any other prefix length is TDM-CFG-015.
fn vip_address(cx: &mut Cx, path: &ConfigPath, e: &Expression) -> Option<Ipv4Addr> {
    let text = parse::string(cx, path, e)?;
    if let Some((addr, len)) = text.split_once('/') {
        if len != "32" {
            cx.error(
                ErrorCode::VipNotSingleAddress,
                path,
                format!("{path}: {text:?} is a network; a VIP is a single address (/32)"),
            );
            return None;
        }
        return match crate::net::parse_ipv4(addr) {
            Ok(ip) => Some(ip),
            Err(err) => {
                cx.error(ErrorCode::BadAddress, path, format!("{path}: {err}"));
                None
            }
        };
    }
    parse::ipv4(cx, path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_node_device_falls_back_to_the_common_one() {
        let mut vip = AwsVip::new(Ipv4Addr::new(10, 1, 0, 10), "vpc-0abc1234");
        assert_eq!(vip.device_for("a"), None);
        vip.device = Some("eth0".into());
        vip.per_node.insert("b".into(), AwsVipNode { device: Some("ens5".into()) });
        assert_eq!(vip.device_for("a"), Some("eth0"));
        assert_eq!(vip.device_for("b"), Some("ens5"));
    }

    #[test]
    fn vip_accepts_slash_32_only() {
        let mut cx = Cx::new("");
        let p = ConfigPath::root().attr("ip");
        let e = |t: &str| hcl::edit::parser::parse_expr(t).unwrap();
        assert_eq!(vip_address(&mut cx, &p, &e("\"10.1.0.10/32\"")), Some(Ipv4Addr::new(10, 1, 0, 10)));
        assert_eq!(vip_address(&mut cx, &p, &e("\"10.1.0.0/24\"")), None);
        assert_eq!(cx.errors[0].code, ErrorCode::VipNotSingleAddress);
    }
}
