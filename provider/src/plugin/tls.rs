//! AutoMTLS: the server certificate we generate per process, and a client verifier pinned to the exact
//! certificate Terraform passed in `PLUGIN_CLIENT_CERT`.
//!
//! Terraform's client certificate is a self-signed ECDSA P-521/SHA-512 certificate flagged as a CA and used as an
//! end-entity certificate. webpki refuses that, so instead of chain validation we compare the presented DER with
//! the pinned one and verify the handshake signatures with the aws-lc-rs provider's algorithms (which include
//! P-521; `ring` has none).

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::ServerConfig;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::error::PluginError;

/// The name Terraform verifies our certificate against.
const SERVER_NAME: &str = "localhost";

/// The server's certificate and private key, generated afresh by every process.
pub struct ServerIdentity {
    /// DER of the self-signed certificate (also sent, base64, in the handshake line).
    pub cert_der: CertificateDer<'static>,
    key_der: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity").finish_non_exhaustive()
    }
}

/// Generates an ECDSA P-256 self-signed certificate for `localhost` (not a CA; Terraform accepts it).
pub fn generate_server_identity() -> Result<ServerIdentity, PluginError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    params.distinguished_name.push(DnType::OrganizationName, "tandem");
    let cert = params.self_signed(&key)?;
    Ok(ServerIdentity { cert_der: cert.der().clone(), key_der: PrivatePkcs8KeyDer::from(key.serialize_der()) })
}

/// Parses the PEM from `PLUGIN_CLIENT_CERT` into the certificate(s) to pin.
pub fn parse_client_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PluginError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PluginError::InvalidClientCert { reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(PluginError::InvalidClientCert { reason: "no CERTIFICATE block found".to_string() });
    }
    Ok(certs)
}

/// The rustls provider we use everywhere: aws-lc-rs (P-521 support; keeps `ring` out).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// Builds the server TLS configuration: TLS 1.3 and 1.2, ALPN `h2`, mandatory client certificate pinned to
/// `pinned`.
pub fn server_config(
    identity: &ServerIdentity,
    pinned: Vec<CertificateDer<'static>>,
) -> Result<Arc<ServerConfig>, PluginError> {
    let provider = crypto_provider();
    let verifier = PinnedClientCertVerifier::new(pinned, provider.signature_verification_algorithms);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![identity.cert_der.clone()], PrivateKeyDer::Pkcs8(identity.key_der.clone_key()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts exactly the pinned client certificate(s); checks the handshake signatures with the provider's
/// algorithms.
#[derive(Debug)]
pub struct PinnedClientCertVerifier {
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClientCertVerifier {
    /// A verifier that accepts only a certificate byte-identical to one of `pinned`.
    pub fn new(pinned: Vec<CertificateDer<'static>>, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { pinned, algorithms }
    }
}

impl ClientCertVerifier for PinnedClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: Go's client then sends its certificate whatever its issuer.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, PKCS_ECDSA_P521_SHA512};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// A client certificate shaped like Terraform's (go-plugin's `generateCert`): ECDSA P-521/SHA-512,
    /// self-signed, CA flag set, SAN localhost, server+client auth.
    fn terraform_like_client_cert() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.distinguished_name.push(DnType::OrganizationName, "HashiCorp");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyCertSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    fn client_config(
        server_cert: &CertificateDer<'static>,
        client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(server_cert.clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client {
            Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// Runs one handshake over an in-memory pipe; returns the server's verdict and, on success, the ALPN.
    async fn handshake(
        pinned: &CertificateDer<'static>,
        client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Result<Option<Vec<u8>>, std::io::Error> {
        let identity = generate_server_identity().unwrap();
        let acceptor = TlsAcceptor::from(server_config(&identity, vec![pinned.clone()]).unwrap());
        let connector = TlsConnector::from(client_config(&identity.cert_der, client, version));
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);

        let client_task = tokio::spawn(async move {
            let name = ServerName::try_from("localhost").unwrap();
            let mut stream = connector.connect(name, client_io).await?;
            stream.write_all(b"ping").await?;
            stream.flush().await?;
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        });

        let server_result = match acceptor.accept(server_io).await {
            Ok(mut stream) => {
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let mut buf = [0u8; 4];
                stream.read_exact(&mut buf).await.unwrap();
                stream.write_all(b"pong").await.unwrap();
                stream.flush().await.unwrap();
                Ok(alpn)
            }
            Err(e) => Err(e),
        };
        let client_result = client_task.await.unwrap();
        match &server_result {
            Ok(_) => assert_eq!(&client_result.unwrap(), b"pong"),
            Err(_) => assert!(client_result.is_err(), "client must see the refusal"),
        }
        server_result
    }

    #[tokio::test]
    async fn pinned_p521_ca_client_cert_is_accepted_over_tls13_and_tls12() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (cert, key) = terraform_like_client_cert();
            let alpn = handshake(&cert, Some((cert.clone(), key)), version).await.unwrap();
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "{version:?}");
        }
    }

    #[tokio::test]
    async fn client_without_cert_is_refused() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (pinned, _) = terraform_like_client_cert();
            let err = handshake(&pinned, None, version).await.unwrap_err();
            assert!(err.to_string().to_lowercase().contains("certificate"), "{version:?}: {err}");
        }
    }

    #[tokio::test]
    async fn client_with_other_cert_is_refused() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (pinned, _) = terraform_like_client_cert();
            let other = terraform_like_client_cert();
            let err = handshake(&pinned, Some(other), version).await.unwrap_err();
            assert!(err.to_string().contains("UnknownIssuer"), "{version:?}: {err}");
        }
    }

    #[test]
    fn verifier_offers_p521_and_requires_a_cert() {
        let verifier = PinnedClientCertVerifier::new(vec![], crypto_provider().signature_verification_algorithms);
        assert!(verifier.client_auth_mandatory());
        assert!(verifier.root_hint_subjects().is_empty());
        assert!(verifier.supported_verify_schemes().contains(&SignatureScheme::ECDSA_NISTP521_SHA512));
    }

    #[test]
    fn client_cert_pem_is_parsed_and_garbage_refused() {
        let (cert, _) = terraform_like_client_cert();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert.as_ref())
        );
        assert_eq!(parse_client_certs(&pem).unwrap(), vec![cert]);
        assert!(parse_client_certs("hello").is_err());
    }
}
