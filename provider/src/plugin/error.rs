//! Errors of the plugin layer, each with a stable operator-facing code (`TDM-PLUGIN-0xx`).
//!
//! Codes are never renumbered; docs/troubleshooting.md lists them.

use std::io;
use std::path::PathBuf;

use super::handshake::{MAGIC_COOKIE_KEY, PROTOCOL_VERSION};

/// A failure to start or run the plugin server.
#[derive(thiserror::Error, Debug)]
pub enum PluginError {
    /// The magic cookie is absent: a human (or a script) started the binary instead of Terraform.
    #[error("{}", not_a_terraform_process_message())]
    NotLaunchedByTerraform,

    /// The magic cookie is set but has another value: a different go-plugin host started us.
    #[error(
        "{MAGIC_COOKIE_KEY} has an unexpected value: this binary is a Terraform provider plugin and can only be \
         started by Terraform (run `terraform init` and `terraform plan` in a configuration that uses it)"
    )]
    MagicCookieMismatch,

    /// Terraform offered no protocol version this provider speaks.
    #[error(
        "Terraform offered plugin protocol versions [{offered}] but this provider speaks only version \
         {PROTOCOL_VERSION}; use Terraform 1.0 or later"
    )]
    UnsupportedProtocol {
        /// The raw value of PLUGIN_PROTOCOL_VERSIONS.
        offered: String,
    },

    /// AutoMTLS is mandatory: Terraform always sends its client certificate.
    #[error(
        "PLUGIN_CLIENT_CERT is not set: this provider requires Terraform's automatic mutual TLS (Terraform 0.15 or \
         later sets it); to attach a debugger instead, start the provider with --debug"
    )]
    MissingClientCert,

    /// PLUGIN_CLIENT_CERT holds no usable PEM certificate.
    #[error("PLUGIN_CLIENT_CERT holds no valid PEM certificate: {reason}")]
    InvalidClientCert {
        /// What was wrong with it.
        reason: String,
    },

    /// PLUGIN_MIN_PORT / PLUGIN_MAX_PORT are not a valid port range.
    #[error("invalid port range PLUGIN_MIN_PORT={min:?} PLUGIN_MAX_PORT={max:?}: expected 1 <= min <= max <= 65535")]
    InvalidPortRange {
        /// Raw PLUGIN_MIN_PORT.
        min: String,
        /// Raw PLUGIN_MAX_PORT.
        max: String,
    },

    /// Generating the server's TLS certificate failed.
    #[error("generating the plugin server's TLS certificate: {0}")]
    ServerCert(#[from] rcgen::Error),

    /// Building the TLS configuration failed.
    #[error("building the plugin server's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// Creating the private directory for the plugin socket failed.
    #[error("creating the plugin socket directory {path}: {source}")]
    SocketDir {
        /// The directory we tried to create.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// Neither a unix socket nor a loopback TCP port in the allowed range could be bound.
    #[error(
        "cannot listen for Terraform: unix socket failed ({unix}) and no free loopback TCP port in {min}..={max}; \
         check TMPDIR (or PLUGIN_UNIX_SOCKET_DIR) and PLUGIN_MIN_PORT/PLUGIN_MAX_PORT"
    )]
    Listen {
        /// Why the unix socket could not be used.
        unix: String,
        /// Lowest port tried.
        min: u16,
        /// Highest port tried.
        max: u16,
    },

    /// Writing the handshake line to stdout failed (Terraform went away?).
    #[error("writing the plugin handshake to stdout: {0}")]
    Stdout(#[source] io::Error),

    /// Installing the SIGINT/SIGTERM handlers failed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] io::Error),

    /// The gRPC server failed while serving.
    #[error("serving gRPC to Terraform: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl PluginError {
    /// The stable operator-facing code of this error (listed in docs/troubleshooting.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotLaunchedByTerraform => "TDM-PLUGIN-001",
            Self::MagicCookieMismatch => "TDM-PLUGIN-002",
            Self::UnsupportedProtocol { .. } => "TDM-PLUGIN-003",
            Self::MissingClientCert => "TDM-PLUGIN-004",
            Self::InvalidClientCert { .. } => "TDM-PLUGIN-005",
            Self::InvalidPortRange { .. } => "TDM-PLUGIN-006",
            Self::ServerCert(_) => "TDM-PLUGIN-007",
            Self::Tls(_) => "TDM-PLUGIN-008",
            Self::SocketDir { .. } => "TDM-PLUGIN-009",
            Self::Listen { .. } => "TDM-PLUGIN-010",
            Self::Stdout(_) => "TDM-PLUGIN-011",
            Self::Signals(_) => "TDM-PLUGIN-012",
            Self::Serve(_) => "TDM-PLUGIN-013",
        }
    }
}

/// The message for someone who ran the binary by hand.
fn not_a_terraform_process_message() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let platform = go_platform();
    format!(
        "This binary is a plugin for Terraform (the provider tandem/tandem). It is not meant to be run directly: \
         Terraform starts it when a configuration uses the provider.\n\
         \n\
         To install it, copy it to\n\
         \x20 ~/.terraform.d/plugins/registry.terraform.io/tandem/tandem/{version}/{platform}/terraform-provider-tandem_v{version}\n\
         then declare it in your configuration\n\
         \x20 terraform {{ required_providers {{ tandem = {{ source = \"tandem/tandem\" }} }} }}\n\
         and run `terraform init`. For development, a `dev_overrides` block in the Terraform CLI configuration \
         (TF_CLI_CONFIG_FILE) can point \"tandem/tandem\" at the directory holding this binary instead.\n\
         To attach a debugger, run it with --debug and export the TF_REATTACH_PROVIDERS value it prints."
    )
}

/// The platform directory name Terraform uses (Go's GOOS_GOARCH).
fn go_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    };
    format!("{}_{arch}", std::env::consts::OS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_distinct() {
        let errors = [
            PluginError::NotLaunchedByTerraform,
            PluginError::MagicCookieMismatch,
            PluginError::UnsupportedProtocol { offered: "5".into() },
            PluginError::MissingClientCert,
            PluginError::InvalidClientCert { reason: "x".into() },
            PluginError::InvalidPortRange { min: "a".into(), max: "b".into() },
            PluginError::Stdout(io::Error::other("x")),
            PluginError::Signals(io::Error::other("x")),
        ];
        let mut codes: Vec<_> = errors.iter().map(PluginError::code).collect();
        assert_eq!(codes[0], "TDM-PLUGIN-001");
        assert!(codes.iter().all(|c| c.starts_with("TDM-PLUGIN-")));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
    }

    #[test]
    fn not_launched_message_explains_and_shows_how_to_install() {
        let msg = PluginError::NotLaunchedByTerraform.to_string();
        assert!(msg.contains("plugin for Terraform"), "{msg}");
        assert!(msg.contains("not meant to be run directly"), "{msg}");
        assert!(msg.contains("terraform init"), "{msg}");
        assert!(msg.contains("registry.terraform.io/tandem/tandem/"), "{msg}");
        assert!(msg.contains("--debug"), "{msg}");
    }
}
