//! Acceptance: tandem_nat_gateway (public and private) against moto through the real terraform CLI.

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

/// NAT gateways AWS still lists as anything but `deleted`, with their state.
fn live_gateways(env: &Env) -> Vec<(String, String)> {
    env.block_on(async {
        let out = env.ec2.describe_nat_gateways().send().await.expect("DescribeNatGateways");
        out.nat_gateways()
            .iter()
            .filter(|g| g.state().map(|s| s.as_str()) != Some("deleted"))
            .map(|g| {
                (
                    g.nat_gateway_id().unwrap_or_default().to_string(),
                    g.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                )
            })
            .collect()
    })
}

/// `eip` names the address of the public gateway. moto keeps an address associated with a deleted NAT gateway
/// (AWS releases the association), so a replacement gateway in the same apply takes the second address.
fn config(public_subnet: &str, eip: &str, name: &str) -> String {
    format!(
        r#"{}
resource "tandem_vpc" "test" {{
  cidr_block = "10.90.0.0/16"
}}

resource "tandem_subnet" "a" {{
  vpc_id            = tandem_vpc.test.id
  cidr_block        = "10.90.1.0/24"
  availability_zone = "us-east-1a"
}}

resource "tandem_subnet" "b" {{
  vpc_id            = tandem_vpc.test.id
  cidr_block        = "10.90.2.0/24"
  availability_zone = "us-east-1b"
}}

resource "tandem_internet_gateway" "test" {{
  vpc_id = tandem_vpc.test.id
}}

resource "tandem_eip" "nat" {{}}

resource "tandem_eip" "nat2" {{}}

resource "tandem_nat_gateway" "public" {{
  subnet_id     = tandem_subnet.{public_subnet}.id
  allocation_id = tandem_eip.{eip}.id
  tags          = {{ Name = "{name}" }}

  timeouts {{
    create = "5m"
  }}

  depends_on = [tandem_internet_gateway.test]
}}

resource "tandem_nat_gateway" "private" {{
  subnet_id         = tandem_subnet.b.id
  connectivity_type = "private"
}}
"#,
        provider_block()
    )
}

#[test]
fn nat_gateway_basic_import_update_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("nat", &config("a", "nat", "one"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_nat_gateway.public");
    let id = id_of(&state);
    assert!(id.starts_with("nat-"), "{state}");
    assert_eq!(state["connectivity_type"], "public");
    assert_eq!(state["public_ip"], wd.state_of("tandem_eip.nat")["public_ip"]);
    assert_eq!(state["allocation_id"], wd.state_of("tandem_eip.nat")["id"]);
    assert!(state["network_interface_id"].as_str().is_some_and(|e| e.starts_with("eni-")), "{state}");
    assert!(state["private_ip"].as_str().is_some(), "{state}");
    assert_eq!(state["timeouts"]["create"], "5m");
    let private = wd.state_of("tandem_nat_gateway.private");
    assert_eq!(private["connectivity_type"], "private");
    assert!(private["allocation_id"].is_null() && private["public_ip"].is_null(), "{private}");
    assert_eq!(live_gateways(&env).len(), 2);

    // Import: the same state (the timeouts block is configuration only).
    let imp = env.workdir("nat-import", &config("a", "nat", "one"));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_nat_gateway.public", &id]);
    let imported = imp.state_of("tandem_nat_gateway.public");
    for key in [
        "id",
        "subnet_id",
        "allocation_id",
        "connectivity_type",
        "network_interface_id",
        "private_ip",
        "public_ip",
        "tags",
        "tags_all",
    ] {
        assert_eq!(imported[key], state[key], "{key}");
    }

    // Tags change in place.
    wd.write(&config("a", "nat", "two"));
    assert!(wd.planned_actions().contains(&("tandem_nat_gateway.public".to_string(), vec!["update".to_string()])));
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(id_of(&wd.state_of("tandem_nat_gateway.public")), id);

    // Another subnet (and address) replaces the gateway; the old one ends `deleted`.
    wd.write(&config("b", "nat2", "two"));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_nat_gateway.public".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    let replaced = id_of(&wd.state_of("tandem_nat_gateway.public"));
    assert_ne!(replaced, id);
    assert!(!live_gateways(&env).iter().any(|(g, _)| *g == id), "the old gateway is deleted");

    // Deleted out of band: a `deleted` gateway counts as gone, and is created again.
    let allocation = id_of(&wd.state_of("tandem_eip.nat2"));
    env.block_on(async {
        env.ec2.delete_nat_gateway().nat_gateway_id(&replaced).send().await.expect("DeleteNatGateway");
        // What AWS does by itself when the gateway is deleted, and moto does not: free the address.
        let out = env.ec2.describe_addresses().allocation_ids(&allocation).send().await.expect("DescribeAddresses");
        if let Some(association) = out.addresses().first().and_then(|a| a.association_id()).filter(|a| !a.is_empty()) {
            env.ec2.disassociate_address().association_id(association).send().await.expect("DisassociateAddress");
        }
    });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "{}", plan.output());
    assert!(plan.stdout.contains("tandem_nat_gateway.public will be created"), "{}", plan.stdout);
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(live_gateways(&env).is_empty(), "destroy leaves no gateway: {:?}", live_gateways(&env));
    assert!(env.non_default_vpcs().is_empty());
}

#[test]
fn bad_nat_gateway_input_is_a_diagnostic_on_the_attribute_and_creates_nothing() {
    let env = Env::start();
    let subnet = env.block_on(async {
        let vpc = env.ec2.create_vpc().cidr_block("10.91.0.0/16").send().await.expect("CreateVpc");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let out =
            env.ec2.create_subnet().vpc_id(&vpc_id).cidr_block("10.91.1.0/24").send().await.expect("CreateSubnet");
        out.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string()
    });
    let cfg = |body: &str| format!("{}\nresource \"tandem_nat_gateway\" \"bad\" {{\n{body}}}\n", provider_block());
    let wd = env.workdir("bad-nat", &cfg(&format!("  subnet_id = \"{subnet}\"\n")));
    wd.init();
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(out.contains("TDM-EC2-104") && out.contains("needs allocation_id"), "{out}");

    wd.write(&cfg(&format!(
        "  subnet_id         = \"{subnet}\"\n  connectivity_type = \"private\"\n  allocation_id     = \"eipalloc-0123456789abcdef0\"\n"
    )));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(points_at(&out, "TDM-EC2-105", "allocation_id"), "{out}");

    wd.write(&cfg(&format!("  subnet_id         = \"{subnet}\"\n  connectivity_type = \"carrier\"\n")));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(points_at(&out, "TDM-PRV-006", "connectivity_type"), "{out}");

    wd.write(&cfg(
        "  subnet_id     = \"subnet-0123456789abcdef0\"\n  allocation_id = \"eipalloc-0123456789abcdef0\"\n",
    ));
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(points_at(&out, "TDM-EC2-109", "subnet_id"), "{out}");
    assert!(points_at(&out, "TDM-EC2-107", "allocation_id"), "{out}");
    assert_eq!(wd.run(&["apply", "-auto-approve", "-no-color"]).code, Some(1));
    assert!(live_gateways(&env).is_empty(), "nothing was created");
}
