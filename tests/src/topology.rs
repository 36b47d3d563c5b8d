//! One of the HA topologies of terraform-examples/ (VIP, EIP or DNS name control), applied with the real
//! `terraform` against moto and run by two real tandemd processes: each in a network namespace that owns the
//! node's private IP as the example chose it, each with the config `tandem_cluster` rendered for it (adapted to
//! the bed by [`crate::node_config`]), calling AWS through a [`FaultProxy`] in front of the same moto.
//!
//! ```text
//!   root ns: terraform, moto, the proxy, the witness ── 10.213.X.1 ─┐
//!                                                                   bridge
//!   <bed>-n0: tandemd node1   eth0 10.213.X.10 + 10.0.10.11 ────────┤
//!   <bed>-n1: tandemd node2   eth0 10.213.X.11 + 10.0.11.11 ────────┘   (10.0.0.0/16 on-link, src = private IP)
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::aws_proxy::FaultProxy;
use crate::cluster::{Result, Witness};
use crate::journal;
use crate::moto::Moto;
use crate::netns::Testbed;
use crate::node_config::{Adapt, MonitorTuning, adapt};
use crate::nodes::{NodeProcess, tandemctl, tandemctl_status, wait_until};
use crate::provider::workspace_binary;
use crate::terraform::{Env, REGION, Workdir};

/// moto's image catalogue has Amazon Linux 2 but not AL2023 (the examples' default for real AWS).
pub const TFVARS: &str = "ami_name = \"amzn2-ami-hvm-*-x86_64-gp2\"\n";

/// The three topologies of the guides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Example {
    /// VIP control: the /32 route of the VIP in every route table of the VPC targets the active node's ENI.
    Vip,
    /// EIP control: the Elastic IP is associated with the active node's ENI.
    Eip,
    /// DNS name control: the A record holds the active node's private IP.
    Dns,
}

impl Example {
    pub fn dir(self) -> &'static str {
        match self {
            Example::Vip => "vip-cluster",
            Example::Eip => "eip-cluster",
            Example::Dns => "dns-cluster",
        }
    }

    /// The group resource that moves the service address (its name in the examples).
    pub fn resource(self) -> &'static str {
        match self {
            Example::Vip => "vip",
            Example::Eip => "eip",
            Example::Dns => "dns",
        }
    }
}

/// How the nodes run the rendered configs.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Heartbeat 100 ms / 500 ms, lease ttl 1 s / renew 200 ms (the rendered defaults otherwise).
    pub fast: bool,
    /// Settings of the example's AWS resource monitor (as rendered otherwise).
    pub monitor: Option<MonitorTuning>,
}

impl Tuning {
    /// Fast timing; the AWS resource monitor every 300 ms (timeout 2 s), recovering on the 2nd error in a row,
    /// `on_aws_error` as given.
    pub fn fast_with(on_aws_error: &str) -> Tuning {
        Tuning {
            fast: true,
            monitor: Some(MonitorTuning {
                interval: "300ms".into(),
                timeout: "2s".into(),
                retries: 1,
                on_aws_error: on_aws_error.into(),
            }),
        }
    }
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning::fast_with("warn")
    }
}

/// Where the example's service address points now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsState {
    /// At node i (every VIP route / the EIP / the record).
    Node(usize),
    /// Nowhere, or not consistently (listed for the assertion message).
    Other(String),
}

pub struct ExampleCluster {
    // Field order is drop order: nodes, proxy and witness first; then the bed (kills leftovers); moto last (env).
    nodes: Vec<Option<NodeProcess>>,
    pub proxy: FaultProxy,
    pub witness: Witness,
    pub example: Example,
    pub names: Vec<String>,
    pub ips: Vec<Ipv4Addr>,
    pub enis: Vec<String>,
    /// `terraform output -json`.
    pub outputs: Value,
    pub group: String,
    pub dir: tempfile::TempDir,
    pub journal: PathBuf,
    tandemd: PathBuf,
    tandemctl: PathBuf,
    pub wd: Workdir,
    pub bed: Testbed,
    pub env: Env,
}

