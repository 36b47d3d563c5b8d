//! Acceptance: tandem_security_group and tandem_security_group_rule against moto through the real terraform CLI.

use aws_sdk_ec2::types::{Filter, SecurityGroupRule};
use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

struct Knobs<'a> {
    https_port: u16,
    https_description: &'a str,
    group_tag: &'a str,
}

const BASE: Knobs<'static> = Knobs { https_port: 443, https_description: "HTTPS to AWS APIs", group_tag: "nodes" };

fn config(k: &Knobs<'_>) -> String {
    format!(
        r#"{}
resource "tandem_vpc" "test" {{
  cidr_block = "10.80.0.0/16"
}}

resource "tandem_security_group" "nodes" {{
  name   = "cluster-nodes"
  vpc_id = tandem_vpc.test.id
  tags   = {{ Name = "{tag}" }}
}}

resource "tandem_security_group" "ops" {{
  name                   = "cluster-ops"
  description            = "Operator access"
  vpc_id                 = tandem_vpc.test.id
  revoke_rules_on_delete = true
}}

resource "tandem_security_group_rule" "https_out" {{
  type              = "egress"
  security_group_id = tandem_security_group.nodes.id
  protocol          = "tcp"
  from_port         = {port}
  to_port           = {port}
  cidr_ipv4         = "0.0.0.0/0"
  description       = "{desc}"
}}

resource "tandem_security_group_rule" "heartbeat" {{
  type                     = "ingress"
  security_group_id        = tandem_security_group.nodes.id
  protocol                 = "udp"
  from_port                = 5405
  to_port                  = 5405
  source_security_group_id = tandem_security_group.nodes.id
}}

resource "tandem_security_group_rule" "ops_out" {{
  type              = "egress"
  security_group_id = tandem_security_group.ops.id
  protocol          = "all"
  cidr_ipv4         = "10.80.0.0/16"
}}

resource "tandem_security_group_rule" "ping" {{
  type              = "ingress"
  security_group_id = tandem_security_group.ops.id
  protocol          = "icmp"
  from_port         = 8
  to_port           = -1
  cidr_ipv4         = "10.80.0.0/16"
}}
"#,
        provider_block(),
        tag = k.group_tag,
        port = k.https_port,
        desc = k.https_description,
    )
}

fn rules_of(env: &Env, group: &str) -> Vec<SecurityGroupRule> {
    env.block_on(async {
        let out = env
            .ec2
            .describe_security_group_rules()
            .filters(Filter::builder().name("group-id").values(group).build())
            .send()
            .await
            .expect("DescribeSecurityGroupRules");
        out.security_group_rules().to_vec()
    })
}

/// Security groups other than the VPCs' default groups.
fn own_groups(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.ec2.describe_security_groups().send().await.expect("DescribeSecurityGroups");
        out.security_groups()
            .iter()
            .filter(|g| g.group_name() != Some("default"))
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect()
    })
}

