//! Acceptance: tandem_route_table, tandem_route (incl. the VIP topology's /32 routes to an ENI) and
//! tandem_route_table_association against moto through the real terraform CLI.

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

/// The planned actions other than no-op, per resource address.
fn changes(wd: &tandem_tests::Workdir) -> Vec<(String, Vec<String>)> {
    wd.planned_actions().into_iter().filter(|(_, actions)| actions != &["no-op"]).collect()
}

fn update() -> Vec<String> {
    vec!["update".to_string()]
}

fn replace() -> Vec<String> {
    vec!["delete".to_string(), "create".to_string()]
}

/// What the SDK made for a test: a VPC with a subnet, an attached Internet gateway and two ENIs.
struct Net {
    vpc: String,
    subnet: String,
    igw: String,
    eni1: String,
    eni2: String,
}

fn network(env: &Env) -> Net {
    env.block_on(async {
        let vpc = env.ec2.create_vpc().cidr_block("10.100.0.0/16").send().await.expect("CreateVpc");
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let subnet =
            env.ec2.create_subnet().vpc_id(&vpc).cidr_block("10.100.1.0/24").send().await.expect("CreateSubnet");
        let subnet = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string();
        let igw = env.ec2.create_internet_gateway().send().await.expect("CreateInternetGateway");
        let igw = igw.internet_gateway().and_then(|g| g.internet_gateway_id()).expect("igw id").to_string();
        env.ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await.expect("Attach");
        let mut enis = Vec::new();
        for _ in 0..2 {
            let out =
                env.ec2.create_network_interface().subnet_id(&subnet).send().await.expect("CreateNetworkInterface");
            enis.push(out.network_interface().and_then(|n| n.network_interface_id()).expect("eni id").to_string());
        }
        Net { vpc, subnet, igw, eni1: enis[0].clone(), eni2: enis[1].clone() }
    })
}

/// The routes of a table as (destination, target) pairs.
fn routes(env: &Env, table: &str) -> Vec<(String, String)> {
    env.block_on(async {
        let out = env.ec2.describe_route_tables().route_table_ids(table).send().await.expect("DescribeRouteTables");
        out.route_tables()
            .iter()
            .flat_map(|t| t.routes())
            .filter_map(|r| {
                let target = r.network_interface_id().or(r.gateway_id()).or(r.nat_gateway_id())?;
                Some((r.destination_cidr_block()?.to_string(), target.to_string()))
            })
            .collect()
    })
}

/// Route tables that are not a VPC's main table.
fn extra_route_tables(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.ec2.describe_route_tables().send().await.expect("DescribeRouteTables");
        out.route_tables()
            .iter()
            .filter(|t| !t.associations().iter().any(|a| a.main() == Some(true)))
            .filter_map(|t| t.route_table_id().map(str::to_string))
            .collect()
    })
}

fn table_config(vpc: &str, name: &str) -> String {
    format!(
        r#"{}
resource "tandem_vpc" "a" {{
  cidr_block = "10.110.0.0/16"
}}

resource "tandem_vpc" "b" {{
  cidr_block = "10.111.0.0/16"
}}

resource "tandem_route_table" "test" {{
  vpc_id = tandem_vpc.{vpc}.id
  tags   = {{ Name = "{name}" }}
}}
"#,
        provider_block()
    )
}

