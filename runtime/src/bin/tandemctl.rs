//! tandemctl: the operator's command line. Today: `tandemctl config check FILE [--node NAME]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tandemctl", version, about = "Operate a tandem HA cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster config commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a cluster config offline: prints "ok: ..." or every error as FILE:LINE:COL: CODE message (hint).
    Check {
        /// The cluster config (HCL).
        file: PathBuf,
        /// Also check that NAME is a node of the config (as tandemd --node NAME would).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config { command: ConfigCommand::Check { file, node } } => {
            match tandem_runtime::config::check_file(&file, node.as_deref()) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
