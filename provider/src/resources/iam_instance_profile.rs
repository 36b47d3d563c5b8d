//! `tandem_iam_instance_profile`: the container that hands a role to EC2 instances, as the AWS provider's
//! `aws_iam_instance_profile` (without tags). Cluster nodes are launched with it.

use async_trait::async_trait;

use super::iam_policy::{check_iam_name, check_iam_path};
use super::{lifecycle, object, report};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::{Attribute, Block, Diagnostics, Resource, Schema, Type, Value};

pub struct IamInstanceProfile;

const OBJECT: &str = "IAM Instance Profile";

mod code {
    pub const BAD_NAME: &str = "TDM-IAM-030";
    pub const BAD_PATH: &str = "TDM-IAM-031";
}

pub(crate) async fn find_instance_profile_by_name(
    ctx: &AwsContext,
    name: &str,
) -> Result<aws_sdk_iam::types::InstanceProfile, AwsError> {
    let out = ctx.iam.get_instance_profile().instance_profile_name(name).send().await.map_err(AwsError::from_sdk)?;
    out.instance_profile()
        .filter(|p| p.instance_profile_name() == name)
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("instance profile {name} not found")))
}

async fn read_profile(ctx: &AwsContext, name: &str) -> Result<Option<Value>, AwsError> {
    let p = match find_instance_profile_by_name(ctx, name).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let role = p.roles().first().map_or(Value::Null, |r| Value::from(r.role_name()));
    Ok(Some(object([
        ("id", Value::from(p.instance_profile_name())),
        ("arn", Value::from(p.arn())),
        ("unique_id", Value::from(p.instance_profile_id())),
        ("name", Value::from(p.instance_profile_name())),
        ("path", Value::from(p.path())),
        ("role", role),
    ])))
}

async fn add_role(ctx: &AwsContext, name: &str, role: &str) -> Result<(), AwsError> {
    // A role made in the same apply may not be visible to IAM everywhere yet.
    wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
        ctx.iam
            .add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
            .map(|_| ())
            .map_err(AwsError::from_sdk)
    })
    .await
}

async fn remove_role(ctx: &AwsContext, name: &str, role: &str) -> Result<(), AwsError> {
    match ctx.iam.remove_role_from_instance_profile().instance_profile_name(name).role_name(role).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = AwsError::from_sdk(e);
            if e.is_not_found() { Ok(()) } else { Err(e) }
        }
    }
}

#[async_trait]
impl Resource for IamInstanceProfile {
    fn type_name(&self) -> &'static str {
        "tandem_iam_instance_profile"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("An IAM instance profile: gives its role to the EC2 instances launched with it.")
                .attr(Attribute::computed("id", Type::String).describe("The profile's name."))
                .attr(Attribute::computed("arn", Type::String).describe("The profile's ARN."))
                .attr(Attribute::computed("unique_id", Type::String).describe("The profile's unique ID (`AIPA…`)."))
                .attr(
                    Attribute::required("name", Type::String)
                        .replace()
                        .describe("The profile's name, unique in the account. Changing it replaces the profile."),
                )
                .attr(
                    Attribute::with_default("path", Value::from("/"))
                        .replace()
                        .describe("The profile's path. Default `/`. Changing it replaces the profile."),
                )
                .attr(
                    Attribute::optional("role", Type::String)
                        .describe("The name of the role the profile holds (at most one). Changed in place."),
                ),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_iam_name(config, "name", 128, code::BAD_NAME, diags);
        check_iam_path(config, code::BAD_PATH, diags);
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = planned.attr("name").as_str().unwrap_or_default();
        let created = ctx
            .iam
            .create_instance_profile()
            .instance_profile_name(name)
            .path(planned.attr("path").as_str().unwrap_or("/"))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        if let Err(e) = created {
            report(diags, "creating", OBJECT, Some(name), &e);
            return None;
        }
        let rest = async {
            if let Some(role) = planned.attr("role").as_str() {
                add_role(ctx, name, role).await?;
            }
            lifecycle::read_after_create(|| read_profile(ctx, name)).await
        };
        lifecycle::finish_create(diags, OBJECT, name, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_profile(ctx, name)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            let (old, new) = (prior.attr("role").as_str(), planned.attr("role").as_str());
            if old != new {
                // A profile holds one role: the old one leaves before the new one comes.
                if let Some(old) = old {
                    remove_role(ctx, name, old).await?;
                }
                if let Some(new) = new {
                    add_role(ctx, name, new).await?;
                }
            }
            read_profile(ctx, name).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let name = state.attr("id").as_str().unwrap_or_default();
        let deleted = async {
            // Whatever role AWS says the profile holds (the state may be stale).
            let roles: Vec<String> = match find_instance_profile_by_name(ctx, name).await {
                Ok(p) => p.roles().iter().map(|r| r.role_name().to_string()).collect(),
                Err(e) => return Err(e),
            };
            for role in roles {
                remove_role(ctx, name, &role).await?;
            }
            ctx.iam
                .delete_instance_profile()
                .instance_profile_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(AwsError::from_sdk)
        }
        .await;
        match deleted {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) => return report(diags, "deleting", OBJECT, Some(name), &e),
        }
        lifecycle::wait_gone(diags, OBJECT, name, wait::PROPAGATION_TIMEOUT, || async {
            find_instance_profile_by_name(ctx, name).await.map(|_| Some("still listed".to_string()))
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::AttrPath;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn role_changes_in_place_name_and_path_replace() {
        let s = IamInstanceProfile.schema();
        assert!(!s.block.attribute("role").unwrap().has(PlanModifier::RequiresReplace));
        assert!(s.block.attribute("name").unwrap().has(PlanModifier::RequiresReplace));
        assert!(s.block.attribute("path").unwrap().has(PlanModifier::RequiresReplace));
    }

    #[test]
    fn bad_name_is_reported_on_name() {
        let mut d = Diagnostics::new();
        IamInstanceProfile.validate(&object([("name", "node profile".into()), ("path", "/".into())]), &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path, Some(AttrPath::root("name")));
    }
}
