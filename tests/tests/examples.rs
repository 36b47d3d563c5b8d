//! The HA topologies of terraform-examples/ (VIP, EIP and DNS name control in two zones, and a VIP cluster in
//! an existing VPC): each applies against moto, re-plans empty, puts the failover objects where the runtime
//! expects them, renders a node config per node that the runtime accepts, grants exactly the IAM actions its
//! features need, and destroys with nothing left behind.

use std::collections::BTreeSet;

use tandem_tests::Env;

/// moto's image catalogue has Amazon Linux 2 but not AL2023 (the examples' default for real AWS).
const TFVARS: &str = "ami_name = \"amzn2-ami-hvm-*-x86_64-gp2\"\n";

fn outputs(wd: &tandem_tests::Workdir) -> serde_json::Value {
    serde_json::from_str(&wd.ok(&["output", "-json"]).stdout).expect("outputs JSON")
}

/// Every action the cluster's policy grants.
fn policy_actions(out: &serde_json::Value) -> BTreeSet<String> {
    let doc: serde_json::Value =
        serde_json::from_str(out["iam_policy_json"]["value"].as_str().expect("policy")).expect("policy JSON");
    let mut actions = BTreeSet::new();
    for st in doc["Statement"].as_array().expect("statements") {
        match &st["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().filter_map(|a| a.as_str().map(str::to_string)))
            }
            other => panic!("unexpected Action {other}"),
        }
    }
    actions
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The lease table's item actions and the zone monitor's call: common to every example.
const COMMON: [&str; 4] =
    ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "ec2:DescribeAvailabilityZones"];

/// Each node's rendered config passes the runtime's own offline check, naming itself.
fn assert_node_configs_accepted(env: &Env, out: &serde_json::Value) {
    let configs = out["node_config"]["value"].as_object().expect("node_config map");
    assert_eq!(configs.keys().cloned().collect::<Vec<_>>(), vec!["node1".to_string(), "node2".to_string()]);
    let tandemctl = tandem_tests::provider::provider_binary().expect("binary").with_file_name("tandemctl");
    for (node, config) in configs {
        let file = env.root.path().join(format!("{node}.hcl"));
        std::fs::write(&file, config.as_str().expect("config text")).expect("write config");
        let check = std::process::Command::new(&tandemctl)
            .args(["config", "check"])
            .arg(&file)
            .args(["--node", node])
            .output()
            .expect("tandemctl runs");
        let text = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
        assert!(check.status.success(), "{node}: {text}");
        assert!(text.contains("2 nodes"), "{node}: {text}");
    }
}

/// Everything the examples create is gone: VPCs, instances, addresses, zones, IAM, tables.
fn assert_nothing_left(env: &Env) {
    assert!(env.non_default_vpcs().is_empty(), "VPCs left: {:?}", env.non_default_vpcs());
    env.block_on(async {
        let running: Vec<_> = env
            .ec2
            .describe_instances()
            .send()
            .await
            .expect("DescribeInstances")
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        assert!(running.is_empty(), "instances left: {running:?}");
        let eips = env.ec2.describe_addresses().send().await.expect("DescribeAddresses");
        assert!(eips.addresses().is_empty(), "addresses left: {:?}", eips.addresses());
        let volumes = env.ec2.describe_volumes().send().await.expect("DescribeVolumes");
        let left: Vec<_> = volumes
            .volumes()
            .iter()
            .filter(|v| v.tags().iter().any(|t| t.key() == Some("Cluster")))
            .filter_map(|v| v.volume_id())
            .collect();
        assert!(left.is_empty(), "volumes left: {left:?}");
        let zones = env.route53.list_hosted_zones().send().await.expect("ListHostedZones");
        assert!(zones.hosted_zones().is_empty(), "zones left: {:?}", zones.hosted_zones());
        let roles = env.iam.list_roles().send().await.expect("ListRoles");
        assert!(roles.roles().iter().all(|r| !r.role_name().starts_with("tandem-")), "roles left");
        let policies = env
            .iam
            .list_policies()
            .scope(aws_sdk_iam::types::PolicyScopeType::Local)
            .send()
            .await
            .expect("ListPolicies");
        assert!(policies.policies().is_empty(), "policies left: {:?}", policies.policies());
        let tables = env.dynamodb.list_tables().send().await.expect("ListTables");
        assert!(tables.table_names().is_empty(), "tables left: {:?}", tables.table_names());
    });
}

