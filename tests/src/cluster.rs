//! A tandem cluster for fault tests: N tandemd processes in the test bed's namespaces, moto (the lease table)
//! and a TCP witness on the host side, and an `exec` resource whose start/stop lines go to one shared journal,
//! so [`crate::journal`] can prove that no two nodes ever ran the group at the same time.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::app_cgroups::AppCgroups;
use crate::journal;
use crate::moto::Moto;
use crate::netns::Testbed;
use crate::nodes::{NodeProcess, tandemctl, tandemctl_status, wait_until};
use crate::provider::workspace_binary;

pub const GROUP: &str = "g";
pub const TABLE: &str = "faults-leases";
pub const REGION: &str = "us-east-1";
pub const HEARTBEAT_PORT: u16 = 7400;

/// Knobs of a fault-test cluster (the defaults are the issue's fast settings).
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub interval: &'static str,
    pub timeout: &'static str,
    pub ttl: &'static str,
    pub renew: &'static str,
    pub witness: bool,
    pub failback: &'static str,
    /// Extra seconds the exec start sleeps (a slow application).
    pub start_delay: &'static str,
    /// Run this node in its own time namespace with CLOCK_MONOTONIC/BOOTTIME shifted by this many seconds.
    pub clock_offset: Option<(usize, i64)>,
    /// Extra HCL appended to the config; `DIR` is replaced by the cluster's directory (e.g. a monitor).
    pub extra: &'static str,
    /// Bytes of a `mirror_disk "data"` in the group (0: none): each node's data device is a sparse file
    /// `DIR/nI-data.img` of this size, its metadata `DIR/nI-meta.img`; the app depends on it and a `mirror`
    /// monitor watches it.
    pub mirror_bytes: u64,
    /// The app as on a real node: a process outside tandemd's tree in a cgroup per node (exec `cgroup`), and a
    /// fencer (`tandemd fencer`) per node, started apart from tandemd as its systemd unit would be.
    pub fenced_app: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 2,
            interval: "100ms",
            timeout: "500ms",
            ttl: "1s",
            renew: "200ms",
            witness: true,
            failback: "manual",
            start_delay: "0",
            clock_offset: None,
            extra: "",
            mirror_bytes: 0,
            fenced_app: false,
        }
    }
}

/// A TCP listener on the host side that accepts and closes: the NP-resolution witness.
pub struct Witness {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Witness {
    pub fn start(bed: &Testbed) -> std::io::Result<Witness> {
        let listener = TcpListener::bind((bed.host_addr(), 0))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Witness { addr, stop })
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub struct Cluster {
    // Field order is drop order: nodes first, then the fencers and the apps, then the bed (which kills
    // leftovers), then moto.
    nodes: Vec<Option<NodeProcess>>,
    fencers: Vec<Option<NodeProcess>>,
    pub apps: Option<AppCgroups>,
    pub bed: Testbed,
    pub moto: Moto,
    pub witness: Option<Witness>,
    pub dir: tempfile::TempDir,
    pub journal: PathBuf,
    tandemd: PathBuf,
    tandemctl: PathBuf,
    moto_port: u16,
    clock_offset: Option<(usize, i64)>,
}

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn name(i: usize) -> String {
    format!("n{i}")
}

impl Cluster {
    /// Builds the bed, starts moto and the witness, creates the lease table and starts every node; returns once
    /// the group runs on exactly one node.
    pub fn start(opts: Options) -> Result<Cluster> {
        let tandemd = workspace_binary("tandemd")?;
        let tandemctl = workspace_binary("tandemctl")?;
        let bed = Testbed::new(opts.nodes)?;
        let moto = Moto::start_on(bed.host_addr().into())?;
        let moto_port: u16 = moto.endpoint().rsplit(':').next().and_then(|p| p.parse().ok()).ok_or("moto port")?;
        create_table(&moto.endpoint())?;
        let witness = if opts.witness { Some(Witness::start(&bed)?) } else { None };
        let dir = tempfile::tempdir()?;
        let journal = dir.path().join("journal");
        std::fs::write(&journal, "")?;
        let key = dir.path().join("heartbeat.key");
        std::fs::write(&key, b"fault-test heartbeat key, 32 byt")?;
        write_certs(dir.path(), &bed, opts.nodes)?;
        if opts.mirror_bytes > 0 {
            for i in 0..opts.nodes {
                std::fs::File::create(dir.path().join(format!("{}-data.img", name(i))))?.set_len(opts.mirror_bytes)?;
            }
        }
        let apps = if opts.fenced_app { Some(AppCgroups::create(opts.nodes)?) } else { None };
        let text = render_config(&opts, &bed, witness.as_ref(), &journal);
        // One config per node, as tandem_cluster renders them: only the node's own certificate paths differ.
        for i in 0..opts.nodes {
            let secrets = format!(
                "secrets {{\n  heartbeat_key_file = \"{}\"\n  ca_cert_file       = \"{}\"\n  node_cert_file     = \"{}\"\n  node_key_file      = \"{}\"\n}}\n",
                key.display(),
                dir.path().join("ca.crt").display(),
                dir.path().join(format!("{}.crt", name(i))).display(),
                dir.path().join(format!("{}.key", name(i))).display(),
            );
            let mut node_text = text.replace(SECRETS_MARK, &secrets);
            if let Some(a) = &apps {
                node_text = node_text.replace(APP_CGROUP_MARK, &a.dir(i).display().to_string());
            }
            std::fs::write(dir.path().join(format!("cluster-{}.hcl", name(i))), node_text)?;
        }
        let mut c = Cluster {
            nodes: (0..opts.nodes).map(|_| None).collect(),
            fencers: (0..opts.nodes).map(|_| None).collect(),
            apps,
            bed,
            moto,
            witness,
            dir,
            journal,
            tandemd,
            tandemctl,
            moto_port,
            clock_offset: opts.clock_offset,
        };
        for i in 0..opts.nodes {
            c.start_node(i)?;
        }
        if let Err(e) = c.wait_running_somewhere(Duration::from_secs(30)) {
            let logs: String = (0..opts.nodes).map(|i| format!("--- {} ---\n{}\n", name(i), c.log(i))).collect();
            return Err(format!("{e}\n{logs}").into());
        }
        Ok(c)
    }

