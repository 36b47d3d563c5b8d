//! `tandem_subnet`: a VPC subnet in one availability zone, as the AWS provider's `aws_subnet` (IPv4).

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, SubnetState};

use super::availability_zones::find_availability_zones;
use super::vpc::find_vpc_by_id;
use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::tags_attributes;
use crate::framework::validators::{availability_zone_name, vpc_cidr};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};
use tandem_runtime::net::{inside_any, parse_ipv4_cidr};

pub struct Subnet;

const OBJECT: &str = "EC2 Subnet";

pub(crate) async fn find_subnet_by_id(ctx: &AwsContext, id: &str) -> Result<aws_sdk_ec2::types::Subnet, AwsError> {
    let out = ctx.ec2.describe_subnets().subnet_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.subnets()
        .iter()
        .find(|s| s.subnet_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("subnet {id} not found")))
}

async fn read_subnet(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let s = match find_subnet_by_id(ctx, id).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let all: Tags = tags::from_ec2(s.tags());
    let arn = s.subnet_arn().map_or_else(|| ctx.arn("ec2", s.owner_id(), &format!("subnet/{id}")), str::to_string);
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(arn)),
        ("vpc_id", opt_str(s.vpc_id())),
        ("cidr_block", opt_str(s.cidr_block())),
        ("availability_zone", opt_str(s.availability_zone())),
        ("availability_zone_id", opt_str(s.availability_zone_id())),
        ("map_public_ip_on_launch", Value::Bool(s.map_public_ip_on_launch().unwrap_or(false))),
        ("owner_id", opt_str(s.owner_id())),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

/// Checks what AWS would only reject later (or never): the CIDR inside the VPC's CIDR blocks, the zone
/// existing in the region. Values still unknown are skipped; create runs the check again with them known.
async fn check_placement(ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) {
    if let (Some(vpc_id), Some(cidr)) = (planned.attr("vpc_id").as_str(), planned.attr("cidr_block").as_str()) {
        match find_vpc_by_id(ctx, vpc_id).await {
            Ok(vpc) => {
                let blocks: Vec<&str> =
                    vpc.cidr_block_association_set().iter().filter_map(|a| a.cidr_block()).collect();
                let blocks = if blocks.is_empty() { vpc.cidr_block().into_iter().collect() } else { blocks };
                if let Ok(net) = parse_ipv4_cidr(cidr) {
                    let nets: Vec<_> = blocks.iter().filter_map(|b| parse_ipv4_cidr(b).ok()).collect();
                    if !inside_any(&net, &nets) {
                        diags.error_at(
                            AttrPath::root("cidr_block"),
                            "TDM-EC2-010",
                            format!("subnet CIDR {cidr} is outside VPC {vpc_id}"),
                            format!(
                                "The VPC's CIDR blocks are {}; choose a block inside one of them.",
                                blocks.join(", ")
                            ),
                        );
                    }
                }
            }
            Err(e) if e.is_not_found() => diags.error_at(
                AttrPath::root("vpc_id"),
                "TDM-EC2-012",
                format!("VPC {vpc_id} does not exist"),
                format!("No VPC with this ID exists in {} for these credentials.", ctx.region),
            ),
            Err(e) => report(diags, "checking", "EC2 VPC", Some(vpc_id), &e),
        }
    }
    if let Some(az) = planned.attr("availability_zone").as_str() {
        match find_availability_zones(ctx, None).await {
            Ok(zones) => {
                let names: Vec<&str> = zones.iter().filter_map(|z| z.zone_name()).collect();
                if !names.contains(&az) {
                    diags.error_at(
                        AttrPath::root("availability_zone"),
                        "TDM-EC2-011",
                        format!("availability zone {az:?} does not exist in {}", ctx.region),
                        format!("Zones of {}: {}.", ctx.region, names.join(", ")),
                    );
                }
            }
            Err(e) => report(diags, "checking", "EC2 Availability Zones", None, &e),
        }
    }
}

