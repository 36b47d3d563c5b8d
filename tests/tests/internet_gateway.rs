//! Acceptance: tandem_internet_gateway — attach, move to another VPC in place, detach, disappear, destroy.

use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

fn config(attach_to: Option<&str>) -> String {
    let vpc_line = attach_to.map(|v| format!("  vpc_id = tandem_vpc.{v}.id\n")).unwrap_or_default();
    format!(
        r#"{}
resource "tandem_vpc" "a" {{
  cidr_block = "10.70.0.0/16"
}}

resource "tandem_vpc" "b" {{
  cidr_block = "10.71.0.0/16"
}}

resource "tandem_internet_gateway" "test" {{
{vpc_line}  tags = {{ Name = "igw" }}
}}
"#,
        provider_block()
    )
}

fn attached_vpc(env: &Env, id: &str) -> Option<String> {
    env.block_on(async {
        let out = env
            .ec2
            .describe_internet_gateways()
            .internet_gateway_ids(id)
            .send()
            .await
            .expect("DescribeInternetGateways");
        out.internet_gateways()
            .first()
            .and_then(|g| g.attachments().first())
            .and_then(|a| a.vpc_id())
            .map(str::to_string)
    })
}

#[test]
fn internet_gateway_attach_move_detach_destroy() {
    let env = Env::start();
    let wd = env.workdir("igw", &config(Some("a")));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let gw = wd.state_of("tandem_internet_gateway.test");
    let id = gw["id"].as_str().expect("id").to_string();
    let vpc_a = wd.state_of("tandem_vpc.a")["id"].as_str().expect("vpc a").to_string();
    assert_eq!(gw["vpc_id"], vpc_a.as_str());
    assert_eq!(attached_vpc(&env, &id).as_deref(), Some(vpc_a.as_str()));

    let imp = env.workdir("igw-import", &config(Some("a")));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_internet_gateway.test", &id]);
    assert_eq!(imp.state_of("tandem_internet_gateway.test"), gw);

    // Moving to VPC b is an in-place detach + attach.
    wd.write(&config(Some("b")));
    assert!(wd.planned_actions().contains(&("tandem_internet_gateway.test".to_string(), vec!["update".to_string()])));
    wd.apply();
    wd.assert_plans_empty();
    let vpc_b = wd.state_of("tandem_vpc.b")["id"].as_str().expect("vpc b").to_string();
    assert_eq!(wd.state_of("tandem_internet_gateway.test")["id"], id.as_str());
    assert_eq!(attached_vpc(&env, &id).as_deref(), Some(vpc_b.as_str()));

    wd.write(&config(None));
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(attached_vpc(&env, &id), None);

    env.block_on(async {
        env.ec2.delete_internet_gateway().internet_gateway_id(&id).send().await.expect("DeleteInternetGateway")
    });
    assert_eq!(wd.plan_code(&[]).code, Some(2), "a vanished gateway is planned again");

    wd.write(&config(Some("a")));
    wd.apply();
    wd.destroy();
    let left: Vec<String> = env.block_on(async {
        let out = env.ec2.describe_internet_gateways().send().await.expect("DescribeInternetGateways");
        out.internet_gateways()
            .iter()
            .filter(|g| g.tags().iter().any(|t| t.value() == Some("igw")))
            .filter_map(|g| g.internet_gateway_id().map(str::to_string))
            .collect()
    });
    assert!(left.is_empty(), "destroy leaves no gateway: {left:?}");
    assert!(env.non_default_vpcs().is_empty());
}
