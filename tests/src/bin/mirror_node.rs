//! One node of a mirrored disk as its own process, for crash tests (issue 7: `tests/tests/mirror_crash.rs`), so a
//! test can SIGKILL the active node in the middle of a write stream:
//!
//! ```text
//! mirror_node secondary --data FILE --listen 127.0.0.1:PORT
//! mirror_node primary --data FILE --peer ADDR --nbd SOCKET --name NAME [--protocol C|A]
//! ```
//! - `secondary` accepts one replication link on `--listen` (port 0 picks a free port) and applies what it
//!   receives to FILE (`serve_secondary` over a `FileStore`); it prints `listening ADDR` (the bound address) once
//!   bound, and exits when the link ends.
//! - `primary` links to the secondary at `--peer` over TCP, serves a `ReplicatedStore` over a `FileStore` of FILE
//!   as NBD export NAME on the Unix socket SOCKET, and prints `serving SOCKET` once the export accepts clients.
//!   `--protocol C` (default): a write completes once both FILE and the peer have it; `--protocol A`: once FILE has
//!   it (only for checking that the crash test notices lost acknowledged writes).
//!
//! No metadata files: the plain `connect`/`serve_secondary` API. The primary's `PeerLossGate` just succeeds: the
//! lease-backed gate is tested elsewhere (the crash test never loses the peer while the primary is alive).
//!
//! Exit codes: 0 the link ended normally, 1 a runtime failure (message on stderr), 2 bad arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tandem_runtime::mirror::nbd::{Export, bind_unix, serve_unix};
use tandem_runtime::mirror::replication::{Mode, PeerLossGate, ReplicatedStore, ReplicationConfig, serve_secondary};
use tandem_runtime::mirror::store::{BlockStore, FileStore};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage:\n  mirror_node secondary --data FILE --listen 127.0.0.1:PORT\n  \
                     mirror_node primary --data FILE --peer ADDR --nbd SOCKET --name NAME [--protocol C|A]";

type Failure = Box<dyn std::error::Error>;

enum Role {
    Secondary { data: PathBuf, listen: SocketAddr },
    Primary { data: PathBuf, peer: SocketAddr, nbd: PathBuf, name: String, mode: Mode },
}

/// Parses `--flag value` pairs after the role word; every flag of the role is required except `--protocol`.
fn parse(args: &[String]) -> Result<Role, String> {
    let (role, rest) = args.split_first().ok_or("missing role (primary or secondary)")?;
    if role != "primary" && role != "secondary" {
        return Err(format!("unknown role {role:?} (primary or secondary)"));
    }
    let mut data = None;
    let mut listen = None;
    let mut peer = None;
    let mut nbd = None;
    let mut name = None;
    let mut mode = Mode::Sync;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr = |v: &str| v.parse::<SocketAddr>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(value)),
            "--listen" => listen = Some(addr(value)?),
            "--peer" => peer = Some(addr(value)?),
            "--nbd" => nbd = Some(PathBuf::from(value)),
            "--name" => name = Some(value.clone()),
            "--protocol" => {
                mode = match value.as_str() {
                    "C" | "c" => Mode::Sync,
                    "A" | "a" => Mode::Async,
                    other => return Err(format!("--protocol {other:?}: expected C or A")),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let data = data.ok_or("--data is required")?;
    match role.as_str() {
        "secondary" => Ok(Role::Secondary { data, listen: listen.ok_or("--listen is required")? }),
        "primary" => Ok(Role::Primary {
            data,
            peer: peer.ok_or("--peer is required")?,
            nbd: nbd.ok_or("--nbd is required")?,
            name: name.ok_or("--name is required")?,
            mode,
        }),
        other => Err(format!("unknown role {other:?} (primary or secondary)")),
    }
}

/// The gate of the test node: always succeeds (the lease-backed gate is tested elsewhere).
struct AlwaysGate;

#[async_trait::async_trait]
impl PeerLossGate for AlwaysGate {
    async fn mark_peer_outdated(&self, _generation: u64) -> Result<(), String> {
        Ok(())
    }
}

async fn secondary(data: PathBuf, listen: SocketAddr) -> Result<(), Failure> {
    let store: Arc<dyn BlockStore> =
        Arc::new(FileStore::open(&data).map_err(|e| format!("opening {}: {e}", data.display()))?);
    let listener = TcpListener::bind(listen).await.map_err(|e| format!("binding {listen}: {e}"))?;
    println!("listening {}", listener.local_addr()?);
    let (stream, from) = listener.accept().await.map_err(|e| format!("accepting the peer link: {e}"))?;
    stream.set_nodelay(true)?;
    println!("linked {from}");
    let stats = serve_secondary(stream, store).await.map_err(|e| format!("replication link: {e}"))?;
    println!("link ended: {stats:?}");
    Ok(())
}

async fn primary(data: PathBuf, peer: SocketAddr, nbd: PathBuf, name: String, mode: Mode) -> Result<(), Failure> {
    let local: Arc<dyn BlockStore> =
        Arc::new(FileStore::open(&data).map_err(|e| format!("opening {}: {e}", data.display()))?);
    let link = TcpStream::connect(peer).await.map_err(|e| format!("connecting to the peer {peer}: {e}"))?;
    link.set_nodelay(true)?;
    let cfg = ReplicationConfig { node: format!("mirror-node-{}", std::process::id()), mode, ..Default::default() };
    let store = ReplicatedStore::connect(local, link, cfg, Arc::new(AlwaysGate))
        .await
        .map_err(|e| format!("replication link to {peer}: {e}"))?;
    let listener = bind_unix(&nbd).map_err(|e| format!("NBD socket {}: {e}", nbd.display()))?;
    let export = Arc::new(Export::new(name, Arc::new(store) as Arc<dyn BlockStore>));
    println!("serving {}", nbd.display());
    serve_unix(listener, export).await;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    let role = match parse(&args) {
        Ok(role) => role,
        Err(e) => {
            eprintln!("mirror_node: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mirror_node: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match role {
            Role::Secondary { data, listen } => secondary(data, listen).await,
            Role::Primary { data, peer, nbd, name, mode } => primary(data, peer, nbd, name, mode).await,
        }
    });
    if let Err(e) = result {
        eprintln!("mirror_node: {e}");
        std::process::exit(1);
    }
}
