//! Acceptance: tandem_eip and tandem_eip_association against moto through the real terraform CLI.

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

fn addresses(env: &Env) -> Vec<aws_sdk_ec2::types::Address> {
    env.block_on(async { env.ec2.describe_addresses().send().await.expect("DescribeAddresses").addresses().to_vec() })
}

fn address(env: &Env, allocation: &str) -> Option<aws_sdk_ec2::types::Address> {
    addresses(env).into_iter().find(|a| a.allocation_id() == Some(allocation))
}

/// A VPC, a subnet and two network interfaces made with the SDK, for associations to point at.
fn network(env: &Env) -> (String, String) {
    env.block_on(async {
        let vpc = env.ec2.create_vpc().cidr_block("10.80.0.0/16").send().await.expect("CreateVpc");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let subnet =
            env.ec2.create_subnet().vpc_id(&vpc_id).cidr_block("10.80.1.0/24").send().await.expect("CreateSubnet");
        let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string();
        let mut enis = Vec::new();
        for _ in 0..2 {
            let out =
                env.ec2.create_network_interface().subnet_id(&subnet_id).send().await.expect("CreateNetworkInterface");
            enis.push(out.network_interface().and_then(|n| n.network_interface_id()).expect("eni id").to_string());
        }
        (enis[0].clone(), enis[1].clone())
    })
}

fn eip_config(name: &str) -> String {
    format!(
        r#"{}
resource "tandem_eip" "test" {{
  tags = {{ Name = "{name}" }}
}}
"#,
        provider_block()
    )
}