#[test]
fn route_table_basic_import_update_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("rt", &table_config("a", "one"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_route_table.test");
    let id = id_of(&state);
    assert!(id.starts_with("rtb-"), "{state}");
    assert_eq!(state["vpc_id"], wd.state_of("tandem_vpc.a")["id"]);
    assert!(state["arn"].as_str().is_some_and(|a| a.ends_with(&format!(":route-table/{id}"))), "{state}");
    assert!(state["owner_id"].as_str().is_some_and(|o| !o.is_empty()));

    let imp = env.workdir("rt-import", &table_config("a", "one"));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_route_table.test", &id]);
    assert_eq!(imp.state_of("tandem_route_table.test"), state);

    wd.write(&table_config("a", "two"));
    assert_eq!(changes(&wd), vec![("tandem_route_table.test".to_string(), update())]);
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(id_of(&wd.state_of("tandem_route_table.test")), id);

    wd.write(&table_config("b", "two"));
    assert_eq!(changes(&wd), vec![("tandem_route_table.test".to_string(), replace())]);
    wd.apply();
    wd.assert_plans_empty();
    let moved = id_of(&wd.state_of("tandem_route_table.test"));
    assert_ne!(moved, id);
    assert_eq!(extra_route_tables(&env), vec![moved.clone()], "the old table is gone");

    env.block_on(async { env.ec2.delete_route_table().route_table_id(&moved).send().await.expect("DeleteRouteTable") });
    assert_eq!(wd.plan_code(&[]).code, Some(2), "a vanished table is planned again");
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(extra_route_tables(&env).is_empty(), "destroy leaves no table: {:?}", extra_route_tables(&env));
    assert!(env.non_default_vpcs().is_empty());
}

fn route_config(net: &Net, vip_target: &str, vip: &str, ignore_target: bool) -> String {
    let lifecycle =
        if ignore_target { "\n  lifecycle {\n    ignore_changes = [network_interface_id]\n  }\n" } else { "" };
    format!(
        r#"{}
resource "tandem_route_table" "test" {{
  vpc_id = "{vpc}"
}}

resource "tandem_route" "default" {{
  route_table_id         = tandem_route_table.test.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = "{igw}"
}}

resource "tandem_route" "vip" {{
  route_table_id         = tandem_route_table.test.id
  destination_cidr_block = "{vip}"
  network_interface_id   = "{vip_target}"{lifecycle}
}}
"#,
        provider_block(),
        vpc = net.vpc,
        igw = net.igw,
    )
}

#[test]
fn route_basic_import_retarget_replace_drift_disappears_destroy() {
    let env = Env::start();
    let net = network(&env);
    let vip = "192.168.100.10/32";
    let wd = env.workdir("route", &route_config(&net, &net.eni1, vip, false));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let table = id_of(&wd.state_of("tandem_route_table.test"));
    let state = wd.state_of("tandem_route.vip");
    assert_eq!(state["id"], format!("{table}_{vip}"));
    assert_eq!(state["network_interface_id"], net.eni1.as_str());
    assert!(state["gateway_id"].is_null() && state["nat_gateway_id"].is_null(), "{state}");
    assert_eq!((state["state"].as_str(), state["origin"].as_str()), (Some("active"), Some("CreateRoute")));
    let aws = routes(&env, &table);
    assert!(aws.contains(&(vip.to_string(), net.eni1.clone())), "{aws:?}");
    assert!(aws.contains(&("0.0.0.0/0".to_string(), net.igw.clone())), "{aws:?}");

    // Import by ROUTE_TABLE_ID_DESTINATION.
    let imp_cfg = format!(
        "{}\nresource \"tandem_route\" \"vip\" {{\n  route_table_id         = \"{table}\"\n  destination_cidr_block = \"{vip}\"\n  network_interface_id   = \"{}\"\n}}\n",
        provider_block(),
        net.eni1
    );
    let imp = env.workdir("route-import", &imp_cfg);
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_route.vip", &format!("{table}_{vip}")]);
    assert_eq!(imp.state_of("tandem_route.vip"), state);
    imp.assert_plans_empty();

    // Another target is a ReplaceRoute in place.
    wd.write(&route_config(&net, &net.eni2, vip, false));
    assert_eq!(changes(&wd), vec![("tandem_route.vip".to_string(), update())]);
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(id_of(&wd.state_of("tandem_route.vip")), format!("{table}_{vip}"));
    assert!(routes(&env, &table).contains(&(vip.to_string(), net.eni2.clone())));

    // Another destination replaces the route.
    let vip2 = "192.168.100.11/32";
    wd.write(&route_config(&net, &net.eni2, vip2, false));
    assert_eq!(changes(&wd), vec![("tandem_route.vip".to_string(), replace())]);
    wd.apply();
    wd.assert_plans_empty();
    let aws = routes(&env, &table);
    assert!(aws.contains(&(vip2.to_string(), net.eni2.clone())) && !aws.iter().any(|(d, _)| d == vip), "{aws:?}");

    // The runtime re-points the VIP (failover): drift the plan shows, unless the target is ignored.
    env.block_on(async {
        env.ec2
            .replace_route()
            .route_table_id(&table)
            .destination_cidr_block(vip2)
            .network_interface_id(&net.eni1)
            .send()
            .await
            .expect("ReplaceRoute as the runtime")
    });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "a re-pointed route is drift:\n{}", plan.output());
    assert!(plan.stdout.contains("tandem_route.vip will be updated in-place"), "{}", plan.stdout);
    wd.write(&route_config(&net, &net.eni2, vip2, true));
    wd.assert_plans_empty();
    assert!(routes(&env, &table).contains(&(vip2.to_string(), net.eni1.clone())), "the runtime's target stays");

    // Deleted out of band: planned again, restored.
    env.block_on(async {
        env.ec2
            .delete_route()
            .route_table_id(&table)
            .destination_cidr_block("0.0.0.0/0")
            .send()
            .await
            .expect("DeleteRoute")
    });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2));
    assert!(plan.stdout.contains("tandem_route.default will be created"), "{}", plan.stdout);
    wd.apply();
    wd.assert_plans_empty();
    assert!(routes(&env, &table).contains(&("0.0.0.0/0".to_string(), net.igw.clone())));

    // A destination that already has a route (made by someone else): AWS answers RouteAlreadyExists, moto
    // would overwrite it silently; the provider says so at plan time.
    env.block_on(async {
        env.ec2
            .create_route()
            .route_table_id(&table)
            .destination_cidr_block("192.168.100.77/32")
            .network_interface_id(&net.eni1)
            .send()
            .await
            .expect("CreateRoute out of band")
    });
    let taken = format!(
        "{}\nresource \"tandem_route\" \"taken\" {{\n  route_table_id         = tandem_route_table.test.id\n  destination_cidr_block = \"192.168.100.77/32\"\n  network_interface_id   = \"{}\"\n}}\n",
        route_config(&net, &net.eni2, vip2, true),
        net.eni2
    );
    wd.write(&taken);
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    assert!(points_at(&r.output(), "TDM-EC2-101", "destination_cidr_block"), "{}", r.output());
    assert!(
        r.output().contains(&format!("{table}_192.168.100.77/32")),
        "the hint names the import ID:\n{}",
        r.output()
    );
    assert!(routes(&env, &table).contains(&("192.168.100.77/32".to_string(), net.eni1.clone())), "left alone");
    env.block_on(async {
        env.ec2
            .delete_route()
            .route_table_id(&table)
            .destination_cidr_block("192.168.100.77/32")
            .send()
            .await
            .expect("DeleteRoute")
    });

    wd.write(&route_config(&net, &net.eni2, vip2, true));
    wd.destroy();
    assert!(extra_route_tables(&env).is_empty(), "destroy leaves no table: {:?}", extra_route_tables(&env));
}

