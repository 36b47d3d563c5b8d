//! AWS plumbing shared by all resources: the configured clients, error classification, waiters, tags.

pub mod config;
pub mod error;
pub mod tags;
pub mod wait;

pub use config::{ConfigError, ProviderSettings};
pub use error::{AwsError, ErrorClass};

/// What ConfigureProvider produces: one client per service, reused by every resource.
#[derive(Clone, Debug)]
pub struct AwsContext {
    pub ec2: aws_sdk_ec2::Client,
    pub route53: aws_sdk_route53::Client,
    pub iam: aws_sdk_iam::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub region: String,
    /// `aws`, `aws-cn` or `aws-us-gov`: the first field of every ARN.
    pub partition: &'static str,
    /// The caller's account (from STS), used in ARNs; empty when credential validation is skipped.
    pub account_id: String,
    pub default_tags: tags::Tags,
}

impl AwsContext {
    /// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`, with the owner AWS reported when known.
    pub fn arn(&self, service: &str, owner: Option<&str>, resource: &str) -> String {
        let account = owner.unwrap_or(&self.account_id);
        format!("arn:{}:{service}:{}:{account}:{resource}", self.partition, self.region)
    }
}

pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_region_prefixes() {
        assert_eq!(partition_of("us-east-1"), "aws");
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
    }
}
