//! The checks that need AWS, on every input that is known: the VPC of each VIP (whose CIDR blocks then feed
//! the model's "VIP outside the VPC" rule), the route tables, the zones of the nodes, each node's subnet, the
//! EIP allocations and the hosted zones. Unknown inputs (objects created in the same apply) are skipped at
//! plan and checked at apply, before anything is rendered.

use std::collections::BTreeMap;

use tandem_runtime::config::ResourceKind;
use tandem_runtime::config::shape::{check_ec2_id, check_hosted_zone_id, check_record_name, region_of_az};
use tandem_runtime::net::parse_ipv4_cidr;

use super::model::Built;
use crate::aws::AwsContext;
use crate::framework::{AttrPath, Diagnostics};
use crate::resources::availability_zones::find_availability_zones;
use crate::resources::eip::find_eip_by_allocation_id;
use crate::resources::report;
use crate::resources::route_table::find_route_table_by_id;
use crate::resources::route53_zone::{clean_zone_id, find_hosted_zone_by_id, name_in_zone};
use crate::resources::subnet::find_subnet_by_id;
use crate::resources::vpc::find_vpc_by_id;

pub(super) mod code {
    pub const VPC_NOT_FOUND: &str = "TDM-CLU-001";
    pub const ZONE_NOT_IN_REGION: &str = "TDM-CLU-002";
    pub const SUBNET_NOT_FOUND: &str = "TDM-CLU-003";
    pub const IP_OUTSIDE_SUBNET: &str = "TDM-CLU-004";
    pub const IP_RESERVED: &str = "TDM-CLU-005";
    pub const SUBNET_IN_OTHER_ZONE: &str = "TDM-CLU-006";
    pub const ROUTE_TABLE_NOT_FOUND: &str = "TDM-CLU-007";
    pub const ROUTE_TABLE_OTHER_VPC: &str = "TDM-CLU-008";
    pub const HOSTED_ZONE_NOT_FOUND: &str = "TDM-CLU-009";
    pub const RECORD_OUTSIDE_ZONE: &str = "TDM-CLU-010";
    pub const EIP_NOT_FOUND: &str = "TDM-CLU-011";
}

/// A value worth asking AWS about: known (not a placeholder) and of the right shape.
fn checkable<'a>(
    built: &Built,
    at: &AttrPath,
    value: &'a str,
    shape: impl Fn(&str) -> Result<(), String>,
) -> Option<&'a str> {
    (!built.is_suppressed(at) && !value.is_empty() && shape(value).is_ok()).then_some(value)
}

/// Runs every AWS-backed check whose inputs are known; fills each VIP's `vpc_cidrs` from its VPC.
pub(super) async fn run(ctx: &AwsContext, built: &mut Built, diags: &mut Diagnostics) {
    check_nodes(ctx, built, diags).await;
    check_resources(ctx, built, diags).await;
}

