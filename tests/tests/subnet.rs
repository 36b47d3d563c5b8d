//! Acceptance: tandem_subnet (and its plan-time placement checks) against moto.

use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

fn config(subnet_cidr: &str, az: &str, public: bool) -> String {
    format!(
        r#"{}
resource "tandem_vpc" "test" {{
  cidr_block = "10.50.0.0/16"
}}

resource "tandem_subnet" "test" {{
  vpc_id                  = tandem_vpc.test.id
  cidr_block              = "{subnet_cidr}"
  availability_zone       = "{az}"
  map_public_ip_on_launch = {public}
  tags = {{ Name = "sub" }}
}}
"#,
        provider_block()
    )
}

fn subnet_ids(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.ec2.describe_subnets().send().await.expect("DescribeSubnets");
        out.subnets()
            .iter()
            .filter(|s| s.default_for_az() != Some(true))
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .collect()
    })
}

#[test]
fn subnet_basic_update_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("subnet", &config("10.50.1.0/24", "us-east-1a", false));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_subnet.test");
    let id = state["id"].as_str().expect("id").to_string();
    assert_eq!(state["availability_zone"], "us-east-1a");
    assert!(state["availability_zone_id"].as_str().is_some_and(|z| !z.is_empty()));
    assert_eq!(state["map_public_ip_on_launch"], false);

    let imp = env.workdir("subnet-import", &config("10.50.1.0/24", "us-east-1a", false));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_subnet.test", &id]);
    assert_eq!(imp.state_of("tandem_subnet.test"), state);

    wd.write(&config("10.50.1.0/24", "us-east-1a", true));
    assert!(wd.planned_actions().contains(&("tandem_subnet.test".to_string(), vec!["update".to_string()])));
    wd.apply();
    wd.assert_plans_empty();
    let public = env.block_on(async {
        let out = env.ec2.describe_subnets().subnet_ids(&id).send().await.expect("DescribeSubnets");
        out.subnets().first().and_then(|s| s.map_public_ip_on_launch())
    });
    assert_eq!(public, Some(true));

    wd.write(&config("10.50.1.0/24", "us-east-1b", true));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_subnet.test".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    let moved = wd.state_of("tandem_subnet.test");
    assert_ne!(moved["id"], id.as_str());
    assert_eq!(moved["availability_zone"], "us-east-1b");

    let moved_id = moved["id"].as_str().expect("id").to_string();
    env.block_on(async { env.ec2.delete_subnet().subnet_id(&moved_id).send().await.expect("DeleteSubnet") });
    assert_eq!(wd.plan_code(&[]).code, Some(2), "a vanished subnet is planned again");
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(subnet_ids(&env).is_empty(), "destroy leaves no subnet: {:?}", subnet_ids(&env));
    assert!(env.non_default_vpcs().is_empty());
}

#[test]
fn bad_placement_is_a_diagnostic_on_the_attribute_and_creates_nothing() {
    let env = Env::start();
    // The VPC exists first so that the subnet checks run at plan time.
    let vpc_id = env.block_on(async {
        let out = env.ec2.create_vpc().cidr_block("10.60.0.0/16").send().await.expect("CreateVpc");
        out.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string()
    });
    let cfg = |cidr: &str, az: &str| {
        format!(
            "{}\nresource \"tandem_subnet\" \"bad\" {{\n  vpc_id            = \"{vpc_id}\"\n  cidr_block        = \"{cidr}\"\n  availability_zone = \"{az}\"\n}}\n",
            provider_block()
        )
    };
    let wd = env.workdir("bad-subnet", &cfg("10.99.0.0/24", "us-east-1a"));
    wd.init();
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(out.contains("TDM-EC2-010") && out.contains("outside VPC"), "{out}");
    assert!(out.contains("cidr_block"), "the diagnostic points at cidr_block:\n{out}");

    wd.write(&cfg("10.60.0.0/24", "us-east-1z"));
    let out = wd.plan_code(&[]).output();
    assert!(out.contains("TDM-EC2-011") && out.contains("us-east-1a"), "lists the real zones:\n{out}");
    assert!(out.contains("availability_zone"), "{out}");

    wd.write(&cfg("10.60.0.0/33", "us-east-1a"));
    let r = wd.run(&["validate", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(r.output().contains("TDM-PRV-006") && r.output().contains("not an IPv4 CIDR"), "{}", r.output());

    // Nothing was created by any of these.
    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(apply.code, Some(1));
    assert!(subnet_ids(&env).is_empty());
}
