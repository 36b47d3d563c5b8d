//! `secrets { }`: where each node finds its key material. The files are written by the provider's user_data
//! (or by the operator); the config names them only, never holds them.

use std::path::PathBuf;

use super::error::ConfigPath;
use super::parse::{self, Cx, Reader};
use super::render::HclBlock;
use super::validate::Validator;

pub const DEFAULT_HEARTBEAT_KEY_FILE: &str = "/etc/tandem/heartbeat.key";
pub const DEFAULT_CA_CERT_FILE: &str = "/etc/tandem/ca.crt";
pub const DEFAULT_NODE_CERT_FILE: &str = "/etc/tandem/node.crt";
pub const DEFAULT_NODE_KEY_FILE: &str = "/etc/tandem/node.key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// The cluster key that authenticates heartbeats (and mirror traffic). Same content on every node.
    pub heartbeat_key_file: PathBuf,
    /// The cluster CA certificate (PEM) that node certificates chain to.
    pub ca_cert_file: PathBuf,
    /// This node's certificate (PEM), signed by the cluster CA. Each node has its own file at this path.
    pub node_cert_file: PathBuf,
    /// This node's private key (PEM).
    pub node_key_file: PathBuf,
}

impl Default for Secrets {
    fn default() -> Secrets {
        Secrets {
            heartbeat_key_file: DEFAULT_HEARTBEAT_KEY_FILE.into(),
            ca_cert_file: DEFAULT_CA_CERT_FILE.into(),
            node_cert_file: DEFAULT_NODE_CERT_FILE.into(),
            node_key_file: DEFAULT_NODE_KEY_FILE.into(),
        }
    }
}

impl Secrets {
    pub(crate) fn path() -> ConfigPath {
        ConfigPath::root().block("secrets", "", 0)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<Secrets> {
        let d = Secrets::default();
        Some(Secrets {
            heartbeat_key_file: r.or(cx, "heartbeat_key_file", parse::path_buf, d.heartbeat_key_file),
            ca_cert_file: r.or(cx, "ca_cert_file", parse::path_buf, d.ca_cert_file),
            node_cert_file: r.or(cx, "node_cert_file", parse::path_buf, d.node_cert_file),
            node_key_file: r.or(cx, "node_key_file", parse::path_buf, d.node_key_file),
        })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.path("heartbeat_key_file", &self.heartbeat_key_file);
        b.path("ca_cert_file", &self.ca_cert_file);
        b.path("node_cert_file", &self.node_cert_file);
        b.path("node_key_file", &self.node_key_file);
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        let path = Secrets::path();
        v.abs_path(&path.attr("heartbeat_key_file"), &self.heartbeat_key_file);
        v.abs_path(&path.attr("ca_cert_file"), &self.ca_cert_file);
        v.abs_path(&path.attr("node_cert_file"), &self.node_cert_file);
        v.abs_path(&path.attr("node_key_file"), &self.node_key_file);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{codes, parse_codes, two_nodes};

    #[test]
    fn relative_secret_paths_are_rejected() {
        let mut c = two_nodes();
        c.secrets.node_key_file = "node.key".into();
        assert_eq!(codes(&c), vec!["TDM-CFG-027"]);
    }

    #[test]
    fn unknown_secret_is_a_typo() {
        assert_eq!(parse_codes("cluster \"c\" {}\nsecrets {\n  ca_cert = \"/x\"\n}\n"), vec!["TDM-CFG-002"]);
    }
}
