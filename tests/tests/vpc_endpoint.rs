//! Acceptance: tandem_vpc_endpoint (Gateway and Interface) against moto through the real terraform CLI.

use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

/// True when the error with `code` in terraform's output quotes the configuration line that sets `attr`.
fn points_at(out: &str, code: &str, attr: &str) -> bool {
    out.split("Error: ").filter(|block| block.contains(code)).any(|block| {
        block.lines().any(|line| {
            let line = line.trim_start_matches(|c: char| c == '│' || c.is_whitespace());
            match line.split_once(':') {
                Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                    rest.trim_start().strip_prefix(attr).is_some_and(|r| r.trim_start().starts_with('='))
                }
                _ => false,
            }
        })
    })
}

fn id_of(state: &serde_json::Value) -> String {
    state["id"].as_str().expect("id").to_string()
}

fn endpoint(env: &Env, id: &str) -> Option<aws_sdk_ec2::types::VpcEndpoint> {
    env.block_on(async {
        let out = env.ec2.describe_vpc_endpoints().send().await.expect("DescribeVpcEndpoints");
        out.vpc_endpoints().iter().find(|e| e.vpc_endpoint_id() == Some(id)).cloned()
    })
}

/// Endpoints AWS lists in any state but `deleted`.
fn live_endpoints(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.ec2.describe_vpc_endpoints().send().await.expect("DescribeVpcEndpoints");
        out.vpc_endpoints()
            .iter()
            .filter(|e| e.state().map(|s| s.as_str().to_ascii_lowercase()) != Some("deleted".into()))
            .filter_map(|e| e.vpc_endpoint_id().map(str::to_string))
            .collect()
    })
}

const POLICY_PRETTY: &str = r#"{
    "Version": "2012-10-17",
    "Statement": [
      {
        "Effect": "Allow",
        "Principal": "*",
        "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
        "Resource": "*"
      }
    ]
  }"#;

/// The same document: other whitespace, other key order, other list order.
const POLICY_RESPELLED: &str = r#"{"Statement":[{"Resource":"*","Action":["dynamodb:PutItem","dynamodb:GetItem"],"Principal":"*","Effect":"Allow"}],"Version":"2012-10-17"}"#;

const POLICY_OTHER: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"dynamodb:*","Resource":"*"}]}"#;

fn gateway_config(service: &str, tables: &[&str], policy: &str, name: &str) -> String {
    let tables: Vec<String> = tables.iter().map(|t| format!("tandem_route_table.{t}.id")).collect();
    format!(
        r#"{}
resource "tandem_vpc" "test" {{
  cidr_block = "10.130.0.0/16"
}}

resource "tandem_route_table" "a" {{
  vpc_id = tandem_vpc.test.id
}}

resource "tandem_route_table" "b" {{
  vpc_id = tandem_vpc.test.id
}}

resource "tandem_vpc_endpoint" "test" {{
  vpc_id          = tandem_vpc.test.id
  service_name    = "{service}"
  route_table_ids = [{tables}]
  policy          = <<-EOT
  {policy}
  EOT
  tags            = {{ Name = "{name}" }}
}}
"#,
        provider_block(),
        tables = tables.join(", "),
    )
}

const DYNAMODB: &str = "com.amazonaws.us-east-1.dynamodb";

