//! `tandem_vpc`: an Amazon VPC, as the AWS provider's `aws_vpc` (IPv4, default tenancy).

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, VpcAttributeName, VpcState};

use super::{lifecycle, object, opt_str};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::tags_attributes;
use crate::framework::validators::vpc_cidr;
use crate::framework::{Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct Vpc;

const OBJECT: &str = "EC2 VPC";

/// Finder: the VPC, or a NotFound error (also when AWS answers with no or another VPC).
pub(crate) async fn find_vpc_by_id(ctx: &AwsContext, id: &str) -> Result<aws_sdk_ec2::types::Vpc, AwsError> {
    let out = ctx.ec2.describe_vpcs().vpc_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.vpcs()
        .iter()
        .find(|v| v.vpc_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("VPC {id} not found")))
}

async fn vpc_attribute(ctx: &AwsContext, id: &str, name: VpcAttributeName) -> Result<bool, AwsError> {
    let out =
        ctx.ec2.describe_vpc_attribute().vpc_id(id).attribute(name.clone()).send().await.map_err(AwsError::from_sdk)?;
    let value = match name {
        VpcAttributeName::EnableDnsHostnames => out.enable_dns_hostnames(),
        _ => out.enable_dns_support(),
    };
    Ok(value.and_then(AttributeBooleanValue::value).unwrap_or(false))
}

async fn set_vpc_attribute(ctx: &AwsContext, id: &str, name: VpcAttributeName, on: bool) -> Result<(), AwsError> {
    let value = AttributeBooleanValue::builder().value(on).build();
    let call = ctx.ec2.modify_vpc_attribute().vpc_id(id);
    let call = match name {
        VpcAttributeName::EnableDnsHostnames => call.enable_dns_hostnames(value),
        _ => call.enable_dns_support(value),
    };
    call.send().await.map_err(AwsError::from_sdk)?;
    Ok(())
}

async fn main_route_table_id(ctx: &AwsContext, vpc_id: &str) -> Result<Option<String>, AwsError> {
    let out = ctx
        .ec2
        .describe_route_tables()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .filters(Filter::builder().name("association.main").values("true").build())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(out.route_tables().first().and_then(|t| t.route_table_id()).map(str::to_string))
}

/// Applies the DNS settings that differ from what AWS has; the order matters: hostnames need support on.
async fn apply_dns(ctx: &AwsContext, id: &str, prior: &Value, planned: &Value) -> Result<(), AwsError> {
    let support = planned.attr("enable_dns_support").as_bool().unwrap_or(true);
    let hostnames = planned.attr("enable_dns_hostnames").as_bool().unwrap_or(false);
    let old_support = prior.attr("enable_dns_support").as_bool().unwrap_or(true);
    let old_hostnames = prior.attr("enable_dns_hostnames").as_bool().unwrap_or(false);
    if support != old_support && support {
        set_vpc_attribute(ctx, id, VpcAttributeName::EnableDnsSupport, true).await?;
    }
    if hostnames != old_hostnames {
        set_vpc_attribute(ctx, id, VpcAttributeName::EnableDnsHostnames, hostnames).await?;
    }
    if support != old_support && !support {
        set_vpc_attribute(ctx, id, VpcAttributeName::EnableDnsSupport, false).await?;
    }
    Ok(())
}

async fn read_vpc(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let vpc = match find_vpc_by_id(ctx, id).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let support = vpc_attribute(ctx, id, VpcAttributeName::EnableDnsSupport).await?;
    let hostnames = vpc_attribute(ctx, id, VpcAttributeName::EnableDnsHostnames).await?;
    let main_rt = main_route_table_id(ctx, id).await?;
    let all: Tags = tags::from_ec2(vpc.tags());
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(ctx.arn("ec2", vpc.owner_id(), &format!("vpc/{id}")))),
        ("cidr_block", opt_str(vpc.cidr_block())),
        ("enable_dns_support", Value::Bool(support)),
        ("enable_dns_hostnames", Value::Bool(hostnames)),
        ("main_route_table_id", opt_str(main_rt.as_deref())),
        ("default_route_table_id", opt_str(main_rt.as_deref())),
        ("owner_id", opt_str(vpc.owner_id())),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

async fn wait_vpc_available(ctx: &AwsContext, id: &str) -> Result<(), AwsError> {
    wait::wait_for(&format!("VPC {id} to become available"), wait::CREATE_TIMEOUT, || async {
        match find_vpc_by_id(ctx, id).await {
            Ok(v) if v.state() == Some(&VpcState::Available) => Ok(Status::Ready(())),
            Ok(v) => Ok(Status::Pending(state_name(v.state()))),
            // Eventual consistency: a VPC just created may not be visible yet.
            Err(e) if e.is_not_found() => Ok(Status::Pending("not yet visible".into())),
            Err(e) => Err(e),
        }
    })
    .await
}

#[async_trait]
impl Resource for Vpc {
    fn type_name(&self) -> &'static str {
        "tandem_vpc"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("An Amazon VPC: the network every tandem cluster lives in.")
                .attr(Attribute::computed("id", Type::String).describe("The VPC ID, e.g. `vpc-0123456789abcdef0`."))
                .attr(Attribute::computed("arn", Type::String).describe("The VPC's ARN."))
                .attr(
                    Attribute::required("cidr_block", Type::String)
                        .replace()
                        .validate(vpc_cidr)
                        .describe("The IPv4 CIDR block of the VPC, /16 to /28. Changing it replaces the VPC."),
                )
                .attr(
                    Attribute::with_default("enable_dns_support", Value::Bool(true))
                        .describe("Whether the Amazon DNS server answers in the VPC. Default `true`."),
                )
                .attr(
                    Attribute::with_default("enable_dns_hostnames", Value::Bool(false))
                        .describe("Whether instances get public DNS host names. Default `false`."),
                )
                .attr(Attribute::computed("main_route_table_id", Type::String).describe("The main route table's ID."))
                .attr(
                    Attribute::computed("default_route_table_id", Type::String)
                        .describe("The default route table's ID (the main route table)."),
                )
                .attr(Attribute::computed("owner_id", Type::String).describe("The AWS account that owns the VPC."))
                .attr(tags)
                .attr(tags_all),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let cidr = planned.attr("cidr_block").as_str().unwrap_or_default();
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = ctx
            .ec2
            .create_vpc()
            .cidr_block(cidr)
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::Vpc, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.vpc().and_then(|v| v.vpc_id()))?;
        let rest = async {
            wait_vpc_available(ctx, &id).await?;
            apply_dns(ctx, &id, &Value::Null, planned).await?;
            lifecycle::read_after_create(|| read_vpc(ctx, &id, planned)).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_vpc(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            apply_dns(ctx, id, prior, planned).await?;
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_vpc(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::DELETE_TIMEOUT,
            || async { ctx.ec2.delete_vpc().vpc_id(id).send().await.map(|_| ()).map_err(AwsError::from_sdk) },
            || async { find_vpc_by_id(ctx, id).await.map(|v| Some(state_name(v.state()))) },
        )
        .await;
    }
}

fn state_name(state: Option<&VpcState>) -> String {
    state.map_or("unknown", |s| s.as_str()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_replaces_on_cidr_and_defaults_dns() {
        let s = Vpc.schema();
        let cidr = s.block.attribute("cidr_block").unwrap();
        assert!(cidr.required && cidr.has(crate::framework::schema::PlanModifier::RequiresReplace));
        assert_eq!(s.block.attribute("enable_dns_support").unwrap().default, Some(Value::Bool(true)));
    }
}
