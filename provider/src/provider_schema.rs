//! The `provider "tandem"` block: AWS settings named as in the AWS provider, so configurations carry over.

use crate::framework::{Attribute, Block, Nesting, Schema, Type};

pub fn schema() -> Schema {
    let strings = Type::List(Box::new(Type::String));
    let endpoint = |name: &'static str, what: &'static str| Attribute::optional(name, Type::String).describe(what);
    Schema::new(
        0,
        Block::new(
            "The tandem provider creates the AWS network, IAM and instances of HA clusters and renders the \
             cluster configuration for the tandemd runtime. Settings follow the AWS provider; anything left out \
             comes from the standard AWS environment variables, shared files, or the instance role.",
        )
        .attr(Attribute::optional("region", Type::String).describe("AWS region, e.g. `us-east-1`. Default: AWS_REGION, then the profile's region."))
        .attr(Attribute::optional("profile", Type::String).describe("Named profile of the shared config/credentials files. Default: AWS_PROFILE."))
        .attr(Attribute::optional("shared_config_files", strings.clone()).describe("Paths of shared config files. Default: `~/.aws/config`."))
        .attr(
            Attribute::optional("shared_credentials_files", strings)
                .describe("Paths of shared credentials files. Default: `~/.aws/credentials`."),
        )
        .attr(Attribute::optional("access_key", Type::String).sensitive().describe("Access key ID. Prefer a profile or an instance role."))
        .attr(Attribute::optional("secret_key", Type::String).sensitive().describe("Secret access key; required with `access_key`."))
        .attr(Attribute::optional("token", Type::String).sensitive().describe("Session token for temporary credentials."))
        .attr(
            Attribute::optional("max_retries", Type::Number)
                .describe("Retries per AWS call on throttling and transient errors. Default: AWS_MAX_ATTEMPTS - 1, else 9."),
        )
        .attr(
            Attribute::optional("skip_credentials_validation", Type::Bool)
                .describe("Skip the STS GetCallerIdentity check of the credentials when the provider starts."),
        )
        .block(
            "endpoints",
            Nesting::List,
            1,
            Block::new("Custom service endpoints, e.g. a local AWS endpoint. Default: AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE>.")
                .attr(endpoint("ec2", "EC2 endpoint URL."))
                .attr(endpoint("sts", "STS endpoint URL."))
                .attr(endpoint("route53", "Route 53 endpoint URL."))
                .attr(endpoint("iam", "IAM endpoint URL."))
                .attr(endpoint("dynamodb", "DynamoDB endpoint URL.")),
        )
        .block(
            "default_tags",
            Nesting::List,
            1,
            Block::new("Tags applied to every taggable object this provider creates.")
                .attr(Attribute::optional("tags", Type::Map(Box::new(Type::String))).describe("The tags.")),
        ),
    )
}
