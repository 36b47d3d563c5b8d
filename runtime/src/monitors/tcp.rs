//! `monitor "tcp"`: a TCP connection to `address` (host:port) must be accepted. Reuses the NP witness probe
//! ([`crate::membership::witness`]): the host is resolved, any resolved address will do.

use std::time::Duration;

use super::{Check, Outcome};
use crate::config::{HostPort, NpProbe};
use crate::membership::witness::Witness;

/// The connection was refused, timed out, or the host does not resolve.
pub const CODE_TCP_FAILED: &str = "TDM-MON-012";

pub struct TcpCheck {
    address: HostPort,
    witness: Witness,
    timeout: Duration,
}

impl TcpCheck {
    /// `timeout` bounds resolution and connection together.
    pub fn new(address: HostPort, timeout: Duration) -> TcpCheck {
        let witness = Witness::new(NpProbe::Tcp { address: address.clone() });
        TcpCheck { address, witness, timeout }
    }
}

#[async_trait::async_trait]
impl Check for TcpCheck {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    async fn check(&self) -> Outcome {
        match self.witness.probe(self.timeout).await {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::error(CODE_TCP_FAILED, format!("cannot connect to {}: {e}", self.address)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listening_port_is_ok_and_closed_port_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = TcpCheck::new(HostPort { host: "127.0.0.1".into(), port }, Duration::from_secs(5));
        assert_eq!(check.check().await, Outcome::Ok);
        drop(listener);
        let outcome = check.check().await;
        assert_eq!(outcome.code(), Some(CODE_TCP_FAILED), "{outcome}");
        assert!(outcome.message().contains(&format!("127.0.0.1:{port}")), "{outcome}");
    }
}
