//! This node's ENI: the one that holds the node's private IP (DescribeNetworkInterfaces filtered by
//! `addresses.private-ip-address`), or the ENI the config names (`node { eni_id }`). [`AwsEnv::eni`] caches it.

use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{Filter, NetworkInterface};

use super::{AwsEnv, CODE_ENI_NOT_FOUND, CODE_SOURCE_DEST_CHECK, Calls};
use crate::resources::{ErrorClass, ResourceError};

/// One ENI as the resources need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    pub id: String,
    pub vpc_id: Option<String>,
    /// Every private IPv4 address of the ENI (primary first).
    pub private_ips: Vec<Ipv4Addr>,
    /// EC2's source/destination check; must be off (`Some(false)`) for the ENI to receive VIP traffic.
    pub source_dest_check: Option<bool>,
}

impl Eni {
    pub fn from_sdk(ni: &NetworkInterface) -> Option<Eni> {
        let id = ni.network_interface_id()?.to_string();
        let mut private_ips: Vec<Ipv4Addr> = Vec::new();
        if let Some(ip) = ni.private_ip_address().and_then(|s| s.parse().ok()) {
            private_ips.push(ip);
        }
        for a in ni.private_ip_addresses() {
            if let Some(ip) = a.private_ip_address().and_then(|s| s.parse().ok())
                && !private_ips.contains(&ip)
            {
                private_ips.push(ip);
            }
        }
        Some(Eni {
            id,
            vpc_id: ni.vpc_id().map(str::to_string),
            private_ips,
            source_dest_check: ni.source_dest_check(),
        })
    }

    /// True when EC2 would drop traffic for a VIP routed to this ENI.
    pub fn source_dest_check_on(&self) -> bool {
        self.source_dest_check == Some(true)
    }
}

/// Looks the node's ENI up (one DescribeNetworkInterfaces) and warns when its source/dest check is on.
pub(crate) async fn find_local_eni(env: &AwsEnv, calls: &Calls, subject: &str) -> Result<Eni, ResourceError> {
    let node = env.node();
    let ec2 = &env.clients().await?.ec2;
    let (req, target) = match &node.eni_id {
        Some(id) => (ec2.describe_network_interfaces().network_interface_ids(id), format!("ENI {id}")),
        None => (
            ec2.describe_network_interfaces().filters(
                Filter::builder().name("addresses.private-ip-address").values(node.private_ip.to_string()).build(),
            ),
            format!("the ENI of node {} ({})", node.name, node.private_ip),
        ),
    };
    let out = env
        .call(calls, "ec2:DescribeNetworkInterfaces", req.send())
        .await
        .map_err(|f| f.to_resource_error(subject, &target))?;
    let found: Vec<Eni> = out.network_interfaces().iter().filter_map(Eni::from_sdk).collect();
    let eni = pick(found, node.eni_id.as_deref(), node.private_ip).map_err(|why| {
        ResourceError::new(ErrorClass::Hard, CODE_ENI_NOT_FOUND, format!("{subject}: {target}: {why}"))
    })?;
    if eni.source_dest_check_on() {
        tracing::warn!(
            code = CODE_SOURCE_DEST_CHECK,
            eni = %eni.id,
            node = %node.name,
            "{subject}: source/dest check is enabled on {}: traffic to a VIP routed to it is dropped; disable it \
             (aws ec2 modify-network-interface-attribute --no-source-dest-check)",
            eni.id
        );
    }
    Ok(eni)
}

/// The one ENI of the answer: the named one, else the single ENI holding `ip`.
fn pick(found: Vec<Eni>, id: Option<&str>, ip: Ipv4Addr) -> Result<Eni, String> {
    if let Some(id) = id {
        return found.into_iter().find(|e| e.id == id).ok_or_else(|| "EC2 does not know this ENI".to_string());
    }
    let mut holding: Vec<Eni> = found.into_iter().filter(|e| e.private_ips.contains(&ip)).collect();
    match holding.len() {
        0 => Err(format!(
            "no network interface has the private IP {ip}; check the node's private_ip in the cluster config \
             (or set eni_id on the node)"
        )),
        1 => Ok(holding.remove(0)),
        _ => Err(format!(
            "{} network interfaces ({}) have the private IP {ip}; set eni_id on the node",
            holding.len(),
            holding.iter().map(|e| e.id.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eni(id: &str, ips: &[[u8; 4]]) -> Eni {
        Eni {
            id: id.into(),
            vpc_id: None,
            private_ips: ips.iter().map(|&o| Ipv4Addr::from(o)).collect(),
            source_dest_check: Some(false),
        }
    }

    #[test]
    fn picks_the_single_eni_holding_the_ip() {
        let ip = Ipv4Addr::new(10, 0, 1, 10);
        let got = pick(vec![eni("eni-a", &[[10, 0, 1, 10]]), eni("eni-b", &[[10, 0, 2, 10]])], None, ip);
        assert_eq!(got.map(|e| e.id), Ok("eni-a".to_string()));
    }

    #[test]
    fn two_enis_with_the_same_ip_are_ambiguous() {
        let ip = Ipv4Addr::new(10, 0, 1, 10);
        let got = pick(vec![eni("eni-a", &[[10, 0, 1, 10]]), eni("eni-b", &[[10, 0, 1, 10]])], None, ip);
        assert!(got.is_err_and(|why| why.contains("set eni_id")));
        assert!(pick(Vec::new(), None, ip).is_err_and(|why| why.contains("no network interface")));
    }

    #[test]
    fn a_named_eni_wins_over_the_ip() {
        let got = pick(vec![eni("eni-b", &[[10, 0, 9, 9]])], Some("eni-b"), Ipv4Addr::new(10, 0, 1, 10));
        assert_eq!(got.map(|e| e.id), Ok("eni-b".to_string()));
    }

    #[test]
    fn source_dest_check_is_reported() {
        let mut e = eni("eni-a", &[[10, 0, 1, 10]]);
        assert!(!e.source_dest_check_on());
        e.source_dest_check = Some(true);
        assert!(e.source_dest_check_on());
    }
}