#[test]
fn vip_table_with_several_routes_to_one_eni_plans_empty() {
    let env = Env::start();
    let net = network(&env);
    let vips = ["192.168.200.1/32", "192.168.200.2/32", "192.168.200.3/32", "172.31.255.10/32"];
    let cfg = format!(
        r#"{}
variable "vips" {{
  default = [{}]
}}

resource "tandem_route_table" "private" {{
  vpc_id = "{vpc}"
}}

resource "tandem_route" "vip" {{
  for_each               = toset(var.vips)
  route_table_id         = tandem_route_table.private.id
  destination_cidr_block = each.value
  network_interface_id   = "{eni}"

  lifecycle {{
    ignore_changes = [network_interface_id]
  }}
}}
"#,
        provider_block(),
        vips.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", "),
        vpc = net.vpc,
        eni = net.eni1,
    );
    let wd = env.workdir("vips", &cfg);
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let table = id_of(&wd.state_of("tandem_route_table.private"));
    let aws = routes(&env, &table);
    for vip in vips {
        assert!(aws.contains(&(vip.to_string(), net.eni1.clone())), "{vip}: {aws:?}");
        assert_eq!(wd.state_of(&format!("tandem_route.vip[\"{vip}\"]"))["id"], format!("{table}_{vip}"));
    }
    // A failover re-points every VIP route to the other node: still nothing to plan.
    env.block_on(async {
        for vip in vips {
            env.ec2
                .replace_route()
                .route_table_id(&table)
                .destination_cidr_block(vip)
                .network_interface_id(&net.eni2)
                .send()
                .await
                .expect("ReplaceRoute");
        }
    });
    wd.assert_plans_empty();
    wd.destroy();
    assert!(extra_route_tables(&env).is_empty());
}

