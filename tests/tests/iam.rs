//! Acceptance: tandem_iam_policy, tandem_iam_role, tandem_iam_role_policy_attachment and
//! tandem_iam_instance_profile against moto through the real terraform CLI.

use serde_json::Value as Json;
use tandem_tests::Env;
use tandem_tests::terraform::provider_block;

fn policy_config(description: &str, actions: &[&str], tag: &str) -> String {
    let actions = actions.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"{}
resource "tandem_iam_policy" "vip" {{
  name        = "tandem-vip"
  path        = "/tandem/"
  description = "{description}"
  policy = jsonencode({{
    Version = "2012-10-17"
    Statement = [{{
      Effect   = "Allow"
      Action   = [{actions}]
      Resource = "*"
    }}]
  }})
  tags = {{ Cluster = "{tag}" }}
}}
"#,
        provider_block()
    )
}

/// The same document as `policy_config(d, ["ec2:DescribeRouteTables", "ec2:ReplaceRoute"], t)`, written as a
/// heredoc with other whitespace, key order and action order.
fn policy_config_reformatted(description: &str, tag: &str) -> String {
    format!(
        r#"{}
resource "tandem_iam_policy" "vip" {{
  name        = "tandem-vip"
  path        = "/tandem/"
  description = "{description}"
  policy      = <<-EOT
    {{
      "Statement": {{
        "Resource": ["*"],
        "Action": ["ec2:ReplaceRoute", "ec2:DescribeRouteTables"],
        "Effect": "Allow"
      }},
      "Version": "2012-10-17"
    }}
  EOT
  tags = {{ Cluster = "{tag}" }}
}}
"#,
        provider_block()
    )
}

fn policy_versions(env: &Env, arn: &str) -> Vec<(String, bool)> {
    env.block_on(async {
        let out = env.iam.list_policy_versions().policy_arn(arn).send().await.expect("ListPolicyVersions");
        out.versions()
            .iter()
            .map(|v| (v.version_id().unwrap_or_default().to_string(), v.is_default_version()))
            .collect()
    })
}

fn policy_exists(env: &Env, arn: &str) -> bool {
    env.block_on(async { env.iam.get_policy().policy_arn(arn).send().await.is_ok() })
}

#[test]
fn policy_basic_import_reformat_update_replace_disappears_destroy() {
    let env = Env::start();
    let actions = ["ec2:DescribeRouteTables", "ec2:ReplaceRoute"];
    let wd = env.workdir("policy", &policy_config("VIP control", &actions, "a"));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let state = wd.state_of("tandem_iam_policy.vip");
    let arn = state["arn"].as_str().expect("arn").to_string();
    assert_eq!(state["id"], arn.as_str());
    assert!(arn.ends_with(":policy/tandem/tandem-vip"), "{arn}");
    assert!(state["policy_id"].as_str().is_some_and(|p| !p.is_empty()));

    let imp = env.workdir("policy-import", &policy_config("VIP control", &actions, "a"));
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_iam_policy.vip", &arn]);
    assert_eq!(imp.state_of("tandem_iam_policy.vip"), state);
    imp.assert_plans_empty();

    // The same document written differently: no diff, and state keeps the text it had.
    wd.write(&policy_config_reformatted("VIP control", "a"));
    wd.assert_plans_empty();
    assert_eq!(wd.state_of("tandem_iam_policy.vip")["policy"], state["policy"]);

    // A new document: a new default version, in place. With five versions in IAM, the oldest non-default goes.
    env.block_on(async {
        for i in 0..3 {
            let doc = format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"ec2:DescribeVpcs","Resource":"arn:aws:ec2:*:*:vpc/v{i}"}}]}}"#
            );
            env.iam
                .create_policy_version()
                .policy_arn(&arn)
                .policy_document(doc)
                .set_as_default(false)
                .send()
                .await
                .expect("CreatePolicyVersion");
        }
    });
    assert_eq!(policy_versions(&env, &arn).len(), 4);
    wd.write(&policy_config("VIP control", &["ec2:DescribeRouteTables"], "b"));
    assert_eq!(wd.planned_actions(), vec![("tandem_iam_policy.vip".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    let versions = policy_versions(&env, &arn);
    assert_eq!(versions.len(), 5);
    wd.write(&policy_config("VIP control", &["ec2:DescribeRouteTables", "ec2:DescribeVpcs"], "b"));
    wd.apply();
    wd.assert_plans_empty();
    let versions = policy_versions(&env, &arn);
    assert_eq!(versions.len(), 5, "still five: the oldest non-default version was deleted first");
    // v1 (the first default) became the oldest non-default version when v5 took over.
    assert!(!versions.iter().any(|(v, _)| v == "v1"), "the oldest non-default version is gone: {versions:?}");
    assert_eq!(versions.iter().filter(|(_, default)| *default).count(), 1, "{versions:?}");
    assert_eq!(wd.state_of("tandem_iam_policy.vip")["tags"]["Cluster"], "b");

    // IAM cannot change a description: replaced.
    wd.write(&policy_config("VIP route control", &["ec2:DescribeRouteTables", "ec2:DescribeVpcs"], "b"));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_iam_policy.vip".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    wd.assert_plans_empty();
    let new_id = wd.state_of("tandem_iam_policy.vip")["policy_id"].clone();
    assert_ne!(new_id, state["policy_id"]);

    // Deleted outside Terraform: planned again.
    env.block_on(async { env.iam.delete_policy().policy_arn(&arn).send().await.expect("DeletePolicy") });
    assert_eq!(wd.plan_code(&[]).code, Some(2), "a vanished policy is planned again");
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(!policy_exists(&env, &arn), "destroy leaves no policy");
}

fn trust(service: &str) -> String {
    format!(
        r#"jsonencode({{
    Version   = "2012-10-17"
    Statement = [{{ Effect = "Allow", Principal = {{ Service = {service} }}, Action = "sts:AssumeRole" }}]
  }})"#
    )
}

