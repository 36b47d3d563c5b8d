//! TLS on the peer link with the cluster certificates: the same rustls configurations as the peer gRPC service
//! (`daemon::peer::PeerTls`: TLS 1.3, both sides present a node certificate signed by the cluster CA).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpStream;

use super::ReplicationError;

/// Open the TLS session of the primary's side over a connected TCP stream; `server_name` is the name the peer's
/// certificate carries.
pub async fn connect_tls(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ReplicationError> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| ReplicationError::Tls(format!("peer name {server_name:?}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ReplicationError::Tls(format!("handshake with the peer: {e}")))
}

/// Accept the TLS session of the secondary's side over an accepted TCP stream. The peer must present a client
/// certificate of the cluster CA *for `peer_name`*: any other node's certificate (every node holds one of the same
/// CA) is refused, so only the configured peer can write this replica.
pub async fn accept_tls(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    peer_name: &str,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, ReplicationError> {
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(|e| ReplicationError::Tls(format!("handshake with the peer: {e}")))?;
    check_peer_name(tls.get_ref().1.peer_certificates(), peer_name)?;
    Ok(tls)
}

/// The end-entity certificate (already verified against the cluster CA by the handshake) names `peer_name`.
fn check_peer_name(
    chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    peer_name: &str,
) -> Result<(), ReplicationError> {
    let refused = |why: String| ReplicationError::Tls(format!("the peer is not node {peer_name:?}: {why}"));
    let cert = chain.and_then(|c| c.first()).ok_or_else(|| refused("it presented no certificate".into()))?;
    let name = ServerName::try_from(peer_name.to_string())
        .map_err(|e| ReplicationError::Tls(format!("peer name {peer_name:?}: {e}")))?;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| refused(format!("unreadable certificate: {e}")))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| refused("its certificate is for another name (another node of the cluster?)".into()))
}