    /// The directory of the cluster's files (configs, journal, disk images).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node i's mirror data device (a file) when `mirror_bytes` > 0.
    pub fn mirror_data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}-data.img", name(i)))
    }

    /// The NBD export of mirror disk "data" while node i is its primary.
    pub fn mirror_export(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("state-{}", name(i))).join(GROUP).join("data.nbd")
    }

    /// The Outdated mark of mirror disk `resource` in the group's lease item: (node, generation), if any.
    pub fn outdated_mark(&self, resource: &str) -> Result<Option<(String, u64)>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let store =
                tandem_runtime::membership::lease::LeaseStore::new(dynamodb(&self.moto.endpoint()).await, TABLE);
            let record = store.read(GROUP).await.map_err(|e| format!("[{}] {e}", e.code()))?;
            Ok(record.and_then(|r| r.outdated_mark(resource).map(|m| (m.node.clone(), m.generation))))
        })
    }

    /// Deletes the group's lease item behind the cluster's back (an operator, a table restore). Returns the
    /// token the item held.
    pub fn delete_lease_item(&self) -> Result<u64> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let client = dynamodb(&self.moto.endpoint()).await;
            let store = tandem_runtime::membership::lease::LeaseStore::new(client.clone(), TABLE);
            let token = store.read(GROUP).await.map_err(|e| format!("[{}] {e}", e.code()))?.map_or(0, |r| r.token);
            client
                .delete_item()
                .table_name(TABLE)
                .key("group", aws_sdk_dynamodb::types::AttributeValue::S(GROUP.into()))
                .send()
                .await?;
            Ok(token)
        })
    }

    /// The group's lease token as the item holds it now (0: no item).
    pub fn lease_token(&self) -> Result<u64> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let store =
                tandem_runtime::membership::lease::LeaseStore::new(dynamodb(&self.moto.endpoint()).await, TABLE);
            Ok(store.read(GROUP).await.map_err(|e| format!("[{}] {e}", e.code()))?.map_or(0, |r| r.token))
        })
    }

    /// `tandemctl mirror status data --json` on node i: the disk's object.
    pub fn mirror_status(&self, i: usize) -> Result<Value> {
        let out = self.ctl(i, &["mirror", "status", "data", "--json"])?;
        if !out.status.success() {
            return Err(format!("mirror status on {}: {}", name(i), String::from_utf8_lossy(&out.stderr)).into());
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        v["disks"].get(0).cloned().ok_or_else(|| format!("no mirror disk in {v}").into())
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.sock", name(i)))
    }

    pub fn moto_port(&self) -> u16 {
        self.moto_port
    }

    pub fn witness_port(&self) -> Option<u16> {
        self.witness.as_ref().map(|w| w.addr.port())
    }

    pub fn start_node(&mut self, i: usize) -> Result<()> {
        let mut cmd = match self.clock_offset {
            Some((node, secs)) if node == i => {
                // A time namespace applies to children of the unsharing process only: hence --fork.
                let mut c = self.bed.command(i, Path::new("unshare"));
                c.args(["--time", "--fork", &format!("--monotonic={secs}"), &format!("--boottime={secs}"), "--"])
                    .arg(&self.tandemd);
                c
            }
            _ => self.bed.command(i, &self.tandemd),
        };
        let state = self.dir.path().join(format!("state-{}", name(i)));
        cmd.arg("--config")
            .arg(self.dir.path().join(format!("cluster-{}.hcl", name(i))))
            .args(["--node", &name(i)])
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(self.socket(i))
            // The watchdog must not power the test machine off: it kills this node (the "instance") instead,
            // and the journal records the death, which ends the node's active interval.
            .arg("--shutdown-command")
            .arg(format!("echo \"$(date +%s%N) {} died\" >> {}; kill -KILL $PPID", name(i), self.journal.display()))
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("TANDEM_LOG", "info");
        if self.apps.is_some() {
            self.start_fencer(i)?;
            cmd.arg("--fencer").arg(self.fencer_socket(i));
        }
        let log = self.dir.path().join(format!("{}.log", name(i)));
        self.nodes[i] = Some(NodeProcess::spawn(cmd, log)?);
        let sock = self.socket(i);
        if let Err(e) = wait_until(Duration::from_secs(20), "control socket", || self.status_of(&sock).is_ok()) {
            return Err(format!("{} did not start: {e}\n{}", name(i), self.log(i)).into());
        }
        Ok(())
    }

    /// SIGKILL of the node's whole process tree ("the instance died"): tandemd, its fencer and its app; the
    /// journal records the death.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(a) = &self.apps {
            a.kill(i);
        }
        if let Some(mut f) = self.fencers[i].take() {
            f.kill();
        }
        if let Some(mut p) = self.nodes[i].take() {
            let at = p.kill();
            journal::append_died_at(&self.journal, &name(i), at);
        }
    }

    /// SIGKILL of tandemd alone (a crash, an OOM kill): its fencer and the app it started live on.
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.kill();
        }
    }

    /// The fencer's socket on node i.
    pub fn fencer_socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("fencer-{}.sock", name(i)))
    }

    /// The fencer's log on node i.
    pub fn fencer_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("fencer-{}.log", name(i)))).unwrap_or_default()
    }

    /// Starts node i's fencer unless it runs (as systemd would: its own unit, outside tandemd's process tree).
    fn start_fencer(&mut self, i: usize) -> Result<()> {
        if self.fencers[i].as_mut().is_some_and(NodeProcess::is_running) {
            return Ok(());
        }
        let mut cmd = self.bed.command(i, &self.tandemd);
        cmd.arg("fencer").arg("--socket").arg(self.fencer_socket(i));
        let log = self.dir.path().join(format!("fencer-{}.log", name(i)));
        self.fencers[i] = Some(NodeProcess::spawn(cmd, log)?);
        let sock = self.fencer_socket(i);
        wait_until(Duration::from_secs(10), "fencer socket", || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        })?;
        Ok(())
    }

    /// SIGTERM: the clean stop (groups move away first).
    pub fn stop_node(&mut self, i: usize) -> Result<()> {
        if let Some(mut p) = self.nodes[i].take() {
            p.terminate(Duration::from_secs(30))?;
        }
        Ok(())
    }

    pub fn process(&mut self, i: usize) -> Option<&mut NodeProcess> {
        self.nodes[i].as_mut()
    }

    fn status_of(&self, sock: &Path) -> Result<Value> {
        tandemctl_status(&self.tandemctl, sock)
    }

    pub fn status(&self, i: usize) -> Result<Value> {
        self.status_of(&self.socket(i))
    }

    /// Runs tandemctl against node i.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Result<std::process::Output> {
        Ok(tandemctl(&self.tandemctl, &self.socket(i), args)?)
    }

    /// Nodes with an open interval in the journal (started, not stopped or died).
    pub fn running(&self) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(&self.journal)?;
        let events = journal::parse(&text)?;
        let ivs = journal::intervals(&events)?;
        Ok(ivs.into_iter().filter(|i| i.end.is_none()).map(|i| i.node).collect())
    }

    /// How many times node i started the group.
    pub fn starts(&self, i: usize) -> Result<usize> {
        let text = std::fs::read_to_string(&self.journal)?;
        Ok(journal::parse(&text)?.iter().filter(|e| e.node == name(i) && e.kind == journal::Kind::Start).count())
    }

    pub fn wait_running_on(&self, i: usize, timeout: Duration) -> Result<Duration> {
        let want = vec![name(i)];
        Ok(wait_until(timeout, &format!("group running on {} only", name(i)), || {
            self.running().is_ok_and(|r| r == want)
        })?)
    }

    pub fn wait_running_somewhere(&self, timeout: Duration) -> Result<String> {
        wait_until(timeout, "group running on one node", || self.running().is_ok_and(|r| r.len() == 1))?;
        Ok(self.running()?.remove(0))
    }

    pub fn wait_running_nowhere(&self, timeout: Duration) -> Result<Duration> {
        Ok(wait_until(timeout, "group running nowhere", || self.running().is_ok_and(|r| r.is_empty()))?)
    }

    /// Index of the node that runs the group now.
    pub fn active(&self) -> Result<usize> {
        let r = self.running()?;
        match r.as_slice() {
            [one] => Ok(one.trim_start_matches('n').parse()?),
            other => Err(format!("expected one active node, journal says {other:?}").into()),
        }
    }

    /// Eight busy loops in node i's namespace (killed with the returned process): CPU starvation.
    pub fn cpu_hog(&self, i: usize) -> Result<NodeProcess> {
        let mut hog = self.bed.command(i, Path::new("/bin/sh"));
        hog.args(["-c", "for i in 1 2 3 4 5 6 7 8; do (while :; do :; done) & done; wait"]);
        Ok(NodeProcess::spawn(hog, self.dir.path().join(format!("hog-{}.log", name(i))))?)
    }

    /// Node i's role for the group, from its own status.
    pub fn role(&self, i: usize) -> Result<String> {
        let s = self.status(i)?;
        Ok(s["groups"][0]["state"].as_str().unwrap_or_default().to_string())
    }

    /// Panics with the journal and the nodes' logs when two nodes ever ran the group at once.
    pub fn assert_no_overlap(&self) {
        if let Some(report) = journal::overlap_report(&self.journal) {
            let logs: String = (0..self.nodes.len())
                .map(|i| {
                    let p = self.dir.path().join(format!("{}.log", name(i)));
                    format!("--- {} ---\n{}\n", name(i), tail(&p, 40))
                })
                .collect();
            panic!("{report}\n{logs}");
        }
    }

    /// The last lines of node i's log (for assertion messages).
    /// Whether node i's whole log (every start of it) contains `needle`.
    pub fn log_contains(&self, i: usize, needle: &str) -> bool {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", name(i)))).is_ok_and(|t| t.contains(needle))
    }

    pub fn log(&self, i: usize) -> String {
        tail(&self.dir.path().join(format!("{}.log", name(i))), 60)
    }
}

fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = std::fs::File::open(path) else { return String::new() };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(std::result::Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn render_config(opts: &Options, bed: &Testbed, witness: Option<&Witness>, journal: &Path) -> String {
    let mut c = format!("cluster \"faults\" {{}}\n\n{SECRETS_MARK}\n");
    for i in 0..opts.nodes {
        let az = ["us-east-1a", "us-east-1b", "us-east-1c"][i % 3];
        c.push_str(&format!(
            "node \"{}\" {{\n  private_ip        = \"{}\"\n  availability_zone = \"{az}\"\n}}\n\n",
            name(i),
            bed.node_addr(i)
        ));
    }
    c.push_str(&format!("heartbeat {{\n  interval = \"{}\"\n  timeout  = \"{}\"\n}}\n\n", opts.interval, opts.timeout));
    c.push_str(&format!(
        "arbitration {{\n  table          = \"{TABLE}\"\n  region         = \"{REGION}\"\n  ttl            = \"{}\"\n  renew_interval = \"{}\"\n}}\n\n",
        opts.ttl, opts.renew
    ));
    if let Some(w) = witness {
        c.push_str(&format!(
            "np_resolution {{\n  timeout = \"500ms\"\n  tcp {{\n    address = \"{}\"\n  }}\n}}\n\n",
            w.addr
        ));
    }
    let servers: Vec<String> = (0..opts.nodes).map(|i| format!("\"{}\"", name(i))).collect();
    let j = journal.display();
    let d = journal.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let (mirror, depends) = if opts.mirror_bytes > 0 {
        (mirror_disk(opts.nodes, &d), "    depends_on = [\"data\"]\n")
    } else {
        (String::new(), "")
    };
    if opts.fenced_app {
        // A process outside tandemd's tree (setsid -f) in the node's cgroup, as `systemctl start` would make it.
        let app = FENCED_APP.replace("@J@", &j.to_string()).replace("@DELAY@", opts.start_delay).replace("@D@", &d);
        c.push_str(&format!(
            "group \"{GROUP}\" {{\n  servers  = [{}]\n  failback = \"{}\"\n{mirror}\n{app}{depends}  }}\n}}\n",
            servers.join(", "),
            opts.failback,
        ));
        c.push_str(&opts.extra.replace("DIR", &d));
        return c;
    }
    // The application: `up-NODE` exists while it runs; `broken-NODE` makes it fail to start (tests create it).
    c.push_str(&format!(
        "group \"{GROUP}\" {{\n  servers  = [{}]\n  failback = \"{}\"\n{mirror}\n  resource \"exec\" \"app\" {{\n    start = \"sleep {}; test ! -e {d}/broken-$TANDEM_NODE && touch {d}/up-$TANDEM_NODE && echo \\\"$(date +%s%N) $TANDEM_NODE start\\\" >> {j}\"\n    stop  = \"rm -f {d}/up-$TANDEM_NODE; echo \\\"$(date +%s%N) $TANDEM_NODE stop\\\" >> {j}\"\n{depends}  }}\n}}\n",
        servers.join(", "),
        opts.failback,
        opts.start_delay
    ));
    if opts.mirror_bytes > 0 {
        c.push_str("\nmonitor \"mirror\" \"data-replication\" {\n  resource = \"data\"\n  interval = \"500ms\"\n}\n");
    }
    c.push_str(&opts.extra.replace("DIR", &d));
    c
}

const SECRETS_MARK: &str = "# secrets\n";
/// Replaced, per node, by the node's app cgroup.
const APP_CGROUP_MARK: &str = "@APPCG@";
/// The exec resource of the fenced app (`@APPCG@`, `@J@` the journal, `@DELAY@` seconds before it starts); its
/// stop hangs while `@D@/hang-stop-NODE` exists (`@D@` the cluster's directory).
const FENCED_APP: &str = r#"  resource "exec" "app" {
    start  = "sleep @DELAY@; setsid -f sh -c 'echo 0 > @APPCG@/cgroup.procs && exec sleep 1000000' </dev/null >/dev/null 2>&1; until grep -qx 'populated 1' @APPCG@/cgroup.events; do sleep 0.005; done; echo \"$(date +%s%N) $TANDEM_NODE start\" >> @J@"
    stop   = "if test -e @D@/hang-stop-$TANDEM_NODE; then sleep 1000; fi; echo 1 > @APPCG@/cgroup.kill; while grep -qx 'populated 1' @APPCG@/cgroup.events; do sleep 0.005; done; echo \"$(date +%s%N) $TANDEM_NODE stop\" >> @J@"
    probe  = "grep -qx 'populated 1' @APPCG@/cgroup.events || exit 7"
    cgroup = "@APPCG@"
"#;

/// `resource "mirror_disk" "data"` with one data and metadata file per node (export only: no mount point).
fn mirror_disk(nodes: usize, dir: &str) -> String {
    let mut r = format!(
        "\n  resource \"mirror_disk\" \"data\" {{\n    data_device     = \"{dir}/n0-data.img\"\n    metadata_device = \"{dir}/n0-meta.img\"\n"
    );
    for i in 1..nodes {
        let n = name(i);
        r.push_str(&format!(
            "    override \"{n}\" {{\n      data_device     = \"{dir}/{n}-data.img\"\n      metadata_device = \"{dir}/{n}-meta.img\"\n    }}\n"
        ));
    }
    r.push_str("  }\n");
    r
}

/// A cluster CA and one certificate per node (name and IP as subject alternative names), as tandem_cluster makes.
fn write_certs(dir: &Path, bed: &Testbed, nodes: usize) -> Result<()> {
    let names: Vec<(String, Vec<String>)> =
        (0..nodes).map(|i| (name(i), vec![name(i), bed.node_addr(i).to_string()])).collect();
    crate::certs::write(dir, &names)
}

/// A DynamoDB client for the bed's moto.
async fn dynamodb(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&conf)
}

fn create_table(endpoint: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = dynamodb(endpoint).await;
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        client
            .create_table()
            .table_name(TABLE)
            .key_schema(KeySchemaElement::builder().attribute_name("group").key_type(KeyType::Hash).build()?)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("group")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
