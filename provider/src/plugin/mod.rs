//! The Terraform plugin layer: everything between `main` and the `tfplugin6.Provider` implementation.
//!
//! Terraform starts the provider as a go-plugin child process. This module performs the handshake (magic cookie,
//! protocol version, AutoMTLS with Terraform's pinned client certificate, the single stdout line), serves
//! `tfplugin6.Provider` plus go-plugin's health, controller and stdio services over a unix socket (loopback TCP
//! as fallback), and returns when Terraform calls `plugin.GRPCController/Shutdown` or SIGTERM arrives. SIGINT is
//! ignored: Terraform turns Ctrl-C into `StopProvider`.
//!
//! `--debug` mode serves plain gRPC and prints a `TF_REATTACH_PROVIDERS` value instead.
//!
//! Stdout belongs to the handshake: nothing else may print to it. Logs go to stderr through `tracing`.

mod controller;
mod debug;
mod error;
mod handshake;
mod listen;
mod serve;
mod tls;

use tandem_proto::tfplugin6::provider_server::Provider;

pub use debug::PROVIDER_ADDRESS;
pub use error::PluginError;
pub use handshake::{MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE, PROTOCOL_VERSION};
pub use serve::MAX_DECODING_MESSAGE_SIZE;

/// The provider's type name (`tandem_*` resources).
pub const PROVIDER_TYPE: &str = "tandem";
/// The provider's registry namespace (`source = "tandem/tandem"`).
pub const PROVIDER_NAMESPACE: &str = "tandem";

/// How to serve.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// `--debug`: no magic cookie or TLS; plain gRPC on a unix socket, print `TF_REATTACH_PROVIDERS`, run until
    /// SIGINT/SIGTERM.
    pub debug: bool,
}

/// Serves `provider` to Terraform until Terraform shuts it down (or SIGTERM; in debug mode SIGINT too).
///
/// Run it inside a tokio runtime (the provider's `main` uses the multi-threaded one). Returns `Ok(())` after a
/// graceful shutdown. On `Err`, print the error with its [`PluginError::code`] to stderr and exit 1; the
/// errors that can occur before the handshake line (e.g. [`PluginError::NotLaunchedByTerraform`]) leave stdout
/// untouched.
pub async fn serve<P>(provider: P, opts: ServeOptions) -> Result<(), PluginError>
where
    P: Provider,
{
    if opts.debug { debug::serve_debug(provider).await } else { serve::serve_terraform(provider).await }
}
