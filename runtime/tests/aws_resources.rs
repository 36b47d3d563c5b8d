//! The AWS group resources (aws_vip, aws_eip, aws_dns) against a real moto server (pinned venv from
//! tests/support/moto-venv.sh): the ocf-tester sequence as node A, a move to node B, the calls one start makes,
//! and the operator-facing failures. VIP binding is off: these tests never touch the host's interfaces.

#[path = "support/moto.rs"]
mod moto;

#[path = "support/ocf.rs"]
mod ocf;

use moto::Moto;
use ocf::{UNLEASED, conformance};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::types::{AttributeBooleanValue, DomainType};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HostedZoneConfig, ResourceRecord, ResourceRecordSet, RrType, Vpc, VpcRegion,
};
use tandem_runtime::aws::{AwsClients, AwsEnv, AwsNode, AwsSettings};
use tandem_runtime::config::{AwsDns, AwsDnsNode, AwsEip, AwsVip, Resource, ResourceKind};
use tandem_runtime::resources::aws_dns::AwsDnsResource;
use tandem_runtime::resources::aws_eip::AwsEipResource;
use tandem_runtime::resources::aws_vip::AwsVipResource;
use tandem_runtime::resources::{self, ErrorClass, GroupResource, Invocation, Probe, ResourceContext};

const LEASED: Invocation = Invocation { lease_token: Some(7) };
const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const VIP_CIDR: &str = "10.1.0.10/32";
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
const RECORD: &str = "app.example.internal.";

// ---- moto -----------------------------------------------------------------------------------------------

impl Moto {
    async fn clients(&self) -> AwsClients {
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        AwsClients::new(&moto::sdk_config(&endpoint, Duration::from_secs(5)).await)
    }
}

// ---- the network the guides build, in moto -----------------------------------------------------------------

/// VPC 10.0.0.0/16, one subnet per zone, the nodes' ENIs (source/dest check off), an "old" ENI the VIP routes
/// point at first, three route tables with the VIP route and one without, an EIP and a private hosted zone.
struct World {
    clients: AwsClients,
    vpc: String,
    eni_a: String,
    eni_b: String,
    vip_tables: Vec<String>,
    plain_table: String,
    allocation: String,
    zone: String,
}

impl World {
    async fn build(moto: &Moto) -> World {
        let clients = moto.clients().await;
        let ec2 = &clients.ec2;
        let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.expect("vpc");
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let mut enis = Vec::new();
        for (cidr, zone, ip) in [
            ("10.0.1.0/24", "us-east-1a", "10.0.1.10"),
            ("10.0.2.0/24", "us-east-1b", "10.0.2.10"),
            ("10.0.3.0/24", "us-east-1a", "10.0.3.99"),
        ] {
            let subnet =
                ec2.create_subnet().vpc_id(&vpc).cidr_block(cidr).availability_zone(zone).send().await.expect("subnet");
            let subnet = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string();
            let eni =
                ec2.create_network_interface().subnet_id(&subnet).private_ip_address(ip).send().await.expect("eni");
            let eni = eni.network_interface().and_then(|n| n.network_interface_id()).expect("eni id").to_string();
            ec2.modify_network_interface_attribute()
                .network_interface_id(&eni)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .send()
                .await
                .expect("source/dest check off");
            enis.push(eni);
        }
        let old = enis[2].clone();
        let mut vip_tables = Vec::new();
        for _ in 0..3 {
            let t = ec2.create_route_table().vpc_id(&vpc).send().await.expect("route table");
            let t = t.route_table().and_then(|t| t.route_table_id()).expect("rtb id").to_string();
            ec2.create_route()
                .route_table_id(&t)
                .destination_cidr_block(VIP_CIDR)
                .network_interface_id(&old)
                .send()
                .await
                .expect("vip route");
            vip_tables.push(t);
        }
        let plain = ec2.create_route_table().vpc_id(&vpc).send().await.expect("route table");
        let plain_table = plain.route_table().and_then(|t| t.route_table_id()).expect("rtb id").to_string();
        let eip = ec2.allocate_address().domain(DomainType::Vpc).send().await.expect("eip");
        let allocation = eip.allocation_id().expect("allocation id").to_string();
        let zone = clients
            .route53
            .create_hosted_zone()
            .name("example.internal")
            .caller_reference("tandem-aws-resources")
            .vpc(Vpc::builder().vpc_id(&vpc).vpc_region(VpcRegion::UsEast1).build())
            .hosted_zone_config(HostedZoneConfig::builder().private_zone(true).build())
            .send()
            .await
            .expect("hosted zone");
        let zone = zone.hosted_zone().map(|z| z.id().trim_start_matches("/hostedzone/").to_string()).expect("zone");
        World {
            clients,
            vpc,
            eni_a: enis[0].clone(),
            eni_b: enis[1].clone(),
            vip_tables,
            plain_table,
            allocation,
            zone,
        }
    }

