//! Acceptance: tandem_instance and data tandem_ami against moto through the real terraform CLI.

use aws_sdk_ec2::types::{InstanceAttributeName, InstanceStateName};
use tandem_tests::terraform::provider_block;
use tandem_tests::{Env, Moto, Workdir};

/// The knobs the tests turn; everything else of the node stays fixed.
#[derive(Clone)]
struct Node<'a> {
    private_ip: &'a str,
    instance_type: &'a str,
    groups: &'a str,
    profile: &'a str,
    source_dest_check: bool,
    hop_limit: u8,
    root_size: u16,
    user_data: &'a str,
    replace_on_change: bool,
    tag: &'a str,
}

const NODE: Node<'static> = Node {
    private_ip: "10.90.1.10",
    instance_type: "t3.micro",
    groups: "tandem_security_group.a.id",
    profile: "node-a",
    source_dest_check: false,
    hop_limit: 2,
    root_size: 12,
    user_data: "#!/bin/sh\\necho node-a\\n",
    replace_on_change: false,
    tag: "node-a",
};

const AMI: &str = r#"
data "tandem_ami" "amzn2" {
  owners      = ["amazon"]
  most_recent = true
  filter {
    name   = "name"
    values = ["amzn2-ami-hvm-*-x86_64-gp2"]
  }
}
"#;

fn config(n: &Node<'_>) -> String {
    format!(
        r#"{provider}{AMI}
resource "tandem_vpc" "test" {{
  cidr_block = "10.90.0.0/16"
}}

resource "tandem_subnet" "a" {{
  vpc_id            = tandem_vpc.test.id
  cidr_block        = "10.90.1.0/24"
  availability_zone = "us-east-1a"
}}

resource "tandem_security_group" "a" {{
  name   = "node-a"
  vpc_id = tandem_vpc.test.id
}}

resource "tandem_security_group" "b" {{
  name   = "node-b"
  vpc_id = tandem_vpc.test.id
}}

resource "tandem_instance" "node" {{
  ami                         = data.tandem_ami.amzn2.id
  instance_type               = "{itype}"
  subnet_id                   = tandem_subnet.a.id
  private_ip                  = "{ip}"
  vpc_security_group_ids      = [{groups}]
  iam_instance_profile        = "{profile}"
  user_data                   = "{user_data}"
  user_data_replace_on_change = {replace}
  source_dest_check           = {sdc}

  metadata_options {{
    http_put_response_hop_limit = {hops}
  }}

  root_block_device {{
    volume_size = {root}
  }}

  tags = {{ Name = "{tag}" }}
}}
"#,
        provider = provider_block(),
        ip = n.private_ip,
        itype = n.instance_type,
        groups = n.groups,
        profile = n.profile,
        user_data = n.user_data,
        replace = n.replace_on_change,
        sdc = n.source_dest_check,
        hops = n.hop_limit,
        root = n.root_size,
        tag = n.tag,
    )
}

fn create_instance_profiles(env: &Env, names: &[&str]) {
    env.block_on(async {
        for name in names {
            env.iam.create_instance_profile().instance_profile_name(*name).send().await.expect("CreateInstanceProfile");
        }
    });
}

fn instance(env: &Env, id: &str) -> aws_sdk_ec2::types::Instance {
    env.block_on(async {
        let out = env.ec2.describe_instances().instance_ids(id).send().await.expect("DescribeInstances");
        out.reservations()[0].instances()[0].clone()
    })
}

/// The ARN of the instance profile associated with the instance.
fn profile_of(env: &Env, id: &str) -> Option<String> {
    env.block_on(async {
        let out = env
            .ec2
            .describe_iam_instance_profile_associations()
            .filters(aws_sdk_ec2::types::Filter::builder().name("instance-id").values(id).build())
            .send()
            .await
            .expect("DescribeIamInstanceProfileAssociations");
        out.iam_instance_profile_associations()
            .iter()
            .find(|a| a.state().map(|s| s.as_str()) == Some("associated"))
            .and_then(|a| a.iam_instance_profile())
            .and_then(|p| p.arn())
            .map(str::to_string)
    })
}

fn state_of_instance(env: &Env, id: &str) -> InstanceStateName {
    instance(env, id).state().and_then(|s| s.name()).cloned().expect("state")
}

/// Instances that are not terminated.
fn live_instances(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.ec2.describe_instances().send().await.expect("DescribeInstances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()) != Some(&InstanceStateName::Terminated))
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect()
    })
}

fn root_volume(env: &Env, i: &aws_sdk_ec2::types::Instance) -> aws_sdk_ec2::types::Volume {
    let root = i.root_device_name().expect("root device");
    let vol = i
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_id())
        .expect("root volume")
        .to_string();
    env.block_on(async {
        env.ec2.describe_volumes().volume_ids(vol).send().await.expect("DescribeVolumes").volumes()[0].clone()
    })
}

