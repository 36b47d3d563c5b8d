//! Acceptance: the provider process itself — started by hand, configuration errors, the network example,
//! and the data source.

use std::process::Command;

use tandem_tests::provider::provider_binary;
use tandem_tests::terraform::provider_block;
use tandem_tests::{Env, Moto, workspace_root};

#[test]
fn started_by_hand_it_says_it_is_a_terraform_plugin() {
    let bin = provider_binary().expect("provider binary");
    let out = Command::new(bin).env_remove("TF_PLUGIN_MAGIC_COOKIE").output().expect("run provider");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Terraform") && err.contains("plugin"), "{err}");
}

#[test]
fn availability_zones_data_source_lists_the_region() {
    let env = Env::start();
    let cfg = format!(
        "{}\ndata \"tandem_availability_zones\" \"az\" {{\n  state = \"available\"\n}}\n\noutput \"names\" {{\n  value = data.tandem_availability_zones.az.names\n}}\noutput \"ids\" {{\n  value = data.tandem_availability_zones.az.zone_ids\n}}\n",
        provider_block()
    );
    let wd = env.workdir("azs", &cfg);
    wd.init();
    wd.apply();
    let out = wd.ok(&["output", "-json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("outputs JSON");
    let names = v["names"]["value"].as_array().expect("names");
    assert!(names.len() >= 2 && names[0] == "us-east-1a", "{v}");
    assert_eq!(names.len(), v["ids"]["value"].as_array().map_or(0, Vec::len));
    wd.assert_plans_empty();
}

#[test]
fn missing_region_and_credentials_each_give_one_clear_diagnostic() {
    let env = Env::start();
    let cfg = format!("{}\ndata \"tandem_availability_zones\" \"az\" {{}}\n", provider_block());
    let mut wd = env.workdir("no-region", &cfg);
    wd.init();
    wd.remove_env("AWS_REGION");
    wd.set_env("AWS_CONFIG_FILE", "/nonexistent/config");
    let out = wd.plan_code(&[]).output();
    assert!(out.contains("TDM-AWS-001") && out.contains("AWS_REGION"), "{out}");
    assert_eq!(out.matches("Error:").count(), 1, "exactly one diagnostic:\n{out}");

    wd.set_env("AWS_REGION", "us-east-1");
    wd.remove_env("AWS_ACCESS_KEY_ID");
    wd.remove_env("AWS_SECRET_ACCESS_KEY");
    wd.set_env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
    let out = wd.plan_code(&[]).output();
    assert!(out.contains("TDM-AWS-002") && out.contains("access_key"), "{out}");
    assert_eq!(out.matches("Error:").count(), 1, "exactly one diagnostic:\n{out}");
}

#[test]
fn wrong_credentials_are_rejected_with_a_hint() {
    // A moto that authenticates requests: unknown access keys are refused as AWS refuses them.
    let env = Env::start_moto(Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).expect("moto with auth"));
    let cfg = format!("{}\ndata \"tandem_availability_zones\" \"az\" {{}}\n", provider_block());
    let mut wd = env.workdir("bad-creds", &cfg);
    wd.init();
    wd.set_env("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1");
    let out = wd.plan_code(&[]).output();
    // moto words the error body as EC2 does, so the SDK sees HTTP 403 without a code; AWS's own body gives
    // InvalidClientTokenId. Either way: the credentials class, its code and its hint.
    assert!(out.contains("TDM-AWS-004") && out.contains("access key is unknown"), "{out}");
    assert_eq!(out.matches("Error:").count(), 1, "exactly one diagnostic:\n{out}");
}

#[test]
fn network_example_applies_replans_empty_and_destroys_clean() {
    let env = Env::start();
    let example =
        std::fs::read_to_string(workspace_root().join("terraform-examples/network/main.tf")).expect("example");
    let wd = env.workdir("network", &example);
    wd.init();
    wd.apply();
    wd.assert_plans_empty();
    let out: serde_json::Value = serde_json::from_str(&wd.ok(&["output", "-json"]).stdout).expect("outputs");
    let zones = out["subnet_zones"]["value"].as_array().expect("zones").clone();
    assert_eq!(zones.len(), 2);
    assert_ne!(zones[0], zones[1], "two subnets in two zones");
    let vpc = out["vpc_id"]["value"].as_str().expect("vpc").to_string();
    let tags = env.block_on(async {
        let v = env.ec2.describe_vpcs().vpc_ids(&vpc).send().await.expect("DescribeVpcs");
        v.vpcs().first().map(|v| {
            v.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect::<Vec<_>>()
        })
    });
    assert!(tags.unwrap_or_default().contains(&("Project".into(), "tandem-example".into())), "default_tags reach AWS");
    wd.destroy();
    assert!(env.non_default_vpcs().is_empty(), "{:?}", env.non_default_vpcs());
}