async fn check_nodes(ctx: &AwsContext, built: &Built, diags: &mut Diagnostics) {
    let nodes = &built.config.nodes;
    if nodes.iter().any(|n| region_of_az(&n.availability_zone).is_ok()) {
        match find_availability_zones(ctx, None).await {
            Ok(zones) => {
                let names: Vec<&str> = zones.iter().filter_map(|z| z.zone_name()).collect();
                for (i, n) in nodes.iter().enumerate() {
                    let az = n.availability_zone.as_str();
                    let Ok(region) = region_of_az(az) else { continue };
                    if names.contains(&az) {
                        continue;
                    }
                    let summary = if region == ctx.region {
                        format!("availability zone {az:?} does not exist in {}", ctx.region)
                    } else {
                        format!("availability zone {az:?} is in {region}, but the provider works in {}", ctx.region)
                    };
                    diags.error_at(
                        AttrPath::root("node").index(i).attr("availability_zone"),
                        code::ZONE_NOT_IN_REGION,
                        summary,
                        format!("Zones of {}: {}.", ctx.region, names.join(", ")),
                    );
                }
            }
            Err(e) => report(diags, "checking", "EC2 Availability Zones", None, &e),
        }
    }
    for (i, (node, subnet)) in nodes.iter().zip(&built.subnets).enumerate() {
        let at = AttrPath::root("node").index(i);
        let Some(id) = subnet
            .as_deref()
            .and_then(|s| checkable(built, &at.clone().attr("subnet_id"), s, |v| check_ec2_id(v, "subnet")))
        else {
            continue;
        };
        let s = match find_subnet_by_id(ctx, id).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                diags.error_at(
                    at.attr("subnet_id"),
                    code::SUBNET_NOT_FOUND,
                    format!("subnet {id} does not exist"),
                    format!("No subnet with this ID exists in {} for these credentials.", ctx.region),
                );
                continue;
            }
            Err(e) => {
                report(diags, "checking", "EC2 Subnet", Some(id), &e);
                continue;
            }
        };
        if let Some(zone) = s.availability_zone()
            && !built.is_suppressed(&at.clone().attr("availability_zone"))
            && !node.availability_zone.is_empty()
            && zone != node.availability_zone
        {
            diags.error_at(
                at.clone().attr("subnet_id"),
                code::SUBNET_IN_OTHER_ZONE,
                format!("subnet {id} is in {zone}, not in the node's zone {}", node.availability_zone),
                "Give the node the subnet of its own availability zone (one node per zone).",
            );
        }
        let ip_at = at.attr("private_ip");
        let Some(net) = s.cidr_block().and_then(|c| parse_ipv4_cidr(c).ok()) else { continue };
        if built.is_suppressed(&ip_at) {
            continue;
        }
        let ip = node.private_ip;
        if !net.contains(&ip) {
            diags.error_at(
                ip_at,
                code::IP_OUTSIDE_SUBNET,
                format!("private IP {ip} is outside subnet {id} ({net})"),
                format!("Choose an address inside {net}, e.g. with cidrhost(\"{net}\", 10)."),
            );
            continue;
        }
        let offset = u32::from(ip) - u32::from(net.network());
        if offset <= 3 || ip == net.broadcast() {
            diags.error_at(
                ip_at,
                code::IP_RESERVED,
                format!("private IP {ip} is reserved by AWS in subnet {id} ({net})"),
                "AWS reserves the first four addresses and the last one of every subnet; choose another, e.g. the \
                 tenth host.",
            );
        }
    }
}

/// What one group resource asks AWS about.
enum Work {
    Vip { group: usize, index: usize },
    Eip { at: AttrPath, id: String },
    Dns { at: AttrPath, zone: String, record: String },
}

async fn check_resources(ctx: &AwsContext, built: &mut Built, diags: &mut Diagnostics) {
    let mut work = Vec::new();
    for (gi, g) in built.config.groups.iter().enumerate() {
        for (ri, r) in g.resources.iter().enumerate() {
            let Some(at) = built.resource_path(gi, ri) else { continue };
            match &r.kind {
                ResourceKind::AwsVip(_) => work.push(Work::Vip { group: gi, index: ri }),
                ResourceKind::AwsEip(eip) => {
                    let id_at = at.clone().attr("allocation_id");
                    if let Some(id) = checkable(built, &id_at, &eip.allocation_id, |v| check_ec2_id(v, "eipalloc")) {
                        work.push(Work::Eip { at: id_at, id: id.to_string() });
                    }
                }
                ResourceKind::AwsDns(dns) => {
                    if let Some(zone) =
                        checkable(built, &at.clone().attr("hosted_zone_id"), &dns.hosted_zone_id, check_hosted_zone_id)
                    {
                        let record =
                            checkable(built, &at.clone().attr("record_name"), &dns.record_name, check_record_name);
                        work.push(Work::Dns {
                            at,
                            zone: zone.to_string(),
                            record: record.unwrap_or_default().to_string(),
                        });
                    }
                }
                ResourceKind::MirrorDisk(_) | ResourceKind::Exec(_) => {}
            }
        }
    }
    let mut vpc_cidrs: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    for w in work {
        match w {
            Work::Vip { group, index } => check_vip(ctx, built, group, index, &mut vpc_cidrs, diags).await,
            Work::Eip { at, id } => match find_eip_by_allocation_id(ctx, &id).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => diags.error_at(
                    at,
                    code::EIP_NOT_FOUND,
                    format!("Elastic IP allocation {id} does not exist"),
                    format!(
                        "No Elastic IP with this allocation ID exists in {}. Use the allocation ID (eipalloc-…), not \
                         the public IP.",
                        ctx.region
                    ),
                ),
                Err(e) => report(diags, "checking", "EC2 EIP", Some(&id), &e),
            },
            Work::Dns { at, zone, record } => match find_hosted_zone_by_id(ctx, &zone).await {
                Ok(out) => {
                    let zone_name = out.hosted_zone().map(|z| z.name().to_string()).unwrap_or_default();
                    if !record.is_empty() && !zone_name.is_empty() && !name_in_zone(&record, &zone_name) {
                        diags.error_at(
                            at.attr("record_name"),
                            code::RECORD_OUTSIDE_ZONE,
                            format!("record {record:?} is not inside hosted zone {zone} ({zone_name})"),
                            format!("Write a name ending in .{zone_name}, or use the hosted zone of {record}."),
                        );
                    }
                }
                Err(e) if e.is_not_found() => diags.error_at(
                    at.attr("hosted_zone_id"),
                    code::HOSTED_ZONE_NOT_FOUND,
                    format!("hosted zone {} does not exist", clean_zone_id(&zone)),
                    "No Route 53 hosted zone has this ID for these credentials.",
                ),
                Err(e) => report(diags, "checking", "Route 53 Hosted Zone", Some(&zone), &e),
            },
        }
    }
}

