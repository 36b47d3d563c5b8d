//! `cluster "<name>" { }` and `node "<name>" { }`.

use std::net::Ipv4Addr;

use super::error::{ConfigPath, ErrorCode};
use super::parse::{self, Cx, Reader};
use super::render::HclBlock;
use super::shape;
use super::validate::Validator;

pub const DEFAULT_API_PORT: u16 = 7402;

/// The cluster itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's name (block label); names the lease table and the IAM objects.
    pub name: String,
    /// TCP port of the node-to-node control API (TLS with the cluster CA). Default 7402.
    pub api_port: u16,
}

impl Cluster {
    pub fn new(name: &str) -> Cluster {
        Cluster { name: name.to_string(), api_port: DEFAULT_API_PORT }
    }

    pub(crate) fn path(&self) -> ConfigPath {
        ConfigPath::root().block("cluster", &self.name, 0)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader, name: &str) -> Option<Cluster> {
        let api_port = r.or(cx, "api_port", parse::port, DEFAULT_API_PORT);
        Some(Cluster { name: name.to_string(), api_port })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.number("api_port", self.api_port);
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        v.name(&self.path(), &self.name, "cluster");
    }
}

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name (block label); `tandemd --node NAME` picks it.
    pub name: String,
    /// The primary private IPv4 address of the instance's primary ENI (chosen by the operator, so known before
    /// the instance exists). tandemd finds its ENI from it through the EC2 API.
    pub private_ip: Ipv4Addr,
    /// Availability zone name, e.g. `us-east-1a`.
    pub availability_zone: String,
    /// EC2 instance ID, when known (optional: the config must not depend on the instances, see ARCHITECTURE).
    pub instance_id: Option<String>,
    /// ID of the ENI that carries `private_ip`, when known (optional; discovered at start otherwise).
    pub eni_id: Option<String>,
}

impl Node {
    pub fn new(name: &str, private_ip: Ipv4Addr, availability_zone: &str) -> Node {
        Node {
            name: name.to_string(),
            private_ip,
            availability_zone: availability_zone.to_string(),
            instance_id: None,
            eni_id: None,
        }
    }

    pub(crate) fn path(&self, index: usize) -> ConfigPath {
        ConfigPath::root().block("node", &self.name, index)
    }

    /// The region of this node's zone, when the zone name is well formed.
    pub fn region(&self) -> Option<String> {
        shape::region_of_az(&self.availability_zone).ok()
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader, name: &str) -> Option<Node> {
        let private_ip = r.req(cx, "private_ip", parse::ipv4);
        let availability_zone = r.req(cx, "availability_zone", parse::string);
        let instance_id = r.opt(cx, "instance_id", parse::string);
        let eni_id = r.opt(cx, "eni_id", parse::string);
        Some(Node {
            name: name.to_string(),
            private_ip: private_ip?,
            availability_zone: availability_zone?,
            instance_id,
            eni_id,
        })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.display("private_ip", self.private_ip);
        b.str("availability_zone", &self.availability_zone);
        b.opt_str("instance_id", self.instance_id.as_deref());
        b.opt_str("eni_id", self.eni_id.as_deref());
    }

    pub(crate) fn validate(&self, v: &mut Validator, index: usize) {
        let path = self.path(index);
        v.name(&path, &self.name, "node");
        if let Err(message) = shape::region_of_az(&self.availability_zone) {
            let at = path.attr("availability_zone");
            v.error(ErrorCode::BadAvailabilityZone, &at, format!("{at}: {message}"));
        }
        if let Some(id) = &self.instance_id {
            v.aws_id(&path.attr("instance_id"), id, "i");
        }
        if let Some(id) = &self.eni_id {
            v.aws_id(&path.attr("eni_id"), id, "eni");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{codes, two_nodes};

    #[test]
    fn node_ids_and_zone_shape_are_checked() {
        let mut c = two_nodes();
        c.nodes[0].instance_id = Some("i-0123456789abcdef0".into());
        c.nodes[0].eni_id = Some("eni-12345678".into());
        assert!(codes(&c).is_empty());
        c.nodes[0].instance_id = Some("web-1".into());
        c.nodes[1].availability_zone = "use1-az2".into();
        assert_eq!(codes(&c), vec!["TDM-CFG-025", "TDM-CFG-018"]);
    }

    #[test]
    fn cluster_name_must_be_a_name() {
        let mut c = two_nodes();
        c.cluster.name = "my cluster".into();
        assert_eq!(codes(&c), vec!["TDM-CFG-009"]);
    }
}