#[test]
fn gateway_endpoint_basic_import_policy_tables_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("vpce", &gateway_config(DYNAMODB, &["a"], POLICY_PRETTY, "one"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_vpc_endpoint.test");
    let id = id_of(&state);
    let table_a = id_of(&wd.state_of("tandem_route_table.a"));
    assert!(id.starts_with("vpce-"), "{state}");
    assert_eq!((state["state"].as_str(), state["vpc_endpoint_type"].as_str()), (Some("available"), Some("Gateway")));
    assert_eq!(state["route_table_ids"], serde_json::json!([table_a]));
    assert!(state["prefix_list_id"].as_str().is_some_and(|p| p.starts_with("pl-")), "{state}");
    assert_eq!(state["private_dns_enabled"], false);
    assert!(state["subnet_ids"].is_null(), "{state}");

    let imp = env.workdir("vpce-import", &gateway_config(DYNAMODB, &["a"], POLICY_PRETTY, "one"));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_vpc_endpoint.test", &id]);
    let imported = imp.state_of("tandem_vpc_endpoint.test");
    for key in [
        "id",
        "arn",
        "vpc_id",
        "service_name",
        "vpc_endpoint_type",
        "route_table_ids",
        "prefix_list_id",
        "state",
        "tags_all",
    ] {
        assert_eq!(imported[key], state[key], "{key}");
    }

    // The same policy in another spelling is no change.
    wd.write(&gateway_config(DYNAMODB, &["a"], POLICY_RESPELLED, "one"));
    wd.assert_plans_empty();

    // Another policy, another route table and tags: one in-place update.
    wd.write(&gateway_config(DYNAMODB, &["a", "b"], POLICY_OTHER, "two"));
    assert!(wd.planned_actions().contains(&("tandem_vpc_endpoint.test".to_string(), vec!["update".to_string()])));
    wd.apply();
    wd.assert_plans_empty();
    let table_b = id_of(&wd.state_of("tandem_route_table.b"));
    let aws = endpoint(&env, &id).expect("endpoint");
    let mut tables = aws.route_table_ids().to_vec();
    tables.sort();
    let mut expected = vec![table_a.clone(), table_b.clone()];
    expected.sort();
    assert_eq!(tables, expected);
    assert!(aws.policy_document().is_some_and(|p| p.contains("dynamodb:*")), "{aws:?}");
    // moto's ModifyVpcEndpoint updates the list but not the tables' prefix-list routes (AWS adds them), and
    // its delete then fails on the missing route: add the route AWS would have added.
    let prefix_list = state["prefix_list_id"].as_str().expect("prefix list").to_string();
    env.block_on(async {
        env.ec2
            .create_route()
            .route_table_id(&table_b)
            .destination_prefix_list_id(&prefix_list)
            .gateway_id(&id)
            .send()
            .await
            .expect("CreateRoute for moto")
    });

    // Another service replaces the endpoint.
    wd.write(&gateway_config("com.amazonaws.us-east-1.s3", &["a", "b"], POLICY_OTHER, "two"));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_vpc_endpoint.test".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    let replaced = id_of(&wd.state_of("tandem_vpc_endpoint.test"));
    assert_ne!(replaced, id);
    assert_eq!(live_endpoints(&env), vec![replaced.clone()]);

    // Deleted out of band: `deleted` counts as gone; planned again and restored.
    env.block_on(async { env.ec2.delete_vpc_endpoints().vpc_endpoint_ids(&replaced).send().await.expect("Delete") });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2));
    assert!(plan.stdout.contains("tandem_vpc_endpoint.test will be created"), "{}", plan.stdout);
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(live_endpoints(&env).is_empty(), "destroy leaves no endpoint: {:?}", live_endpoints(&env));
    assert!(env.non_default_vpcs().is_empty());
}