impl ExampleCluster {
    /// Applies the example, starts both nodes and returns once the group runs on node1 with the service address
    /// pointing at it.
    pub fn apply(example: Example, tuning: Tuning) -> Result<ExampleCluster> {
        let tandemd = workspace_binary("tandemd")?;
        let tandemctl = workspace_binary("tandemctl")?;
        let bed = Testbed::new(2)?;
        let env = Env::start_moto(Moto::start_on(bed.host_addr().into())?);
        let wd = env.example_workdir(example.dir(), TFVARS);
        wd.init();
        wd.apply();
        let outputs: Value = serde_json::from_str(&wd.ok(&["output", "-json"]).stdout)?;
        let nodes = outputs["nodes"]["value"].as_object().ok_or("output `nodes` is not a map")?;
        let names: Vec<String> = nodes.keys().cloned().collect();
        let ips: Vec<Ipv4Addr> =
            nodes.values().map(|v| v.as_str().unwrap_or_default().parse()).collect::<std::result::Result<_, _>>()?;
        let enis: Vec<String> = outputs["node_enis"]["value"]
            .as_array()
            .ok_or("output `node_enis` is not a list")?
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
        if names.len() != 2 || enis.len() != 2 {
            return Err(format!("expected two nodes, the example has {names:?} / {enis:?}").into());
        }
        let vpc_cidr = vpc_cidr(&env, outputs["vpc_id"]["value"].as_str().unwrap_or_default())?;
        for (i, ip) in ips.iter().enumerate() {
            bed.add_node_address(i, &format!("{ip}/32"), &vpc_cidr)?;
        }
        let proxy = FaultProxy::start(bed.host_addr().into(), &env.moto.endpoint())?;
        let witness = Witness::start(&bed)?;
        let dir = tempfile::tempdir()?;
        let journal = dir.path().join("journal");
        std::fs::write(&journal, "")?;
        write_secrets(&wd, dir.path(), &names)?;
        let configs = outputs["node_config"]["value"].as_object().ok_or("output `node_config` is not a map")?;
        let mut group = String::new();
        for name in &names {
            let rendered = configs.get(name).and_then(Value::as_str).ok_or("no rendered config for a node")?;
            let node_dir = dir.path().join(name);
            std::fs::create_dir_all(&node_dir)?;
            std::fs::write(node_dir.join("rendered.hcl"), rendered)?;
            let adapted = adapt(
                rendered,
                &Adapt {
                    secrets: &node_dir.join("secrets"),
                    witness: witness.addr,
                    app_dir: dir.path(),
                    journal: &journal,
                    fast: tuning.fast,
                    aws_monitors: tuning.monitor.clone(),
                },
            )?;
            let config = node_dir.join("cluster.hcl");
            std::fs::write(&config, &adapted.text)?;
            let check =
                Command::new(&tandemctl).args(["config", "check"]).arg(&config).args(["--node", name]).output()?;
            if !check.status.success() {
                return Err(format!(
                    "{name}: the adapted config is refused:\n{}{}",
                    String::from_utf8_lossy(&check.stdout),
                    String::from_utf8_lossy(&check.stderr)
                )
                .into());
            }
            group = hcl::parse(&adapted.text)?
                .blocks()
                .find(|b| b.identifier() == "group")
                .and_then(|b| b.labels().first().map(|l| l.as_str().to_string()))
                .ok_or("no group in the rendered config")?;
        }
        let mut c = ExampleCluster {
            nodes: vec![None, None],
            proxy,
            witness,
            example,
            names,
            ips,
            enis,
            outputs,
            group,
            dir,
            journal,
            tandemd,
            tandemctl,
            wd,
            bed,
            env,
        };
        c.start_node(0)?;
        c.start_node(1)?;
        c.wait_active(0, Duration::from_secs(30))?;
        c.wait_aws(0, Duration::from_secs(10))?;
        Ok(c)
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.names[i]).join("tandemd.sock")
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.names[i]).join("tandemd.log")
    }

    pub fn start_node(&mut self, i: usize) -> Result<()> {
        let node_dir = self.dir.path().join(&self.names[i]);
        let mut cmd = self.bed.command(i, &self.tandemd);
        cmd.arg("--config")
            .arg(node_dir.join("cluster.hcl"))
            .args(["--node", &self.names[i]])
            .arg("--state-dir")
            .arg(node_dir.join("state"))
            .arg("--socket")
            .arg(self.socket(i))
            // The watchdog must not power the test machine off: it kills this node (the "instance") instead.
            .arg("--shutdown-command")
            .arg(format!(
                "echo \"$(date +%s%N) {} died\" >> {}; kill -KILL $PPID",
                self.names[i],
                self.journal.display()
            ))
            .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("TANDEM_LOG", "info");
        self.nodes[i] = Some(NodeProcess::spawn(cmd, self.log_path(i))?);
        let sock = self.socket(i);
        if let Err(e) = wait_until(Duration::from_secs(20), "control socket", || self.status_of(&sock).is_ok()) {
            return Err(format!("{} did not start: {e}\n{}", self.names[i], self.log(i)).into());
        }
        Ok(())
    }

    /// SIGKILL of the node's process tree ("the instance died"); returns when. The journal records the death.
    pub fn kill_node(&mut self, i: usize) -> Option<SystemTime> {
        let mut p = self.nodes[i].take()?;
        let at = p.kill();
        journal::append_died_at(&self.journal, &self.names[i], at);
        Some(at)
    }

    /// SIGTERM: the clean stop.
    pub fn stop_node(&mut self, i: usize) -> Result<()> {
        if let Some(mut p) = self.nodes[i].take() {
            p.terminate(Duration::from_secs(30))?;
        }
        Ok(())
    }

    fn status_of(&self, sock: &Path) -> Result<Value> {
        tandemctl_status(&self.tandemctl, sock)
    }

    pub fn status(&self, i: usize) -> Result<Value> {
        self.status_of(&self.socket(i))
    }

    /// Node i's role for the group, from its own status.
    pub fn role(&self, i: usize) -> Result<String> {
        let s = self.status(i)?;
        let g = s["groups"].as_array().and_then(|gs| gs.iter().find(|g| g["name"] == self.group.as_str()));
        Ok(g.and_then(|g| g["state"].as_str()).unwrap_or_default().to_string())
    }

    /// The state of node i's monitor `name` (`ok`, `unknown`, `error`, `idle`, …) and its message.
    pub fn monitor(&self, i: usize, name: &str) -> Result<(String, String)> {
        let s = self.status(i)?;
        let m = s["monitors"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .ok_or_else(|| format!("{}: no monitor {name} in status: {s}", self.names[i]))?;
        Ok((m["state"].as_str().unwrap_or_default().to_string(), m["message"].as_str().unwrap_or_default().to_string()))
    }

    /// Node i's events of `kind` (e.g. `recovery`) whose message contains `text`.
    pub fn events_matching(&self, i: usize, kind: &str, text: &str) -> Result<Vec<Value>> {
        Ok(self
            .events(i)?
            .into_iter()
            .filter(|e| e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(text)))
            .collect())
    }

    /// Runs tandemctl against node i.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Result<std::process::Output> {
        Ok(tandemctl(&self.tandemctl, &self.socket(i), args)?)
    }

    /// Node i's event log (`tandemctl events --json`), oldest first.
    pub fn events(&self, i: usize) -> Result<Vec<Value>> {
        let out = self.ctl(i, &["events", "--json", "--limit", "1000"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()?)
    }

    pub fn wait_role(&self, i: usize, role: &str, timeout: Duration) -> Result<Duration> {
        let what = format!("{} {role} for {}", self.names[i], self.group);
        wait_until(timeout, &what, || self.role(i).is_ok_and(|r| r == role))
            .map_err(|e| format!("{e}\n{}", self.logs()).into())
    }

    /// Waits until the group runs on node i only (journal) and node i says it is active.
    pub fn wait_active(&self, i: usize, timeout: Duration) -> Result<Duration> {
        let want = vec![self.names[i].clone()];
        let t = wait_until(timeout, &format!("group running on {} only", self.names[i]), || {
            self.running().is_ok_and(|r| r == want)
        })
        .map_err(|e| format!("{e}\n{}", self.logs()))?;
        self.wait_role(i, "active", timeout)?;
        Ok(t)
    }

    /// Waits until the service address points at node i.
    pub fn wait_aws(&self, i: usize, timeout: Duration) -> Result<Duration> {
        let mut last = AwsState::Other("not read yet".into());
        wait_until(timeout, &format!("{:?} state at {}", self.example, self.names[i]), || {
            last = self.aws_state().unwrap_or_else(|e| AwsState::Other(e.to_string()));
            last == AwsState::Node(i)
        })
        .map_err(|e| format!("{e}; last seen: {last:?}\n{}", self.logs()).into())
    }

    /// Nodes with an open interval in the application journal.
    pub fn running(&self) -> Result<Vec<String>> {
        let events = journal::parse(&std::fs::read_to_string(&self.journal)?)?;
        Ok(journal::intervals(&events)?.into_iter().filter(|i| i.end.is_none()).map(|i| i.node).collect())
    }

    /// How many times node i started the application.
    pub fn starts(&self, i: usize) -> Result<usize> {
        let events = journal::parse(&std::fs::read_to_string(&self.journal)?)?;
        Ok(events.iter().filter(|e| e.node == self.names[i] && e.kind == journal::Kind::Start).count())
    }

    /// Panics with the journal and the logs when two nodes ever ran the application at once.
    pub fn assert_no_overlap(&self) {
        if let Some(report) = journal::overlap_report(&self.journal) {
            panic!("{report}\n{}", self.logs());
        }
    }

    /// The last lines of node i's log.
    pub fn log(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn logs(&self) -> String {
        (0..self.names.len()).map(|i| format!("--- {} ---\n{}\n", self.names[i], self.log(i))).collect()
    }

    // ------------------------------------------------------------------------------------------ AWS state

    fn out_str(&self, key: &str) -> String {
        self.outputs[key]["value"].as_str().unwrap_or_default().to_string()
    }

    /// Where the service address points, read from moto directly (not through the proxy).
    pub fn aws_state(&self) -> Result<AwsState> {
        match self.example {
            Example::Vip => {
                let targets = self.vip_route_targets()?;
                let nodes: Vec<Option<usize>> =
                    targets.iter().map(|(_, t)| self.enis.iter().position(|e| Some(e) == t.as_ref())).collect();
                match nodes.first() {
                    Some(Some(i)) if nodes.iter().all(|n| *n == Some(*i)) => Ok(AwsState::Node(*i)),
                    _ => Ok(AwsState::Other(format!("VIP routes: {targets:?}"))),
                }
            }
            Example::Eip => {
                let eni = self.eip_eni()?;
                Ok(match self.enis.iter().position(|e| Some(e) == eni.as_ref()) {
                    Some(i) => AwsState::Node(i),
                    None => AwsState::Other(format!("EIP on {eni:?}")),
                })
            }
            Example::Dns => {
                let values = self.dns_values()?;
                let node = self.ips.iter().position(|ip| values == vec![ip.to_string()]);
                Ok(match node {
                    Some(i) => AwsState::Node(i),
                    None => AwsState::Other(format!("A record: {values:?}")),
                })
            }
        }
    }

    /// (route table, ENI of its VIP route) for every table the example routes the VIP in.
    pub fn vip_route_targets(&self) -> Result<Vec<(String, Option<String>)>> {
        let dest = format!("{}/32", self.out_str("vip"));
        let tables: Vec<String> = self.outputs["vip_route_tables"]["value"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let out = self.env.block_on(self.env.ec2.describe_route_tables().set_route_table_ids(Some(tables)).send())?;
        Ok(out
            .route_tables()
            .iter()
            .map(|t| {
                let eni = t
                    .routes()
                    .iter()
                    .find(|r| r.destination_cidr_block() == Some(dest.as_str()))
                    .and_then(|r| r.network_interface_id().map(str::to_string));
                (t.route_table_id().unwrap_or_default().to_string(), eni)
            })
            .collect())
    }

    /// The ENI the service EIP is associated with (moto says "" after a disassociation; AWS omits it).
    pub fn eip_eni(&self) -> Result<Option<String>> {
        let out = self
            .env
            .block_on(self.env.ec2.describe_addresses().allocation_ids(self.out_str("allocation_id")).send())?;
        Ok(out.addresses().first().and_then(|a| a.network_interface_id()).filter(|e| !e.is_empty()).map(str::to_string))
    }

    /// The values of the service A record (empty when it does not exist).
    pub fn dns_values(&self) -> Result<Vec<String>> {
        Ok(self
            .service_record()?
            .map(|r| r.resource_records().iter().map(|v| v.value().to_string()).collect())
            .unwrap_or_default())
    }

    /// The service A record set, if it exists.
    fn service_record(&self) -> Result<Option<aws_sdk_route53::types::ResourceRecordSet>> {
        use aws_sdk_route53::types::RrType;
        let name = self.out_str("service_name");
        let out = self.env.block_on(
            self.env
                .route53
                .list_resource_record_sets()
                .hosted_zone_id(self.out_str("zone_id"))
                .start_record_name(&name)
                .start_record_type(RrType::A)
                .send(),
        )?;
        let want = name.trim_end_matches('.');
        Ok(out
            .resource_record_sets()
            .iter()
            .find(|r| r.name().trim_end_matches('.') == want && r.r#type() == &RrType::A)
            .cloned())
    }

    // ------------------------------------------------------------------------------------------ by hand

    /// Someone re-points the VIP route of the first route table at node `to`'s ENI.
    pub fn repoint_vip_route_by_hand(&self, to: usize) -> Result<String> {
        let (table, _) = self.vip_route_targets()?.into_iter().next().ok_or("no VIP route table")?;
        self.env.block_on(
            self.env
                .ec2
                .replace_route()
                .route_table_id(&table)
                .destination_cidr_block(format!("{}/32", self.out_str("vip")))
                .network_interface_id(&self.enis[to])
                .send(),
        )?;
        Ok(table)
    }

    /// Someone disassociates the service EIP.
    pub fn disassociate_eip_by_hand(&self) -> Result<()> {
        let out = self
            .env
            .block_on(self.env.ec2.describe_addresses().allocation_ids(self.out_str("allocation_id")).send())?;
        let assoc = out.addresses().first().and_then(|a| a.association_id()).ok_or("the EIP is not associated")?;
        self.env.block_on(self.env.ec2.disassociate_address().association_id(assoc).send())?;
        Ok(())
    }

    /// Someone deletes the service A record.
    pub fn delete_record_by_hand(&self) -> Result<()> {
        use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch};
        let set = self.service_record()?.ok_or("no A record to delete")?;
        let change = Change::builder().action(ChangeAction::Delete).resource_record_set(set).build()?;
        self.env.block_on(
            self.env
                .route53
                .change_resource_record_sets()
                .hosted_zone_id(self.out_str("zone_id"))
                .change_batch(ChangeBatch::builder().changes(change).build()?)
                .send(),
        )?;
        Ok(())
    }

    // ------------------------------------------------------------------------------------------ the end

    /// Stops both nodes cleanly, then `terraform destroy`; fails if anything the example made is left.
    pub fn destroy(mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.stop_node(i)?;
        }
        self.assert_no_overlap();
        self.wd.destroy();
        let vpcs = self.env.non_default_vpcs();
        if !vpcs.is_empty() {
            return Err(format!("VPCs left after destroy: {vpcs:?}").into());
        }
        let addrs = self.env.block_on(self.env.ec2.describe_addresses().send())?;
        if !addrs.addresses().is_empty() {
            return Err(format!("addresses left after destroy: {:?}", addrs.addresses()).into());
        }
        let zones = self.env.block_on(self.env.route53.list_hosted_zones().send())?;
        if !zones.hosted_zones().is_empty() {
            return Err(format!("zones left after destroy: {:?}", zones.hosted_zones()).into());
        }
        let tables = self.env.block_on(self.env.dynamodb.list_tables().send())?;
        if !tables.table_names().is_empty() {
            return Err(format!("tables left after destroy: {:?}", tables.table_names()).into());
        }
        Ok(())
    }
}

fn vpc_cidr(env: &Env, vpc: &str) -> Result<String> {
    let out = env.block_on(env.ec2.describe_vpcs().vpc_ids(vpc).send())?;
    Ok(out.vpcs().first().and_then(|v| v.cidr_block()).ok_or("the example's VPC has no CIDR")?.to_string())
}

/// The secrets tandem_cluster generated, from the state, as user_data would write them on the node (0600).
fn write_secrets(wd: &Workdir, dir: &Path, names: &[String]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let state: Value = serde_json::from_str(&wd.ok(&["show", "-json"]).stdout)?;
    let cluster = find_cluster(&state["values"]["root_module"]).ok_or("no tandem_cluster in the state")?;
    for name in names {
        let secrets = dir.join(name).join("secrets");
        std::fs::create_dir_all(&secrets)?;
        for (file, value) in [
            ("heartbeat.key", &cluster["heartbeat_key"]),
            ("ca.crt", &cluster["ca_cert_pem"]),
            ("node.crt", &cluster["node_cert_pem"][name]),
            ("node.key", &cluster["node_key_pem"][name]),
        ] {
            let text = value.as_str().ok_or_else(|| format!("tandem_cluster has no {file} for {name}"))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(secrets.join(file))?
                .write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn find_cluster(module: &Value) -> Option<&Value> {
    let here = module["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["type"] == "tandem_cluster"))
        .map(|r| &r["values"]);
    here.or_else(|| module["child_modules"].as_array().and_then(|cs| cs.iter().find_map(find_cluster)))
}
