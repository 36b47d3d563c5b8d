//! `tandem_iam_role_policy_attachment`: a managed policy attached to a role, as the AWS provider's
//! `aws_iam_role_policy_attachment`.

use async_trait::async_trait;

use super::iam_role::attached_policy_arns;
use super::{lifecycle, object, report};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Resource, Schema, Type, Value};

pub struct IamRolePolicyAttachment;

const OBJECT: &str = "IAM Role Policy Attachment";

mod code {
    pub const BAD_ARN: &str = "TDM-IAM-020";
    pub const BAD_ID: &str = "TDM-IAM-021";
}

/// `ROLE/ARN`: role names hold no `/`, policy ARNs do.
fn parse_id(id: &str) -> Option<(&str, &str)> {
    let (role, arn) = id.split_once('/')?;
    (!role.is_empty() && arn.starts_with("arn:")).then_some((role, arn))
}

fn key_of(state: &Value) -> Option<(String, String)> {
    match (state.attr("role").as_str(), state.attr("policy_arn").as_str()) {
        (Some(r), Some(a)) => Some((r.to_string(), a.to_string())),
        _ => parse_id(state.attr("id").as_str()?).map(|(r, a)| (r.to_string(), a.to_string())),
    }
}

async fn read_attachment(ctx: &AwsContext, role: &str, arn: &str) -> Result<Option<Value>, AwsError> {
    let arns = match attached_policy_arns(ctx, role).await {
        Ok(a) => a,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(arns.iter().any(|a| a == arn).then(|| {
        object([
            ("id", Value::from(format!("{role}/{arn}"))),
            ("role", Value::from(role)),
            ("policy_arn", Value::from(arn)),
        ])
    }))
}

#[async_trait]
impl Resource for IamRolePolicyAttachment {
    fn type_name(&self) -> &'static str {
        "tandem_iam_role_policy_attachment"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("A managed IAM policy attached to a role.")
                .attr(Attribute::computed("id", Type::String).describe("`ROLE/POLICY_ARN`."))
                .attr(Attribute::required("role", Type::String).replace().describe("The role's name."))
                .attr(Attribute::required("policy_arn", Type::String).replace().describe("The policy's ARN.")),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        if let Some(arn) = config.attr("policy_arn").as_str()
            && !(arn.starts_with("arn:") && arn.contains(":policy/"))
        {
            diags.error_at(
                AttrPath::root("policy_arn"),
                code::BAD_ARN,
                format!("{arn:?} is not an IAM policy ARN"),
                "A policy ARN looks like arn:aws:iam::123456789012:policy/NAME (or arn:aws:iam::aws:policy/NAME for \
                 AWS-managed policies); use tandem_iam_policy.NAME.arn.",
            );
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let role = planned.attr("role").as_str().unwrap_or_default();
        let arn = planned.attr("policy_arn").as_str().unwrap_or_default();
        let id = format!("{role}/{arn}");
        // A role or policy made in the same apply may not be visible to IAM everywhere yet.
        let attached = wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
            ctx.iam
                .attach_role_policy()
                .role_name(role)
                .policy_arn(arn)
                .send()
                .await
                .map(|_| ())
                .map_err(AwsError::from_sdk)
        })
        .await;
        if let Err(e) = attached {
            report(diags, "creating", OBJECT, Some(&id), &e);
            return None;
        }
        let rest = lifecycle::read_after_create(|| read_attachment(ctx, role, arn));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let Some((role, arn)) = key_of(state) else {
            diags.error(
                code::BAD_ID,
                format!("invalid role policy attachment ID {:?}", state.attr("id").as_str().unwrap_or_default()),
                "Import an attachment by ROLE/POLICY_ARN, e.g. node/arn:aws:iam::123456789012:policy/tandem-vip.",
            );
            return None;
        };
        lifecycle::read_or_remove(diags, OBJECT, state, read_attachment(ctx, &role, &arn)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        // Both attributes force replacement: nothing can change in place.
        let (role, arn) = key_of(prior).unwrap_or_default();
        let result = read_attachment(ctx, &role, &arn).await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let Some((role, arn)) = key_of(state) else { return };
        let id = format!("{role}/{arn}");
        let detached = ctx.iam.detach_role_policy().role_name(&role).policy_arn(&arn).send().await;
        match detached.map_err(AwsError::from_sdk) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) => return report(diags, "deleting", OBJECT, Some(&id), &e),
        }
        lifecycle::wait_gone(diags, OBJECT, &id, wait::PROPAGATION_TIMEOUT, || async {
            read_attachment(ctx, &role, &arn).await.map(|a| a.map(|_| "still attached".to_string()))
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_id_splits_at_the_first_slash() {
        assert_eq!(
            parse_id("node/arn:aws:iam::aws:policy/service-role/X"),
            Some(("node", "arn:aws:iam::aws:policy/service-role/X"))
        );
        assert_eq!(parse_id("node"), None);
        assert_eq!(parse_id("/arn:aws:iam::1:policy/p"), None);
        let state =
            object([("id", "r/arn:aws:iam::1:policy/p".into()), ("role", Value::Null), ("policy_arn", Value::Null)]);
        assert_eq!(key_of(&state), Some(("r".to_string(), "arn:aws:iam::1:policy/p".to_string())));
    }

    #[test]
    fn policy_arn_is_checked() {
        let mut d = Diagnostics::new();
        IamRolePolicyAttachment.validate(&object([("policy_arn", "tandem-vip".into())]), &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path, Some(AttrPath::root("policy_arn")));
    }
}
