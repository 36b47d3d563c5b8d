//! The registry of resource types and data sources. A new kind = one file here + one line in `registry!`.

use std::collections::BTreeMap;

use crate::aws::{AwsError, ErrorClass};
use crate::framework::{DataSource, Diagnostics, Resource, Value};

mod lifecycle;
mod policy_json;

/// Declares each kind's module and lists it, so that a kind is registered by exactly one line.
macro_rules! registry {
    (resources { $($rm:ident :: $rt:ident,)* } data_sources { $($dm:ident :: $dt:ident,)* }) => {
        $(mod $rm;)*
        $(mod $dm;)*

        pub fn resources() -> Vec<Box<dyn Resource>> {
            vec![$(Box::new($rm::$rt)),*]
        }

        pub fn data_sources() -> Vec<Box<dyn DataSource>> {
            vec![$(Box::new($dm::$dt)),*]
        }
    };
}

registry! {
    resources {
        vpc::Vpc,
        subnet::Subnet,
        internet_gateway::InternetGateway,
        eip::Eip,
        eip_association::EipAssociation,
        nat_gateway::NatGateway,
        route_table::RouteTable,
        route::Route,
        route_table_association::RouteTableAssociation,
        vpc_endpoint::VpcEndpoint,
        security_group::SecurityGroup,
        security_group_rule::SecurityGroupRuleResource,
        instance::Instance,
        ebs_volume::EbsVolume,
        volume_attachment::VolumeAttachmentResource,
        route53_zone::Route53Zone,
        route53_record::Route53Record,
        iam_policy::IamPolicy,
        iam_role::IamRole,
        iam_role_policy_attachment::IamRolePolicyAttachment,
        iam_instance_profile::IamInstanceProfile,
        dynamodb_table::DynamodbTable,
        cluster::Cluster,
    }
    data_sources {
        availability_zones::AvailabilityZones,
        ami::Ami,
    }
}

/// Builds an object value from attribute pairs.
pub(crate) fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>())
}

pub(crate) fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, Value::from)
}

/// The stable code of an AWS failure, by class; listed in docs/troubleshooting.md.
pub(crate) fn aws_error_code(err: &AwsError) -> &'static str {
    match err.class {
        ErrorClass::NotFound => "TDM-AWS-010",
        ErrorClass::Auth => "TDM-AWS-011",
        ErrorClass::Unreachable => "TDM-AWS-005",
        ErrorClass::DependencyViolation => "TDM-AWS-012",
        ErrorClass::Transient => "TDM-AWS-013",
        ErrorClass::Other => "TDM-AWS-014",
    }
}

fn aws_error_hint(err: &AwsError) -> &'static str {
    match err.class {
        ErrorClass::NotFound => "The object named does not exist (any more) in this account and region.",
        ErrorClass::Auth => {
            "The credentials in use are not allowed this action: grant it in IAM, or use other credentials."
        }
        ErrorClass::Unreachable => {
            "Check the network path to the AWS endpoint (NAT, proxy, VPC endpoint, endpoint URL)."
        }
        ErrorClass::DependencyViolation => "Other objects still depend on this one; remove them first.",
        ErrorClass::Transient => "AWS throttled the call or failed on its side; retry the operation.",
        ErrorClass::Other => "",
    }
}

/// Reports a failed AWS operation as "ACTION OBJECT (ID): CODE: message", e.g. "creating EC2 VPC: …".
pub(crate) fn report(diags: &mut Diagnostics, action: &str, object: &str, id: Option<&str>, err: &AwsError) {
    let target = match id {
        Some(id) if !id.is_empty() => format!("{object} ({id})"),
        _ => object.to_string(),
    };
    diags.error(aws_error_code(err), format!("{action} {target}: {err}"), aws_error_hint(err));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn type_names_are_unique_and_prefixed() {
        let mut names = BTreeSet::new();
        for r in resources() {
            assert!(r.type_name().starts_with("tandem_"));
            assert!(names.insert(r.type_name()));
            assert!(r.schema().block.attribute("id").is_some(), "{} has an id", r.type_name());
        }
        for d in data_sources() {
            assert!(names.insert(d.type_name()));
        }
    }

    #[test]
    fn report_names_action_object_and_id() {
        let mut d = Diagnostics::new();
        let err = AwsError {
            code: Some("InvalidVpcID.NotFound".into()),
            message: "gone".into(),
            class: ErrorClass::NotFound,
        };
        report(&mut d, "reading", "EC2 VPC", Some("vpc-1"), &err);
        assert_eq!(d.0[0].summary, "[TDM-AWS-010] reading EC2 VPC (vpc-1): InvalidVpcID.NotFound: gone");
    }
}