async fn set_map_public_ip(ctx: &AwsContext, id: &str, on: bool) -> Result<(), AwsError> {
    ctx.ec2
        .modify_subnet_attribute()
        .subnet_id(id)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(on).build())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(())
}

fn state_name(state: Option<&SubnetState>) -> String {
    state.map_or("unknown", |s| s.as_str()).to_string()
}

#[async_trait]
impl Resource for Subnet {
    fn type_name(&self) -> &'static str {
        "tandem_subnet"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("A subnet of a VPC in one availability zone; a tandem cluster puts one node per zone.")
                .attr(Attribute::computed("id", Type::String).describe("The subnet ID."))
                .attr(Attribute::computed("arn", Type::String).describe("The subnet's ARN."))
                .attr(Attribute::required("vpc_id", Type::String).replace().describe("The VPC the subnet belongs to."))
                .attr(
                    Attribute::required("cidr_block", Type::String)
                        .replace()
                        .validate(vpc_cidr)
                        .describe("The subnet's IPv4 CIDR block; must lie inside the VPC's CIDR blocks."),
                )
                .attr(
                    Attribute::optional_computed("availability_zone", Type::String)
                        .replace()
                        .validate(availability_zone_name)
                        .describe("The zone, e.g. `us-east-1a`. AWS picks one when left out."),
                )
                .attr(
                    Attribute::computed("availability_zone_id", Type::String)
                        .describe("The zone's ID, e.g. `use1-az1`."),
                )
                .attr(
                    Attribute::with_default("map_public_ip_on_launch", Value::Bool(false))
                        .describe("Whether instances launched here get a public IPv4 address. Default `false`."),
                )
                .attr(Attribute::computed("owner_id", Type::String).describe("The AWS account that owns the subnet."))
                .attr(tags)
                .attr(tags_all),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        if plan.is_create() || plan.changes("cidr_block") || plan.changes("availability_zone") {
            check_placement(ctx, &plan.planned, diags).await;
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        // Values unknown at plan time (a VPC made in the same apply) are known now: check before creating.
        check_placement(ctx, planned, diags).await;
        if diags.has_errors() {
            return None;
        }
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = ctx
            .ec2
            .create_subnet()
            .vpc_id(planned.attr("vpc_id").as_str().unwrap_or_default())
            .cidr_block(planned.attr("cidr_block").as_str().unwrap_or_default())
            .set_availability_zone(planned.attr("availability_zone").as_str().map(str::to_string))
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::Subnet, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.subnet().and_then(|s| s.subnet_id()))?;
        let rest = async {
            wait::wait_for(&format!("subnet {id} to become available"), wait::CREATE_TIMEOUT, || async {
                match find_subnet_by_id(ctx, &id).await {
                    Ok(s) if s.state() == Some(&SubnetState::Available) => Ok(Status::Ready(())),
                    Ok(s) => Ok(Status::Pending(state_name(s.state()))),
                    Err(e) if e.is_not_found() => Ok(Status::Pending("not yet visible".into())),
                    Err(e) => Err(e),
                }
            })
            .await?;
            if planned.attr("map_public_ip_on_launch").as_bool() == Some(true) {
                set_map_public_ip(ctx, &id, true).await?;
            }
            lifecycle::read_after_create(|| read_subnet(ctx, &id, planned)).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_subnet(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            let public = planned.attr("map_public_ip_on_launch").as_bool().unwrap_or(false);
            if prior.attr("map_public_ip_on_launch").as_bool() != Some(public) {
                set_map_public_ip(ctx, id, public).await?;
            }
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_subnet(ctx, id, planned).await
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
            || async { ctx.ec2.delete_subnet().subnet_id(id).send().await.map(|_| ()).map_err(AwsError::from_sdk) },
            || async { find_subnet_by_id(ctx, id).await.map(|s| Some(state_name(s.state()))) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn placement_attributes_force_replacement() {
        let s = Subnet.schema();
        for name in ["vpc_id", "cidr_block", "availability_zone"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        assert!(!s.block.attribute("map_public_ip_on_launch").unwrap().has(PlanModifier::RequiresReplace));
    }
}
