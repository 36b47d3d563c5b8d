//! `tandem_iam_role`: an IAM role, as the AWS provider's `aws_iam_role` (without inline policy blocks). Cluster
//! nodes assume it through an instance profile.

use async_trait::async_trait;

use super::iam_policy::{check_iam_name, check_iam_path, from_iam_tags, to_iam_tags};
use super::{lifecycle, object, policy_json, report};
use crate::aws::tags;
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::tags_attributes;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct IamRole;

const OBJECT: &str = "IAM Role";

mod code {
    pub const BAD_NAME: &str = "TDM-IAM-010";
    pub const BAD_PATH: &str = "TDM-IAM-011";
    pub const BAD_DURATION: &str = "TDM-IAM-012";
    pub const HAS_POLICIES: &str = "TDM-IAM-013";
}

pub(crate) async fn find_role_by_name(ctx: &AwsContext, name: &str) -> Result<aws_sdk_iam::types::Role, AwsError> {
    let out = ctx.iam.get_role().role_name(name).send().await.map_err(AwsError::from_sdk)?;
    out.role()
        .filter(|r| r.role_name() == name)
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("role {name} not found")))
}

/// The ARNs of the managed policies attached to `role`, every page.
pub(crate) async fn attached_policy_arns(ctx: &AwsContext, role: &str) -> Result<Vec<String>, AwsError> {
    let mut pages = ctx.iam.list_attached_role_policies().role_name(role).into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.try_next().await.map_err(AwsError::from_sdk)? {
        arns.extend(page.attached_policies().iter().filter_map(|p| p.policy_arn()).map(str::to_string));
    }
    Ok(arns)
}

async fn inline_policy_names(ctx: &AwsContext, role: &str) -> Result<Vec<String>, AwsError> {
    let mut pages = ctx.iam.list_role_policies().role_name(role).into_paginator().send();
    let mut names = Vec::new();
    while let Some(page) = pages.try_next().await.map_err(AwsError::from_sdk)? {
        names.extend(page.policy_names().iter().cloned());
    }
    Ok(names)
}

async fn instance_profiles_of(ctx: &AwsContext, role: &str) -> Result<Vec<String>, AwsError> {
    let mut pages = ctx.iam.list_instance_profiles_for_role().role_name(role).into_paginator().send();
    let mut names = Vec::new();
    while let Some(page) = pages.try_next().await.map_err(AwsError::from_sdk)? {
        names.extend(page.instance_profiles().iter().map(|p| p.instance_profile_name().to_string()));
    }
    Ok(names)
}