fn association_config(subnet: &str, table: &str) -> String {
    format!(
        r#"{}
resource "tandem_vpc" "test" {{
  cidr_block = "10.120.0.0/16"
}}

resource "tandem_subnet" "a" {{
  vpc_id     = tandem_vpc.test.id
  cidr_block = "10.120.1.0/24"
}}

resource "tandem_subnet" "b" {{
  vpc_id     = tandem_vpc.test.id
  cidr_block = "10.120.2.0/24"
}}

resource "tandem_route_table" "one" {{
  vpc_id = tandem_vpc.test.id
}}

resource "tandem_route_table" "two" {{
  vpc_id = tandem_vpc.test.id
}}

resource "tandem_route_table_association" "test" {{
  subnet_id      = tandem_subnet.{subnet}.id
  route_table_id = tandem_route_table.{table}.id
}}
"#,
        provider_block()
    )
}

/// The explicit (non-main) associations of all route tables: (association, subnet, table).
fn associations(env: &Env) -> Vec<(String, String, String)> {
    env.block_on(async {
        let out = env.ec2.describe_route_tables().send().await.expect("DescribeRouteTables");
        out.route_tables()
            .iter()
            .flat_map(|t| t.associations())
            .filter(|a| a.main() != Some(true))
            .filter_map(|a| {
                Some((
                    a.route_table_association_id()?.to_string(),
                    a.subnet_id()?.to_string(),
                    a.route_table_id()?.to_string(),
                ))
            })
            .collect()
    })
}

