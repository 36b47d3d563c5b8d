//! `tandem_route_table`: a VPC route table, as the AWS provider's `aws_route_table` but without inline
//! routes: every route is a `tandem_route`, so that one owner per route exists and the routes the cluster
//! runtime re-points (VIP control) never fight with a route list in the table.

use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, RouteTable as AwsRouteTable};

use super::vpc::find_vpc_by_id;
use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::tags_attributes;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct RouteTable;

const OBJECT: &str = "EC2 Route Table";

/// Finder: the route table, or NotFound.
pub(crate) async fn find_route_table_by_id(ctx: &AwsContext, id: &str) -> Result<AwsRouteTable, AwsError> {
    let out = ctx.ec2.describe_route_tables().route_table_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.route_tables()
        .iter()
        .find(|t| t.route_table_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("route table {id} not found")))
}

/// Plan-time check shared by the resources that point at a route table: the table, if it exists.
pub(crate) async fn check_route_table_exists(
    ctx: &AwsContext,
    id: &str,
    diags: &mut Diagnostics,
) -> Option<AwsRouteTable> {
    match find_route_table_by_id(ctx, id).await {
        Ok(t) => Some(t),
        Err(e) if e.is_not_found() => {
            diags.error_at(
                AttrPath::root("route_table_id"),
                "TDM-EC2-102",
                format!("route table {id} does not exist"),
                format!("No route table with this ID exists in {} for these credentials.", ctx.region),
            );
            None
        }
        Err(e) => {
            report(diags, "checking", OBJECT, Some(id), &e);
            None
        }
    }
}

async fn read_route_table(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let t = match find_route_table_by_id(ctx, id).await {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let all: Tags = tags::from_ec2(t.tags());
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(ctx.arn("ec2", t.owner_id(), &format!("route-table/{id}")))),
        ("vpc_id", opt_str(t.vpc_id())),
        ("owner_id", opt_str(t.owner_id())),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

async fn check_vpc(ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) {
    let Some(vpc_id) = planned.attr("vpc_id").as_str() else { return };
    match find_vpc_by_id(ctx, vpc_id).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => diags.error_at(
            AttrPath::root("vpc_id"),
            "TDM-EC2-012",
            format!("VPC {vpc_id} does not exist"),
            format!("No VPC with this ID exists in {} for these credentials.", ctx.region),
        ),
        Err(e) => report(diags, "checking", "EC2 VPC", Some(vpc_id), &e),
    }
}

#[async_trait]
impl Resource for RouteTable {
    fn type_name(&self) -> &'static str {
        "tandem_route_table"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new(
                "A route table of a VPC. It has no inline routes: declare each route as a `tandem_route`, and \
                 attach the table to subnets with `tandem_route_table_association`.",
            )
            .attr(Attribute::computed("id", Type::String).describe("The route table ID, e.g. `rtb-0123…`."))
            .attr(Attribute::computed("arn", Type::String).describe("The route table's ARN."))
            .attr(
                Attribute::required("vpc_id", Type::String)
                    .replace()
                    .describe("The VPC the table belongs to. Changing it replaces the table."),
            )
            .attr(Attribute::computed("owner_id", Type::String).describe("The AWS account that owns the table."))
            .attr(tags)
            .attr(tags_all),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        if plan.is_create() || plan.changes("vpc_id") {
            check_vpc(ctx, &plan.planned, diags).await;
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let vpc_id = planned.attr("vpc_id").as_str().unwrap_or_default();
        let all = tags::tags_of(planned.attr("tags_all"));
        // A VPC made in the same apply may not be visible yet.
        let created = wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
            ctx.ec2
                .create_route_table()
                .vpc_id(vpc_id)
                .set_tag_specifications(tags::ec2_tag_spec(ResourceType::RouteTable, &all).map(|t| vec![t]))
                .send()
                .await
                .map_err(AwsError::from_sdk)
        })
        .await;
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.route_table().and_then(|t| t.route_table_id()))?;
        let rest = lifecycle::read_after_create(|| read_route_table(ctx, &id, planned));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_route_table(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_route_table(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        // DependencyViolation while subnets are still associated: their associations are deleted first.
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::DELETE_TIMEOUT,
            || async {
                ctx.ec2.delete_route_table().route_table_id(id).send().await.map(|_| ()).map_err(AwsError::from_sdk)
            },
            || async { find_route_table_by_id(ctx, id).await.map(|_| Some("present".to_string())) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn table_has_no_inline_routes_and_vpc_forces_replacement() {
        let s = RouteTable.schema();
        assert!(s.block.attribute("route").is_none() && s.block.blocks.is_empty());
        assert!(s.block.attribute("vpc_id").unwrap().has(PlanModifier::RequiresReplace));
    }
}