/// The planned actions of resources that change (no-ops left out).
fn changes(wd: &tandem_tests::Workdir) -> Vec<(String, Vec<String>)> {
    wd.planned_actions().into_iter().filter(|(_, a)| a != &["no-op".to_string()]).collect()
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[test]
fn security_group_and_rules_basic_import_update_replace_destroy() {
    let env = Env::start();
    let wd = env.workdir("sg", &config(&BASE));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();

    let nodes = wd.state_of("tandem_security_group.nodes");
    let nodes_id = s(&nodes["id"]);
    assert!(nodes_id.starts_with("sg-"), "{nodes}");
    assert_eq!(nodes["description"], "Managed by Terraform");
    assert_eq!(nodes["revoke_rules_on_delete"], false);
    assert!(s(&nodes["arn"]).ends_with(&format!("security-group/{nodes_id}")));
    let ops_id = s(&wd.state_of("tandem_security_group.ops")["id"]);

    // Egress is exactly what the configuration declares: AWS's allow-all rule is gone.
    let egress: Vec<(String, Option<i32>, String)> = rules_of(&env, &nodes_id)
        .iter()
        .filter(|r| r.is_egress() == Some(true))
        .map(|r| (r.ip_protocol().unwrap_or_default().into(), r.from_port(), r.cidr_ipv4().unwrap_or_default().into()))
        .collect();
    assert_eq!(egress, vec![("tcp".to_string(), Some(443), "0.0.0.0/0".to_string())]);
    let ops_egress: Vec<String> = rules_of(&env, &ops_id)
        .iter()
        .filter(|r| r.is_egress() == Some(true))
        .map(|r| format!("{} {}", r.ip_protocol().unwrap_or_default(), r.cidr_ipv4().unwrap_or_default()))
        .collect();
    assert_eq!(ops_egress, vec!["-1 10.80.0.0/16".to_string()]);

    let https = wd.state_of("tandem_security_group_rule.https_out");
    let https_id = s(&https["id"]);
    assert!(https_id.starts_with("sgr-"), "{https}");
    let ops_out = wd.state_of("tandem_security_group_rule.ops_out");
    assert_eq!(ops_out["protocol"], "all", "the user's spelling is kept");
    assert!(ops_out["from_port"].is_null());
    let heartbeat = wd.state_of("tandem_security_group_rule.heartbeat");
    assert_eq!(heartbeat["source_security_group_id"], nodes_id.as_str());
    assert!(heartbeat["cidr_ipv4"].is_null());

    // Import the group and two rules into a fresh directory: the states equal the applied ones.
    let vpc_id = s(&wd.state_of("tandem_vpc.test")["id"]);
    let imp = env.workdir(
        "sg-import",
        &format!(
            r#"{}
resource "tandem_security_group" "nodes" {{
  name   = "cluster-nodes"
  vpc_id = "{vpc_id}"
  tags   = {{ Name = "nodes" }}
}}

resource "tandem_security_group_rule" "https_out" {{
  type              = "egress"
  security_group_id = "{nodes_id}"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  description       = "HTTPS to AWS APIs"
}}

resource "tandem_security_group_rule" "ops_out" {{
  type              = "egress"
  security_group_id = "{ops_id}"
  protocol          = "all"
  cidr_ipv4         = "10.80.0.0/16"
}}
"#,
            provider_block()
        ),
    );
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_security_group.nodes", &nodes_id]);
    imp.ok(&["import", "-no-color", "tandem_security_group_rule.https_out", &https_id]);
    imp.ok(&["import", "-no-color", "tandem_security_group_rule.ops_out", &s(&ops_out["id"])]);
    assert_eq!(imp.state_of("tandem_security_group.nodes"), nodes);
    assert_eq!(imp.state_of("tandem_security_group_rule.https_out"), https);
    // Imported as AWS spells it ("-1"); "all" in the configuration is the same protocol: no diff.
    assert_eq!(imp.state_of("tandem_security_group_rule.ops_out")["protocol"], "-1");
    imp.assert_plans_empty();

    // In place: the rule's description and the group's tags.
    wd.write(&config(&Knobs { https_description: "HTTPS out", group_tag: "nodes-2", ..BASE }));
    let mut planned = changes(&wd);
    planned.sort();
    assert_eq!(
        planned,
        vec![
            ("tandem_security_group.nodes".to_string(), vec!["update".to_string()]),
            ("tandem_security_group_rule.https_out".to_string(), vec!["update".to_string()]),
        ]
    );
    wd.apply();
    wd.assert_plans_empty();
    let updated = wd.state_of("tandem_security_group_rule.https_out");
    assert_eq!(updated["id"], https_id.as_str());
    let aws_description = rules_of(&env, &nodes_id)
        .into_iter()
        .find(|r| r.security_group_rule_id() == Some(https_id.as_str()))
        .and_then(|r| r.description().map(str::to_string));
    assert_eq!(aws_description.as_deref(), Some("HTTPS out"));

    // A new port is a new AWS rule object: replace.
    wd.write(&config(&Knobs { https_port: 8443, https_description: "HTTPS out", group_tag: "nodes-2" }));
    assert_eq!(
        changes(&wd),
        vec![("tandem_security_group_rule.https_out".to_string(), vec!["delete".to_string(), "create".to_string()])]
    );
    wd.apply();
    wd.assert_plans_empty();
    let replaced = s(&wd.state_of("tandem_security_group_rule.https_out")["id"]);
    assert_ne!(replaced, https_id);
    let ports: Vec<Option<i32>> =
        rules_of(&env, &nodes_id).iter().filter(|r| r.is_egress() == Some(true)).map(|r| r.from_port()).collect();
    assert_eq!(ports, vec![Some(8443)], "the old rule is revoked");

    wd.destroy();
    assert!(own_groups(&env).is_empty(), "destroy leaves no group: {:?}", own_groups(&env));
}

#[test]
fn vanished_rule_and_group_are_planned_again_and_restored() {
    let env = Env::start();
    let wd = env.workdir("sg-gone", &config(&BASE));
    wd.init();
    wd.apply();
    let nodes_id = s(&wd.state_of("tandem_security_group.nodes")["id"]);
    let https_id = s(&wd.state_of("tandem_security_group_rule.https_out")["id"]);
    env.block_on(async {
        env.ec2
            .revoke_security_group_egress()
            .group_id(&nodes_id)
            .security_group_rule_ids(&https_id)
            .send()
            .await
            .expect("revoke out of band")
    });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "a vanished rule is planned again:\n{}", plan.output());
    assert!(plan.stdout.contains("tandem_security_group_rule.https_out will be created"), "{}", plan.stdout);
    wd.apply();
    wd.assert_plans_empty();

    let ops_id = s(&wd.state_of("tandem_security_group.ops")["id"]);
    env.block_on(async { env.ec2.delete_security_group().group_id(&ops_id).send().await.expect("delete out of band") });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "{}", plan.output());
    assert!(plan.stdout.contains("tandem_security_group.ops will be created"), "{}", plan.stdout);
    wd.apply();
    wd.assert_plans_empty();
    assert_ne!(s(&wd.state_of("tandem_security_group.ops")["id"]), ops_id);
    wd.destroy();
    assert!(own_groups(&env).is_empty());
}