#[test]
fn interface_endpoint_subnets_and_security_groups_change_in_place() {
    let env = Env::start();
    let (vpc, subnet, sg1, sg2) = env.block_on(async {
        let vpc = env.ec2.create_vpc().cidr_block("10.131.0.0/16").send().await.expect("CreateVpc");
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc").to_string();
        let subnet =
            env.ec2.create_subnet().vpc_id(&vpc).cidr_block("10.131.1.0/24").send().await.expect("CreateSubnet");
        let subnet = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet").to_string();
        let mut groups = Vec::new();
        for name in ["one", "two"] {
            let out = env
                .ec2
                .create_security_group()
                .group_name(name)
                .description("endpoint")
                .vpc_id(&vpc)
                .send()
                .await
                .expect("CreateSecurityGroup");
            groups.push(out.group_id().expect("group id").to_string());
        }
        (vpc, subnet, groups[0].clone(), groups[1].clone())
    });
    let cfg = |sg: &str| {
        format!(
            r#"{}
resource "tandem_vpc_endpoint" "ec2" {{
  vpc_id             = "{vpc}"
  service_name       = "com.amazonaws.us-east-1.ec2"
  vpc_endpoint_type  = "Interface"
  subnet_ids         = ["{subnet}"]
  security_group_ids = ["{sg}"]
}}
"#,
            provider_block()
        )
    };
    let wd = env.workdir("vpce-if", &cfg(&sg1));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_vpc_endpoint.ec2");
    let id = id_of(&state);
    assert_eq!(state["vpc_endpoint_type"], "Interface");
    assert_eq!(state["subnet_ids"], serde_json::json!([subnet]));
    assert_eq!(state["security_group_ids"], serde_json::json!([sg1]));
    assert!(state["prefix_list_id"].is_null() && state["route_table_ids"].is_null(), "{state}");
    assert_eq!(state["network_interface_ids"].as_array().map(Vec::len), Some(1), "{state}");

    wd.write(&cfg(&sg2));
    assert_eq!(wd.planned_actions(), vec![("tandem_vpc_endpoint.ec2".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(id_of(&wd.state_of("tandem_vpc_endpoint.ec2")), id);
    let groups: Vec<String> = endpoint(&env, &id)
        .map(|e| e.groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect())
        .unwrap_or_default();
    assert_eq!(groups, vec![sg2.clone()]);

    wd.destroy();
    assert!(live_endpoints(&env).is_empty());
}

#[test]
fn bad_vpc_endpoint_input_is_a_diagnostic_on_the_attribute_and_creates_nothing() {
    let env = Env::start();
    let vpc = env.block_on(async {
        let out = env.ec2.create_vpc().cidr_block("10.132.0.0/16").send().await.expect("CreateVpc");
        out.vpc().and_then(|v| v.vpc_id()).expect("vpc").to_string()
    });
    let cfg = |body: &str| format!("{}\nresource \"tandem_vpc_endpoint\" \"bad\" {{\n{body}}}\n", provider_block());
    let wd = env.workdir(
        "bad-vpce",
        &cfg(&format!(
            "  vpc_id            = \"{vpc}\"\n  service_name      = \"{DYNAMODB}\"\n  subnet_ids        = [\"subnet-0123456789abcdef0\"]\n  policy            = \"{{not json\"\n  vpc_endpoint_type = \"Gateway\"\n"
        )),
    );
    wd.init();
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(points_at(&out, "TDM-EC2-111", "subnet_ids"), "{out}");
    assert!(points_at(&out, "TDM-PRV-006", "policy") && out.contains("not valid JSON"), "{out}");

    wd.write(&cfg(&format!(
        "  vpc_id            = \"{vpc}\"\n  service_name      = \"{DYNAMODB}\"\n  vpc_endpoint_type = \"Interface\"\n  route_table_ids   = [\"rtb-0123456789abcdef0\"]\n"
    )));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(points_at(&out, "TDM-EC2-111", "route_table_ids"), "{out}");

    wd.write(&cfg(&format!(
        "  vpc_id            = \"{vpc}\"\n  service_name      = \"{DYNAMODB}\"\n  vpc_endpoint_type = \"Gatway\"\n"
    )));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(points_at(&out, "TDM-PRV-006", "vpc_endpoint_type"), "{out}");

    // A service in another region, a VPC that does not exist: the plan says so on each attribute.
    wd.write(&cfg(
        "  vpc_id       = \"vpc-0123456789abcdef0\"\n  service_name = \"com.amazonaws.eu-west-1.dynamodb\"\n",
    ));
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(points_at(&out, "TDM-EC2-110", "service_name") && out.contains("us-east-1"), "{out}");
    assert!(points_at(&out, "TDM-EC2-012", "vpc_id"), "{out}");
    assert_eq!(wd.run(&["apply", "-auto-approve", "-no-color"]).code, Some(1));
    assert!(live_endpoints(&env).is_empty(), "nothing was created");
}