    fn env(&self, node: &str) -> AwsEnv {
        let (ip, zone) = if node == "a" { (IP_A, "us-east-1a") } else { (IP_B, "us-east-1b") };
        let node = AwsNode { name: node.into(), private_ip: ip, availability_zone: zone.into(), eni_id: None };
        AwsEnv::new(
            node,
            AwsSettings { clients: Some(self.clients.clone()), bind_vip: false, call_timeout: Duration::from_secs(5) },
        )
    }

    /// Where the VIP route of `table` points (None: no VIP route).
    async fn vip_target(&self, table: &str) -> Option<String> {
        let out =
            self.clients.ec2.describe_route_tables().route_table_ids(table).send().await.expect("describe tables");
        let t = out.route_tables().first().expect("table");
        t.routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(VIP_CIDR))
            .map(|r| r.network_interface_id().unwrap_or("not an ENI").to_string())
    }

    async fn vip_targets(&self) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for t in &self.vip_tables {
            out.push(self.vip_target(t).await);
        }
        out
    }

    async fn eip_eni(&self) -> Option<String> {
        let out = self.clients.ec2.describe_addresses().allocation_ids(&self.allocation).send().await.expect("eip");
        // moto answers "" for a disassociated EIP's ENI (AWS: absent).
        out.addresses().first().and_then(|a| a.network_interface_id()).filter(|s| !s.is_empty()).map(str::to_string)
    }

    async fn record(&self) -> Option<Vec<String>> {
        let out = self
            .clients
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone)
            .send()
            .await
            .expect("list records");
        out.resource_record_sets()
            .iter()
            .find(|r| r.name() == RECORD && r.r#type() == &RrType::A)
            .map(|r| r.resource_records().iter().map(|v| v.value().to_string()).collect())
    }

    async fn upsert_record(&self, value: &str) {
        let set = ResourceRecordSet::builder()
            .name(RECORD)
            .r#type(RrType::A)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value(value).build().expect("record"))
            .build()
            .expect("set");
        let change = Change::builder().action(ChangeAction::Upsert).resource_record_set(set).build().expect("change");
        self.clients
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone)
            .change_batch(ChangeBatch::builder().changes(change).build().expect("batch"))
            .send()
            .await
            .expect("upsert");
    }
}

fn cx(node: &str) -> ResourceContext {
    ResourceContext {
        cluster: "c1".into(),
        group: "web".into(),
        node: node.into(),
        state_dir: PathBuf::from("/nonexistent"),
    }
}

fn counts(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().collect()
}

fn some(id: &str) -> Option<String> {
    Some(id.to_string())
}

