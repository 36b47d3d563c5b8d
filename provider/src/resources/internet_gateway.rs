//! `tandem_internet_gateway`: an Internet gateway, attached to (at most) one VPC; attach/detach in place.

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttachmentStatus, ResourceType};

use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::tags_attributes;
use crate::framework::{Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct InternetGateway;

const OBJECT: &str = "EC2 Internet Gateway";

pub(crate) async fn find_internet_gateway_by_id(
    ctx: &AwsContext,
    id: &str,
) -> Result<aws_sdk_ec2::types::InternetGateway, AwsError> {
    let out = ctx.ec2.describe_internet_gateways().internet_gateway_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.internet_gateways()
        .iter()
        .find(|g| g.internet_gateway_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("Internet gateway {id} not found")))
}

/// The VPC the gateway is attached to (or attaching), if any.
fn attached_vpc(g: &aws_sdk_ec2::types::InternetGateway) -> Option<&str> {
    g.attachments()
        .iter()
        .find(|a| !matches!(a.state(), Some(AttachmentStatus::Detached) | Some(AttachmentStatus::Detaching)))
        .and_then(|a| a.vpc_id())
}

async fn read_gateway(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let g = match find_internet_gateway_by_id(ctx, id).await {
        Ok(g) => g,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let all: Tags = tags::from_ec2(g.tags());
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(ctx.arn("ec2", g.owner_id(), &format!("internet-gateway/{id}")))),
        ("vpc_id", opt_str(attached_vpc(&g))),
        ("owner_id", opt_str(g.owner_id())),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

async fn attach(ctx: &AwsContext, id: &str, vpc_id: &str) -> Result<(), AwsError> {
    // A VPC made in the same apply may not be visible to the attach call yet.
    wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
        ctx.ec2
            .attach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc_id)
            .send()
            .await
            .map_err(AwsError::from_sdk)
    })
    .await?;
    wait::wait_for(&format!("Internet gateway {id} to attach to {vpc_id}"), wait::CREATE_TIMEOUT, || async {
        let g = find_internet_gateway_by_id(ctx, id).await?;
        let state = g.attachments().iter().find(|a| a.vpc_id() == Some(vpc_id)).and_then(|a| a.state());
        // EC2 reports an attached Internet gateway as "available" (outside the SDK's enum) or "attached".
        Ok(match state.map(AttachmentStatus::as_str) {
            Some("available" | "attached") => Status::Ready(()),
            other => Status::Pending(other.unwrap_or("not attached").to_string()),
        })
    })
    .await
}

async fn detach(ctx: &AwsContext, id: &str, vpc_id: &str) -> Result<(), AwsError> {
    // Detaching fails with DependencyViolation while public addresses are still mapped in the VPC.
    let result = wait::retry_while(ErrorClass::DependencyViolation, wait::DELETE_TIMEOUT, || async {
        ctx.ec2
            .detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc_id)
            .send()
            .await
            .map_err(AwsError::from_sdk)
    })
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.has_code("Gateway.NotAttached") => Ok(()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Resource for InternetGateway {
    fn type_name(&self) -> &'static str {
        "tandem_internet_gateway"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("An Internet gateway: the public subnets' route to the Internet (EIP topology, NAT gateways).")
                .attr(Attribute::computed("id", Type::String).describe("The gateway ID."))
                .attr(Attribute::computed("arn", Type::String).describe("The gateway's ARN."))
                .attr(
                    Attribute::optional("vpc_id", Type::String)
                        .describe("The VPC to attach to. Changing it detaches and re-attaches in place."),
                )
                .attr(Attribute::computed("owner_id", Type::String).describe("The AWS account that owns the gateway."))
                .attr(tags)
                .attr(tags_all),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = ctx
            .ec2
            .create_internet_gateway()
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::InternetGateway, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.internet_gateway().and_then(|g| g.internet_gateway_id()))?;
        let rest = async {
            if let Some(vpc_id) = planned.attr("vpc_id").as_str() {
                attach(ctx, &id, vpc_id).await?;
            }
            lifecycle::read_after_create(|| read_gateway(ctx, &id, planned)).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_gateway(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            let (old, new) = (prior.attr("vpc_id").as_str(), planned.attr("vpc_id").as_str());
            if old != new {
                if let Some(old) = old {
                    detach(ctx, id, old).await?;
                }
                if let Some(new) = new {
                    attach(ctx, id, new).await?;
                }
            }
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_gateway(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        // Detach from whatever AWS says it is attached to, not only what the state remembers.
        let attached = match find_internet_gateway_by_id(ctx, id).await {
            Ok(g) => attached_vpc(&g).map(str::to_string),
            Err(e) if e.is_not_found() => return,
            Err(e) => return report(diags, "deleting", OBJECT, Some(id), &e),
        };
        if let Some(vpc_id) = attached
            && let Err(e) = detach(ctx, id, &vpc_id).await
        {
            return report(diags, "detaching", OBJECT, Some(id), &e);
        }
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::DELETE_TIMEOUT,
            || async {
                ctx.ec2
                    .delete_internet_gateway()
                    .internet_gateway_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(AwsError::from_sdk)
            },
            || async { find_internet_gateway_by_id(ctx, id).await.map(|_| Some("present".to_string())) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn vpc_id_changes_in_place() {
        let s = InternetGateway.schema();
        let vpc = s.block.attribute("vpc_id").unwrap();
        assert!(vpc.optional && !vpc.has(PlanModifier::RequiresReplace));
    }
}
