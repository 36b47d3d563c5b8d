//! `tandem_security_group`: a VPC security group without inline rules (rules are
//! `tandem_security_group_rule` resources, one per AWS rule object). As the AWS provider's
//! `aws_security_group`, the allow-all egress rule AWS adds on create is revoked, so that egress is exactly
//! what the configuration declares.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, ResourceType, SecurityGroupRule};

use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::{tags_attributes, timeouts_block};
use crate::framework::{Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct SecurityGroup;

const OBJECT: &str = "EC2 Security Group";

/// How long a delete may wait for ENIs (terminating instances, Lambda, endpoints) to let go of the group.
const DELETE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub(crate) async fn find_security_group_by_id(
    ctx: &AwsContext,
    id: &str,
) -> Result<aws_sdk_ec2::types::SecurityGroup, AwsError> {
    let out = ctx.ec2.describe_security_groups().group_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.security_groups()
        .iter()
        .find(|g| g.group_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("security group {id} not found")))
}

/// Every rule of the group, ingress and egress, as AWS rule objects.
pub(crate) async fn find_security_group_rules(
    ctx: &AwsContext,
    group_id: &str,
) -> Result<Vec<SecurityGroupRule>, AwsError> {
    let mut rules = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = ctx
            .ec2
            .describe_security_group_rules()
            .filters(Filter::builder().name("group-id").values(group_id).build())
            .set_next_token(token.take())
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
        rules.extend(out.security_group_rules().iter().filter(|r| r.group_id() == Some(group_id)).cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(rules),
        }
    }
}

/// The allow-all egress rules AWS gives every new VPC security group (IPv4, and IPv6 in dual-stack VPCs).
fn is_default_egress(rule: &SecurityGroupRule) -> bool {
    rule.is_egress() == Some(true)
        && rule.ip_protocol() == Some("-1")
        && (rule.cidr_ipv4() == Some("0.0.0.0/0") || rule.cidr_ipv6() == Some("::/0"))
        && rule.referenced_group_info().is_none()
        && rule.prefix_list_id().is_none()
}

/// Revokes the given rules of `group_id` by rule ID, ingress and egress apart (one call each).
async fn revoke_rules(ctx: &AwsContext, group_id: &str, rules: &[SecurityGroupRule]) -> Result<(), AwsError> {
    let ids = |egress: bool| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.is_egress() == Some(egress))
            .filter_map(|r| r.security_group_rule_id().map(str::to_string))
            .collect()
    };
    let (egress, ingress) = (ids(true), ids(false));
    if !egress.is_empty() {
        let r = ctx
            .ec2
            .revoke_security_group_egress()
            .group_id(group_id)
            .set_security_group_rule_ids(Some(egress))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        ignore_not_found(r.map(|_| ()))?;
    }
    if !ingress.is_empty() {
        let r = ctx
            .ec2
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_security_group_rule_ids(Some(ingress))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        ignore_not_found(r.map(|_| ()))?;
    }
    Ok(())
}

/// Egress is exactly what `tandem_security_group_rule` resources declare: drops AWS's allow-all rule(s). The
/// IPv4 rule is revoked by its permission (as the AWS provider does), which works even before the new rule is
/// visible to DescribeSecurityGroupRules; any other default rule (IPv6 `::/0`) by its rule ID.
async fn revoke_default_egress(ctx: &AwsContext, id: &str) -> Result<(), AwsError> {
    let allow_all =
        IpPermission::builder().ip_protocol("-1").ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()).build();
    let revoked = wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
        match ctx
            .ec2
            .revoke_security_group_egress()
            .group_id(id)
            .ip_permissions(allow_all.clone())
            .send()
            .await
            .map_err(AwsError::from_sdk)
        {
            // The group is visible but has no such rule: nothing to revoke.
            Err(e) if e.has_code("InvalidPermission.NotFound") => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await;
    revoked?;
    let rest: Vec<SecurityGroupRule> =
        find_security_group_rules(ctx, id).await?.into_iter().filter(is_default_egress).collect();
    revoke_rules(ctx, id, &rest).await
}

fn ignore_not_found(r: Result<(), AwsError>) -> Result<(), AwsError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

async fn read_group(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let g = match find_security_group_by_id(ctx, id).await {
        Ok(g) => g,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let all: Tags = tags::from_ec2(g.tags());
    let arn = g
        .security_group_arn()
        .map_or_else(|| ctx.arn("ec2", g.owner_id(), &format!("security-group/{id}")), str::to_string);
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(arn)),
        ("name", opt_str(g.group_name())),
        ("description", opt_str(g.description())),
        ("vpc_id", opt_str(g.vpc_id())),
        ("owner_id", opt_str(g.owner_id())),
        // Provider-side setting, not an AWS property: import and read keep what the state says.
        ("revoke_rules_on_delete", Value::Bool(prior.attr("revoke_rules_on_delete").as_bool().unwrap_or(false))),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

/// Characters AWS allows in a VPC security group's name and description.
fn group_text_ok(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c))
}

