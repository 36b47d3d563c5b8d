//! tandemd: the tandem node daemon. Wires arguments, logging and signals; the logic is in `tandem_runtime::daemon`.
//! `tandemd fencer` runs the fencer instead (`tandem_runtime::fence`): a separate process of the same executable,
//! with no async runtime, so that one file installs both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tandem_runtime::daemon::{
    self, DEFAULT_FENCER_SOCKET, DEFAULT_SHUTDOWN_COMMAND, DEFAULT_SOCKET, DEFAULT_STATE_DIR, Options,
};

#[derive(Parser)]
#[command(name = "tandemd", version, about = "tandem HA cluster node daemon")]
struct Cli {
    /// The cluster config (HCL), as rendered by tandem_cluster.
    #[arg(long, default_value = "/etc/tandem/cluster.hcl")]
    config: PathBuf,
    /// This node's name in the config (default: the node whose address is configured on this machine).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Where resources keep their state and the event log is written.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The control socket tandemctl talks to.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9402).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Command run by the final action `shutdown` and by the watchdog when a group does not stop in time.
    #[arg(long, default_value = DEFAULT_SHUTDOWN_COMMAND)]
    shutdown_command: String,
    /// The fencer's socket (`tandemd fencer --socket PATH`): armed with each running group's deadline, it kills
    /// the group's cgroups if tandemd does not extend it. Required when an exec resource names a `cgroup`.
    #[arg(long, value_name = "PATH")]
    fencer: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Parser)]
#[command(
    name = "tandemd fencer",
    version,
    about = "tandem fencer: kills a group's cgroups when this node's right to run the group ends"
)]
struct FencerCli {
    /// Where tandemd reaches the fencer (created 0600 in a 0700 directory).
    #[arg(long, default_value = DEFAULT_FENCER_SOCKET)]
    socket: PathBuf,
}

fn fencer_main(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    use tandem_runtime::fence::server;
    let cli = FencerCli::parse_from(args);
    server::harden();
    let run = server::bind(&cli.socket).and_then(|l| {
        eprintln!("tandem-fencer: listening on {}", cli.socket.display());
        server::serve(l, server::KILL_WAIT)
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-fencer: [{}] {e}", e.code());
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "fencer") {
        return fencer_main(std::env::args_os().skip(1));
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let opts = Options {
        config: cli.config,
        node: cli.node,
        state_dir: cli.state_dir,
        socket: cli.socket,
        metrics: cli.metrics,
        shutdown_command: cli.shutdown_command,
        fencer: cli.fencer,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandemd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandemd: [{}] {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
