//! Acceptance: tandem_cluster through the real terraform CLI against moto — plan-time validation on the
//! right attribute (nothing created), apply-time checks of values unknown at plan, rendered configs that the
//! runtime's parser accepts (`tandemctl config check`, the same `tandem_runtime::config` parser tandemd
//! uses), the IAM policy's exact action set per topology, and secrets that survive updates until rotated.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value as Json;
use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

/// True when an error with `code` in terraform's output quotes a configuration line containing `line`.
fn points_at(out: &str, code: &str, line: &str) -> bool {
    out.split("Error: ").filter(|block| block.contains(code)).any(|block| {
        block.lines().any(|l| {
            let l = l.trim_start_matches(|c: char| c == '│' || c.is_whitespace());
            match l.split_once(':') {
                Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest.contains(line),
                _ => false,
            }
        })
    })
}

/// A Route 53 zone `name`, made with the SDK.
fn make_zone(env: &Env, name: &str) -> String {
    env.block_on(async {
        let out = env
            .route53
            .create_hosted_zone()
            .name(name)
            .caller_reference(format!("cluster-test-{name}"))
            .send()
            .await
            .expect("CreateHostedZone");
        out.hosted_zone().map(|z| z.id().rsplit('/').next().unwrap_or_default().to_string()).expect("id")
    })
}

fn delete_zone(env: &Env, id: &str) {
    env.block_on(async { env.route53.delete_hosted_zone().id(id).send().await.expect("DeleteHostedZone") });
}

/// tandemctl from the same build as the provider under test.
fn tandemctl() -> PathBuf {
    let provider = tandem_tests::provider::provider_binary().expect("provider binary");
    let bin = provider.parent().expect("target dir").join("tandemctl");
    assert!(bin.exists(), "{} is missing: build with `cargo build --workspace`", bin.display());
    bin
}

fn strings(v: &Json) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
}

/// Every action of a policy document.
fn actions(policy: &str) -> BTreeSet<String> {
    let doc: Json = serde_json::from_str(policy).expect("policy JSON");
    doc["Statement"].as_array().expect("statements").iter().flat_map(|s| strings(&s["Action"])).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(ToString::to_string).collect()
}

const LEASE: [&str; 3] = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"];
const VIP: [&str; 4] =
    ["ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables", "ec2:DescribeVpcs", "ec2:ReplaceRoute"];
const EIP: [&str; 4] =
    ["ec2:AssociateAddress", "ec2:DescribeAddresses", "ec2:DescribeNetworkInterfaces", "ec2:DisassociateAddress"];
const DNS: [&str; 3] = ["route53:ChangeResourceRecordSets", "route53:GetChange", "route53:ListResourceRecordSets"];

/// The network every valid cluster below uses, made by tandem resources in the same apply (so the cluster's
/// AWS checks run at apply, with the IDs known by then).
const NETWORK: &str = r#"
resource "tandem_vpc" "net" {
  cidr_block = "10.0.0.0/16"
}

resource "tandem_subnet" "a" {
  vpc_id            = tandem_vpc.net.id
  cidr_block        = "10.0.1.0/24"
  availability_zone = "us-east-1a"
}

resource "tandem_subnet" "b" {
  vpc_id            = tandem_vpc.net.id
  cidr_block        = "10.0.2.0/24"
  availability_zone = "us-east-1b"
}

resource "tandem_route_table" "a" {
  vpc_id = tandem_vpc.net.id
}

resource "tandem_route_table" "b" {
  vpc_id = tandem_vpc.net.id
}

resource "tandem_eip" "public" {}
"#;

const NODES: &str = r#"
  node {
    name              = "node-a"
    private_ip        = "10.0.1.10"
    availability_zone = "us-east-1a"
    subnet_id         = tandem_subnet.a.id
  }
  node {
    name              = "node-b"
    private_ip        = "10.0.2.10"
    availability_zone = "us-east-1b"
    subnet_id         = tandem_subnet.b.id
  }
"#;

