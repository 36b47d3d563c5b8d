//! The provider block → configured AWS clients, like the AWS provider: explicit settings first, then the
//! standard environment and shared files (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL[_EC2], …), then the
//! instance role through IMDSv2. Every failure becomes one clear error that names what to set.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_types::region::Region;

use super::error::{AwsError, ErrorClass};
use super::tags::{self, Tags};
use super::{AwsContext, partition_of};
use crate::framework::Value;

/// Attempts per call when neither `max_retries` nor AWS_MAX_ATTEMPTS says otherwise (throttling during a
/// large apply is normal on AWS).
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no AWS region is configured")]
    NoRegion,
    #[error("no AWS credentials were found: {0}")]
    NoCredentials(String),
    #[error("`{0}` is set but `{1}` is not")]
    HalfKeyPair(&'static str, &'static str),
    #[error("AWS rejected the credentials: {0}")]
    CredentialsRejected(AwsError),
    #[error("the AWS endpoint could not be reached: {0}")]
    Unreachable(AwsError),
    #[error("checking the AWS credentials failed: {0}")]
    Other(AwsError),
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::NoRegion => "TDM-AWS-001",
            ConfigError::NoCredentials(_) => "TDM-AWS-002",
            ConfigError::HalfKeyPair(..) => "TDM-AWS-003",
            ConfigError::CredentialsRejected(_) => "TDM-AWS-004",
            ConfigError::Unreachable(_) => "TDM-AWS-005",
            ConfigError::Other(_) => "TDM-AWS-006",
        }
    }

    /// What the operator should do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ConfigError::NoRegion => {
                "Set `region` in the provider \"tandem\" block, or AWS_REGION in the environment, or `region` in \
                 the profile's section of ~/.aws/config."
            }
            ConfigError::NoCredentials(_) => {
                "Set `access_key` and `secret_key` (or `profile`) in the provider block, or AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment, or run on an EC2 instance whose instance \
                 profile has a role."
            }
            ConfigError::HalfKeyPair(..) => "Set both `access_key` and `secret_key`, or neither.",
            ConfigError::CredentialsRejected(_) => {
                "The access key is unknown, wrong or expired: check `access_key`/`secret_key`, AWS_ACCESS_KEY_ID, \
                 the profile in use (AWS_PROFILE) and, for temporary credentials, the session token."
            }
            ConfigError::Unreachable(_) => {
                "Check the network path to AWS (NAT, proxy, VPC endpoint) or the `endpoints` block / \
                 AWS_ENDPOINT_URL if you point the provider at another endpoint."
            }
            ConfigError::Other(_) => "Set `skip_credentials_validation = true` to skip the STS check.",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub ec2: Option<String>,
    pub sts: Option<String>,
    pub route53: Option<String>,
    pub iam: Option<String>,
    pub dynamodb: Option<String>,
}

/// The provider block's settings, read from its configuration value.
#[derive(Clone, Debug, Default)]
pub struct ProviderSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub shared_config_files: Vec<String>,
    pub shared_credentials_files: Vec<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub token: Option<String>,
    pub max_retries: Option<u32>,
    pub skip_credentials_validation: bool,
    pub endpoints: Endpoints,
    pub default_tags: Tags,
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn strings(v: &Value) -> Vec<String> {
    v.elements().iter().filter_map(|e| e.as_str().map(str::to_string)).collect()
}

impl ProviderSettings {
    pub fn from_value(config: &Value) -> Self {
        let endpoints = config.attr("endpoints").elements().first().cloned().unwrap_or(Value::Null);
        let default_tags = config.attr("default_tags").elements().first().cloned().unwrap_or(Value::Null);
        ProviderSettings {
            region: opt_string(config.attr("region")),
            profile: opt_string(config.attr("profile")),
            shared_config_files: strings(config.attr("shared_config_files")),
            shared_credentials_files: strings(config.attr("shared_credentials_files")),
            access_key: opt_string(config.attr("access_key")),
            secret_key: opt_string(config.attr("secret_key")),
            token: opt_string(config.attr("token")),
            max_retries: config.attr("max_retries").as_i64().and_then(|n| u32::try_from(n).ok()),
            skip_credentials_validation: config.attr("skip_credentials_validation").as_bool().unwrap_or(false),
            endpoints: Endpoints {
                ec2: opt_string(endpoints.attr("ec2")),
                sts: opt_string(endpoints.attr("sts")),
                route53: opt_string(endpoints.attr("route53")),
                iam: opt_string(endpoints.attr("iam")),
                dynamodb: opt_string(endpoints.attr("dynamodb")),
            },
            default_tags: tags::tags_of(default_tags.attr("tags")),
        }
    }

    fn max_attempts(&self) -> Option<u32> {
        match self.max_retries {
            Some(n) => Some(n.saturating_add(1)),
            // The SDK reads AWS_MAX_ATTEMPTS itself; only fill in our default when it is absent.
            None if std::env::var_os("AWS_MAX_ATTEMPTS").is_some() => None,
            None => Some(DEFAULT_MAX_ATTEMPTS),
        }
    }
}

