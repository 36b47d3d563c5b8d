//! `monitor "aws_vip" | "aws_eip" | "aws_dns" | "mirror"`: the monitored group resource's own `probe`, which
//! reads (and never repairs) the resource's state on this node.
//!
//! - `running` = ok;
//! - `stopped` = error: the resource is no longer active here (someone changed the VIP's routes, disassociated the
//!   EIP, changed or removed the record set, the mirror stopped), with the kind's code below;
//! - a probe error = error with the resource's own code (e.g. TDM-AWS-122, routing for the VIP was changed), except
//!   an AWS API failure (endpoint unreachable, throttled, not authorized, no credentials: see
//!   [`is_aws_api_failure`]), which is *unknown*: `on_aws_error` decides.

use std::sync::Arc;

use super::{Check, Outcome};
use crate::resources::{GroupResource, Invocation, Probe, ResourceError};

/// The VIP is no longer bound here / its routes no longer target this node's ENI.
pub const CODE_VIP_MOVED: &str = "TDM-MON-030";
/// The EIP is no longer associated with this node's ENI.
pub const CODE_EIP_MOVED: &str = "TDM-MON-031";
/// The record set is missing or no longer holds this node's address.
pub const CODE_DNS_MOVED: &str = "TDM-MON-032";
/// The mirror disk is no longer active (replicating) on this node.
pub const CODE_MIRROR_STOPPED: &str = "TDM-MON-033";

/// The runtime's AWS codes (`crate::aws`) that mean "could not ask AWS": endpoint unreachable (101), throttled or
/// failed on AWS's side (102), not authorized (103), credentials missing or refused (104). Not-found and
/// state codes (110..) are definite answers and stay errors.
const AWS_API_FAILURE_CODES: &[&str] = &["TDM-AWS-101", "TDM-AWS-102", "TDM-AWS-103", "TDM-AWS-104"];

/// True when a resource error says the AWS API could not be asked (rather than what the resource's state is),
/// whatever its class: a monitor that cannot ask AWS answers unknown, not failed.
pub fn is_aws_api_failure(e: &ResourceError) -> bool {
    AWS_API_FAILURE_CODES.contains(&e.code)
}

/// The resource kind a monitor kind watches ("mirror" watches "mirror_disk"); "" for kinds that watch none.
pub fn expected_resource_kind(monitor_kind: &str) -> &'static str {
    match monitor_kind {
        "aws_vip" => "aws_vip",
        "aws_eip" => "aws_eip",
        "aws_dns" => "aws_dns",
        "mirror" => "mirror_disk",
        _ => "",
    }
}

pub struct ResourceCheck {
    kind: &'static str,
    resource: Arc<dyn GroupResource>,
}

impl ResourceCheck {
    /// `kind` is the monitor kind: "aws_vip", "aws_eip", "aws_dns" or "mirror".
    pub fn new(kind: &'static str, resource: Arc<dyn GroupResource>) -> ResourceCheck {
        ResourceCheck { kind, resource }
    }

    fn stopped(&self) -> Outcome {
        let name = self.resource.name();
        match self.kind {
            "aws_vip" => Outcome::error(
                CODE_VIP_MOVED,
                format!(
                    "the VIP of resource {name} no longer points at this node (routing for the VIP was changed, or \
                     the address is no longer bound here)"
                ),
            ),
            "aws_eip" => Outcome::error(
                CODE_EIP_MOVED,
                format!("the Elastic IP of resource {name} is no longer associated with this node's ENI"),
            ),
            "aws_dns" => Outcome::error(
                CODE_DNS_MOVED,
                format!("the record set of resource {name} is missing or no longer points at this node"),
            ),
            _ => Outcome::error(CODE_MIRROR_STOPPED, format!("mirror disk {name} is no longer active on this node")),
        }
    }
}

#[async_trait::async_trait]
impl Check for ResourceCheck {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn calls_aws(&self) -> bool {
        self.kind.starts_with("aws_")
    }

    async fn check(&self) -> Outcome {
        match self.resource.probe(&Invocation::default()).await {
            Ok(Probe::Running) => Outcome::Ok,
            Ok(Probe::Stopped) => self.stopped(),
            Err(e) if is_aws_api_failure(&e) => Outcome::Unknown { code: e.code, message: e.message },
            Err(e) => Outcome::Error { code: e.code, message: e.message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ErrorClass;
    use std::sync::Mutex;

    struct Scripted {
        kind: &'static str,
        answer: Mutex<Result<Probe, ResourceError>>,
    }

    #[async_trait::async_trait]
    impl GroupResource for Scripted {
        fn name(&self) -> &str {
            "r"
        }
        fn kind(&self) -> &'static str {
            self.kind
        }
        async fn start(&self, _: &Invocation) -> Result<(), ResourceError> {
            Ok(())
        }
        async fn stop(&self, _: &Invocation) -> Result<(), ResourceError> {
            Ok(())
        }
        async fn probe(&self, _: &Invocation) -> Result<Probe, ResourceError> {
            self.answer.lock().unwrap().clone()
        }
    }

    async fn outcome(kind: &'static str, answer: Result<Probe, ResourceError>) -> Outcome {
        let resource = Arc::new(Scripted { kind: expected_resource_kind(kind), answer: answer.into() });
        ResourceCheck::new(kind, resource).check().await
    }

    #[tokio::test]
    async fn running_is_ok() {
        assert_eq!(outcome("aws_vip", Ok(Probe::Running)).await, Outcome::Ok);
    }

    #[tokio::test]
    async fn stopped_is_an_error_with_the_kind_code() {
        for (kind, code) in [
            ("aws_vip", CODE_VIP_MOVED),
            ("aws_eip", CODE_EIP_MOVED),
            ("aws_dns", CODE_DNS_MOVED),
            ("mirror", CODE_MIRROR_STOPPED),
        ] {
            let o = outcome(kind, Ok(Probe::Stopped)).await;
            assert_eq!((o.name(), o.code()), ("error", Some(code)), "{kind}: {o}");
            assert!(o.message().contains("resource r") || o.message().contains("disk r"), "{o}");
        }
    }

    #[tokio::test]
    async fn aws_api_failures_are_unknown_and_other_errors_are_errors() {
        for code in ["TDM-AWS-101", "TDM-AWS-102", "TDM-AWS-103", "TDM-AWS-104"] {
            for class in [ErrorClass::Soft, ErrorClass::Hard] {
                let o = outcome("aws_eip", Err(ResourceError::new(class, code, "cannot ask"))).await;
                assert_eq!((o.name(), o.code()), ("unknown", Some(code)));
            }
        }
        let changed = ResourceError::new(ErrorClass::Soft, "TDM-AWS-122", "routing for VIP 10.1.0.10 was changed");
        let o = outcome("aws_vip", Err(changed)).await;
        assert_eq!((o.name(), o.code()), ("error", Some("TDM-AWS-122")));
        let gone = ResourceError::new(ErrorClass::Fatal, "TDM-AWS-113", "gone");
        assert_eq!(outcome("aws_eip", Err(gone)).await.name(), "error");
    }
}