async fn check_vip(
    ctx: &AwsContext,
    built: &mut Built,
    group: usize,
    index: usize,
    cache: &mut BTreeMap<String, Option<Vec<String>>>,
    diags: &mut Diagnostics,
) {
    let Some(at) = built.resource_path(group, index) else { return };
    let ResourceKind::AwsVip(vip) = &built.config.groups[group].resources[index].kind else { return };
    let vpc_at = at.clone().attr("vpc_id");
    let vpc = checkable(built, &vpc_at, &vip.vpc_id, |v| check_ec2_id(v, "vpc")).map(str::to_string);
    let tables: Vec<(AttrPath, String)> = vip
        .route_table_ids
        .iter()
        .enumerate()
        .filter_map(|(j, id)| {
            let t_at = at.clone().attr("route_table_ids").index(j);
            checkable(built, &t_at, id, |v| check_ec2_id(v, "rtb")).map(|id| (t_at, id.to_string()))
        })
        .collect();
    let mut cidrs = None;
    if let Some(vpc_id) = &vpc {
        if !cache.contains_key(vpc_id) {
            let found = match find_vpc_by_id(ctx, vpc_id).await {
                Ok(v) => {
                    let mut blocks: Vec<String> = v
                        .cidr_block_association_set()
                        .iter()
                        .filter_map(|a| a.cidr_block().map(str::to_string))
                        .collect();
                    if blocks.is_empty() {
                        blocks.extend(v.cidr_block().map(str::to_string));
                    }
                    Some(blocks)
                }
                Err(e) if e.is_not_found() => {
                    diags.error_at(
                        vpc_at.clone(),
                        code::VPC_NOT_FOUND,
                        format!("VPC {vpc_id} does not exist"),
                        format!("No VPC with this ID exists in {} for these credentials.", ctx.region),
                    );
                    None
                }
                Err(e) => {
                    report(diags, "checking", "EC2 VPC", Some(vpc_id), &e);
                    None
                }
            };
            cache.insert(vpc_id.clone(), found);
        }
        cidrs = cache.get(vpc_id).cloned().flatten();
    }
    for (t_at, id) in tables {
        match find_route_table_by_id(ctx, &id).await {
            Ok(t) => {
                if let (Some(vpc_id), Some(owner)) = (&vpc, t.vpc_id())
                    && owner != vpc_id
                {
                    diags.error_at(
                        t_at,
                        code::ROUTE_TABLE_OTHER_VPC,
                        format!("route table {id} belongs to {owner}, not to the VIP's VPC {vpc_id}"),
                        "List the route tables of the VIP's VPC (those of the nodes' subnets and every one clients \
                         route through).",
                    );
                }
            }
            Err(e) if e.is_not_found() => diags.error_at(
                t_at,
                code::ROUTE_TABLE_NOT_FOUND,
                format!("route table {id} does not exist"),
                format!("No route table with this ID exists in {} for these credentials.", ctx.region),
            ),
            Err(e) => report(diags, "checking", "EC2 Route Table", Some(&id), &e),
        }
    }
    if let Some(blocks) = cidrs {
        let mut nets: Vec<_> = blocks.iter().filter_map(|b| parse_ipv4_cidr(b).ok()).collect();
        nets.sort();
        nets.dedup();
        if let ResourceKind::AwsVip(vip) = &mut built.config.groups[group].resources[index].kind {
            vip.vpc_cidrs = nets;
        }
    }
}
