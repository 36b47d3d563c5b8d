//! The nodes' least-privilege IAM policy: exactly the actions the configured resources and monitors need
//! (docs/DOMAIN.md §2), the lease table's item actions (Get/Put/UpdateItem: the lease store never deletes an item),
//! and s3:GetObject on tandemd's object when user_data fetches it from S3. Actions that support
//! resource-level permissions are scoped: ReplaceRoute to the route tables (or, when the VIP names none, to
//! the VPC's route tables through the `ec2:Vpc` condition), Associate/DisassociateAddress to the EIPs (and
//! ENIs), the record actions to the hosted zones, the item actions to the table. The Describe* actions
//! support none and get `*`. The document is deterministic: fixed statement order, sorted lists.

use std::collections::BTreeSet;

use serde_json::{Value as Json, json};
use tandem_runtime::config::{Config, MonitorKind, ResourceKind};

use super::user_data::Source;

/// Where the ARNs live.
pub(super) struct Scope<'a> {
    pub partition: &'a str,
    /// The region of the EC2 objects (the provider's).
    pub region: &'a str,
    /// The account; `*` when unknown (credential validation skipped).
    pub account: &'a str,
}

impl Scope<'_> {
    fn ec2(&self, resource: &str) -> String {
        format!("arn:{}:ec2:{}:{}:{resource}", self.partition, self.region, self.account)
    }
}

fn statement(sid: &str, actions: BTreeSet<&str>, resources: BTreeSet<String>) -> Json {
    let resource = if resources.len() == 1 && resources.contains("*") {
        json!("*")
    } else {
        json!(resources.into_iter().collect::<Vec<_>>())
    };
    json!({ "Sid": sid, "Effect": "Allow", "Action": actions.into_iter().collect::<Vec<_>>(), "Resource": resource })
}