async fn read_role(ctx: &AwsContext, name: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let r = match find_role_by_name(ctx, name).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let all = from_iam_tags(r.tags());
    let description = match r.description() {
        Some("") | None if prior.attr("description").as_str() != Some("") => Value::Null,
        d => Value::from(d.unwrap_or_default()),
    };
    Ok(Some(object([
        ("id", Value::from(r.role_name())),
        ("arn", Value::from(r.arn())),
        ("unique_id", Value::from(r.role_id())),
        ("name", Value::from(r.role_name())),
        ("path", Value::from(r.path())),
        ("description", description),
        (
            "assume_role_policy",
            policy_json::keep_prior(prior.attr("assume_role_policy"), r.assume_role_policy_document().unwrap_or("")),
        ),
        ("max_session_duration", Value::from(i64::from(r.max_session_duration().unwrap_or(3600)))),
        ("force_detach_policies", Value::Bool(prior.attr("force_detach_policies").as_bool().unwrap_or(false))),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

/// IAM may not know a principal of the trust policy made a moment ago ("Invalid principal"): like the AWS
/// provider, retry for the propagation time.
fn propagation_class(e: AwsError) -> AwsError {
    if e.has_code("MalformedPolicyDocument") && e.message.contains("Invalid principal") {
        AwsError { class: ErrorClass::Transient, ..e }
    } else {
        e
    }
}

async fn update_tags(ctx: &AwsContext, name: &str, old: &Value, new: &Value) -> Result<(), AwsError> {
    let (removed, set) = tags::diff(&tags::tags_of(old), &tags::tags_of(new));
    if !removed.is_empty() {
        ctx.iam.untag_role().role_name(name).set_tag_keys(Some(removed)).send().await.map_err(AwsError::from_sdk)?;
    }
    if !set.is_empty() {
        ctx.iam
            .tag_role()
            .role_name(name)
            .set_tags(Some(to_iam_tags(&set)?))
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
    }
    Ok(())
}

/// What stands between the role and its deletion: instance profiles always go (as in the AWS provider, so
/// that a role can be replaced under its profile); policies only with `force_detach_policies`.
async fn release_role(ctx: &AwsContext, name: &str, force_detach: bool) -> Result<(), AwsError> {
    for profile in instance_profiles_of(ctx, name).await? {
        match ctx.iam.remove_role_from_instance_profile().instance_profile_name(&profile).role_name(name).send().await {
            Ok(_) => {}
            Err(e) => {
                let e = AwsError::from_sdk(e);
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
    }
    if force_detach {
        for arn in attached_policy_arns(ctx, name).await? {
            if let Err(e) = ctx.iam.detach_role_policy().role_name(name).policy_arn(&arn).send().await {
                let e = AwsError::from_sdk(e);
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
        for policy in inline_policy_names(ctx, name).await? {
            if let Err(e) = ctx.iam.delete_role_policy().role_name(name).policy_name(&policy).send().await {
                let e = AwsError::from_sdk(e);
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Resource for IamRole {
    fn type_name(&self) -> &'static str {
        "tandem_iam_role"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("An IAM role, e.g. the role cluster nodes assume through their instance profile.")
                .attr(Attribute::computed("id", Type::String).describe("The role's name."))
                .attr(Attribute::computed("arn", Type::String).describe("The role's ARN."))
                .attr(Attribute::computed("unique_id", Type::String).describe("The role's unique ID (`AROA…`)."))
                .attr(
                    Attribute::required("name", Type::String)
                        .replace()
                        .describe("The role's name, unique in the account. Changing it replaces the role."),
                )
                .attr(
                    Attribute::with_default("path", Value::from("/"))
                        .replace()
                        .describe("The role's path, e.g. `/tandem/`. Default `/`. Changing it replaces the role."),
                )
                .attr(Attribute::optional("description", Type::String).describe("A description. Changed in place."))
                .attr(Attribute::required("assume_role_policy", Type::String).describe(
                    "The trust policy (JSON) saying who may assume the role. Compared by meaning; changed in place.",
                ))
                .attr(
                    Attribute::with_default("max_session_duration", Value::from(3600i64))
                        .describe("The longest session, in seconds: 3600 to 43200. Default 3600."),
                )
                .attr(Attribute::with_default("force_detach_policies", Value::Bool(false)).describe(
                    "Whether destroying the role first detaches its managed policies and deletes its inline policies. Default `false`.",
                ))
                .attr(tags)
                .attr(tags_all),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_iam_name(config, "name", 64, code::BAD_NAME, diags);
        check_iam_path(config, code::BAD_PATH, diags);
        policy_json::check_attribute(config, "assume_role_policy", diags);
        if let Some(d) = config.attr("max_session_duration").as_number()
            && !d.as_i64().is_some_and(|s| (3600..=43200).contains(&s))
        {
            diags.error_at(
                AttrPath::root("max_session_duration"),
                code::BAD_DURATION,
                format!("max_session_duration {d} is out of range"),
                "IAM allows 3600 (1 hour) to 43200 (12 hours) seconds.",
            );
        }
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        policy_json::keep_prior_in_plan(plan, "assume_role_policy");
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = planned.attr("name").as_str().unwrap_or_default();
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = wait::retry_while(ErrorClass::Transient, wait::PROPAGATION_TIMEOUT, || async {
            ctx.iam
                .create_role()
                .role_name(name)
                .path(planned.attr("path").as_str().unwrap_or("/"))
                .assume_role_policy_document(planned.attr("assume_role_policy").as_str().unwrap_or_default())
                .set_description(planned.attr("description").as_str().map(str::to_string))
                .set_max_session_duration(
                    planned.attr("max_session_duration").as_i64().and_then(|d| i32::try_from(d).ok()),
                )
                .set_tags((!all.is_empty()).then(|| to_iam_tags(&all)).transpose()?)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| propagation_class(AwsError::from_sdk(e)))
        })
        .await;
        if let Err(e) = created {
            report(diags, "creating", OBJECT, Some(name), &e);
            return None;
        }
        let rest = lifecycle::read_after_create(|| read_role(ctx, name, planned));
        lifecycle::finish_create(diags, OBJECT, name, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_role(ctx, name, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            if let (Some(old), Some(new)) =
                (prior.attr("assume_role_policy").as_str(), planned.attr("assume_role_policy").as_str())
                && !policy_json::equivalent(old, new)
            {
                wait::retry_while(ErrorClass::Transient, wait::PROPAGATION_TIMEOUT, || async {
                    ctx.iam
                        .update_assume_role_policy()
                        .role_name(name)
                        .policy_document(new)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| propagation_class(AwsError::from_sdk(e)))
                })
                .await?;
            }
            if prior.attr("description") != planned.attr("description")
                || prior.attr("max_session_duration") != planned.attr("max_session_duration")
            {
                // An empty description clears it (UpdateRole leaves an absent one as it is).
                ctx.iam
                    .update_role()
                    .role_name(name)
                    .description(planned.attr("description").as_str().unwrap_or_default())
                    .set_max_session_duration(
                        planned.attr("max_session_duration").as_i64().and_then(|d| i32::try_from(d).ok()),
                    )
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)?;
            }
            update_tags(ctx, name, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_role(ctx, name, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let name = state.attr("id").as_str().unwrap_or_default();
        let force = state.attr("force_detach_policies").as_bool().unwrap_or(false);
        let deleted = async {
            release_role(ctx, name, force).await?;
            ctx.iam.delete_role().role_name(name).send().await.map(|_| ()).map_err(AwsError::from_sdk)
        }
        .await;
        match deleted {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) if e.has_code("DeleteConflict") => {
                let attached = attached_policy_arns(ctx, name).await.unwrap_or_default();
                let inline = inline_policy_names(ctx, name).await.unwrap_or_default();
                return diags.error_at(
                    AttrPath::root("force_detach_policies"),
                    code::HAS_POLICIES,
                    format!("deleting {OBJECT} ({name}): policies are still attached to the role"),
                    format!(
                        "{e}\nManaged policies: [{}]; inline policies: [{}]. Destroy their attachments first, or \
                         set force_detach_policies = true and apply before destroying, to have them detached with \
                         the role.",
                        attached.join(", "),
                        inline.join(", ")
                    ),
                );
            }
            Err(e) => return report(diags, "deleting", OBJECT, Some(name), &e),
        }
        lifecycle::wait_gone(diags, OBJECT, name, wait::PROPAGATION_TIMEOUT, || async {
            find_role_by_name(ctx, name).await.map(|_| Some("still listed".to_string()))
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_trust_policy_and_duration_are_reported_on_their_attributes() {
        let cfg = object([
            ("name", "node".into()),
            ("path", "/".into()),
            ("assume_role_policy", "{\"Statement\": []}".into()),
            ("max_session_duration", 60i64.into()),
        ]);
        let mut d = Diagnostics::new();
        IamRole.validate(&cfg, &mut d);
        let paths: Vec<_> = d.0.iter().filter_map(|x| x.path.clone()).collect();
        assert_eq!(paths, vec![AttrPath::root("assume_role_policy"), AttrPath::root("max_session_duration")]);
        assert!(d.0[0].summary.contains(policy_json::NOT_A_POLICY));
    }

    #[test]
    fn invalid_principal_is_retried_other_errors_are_not() {
        let e = AwsError {
            code: Some("MalformedPolicyDocument".into()),
            message: "Invalid principal in policy".into(),
            class: ErrorClass::Other,
        };
        assert_eq!(propagation_class(e).class, ErrorClass::Transient);
        let e = AwsError {
            code: Some("MalformedPolicyDocument".into()),
            message: "Syntax errors".into(),
            class: ErrorClass::Other,
        };
        assert_eq!(propagation_class(e).class, ErrorClass::Other);
    }
}