/// True when Terraform quoted the configuration line of `attr` under a diagnostic ("  12:   attr = …").
fn points_at(out: &str, attr: &str) -> bool {
    out.lines().any(|l| {
        l.split_once(": ").is_some_and(|(n, rest)| {
            n.trim().parse::<u32>().is_ok()
                && rest.trim_start().strip_prefix(attr).is_some_and(|r| r.starts_with([' ', '=']))
        })
    })
}

#[test]
fn bad_rules_are_diagnostics_on_the_attribute_and_create_nothing() {
    let env = Env::start();
    let rule = |body: &str| {
        format!(
            "{}\nresource \"tandem_security_group_rule\" \"bad\" {{\n  type              = \"ingress\"\n  security_group_id = \"sg-0123456789abcdef0\"\n{body}}}\n",
            provider_block()
        )
    };
    let wd = env.workdir(
        "sg-bad",
        &rule("  protocol  = \"tcp\"\n  from_port = 22\n  to_port   = 22\n  cidr_ipv4 = \"10.0.0.0/33\"\n"),
    );
    wd.init();
    let cases: [(&str, &str, &str); 4] = [
        (
            "  protocol  = \"tcp\"\n  from_port = 22\n  to_port   = 22\n  cidr_ipv4 = \"10.0.0.0/33\"\n",
            "TDM-PRV-006",
            "cidr_ipv4",
        ),
        (
            "  protocol  = \"tcp\"\n  from_port = 22\n  to_port   = 22\n  cidr_ipv4 = \"10.0.0.0/8\"\n  source_security_group_id = \"sg-1\"\n",
            "TDM-EC2-150",
            "source_security_group_id",
        ),
        (
            "  protocol  = \"tcp\"\n  from_port = 22\n  to_port   = 70000\n  cidr_ipv4 = \"10.0.0.0/8\"\n",
            "TDM-EC2-151",
            "to_port",
        ),
        (
            "  protocol  = \"all\"\n  from_port = 0\n  to_port = 0\n  cidr_ipv4 = \"10.0.0.0/8\"\n",
            "TDM-EC2-151",
            "from_port",
        ),
    ];
    for (body, code, attr) in cases {
        wd.write(&rule(body));
        let r = wd.run(&["validate", "-no-color"]);
        let out = r.output();
        assert_eq!(r.code, Some(1), "{out}");
        assert!(out.contains(code), "{code} expected:\n{out}");
        assert!(points_at(&out, attr), "the diagnostic points at {attr}:\n{out}");
    }
    let bad_name =
        format!("{}\nresource \"tandem_security_group\" \"bad\" {{\n  name = \"sg-nodes\"\n}}\n", provider_block());
    wd.write(&bad_name);
    let r = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(r.output().contains("TDM-PRV-006") && points_at(&r.output(), "name"), "{}", r.output());
    assert!(own_groups(&env).is_empty(), "nothing was created");
}
