//! Test certificates as `tandem_cluster` makes them: a cluster CA (`ca.crt`) and, per node, `NAME.crt` / `NAME.key`
//! with the given subject alternative names, usable as both server and client certificates.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Writes the CA and one certificate per `(name, subject alternative names)` into `dir`.
pub fn write(dir: &Path, nodes: &[(String, Vec<String>)]) -> Result<()> {
    let ca_params = || {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "tandem test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p
    };
    let ca_key = KeyPair::generate()?;
    let ca = ca_params().self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    let issuer = Issuer::new(ca_params(), ca_key);
    for (name, sans) in nodes {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(sans.clone())?;
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
    }
    Ok(())
}

/// The secrets block of node `name` for the files [`write`] made in `dir` (the heartbeat key file is `dir/hb.key`).
pub fn secrets(dir: &Path, name: &str) -> tandem_runtime::config::Secrets {
    tandem_runtime::config::Secrets {
        heartbeat_key_file: dir.join("hb.key"),
        ca_cert_file: dir.join("ca.crt"),
        node_cert_file: dir.join(format!("{name}.crt")),
        node_key_file: dir.join(format!("{name}.key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_certificates_load_as_the_nodes_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = [("a".to_string(), vec!["a".to_string()]), ("b".to_string(), vec!["b".to_string()])];
        write(dir.path(), &nodes).expect("write");
        for (name, _) in &nodes {
            tandem_runtime::daemon::peer::PeerTls::load(&secrets(dir.path(), name)).expect("loads");
        }
    }
}