// ---- aws_vip --------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_routes_follow_the_active_node() {
    let moto = Moto::start();
    let w = World::build(&moto).await;
    let config = AwsVip::new(VIP, &w.vpc);
    let a = AwsVipResource::new("vip", &config, &cx("a"), &w.env("a"));
    let b = AwsVipResource::new("vip", &config, &cx("b"), &w.env("b"));

    // Node A: the OCF sequence; its first start re-points all three tables and nothing else.
    a.start(&LEASED).await.expect("first start on A");
    assert_eq!(w.vip_targets().await, vec![some(&w.eni_a); 3]);
    assert_eq!(w.vip_target(&w.plain_table).await, None, "a table without the VIP route is left alone");
    assert_eq!(
        a.calls(),
        counts(&[
            ("ec2:DescribeNetworkInterfaces", 1),
            ("ec2:DescribeRouteTables", 1),
            ("ec2:DescribeVpcs", 1),
            ("ec2:ReplaceRoute", 3),
        ]),
        "one Describe + one write per route table (plus the ENI and VPC lookups, once)"
    );
    a.stop(&LEASED).await.expect("stop");
    conformance(&a, &LEASED).await;
    assert_eq!(w.vip_targets().await, vec![some(&w.eni_a); 3], "stop leaves the routes");

    // Node B, prepared at its daemon's start (ENI and VPC looked up), takes over: every route moves with one
    // Describe + three writes.
    b.prepare().await.expect("prepare B");
    assert_eq!(b.calls(), counts(&[("ec2:DescribeNetworkInterfaces", 1), ("ec2:DescribeVpcs", 1)]));
    b.reset_calls();
    let t = Instant::now();
    b.start(&LEASED).await.expect("start on B");
    let first_b = t.elapsed();
    assert_eq!(w.vip_targets().await, vec![some(&w.eni_b); 3]);
    assert_eq!(b.calls(), counts(&[("ec2:DescribeRouteTables", 1), ("ec2:ReplaceRoute", 3)]));
    assert_eq!(b.probe(&LEASED).await, Ok(Probe::Running));

    // Back to A with ENI and VPC cached: exactly one Describe + three parallel writes.
    a.reset_calls();
    let t = Instant::now();
    a.start(&LEASED).await.expect("start on A again");
    let repoint = t.elapsed();
    assert_eq!(a.calls(), counts(&[("ec2:DescribeRouteTables", 1), ("ec2:ReplaceRoute", 3)]));
    assert_eq!(w.vip_targets().await, vec![some(&w.eni_a); 3]);
    println!(
        "aws_vip re-point of 3 route tables against moto: {} ms with cached ENI/VPC (1 Describe + 3 ReplaceRoute \
         in parallel); {} ms for the first start of a prepared node",
        repoint.as_millis(),
        first_b.as_millis()
    );

    // Someone else re-points one table: A's probe says so (soft: a restart repairs), A's start repairs only it.
    w.clients
        .ec2
        .replace_route()
        .route_table_id(&w.vip_tables[1])
        .destination_cidr_block(VIP_CIDR)
        .network_interface_id(&w.eni_b)
        .send()
        .await
        .expect("replace by hand");
    let e = a.probe(&UNLEASED).await.expect_err("route changed");
    assert_eq!((e.class, e.code()), (ErrorClass::Soft, "TDM-AWS-122"));
    assert!(e.message.contains(&w.vip_tables[1]) && e.message.contains("was changed"), "{e}");
    a.reset_calls();
    a.start(&LEASED).await.expect("restart repairs");
    assert_eq!(a.calls(), counts(&[("ec2:DescribeRouteTables", 1), ("ec2:ReplaceRoute", 1)]));
    assert_eq!(w.vip_targets().await, vec![some(&w.eni_a); 3]);

    // B, stopped, sees it has lost the VIP; its probe is Stopped once unbound.
    b.stop(&LEASED).await.expect("stop B");
    assert_eq!(b.probe(&UNLEASED).await, Ok(Probe::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_creates_the_route_in_a_listed_table_that_lacks_it() {
    let moto = Moto::start();
    let w = World::build(&moto).await;
    let mut config = AwsVip::new(VIP, &w.vpc);
    config.route_table_ids = vec![w.vip_tables[0].clone(), w.plain_table.clone()];
    let a = AwsVipResource::new("vip", &config, &cx("a"), &w.env("a"));
    a.start(&LEASED).await.expect("start");
    assert_eq!(w.vip_target(&w.plain_table).await, some(&w.eni_a));
    assert_eq!(w.vip_target(&w.vip_tables[0]).await, some(&w.eni_a));
    assert_ne!(w.vip_target(&w.vip_tables[1]).await, some(&w.eni_a), "only the listed tables");
    assert_eq!(a.calls()["ec2:CreateRoute"], 1);
    assert_eq!(a.calls()["ec2:ReplaceRoute"], 1);

    // A listed table that does not exist is a config error.
    let mut bad = AwsVip::new(VIP, &w.vpc);
    bad.route_table_ids = vec!["rtb-0123456789abcdef0".into()];
    let r = AwsVipResource::new("vip", &bad, &cx("a"), &w.env("a"));
    let e = r.start(&LEASED).await.expect_err("missing table");
    assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-AWS-111"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_config_errors_are_fatal_with_codes() {
    let moto = Moto::start();
    let w = World::build(&moto).await;

    // Inside the VPC CIDR: found through DescribeVpcs (no vpc_cidrs configured), before any route is touched.
    let inside = AwsVip::new(Ipv4Addr::new(10, 0, 9, 9), &w.vpc);
    let r = AwsVipResource::new("vip", &inside, &cx("a"), &w.env("a"));
    let e = r.start(&LEASED).await.expect_err("VIP inside the VPC");
    assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-AWS-120"), "{e}");
    assert!(e.message.contains("inside the CIDR 10.0.0.0/16"), "{e}");
    assert!(!r.calls().contains_key("ec2:ReplaceRoute"));

    // VPC unknown.
    let r = AwsVipResource::new("vip", &AwsVip::new(VIP, "vpc-0123456789abcdef0"), &cx("a"), &w.env("a"));
    let e = r.start(&LEASED).await.expect_err("no such VPC");
    assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-AWS-110"), "{e}");

    // No table carries the VIP route.
    let r = AwsVipResource::new("vip", &AwsVip::new(Ipv4Addr::new(10, 2, 0, 1), &w.vpc), &cx("a"), &w.env("a"));
    let e = r.start(&LEASED).await.expect_err("no VIP route");
    assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-AWS-123"), "{e}");

    // A node whose private IP no ENI holds cannot run it (hard: fail over).
    let lost = AwsNode {
        name: "c".into(),
        private_ip: Ipv4Addr::new(10, 0, 7, 7),
        availability_zone: "us-east-1a".into(),
        eni_id: None,
    };
    let env = AwsEnv::new(
        lost,
        AwsSettings { clients: Some(w.clients.clone()), bind_vip: false, call_timeout: Duration::from_secs(5) },
    );
    let r = AwsVipResource::new("vip", &AwsVip::new(VIP, &w.vpc), &cx("c"), &env);
    let e = r.start(&LEASED).await.expect_err("no ENI");
    assert_eq!((e.class, e.code()), (ErrorClass::Hard, "TDM-AWS-112"), "{e}");
}

// ---- aws_eip --------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eip_follows_the_active_node() {
    let moto = Moto::start();
    let w = World::build(&moto).await;
    let config = AwsEip::new(&w.allocation);
    let a = AwsEipResource::new("eip", &config, &cx("a"), &w.env("a"));
    let b = AwsEipResource::new("eip", &config, &cx("b"), &w.env("b"));

    conformance(&a, &LEASED).await;
    assert_eq!(w.eip_eni().await, None, "stop disassociated it");
    assert_eq!(a.calls()["ec2:AssociateAddress"], 1, "the second start did not associate again");
    assert_eq!(a.calls()["ec2:DisassociateAddress"], 1, "the second stop did not disassociate again");
    assert_eq!(a.calls()["ec2:DescribeNetworkInterfaces"], 1, "the ENI is looked up once");

    a.start(&LEASED).await.expect("A active");
    assert_eq!(w.eip_eni().await, some(&w.eni_a));
    b.reset_calls();
    b.start(&LEASED).await.expect("B takes over");
    assert_eq!(w.eip_eni().await, some(&w.eni_b));
    assert_eq!(
        b.calls(),
        counts(&[("ec2:AssociateAddress", 1), ("ec2:DescribeAddresses", 2), ("ec2:DescribeNetworkInterfaces", 1)])
    );
    assert_eq!(a.probe(&UNLEASED).await, Ok(Probe::Stopped));
    assert_eq!(b.probe(&LEASED).await, Ok(Probe::Running));
    // A's late stop must not take the EIP away from B.
    a.stop(&LEASED).await.expect("A stops");
    assert_eq!(w.eip_eni().await, some(&w.eni_b));

    // Unknown allocation ID: fatal, also through build_with.
    let r = Resource::new("eip", ResourceKind::AwsEip(AwsEip::new("eipalloc-0123456789abcdef0")));
    let env = w.env("a");
    let built = resources::build_with(&r, &cx("a"), Some(&env), None).expect("aws_eip builds with an AwsEnv");
    assert_eq!(built.kind(), "aws_eip");
    let e = built.start(&LEASED).await.expect_err("no such allocation");
    assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-AWS-113"), "{e}");
}

// ---- aws_dns --------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_record_follows_the_active_node() {
    let moto = Moto::start();
    let w = World::build(&moto).await;
    let mut config = AwsDns::new(&w.zone, RECORD);
    config.per_node.insert("b".into(), AwsDnsNode { ip: Some(Ipv4Addr::new(10, 0, 2, 99)) });
    let a = AwsDnsResource::new("name", &config, &cx("a"), &w.env("a"));
    let b = AwsDnsResource::new("name", &config, &cx("b"), &w.env("b"));
    assert_eq!((a.value(), b.value()), (IP_A, Ipv4Addr::new(10, 0, 2, 99)));

    conformance(&a, &LEASED).await;
    assert_eq!(w.record().await, None, "delete_on_deactivate removed it");
    assert_eq!(a.calls()["route53:ChangeResourceRecordSets"], 2, "one UPSERT, one DELETE");

    a.start(&LEASED).await.expect("A active");
    assert_eq!(w.record().await, Some(vec!["10.0.1.10".to_string()]));
    b.start(&LEASED).await.expect("B takes over");
    assert_eq!(w.record().await, Some(vec!["10.0.2.99".to_string()]), "B's override");
    assert_eq!(a.probe(&UNLEASED).await, Ok(Probe::Stopped));
    assert_eq!(b.probe(&LEASED).await, Ok(Probe::Running));
    a.stop(&LEASED).await.expect("A's late stop");
    assert_eq!(w.record().await, Some(vec!["10.0.2.99".to_string()]), "A must not delete B's record");

    // Someone else changes the record: stop leaves it alone.
    w.upsert_record("10.9.9.9").await;
    b.stop(&LEASED).await.expect("stop");
    assert_eq!(w.record().await, Some(vec!["10.9.9.9".to_string()]));

    // Keeping the record on stop still passes the sequence (the resource remembers it was started).
    let mut keep = AwsDns::new(&w.zone, RECORD);
    keep.delete_on_deactivate = false;
    let k = AwsDnsResource::new("name", &keep, &cx("a"), &w.env("a"));
    conformance(&k, &LEASED).await;
    assert_eq!(w.record().await, Some(vec!["10.0.1.10".to_string()]), "kept after stop");

    // Hosted zone missing: fatal.
    let gone = AwsDnsResource::new("name", &AwsDns::new("Z0123456789ABCDEFGHIJ", RECORD), &cx("a"), &w.env("a"));
    let e = gone.start(&LEASED).await.expect_err("no such zone");
    assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-AWS-114"), "{e}");
    assert!(e.message.contains("hosted zone Z0123456789ABCDEFGHIJ"), "{e}");
}

