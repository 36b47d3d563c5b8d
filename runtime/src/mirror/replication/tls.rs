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

/// Accept the TLS session of the secondary's side over an accepted TCP stream (the peer must present a client
/// certificate of the cluster CA).
pub async fn accept_tls(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, ReplicationError> {
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(|e| ReplicationError::Tls(format!("handshake with the peer: {e}")))
}