/// The policy document (pretty-printed JSON).
pub(super) fn policy(config: &Config, scope: &Scope, source: &Source) -> String {
    let mut describe: BTreeSet<&str> = BTreeSet::new();
    let mut route_tables: BTreeSet<String> = BTreeSet::new();
    let mut vpcs_without_tables: BTreeSet<String> = BTreeSet::new();
    let mut eips: BTreeSet<String> = BTreeSet::new();
    let mut zones: BTreeSet<String> = BTreeSet::new();
    for resource in config.groups.iter().flat_map(|g| g.resources.iter()) {
        match &resource.kind {
            ResourceKind::AwsVip(vip) => {
                describe.extend(["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeRouteTables"]);
                if vip.route_table_ids.is_empty() {
                    vpcs_without_tables.insert(scope.ec2(&format!("vpc/{}", vip.vpc_id)));
                }
                route_tables.extend(vip.route_table_ids.iter().map(|id| scope.ec2(&format!("route-table/{id}"))));
            }
            ResourceKind::AwsEip(eip) => {
                describe.extend(["ec2:DescribeNetworkInterfaces", "ec2:DescribeAddresses"]);
                eips.insert(scope.ec2(&format!("elastic-ip/{}", eip.allocation_id)));
            }
            ResourceKind::AwsDns(dns) => {
                zones.insert(format!("arn:{}:route53:::hostedzone/{}", scope.partition, dns.hosted_zone_id));
            }
            ResourceKind::MirrorDisk(_) | ResourceKind::Exec(_) => {}
        }
    }
    // Resource monitors need what their resource needs (already granted); only the zone monitor adds one.
    if config.monitors.iter().any(|m| matches!(m.kind, MonitorKind::AwsAz)) {
        describe.insert("ec2:DescribeAvailabilityZones");
    }

    let mut statements = Vec::new();
    if !describe.is_empty() {
        statements.push(statement("TandemDescribe", describe, BTreeSet::from(["*".to_string()])));
    }
    if !route_tables.is_empty() {
        statements.push(statement("TandemVipRoutes", BTreeSet::from(["ec2:ReplaceRoute"]), route_tables));
    }
    if !vpcs_without_tables.is_empty() {
        let mut s = statement(
            "TandemVipRoutesOfVpc",
            BTreeSet::from(["ec2:ReplaceRoute"]),
            BTreeSet::from([scope.ec2("route-table/*")]),
        );
        s["Condition"] = json!({ "ArnEquals": { "ec2:Vpc": vpcs_without_tables.into_iter().collect::<Vec<_>>() } });
        statements.push(s);
    }
    if !eips.is_empty() {
        // Associating names both the address and the ENI: both must be allowed.
        eips.insert(scope.ec2("network-interface/*"));
        statements.push(statement(
            "TandemEipAssociation",
            BTreeSet::from(["ec2:AssociateAddress", "ec2:DisassociateAddress"]),
            eips,
        ));
    }
    if !zones.is_empty() {
        statements.push(statement(
            "TandemDnsRecords",
            BTreeSet::from(["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"]),
            zones,
        ));
        statements.push(statement(
            "TandemDnsChanges",
            BTreeSet::from(["route53:GetChange"]),
            BTreeSet::from([format!("arn:{}:route53:::change/*", scope.partition)]),
        ));
    }
    let lease_region = config.lease_region().unwrap_or_else(|| scope.region.to_string());
    statements.push(statement(
        "TandemLease",
        BTreeSet::from(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]),
        BTreeSet::from([format!(
            "arn:{}:dynamodb:{lease_region}:{}:table/{}",
            scope.partition,
            scope.account,
            config.lease_table()
        )]),
    ));
    if let Source::S3 { bucket, key } = source {
        statements.push(statement(
            "TandemdDownload",
            BTreeSet::from(["s3:GetObject"]),
            BTreeSet::from([format!("arn:{}:s3:::{bucket}/{key}", scope.partition)]),
        ));
    }
    let doc = json!({ "Version": "2012-10-17", "Statement": statements });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::Ipv4Addr;

    use tandem_runtime::config::{AwsDns, AwsEip, AwsVip, Group, Monitor, Node, Resource};

    use super::*;

    const SCOPE: Scope = Scope { partition: "aws", region: "us-east-1", account: "123456789012" };

    fn config(kinds: Vec<ResourceKind>) -> Config {
        let mut c = Config::new("web");
        c.nodes.push(Node::new("a", Ipv4Addr::new(10, 0, 1, 10), "us-east-1a"));
        c.nodes.push(Node::new("b", Ipv4Addr::new(10, 0, 2, 10), "us-east-1b"));
        let mut g = Group::new("g", &["a", "b"]);
        for (i, k) in kinds.into_iter().enumerate() {
            g.resources.push(Resource::new(&format!("r{i}"), k));
        }
        c.groups.push(g);
        c.fill_implied();
        c
    }

    fn actions(doc: &str) -> BTreeSet<String> {
        let v: Json = serde_json::from_str(doc).unwrap();
        v["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
            .collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(ToString::to_string).collect()
    }

    const LEASE: [&str; 3] = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"];

    #[test]
    fn vip_cluster_gets_route_actions_on_its_tables() {
        let mut vip = AwsVip::new(Ipv4Addr::new(10, 1, 0, 10), "vpc-0a1b2c3d");
        vip.route_table_ids = vec!["rtb-11111111".into(), "rtb-22222222".into()];
        let doc = policy(&config(vec![ResourceKind::AwsVip(vip)]), &SCOPE, &Source::Ami);
        let mut want = set(&["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeRouteTables"]);
        want.insert("ec2:ReplaceRoute".into());
        want.extend(set(&LEASE));
        assert_eq!(actions(&doc), want);
        assert!(doc.contains("arn:aws:ec2:us-east-1:123456789012:route-table/rtb-22222222"));
        assert!(doc.contains("arn:aws:dynamodb:us-east-1:123456789012:table/tandem-web-leases"));
    }

    #[test]
    fn the_document_is_deterministic() {
        let mut vip = AwsVip::new(Ipv4Addr::new(10, 1, 0, 10), "vpc-0a1b2c3d");
        vip.route_table_ids = vec!["rtb-22222222".into(), "rtb-11111111".into()];
        let mut swapped = vip.clone();
        swapped.route_table_ids.reverse();
        let a = policy(&config(vec![ResourceKind::AwsVip(vip)]), &SCOPE, &Source::Ami);
        let b = policy(&config(vec![ResourceKind::AwsVip(swapped)]), &SCOPE, &Source::Ami);
        assert_eq!(a, b);
    }

    #[test]
    fn vip_without_route_tables_is_scoped_by_vpc() {
        let vip = AwsVip::new(Ipv4Addr::new(10, 1, 0, 10), "vpc-0a1b2c3d");
        let doc = policy(&config(vec![ResourceKind::AwsVip(vip)]), &SCOPE, &Source::Ami);
        let v: Json = serde_json::from_str(&doc).unwrap();
        let s = v["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "TandemVipRoutesOfVpc").unwrap();
        assert_eq!(s["Condition"]["ArnEquals"]["ec2:Vpc"][0], "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-0a1b2c3d");
    }

    #[test]
    fn eip_and_dns_clusters_get_their_actions_only() {
        let doc = policy(&config(vec![ResourceKind::AwsEip(AwsEip::new("eipalloc-12345678"))]), &SCOPE, &Source::Ami);
        let mut want = set(&[
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeAddresses",
            "ec2:AssociateAddress",
            "ec2:DisassociateAddress",
        ]);
        want.extend(set(&LEASE));
        assert_eq!(actions(&doc), want);
        let dns = AwsDns::new("Z123ABC", "app.example.com.");
        let doc = policy(&config(vec![ResourceKind::AwsDns(dns)]), &SCOPE, &Source::Ami);
        let mut want =
            set(&["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets", "route53:GetChange"]);
        want.extend(set(&LEASE));
        assert_eq!(actions(&doc), want);
        assert!(doc.contains("arn:aws:route53:::hostedzone/Z123ABC"));
    }

    #[test]
    fn az_monitor_and_s3_source_add_their_actions() {
        let mut c = config(vec![]);
        c.monitors.push(Monitor::new("zone", MonitorKind::AwsAz));
        let doc = policy(&c, &SCOPE, &Source::Ami);
        let mut want = set(&["ec2:DescribeAvailabilityZones"]);
        want.extend(set(&LEASE));
        assert_eq!(actions(&doc), want);
        let source = Source::S3 { bucket: "b".into(), key: "k/tandemd".into() };
        let doc = policy(&c, &SCOPE, &source);
        want.insert("s3:GetObject".into());
        assert_eq!(actions(&doc), want);
        assert!(doc.contains("arn:aws:s3:::b/k/tandemd"));
    }

    #[test]
    fn instances_get_no_ec2_actions_and_the_lease_table_no_delete() {
        // Nothing in tandemd stops instances or deletes lease items: known instance IDs add no action.
        let mut c = config(vec![]);
        c.nodes[0].instance_id = Some("i-0123456789abcdef0".into());
        let doc = policy(&c, &SCOPE, &Source::Ami);
        assert_eq!(actions(&doc), set(&LEASE));
        assert!(!doc.contains("i-0123456789abcdef0") && !doc.contains("StopInstances"), "{doc}");
        assert!(!doc.contains("DeleteItem"), "{doc}");
    }
}
