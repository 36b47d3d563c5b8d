//! The node-to-node API: `tandem.v1.Peer` on `cluster.api_port` of the node's private IP, over TLS where both
//! sides present a certificate of the cluster CA (the files `secrets` names; `tandem_cluster` generates them).
//! It serves this node's status and events to its peers, so `tandemctl status --all` shows every node's own
//! view. Arbitration never depends on it (moves and stops go through the lease item): a node without its
//! certificates runs, with the peer API off and the reason in its status.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tandem_proto::control::peer_client::PeerClient;
use tandem_proto::control::peer_server::{Peer, PeerServer};
use tandem_proto::control::{EventsReply, EventsRequest, StatusReply, StatusRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use super::{Daemon, status};
use crate::config::Secrets;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the peer API is off or a peer could not be asked; `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("reading {what} {path}: {detail}")]
    Secret { what: &'static str, path: String, detail: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("binding the peer API on {addr}: {detail}")]
    Bind { addr: SocketAddr, detail: String },
    #[error("asking peer {node} at {addr}: {detail}")]
    Call { node: String, addr: SocketAddr, detail: String },
}

impl PeerError {
    pub fn code(&self) -> &'static str {
        match self {
            PeerError::Secret { .. } => "TDM-PEER-001",
            PeerError::Tls(_) => "TDM-PEER-002",
            PeerError::Bind { .. } => "TDM-PEER-003",
            PeerError::Call { .. } => "TDM-PEER-004",
        }
    }
}

/// Both TLS configurations of this node.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PeerError> {
    let err = |detail: String| PeerError::Secret { what, path: path.display().to_string(), detail };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>().map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PeerError> {
    let err = |detail: String| PeerError::Secret { what: "node key", path: path.display().to_string(), detail };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("no PEM private key in it".into()))
}

impl PeerTls {
    pub fn load(secrets: &Secrets) -> Result<PeerTls, PeerError> {
        let ca = read_certs("CA certificate", &secrets.ca_cert_file)?;
        let chain = read_certs("node certificate", &secrets.node_cert_file)?;
        let key = read_key(&secrets.node_key_file)?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| PeerError::Tls(format!("CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = |e: rustls::Error| PeerError::Tls(e.to_string());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| PeerError::Tls(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(tls)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls)?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(PeerTls { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// A TLS connection as tonic's server sees it.
struct Conn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

struct PeerService {
    daemon: Arc<Daemon>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(status::status(&self.daemon)))
    }

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<EventsReply>, Status> {
        Ok(Response::new(super::events::reply(&self.daemon.cx.events, req.into_inner().limit)))
    }
}

/// Binds `addr` and serves the peer API; handshakes that fail (no certificate, another CA) are counted.
pub async fn serve(daemon: Arc<Daemon>, addr: SocketAddr, tls: Arc<ServerConfig>) -> Result<(), PeerError> {
    let listener = TcpListener::bind(addr).await.map_err(|e| PeerError::Bind { addr, detail: e.to_string() })?;
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Conn, std::io::Error>>(16);
    let counter = daemon.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, from)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Conn(stream))).await;
                    }
                    Ok(Err(e)) => {
                        counter.peer_tls_rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%from, "peer API: refused a connection, TLS handshake failed: {e}");
                    }
                    Err(_) => {
                        counter.peer_tls_rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%from, "peer API: refused a connection, TLS handshake timed out");
                    }
                }
            });
        }
    });
    let service = PeerServer::new(PeerService { daemon });
    tokio::spawn(async move {
        if let Err(e) =
            tonic::transport::Server::builder().add_service(service).serve_with_incoming(ReceiverStream::new(rx)).await
        {
            tracing::error!("peer API stopped: {e}");
        }
    });
    Ok(())
}

/// Asks peer `node` at `addr` for its status, bounded by `timeout`.
pub async fn fetch_status(
    tls: &PeerTls,
    node: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<StatusReply, PeerError> {
    let err = |detail: String| PeerError::Call { node: node.to_string(), addr, detail };
    let name = ServerName::try_from(node.to_string()).map_err(|e| err(e.to_string()))?;
    let connector = TlsConnector::from(tls.client.clone());
    let call = async {
        let endpoint = Endpoint::try_from(format!("http://{addr}")).map_err(|e| err(e.to_string()))?;
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                let name = name.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| {
                err(format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()))
            })?;
        let reply =
            PeerClient::new(channel).status(StatusRequest {}).await.map_err(|e| err(e.message().to_string()))?;
        Ok(reply.into_inner())
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| err(format!("no answer within {timeout:?}")))?
}