#[test]
fn eip_basic_import_update_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("eip", &eip_config("one"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_eip.test");
    let id = id_of(&state);
    assert!(id.starts_with("eipalloc-"), "{state}");
    assert_eq!(state["allocation_id"], id.as_str());
    assert_eq!(state["domain"], "vpc");
    assert!(state["arn"].as_str().is_some_and(|a| a.ends_with(&format!(":elastic-ip/{id}"))), "{state}");
    assert!(state["association_id"].is_null() && state["network_interface"].is_null());
    let public_ip = state["public_ip"].as_str().expect("public ip").to_string();
    assert_eq!(address(&env, &id).and_then(|a| a.public_ip().map(str::to_string)), Some(public_ip));

    let imp = env.workdir("eip-import", &eip_config("one"));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_eip.test", &id]);
    assert_eq!(imp.state_of("tandem_eip.test"), state);
    imp.assert_plans_empty();

    // Tags change in place.
    wd.write(&eip_config("two"));
    assert_eq!(wd.planned_actions(), vec![("tandem_eip.test".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(wd.state_of("tandem_eip.test")["id"], id.as_str());
    let tags = address(&env, &id).map(|a| a.tags().to_vec()).unwrap_or_default();
    assert!(tags.iter().any(|t| t.key() == Some("Name") && t.value() == Some("two")), "{tags:?}");

    // Released out of band: planned again and restored with a new address.
    env.block_on(async { env.ec2.release_address().allocation_id(&id).send().await.expect("ReleaseAddress") });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "a released address is planned again:\n{}", plan.output());
    wd.apply();
    wd.assert_plans_empty();
    let new_id = id_of(&wd.state_of("tandem_eip.test"));
    assert!(new_id != id && address(&env, &new_id).is_some());

    wd.destroy();
    assert!(addresses(&env).is_empty(), "destroy releases the address: {:?}", addresses(&env));
}

fn association_config(eni: &str, reassociate: bool) -> String {
    format!(
        r#"{}
resource "tandem_eip" "test" {{}}

resource "tandem_eip_association" "test" {{
  allocation_id        = tandem_eip.test.id
  network_interface_id = "{eni}"
  allow_reassociation  = {reassociate}
}}
"#,
        provider_block()
    )
}

#[test]
fn eip_association_basic_import_update_replace_moved_destroy() {
    let env = Env::start();
    let (eni1, eni2) = network(&env);
    let wd = env.workdir("assoc", &association_config(&eni1, true));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_eip_association.test");
    let id = id_of(&state);
    let allocation = id_of(&wd.state_of("tandem_eip.test"));
    assert!(id.starts_with("eipassoc-"), "{state}");
    assert_eq!(state["network_interface_id"], eni1.as_str());
    assert!(state["private_ip_address"].as_str().is_some_and(|ip| ip.starts_with("10.80.1.")), "{state}");
    assert_eq!(state["public_ip"], wd.state_of("tandem_eip.test")["public_ip"]);
    assert_eq!(state["allow_reassociation"], true);
    let held = address(&env, &allocation).expect("address");
    assert_eq!((held.network_interface_id(), held.association_id()), (Some(eni1.as_str()), Some(id.as_str())));
    // The address reads its holder on refresh.
    wd.ok(&["apply", "-refresh-only", "-auto-approve", "-no-color"]);
    assert_eq!(wd.state_of("tandem_eip.test")["network_interface"], eni1.as_str());

    // Import by association ID.
    let imp_cfg = format!(
        "{}\nresource \"tandem_eip_association\" \"test\" {{\n  allocation_id        = \"{allocation}\"\n  network_interface_id = \"{eni1}\"\n}}\n",
        provider_block()
    );
    let imp = env.workdir("assoc-import", &imp_cfg);
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_eip_association.test", &id]);
    assert_eq!(imp.state_of("tandem_eip_association.test"), state);
    imp.assert_plans_empty();

    // allow_reassociation changes in place (it only matters when associating).
    wd.write(&association_config(&eni1, false));
    let changes: Vec<_> = wd.planned_actions().into_iter().filter(|(_, a)| a != &["no-op"]).collect();
    assert_eq!(changes, vec![("tandem_eip_association.test".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(id_of(&wd.state_of("tandem_eip_association.test")), id);

    // Another interface replaces the association.
    wd.write(&association_config(&eni2, true));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_eip_association.test".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    let moved = id_of(&wd.state_of("tandem_eip_association.test"));
    assert_ne!(moved, id);
    assert_eq!(
        address(&env, &allocation).and_then(|a| a.network_interface_id().map(str::to_string)),
        Some(eni2.clone())
    );

    // Disassociated out of band: planned again, restored.
    env.block_on(async { env.ec2.disassociate_address().association_id(&moved).send().await.expect("Disassociate") });
    assert_eq!(wd.plan_code(&[]).code, Some(2), "a vanished association is planned again");
    wd.apply();
    wd.assert_plans_empty();

    // The runtime moves the address (EIP control failover): the resource follows the address's current
    // association, and with ignore_changes on the interface the plan stays empty — Terraform never moves it
    // back. Without ignore_changes the interface difference forces a replacement (visible drift).
    env.block_on(async {
        env.ec2
            .associate_address()
            .allocation_id(&allocation)
            .network_interface_id(&eni1)
            .allow_reassociation(true)
            .send()
            .await
            .expect("AssociateAddress as the runtime")
    });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "{}", plan.output());
    assert!(plan.stdout.contains("must be replaced"), "drift on the interface is visible:\n{}", plan.stdout);
    let ignoring = association_config(&eni2, true).replace(
        "  allow_reassociation  = true\n",
        "  allow_reassociation  = true\n  lifecycle {\n    ignore_changes = [network_interface_id, private_ip_address]\n  }\n",
    );
    assert_ne!(ignoring, association_config(&eni2, true), "the lifecycle block was inserted");
    wd.write(&ignoring);
    wd.assert_plans_empty();
    wd.ok(&["apply", "-refresh-only", "-auto-approve", "-no-color"]);
    let after = wd.state_of("tandem_eip_association.test");
    assert_eq!(after["network_interface_id"], eni1.as_str(), "state follows the runtime's association");
    assert_eq!(
        address(&env, &allocation).and_then(|a| a.network_interface_id().map(str::to_string)),
        Some(eni1.clone())
    );

    // Destroy releases the address although the runtime's association still holds it.
    wd.destroy();
    assert!(addresses(&env).is_empty(), "destroy leaves no address: {:?}", addresses(&env));
}

#[test]
fn bad_eip_input_is_a_diagnostic_on_the_attribute_and_creates_nothing() {
    let env = Env::start();
    let cfg = format!(
        r#"{}
resource "tandem_eip" "bad" {{
  domain = "standard"
}}

resource "tandem_eip_association" "bad" {{
  allocation_id        = "eipalloc-0123456789abcdef0"
  network_interface_id = "eni-0123456789abcdef0"
  private_ip_address   = "10.0.0.300"
}}
"#,
        provider_block()
    );
    let wd = env.workdir("bad-eip", &cfg);
    wd.init();
    let r = wd.run(&["validate", "-no-color"]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(points_at(&out, "TDM-PRV-006", "domain") && out.contains("EC2-Classic"), "{out}");
    assert!(points_at(&out, "TDM-PRV-006", "private_ip_address"), "{out}");

    // Valid shapes, but nothing with these IDs exists: the plan says so on each attribute.
    wd.write(&cfg.replace("  domain = \"standard\"\n", "").replace("10.0.0.300", "10.0.0.30"));
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(points_at(&out, "TDM-EC2-107", "allocation_id"), "{out}");
    assert!(points_at(&out, "TDM-EC2-108", "network_interface_id"), "{out}");
    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(apply.code, Some(1));
    assert!(addresses(&env).is_empty(), "nothing was allocated");
}