#[test]
fn vip_cluster_routes_the_vip_to_node1_in_every_route_table() {
    let env = Env::start();
    let wd = env.example_workdir("vip-cluster", TFVARS);
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let out = outputs(&wd);
    let eni = out["node_enis"]["value"][0].as_str().expect("node1 ENI").to_string();
    let tables: Vec<String> = out["vip_route_tables"]["value"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    assert_eq!(tables.len(), 3, "public + one private table per zone");
    env.block_on(async {
        let rts =
            env.ec2.describe_route_tables().set_route_table_ids(Some(tables.clone())).send().await.expect("tables");
        for rt in rts.route_tables() {
            let vip = rt.routes().iter().find(|r| r.destination_cidr_block() == Some("10.1.0.10/32"));
            assert_eq!(vip.and_then(|r| r.network_interface_id()), Some(eni.as_str()), "{:?}", rt.route_table_id());
        }
        let node1 = env.ec2.describe_network_interfaces().network_interface_ids(&eni).send().await.expect("ENI");
        let check = node1.network_interfaces().first().and_then(|n| n.source_dest_check());
        assert_eq!(check, Some(false), "VIP control needs source/dest check off");
    });
    assert_node_configs_accepted(&env, &out);
    let mut expected =
        set(&["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeRouteTables", "ec2:ReplaceRoute"]);
    expected.extend(set(&COMMON));
    assert_eq!(policy_actions(&out), expected);
    wd.destroy();
    assert_nothing_left(&env);
}

#[test]
fn eip_cluster_associates_the_service_address_with_node1() {
    let env = Env::start();
    let wd = env.example_workdir("eip-cluster", TFVARS);
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let out = outputs(&wd);
    let eni = out["node_enis"]["value"][0].as_str().expect("node1 ENI").to_string();
    let alloc = out["allocation_id"]["value"].as_str().expect("allocation").to_string();
    env.block_on(async {
        let a = env.ec2.describe_addresses().allocation_ids(&alloc).send().await.expect("DescribeAddresses");
        assert_eq!(a.addresses().first().and_then(|a| a.network_interface_id()), Some(eni.as_str()));
    });
    assert_node_configs_accepted(&env, &out);
    let mut expected = set(&[
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeAddresses",
        "ec2:AssociateAddress",
        "ec2:DisassociateAddress",
    ]);
    expected.extend(set(&COMMON));
    assert_eq!(policy_actions(&out), expected);
    wd.destroy();
    assert_nothing_left(&env);
}

#[test]
fn dns_cluster_points_the_record_at_node1_in_a_private_zone() {
    let env = Env::start();
    let wd = env.example_workdir("dns-cluster", TFVARS);
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let out = outputs(&wd);
    let zone = out["zone_id"]["value"].as_str().expect("zone").to_string();
    let node1 = out["nodes"]["value"]["node1"].as_str().expect("node1 ip").to_string();
    env.block_on(async {
        let z = env.route53.get_hosted_zone().id(&zone).send().await.expect("GetHostedZone");
        assert_eq!(z.hosted_zone().and_then(|h| h.config()).map(|c| c.private_zone()), Some(true));
        let sets = env.route53.list_resource_record_sets().hosted_zone_id(&zone).send().await.expect("records");
        let a = sets
            .resource_record_sets()
            .iter()
            .find(|r| r.name() == "db.tandem.internal." && r.r#type().as_str() == "A")
            .expect("service record");
        let values: Vec<_> = a.resource_records().iter().map(|r| r.value()).collect();
        assert_eq!(values, vec![node1.as_str()]);
    });
    assert_node_configs_accepted(&env, &out);
    let mut expected =
        set(&["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets", "route53:GetChange"]);
    expected.extend(set(&COMMON));
    assert_eq!(policy_actions(&out), expected);
    wd.destroy();
    assert_nothing_left(&env);
}

#[test]
fn existing_vpc_cluster_goes_into_a_network_made_elsewhere() {
    let env = Env::start();
    // The network "another team" made: a VPC, two subnets in two zones, two route tables.
    let (vpc, subnets, tables) = env.block_on(async {
        let vpc = env.ec2.create_vpc().cidr_block("10.42.0.0/16").send().await.expect("CreateVpc");
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc").to_string();
        let mut subnets = Vec::new();
        let mut tables = Vec::new();
        for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
            let s = env
                .ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("10.42.{i}.0/24"))
                .availability_zone(*az)
                .send()
                .await
                .expect("CreateSubnet");
            subnets.push(s.subnet().and_then(|s| s.subnet_id()).expect("subnet").to_string());
            let t = env.ec2.create_route_table().vpc_id(&vpc).send().await.expect("CreateRouteTable");
            tables.push(t.route_table().and_then(|t| t.route_table_id()).expect("table").to_string());
        }
        (vpc, subnets, tables)
    });
    let quoted = |v: &[String]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let tfvars = format!(
        "{TFVARS}vpc_id = \"{vpc}\"\nsubnet_ids = [{}]\nzones = [\"us-east-1a\", \"us-east-1b\"]\nroute_table_ids = [{}]\nnode_ips = [\"10.42.0.11\", \"10.42.1.11\"]\n",
        quoted(&subnets),
        quoted(&tables)
    );
    let wd = env.example_workdir("existing-vpc", &tfvars);
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let out = outputs(&wd);
    assert_node_configs_accepted(&env, &out);
    let eni = out["node_enis"]["value"][0].as_str().expect("node1 ENI").to_string();
    env.block_on(async {
        let rts =
            env.ec2.describe_route_tables().set_route_table_ids(Some(tables.clone())).send().await.expect("tables");
        for rt in rts.route_tables() {
            let vip = rt.routes().iter().find(|r| r.destination_cidr_block() == Some("10.1.0.10/32"));
            assert_eq!(vip.and_then(|r| r.network_interface_id()), Some(eni.as_str()));
        }
    });
    wd.destroy();
    // Only the network made elsewhere is left.
    assert_eq!(env.non_default_vpcs(), vec![vpc]);
}