fn changes(wd: &Workdir) -> Vec<(String, Vec<String>)> {
    wd.planned_actions().into_iter().filter(|(_, a)| a != &["no-op".to_string()]).collect()
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
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
fn instance_basic_import_update_replace_disappears_destroy() {
    let env = Env::start();
    create_instance_profiles(&env, &["node-a", "node-b"]);
    let wd = env.workdir("node", &config(&NODE));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();

    let state = wd.state_of("tandem_instance.node");
    let id = s(&state["id"]);
    assert!(id.starts_with("i-"), "{state}");
    assert_eq!(state["private_ip"], "10.90.1.10");
    assert_eq!(state["availability_zone"], "us-east-1a");
    assert_eq!(state["instance_state"], "running");
    assert_eq!(state["metadata_options"][0]["http_tokens"], "required", "IMDSv2 by default");
    assert_eq!(state["root_block_device"][0]["volume_type"], "gp3");
    assert!(s(&state["primary_network_interface_id"]).starts_with("eni-"));
    assert!(s(&state["private_dns"]).starts_with("ip-10-90-1-10"), "{state}");

    // What AWS has, through the SDK.
    let i = instance(&env, &id);
    let eni = &i.network_interfaces()[0];
    assert_eq!(eni.source_dest_check(), Some(false), "source/dest check is off on the primary ENI");
    let md = i.metadata_options().expect("metadata options");
    assert_eq!((md.http_tokens().map(|t| t.as_str()), md.http_put_response_hop_limit()), (Some("required"), Some(2)));
    assert!(profile_of(&env, &id).is_some_and(|a| a.ends_with("/node-a")));
    let root = root_volume(&env, &i);
    assert_eq!((root.size(), root.encrypted()), (Some(12), Some(true)));
    let user_data = env.block_on(async {
        let out = env
            .ec2
            .describe_instance_attribute()
            .instance_id(&id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .expect("DescribeInstanceAttribute");
        out.user_data().and_then(|v| v.value()).map(str::to_string)
    });
    assert_eq!(user_data.as_deref(), Some("IyEvYmluL3NoCmVjaG8gbm9kZS1hCg=="), "base64 of the text");
    let ami_id = s(&state["ami"]);

    // Import into a fresh directory: the imported state equals the applied one.
    let subnet = s(&state["subnet_id"]);
    let group = s(&wd.state_of("tandem_security_group.a")["id"]);
    let imp = env.workdir(
        "node-import",
        &format!(
            r##"{}
resource "tandem_instance" "node" {{
  ami                    = "{ami_id}"
  instance_type          = "t3.micro"
  subnet_id              = "{subnet}"
  private_ip             = "10.90.1.10"
  vpc_security_group_ids = ["{group}"]
  iam_instance_profile   = "node-a"
  user_data              = "#!/bin/sh\necho node-a\n"
  source_dest_check      = false
  metadata_options {{
    http_put_response_hop_limit = 2
  }}
  root_block_device {{
    volume_size = 12
  }}
  tags = {{ Name = "node-a" }}
}}
"##,
            provider_block()
        ),
    );
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_instance.node", &id]);
    assert_eq!(imp.state_of("tandem_instance.node"), state);
    imp.assert_plans_empty();

    // In place: type (stop/start), groups, instance profile, source/dest check, IMDS hop limit, root size, tags.
    let updated_node = Node {
        instance_type: "t3.small",
        groups: "tandem_security_group.a.id, tandem_security_group.b.id",
        profile: "node-b",
        source_dest_check: true,
        hop_limit: 3,
        root_size: 16,
        tag: "node-a2",
        ..NODE
    };
    wd.write(&config(&updated_node));
    assert_eq!(changes(&wd), vec![("tandem_instance.node".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    let updated = wd.state_of("tandem_instance.node");
    assert_eq!(updated["id"], id.as_str(), "updated in place");
    assert_eq!(updated["instance_state"], "running", "started again after the type change");
    let i = instance(&env, &id);
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.small"));
    assert_eq!(i.security_groups().len(), 2);
    assert!(profile_of(&env, &id).is_some_and(|a| a.ends_with("/node-b")), "{:?}", profile_of(&env, &id));
    assert_eq!(i.network_interfaces()[0].source_dest_check(), Some(true));
    assert_eq!(i.metadata_options().and_then(|m| m.http_put_response_hop_limit()), Some(3));
    assert_eq!(root_volume(&env, &i).size(), Some(16));

    // user_data changes in place (stop, modify, start) unless user_data_replace_on_change is set.
    let new_data = Node { user_data: "#!/bin/sh\\necho node-a v2\\n", ..updated_node.clone() };
    wd.write(&config(&new_data));
    assert_eq!(changes(&wd), vec![("tandem_instance.node".to_string(), vec!["update".to_string()])]);
    // (A new address too: moto keeps a terminated instance's IP reserved, AWS frees it with the ENI.)
    wd.write(&config(&Node { replace_on_change: true, private_ip: "10.90.1.11", ..new_data.clone() }));
    assert_eq!(
        changes(&wd),
        vec![("tandem_instance.node".to_string(), vec!["delete".to_string(), "create".to_string()])]
    );
    wd.apply();
    wd.assert_plans_empty();
    let replaced = s(&wd.state_of("tandem_instance.node")["id"]);
    assert_ne!(replaced, id);
    assert_eq!(state_of_instance(&env, &id), InstanceStateName::Terminated, "the old node is terminated");

    // Disappears: terminated out of band, planned again, restored.
    env.block_on(async { env.ec2.terminate_instances().instance_ids(&replaced).send().await.expect("terminate") });
    let plan = wd.plan_code(&[]);
    assert_eq!(plan.code, Some(2), "{}", plan.output());
    assert!(plan.stdout.contains("tandem_instance.node will be created"), "{}", plan.stdout);
    wd.write(&config(&Node { replace_on_change: true, private_ip: "10.90.1.12", ..new_data }));
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(live_instances(&env).is_empty(), "destroy terminates every node: {:?}", live_instances(&env));
}

#[test]
fn bad_instance_inputs_are_diagnostics_on_the_attribute_and_create_nothing() {
    // Like AWS, refuse unknown instance types (moto accepts any name unless told otherwise).
    let moto = Moto::start_with(&[("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")]).expect("moto starts");
    let env = Env::start_moto(moto);
    // The subnet exists before the plan, so that the placement checks run at plan time.
    let subnet = env.block_on(async {
        let vpc = env.ec2.create_vpc().cidr_block("10.91.0.0/16").send().await.expect("CreateVpc");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let out = env
            .ec2
            .create_subnet()
            .vpc_id(vpc_id)
            .cidr_block("10.91.1.0/24")
            .availability_zone("us-east-1a")
            .send()
            .await
            .expect("CreateSubnet");
        out.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string()
    });
    let node = |itype: &str, ip: &str| {
        format!(
            "{}{AMI}\nresource \"tandem_instance\" \"bad\" {{\n  ami           = data.tandem_ami.amzn2.id\n  instance_type = \"{itype}\"\n  subnet_id     = \"{subnet}\"\n  private_ip    = \"{ip}\"\n}}\n",
            provider_block()
        )
    };
    let wd = env.workdir("bad-node", &node("t3.micro", "10.99.0.10"));
    wd.init();
    let expect_plan_error = |wd: &Workdir, code: &str, attr: &str, text: &str| {
        let r = wd.plan_code(&[]);
        let out = r.output();
        assert_eq!(r.code, Some(1), "{out}");
        assert!(out.contains(code) && out.contains(text), "{code} / {text}:\n{out}");
        assert!(points_at(&out, attr), "the diagnostic points at {attr}:\n{out}");
    };
    expect_plan_error(&wd, "TDM-EC2-155", "private_ip", "outside the subnet's CIDR 10.91.1.0/24");
    wd.write(&node("t3.micro", "10.91.1.1"));
    expect_plan_error(&wd, "TDM-EC2-156", "private_ip", "VPC router");
    wd.write(&node("t3micro", "10.91.1.10"));
    expect_plan_error(&wd, "TDM-PRV-006", "instance_type", "not an instance type");

    // A well-formed but unknown type: AWS refuses it at RunInstances; the error points at instance_type.
    wd.write(&node("x9.huge", "10.91.1.10"));
    let r = wd.run(&["apply", "-auto-approve", "-no-color"]);
    let out = r.output();
    assert_eq!(r.code, Some(1), "{out}");
    assert!(out.contains("TDM-EC2-158") && out.contains("x9.huge"), "{out}");
    assert!(points_at(&out, "instance_type"), "{out}");
    assert!(live_instances(&env).is_empty(), "nothing was created: {:?}", live_instances(&env));

    // The AMI data source: no match, and several matches without most_recent.
    let ami = |filter: &str, most_recent: &str| {
        format!(
            "{}\ndata \"tandem_ami\" \"x\" {{\n  owners = [\"amazon\"]\n{most_recent}  filter {{\n    name   = \"name\"\n    values = [\"{filter}\"]\n  }}\n}}\n",
            provider_block()
        )
    };
    wd.write(&ami("no-such-image-*", ""));
    let out = wd.plan_code(&[]).output();
    assert!(out.contains("TDM-EC2-175") && out.contains("filter name = [no-such-image-*]"), "{out}");
    wd.write(&ami("amzn2-ami-hvm-*-x86_64-gp2", ""));
    let out = wd.plan_code(&[]).output();
    assert!(out.contains("TDM-EC2-176") && out.contains("most_recent"), "{out}");
    wd.write(&format!(
        "{}\ndata \"tandem_ami\" \"x\" {{\n  owners     = [\"amazon\"]\n  name_regex = \"^amzn2-ami-hvm-2\\\\.0\\\\.2018\\\\d+-x86_64-gp2$\"\n  filter {{\n    name   = \"name\"\n    values = [\"amzn2-ami-hvm-*\"]\n  }}\n}}\noutput \"name\" {{ value = data.tandem_ami.x.name }}\n",
        provider_block()
    ));
    let applied = wd.apply();
    assert!(applied.stdout.contains("name = \"amzn2-ami-hvm-2.0.20180810-x86_64-gp2\""), "{}", applied.stdout);
}
