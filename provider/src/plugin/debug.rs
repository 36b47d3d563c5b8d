//! `--debug` mode: no cookie, no TLS. Serve plain gRPC on a unix socket, print the `TF_REATTACH_PROVIDERS` value
//! Terraform needs to attach to this process, and run until SIGINT/SIGTERM (so a debugger can hold the process).

use tandem_proto::tfplugin6::provider_server::Provider;

use super::controller::Shutdown;
use super::error::PluginError;
use super::handshake::{self, Endpoint, PROTOCOL_VERSION};
use super::listen::{self, Listener};
use super::serve::{install_signal_handlers, run_server};

/// The provider's full address in the registry namespace.
pub const PROVIDER_ADDRESS: &str = "registry.terraform.io/tandem/tandem";

/// Debug mode: serve until interrupted.
pub async fn serve_debug<P: Provider>(provider: P) -> Result<(), PluginError> {
    let shutdown = Shutdown::new();
    install_signal_handlers(&shutdown, true)?;

    let (listener, endpoint) = Listener::bind(&std::env::temp_dir(), 0, 0)?;
    let (incoming, accept_loop) = listen::spawn_accept_loop(listener, None, shutdown.subscribe());

    handshake::write_stdout_line(&attach_message(&endpoint, std::process::id()))?;
    tracing::info!(address = %endpoint.address(), "provider serving in debug mode");

    let result = run_server(provider, incoming, &shutdown).await;
    accept_loop.abort();
    result
}

/// The JSON value of `TF_REATTACH_PROVIDERS` for a provider listening at `endpoint` in process `pid`.
pub fn reattach_json(endpoint: &Endpoint, pid: u32) -> String {
    let value = serde_json::json!({
        PROVIDER_ADDRESS: {
            "Protocol": "grpc",
            "ProtocolVersion": PROTOCOL_VERSION,
            "Pid": pid,
            // Test mode: Terraform neither kills this process nor asks it to shut down after each command.
            "Test": true,
            "Addr": { "Network": endpoint.network(), "String": endpoint.address() },
        }
    });
    value.to_string()
}

/// What `--debug` prints on stdout for the human at the terminal.
fn attach_message(endpoint: &Endpoint, pid: u32) -> String {
    let quoted = reattach_json(endpoint, pid).replace('\'', r"'\''");
    format!(
        "Provider tandem started in debug mode (pid {pid}). To attach Terraform, set this in the shell that runs \
         terraform:\n\
         \n\
         TF_REATTACH_PROVIDERS='{quoted}'\n\
         export TF_REATTACH_PROVIDERS\n\
         \n\
         Stop the provider with Ctrl-C (SIGINT) or SIGTERM."
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn reattach_json_matches_terraform_format() {
        let endpoint = Endpoint::Unix(PathBuf::from("/tmp/tandem-plugin-1/plugin.sock"));
        assert_eq!(
            reattach_json(&endpoint, 42),
            r#"{"registry.terraform.io/tandem/tandem":{"Protocol":"grpc","ProtocolVersion":6,"Pid":42,"Test":true,"Addr":{"Network":"unix","String":"/tmp/tandem-plugin-1/plugin.sock"}}}"#
        );
    }

    #[test]
    fn attach_message_has_a_shell_ready_line() {
        let endpoint = Endpoint::Unix(PathBuf::from("/tmp/it's/plugin.sock"));
        let msg = attach_message(&endpoint, 7);
        let line = msg.lines().find(|l| l.starts_with("TF_REATTACH_PROVIDERS='")).unwrap();
        assert!(line.ends_with("}}}'"), "{line}");
        assert!(line.contains(r"it'\''s"), "single quotes are shell-escaped: {line}");
    }
}