fn valid_config(zone: &str, interval: &str, rotate: &str) -> String {
    format!(
        r#"{provider}{NETWORK}
resource "tandem_cluster" "vip" {{
  name           = "vip"
  rotate_secrets = "{rotate}"
{NODES}
  heartbeat {{
    interval = "{interval}"
    timeout  = "5s"
  }}
  group {{
    name    = "web"
    servers = ["node-a", "node-b"]
    mirror_disk {{
      name            = "data"
      data_device     = "/dev/nvme1n1p2"
      metadata_device = "/dev/nvme1n1p1"
      mount_point     = "/srv/data"
    }}
    exec {{
      name       = "app"
      start      = "systemctl start app"
      stop       = "systemctl stop app"
      depends_on = ["data"]
    }}
    aws_vip {{
      name            = "vip"
      ip              = "10.1.0.10"
      vpc_id          = tandem_vpc.net.id
      route_table_ids = [tandem_route_table.a.id, tandem_route_table.b.id]
      override {{
        node   = "node-b"
        device = "ens6"
      }}
    }}
  }}
  monitor {{
    name     = "data-mirror"
    kind     = "mirror"
    resource = "data"
  }}
}}

resource "tandem_cluster" "eip" {{
  name = "eip"
{NODES}
  group {{
    name    = "web"
    servers = ["node-a", "node-b"]
    aws_eip {{
      name          = "eip"
      allocation_id = tandem_eip.public.id
    }}
  }}
}}

resource "tandem_cluster" "dns" {{
  name = "dns"
{NODES}
  group {{
    name    = "web"
    servers = ["node-b", "node-a"]
    aws_dns {{
      name           = "dns"
      hosted_zone_id = "{zone}"
      record_name    = "app.example.internal."
    }}
  }}
}}

resource "tandem_cluster" "all" {{
  name = "all"
  node {{
    name              = "node-a"
    private_ip        = "10.0.1.20"
    availability_zone = "us-east-1a"
    instance_id       = "i-0123456789abcdef0"
  }}
  node {{
    name              = "node-b"
    private_ip        = "10.0.2.20"
    availability_zone = "us-east-1b"
    instance_id       = "i-0fedcba9876543210"
  }}
  group {{
    name    = "web"
    servers = ["node-a", "node-b"]
    aws_vip {{
      name   = "vip"
      ip     = "10.1.0.20"
      vpc_id = tandem_vpc.net.id
    }}
    aws_eip {{
      name          = "eip"
      allocation_id = tandem_eip.public.id
    }}
    aws_dns {{
      name           = "dns"
      hosted_zone_id = "{zone}"
      record_name    = "all.example.internal."
    }}
  }}
  monitor {{
    name         = "zone"
    kind         = "aws_az"
    on_aws_error = "warn"
  }}
}}
"#,
        provider = provider_block()
    )
}

/// Checks each node's rendered config with the runtime's parser (through tandemctl), as that node.
fn assert_configs_parse(wd: &tandem_tests::Workdir, state: &Json, cluster: &str) {
    let configs = state["node_config"].as_object().expect("node_config map");
    assert_eq!(configs.keys().map(String::as_str).collect::<Vec<_>>(), vec!["node-a", "node-b"], "{cluster}");
    for (node, text) in configs {
        let text = text.as_str().expect("config text");
        assert!(text.starts_with(&format!("# tandem cluster \"{cluster}\": the config of node \"{node}\"")), "{text}");
        let file = wd.path().join(format!("{cluster}-{node}.hcl"));
        std::fs::write(&file, text).expect("write config");
        let out = std::process::Command::new(tandemctl())
            .args(["config", "check"])
            .arg(&file)
            .args(["--node", node])
            .output()
            .expect("tandemctl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cluster}/{node}: {}{}\n{text}", stdout, String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.trim(), format!("ok: cluster {cluster}, 2 nodes, 1 group"));
        for name in ["node-a", "node-b"] {
            assert!(text.contains(&format!("node \"{name}\" {{")), "{cluster} names {name}:\n{text}");
        }
    }
    let user_data = state["user_data"]["node-a"].as_str().expect("user_data");
    assert!(user_data.starts_with("#cloud-config\n") && user_data.contains("/etc/tandem/secrets/node.key"));
}

fn secrets(state: &Json) -> Vec<Json> {
    ["heartbeat_key", "ca_cert_pem", "ca_key_pem", "node_cert_pem", "node_key_pem"]
        .iter()
        .map(|k| state[*k].clone())
        .collect()
}