fn role_config(description: &str, duration: u32, service: &str, profile_role: &str, force_detach: bool) -> String {
    format!(
        r#"{}
resource "tandem_iam_policy" "dns" {{
  name   = "tandem-dns"
  policy = jsonencode({{
    Version   = "2012-10-17"
    Statement = [{{ Effect = "Allow", Action = ["route53:ChangeResourceRecordSets", "route53:GetChange"], Resource = "*" }}]
  }})
}}

resource "tandem_iam_role" "node" {{
  name                  = "tandem-node"
  description           = "{description}"
  max_session_duration  = {duration}
  force_detach_policies = {force_detach}
  assume_role_policy    = {trust}
  tags = {{ Cluster = "c1" }}
}}

resource "tandem_iam_role" "spare" {{
  name               = "tandem-spare"
  assume_role_policy = {trust}
}}

resource "tandem_iam_role_policy_attachment" "node_dns" {{
  role       = tandem_iam_role.node.name
  policy_arn = tandem_iam_policy.dns.arn
}}

resource "tandem_iam_instance_profile" "node" {{
  name = "tandem-node"
  role = tandem_iam_role.{profile_role}.name
}}
"#,
        provider_block(),
        trust = trust(service)
    )
}

fn attached(env: &Env, role: &str) -> Vec<String> {
    env.block_on(async {
        let out = env.iam.list_attached_role_policies().role_name(role).send().await.expect("ListAttachedRolePolicies");
        out.attached_policies().iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect()
    })
}

fn profile_role(env: &Env, profile: &str) -> Option<String> {
    env.block_on(async {
        let out =
            env.iam.get_instance_profile().instance_profile_name(profile).send().await.expect("GetInstanceProfile");
        out.instance_profile().and_then(|p| p.roles().first()).map(|r| r.role_name().to_string())
    })
}

fn role_names(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.iam.list_roles().send().await.expect("ListRoles");
        out.roles().iter().map(|r| r.role_name().to_string()).collect()
    })
}

