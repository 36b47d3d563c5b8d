//! One shape for every AWS API failure, whatever the service: the API's error code (if it answered),
//! an operator-readable message, and the class that decides retries and drift handling.

use std::error::Error as StdError;
use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The object does not exist (any `*.NotFound` / `NoSuchEntity` code).
    NotFound,
    /// Something still depends on the object; deleting later may succeed.
    DependencyViolation,
    /// The API throttled us or failed on its side (5xx); retrying may succeed.
    Transient,
    /// The credentials are missing, wrong, expired, or lack permission.
    Auth,
    /// The endpoint could not be reached or did not answer in time.
    Unreachable,
    Other,
}

#[derive(Clone, Debug)]
pub struct AwsError {
    pub code: Option<String>,
    pub message: String,
    pub class: ErrorClass,
}

impl AwsError {
    pub fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        match &err {
            SdkError::ServiceError(ctx) => {
                let code = err.code().map(str::to_string);
                let status = ctx.raw().status().as_u16();
                let message = match err.message() {
                    Some(m) => m.to_string(),
                    None if code.is_none() => format!("HTTP {status} from the AWS endpoint, with no error code"),
                    None => String::new(),
                };
                // Some endpoints answer without an error code the SDK can parse: the HTTP status still tells.
                let class = code.as_deref().map_or_else(|| classify_status(status), classify_code);
                AwsError { code, message, class }
            }
            SdkError::TimeoutError(_) => AwsError {
                code: None,
                message: "the AWS endpoint did not answer in time (check NAT, proxy, route tables or VPC \
                          endpoints between this host and AWS)"
                    .to_string(),
                class: ErrorClass::Unreachable,
            },
            SdkError::DispatchFailure(_) => AwsError {
                code: None,
                message: format!(
                    "could not reach the AWS endpoint (check network, proxy and endpoint URL): {}",
                    DisplayErrorContext(&err)
                ),
                class: ErrorClass::Unreachable,
            },
            _ => {
                let code = err.code().map(str::to_string);
                AwsError { code, message: DisplayErrorContext(&err).to_string(), class: ErrorClass::Transient }
            }
        }
    }

    /// An error made by the provider itself about an AWS answer (e.g. a waiter that timed out).
    pub fn local(class: ErrorClass, message: impl Into<String>) -> Self {
        AwsError { code: None, message: message.into(), class }
    }

    pub fn is_not_found(&self) -> bool {
        self.class == ErrorClass::NotFound
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) if self.message.is_empty() => write!(f, "{code}"),
            Some(code) => write!(f, "{code}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl StdError for AwsError {}

/// Maps AWS error codes (EC2, IAM, Route 53, STS, DynamoDB share these conventions) to a class.
pub fn classify_code(code: &str) -> ErrorClass {
    match code {
        c if c.ends_with(".NotFound") || c.ends_with("NotFound") => ErrorClass::NotFound,
        "NoSuchEntity" | "NoSuchHostedZone" | "ResourceNotFoundException" | "InvalidAllocationID.NotFound" => {
            ErrorClass::NotFound
        }
        "DependencyViolation" | "DeleteConflict" | "HostedZoneNotEmpty" => ErrorClass::DependencyViolation,
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "RequestThrottled"
        | "InternalError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "Unavailable"
        | "PriorRequestNotComplete" => ErrorClass::Transient,
        "AuthFailure"
        | "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "UnrecognizedClientException"
        | "OptInRequired" => ErrorClass::Auth,
        _ => ErrorClass::Other,
    }
}

/// The class of an error that came without a code.
pub fn classify_status(status: u16) -> ErrorClass {
    match status {
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        429 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_codes_of_every_service_are_not_found() {
        for code in ["InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "NoSuchEntity", "NoSuchHostedZone"] {
            assert_eq!(classify_code(code), ErrorClass::NotFound, "{code}");
        }
    }

    #[test]
    fn dependency_and_auth_codes_are_classified() {
        assert_eq!(classify_code("DependencyViolation"), ErrorClass::DependencyViolation);
        assert_eq!(classify_code("InvalidClientTokenId"), ErrorClass::Auth);
        assert_eq!(classify_code("RequestLimitExceeded"), ErrorClass::Transient);
        assert_eq!(classify_code("InvalidParameterValue"), ErrorClass::Other);
    }

    #[test]
    fn codeless_errors_are_classified_by_http_status() {
        assert_eq!(classify_status(403), ErrorClass::Auth);
        assert_eq!(classify_status(503), ErrorClass::Transient);
        assert_eq!(classify_status(400), ErrorClass::Other);
    }

    #[test]
    fn display_joins_code_and_message() {
        let e = AwsError { code: Some("X".into()), message: "y".into(), class: ErrorClass::Other };
        assert_eq!(e.to_string(), "X: y");
    }
}
