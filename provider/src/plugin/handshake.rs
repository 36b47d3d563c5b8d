//! The go-plugin handshake: what Terraform tells us through the environment, and the one line we answer on
//! stdout.
//!
//! Terraform (go-plugin) starts the provider with `TF_PLUGIN_MAGIC_COOKIE`, `PLUGIN_PROTOCOL_VERSIONS`,
//! `PLUGIN_MIN_PORT`/`PLUGIN_MAX_PORT` and `PLUGIN_CLIENT_CERT` (AutoMTLS), then reads exactly one line from our
//! stdout: `CORE|APP|NETWORK|ADDRESS|grpc|CERT`. Nothing else may ever be written to stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rustls::pki_types::CertificateDer;

use super::error::PluginError;
use super::tls;

/// Environment variable holding Terraform's magic cookie.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// The value Terraform sets (from Terraform's `plugin.Handshake`).
pub const MAGIC_COOKIE_VALUE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's core protocol version (the first field of the handshake line).
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The Terraform plugin protocol major version we speak.
pub const PROTOCOL_VERSION: u32 = 6;

const PROTOCOL_VERSIONS_KEY: &str = "PLUGIN_PROTOCOL_VERSIONS";
const CLIENT_CERT_KEY: &str = "PLUGIN_CLIENT_CERT";
const MIN_PORT_KEY: &str = "PLUGIN_MIN_PORT";
const MAX_PORT_KEY: &str = "PLUGIN_MAX_PORT";
const UNIX_SOCKET_DIR_KEY: &str = "PLUGIN_UNIX_SOCKET_DIR";
/// go-plugin's defaults when the port range is not given.
const DEFAULT_MIN_PORT: u16 = 10000;
const DEFAULT_MAX_PORT: u16 = 25000;

/// What Terraform told us through the environment.
#[derive(Debug)]
pub struct HandshakeEnv {
    /// Terraform's client certificate(s), pinned by exact DER.
    pub client_certs: Vec<CertificateDer<'static>>,
    /// Lowest loopback TCP port we may use when a unix socket is not possible.
    pub min_port: u16,
    /// Highest such port (inclusive).
    pub max_port: u16,
    /// Where to create the socket directory instead of the system temp dir (`PLUGIN_UNIX_SOCKET_DIR`).
    pub socket_dir: Option<PathBuf>,
}

impl HandshakeEnv {
    /// Reads and checks the process environment.
    pub fn from_env() -> Result<Self, PluginError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads and checks the environment through `get` (tests pass a map instead of mutating the process).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, PluginError> {
        match get(MAGIC_COOKIE_KEY) {
            None => return Err(PluginError::NotLaunchedByTerraform),
            Some(cookie) if cookie.is_empty() => return Err(PluginError::NotLaunchedByTerraform),
            Some(cookie) if cookie != MAGIC_COOKIE_VALUE => {
                return Err(PluginError::MagicCookieMismatch);
            }
            Some(_) => {}
        }

        // go-plugin falls back to the plugin's own version when the host sends no list; Terraform always does.
        if let Some(offered) = get(PROTOCOL_VERSIONS_KEY).filter(|v| !v.trim().is_empty())
            && !offers_protocol(&offered, PROTOCOL_VERSION)
        {
            return Err(PluginError::UnsupportedProtocol { offered });
        }

        let pem = get(CLIENT_CERT_KEY).filter(|v| !v.trim().is_empty()).ok_or(PluginError::MissingClientCert)?;
        let client_certs = tls::parse_client_certs(&pem)?;

        let (min_port, max_port) = port_range(get(MIN_PORT_KEY), get(MAX_PORT_KEY))?;
        let socket_dir = get(UNIX_SOCKET_DIR_KEY).filter(|v| !v.is_empty()).map(PathBuf::from);

        Ok(Self { client_certs, min_port, max_port, socket_dir })
    }
}

/// Whether a comma-separated version list such as `5,6` contains `version`.
fn offers_protocol(list: &str, version: u32) -> bool {
    list.split(',').any(|v| v.trim().parse::<u32>() == Ok(version))
}

fn port_range(min: Option<String>, max: Option<String>) -> Result<(u16, u16), PluginError> {
    let parse = |raw: &Option<String>, default: u16| match raw.as_deref().map(str::trim) {
        None | Some("") => Some(default),
        Some(v) => v.parse::<u16>().ok(),
    };
    match (parse(&min, DEFAULT_MIN_PORT), parse(&max, DEFAULT_MAX_PORT)) {
        (Some(lo), Some(hi)) if lo >= 1 && lo <= hi => Ok((lo, hi)),
        _ => Err(PluginError::InvalidPortRange { min: min.unwrap_or_default(), max: max.unwrap_or_default() }),
    }
}

/// Where Terraform connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix domain socket at this path.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl Endpoint {
    /// go-plugin's network name (`unix` or `tcp`).
    pub fn network(&self) -> &'static str {
        match self {
            Self::Unix(_) => "unix",
            Self::Tcp(_) => "tcp",
        }
    }

    /// The address as go-plugin expects it (socket path, or `IP:PORT`).
    pub fn address(&self) -> String {
        match self {
            Self::Unix(path) => path.to_string_lossy().into_owned(),
            Self::Tcp(addr) => addr.to_string(),
        }
    }
}

