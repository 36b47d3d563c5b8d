//! Where Terraform connects: a unix socket in a fresh private temp dir (removed on drop), or loopback TCP in
//! `PLUGIN_MIN_PORT..=PLUGIN_MAX_PORT` when a unix socket cannot be used; and the accept loop that terminates TLS
//! (one task per handshake, so a stalled client cannot block the listener) and feeds tonic.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::error::PluginError;
use super::handshake::Endpoint;

/// Longest a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. EMFILE) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
const SOCKET_FILE: &str = "plugin.sock";

/// A private directory holding the unix socket; removed (with the socket) when dropped.
#[derive(Debug)]
pub struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    /// Creates a fresh directory (mode 0700) under `base`.
    pub fn create(base: &Path) -> Result<Self, PluginError> {
        let pid = std::process::id();
        let mut last_err = None;
        for attempt in 0u32..16 {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
            let path = base.join(format!("tandem-plugin-{pid}-{nanos:08x}{attempt}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(source) => return Err(PluginError::SocketDir { path, source }),
            }
        }
        Err(PluginError::SocketDir {
            path: base.to_path_buf(),
            source: last_err.unwrap_or_else(|| io::Error::other("no free directory name")),
        })
    }

    /// The socket path inside it.
    pub fn socket_path(&self) -> PathBuf {
        self.path.join(SOCKET_FILE)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "removing the plugin socket directory");
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// Unix socket, and the directory that holds it (removed after the listener closes: fields drop in order).
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its private directory.
        _dir: SocketDir,
    },
    /// Loopback TCP.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds a unix socket in a fresh dir under `base`; on failure, the first free loopback TCP port in
    /// `min..=max` (`min == 0` means: any port the OS picks).
    pub fn bind(base: &Path, min: u16, max: u16) -> Result<(Self, Endpoint), PluginError> {
        let unix_err = match Self::bind_unix(base) {
            Ok(bound) => return Ok(bound),
            Err(e) => e,
        };
        tracing::warn!(error = %unix_err, "cannot use a unix socket; falling back to loopback TCP");
        for port in min..=max {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                let local = l.local_addr()?;
                Ok((TcpListener::from_std(l)?, local))
            }) {
                Ok((listener, local)) => return Ok((Self::Tcp(listener), Endpoint::Tcp(local))),
                Err(e) => tracing::trace!(port, error = %e, "port unavailable"),
            }
        }
        Err(PluginError::Listen { unix: unix_err.to_string(), min, max })
    }

    fn bind_unix(base: &Path) -> Result<(Self, Endpoint), PluginError> {
        let dir = SocketDir::create(base)?;
        let path = dir.socket_path();
        let listener =
            UnixListener::bind(&path).map_err(|source| PluginError::SocketDir { path: path.clone(), source })?;
        Ok((Self::Unix { listener, _dir: dir }, Endpoint::Unix(path)))
    }

    /// Accepts one raw connection.
    async fn accept(&self) -> io::Result<BoxedIo> {
        match self {
            Self::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok(Box::pin(stream))
            }
            Self::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Box::pin(stream))
            }
        }
    }
}

/// Anything tonic can serve over.
pub trait Io: AsyncRead + AsyncWrite + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + 'static> Io for T {}
type BoxedIo = Pin<Box<dyn Io>>;

/// One accepted (and, with AutoMTLS, TLS-terminated) connection handed to tonic.
pub struct Conn(BoxedIo);

impl Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

/// The connection stream for `serve_with_incoming_shutdown`.
pub type Incoming = ReceiverStream<Result<Conn, Infallible>>;