#[test]
fn role_attachment_profile_basic_import_update_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("role", &role_config("node role", 3600, "\"ec2.amazonaws.com\"", "node", false));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let role = wd.state_of("tandem_iam_role.node");
    assert_eq!(role["id"], "tandem-node");
    assert!(role["arn"].as_str().is_some_and(|a| a.ends_with(":role/tandem-node")));
    assert!(role["unique_id"].as_str().is_some_and(|u| !u.is_empty()));
    let attachment = wd.state_of("tandem_iam_role_policy_attachment.node_dns");
    let policy_arn = wd.state_of("tandem_iam_policy.dns")["arn"].as_str().expect("arn").to_string();
    assert_eq!(attachment["id"], format!("tandem-node/{policy_arn}").as_str());
    assert_eq!(attached(&env, "tandem-node"), vec![policy_arn.clone()]);
    let profile = wd.state_of("tandem_iam_instance_profile.node");
    assert!(profile["arn"].as_str().is_some_and(|a| a.ends_with(":instance-profile/tandem-node")));
    assert_eq!(profile_role(&env, "tandem-node").as_deref(), Some("tandem-node"));

    // Import each into a fresh directory: the same states.
    let imp = env.workdir("role-import", &role_config("node role", 3600, "\"ec2.amazonaws.com\"", "node", false));
    imp.init();
    for (address, id) in [
        ("tandem_iam_role.node", "tandem-node".to_string()),
        ("tandem_iam_role_policy_attachment.node_dns", format!("tandem-node/{policy_arn}")),
        ("tandem_iam_instance_profile.node", "tandem-node".to_string()),
    ] {
        imp.ok(&["import", "-no-color", address, &id]);
        assert_eq!(imp.state_of(address), wd.state_of(address), "{address}");
    }

    // In place: description, session duration, trust policy; the profile moves to the spare role.
    wd.write(&role_config("cluster node", 7200, "[\"ec2.amazonaws.com\", \"ssm.amazonaws.com\"]", "spare", false));
    let actions = wd.planned_actions();
    for address in ["tandem_iam_role.node", "tandem_iam_instance_profile.node"] {
        assert!(actions.contains(&(address.to_string(), vec!["update".to_string()])), "{address}: {actions:?}");
    }
    wd.apply();
    wd.assert_plans_empty();
    let updated = wd.state_of("tandem_iam_role.node");
    assert_eq!(updated["unique_id"], role["unique_id"], "updated, not replaced");
    assert_eq!(updated["max_session_duration"], 7200);
    let aws_role = env.block_on(async {
        env.iam.get_role().role_name("tandem-node").send().await.expect("GetRole").role().cloned().expect("role")
    });
    assert_eq!(aws_role.description(), Some("cluster node"));
    assert_eq!(aws_role.max_session_duration(), Some(7200));
    assert!(aws_role.assume_role_policy_document().is_some_and(|d| d.contains("ssm.amazonaws.com")));
    assert_eq!(profile_role(&env, "tandem-node").as_deref(), Some("tandem-spare"));

    // Detached outside Terraform: the attachment is planned again and restored.
    env.block_on(async {
        env.iam.detach_role_policy().role_name("tandem-node").policy_arn(&policy_arn).send().await.expect("detach")
    });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "{}", plan.output());
    assert!(plan.stdout.contains("tandem_iam_role_policy_attachment.node_dns will be created"), "{}", plan.stdout);
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(attached(&env, "tandem-node"), vec![policy_arn.clone()]);

    // A profile deleted outside Terraform is planned again too.
    env.block_on(async {
        env.iam
            .remove_role_from_instance_profile()
            .instance_profile_name("tandem-node")
            .role_name("tandem-spare")
            .send()
            .await
            .expect("remove role");
        env.iam.delete_instance_profile().instance_profile_name("tandem-node").send().await.expect("delete profile")
    });
    assert_eq!(wd.plan_code(&[]).code, Some(2));
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(role_names(&env).is_empty(), "destroy leaves no role: {:?}", role_names(&env));
    assert!(!policy_exists(&env, &policy_arn));
    let profiles = env.block_on(async {
        env.iam.list_instance_profiles().send().await.expect("ListInstanceProfiles").instance_profiles().len()
    });
    assert_eq!(profiles, 0);
}