fn group_name(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    if text.is_empty() || text.len() > 255 {
        return Err("a security group name has 1 to 255 characters".to_string());
    }
    if text.to_ascii_lowercase().starts_with("sg-") {
        return Err(format!("{text:?}: AWS does not allow security group names that start with \"sg-\""));
    }
    if !group_text_ok(text) {
        return Err(format!("{text:?}: only a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$* are allowed"));
    }
    Ok(())
}

fn group_description(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    if text.len() > 255 {
        return Err("a security group description has at most 255 characters".to_string());
    }
    if !group_text_ok(text) {
        return Err(format!("{text:?}: only a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$* are allowed"));
    }
    Ok(())
}

#[async_trait]
impl Resource for SecurityGroup {
    fn type_name(&self) -> &'static str {
        "tandem_security_group"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new(
                "A VPC security group. It has no inline rules: declare each rule as a `tandem_security_group_rule`. \
                 The allow-all egress rule AWS adds on create is removed.",
            )
            .attr(Attribute::computed("id", Type::String).describe("The security group ID, e.g. `sg-0123…`."))
            .attr(Attribute::computed("arn", Type::String).describe("The security group's ARN."))
            .attr(
                Attribute::required("name", Type::String)
                    .replace()
                    .validate(group_name)
                    .describe("The group's name, unique in its VPC. Changing it replaces the group."),
            )
            .attr(
                Attribute::with_default("description", Value::from("Managed by Terraform"))
                    .replace()
                    .validate(group_description)
                    .describe(
                        "The group's description. Default `Managed by Terraform`. Changing it replaces the group.",
                    ),
            )
            .attr(
                Attribute::optional_computed("vpc_id", Type::String)
                    .replace()
                    .describe("The VPC of the group; the region's default VPC when left out."),
            )
            .attr(Attribute::with_default("revoke_rules_on_delete", Value::Bool(false)).describe(
                "Revoke every rule of the group before deleting it, e.g. to break references between two \
                     groups' rules. Default `false`.",
            ))
            .attr(Attribute::computed("owner_id", Type::String).describe("The AWS account that owns the group."))
            .attr(tags)
            .attr(tags_all)
            .nested(timeouts_block(&["delete"])),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = ctx
            .ec2
            .create_security_group()
            .group_name(planned.attr("name").as_str().unwrap_or_default())
            .description(planned.attr("description").as_str().unwrap_or("Managed by Terraform"))
            .set_vpc_id(planned.attr("vpc_id").as_str().map(str::to_string))
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::SecurityGroup, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.group_id())?;
        let rest = async {
            let state = lifecycle::read_after_create(|| read_group(ctx, &id, planned)).await?;
            revoke_default_egress(ctx, &id).await?;
            Ok(state)
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_group(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_group(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        if state.attr("revoke_rules_on_delete").as_bool() == Some(true) {
            let revoked = async {
                let rules = find_security_group_rules(ctx, id).await?;
                revoke_rules(ctx, id, &rules).await
            }
            .await;
            match revoked {
                Ok(()) => {}
                Err(e) if e.is_not_found() => return,
                Err(e) => return report(diags, "revoking the rules of", OBJECT, Some(id), &e),
            }
        }
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::timeout_for(state, "delete", DELETE_TIMEOUT),
            || async {
                ctx.ec2.delete_security_group().group_id(id).send().await.map(|_| ()).map_err(AwsError::from_sdk)
            },
            || async { find_security_group_by_id(ctx, id).await.map(|_| Some("present".to_string())) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn identity_attributes_force_replacement_tags_do_not() {
        let s = SecurityGroup.schema();
        for name in ["name", "description", "vpc_id"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        assert!(!s.block.attribute("tags").unwrap().has(PlanModifier::RequiresReplace));
        assert_eq!(s.block.attribute("description").unwrap().default, Some(Value::from("Managed by Terraform")));
    }

    #[test]
    fn names_follow_aws_rules() {
        assert!(group_name(&"cluster-nodes".into()).is_ok());
        assert!(group_name(&"sg-nodes".into()).unwrap_err().contains("sg-"));
        assert!(group_name(&"".into()).is_err());
        assert!(group_name(&"ü".into()).is_err());
        assert!(group_description(&"Heartbeat (UDP 5405) & API".into()).is_ok());
        assert!(group_description(&Value::from("x".repeat(256))).is_err());
    }

    #[test]
    fn only_the_allow_all_egress_counts_as_default() {
        let rule = |egress: bool, proto: &str, cidr: &str| {
            SecurityGroupRule::builder().is_egress(egress).ip_protocol(proto).cidr_ipv4(cidr).build()
        };
        assert!(is_default_egress(&rule(true, "-1", "0.0.0.0/0")));
        assert!(!is_default_egress(&rule(false, "-1", "0.0.0.0/0")));
        assert!(!is_default_egress(&rule(true, "tcp", "0.0.0.0/0")));
        assert!(!is_default_egress(&rule(true, "-1", "10.0.0.0/8")));
    }
}
