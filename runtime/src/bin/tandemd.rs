//! tandemd: the tandem node daemon. Wires arguments, logging and signals; the logic is in `tandem_runtime::daemon`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tandem_runtime::daemon::{self, DEFAULT_SHUTDOWN_COMMAND, DEFAULT_SOCKET, DEFAULT_STATE_DIR, Options};

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
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
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
