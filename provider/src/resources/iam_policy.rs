//! `tandem_iam_policy`: a customer-managed IAM policy, as the AWS provider's `aws_iam_policy`. The cluster's
//! least-privilege policies (VIP, EIP, DNS, lease table) are made with it.

use async_trait::async_trait;
use aws_sdk_iam::types::Tag;

use super::{lifecycle, object, opt_str, policy_json, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::tags_attributes;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct IamPolicy;

const OBJECT: &str = "IAM Policy";

/// IAM keeps at most five versions of a managed policy.
const MAX_VERSIONS: usize = 5;

mod code {
    pub const BAD_NAME: &str = "TDM-IAM-003";
    pub const BAD_PATH: &str = "TDM-IAM-004";
    pub const ATTACHED: &str = "TDM-IAM-005";
}

// ---- shared IAM helpers ------------------------------------------------------------------------------------

pub(crate) fn to_iam_tags(tags: &Tags) -> Result<Vec<Tag>, AwsError> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<_, _>>()
        .map_err(|e| AwsError::local(ErrorClass::Other, format!("building tags: {e}")))
}

pub(crate) fn from_iam_tags(tags: &[Tag]) -> Tags {
    tags.iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

/// IAM names: 1 to `max` characters of letters, digits and `+=,.@_-`.
pub(crate) fn check_iam_name(config: &Value, attr: &str, max: usize, code: &str, diags: &mut Diagnostics) {
    let Some(name) = config.attr(attr).as_str() else { return };
    let bad = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c)));
    let problem = if name.is_empty() || name.len() > max {
        Some(format!("the name must be 1 to {max} characters long"))
    } else {
        bad.map(|c| format!("{c:?} is not allowed; use letters, digits and +=,.@_-"))
    };
    if let Some(p) = problem {
        diags.error_at(AttrPath::root(attr), code, format!("invalid IAM name {name:?}"), p);
    }
}

/// IAM paths: `/` or `/a/b/`, at most 512 characters.
pub(crate) fn check_iam_path(config: &Value, code: &str, diags: &mut Diagnostics) {
    let Some(path) = config.attr("path").as_str() else { return };
    let ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= 512
        && !path.contains("//")
        && path.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        diags.error_at(
            AttrPath::root("path"),
            code,
            format!("invalid IAM path {path:?}"),
            "A path starts and ends with '/', e.g. / or /tandem/, has no empty segments and at most 512 characters.",
        );
    }
}

// ---- finder and read ---------------------------------------------------------------------------------------

pub(crate) async fn find_policy_by_arn(ctx: &AwsContext, arn: &str) -> Result<aws_sdk_iam::types::Policy, AwsError> {
    let out = ctx.iam.get_policy().policy_arn(arn).send().await.map_err(AwsError::from_sdk)?;
    out.policy()
        .filter(|p| p.arn() == Some(arn))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("policy {arn} not found")))
}

