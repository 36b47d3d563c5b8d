//! Acceptance: tandem_ebs_volume and tandem_volume_attachment against moto through the real terraform CLI.

use tandem_tests::terraform::provider_block;
use tandem_tests::{Env, Workdir};

const NETWORK: &str = r#"
data "tandem_ami" "amzn2" {
  owners      = ["amazon"]
  most_recent = true
  filter {
    name   = "name"
    values = ["amzn2-ami-hvm-*-x86_64-gp2"]
  }
}

resource "tandem_vpc" "test" {
  cidr_block = "10.95.0.0/16"
}

resource "tandem_subnet" "a" {
  vpc_id            = tandem_vpc.test.id
  cidr_block        = "10.95.1.0/24"
  availability_zone = "us-east-1a"
}

resource "tandem_instance" "node" {
  ami           = data.tandem_ami.amzn2.id
  instance_type = "t3.micro"
  subnet_id     = tandem_subnet.a.id
}
"#;

fn config(size: u32, iops: u32, throughput: u32, tag: &str, attached: bool) -> String {
    let attachment = if attached {
        r#"
resource "tandem_volume_attachment" "mirror" {
  device_name = "/dev/sdf"
  volume_id   = tandem_ebs_volume.mirror.id
  instance_id = tandem_instance.node.id
}
"#
    } else {
        ""
    };
    format!(
        r#"{}{NETWORK}
resource "tandem_ebs_volume" "mirror" {{
  availability_zone = tandem_subnet.a.availability_zone
  size              = {size}
  iops              = {iops}
  throughput        = {throughput}
  tags              = {{ Name = "{tag}" }}
}}
{attachment}"#,
        provider_block()
    )
}

fn volume(env: &Env, id: &str) -> Option<aws_sdk_ec2::types::Volume> {
    env.block_on(async { env.ec2.describe_volumes().volume_ids(id).send().await.ok()?.volumes().first().cloned() })
}

/// Volumes carrying a Name tag (the test's own; root volumes have none).
fn tagged_volumes(env: &Env) -> Vec<String> {
    env.block_on(async {
        let out = env.ec2.describe_volumes().send().await.expect("DescribeVolumes");
        out.volumes()
            .iter()
            .filter(|v| v.tags().iter().any(|t| t.key() == Some("Name")))
            .filter_map(|v| v.volume_id().map(str::to_string))
            .collect()
    })
}

fn attachment_of(env: &Env, volume_id: &str) -> Option<(String, String)> {
    let v = volume(env, volume_id)?;
    let a = v.attachments().first()?;
    Some((a.instance_id()?.to_string(), a.device()?.to_string()))
}