/// Loads the SDK configuration, checks region and credentials, and builds the clients.
pub async fn connect(s: &ProviderSettings) -> Result<AwsContext, ConfigError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_attempt_timeout(ATTEMPT_TIMEOUT).build(),
    );
    if let Some(region) = &s.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &s.profile {
        loader = loader.profile_name(profile);
    }
    if !s.shared_config_files.is_empty() || !s.shared_credentials_files.is_empty() {
        let mut files = EnvConfigFiles::builder();
        for f in &s.shared_config_files {
            files = files.with_file(EnvConfigFileKind::Config, f);
        }
        for f in &s.shared_credentials_files {
            files = files.with_file(EnvConfigFileKind::Credentials, f);
        }
        if s.shared_config_files.is_empty() {
            files = files.include_default_config_file(true);
        }
        if s.shared_credentials_files.is_empty() {
            files = files.include_default_credentials_file(true);
        }
        loader = loader.profile_files(files.build());
    }
    match (&s.access_key, &s.secret_key) {
        (Some(ak), Some(sk)) => {
            let creds = Credentials::new(ak, sk, s.token.clone(), None, "tandem-provider-block");
            loader = loader.credentials_provider(creds);
        }
        (Some(_), None) => return Err(ConfigError::HalfKeyPair("access_key", "secret_key")),
        (None, Some(_)) => return Err(ConfigError::HalfKeyPair("secret_key", "access_key")),
        (None, None) => {}
    }
    if let Some(attempts) = s.max_attempts() {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(attempts));
    }
    let sdk = loader.load().await;

    let region = sdk.region().map(|r| r.as_ref().to_string()).filter(|r| !r.is_empty()).ok_or(ConfigError::NoRegion)?;
    let provider: SharedCredentialsProvider =
        sdk.credentials_provider().ok_or_else(|| ConfigError::NoCredentials("no credential source".into()))?;
    if let Err(e) = provider.provide_credentials().await {
        return Err(ConfigError::NoCredentials(first_line(&e)));
    }

    // One client per service, each with its endpoint override when the provider block names one.
    macro_rules! client {
        ($sdk:ident, $endpoint:expr) => {{
            let mut conf = $sdk::config::Builder::from(&sdk);
            if let Some(url) = $endpoint {
                conf = conf.endpoint_url(url);
            }
            $sdk::Client::from_conf(conf.build())
        }};
    }
    let mut ctx = AwsContext {
        ec2: client!(aws_sdk_ec2, &s.endpoints.ec2),
        route53: client!(aws_sdk_route53, &s.endpoints.route53),
        iam: client!(aws_sdk_iam, &s.endpoints.iam),
        dynamodb: client!(aws_sdk_dynamodb, &s.endpoints.dynamodb),
        partition: partition_of(&region),
        region,
        account_id: String::new(),
        default_tags: s.default_tags.clone(),
    };
    if !s.skip_credentials_validation {
        let sts = client!(aws_sdk_sts, &s.endpoints.sts);
        let identity =
            sts.get_caller_identity().send().await.map_err(AwsError::from_sdk).map_err(|e| match e.class {
                ErrorClass::Auth => ConfigError::CredentialsRejected(e),
                ErrorClass::Unreachable => ConfigError::Unreachable(e),
                _ => ConfigError::Other(e),
            })?;
        ctx.account_id = identity.account().unwrap_or_default().to_string();
    }
    Ok(ctx)
}

/// The SDK's credential errors nest several causes; the first line is the one an operator needs.
fn first_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        source = s.source();
    }
    text.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn settings_are_read_from_the_provider_block() {
        let mut endpoints = BTreeMap::new();
        endpoints.insert("ec2".to_string(), Value::from("http://127.0.0.1:5000"));
        let mut cfg = BTreeMap::new();
        cfg.insert("region".to_string(), Value::from("eu-west-1"));
        cfg.insert("max_retries".to_string(), Value::from(3i64));
        cfg.insert("endpoints".to_string(), Value::List(vec![Value::Object(endpoints)]));
        let s = ProviderSettings::from_value(&Value::Object(cfg));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.endpoints.ec2.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(s.max_attempts(), Some(4));
        assert!(s.endpoints.sts.is_none());
    }

    #[test]
    fn every_config_error_has_a_distinct_code_and_a_hint() {
        let errs = [
            ConfigError::NoRegion,
            ConfigError::NoCredentials(String::new()),
            ConfigError::HalfKeyPair("a", "b"),
            ConfigError::CredentialsRejected(AwsError::local(ErrorClass::Auth, "")),
            ConfigError::Unreachable(AwsError::local(ErrorClass::Unreachable, "")),
            ConfigError::Other(AwsError::local(ErrorClass::Other, "")),
        ];
        let codes: std::collections::BTreeSet<_> = errs.iter().map(ConfigError::code).collect();
        assert_eq!(codes.len(), errs.len());
        assert!(errs.iter().all(|e| !e.hint().is_empty()));
    }
}
