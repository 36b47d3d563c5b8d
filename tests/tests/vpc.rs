//! Acceptance: tandem_vpc against moto through the real terraform CLI.

use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

fn config(cidr: &str, hostnames: bool, name: &str) -> String {
    format!(
        r#"{}
resource "tandem_vpc" "test" {{
  cidr_block           = "{cidr}"
  enable_dns_hostnames = {hostnames}
  tags = {{ Name = "{name}" }}
}}
"#,
        provider_block()
    )
}

fn vpc_exists(env: &Env, id: &str) -> bool {
    env.non_default_vpcs().iter().any(|v| v == id)
}

#[test]
fn vpc_basic_import_update_replace_destroy() {
    let env = Env::start();
    let wd = env.workdir("vpc", &config("10.10.0.0/16", false, "one"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_vpc.test");
    let id = state["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("vpc-"));
    assert_eq!(state["cidr_block"], "10.10.0.0/16");
    assert_eq!(state["enable_dns_support"], true);
    assert!(state["main_route_table_id"].as_str().is_some_and(|s| s.starts_with("rtb-")));
    assert!(state["arn"].as_str().is_some_and(|a| a.ends_with(&format!(":vpc/{id}"))), "{state}");
    assert_eq!(state["tags_all"]["Name"], "one");

    // Import into a fresh directory: the imported state equals the applied one.
    let imp = env.workdir("vpc-import", &config("10.10.0.0/16", false, "one"));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_vpc.test", &id]);
    assert_eq!(imp.state_of("tandem_vpc.test"), state);
    imp.assert_plans_empty();

    // In place: DNS host names and tags change without replacing the VPC.
    wd.write(&config("10.10.0.0/16", true, "two"));
    assert_eq!(wd.planned_actions(), vec![("tandem_vpc.test".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    let updated = wd.state_of("tandem_vpc.test");
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["enable_dns_hostnames"], true);
    assert_eq!(updated["tags"]["Name"], "two");
    let aws_hostnames = env.block_on(async {
        env.ec2
            .describe_vpc_attribute()
            .vpc_id(&id)
            .attribute(aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames)
            .send()
            .await
            .expect("DescribeVpcAttribute")
            .enable_dns_hostnames()
            .and_then(|v| v.value())
    });
    assert_eq!(aws_hostnames, Some(true));

    // A new CIDR cannot be applied in place: replace.
    wd.write(&config("10.20.0.0/16", true, "two"));
    assert_eq!(
        wd.planned_actions(),
        vec![("tandem_vpc.test".to_string(), vec!["delete".to_string(), "create".to_string()])]
    );
    wd.apply();
    wd.assert_plans_empty();
    let replaced = wd.state_of("tandem_vpc.test")["id"].as_str().expect("id").to_string();
    assert_ne!(replaced, id);
    assert!(!vpc_exists(&env, &id), "the old VPC is gone");

    wd.destroy();
    assert!(env.non_default_vpcs().is_empty(), "destroy leaves no VPC: {:?}", env.non_default_vpcs());
}

#[test]
fn vpc_disappears_is_planned_again_and_restored() {
    let env = Env::start();
    let wd = env.workdir("vpc", &config("10.30.0.0/16", false, "gone"));
    wd.init();
    wd.apply();
    let id = wd.state_of("tandem_vpc.test")["id"].as_str().expect("id").to_string();
    env.block_on(async { env.ec2.delete_vpc().vpc_id(&id).send().await.expect("DeleteVpc out of band") });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "plan after out-of-band delete must not be empty:\n{}", plan.output());
    assert!(plan.stdout.contains("will be created"), "{}", plan.stdout);
    wd.apply();
    wd.assert_plans_empty();
    let new_id = wd.state_of("tandem_vpc.test")["id"].as_str().expect("id").to_string();
    assert!(vpc_exists(&env, &new_id) && new_id != id);
    wd.destroy();
    assert!(env.non_default_vpcs().is_empty());
}

#[test]
fn import_block_by_id_adopts_an_existing_vpc() {
    let env = Env::start();
    let id = env.block_on(async {
        let out = env.ec2.create_vpc().cidr_block("10.40.0.0/16").send().await.expect("CreateVpc");
        out.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string()
    });
    let cfg = format!(
        "{}\nimport {{\n  to = tandem_vpc.test\n  id = \"{id}\"\n}}\n\nresource \"tandem_vpc\" \"test\" {{\n  cidr_block = \"10.40.0.0/16\"\n}}\n",
        provider_block()
    );
    let wd = env.workdir("vpc-import-block", &cfg);
    wd.init();
    let applied = wd.apply();
    assert!(applied.stdout.contains("1 imported"), "{}", applied.stdout);
    wd.assert_plans_empty();
    assert_eq!(wd.state_of("tandem_vpc.test")["id"], id.as_str());
    wd.destroy();
    assert!(env.non_default_vpcs().is_empty());
}