/// Encodes the server certificate for the handshake line: standard base64 alphabet, **no padding** (Go's
/// `base64.RawStdEncoding`; padding makes Terraform fail with "illegal base64 data").
pub fn encode_cert(der: &[u8]) -> String {
    STANDARD_NO_PAD.encode(der)
}

/// The handshake line, without the trailing newline: `1|6|unix|/path|grpc|CERT`.
pub fn handshake_line(endpoint: &Endpoint, server_cert_der: &[u8]) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{PROTOCOL_VERSION}|{}|{}|grpc|{}",
        endpoint.network(),
        endpoint.address(),
        encode_cert(server_cert_der)
    )
}

/// Writes `line` and a newline to stdout and flushes: the only thing this process ever prints to stdout.
pub fn write_stdout_line(line: &str) -> Result<(), PluginError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(PluginError::Stdout)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn client_cert_pem() -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn terraform_env() -> HashMap<&'static str, String> {
        HashMap::from([
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE.to_string()),
            (PROTOCOL_VERSIONS_KEY, "5,6".to_string()),
            (MIN_PORT_KEY, "10000".to_string()),
            (MAX_PORT_KEY, "25000".to_string()),
            (CLIENT_CERT_KEY, client_cert_pem()),
        ])
    }

    fn check(env: &HashMap<&'static str, String>) -> Result<HandshakeEnv, PluginError> {
        HandshakeEnv::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn terraform_environment_is_accepted() {
        let env = check(&terraform_env()).unwrap();
        assert_eq!(env.client_certs.len(), 1);
        assert_eq!((env.min_port, env.max_port), (10000, 25000));
        assert_eq!(env.socket_dir, None);
    }

    #[test]
    fn missing_cookie_says_this_is_a_terraform_plugin() {
        let mut env = terraform_env();
        env.remove(MAGIC_COOKIE_KEY);
        let err = check(&env).unwrap_err();
        assert!(matches!(err, PluginError::NotLaunchedByTerraform), "{err:?}");
        assert_eq!(err.code(), "TDM-PLUGIN-001");
        let msg = err.to_string();
        assert!(msg.contains("plugin for Terraform") && msg.contains("terraform init"), "{msg}");
    }

    #[test]
    fn wrong_cookie_is_refused() {
        let mut env = terraform_env();
        env.insert(MAGIC_COOKIE_KEY, "nope".to_string());
        assert!(matches!(check(&env).unwrap_err(), PluginError::MagicCookieMismatch));
    }

    #[test]
    fn protocol_6_absent_is_refused() {
        let mut env = terraform_env();
        env.insert(PROTOCOL_VERSIONS_KEY, "4,5".to_string());
        let err = check(&env).unwrap_err();
        assert!(matches!(&err, PluginError::UnsupportedProtocol { offered } if offered == "4,5"), "{err:?}");
        assert_eq!(err.code(), "TDM-PLUGIN-003");
    }

    #[test]
    fn protocol_list_order_and_spaces_do_not_matter() {
        assert!(offers_protocol("6,5", 6));
        assert!(offers_protocol(" 5 , 6 ", 6));
        assert!(!offers_protocol("5,60", 6));
    }

    #[test]
    fn missing_client_cert_is_refused() {
        let mut env = terraform_env();
        env.remove(CLIENT_CERT_KEY);
        assert!(matches!(check(&env).unwrap_err(), PluginError::MissingClientCert));
        env.insert(CLIENT_CERT_KEY, "not a pem".to_string());
        assert!(matches!(check(&env).unwrap_err(), PluginError::InvalidClientCert { .. }));
    }

    #[test]
    fn port_range_defaults_and_validation() {
        assert_eq!(port_range(None, None).unwrap(), (10000, 25000));
        assert_eq!(port_range(Some("2000".into()), Some("2000".into())).unwrap(), (2000, 2000));
        assert!(port_range(Some("3000".into()), Some("2000".into())).is_err());
        assert!(port_range(Some("x".into()), None).is_err());
        assert!(port_range(Some("0".into()), None).is_err());
    }

    #[test]
    fn cert_base64_has_no_padding() {
        // 1 and 2 bytes would need "==" and "=" with padding.
        assert_eq!(encode_cert(&[0xff]), "/w");
        assert_eq!(encode_cert(&[0xff, 0xfe]), "//4");
        for len in 1..64 {
            let der: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert!(!encode_cert(&der).contains('='), "len {len}");
        }
    }

    #[test]
    fn handshake_line_has_go_plugin_shape() {
        let line = handshake_line(&Endpoint::Unix(PathBuf::from("/tmp/x/plugin.sock")), &[1, 2, 3, 4]);
        assert_eq!(line, "1|6|unix|/tmp/x/plugin.sock|grpc|AQIDBA");
        let tcp = handshake_line(&Endpoint::Tcp("127.0.0.1:10001".parse().unwrap()), &[0xff]);
        assert_eq!(tcp, "1|6|tcp|127.0.0.1:10001|grpc|/w");
        assert!(!line.contains('\n'));
    }
}