/// Spawns the accept loop. With `tls`, each handshake runs in its own task; failures are logged to stderr and
/// the connection dropped. The loop ends when `stop` turns true; the returned handle lets the caller abort it.
pub fn spawn_accept_loop(
    listener: Listener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> (Incoming, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let handle = tokio::spawn(async move {
        loop {
            let stopped = async { stop.wait_for(|stopped| *stopped).await.map(|_| ()) };
            let accepted = tokio::select! {
                _ = stopped => break,
                accepted = listener.accept() => accepted,
            };
            let io = match accepted {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a plugin connection");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let tx = tx.clone();
            match &tls {
                None => {
                    if tx.send(Ok(Conn(io))).await.is_err() {
                        break;
                    }
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                            Ok(Ok(stream)) => {
                                tracing::debug!("TLS handshake completed");
                                let _ = tx.send(Ok(Conn(Box::pin(stream)))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "refused a plugin connection: TLS handshake failed")
                            }
                            Err(_) => tracing::warn!(
                                timeout_secs = TLS_HANDSHAKE_TIMEOUT.as_secs(),
                                "refused a plugin connection: TLS handshake timed out"
                            ),
                        }
                    });
                }
            }
        }
        tracing::debug!("plugin accept loop stopped");
    });
    (ReceiverStream::new(rx), handle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_socket_lives_in_private_dir_removed_on_drop() {
        let base = tempfile::tempdir().unwrap();
        let (listener, endpoint) = Listener::bind(base.path(), 10000, 25000).unwrap();
        let Endpoint::Unix(path) = endpoint else { panic!("expected a unix socket, got {endpoint:?}") };
        assert!(path.exists());
        let dir = path.parent().unwrap().to_path_buf();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
        drop(listener);
        assert!(!dir.exists(), "socket dir must be cleaned up");
    }

    #[tokio::test]
    async fn falls_back_to_loopback_tcp_when_unix_path_is_too_long() {
        let base = tempfile::tempdir().unwrap();
        let long = base.path().join("d".repeat(120));
        std::fs::create_dir(&long).unwrap();
        let (_listener, endpoint) = Listener::bind(&long, 0, 0).unwrap();
        match endpoint {
            Endpoint::Tcp(addr) => assert!(addr.ip().is_loopback()),
            other => panic!("expected tcp, got {other:?}"),
        }
        let leftovers: Vec<_> = std::fs::read_dir(&long).unwrap().collect();
        assert!(leftovers.is_empty(), "failed unix attempt must clean its dir");
    }

    #[tokio::test]
    async fn plain_connections_are_forwarded_until_stopped() {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;

        let base = tempfile::tempdir().unwrap();
        let (listener, endpoint) = Listener::bind(base.path(), 10000, 25000).unwrap();
        let Endpoint::Unix(path) = endpoint else { panic!("expected unix") };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (mut incoming, handle) = spawn_accept_loop(listener, None, stop_rx);
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        client.write_all(b"x").await.unwrap();
        assert!(incoming.next().await.is_some());
        stop_tx.send_replace(true);
        handle.await.unwrap();
        assert!(incoming.next().await.is_none(), "stream ends once the loop stops");
    }

    #[tokio::test]
    async fn stalled_tls_client_does_not_block_the_next_one() {
        use std::sync::Arc;

        use futures::StreamExt;
        use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P521_SHA512};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
        use tokio_rustls::TlsConnector;

        use super::super::tls;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).unwrap();
        let client_cert =
            CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap().der().clone();
        let identity = tls::generate_server_identity().unwrap();
        let acceptor = TlsAcceptor::from(tls::server_config(&identity, vec![client_cert.clone()]).unwrap());

        let base = tempfile::tempdir().unwrap();
        let (listener, endpoint) = Listener::bind(base.path(), 10000, 25000).unwrap();
        let Endpoint::Unix(path) = endpoint else { panic!("expected unix") };
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (mut incoming, _handle) = spawn_accept_loop(listener, Some(acceptor), stop_rx);

        // Connects and never speaks TLS.
        let _stalled = tokio::net::UnixStream::connect(&path).await.unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.cert_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![client_cert],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let connector = TlsConnector::from(Arc::new(config));
        let raw = tokio::net::UnixStream::connect(&path).await.unwrap();
        let client =
            tokio::spawn(async move { connector.connect(ServerName::try_from("localhost").unwrap(), raw).await });
        let conn = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
        assert!(matches!(conn, Ok(Some(Ok(_)))), "second client must get through");
        client.await.unwrap().unwrap();
    }
}