#[test]
fn route_table_association_basic_import_move_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("rta", &association_config("a", "one"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_route_table_association.test");
    let id = id_of(&state);
    let (subnet_a, table_one) = (id_of(&wd.state_of("tandem_subnet.a")), id_of(&wd.state_of("tandem_route_table.one")));
    assert!(id.starts_with("rtbassoc-"), "{state}");
    assert_eq!(associations(&env), vec![(id.clone(), subnet_a.clone(), table_one.clone())]);

    // Import by SUBNET_ID/ROUTE_TABLE_ID.
    let imp = env.workdir("rta-import", &association_config("a", "one"));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_route_table_association.test", &format!("{subnet_a}/{table_one}")]);
    assert_eq!(imp.state_of("tandem_route_table_association.test"), state);

    // Another table: in place, with a new association ID.
    wd.write(&association_config("a", "two"));
    assert_eq!(changes(&wd), vec![("tandem_route_table_association.test".to_string(), update())]);
    wd.apply();
    wd.assert_plans_empty();
    let moved = id_of(&wd.state_of("tandem_route_table_association.test"));
    let table_two = id_of(&wd.state_of("tandem_route_table.two"));
    assert_eq!(associations(&env), vec![(moved.clone(), subnet_a.clone(), table_two.clone())]);

    // Another subnet replaces the association.
    wd.write(&association_config("b", "two"));
    assert_eq!(changes(&wd), vec![("tandem_route_table_association.test".to_string(), replace())]);
    wd.apply();
    wd.assert_plans_empty();
    let subnet_b = id_of(&wd.state_of("tandem_subnet.b"));
    let current = associations(&env);
    assert_eq!(current.len(), 1);
    assert_eq!((current[0].1.as_str(), current[0].2.as_str()), (subnet_b.as_str(), table_two.as_str()));

    env.block_on(async {
        env.ec2.disassociate_route_table().association_id(&current[0].0).send().await.expect("Disassociate")
    });
    assert_eq!(wd.plan_code(&[]).code, Some(2), "a vanished association is planned again");
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(associations(&env).is_empty(), "destroy leaves no association: {:?}", associations(&env));
    assert!(env.non_default_vpcs().is_empty());
}

#[test]
fn bad_route_input_is_a_diagnostic_on_the_attribute_and_creates_nothing() {
    let env = Env::start();
    let net = network(&env);
    let route = |body: &str| {
        format!(
            "{}\nresource \"tandem_route\" \"bad\" {{\n  route_table_id         = \"rtb-0123456789abcdef0\"\n{body}}}\n",
            provider_block()
        )
    };
    let wd = env.workdir("bad-route", &route("  destination_cidr_block = \"10.0.0.0/8\"\n"));
    wd.init();
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(out.contains("TDM-EC2-100") && out.contains("needs a target"), "{out}");

    wd.write(&route(&format!(
        "  destination_cidr_block = \"10.0.0.0/8\"\n  gateway_id             = \"{}\"\n  network_interface_id   = \"{}\"\n",
        net.igw, net.eni1
    )));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(points_at(&out, "TDM-EC2-100", "network_interface_id"), "{out}");

    wd.write(&route(
        "  destination_cidr_block = \"192.168.1.1/24\"\n  gateway_id             = \"nat-0123456789abcdef0\"\n",
    ));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(points_at(&out, "TDM-PRV-006", "destination_cidr_block") && out.contains("host bits"), "{out}");
    assert!(points_at(&out, "TDM-PRV-006", "gateway_id") && out.contains("nat_gateway_id"), "{out}");

    // Valid shapes, but the table and the ENI do not exist.
    wd.write(&route(
        "  destination_cidr_block = \"192.168.1.1/32\"\n  network_interface_id   = \"eni-0123456789abcdef0\"\n",
    ));
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(points_at(&out, "TDM-EC2-102", "route_table_id"), "{out}");
    assert!(points_at(&out, "TDM-EC2-108", "network_interface_id"), "{out}");

    // Route table in a VPC that does not exist; association of a subnet that does not exist.
    let cfg = format!(
        r#"{}
resource "tandem_route_table" "bad" {{
  vpc_id = "vpc-0123456789abcdef0"
}}

resource "tandem_route_table_association" "bad" {{
  subnet_id      = "subnet-0123456789abcdef0"
  route_table_id = "rtb-0123456789abcdef0"
}}
"#,
        provider_block()
    );
    wd.write(&cfg);
    let r = wd.plan_code(&[]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(points_at(&out, "TDM-EC2-012", "vpc_id"), "{out}");
    assert!(points_at(&out, "TDM-EC2-109", "subnet_id"), "{out}");
    assert!(points_at(&out, "TDM-EC2-102", "route_table_id"), "{out}");
    assert_eq!(wd.run(&["apply", "-auto-approve", "-no-color"]).code, Some(1));

    // Import IDs of the wrong shape.
    let imp_cfg = format!(
        "{}\nresource \"tandem_route\" \"x\" {{\n  route_table_id         = \"rtb-1\"\n  destination_cidr_block = \"10.0.0.0/8\"\n  gateway_id             = \"{}\"\n}}\n\nresource \"tandem_route_table_association\" \"x\" {{\n  subnet_id      = \"{}\"\n  route_table_id = \"rtb-1\"\n}}\n",
        provider_block(),
        net.igw,
        net.subnet
    );
    let imp = env.workdir("bad-import", &imp_cfg);
    imp.init();
    let out = imp.run(&["import", "-no-color", "tandem_route.x", "rtb-1/10.0.0.0/8"]).output();
    assert!(out.contains("TDM-EC2-103") && out.contains("ROUTE_TABLE_ID_DESTINATION"), "{out}");
    let out = imp.run(&["import", "-no-color", "tandem_route_table_association.x", "rtb-1/subnet-1"]).output();
    assert!(out.contains("TDM-EC2-103") && out.contains("SUBNET_ID/ROUTE_TABLE_ID"), "{out}");

    assert!(extra_route_tables(&env).is_empty(), "nothing was created");
    assert!(associations(&env).is_empty());
}
