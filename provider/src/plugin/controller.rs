//! go-plugin's own services: `plugin.GRPCController` (Terraform asks us to exit) and `plugin.GRPCStdio`
//! (stdout/stderr mirroring, which we do not use: we answer an empty stream).
//!
//! Without `GRPCController/Shutdown` go-plugin waits 2 s per provider process and then kills it.

use tandem_proto::plugin::grpc_controller_server::GrpcController;
use tandem_proto::plugin::grpc_stdio_server::GrpcStdio;
use tandem_proto::plugin::{Empty, StdioData};
use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

/// A one-way "please shut down" flag shared by the controller, the signal handlers and the server.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A flag that is not yet raised.
    pub fn new() -> Self {
        Self { tx: watch::Sender::new(false) }
    }

    /// Raises the flag (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A receiver for tasks that should stop when the flag is raised.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Resolves once the flag is raised.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // The sender lives in `self`'s clones; if all are gone nobody can trigger any more: stop too.
            let _ = rx.wait_for(|raised| *raised).await;
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// `plugin.GRPCController`: Shutdown answers, then the server drains and `serve` returns.
#[derive(Debug)]
pub struct Controller {
    shutdown: Shutdown,
}

impl Controller {
    /// A controller raising `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Self { shutdown }
    }
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::debug!("Terraform requested plugin shutdown");
        self.shutdown.trigger();
        Ok(Response::new(Empty {}))
    }
}

/// `plugin.GRPCStdio`: we never write to stdout after the handshake and log to stderr directly, so the stream
/// is empty (go-plugin logs the EOF at debug level and carries on).
#[derive(Debug, Default)]
pub struct Stdio;

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    async fn stream_stdio(&self, _request: Request<()>) -> Result<Response<BoxStream<StdioData>>, Status> {
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn shutdown_rpc_raises_the_flag() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn(shutdown.wait());
        assert!(!*shutdown.subscribe().borrow());
        Controller::new(shutdown.clone()).shutdown(Request::new(Empty {})).await.unwrap();
        assert!(*shutdown.subscribe().borrow());
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn stdio_stream_is_empty() {
        let mut stream = Stdio.stream_stdio(Request::new(())).await.unwrap().into_inner();
        assert!(stream.next().await.is_none());
    }
}