// ---- the API endpoint is down ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_soft_and_stops_leave_the_address_in_place() {
    let moto = Moto::start();
    let w = World::build(&moto).await;
    let config = AwsEip::new(&w.allocation);
    let env = w.env("a");
    let a = AwsEipResource::new("eip", &config, &cx("a"), &env);
    a.start(&LEASED).await.expect("A active");
    let dns = AwsDnsResource::new("name", &AwsDns::new(&w.zone, RECORD), &cx("a"), &env);
    dns.start(&LEASED).await.expect("record written");
    drop(moto);
    let e = a.probe(&UNLEASED).await.expect_err("endpoint down");
    assert_eq!((e.class, e.code()), (ErrorClass::Soft, "TDM-AWS-101"), "{e}");
    let e = a.start(&LEASED).await.expect_err("start needs AWS");
    assert_eq!(e.code(), "TDM-AWS-101", "{e}");
    // A stop that cannot reach AWS succeeds (TDM-AWS-142, logged): the next owner takes the address over, and a
    // failed stop would get the node shut down over an API outage.
    assert_eq!(a.stop(&LEASED).await, Ok(()), "aws_eip stop with AWS down");
    assert_eq!(dns.stop(&LEASED).await, Ok(()), "aws_dns stop with AWS down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_hard() {
    let moto = Moto::start();
    let w = World::build(&moto).await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
        .no_credentials()
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let node = AwsNode { name: "a".into(), private_ip: IP_A, availability_zone: "us-east-1a".into(), eni_id: None };
    let env = AwsEnv::new(
        node,
        AwsSettings { clients: Some(AwsClients::new(&sdk)), bind_vip: false, call_timeout: Duration::from_secs(5) },
    );
    let a = AwsEipResource::new("eip", &AwsEip::new(&w.allocation), &cx("a"), &env);
    let e = a.probe(&UNLEASED).await.expect_err("no credentials");
    assert_eq!((e.class, e.code()), (ErrorClass::Hard, "TDM-AWS-104"), "{e}");
}