async fn read_policy(ctx: &AwsContext, arn: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let p = match find_policy_by_arn(ctx, arn).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let version = p.default_version_id().unwrap_or("v1");
    let out =
        ctx.iam.get_policy_version().policy_arn(arn).version_id(version).send().await.map_err(AwsError::from_sdk)?;
    let document = out.policy_version().and_then(|v| v.document()).unwrap_or_default();
    let all = from_iam_tags(p.tags());
    Ok(Some(object([
        ("id", Value::from(arn)),
        ("arn", Value::from(arn)),
        ("policy_id", opt_str(p.policy_id())),
        ("name", opt_str(p.policy_name())),
        ("path", Value::from(p.path().unwrap_or("/"))),
        (
            "description",
            opt_str(p.description().filter(|d| !d.is_empty() || prior.attr("description").as_str() == Some(""))),
        ),
        ("policy", policy_json::keep_prior(prior.attr("policy"), document)),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

// ---- updates -----------------------------------------------------------------------------------------------

/// Makes `document` the default version; when IAM already holds five versions, the oldest non-default one
/// goes first (as the AWS provider does).
async fn set_document(ctx: &AwsContext, arn: &str, document: &str) -> Result<(), AwsError> {
    let out = ctx.iam.list_policy_versions().policy_arn(arn).send().await.map_err(AwsError::from_sdk)?;
    let versions = out.versions();
    if versions.len() >= MAX_VERSIONS
        && let Some(oldest) = versions
            .iter()
            .filter(|v| !v.is_default_version())
            .min_by_key(|v| v.create_date().map(|d| (d.secs(), d.subsec_nanos())))
            .and_then(|v| v.version_id())
    {
        ctx.iam.delete_policy_version().policy_arn(arn).version_id(oldest).send().await.map_err(AwsError::from_sdk)?;
    }
    ctx.iam
        .create_policy_version()
        .policy_arn(arn)
        .policy_document(document)
        .set_as_default(true)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(())
}

async fn update_tags(ctx: &AwsContext, arn: &str, old: &Value, new: &Value) -> Result<(), AwsError> {
    let (removed, set) = tags::diff(&tags::tags_of(old), &tags::tags_of(new));
    if !removed.is_empty() {
        ctx.iam.untag_policy().policy_arn(arn).set_tag_keys(Some(removed)).send().await.map_err(AwsError::from_sdk)?;
    }
    if !set.is_empty() {
        ctx.iam
            .tag_policy()
            .policy_arn(arn)
            .set_tags(Some(to_iam_tags(&set)?))
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
    }
    Ok(())
}

#[async_trait]
impl Resource for IamPolicy {
    fn type_name(&self) -> &'static str {
        "tandem_iam_policy"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("A customer-managed IAM policy.")
                .attr(Attribute::computed("id", Type::String).describe("The policy's ARN."))
                .attr(Attribute::computed("arn", Type::String).describe("The policy's ARN."))
                .attr(Attribute::computed("policy_id", Type::String).describe("The policy's unique ID (`ANPA…`)."))
                .attr(
                    Attribute::required("name", Type::String)
                        .replace()
                        .describe("The policy's name, unique in the account. Changing it replaces the policy."),
                )
                .attr(
                    Attribute::with_default("path", Value::from("/"))
                        .replace()
                        .describe("The policy's path, e.g. `/tandem/`. Default `/`. Changing it replaces the policy."),
                )
                .attr(
                    Attribute::optional("description", Type::String)
                        .replace()
                        .describe("A description. IAM cannot change it: changing it replaces the policy."),
                )
                .attr(Attribute::required("policy", Type::String).describe(
                    "The policy document (JSON). Compared by meaning: whitespace, key order and list order make no difference.",
                ))
                .attr(tags)
                .attr(tags_all),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_iam_name(config, "name", 128, code::BAD_NAME, diags);
        check_iam_path(config, code::BAD_PATH, diags);
        policy_json::check_attribute(config, "policy", diags);
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        policy_json::keep_prior_in_plan(plan, "policy");
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = async {
            let out = ctx
                .iam
                .create_policy()
                .policy_name(planned.attr("name").as_str().unwrap_or_default())
                .path(planned.attr("path").as_str().unwrap_or("/"))
                .set_description(planned.attr("description").as_str().map(str::to_string))
                .policy_document(planned.attr("policy").as_str().unwrap_or_default())
                .set_tags((!all.is_empty()).then(|| to_iam_tags(&all)).transpose()?)
                .send()
                .await
                .map_err(AwsError::from_sdk)?;
            out.policy()
                .and_then(|p| p.arn())
                .map(str::to_string)
                .ok_or_else(|| AwsError::local(ErrorClass::Other, "AWS returned no policy ARN"))
        }
        .await;
        let arn = match created {
            Ok(arn) => arn,
            Err(e) => {
                report(diags, "creating", OBJECT, planned.attr("name").as_str(), &e);
                return None;
            }
        };
        let rest = lifecycle::read_after_create(|| read_policy(ctx, &arn, planned));
        lifecycle::finish_create(diags, OBJECT, &arn, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let arn = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_policy(ctx, arn, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let arn = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            if let (Some(old), Some(new)) = (prior.attr("policy").as_str(), planned.attr("policy").as_str())
                && !policy_json::equivalent(old, new)
            {
                set_document(ctx, arn, new).await?;
            }
            update_tags(ctx, arn, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_policy(ctx, arn, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let arn = state.attr("id").as_str().unwrap_or_default();
        let deleted = async {
            // A policy goes only without its non-default versions.
            let out = ctx.iam.list_policy_versions().policy_arn(arn).send().await.map_err(AwsError::from_sdk)?;
            for v in out.versions().iter().filter(|v| !v.is_default_version()) {
                if let Some(id) = v.version_id() {
                    ctx.iam
                        .delete_policy_version()
                        .policy_arn(arn)
                        .version_id(id)
                        .send()
                        .await
                        .map_err(AwsError::from_sdk)?;
                }
            }
            ctx.iam.delete_policy().policy_arn(arn).send().await.map_err(AwsError::from_sdk).map(|_| ())
        }
        .await;
        match deleted {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return,
            // Not retried: an attachment made outside this configuration does not go away by itself.
            Err(e) if e.has_code("DeleteConflict") => {
                return diags.error(
                    code::ATTACHED,
                    format!("deleting {OBJECT} ({arn}): the policy is still attached"),
                    format!(
                        "{e}\nDetach it from every role, user and group first (destroy their \
                         tandem_iam_role_policy_attachment resources, or `aws iam list-entities-for-policy \
                         --policy-arn {arn}` to find them), then destroy again."
                    ),
                );
            }
            Err(e) => return report(diags, "deleting", OBJECT, Some(arn), &e),
        }
        lifecycle::wait_gone(diags, OBJECT, arn, wait::PROPAGATION_TIMEOUT, || async {
            find_policy_by_arn(ctx, arn).await.map(|_| Some("still listed".to_string()))
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::plan::plan_from_schema;
    use crate::framework::resource::empty_object;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn names_and_paths_are_checked() {
        let mut d = Diagnostics::new();
        let cfg = object([("name", "bad name".into()), ("path", "tandem".into()), ("policy", Value::Null)]);
        IamPolicy.validate(&cfg, &mut d);
        let paths: Vec<_> = d.0.iter().filter_map(|x| x.path.clone()).collect();
        assert_eq!(paths, vec![AttrPath::root("name"), AttrPath::root("path")]);
        let mut d = Diagnostics::new();
        IamPolicy.validate(&object([("name", "tandem-vip".into()), ("path", "/tandem/".into())]), &mut d);
        assert!(d.0.is_empty(), "{d:?}");
    }

    #[test]
    fn reformatted_document_plans_the_prior_text() {
        let schema = IamPolicy.schema();
        let mut prior = empty_object(&schema);
        let a =
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeVpcs","Resource":"*"}]}"#;
        let b = "{\n  \"Statement\": {\"Resource\": \"*\", \"Action\": [\"ec2:DescribeVpcs\"], \"Effect\": \"Allow\"},\n  \"Version\": \"2012-10-17\"\n}";
        let attrs = prior.attrs_mut().unwrap();
        attrs.insert("id".into(), "arn:aws:iam::1:policy/p".into());
        attrs.insert("name".into(), "p".into());
        attrs.insert("path".into(), "/".into());
        attrs.insert("policy".into(), a.into());
        let mut config = empty_object(&schema);
        config.attrs_mut().unwrap().insert("name".into(), "p".into());
        config.attrs_mut().unwrap().insert("policy".into(), b.into());
        let mut proposed = prior.clone();
        proposed.attrs_mut().unwrap().insert("policy".into(), b.into());
        let mut plan = plan_from_schema(&schema.block, &prior, &config, proposed);
        policy_json::keep_prior_in_plan(&mut plan, "policy");
        assert_eq!(plan.get("policy"), &Value::from(a));
    }

    #[test]
    fn description_and_path_force_replacement_but_policy_does_not() {
        let s = IamPolicy.schema();
        for name in ["name", "path", "description"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        assert!(!s.block.attribute("policy").unwrap().has(PlanModifier::RequiresReplace));
    }
}
