//! tandemctl: the operator's command line. `config check` works offline; every other command talks to the local
//! tandemd over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tandem_proto::control::{
    ClusterStopRequest, EventsRequest, GroupRequest, MirrorRequest, MirrorResolveRequest, StatusRequest,
};
use tandem_runtime::daemon::DEFAULT_SOCKET;
use tandem_runtime::daemon::client::{self, ClientError};

#[derive(Parser)]
#[command(name = "tandemctl", version, about = "Operate a tandem HA cluster")]
struct Cli {
    /// tandemd's control socket.
    #[arg(long, global = true, env = "TANDEM_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
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
    /// The cluster as this node sees it: nodes, links, groups, resources.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Every node's own status (fetched by this node over the peer API), not only this node's view.
        #[arg(long)]
        all: bool,
    },
    /// Start, stop or move a failover group.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// This node's cluster service.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Mirror disks: status, online verify, split-brain resolution.
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// The newest entries of the event log.
    Events {
        /// How many (0 = every kept event).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
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

#[derive(Subcommand)]
enum GroupCommand {
    /// Clear an operator stop (and this node's failed mark); the best live server starts the group.
    Start(GroupArgs),
    /// Stop the group wherever it runs; it stays stopped until `group start`.
    Stop(GroupArgs),
    /// Move the group: stopped on its node before it starts on the target.
    Move {
        #[command(flatten)]
        args: GroupArgs,
        /// The node to move to (default: the next live server by priority).
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
    },
}

#[derive(clap::Args)]
struct GroupArgs {
    group: String,
    /// Return once the request is recorded instead of waiting for it to complete.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for completion, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Subcommand)]
enum MirrorCommand {
    /// Role, disk state, peer, link, resync progress and ETA, bytes behind, of this node's mirror disks.
    Status {
        /// One mirror_disk resource (default: all).
        resource: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Online verify, on the primary: every chunk's checksum compared with the peer's; differing chunks are
    /// marked out of sync and resynced.
    Verify { resource: String },
    /// Give up the data of NODE: this node (it resyncs in full from the peer) or the peer (this node's replica
    /// becomes the current one, e.g. to promote an outdated replica when the peer is lost for good).
    Resolve {
        resource: String,
        #[arg(long, value_name = "NODE")]
        discard: String,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Clean stop of this node: its groups move to other servers first, then tandemd exits.
    Stop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config { command: ConfigCommand::Check { file, node } } = &cli.command {
        return match tandem_runtime::config::check_file(file, node.as_deref()) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandemctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(online(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string();
            // API errors already carry their code ("[TDM-GRP-006] ...").
            if text.starts_with("[TDM-") {
                eprintln!("tandemctl: {text}")
            } else {
                eprintln!("tandemctl: [{}] {text}", e.code())
            }
            ExitCode::FAILURE
        }
    }
}

async fn online(cli: Cli) -> Result<(), ClientError> {
    let mut c = client::connect(&cli.socket).await?;
    match cli.command {
        Command::Config { .. } => Ok(()),
        Command::Status { json, all: true } => {
            let r = c.cluster_status(StatusRequest {}).await?.into_inner();
            if json {
                let nodes: Vec<_> = r.nodes.iter().map(client::status_json).collect();
                println!("{:#}", serde_json::json!({ "nodes": nodes, "errors": r.errors }));
            } else {
                for s in &r.nodes {
                    println!("===== as seen by {} =====", s.node);
                    print!("{}", client::render_status(s));
                    println!();
                }
                for e in &r.errors {
                    println!("unreachable: {e}");
                }
            }
            Ok(())
        }
        Command::Status { json, all: false } => {
            let s = c.status(StatusRequest {}).await?.into_inner();
            if json {
                println!("{:#}", client::status_json(&s));
            } else {
                print!("{}", client::render_status(&s));
            }
            Ok(())
        }
        Command::Events { limit, json } => {
            let events = c.events(EventsRequest { limit }).await?.into_inner().events;
            for e in &events {
                if json { println!("{}", client::event_json(e)) } else { println!("{}", client::render_event(e)) }
            }
            Ok(())
        }
        Command::Mirror { command: MirrorCommand::Status { resource, json } } => {
            let r = c.mirror_status(MirrorRequest { resource: resource.unwrap_or_default() }).await?.into_inner();
            if json {
                let disks: Vec<_> = r.disks.iter().map(client::mirror_json).collect();
                println!("{:#}", serde_json::json!({ "disks": disks }));
            } else {
                print!("{}", client::render_mirror_status(&r.disks));
            }
            Ok(())
        }
        Command::Mirror { command: MirrorCommand::Verify { resource } } => {
            println!("{}", c.mirror_verify(MirrorRequest { resource }).await?.into_inner().message);
            Ok(())
        }
        Command::Mirror { command: MirrorCommand::Resolve { resource, discard } } => {
            println!("{}", c.mirror_resolve(MirrorResolveRequest { resource, discard }).await?.into_inner().message);
            Ok(())
        }
        Command::Cluster { command: ClusterCommand::Stop } => {
            let reply = c.cluster_stop(ClusterStopRequest {}).await?.into_inner();
            println!("{}", reply.message);
            Ok(())
        }
        Command::Group { command } => {
            let (args, request) = match command {
                GroupCommand::Start(args) => {
                    let r = c.group_start(GroupRequest { group: args.group.clone(), target: String::new() }).await?;
                    (args, r)
                }
                GroupCommand::Stop(args) => {
                    let r = c.group_stop(GroupRequest { group: args.group.clone(), target: String::new() }).await?;
                    (args, r)
                }
                GroupCommand::Move { args, to } => {
                    let r = c
                        .group_move(GroupRequest { group: args.group.clone(), target: to.unwrap_or_default() })
                        .await?;
                    (args, r)
                }
            };
            let message = request.into_inner().message;
            println!("{message}");
            if args.no_wait {
                return Ok(());
            }
            let timeout = Duration::from_secs(args.timeout);
            let group = args.group.clone();
            if message.contains("stop requested") {
                client::wait_for(&mut c, timeout, &format!("group {group} stopped on every node"), |s| {
                    client::stopped_everywhere(s, &group)
                })
                .await?;
                println!("group {group}: stopped");
            } else if let Some(target) = message.split("move to ").nth(1).and_then(|t| t.split(' ').next()) {
                let target = target.to_string();
                client::wait_for(&mut c, timeout, &format!("group {group} running on {target}"), |s| {
                    client::running_on(s, &group).as_deref() == Some(target.as_str())
                })
                .await?;
                println!("group {group}: running on {target}");
            } else if message.contains("start requested") {
                let s = client::wait_for(&mut c, timeout, &format!("group {group} running"), |s| {
                    client::running_on(s, &group).is_some()
                })
                .await?;
                println!("group {group}: running on {}", client::running_on(&s, &group).unwrap_or_default());
            }
            Ok(())
        }
    }
}
