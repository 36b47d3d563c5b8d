//! Assembles the gRPC server (provider, health, controller, stdio), wires signals, and runs until Terraform
//! asks us to shut down.

use std::time::Duration;

use tandem_proto::plugin::grpc_controller_server::GrpcControllerServer;
use tandem_proto::plugin::grpc_stdio_server::GrpcStdioServer;
use tandem_proto::tfplugin6::provider_server::{Provider, ProviderServer};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use super::controller::{Controller, Shutdown, Stdio};
use super::error::PluginError;
use super::handshake::{self, HandshakeEnv};
use super::listen::{self, Listener};
use super::tls;

/// Largest request we accept (Terraform sends whole plans and states): 256 MiB, as Go providers allow.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 256 << 20;
/// The health service name go-plugin checks.
const HEALTH_SERVICE: &str = "plugin";
/// How long in-flight calls may take to finish after a shutdown request before we exit anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Normal mode: handshake with Terraform over AutoMTLS and serve until shut down.
pub async fn serve_terraform<P: Provider>(provider: P) -> Result<(), PluginError> {
    let env = HandshakeEnv::from_env()?;
    let identity = tls::generate_server_identity()?;
    let acceptor = TlsAcceptor::from(tls::server_config(&identity, env.client_certs)?);

    let shutdown = Shutdown::new();
    // Terraform relays Ctrl-C as StopProvider, so SIGINT must not kill us; SIGTERM ends the process.
    install_signal_handlers(&shutdown, false)?;

    let base = env.socket_dir.unwrap_or_else(std::env::temp_dir);
    let (listener, endpoint) = Listener::bind(&base, env.min_port, env.max_port)?;
    let (incoming, accept_loop) = listen::spawn_accept_loop(listener, Some(acceptor), shutdown.subscribe());

    tracing::debug!(network = endpoint.network(), address = %endpoint.address(), "plugin server listening");
    handshake::write_stdout_line(&handshake::handshake_line(&endpoint, identity.cert_der.as_ref()))?;

    let result = run_server(provider, incoming, &shutdown).await;
    accept_loop.abort();
    result
}

/// Installs SIGTERM (and, when `interrupt_stops`, SIGINT) as shutdown triggers. Otherwise SIGINT is caught and
/// ignored: installing a handler is what keeps the default action (exit) away.
pub fn install_signal_handlers(shutdown: &Shutdown, interrupt_stops: bool) -> Result<(), PluginError> {
    let mut term = signal(SignalKind::terminate()).map_err(PluginError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(PluginError::Signals)?;
    let on_term = shutdown.clone();
    tokio::spawn(async move {
        if term.recv().await.is_some() {
            tracing::info!("SIGTERM received; shutting down");
            on_term.trigger();
        }
    });
    let on_int = shutdown.clone();
    tokio::spawn(async move {
        while int.recv().await.is_some() {
            if interrupt_stops {
                tracing::info!("SIGINT received; shutting down");
                on_int.trigger();
            } else {
                tracing::debug!("SIGINT ignored: Terraform sends StopProvider instead");
            }
        }
    });
    Ok(())
}

/// Serves every plugin service on `incoming` until `shutdown` is raised, then drains for at most
/// [`SHUTDOWN_GRACE`].
pub async fn run_server<P: Provider>(
    provider: P,
    incoming: listen::Incoming,
    shutdown: &Shutdown,
) -> Result<(), PluginError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status(HEALTH_SERVICE, ServingStatus::Serving).await;

    let provider = ProviderServer::new(provider).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
    let server = Server::builder()
        .add_service(health_service)
        .add_service(provider)
        .add_service(GrpcControllerServer::new(Controller::new(shutdown.clone())))
        .add_service(GrpcStdioServer::new(Stdio))
        .serve_with_incoming_shutdown(incoming, shutdown.wait());

    let deadline = {
        let wait = shutdown.wait();
        async move {
            wait.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        result = server => {
            tracing::debug!("plugin server stopped");
            result.map_err(PluginError::from)
        }
        () = deadline => {
            tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "plugin server did not drain in time; exiting");
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tandem_proto::plugin::grpc_controller_client::GrpcControllerClient;
    use tandem_proto::tfplugin6 as tf;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// A provider where every call is UNIMPLEMENTED except the schema.
    struct Bare;

    #[tonic::async_trait]
    impl Provider for Bare {
        async fn get_provider_schema(
            &self,
            _: tonic::Request<tf::get_provider_schema::Request>,
        ) -> Result<tonic::Response<tf::get_provider_schema::Response>, tonic::Status> {
            Ok(tonic::Response::new(tf::get_provider_schema::Response::default()))
        }
    }

    #[tokio::test]
    async fn serves_health_and_provider_then_stops_on_controller_shutdown() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let (incoming, accept_loop) = listen::spawn_accept_loop(Listener::Tcp(tcp), None, shutdown.subscribe());
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { run_server(Bare, incoming, &shutdown).await }
        });

        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: HEALTH_SERVICE.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        let schema = tf::provider_client::ProviderClient::new(channel.clone())
            .get_provider_schema(tf::get_provider_schema::Request {})
            .await;
        assert!(schema.is_ok(), "{schema:?}");
        let other = tf::provider_client::ProviderClient::new(channel.clone())
            .get_metadata(tf::get_metadata::Request {})
            .await
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::Unimplemented);

        let started = std::time::Instant::now();
        GrpcControllerClient::new(channel.clone()).shutdown(tandem_proto::plugin::Empty {}).await.unwrap();
        drop(channel);
        server.await.unwrap().unwrap();
        assert!(started.elapsed() < SHUTDOWN_GRACE, "server must stop promptly, took {:?}", started.elapsed());
        accept_loop.abort();
    }
}
