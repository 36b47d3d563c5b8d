//! The three HA topologies of terraform-examples/ (VIP, EIP and DNS name control, two zones): each applies
//! against moto, re-plans empty, puts the failover objects where the runtime expects them, and destroys
//! with nothing left behind.

use tandem_tests::Env;

/// moto's image catalogue has Amazon Linux 2 but not AL2023 (the examples' default for real AWS).
const TFVARS: &str = "ami_name = \"amzn2-ami-hvm-*-x86_64-gp2\"\n";

fn outputs(wd: &tandem_tests::Workdir) -> serde_json::Value {
    serde_json::from_str(&wd.ok(&["output", "-json"]).stdout).expect("outputs JSON")
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
        let policies =
            env.iam.list_policies().scope(aws_sdk_iam::types::PolicyScopeType::Local).send().await.expect("ListPolicies");
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
        let rts = env.ec2.describe_route_tables().set_route_table_ids(Some(tables.clone())).send().await.expect("tables");
        for rt in rts.route_tables() {
            let vip = rt.routes().iter().find(|r| r.destination_cidr_block() == Some("10.1.0.10/32"));
            assert_eq!(vip.and_then(|r| r.network_interface_id()), Some(eni.as_str()), "{:?}", rt.route_table_id());
        }
        let node1 = env.ec2.describe_network_interfaces().network_interface_ids(&eni).send().await.expect("ENI");
        let check = node1.network_interfaces().first().and_then(|n| n.source_dest_check());
        assert_eq!(check, Some(false), "VIP control needs source/dest check off");
    });
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
    wd.destroy();
    assert_nothing_left(&env);
}
