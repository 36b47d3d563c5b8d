//! The acceptance harness: a local AWS endpoint (moto's server, pinned, in a venv created on demand), the
//! provider binary built once and installed into a filesystem mirror, and the real `terraform` CLI run in
//! throw-away directories — the terraform-plugin-testing discipline, driven from Rust.

pub mod aws_proxy;
pub mod moto;
pub mod provider;
pub mod terraform;

pub use aws_proxy::{Fault, FaultProxy, Service};
pub use moto::Moto;
pub use terraform::{Env, Workdir};

/// Errors of the harness itself (not of the code under test): each says what to install or check.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("starting {what}: {detail}")]
    Start { what: String, detail: String },
    #[error("`{command}` failed (exit {code:?}):\n{output}")]
    Command { command: String, code: Option<i32>, output: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(std::path::Path::to_path_buf).unwrap_or_default()
}
pub mod ack_journal;
pub mod app_cgroups;
pub mod certs;
pub mod cluster;
pub mod journal;
pub mod netns;
pub mod node_config;
pub mod nodes;
pub mod topology;
