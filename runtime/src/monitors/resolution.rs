//! The second half of the `aws_dns` monitor (`check_resolution = true`, the default): once the record set in
//! Route 53 holds this node's address (the resource's probe), the record's name must also resolve to it through
//! the node's system resolver — what clients in the VPC will see (the Route 53 Resolver on AWS).
//!
//! A name that does not resolve, or resolves elsewhere, is a **warning**, not an error: the record is right, so
//! rewriting it (the recovery) cannot help; the cause is a resolver cache still within the old TTL, a resolver
//! that does not see the private zone (zone not associated with the VPC), or a split-horizon view. It shows in
//! status and the log with its code; `start_wait` (default 60 s for aws_dns) leaves room for propagation.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::time::Duration;

use super::{Check, Outcome};
use crate::config::{Config, Monitor, MonitorKind, Node, ResourceKind};

/// The name resolves, but not (only) to this node's address.
pub const CODE_RESOLVES_ELSEWHERE: &str = "TDM-MON-034";
/// The name does not resolve through the system resolver.
pub const CODE_DOES_NOT_RESOLVE: &str = "TDM-MON-035";

/// (record name, address) the name of `monitor`'s aws_dns resource must resolve to on `node`; None when the
/// monitor is not an aws_dns monitor with `check_resolution`, or its resource is not an aws_dns of the config.
pub fn target(config: &Config, monitor: &Monitor, node: &Node) -> Option<(String, Ipv4Addr)> {
    let MonitorKind::AwsDns { resource, check_resolution: true } = &monitor.kind else { return None };
    config.groups.iter().find_map(|g| match g.resource(resource).map(|r| &r.kind) {
        Some(ResourceKind::AwsDns(dns)) => Some((dns.record_name.clone(), dns.ip_for(node))),
        _ => None,
    })
}

/// A name lookup: the system resolver in production, a fixed answer in tests.
pub type Lookup =
    Box<dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> + Send + Sync>;

/// The system resolver (getaddrinfo: /etc/hosts, then the resolvers of /etc/resolv.conf).
pub fn system_lookup() -> Lookup {
    Box::new(|name: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((name.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    })
}

/// `inner` (the resource's probe), then the resolution of `name`, which must give exactly `want`.
pub struct ResolutionCheck {
    inner: Box<dyn Check>,
    name: String,
    want: Ipv4Addr,
    timeout: Duration,
    lookup: Lookup,
}

impl ResolutionCheck {
    /// `timeout` bounds the lookup alone (the runner's timeout bounds the whole check).
    pub fn new(
        inner: Box<dyn Check>,
        name: &str,
        want: Ipv4Addr,
        timeout: Duration,
        lookup: Lookup,
    ) -> ResolutionCheck {
        ResolutionCheck { inner, name: name.trim_end_matches('.').to_string(), want, timeout, lookup }
    }

    async fn resolve(&self) -> Outcome {
        let found: BTreeSet<Ipv4Addr> = match tokio::time::timeout(self.timeout, (self.lookup)(self.name.clone())).await
        {
            Ok(Ok(addrs)) => addrs
                .into_iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            Ok(Err(e)) => return self.warn(CODE_DOES_NOT_RESOLVE, format!("does not resolve here ({e})")),
            Err(_) => return self.warn(CODE_DOES_NOT_RESOLVE, format!("did not resolve within {:?}", self.timeout)),
        };
        if found.len() == 1 && found.contains(&self.want) {
            return Outcome::Ok;
        }
        let list: Vec<String> = found.iter().map(Ipv4Addr::to_string).collect();
        self.warn(CODE_RESOLVES_ELSEWHERE, format!("resolves to {} here", list.join(", ")))
    }

    fn warn(&self, code: &str, what: String) -> Outcome {
        Outcome::Warn(format!(
            "[{code}] the record holds {} in Route 53, but {} {what}: a resolver cache within the old TTL, or the \
             resolver does not see the zone (is the private zone associated with this VPC?)",
            self.want, self.name
        ))
    }
}

#[async_trait::async_trait]
impl Check for ResolutionCheck {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn calls_aws(&self) -> bool {
        self.inner.calls_aws()
    }

    async fn check(&self) -> Outcome {
        match self.inner.check().await {
            Outcome::Ok => self.resolve().await,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Outcome);

    #[async_trait::async_trait]
    impl Check for Fixed {
        fn kind(&self) -> &'static str {
            "aws_dns"
        }
        fn calls_aws(&self) -> bool {
            true
        }
        async fn check(&self) -> Outcome {
            self.0.clone()
        }
    }

    fn check(inner: Outcome, name: &str, want: Ipv4Addr) -> ResolutionCheck {
        ResolutionCheck::new(Box::new(Fixed(inner)), name, want, Duration::from_secs(5), system_lookup())
    }

    #[tokio::test]
    async fn a_name_resolving_to_our_address_is_ok() {
        // `localhost` resolves through the system resolver (/etc/hosts) on every machine.
        let c = check(Outcome::Ok, "localhost.", Ipv4Addr::LOCALHOST);
        assert_eq!(c.check().await, Outcome::Ok);
        assert!(c.calls_aws(), "the probe half calls AWS: a timeout is unknown, not an error");
    }

    #[tokio::test]
    async fn a_name_resolving_elsewhere_is_a_warning_with_its_code() {
        let c = check(Outcome::Ok, "localhost", Ipv4Addr::new(10, 0, 0, 9));
        match c.check().await {
            Outcome::Warn(m) => assert!(m.contains(CODE_RESOLVES_ELSEWHERE) && m.contains("127.0.0.1"), "{m}"),
            other => panic!("expected a warning, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_warning_with_its_code() {
        // A resolver that answers NXDOMAIN-like (no DNS traffic leaves the test machine).
        let nx: Lookup = Box::new(|name: String| {
            Box::pin(async move { Err(std::io::Error::other(format!("failed to lookup address information: {name}"))) })
        });
        let c = ResolutionCheck::new(
            Box::new(Fixed(Outcome::Ok)),
            "db.internal.example.",
            Ipv4Addr::new(10, 0, 0, 9),
            Duration::from_secs(5),
            nx,
        );
        match c.check().await {
            Outcome::Warn(m) => assert!(m.contains(CODE_DOES_NOT_RESOLVE), "{m}"),
            other => panic!("expected a warning, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_record_check_comes_first() {
        let broken = Outcome::error("TDM-MON-032", "record missing");
        let c = check(broken.clone(), "localhost", Ipv4Addr::LOCALHOST);
        assert_eq!(c.check().await, broken, "no lookup when the record itself is wrong");
    }
}