fn changes(wd: &Workdir) -> Vec<(String, Vec<String>)> {
    let mut c: Vec<_> = wd.planned_actions().into_iter().filter(|(_, a)| a != &["no-op".to_string()]).collect();
    c.sort();
    c
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn points_at(out: &str, attr: &str) -> bool {
    out.lines().any(|l| {
        l.split_once(": ").is_some_and(|(n, rest)| {
            n.trim().parse::<u32>().is_ok()
                && rest.trim_start().strip_prefix(attr).is_some_and(|r| r.starts_with([' ', '=']))
        })
    })
}

#[test]
fn volume_and_attachment_basic_import_update_replace_disappears_destroy() {
    let env = Env::start();
    let wd = env.workdir("ebs", &config(10, 3000, 125, "mirror-a", true));
    wd.init();
    wd.apply();
    wd.assert_plans_empty();

    let vol = wd.state_of("tandem_ebs_volume.mirror");
    let vol_id = s(&vol["id"]);
    assert!(vol_id.starts_with("vol-"), "{vol}");
    assert_eq!((vol["type"].as_str(), vol["encrypted"].as_bool()), (Some("gp3"), Some(true)), "{vol}");
    let att = wd.state_of("tandem_volume_attachment.mirror");
    let node = s(&wd.state_of("tandem_instance.node")["id"]);
    assert_eq!(s(&att["id"]), format!("{vol_id}:{node}:/dev/sdf"));
    assert_eq!(attachment_of(&env, &vol_id), Some((node.clone(), "/dev/sdf".to_string())));
    let aws = volume(&env, &vol_id).expect("volume");
    assert_eq!((aws.size(), aws.encrypted(), aws.iops()), (Some(10), Some(true), Some(3000)));

    // Import both into a fresh directory; the attachment by the AWS provider's DEVICE:VOLUME:INSTANCE too.
    let imp = env.workdir(
        "ebs-import",
        &format!(
            r#"{}
resource "tandem_ebs_volume" "mirror" {{
  availability_zone = "us-east-1a"
  size              = 10
  iops              = 3000
  throughput        = 125
  tags              = {{ Name = "mirror-a" }}
}}

resource "tandem_volume_attachment" "mirror" {{
  device_name = "/dev/sdf"
  volume_id   = "{vol_id}"
  instance_id = "{node}"
}}
"#,
            provider_block()
        ),
    );
    imp.init();
    imp.ok(&["import", "-no-color", "tandem_ebs_volume.mirror", &vol_id]);
    imp.ok(&["import", "-no-color", "tandem_volume_attachment.mirror", &format!("/dev/sdf:{vol_id}:{node}")]);
    assert_eq!(imp.state_of("tandem_ebs_volume.mirror"), vol);
    assert_eq!(imp.state_of("tandem_volume_attachment.mirror"), att);
    imp.assert_plans_empty();

    // In place: grow, more IOPS and throughput, new tags. The attachment stays.
    wd.write(&config(20, 4000, 250, "mirror-a2", true));
    assert_eq!(changes(&wd), vec![("tandem_ebs_volume.mirror".to_string(), vec!["update".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    let aws = volume(&env, &vol_id).expect("volume");
    assert_eq!((aws.size(), aws.iops(), aws.throughput()), (Some(20), Some(4000), Some(250)));
    assert_eq!(s(&wd.state_of("tandem_ebs_volume.mirror")["id"]), vol_id);

    // Disappears: detached out of band, planned again, re-attached.
    env.block_on(async {
        env.ec2
            .detach_volume()
            .volume_id(&vol_id)
            .instance_id(&node)
            .device("/dev/sdf")
            .send()
            .await
            .expect("detach out of band")
    });
    assert_eq!(changes(&wd), vec![("tandem_volume_attachment.mirror".to_string(), vec!["create".to_string()])]);
    wd.apply();
    wd.assert_plans_empty();
    assert_eq!(attachment_of(&env, &vol_id), Some((node.clone(), "/dev/sdf".to_string())));

    // EBS cannot shrink: a smaller size replaces the volume, and with it the attachment.
    wd.write(&config(15, 4000, 250, "mirror-a2", true));
    assert_eq!(
        changes(&wd),
        vec![
            ("tandem_ebs_volume.mirror".to_string(), vec!["delete".to_string(), "create".to_string()]),
            ("tandem_volume_attachment.mirror".to_string(), vec!["delete".to_string(), "create".to_string()]),
        ]
    );
    wd.apply();
    wd.assert_plans_empty();
    let new_vol = s(&wd.state_of("tandem_ebs_volume.mirror")["id"]);
    assert_ne!(new_vol, vol_id);
    assert!(volume(&env, &vol_id).is_none(), "the old volume is deleted");
    assert_eq!(attachment_of(&env, &new_vol), Some((node.clone(), "/dev/sdf".to_string())));

    // The volume itself disappears (detached and deleted out of band): both are planned again.
    env.block_on(async {
        env.ec2.detach_volume().volume_id(&new_vol).instance_id(&node).device("/dev/sdf").send().await.expect("detach");
        env.ec2.delete_volume().volume_id(&new_vol).send().await.expect("delete out of band");
    });
    assert_eq!(
        changes(&wd),
        vec![
            ("tandem_ebs_volume.mirror".to_string(), vec!["create".to_string()]),
            ("tandem_volume_attachment.mirror".to_string(), vec!["create".to_string()]),
        ]
    );
    wd.apply();
    wd.assert_plans_empty();

    wd.destroy();
    assert!(tagged_volumes(&env).is_empty(), "destroy deletes the volume: {:?}", tagged_volumes(&env));
}

#[test]
fn bad_volumes_and_cross_zone_attachments_are_diagnostics_and_create_nothing() {
    let env = Env::start();
    // An instance in us-east-1a and a volume in us-east-1b, made before the plan so the check runs at plan time.
    let (instance, volume_b) = env.block_on(async {
        let vpc = env.ec2.create_vpc().cidr_block("10.96.0.0/16").send().await.expect("CreateVpc");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc").to_string();
        let subnet = env
            .ec2
            .create_subnet()
            .vpc_id(vpc_id)
            .cidr_block("10.96.1.0/24")
            .availability_zone("us-east-1a")
            .send()
            .await
            .expect("CreateSubnet");
        let subnet_id = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet").to_string();
        let run = env
            .ec2
            .run_instances()
            .image_id("ami-04681a1dbd79675a5")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet_id)
            .send()
            .await
            .expect("RunInstances");
        let instance = run.instances()[0].instance_id().expect("instance").to_string();
        let vol = env.ec2.create_volume().availability_zone("us-east-1b").size(1).send().await.expect("CreateVolume");
        (instance, vol.volume_id().expect("volume").to_string())
    });
    let attach = format!(
        "{}\nresource \"tandem_volume_attachment\" \"x\" {{\n  device_name = \"/dev/sdf\"\n  volume_id   = \"{volume_b}\"\n  instance_id = \"{instance}\"\n}}\n",
        provider_block()
    );
    let wd = env.workdir("ebs-bad", &attach);
    wd.init();
    let r = wd.plan_code(&[]);
    let out = r.output();
    assert_eq!(r.code, Some(1), "{out}");
    assert!(out.contains("TDM-EC2-170") && out.contains("us-east-1b") && out.contains("us-east-1a"), "{out}");
    assert!(points_at(&out, "instance_id"), "{out}");

    let vol = |az: &str, kind: &str, extra: &str| {
        format!(
            "{}\nresource \"tandem_ebs_volume\" \"x\" {{\n  availability_zone = \"{az}\"\n  size = 10\n  type = \"{kind}\"\n{extra}}}\n",
            provider_block()
        )
    };
    wd.write(&vol("us-east-1z", "gp3", ""));
    let out = wd.plan_code(&[]).output();
    assert!(out.contains("TDM-EC2-165") && points_at(&out, "availability_zone"), "{out}");
    wd.write(&vol("us-east-1a", "gp2", "  iops = 3000\n"));
    let out = wd.plan_code(&[]).output();
    assert!(out.contains("TDM-EC2-166") && points_at(&out, "iops"), "{out}");
    wd.write(&vol("us-east-1a", "gp9", ""));
    let out = wd.run(&["validate", "-no-color"]).output();
    assert!(out.contains("TDM-PRV-006") && points_at(&out, "type"), "{out}");

    let r = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(r.code, Some(1));
    assert!(tagged_volumes(&env).is_empty());
    let volumes =
        env.block_on(async { env.ec2.describe_volumes().send().await.expect("DescribeVolumes").volumes().len() });
    assert_eq!(volumes, 2, "only the instance's root volume and the test's own volume exist");
    let attached = env.block_on(async {
        let out = env.ec2.describe_volumes().volume_ids(&volume_b).send().await.expect("DescribeVolumes");
        out.volumes()[0].attachments().len()
    });
    assert_eq!(attached, 0, "nothing was attached");
}
