//! Running the real `terraform` CLI against the local AWS endpoint, in throw-away working directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

use super::moto::Moto;
use super::provider::{SOURCE, install_mirror};

/// One test's world: its own moto server, a provider mirror, a CLI config, an EC2 client for checks.
pub struct Env {
    pub moto: Moto,
    pub root: tempfile::TempDir,
    cli_config: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub ec2: aws_sdk_ec2::Client,
    pub route53: aws_sdk_route53::Client,
    pub iam: aws_sdk_iam::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

pub const REGION: &str = "us-east-1";

impl Env {
    pub fn start() -> Env {
        Self::start_moto(Moto::start().expect("moto starts"))
    }

    pub fn start_moto(moto: Moto) -> Env {
        let root = tempfile::tempdir().expect("temp dir");
        let mirror = install_mirror(&root.path().join("mirror")).expect("provider mirror");
        let cli_config = root.path().join("terraformrc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/{SOURCE}\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/{SOURCE}\"]\n  }}\n}}\n",
                mirror.display()
            ),
        )
        .expect("write CLI config");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let conf = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(REGION))
                .endpoint_url(moto.endpoint())
                .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
                .load(),
        );
        Env {
            moto,
            root,
            cli_config,
            rt,
            ec2: aws_sdk_ec2::Client::new(&conf),
            route53: aws_sdk_route53::Client::new(&conf),
            iam: aws_sdk_iam::Client::new(&conf),
            dynamodb: aws_sdk_dynamodb::Client::new(&conf),
        }
    }

    /// A fresh working directory named `name` with `main.tf` = `config`.
    pub fn workdir(&self, name: &str, config: &str) -> Workdir {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).expect("create workdir");
        let wd = Workdir { dir, env: self.tf_env() };
        wd.write(config);
        wd
    }

    /// A working directory holding a copy of `terraform-examples/<example>` (and the shared modules it
    /// sources by relative path), with `tfvars` written to `test.auto.tfvars`.
    pub fn example_workdir(&self, example: &str, tfvars: &str) -> Workdir {
        let src = super::workspace_root().join("terraform-examples");
        let tree = self.root.path().join(format!("examples-{example}"));
        copy_tree(&src.join(example), &tree.join(example)).expect("copy example");
        copy_tree(&src.join("modules"), &tree.join("modules")).expect("copy modules");
        let dir = tree.join(example);
        std::fs::write(dir.join("test.auto.tfvars"), tfvars).expect("write tfvars");
        Workdir { dir, env: self.tf_env() }
    }

    /// The environment every terraform run gets: the local endpoint, test credentials, no IMDS.
    pub fn tf_env(&self) -> Vec<(String, String)> {
        [
            ("TF_CLI_CONFIG_FILE", self.cli_config.display().to_string()),
            ("TF_IN_AUTOMATION", "1".into()),
            ("CHECKPOINT_DISABLE", "1".into()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            // Never reach for an instance metadata service on a test machine.
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            // moto answers unimplemented calls with 500s: fail fast instead of retrying.
            ("AWS_MAX_ATTEMPTS", "2".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// VPCs that are not moto's default VPC.
    pub fn non_default_vpcs(&self) -> Vec<String> {
        self.block_on(async {
            let out = self.ec2.describe_vpcs().send().await.expect("DescribeVpcs");
            out.vpcs()
                .iter()
                .filter(|v| v.is_default() != Some(true))
                .filter_map(|v| v.vpc_id().map(str::to_string))
                .collect()
        })
    }
}

pub struct Workdir {
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

/// The result of a terraform command.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Workdir {
    pub fn write(&self, config: &str) {
        std::fs::write(self.dir.join("main.tf"), config).expect("write main.tf");
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), String::new()));
    }

    /// Runs `terraform ARGS`, whatever its exit code.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("terraform");
        cmd.args(args).current_dir(&self.dir).env_remove("TF_LOG");
        for (k, v) in &self.env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let Output { status, stdout, stderr } = cmd.output().expect("terraform runs (is it on PATH?)");
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into(),
            stderr: String::from_utf8_lossy(&stderr).into(),
        }
    }

    /// Runs `terraform ARGS` and panics with its output unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, Some(0), "terraform {} failed in {}:\n{}", args.join(" "), self.dir.display(), r.output());
        r
    }

    pub fn init(&self) -> Run {
        self.ok(&["init", "-input=false", "-no-color"])
    }

    pub fn apply(&self) -> Run {
        self.ok(&["apply", "-auto-approve", "-input=false", "-no-color"])
    }

    pub fn destroy(&self) -> Run {
        self.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"])
    }

    /// `plan -detailed-exitcode`: 0 = no changes, 2 = changes, 1 = error.
    pub fn plan_code(&self, extra: &[&str]) -> Run {
        let mut args = vec!["plan", "-detailed-exitcode", "-input=false", "-no-color"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The plugin-testing discipline after each apply: a refresh-less and a refreshing plan are both empty.
    pub fn assert_plans_empty(&self) {
        for extra in [&["-refresh=false"][..], &[][..]] {
            let r = self.plan_code(extra);
            assert_eq!(r.code, Some(0), "plan {extra:?} after apply is not empty:\n{}", r.output());
        }
    }

    /// The actions planned per resource address, from `terraform show -json` of a saved plan.
    pub fn planned_actions(&self) -> Vec<(String, Vec<String>)> {
        self.ok(&["plan", "-out=tfplan", "-input=false", "-no-color"]);
        let shown = self.ok(&["show", "-json", "tfplan"]);
        let plan: Json = serde_json::from_str(&shown.stdout).expect("plan JSON");
        plan["resource_changes"]
            .as_array()
            .map(|changes| {
                changes
                    .iter()
                    .map(|c| {
                        let actions = c["change"]["actions"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                            .unwrap_or_default();
                        (c["address"].as_str().unwrap_or_default().to_string(), actions)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The attribute values of `address` in the current state.
    pub fn state_of(&self, address: &str) -> Json {
        let shown = self.ok(&["show", "-json", "-no-color"]);
        let state: Json = serde_json::from_str(&shown.stdout).expect("state JSON");
        find_resource(&state["values"]["root_module"], address)
            .unwrap_or_else(|| panic!("{address} not in state:\n{}", shown.stdout))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        // Leftovers of a local run of the example are not part of it.
        if name == ".terraform" || name.to_string_lossy().starts_with("terraform.tfstate") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

fn find_resource(module: &Json, address: &str) -> Option<Json> {
    module["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["address"] == address))
        .map(|r| r["values"].clone())
        .or_else(|| module["child_modules"].as_array().and_then(|ms| ms.iter().find_map(|m| find_resource(m, address))))
}

/// The provider block every test config starts with.
pub fn provider_block() -> &'static str {
    r#"terraform {
  required_providers {
    tandem = { source = "tandem/tandem", version = "0.1.0" }
  }
}

provider "tandem" {}
"#
}
