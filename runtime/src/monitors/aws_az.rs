//! `monitor "aws_az"`: DescribeAvailabilityZones says the node's zone is `available`.
//!
//! Needs `ec2:DescribeAvailabilityZones`. The EC2 client must be for the region of the node's zone. A zone in any
//! other state (impaired, unavailable, information, constrained) is an error; a zone AWS does not know is an
//! error too (the zone name is wrong). When the API call itself fails (endpoint unreachable, throttled, server
//! error, not authorized) the answer is *unknown*: the monitor's `on_aws_error` decides.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{Check, Outcome};

/// The zone is not `available`.
pub const CODE_AZ_NOT_AVAILABLE: &str = "TDM-MON-020";
/// The region does not know the zone (its name is invalid).
pub const CODE_AZ_NOT_FOUND: &str = "TDM-MON-021";
/// The EC2 API failed or could not be reached (unknown).
pub const CODE_AZ_API: &str = "TDM-MON-022";
/// Not authorized to call ec2:DescribeAvailabilityZones, or the credentials were refused (unknown).
pub const CODE_AZ_NOT_AUTHORIZED: &str = "TDM-MON-023";

/// The AWS error codes that mean "no such zone" (a definite answer, not an API failure).
const ZONE_NOT_FOUND_CODES: &[&str] = &["InvalidParameterValue", "InvalidZone.NotFound", "InvalidAvailabilityZone"];
/// The AWS error codes that mean the caller may not ask.
const NOT_AUTHORIZED_CODES: &[&str] = &[
    "UnauthorizedOperation",
    "AuthFailure",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
];

pub struct AzCheck {
    client: aws_sdk_ec2::Client,
    zone: String,
}

impl AzCheck {
    pub fn new(client: aws_sdk_ec2::Client, zone: &str) -> AzCheck {
        AzCheck { client, zone: zone.to_string() }
    }
}

#[async_trait::async_trait]
impl Check for AzCheck {
    fn kind(&self) -> &'static str {
        "aws_az"
    }

    fn calls_aws(&self) -> bool {
        true
    }

    async fn check(&self) -> Outcome {
        let answer = self.client.describe_availability_zones().zone_names(&self.zone).send().await;
        let output = match answer {
            Ok(output) => output,
            Err(e) => {
                let service_code = match &e {
                    SdkError::ServiceError(_) => e.code(),
                    _ => None,
                };
                return api_failure(&self.zone, service_code, DisplayErrorContext(&e).to_string());
            }
        };
        let Some(zone) = output.availability_zones().iter().find(|z| z.zone_name() == Some(self.zone.as_str())) else {
            return not_found(&self.zone);
        };
        let state = zone.state().map(|s| s.as_str()).unwrap_or("(no state)");
        if state == "available" {
            return Outcome::Ok;
        }
        let messages: Vec<&str> = zone.messages().iter().filter_map(|m| m.message()).collect();
        let said = if messages.is_empty() { String::new() } else { format!(" (AWS: {})", messages.join("; ")) };
        Outcome::error(
            CODE_AZ_NOT_AVAILABLE,
            format!("availability zone {} is {state}, not available{said}", self.zone),
        )
    }
}

fn not_found(zone: &str) -> Outcome {
    Outcome::error(CODE_AZ_NOT_FOUND, format!("availability zone {zone} does not exist in the client's region"))
}

/// The outcome of a failed DescribeAvailabilityZones call; `service_code` is AWS's error code when AWS answered.
fn api_failure(zone: &str, service_code: Option<&str>, detail: String) -> Outcome {
    match service_code {
        Some(code) if ZONE_NOT_FOUND_CODES.contains(&code) => Outcome::error(
            CODE_AZ_NOT_FOUND,
            format!("availability zone {zone} is not a zone of the client's region: {detail}"),
        ),
        Some(code) if NOT_AUTHORIZED_CODES.contains(&code) => Outcome::unknown(
            CODE_AZ_NOT_AUTHORIZED,
            format!("cannot ask EC2 about availability zone {zone} (ec2:DescribeAvailabilityZones): {detail}"),
        ),
        _ => Outcome::unknown(
            CODE_AZ_API,
            format!("describing EC2 Availability Zone ({zone}) failed, its state is unknown: {detail}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_zone_answers_are_errors() {
        let o = api_failure("us-east-1z", Some("InvalidParameterValue"), "bad zone".into());
        assert_eq!((o.name(), o.code()), ("error", Some(CODE_AZ_NOT_FOUND)));
        assert_eq!(not_found("x").code(), Some(CODE_AZ_NOT_FOUND));
    }

    #[test]
    fn authorization_failures_are_unknown() {
        let o = api_failure("us-east-1a", Some("UnauthorizedOperation"), "denied".into());
        assert_eq!((o.name(), o.code()), ("unknown", Some(CODE_AZ_NOT_AUTHORIZED)));
        assert!(o.message().contains("ec2:DescribeAvailabilityZones"), "{o}");
    }

    #[test]
    fn other_api_failures_are_unknown() {
        for code in [None, Some("RequestLimitExceeded"), Some("InternalError")] {
            let o = api_failure("us-east-1a", code, "boom".into());
            assert_eq!((o.name(), o.code()), ("unknown", Some(CODE_AZ_API)), "{code:?}");
        }
    }
}