#[test]
fn cluster_renders_parseable_configs_exact_policies_and_keeps_secrets_until_rotated() {
    let env = Env::start();
    let zone = make_zone(&env, "example.internal");
    let wd = env.workdir("cluster", &valid_config(&zone, "1s", "1"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();

    let vip = wd.state_of("tandem_cluster.vip");
    for name in ["vip", "eip", "dns", "all"] {
        let state = if name == "vip" { vip.clone() } else { wd.state_of(&format!("tandem_cluster.{name}")) };
        assert_eq!(state["id"], name);
        assert_configs_parse(&wd, &state, name);
        let policy = state["iam_policy_json"].as_str().expect("policy");
        let mut want = set(&LEASE);
        match name {
            "vip" => want.extend(set(&VIP)),
            "eip" => want.extend(set(&EIP)),
            "dns" => want.extend(set(&DNS)),
            _ => {
                want.extend(set(&VIP));
                want.extend(set(&EIP));
                want.extend(set(&DNS));
                // Known instance IDs add nothing: tandemd never stops an instance.
                want.extend(set(&["ec2:DescribeAvailabilityZones"]));
            }
        }
        assert_eq!(actions(policy), want, "{name}: {policy}");
        assert!(policy.contains(&format!("table/tandem-{name}-leases")), "{policy}");
    }
    // Scoped to the cluster's own objects.
    let vip_policy = vip["iam_policy_json"].as_str().expect("policy");
    for rt in ["a", "b"] {
        let id = wd.state_of(&format!("tandem_route_table.{rt}"))["id"].as_str().expect("rtb").to_string();
        assert!(vip_policy.contains(&format!("route-table/{id}")), "{vip_policy}");
    }
    let vip_config = vip["node_config"]["node-a"].as_str().expect("config");
    assert!(vip_config.contains("vpc_cidrs") && vip_config.contains("10.0.0.0/16"), "the VPC's CIDR is rendered");
    assert_eq!(vip["lease_table"], "tandem-vip-leases");
    let ports: Vec<(String, i64)> = vip["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["protocol"].as_str().unwrap_or_default().to_string(), p["port"].as_i64().unwrap_or_default()))
        .collect();
    assert_eq!(ports, vec![("tcp".into(), 7402), ("udp".into(), 7400), ("tcp".into(), 7410)]);

    // An unrelated change re-renders the config and keeps every secret.
    let before = secrets(&vip);
    wd.write(&valid_config(&zone, "500ms", "1"));
    let planned = wd.planned_actions();
    let changed: Vec<&(String, Vec<String>)> = planned.iter().filter(|(_, a)| a != &["no-op".to_string()]).collect();
    assert_eq!(changed, vec![&("tandem_cluster.vip".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    let updated = wd.state_of("tandem_cluster.vip");
    assert_eq!(secrets(&updated), before, "secrets survive an unrelated update");
    assert!(updated["node_config"]["node-a"].as_str().expect("config").contains("interval = \"500ms\""));

    // Rotation replaces every secret.
    wd.write(&valid_config(&zone, "500ms", "2"));
    wd.apply();
    wd.assert_plans_empty();
    let rotated = secrets(&wd.state_of("tandem_cluster.vip"));
    for (new, old) in rotated.iter().zip(&before) {
        assert_ne!(new, old, "rotate_secrets regenerates every secret");
        assert!(new.is_string() || new.is_object());
    }

    wd.destroy();
    assert!(env.non_default_vpcs().is_empty());
    delete_zone(&env, &zone);
}

/// A network made with the SDK before terraform runs, so that the cluster's AWS checks run at plan.
struct Network {
    vpc: String,
    subnet_a: String,
    subnet_b: String,
    route_table: String,
    other_route_table: String,
    zone: String,
    allocation: String,
}

fn make_network(env: &Env) -> Network {
    let made = env.block_on(async {
        let vpc = |cidr: &'static str| async move {
            let out = env.ec2.create_vpc().cidr_block(cidr).send().await.expect("CreateVpc");
            out.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string()
        };
        let main = vpc("10.0.0.0/16").await;
        let other = vpc("10.9.0.0/16").await;
        let subnet = |cidr: &'static str, az: &'static str| {
            let main = main.clone();
            async move {
                let out = env
                    .ec2
                    .create_subnet()
                    .vpc_id(main)
                    .cidr_block(cidr)
                    .availability_zone(az)
                    .send()
                    .await
                    .expect("CreateSubnet");
                out.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string()
            }
        };
        let subnet_a = subnet("10.0.1.0/24", "us-east-1a").await;
        let subnet_b = subnet("10.0.2.0/24", "us-east-1b").await;
        let table = |vpc: String| async move {
            let out = env.ec2.create_route_table().vpc_id(vpc).send().await.expect("CreateRouteTable");
            out.route_table().and_then(|t| t.route_table_id()).expect("rtb id").to_string()
        };
        let route_table = table(main.clone()).await;
        let other_route_table = table(other).await;
        let eip = env.ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.expect("EIP");
        let allocation = eip.allocation_id().expect("allocation").to_string();
        (main, subnet_a, subnet_b, route_table, other_route_table, allocation)
    });
    let (vpc, subnet_a, subnet_b, route_table, other_route_table, allocation) = made;
    let zone = make_zone(env, "example.internal");
    Network { vpc, subnet_a, subnet_b, route_table, other_route_table, zone, allocation }
}

/// Runs `terraform plan` on `config`, expects it to fail, and checks that each (code, line) error quotes
/// its line.
fn assert_plan_errors(wd: &tandem_tests::Workdir, config: &str, expect: &[(&str, &str)]) {
    wd.write(config);
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1), "{}", r.output());
    let out = r.output();
    for (code, line) in expect {
        assert!(points_at(&out, code, line), "{code} should point at `{line}`:\n{out}");
    }
}

#[test]
fn each_validation_rule_points_at_its_attribute_and_nothing_is_created() {
    let env = Env::start();
    let n = make_network(&env);
    let Network { vpc, subnet_a, subnet_b, route_table, other_route_table, zone, allocation } = &n;
    let wd = env.workdir("bad", provider_block());
    wd.init();

    // The model's own rules run offline (terraform validate, and before plan).
    let offline = format!(
        r#"{provider}
resource "tandem_cluster" "bad" {{
  name = "bad"
  node {{
    name              = "node-a"
    private_ip        = "10.0.1.10"
    availability_zone = "us-east-1a"
  }}
  node {{
    name              = "node-b"
    private_ip        = "10.0.1.10"
    availability_zone = "us-east-1b"
  }}
  heartbeat {{
    interval = "2s"
    timeout  = "1s"
  }}
  group {{
    name    = "web"
    servers = ["node-a", "node-c"]
    aws_vip {{
      name   = "vip"
      ip     = "10.1.0.0/24"
      vpc_id = "{vpc}"
    }}
    aws_dns {{
      name           = "dns"
      hosted_zone_id = "{zone}"
      record_name    = "App.example.internal"
    }}
    exec {{
      name       = "vip"
      start      = "true"
    }}
    exec {{
      name       = "app"
      start      = "true"
      depends_on = ["app2"]
    }}
    exec {{
      name       = "app2"
      start      = "true"
      depends_on = ["app"]
    }}
  }}
  monitor {{
    name     = "eip-watch"
    kind     = "aws_eip"
    resource = "no-such-resource"
  }}
  monitor {{
    name     = "port"
    kind     = "tcp"
    address  = "example.com:443"
    resource = "vip"
  }}
}}
"#,
        provider = provider_block()
    );
    assert_plan_errors(
        &wd,
        &offline,
        &[
            ("TDM-CFG-014", "private_ip        = \"10.0.1.10\""),
            ("TDM-CFG-019", "timeout  = \"1s\""),
            ("TDM-CFG-011", "servers = [\"node-a\", \"node-c\"]"),
            ("TDM-CFG-015", "ip     = \"10.1.0.0/24\""),
            ("TDM-CFG-017", "record_name    = \"App.example.internal\""),
            ("TDM-CFG-010", "name       = \"vip\""),
            ("TDM-CFG-013", "depends_on = [\"app2\"]"),
            ("TDM-CFG-012", "resource = \"no-such-resource\""),
            ("TDM-CLU-015", "resource = \"vip\""),
        ],
    );
    let validate = wd.run(&["validate", "-no-color"]);
    assert_eq!(validate.code, Some(1), "terraform validate sees the model's rules:\n{}", validate.output());
    assert!(validate.output().contains("TDM-CFG-013"), "{}", validate.output());

    // The rules that ask AWS run at plan, on every input that is known.
    let aws = format!(
        r#"{provider}
resource "tandem_cluster" "bad" {{
  name = "bad"
  node {{
    name              = "node-a"
    private_ip        = "10.0.2.77"
    availability_zone = "us-east-1a"
    subnet_id         = "{subnet_a}"
  }}
  node {{
    name              = "node-b"
    private_ip        = "10.0.2.10"
    availability_zone = "us-east-1q"
  }}
  node {{
    name              = "node-c"
    private_ip        = "10.0.1.1"
    availability_zone = "us-east-1a"
    subnet_id         = "{subnet_a}"
  }}
  node {{
    name              = "node-d"
    private_ip        = "10.0.2.20"
    availability_zone = "us-east-1a"
    subnet_id         = "{subnet_b}"
  }}
  group {{
    name    = "web"
    servers = ["node-a", "node-b"]
    aws_vip {{
      name            = "vip"
      ip              = "10.0.9.9"
      vpc_id          = "{vpc}"
      route_table_ids = ["{route_table}", "rtb-0123456789abcdef0", "{other_route_table}"]
    }}
    aws_vip {{
      name   = "vip-gone"
      ip     = "10.1.0.10"
      vpc_id = "vpc-0123456789abcdef0"
    }}
    aws_eip {{
      name          = "eip-gone"
      allocation_id = "eipalloc-0123456789abcdef0"
    }}
    aws_eip {{
      name          = "eip"
      allocation_id = "{allocation}"
    }}
    aws_dns {{
      name           = "dns-other"
      hosted_zone_id = "{zone}"
      record_name    = "app.example.com."
    }}
    aws_dns {{
      name           = "dns-gone"
      hosted_zone_id = "Z0123456789NOSUCHZONE"
      record_name    = "gone.example.internal."
    }}
  }}
}}
"#,
        provider = provider_block()
    );
    assert_plan_errors(
        &wd,
        &aws,
        &[
            ("TDM-CLU-004", "private_ip        = \"10.0.2.77\""),
            ("TDM-CLU-002", "availability_zone = \"us-east-1q\""),
            ("TDM-CLU-005", "private_ip        = \"10.0.1.1\""),
            ("TDM-CLU-006", &format!("subnet_id         = \"{subnet_b}\"")),
            ("TDM-CFG-016", "ip              = \"10.0.9.9\""),
            ("TDM-CLU-007", "route_table_ids"),
            ("TDM-CLU-008", "route_table_ids"),
            ("TDM-CLU-001", "vpc_id = \"vpc-0123456789abcdef0\""),
            ("TDM-CLU-011", "allocation_id = \"eipalloc-0123456789abcdef0\""),
            ("TDM-CLU-010", "record_name    = \"app.example.com.\""),
            ("TDM-CLU-009", "hosted_zone_id = \"Z0123456789NOSUCHZONE\""),
        ],
    );
    let out = wd.plan_code(&[]).output();
    assert!(!points_at(&out, "TDM-CLU-011", &format!("\"{allocation}\"")), "the existing EIP passes:\n{out}");
    assert_eq!(out.matches("Error: ").count(), 11, "one error per mistake, nothing more:\n{out}");

    // Nothing was created: the failed apply leaves an empty state.
    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(apply.code, Some(1));
    let listed = wd.run(&["state", "list"]);
    assert!(listed.stdout.trim().is_empty(), "state after failed apply: {}", listed.stdout);
}

#[test]
fn checks_of_values_unknown_at_plan_run_at_apply_and_leave_no_cluster() {
    let env = Env::start();
    let config = format!(
        r#"{provider}
resource "tandem_vpc" "late" {{
  cidr_block = "10.20.0.0/16"
}}

resource "tandem_cluster" "late" {{
  name = "late"
  node {{
    name              = "node-a"
    private_ip        = "10.20.1.10"
    availability_zone = "us-east-1a"
  }}
  group {{
    name    = "web"
    servers = ["node-a", "node-b"]
    aws_vip {{
      name   = "vip"
      ip     = "10.20.5.5"
      vpc_id = tandem_vpc.late.id
    }}
  }}
}}
"#,
        provider = provider_block()
    );
    let wd = env.workdir("late", &config);
    wd.init();
    // The unknown VPC does not hide the other mistakes.
    let out = wd.plan_code(&[]).output();
    assert!(points_at(&out, "TDM-CFG-011", "servers = [\"node-a\", \"node-b\"]"), "{out}");
    assert!(!out.contains("TDM-CFG-016"), "the VIP check waits for the VPC:\n{out}");

    wd.write(&config.replace("[\"node-a\", \"node-b\"]", "[\"node-a\"]"));
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "valid as far as plan can tell:\n{}", plan.output());
    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(apply.code, Some(1), "{}", apply.output());
    assert!(points_at(&apply.output(), "TDM-CFG-016", "ip     = \"10.20.5.5\""), "{}", apply.output());
    let listed = wd.ok(&["state", "list"]).stdout;
    assert_eq!(listed.trim(), "tandem_vpc.late", "the cluster is not in state");

    // Fixed, the same configuration applies.
    wd.write(&config.replace("[\"node-a\", \"node-b\"]", "[\"node-a\"]").replace("10.20.5.5", "10.21.5.5"));
    wd.apply();
    wd.assert_plans_empty();
    wd.destroy();
    assert!(env.non_default_vpcs().is_empty());
}