#[test]
fn role_with_foreign_policy_needs_force_detach_and_name_change_replaces() {
    let env = Env::start();
    let cfg = |name: &str, force: bool| {
        format!(
            "{}\nresource \"tandem_iam_role\" \"r\" {{\n  name                  = \"{name}\"\n  force_detach_policies = {force}\n  assume_role_policy    = {}\n}}\n",
            provider_block(),
            trust("\"ec2.amazonaws.com\"")
        )
    };
    let wd = env.workdir("force", &cfg("tandem-a", false));
    wd.init();
    wd.apply();
    let unique = wd.state_of("tandem_iam_role.r")["unique_id"].clone();
    wd.write(&cfg("tandem-b", false));
    assert!(
        wd.planned_actions()
            .contains(&("tandem_iam_role.r".to_string(), vec!["delete".to_string(), "create".to_string()]))
    );
    wd.apply();
    assert_ne!(wd.state_of("tandem_iam_role.r")["unique_id"], unique);
    assert_eq!(role_names(&env), vec!["tandem-b".to_string()]);

    // A policy attached outside this configuration blocks the delete: a clear diagnostic, nothing retried.
    let foreign = env.block_on(async {
        let doc =
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeVpcs","Resource":"*"}]}"#;
        let out =
            env.iam.create_policy().policy_name("foreign").policy_document(doc).send().await.expect("CreatePolicy");
        let arn = out.policy().and_then(|p| p.arn()).expect("arn").to_string();
        env.iam.attach_role_policy().role_name("tandem-b").policy_arn(&arn).send().await.expect("attach");
        arn
    });
    let r = wd.run(&["destroy", "-auto-approve", "-no-color"]);
    assert_eq!(r.code, Some(1));
    let out = r.output();
    assert!(out.contains("TDM-IAM-013") && out.contains(&foreign), "names the attached policy:\n{out}");
    assert_eq!(role_names(&env), vec!["tandem-b".to_string()]);

    wd.write(&cfg("tandem-b", true));
    wd.apply();
    wd.destroy();
    assert!(role_names(&env).is_empty());
    assert!(policy_exists(&env, &foreign), "force_detach_policies detaches, it does not delete others' policies");
}

#[test]
fn bad_policy_documents_and_names_are_diagnostics_on_the_attribute() {
    let env = Env::start();
    let cfg = |policy: &str| {
        format!(
            "{}\nresource \"tandem_iam_policy\" \"bad\" {{\n  name   = \"bad\"\n  policy = {policy}\n}}\n",
            provider_block()
        )
    };
    let wd = env.workdir("bad-policy", &cfg("\"{\\\"Version\\\": \\\"2012-10-17\\\", \\\"Statement\\\": [\""));
    wd.init();
    let check = |code: &str, text: &str| {
        let r = wd.run(&["validate", "-no-color"]);
        assert_eq!(r.code, Some(1));
        let out = r.output();
        assert!(out.contains(code) && out.contains(text), "{code}:\n{out}");
        assert!(out.contains("policy = "), "points at the policy line:\n{out}");
    };
    check("TDM-IAM-001", "not valid JSON");
    wd.write(&cfg("jsonencode({ Statement = [{ Effect = \"Allow\", Action = \"*\", Resource = \"*\" }] })"));
    check("TDM-IAM-002", "Version");
    wd.write(&cfg("jsonencode({ Version = \"2012-10-17\" })"));
    check("TDM-IAM-002", "Statement");

    wd.write(&format!(
        "{}\nresource \"tandem_iam_role\" \"bad\" {{\n  name               = \"bad role\"\n  assume_role_policy = \"[]\"\n}}\n",
        provider_block()
    ));
    let r = wd.run(&["validate", "-no-color"]);
    let out = r.output();
    assert!(out.contains("TDM-IAM-010") && out.contains("TDM-IAM-002"), "both attributes reported:\n{out}");

    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(apply.code, Some(1));
    assert!(role_names(&env).is_empty());
    let policies: Vec<Json> = env.block_on(async {
        let out = env
            .iam
            .list_policies()
            .scope(aws_sdk_iam::types::PolicyScopeType::Local)
            .send()
            .await
            .expect("ListPolicies");
        out.policies().iter().map(|p| Json::from(p.policy_name().unwrap_or_default())).collect()
    });
    assert!(policies.is_empty(), "{policies:?}");
}
