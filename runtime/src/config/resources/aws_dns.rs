//! `resource "aws_dns"`: a Route 53 A record UPSERTed to the active node's IP (and optionally DELETEd when
//! the group stops).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::config::cluster::Node;
use crate::config::error::{ConfigPath, ErrorCode};
use crate::config::group::Group;
use crate::config::overrides;
use crate::config::parse::{self, Cx, Reader};
use crate::config::render::HclBlock;
use crate::config::shape;
use crate::config::validate::Validator;

pub const DEFAULT_DNS_TTL: u32 = 60;
/// Route 53's largest TTL.
pub const MAX_DNS_TTL: u32 = 2_147_483_647;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsDns {
    /// The hosted zone (`Z...`, without `/hostedzone/`).
    pub hosted_zone_id: String,
    /// Lower-case FQDN with a trailing dot, e.g. `app.example.internal.`.
    pub record_name: String,
    /// Record TTL in seconds. Default 60 (short, so that clients follow a failover quickly).
    pub ttl: u32,
    /// The address the record points at, common to all nodes. Default (None): each node's own private IP.
    pub ip: Option<Ipv4Addr>,
    /// DELETE the record when the group stops on a node. Default true.
    pub delete_on_deactivate: bool,
    /// Per-node overrides.
    pub per_node: BTreeMap<String, AwsDnsNode>,
}

/// What an aws_dns may set per node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsDnsNode {
    pub ip: Option<Ipv4Addr>,
}

impl AwsDns {
    pub fn new(hosted_zone_id: &str, record_name: &str) -> AwsDns {
        AwsDns {
            hosted_zone_id: hosted_zone_id.to_string(),
            record_name: record_name.to_string(),
            ttl: DEFAULT_DNS_TTL,
            ip: None,
            delete_on_deactivate: true,
            per_node: BTreeMap::new(),
        }
    }

    /// The address the record gets while `node` is active: its override, else the common ip, else its
    /// private IP.
    pub fn ip_for(&self, node: &Node) -> Ipv4Addr {
        self.per_node.get(&node.name).and_then(|o| o.ip).or(self.ip).unwrap_or(node.private_ip)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<AwsDns> {
        let hosted_zone_id = r.req(cx, "hosted_zone_id", parse::string);
        let record_name = r.req(cx, "record_name", parse::string);
        let ttl = r.or(cx, "ttl", parse::count, DEFAULT_DNS_TTL);
        let ip = r.opt(cx, "ip", parse::ipv4);
        let delete_on_deactivate = r.or(cx, "delete_on_deactivate", parse::boolean, true);
        let per_node = overrides::read(cx, r, |cx, or| Some(AwsDnsNode { ip: or.opt(cx, "ip", parse::ipv4) }));
        Some(AwsDns {
            hosted_zone_id: hosted_zone_id?,
            record_name: record_name?,
            ttl,
            ip,
            delete_on_deactivate,
            per_node: per_node?,
        })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.str("hosted_zone_id", &self.hosted_zone_id);
        b.str("record_name", &self.record_name);
        b.number("ttl", self.ttl);
        b.opt_display("ip", self.ip);
        b.boolean("delete_on_deactivate", self.delete_on_deactivate);
    }

    pub(crate) fn render_overrides(&self, b: &mut HclBlock) {
        overrides::render(b, &self.per_node, |ob, o| ob.opt_display("ip", o.ip));
    }

    pub(crate) fn validate(&self, v: &mut Validator, path: &ConfigPath, group: &Group) {
        if let Err(message) = shape::check_hosted_zone_id(&self.hosted_zone_id) {
            let at = path.attr("hosted_zone_id");
            v.error(ErrorCode::BadAwsId, &at, format!("{at}: {message}"));
        }
        if let Err(message) = shape::check_record_name(&self.record_name) {
            let at = path.attr("record_name");
            v.error(ErrorCode::BadRecordName, &at, format!("{at}: {message}"));
        }
        if self.ttl > MAX_DNS_TTL {
            let at = path.attr("ttl");
            v.error(ErrorCode::OutOfRange, &at, format!("{at}: ttl {} is larger than {MAX_DNS_TTL}", self.ttl));
        }
        overrides::validate_nodes(v, path, &self.per_node, &group.servers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_for_prefers_override_then_common_then_private_ip() {
        let node = Node::new("a", Ipv4Addr::new(10, 0, 1, 10), "us-east-1a");
        let mut dns = AwsDns::new("Z123", "app.example.com.");
        assert_eq!(dns.ip_for(&node), Ipv4Addr::new(10, 0, 1, 10));
        dns.ip = Some(Ipv4Addr::new(203, 0, 113, 5));
        assert_eq!(dns.ip_for(&node), Ipv4Addr::new(203, 0, 113, 5));
        dns.per_node.insert("a".into(), AwsDnsNode { ip: Some(Ipv4Addr::new(10, 0, 1, 99)) });
        assert_eq!(dns.ip_for(&node), Ipv4Addr::new(10, 0, 1, 99));
    }
}
