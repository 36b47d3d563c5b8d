//! `tandem_nat_gateway`: a NAT gateway in one subnet, as the AWS provider's `aws_nat_gateway` (one address).
//! Private subnets reach the AWS APIs through it; the HA topologies put one in each availability zone.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{ConnectivityType, NatGateway as AwsNatGateway, NatGatewayState, ResourceType};

use super::eip::check_allocation_exists;
use super::subnet::find_subnet_by_id;
use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::{tags_attributes, timeouts_block};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct NatGateway;

const OBJECT: &str = "EC2 NAT Gateway";

/// As the AWS provider: creating takes a few minutes, deleting can take much longer.
pub const NAT_CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const NAT_DELETE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The code of a NAT gateway that AWS gave up on (state `failed`).
const FAILED: &str = "TDM-EC2-106";

/// Finder: the NAT gateway, or NotFound — also for one in state `deleted`, which AWS keeps listing for a
/// while and which can never come back.
pub(crate) async fn find_nat_gateway_by_id(ctx: &AwsContext, id: &str) -> Result<AwsNatGateway, AwsError> {
    let out = ctx.ec2.describe_nat_gateways().nat_gateway_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.nat_gateways()
        .iter()
        .find(|g| g.nat_gateway_id() == Some(id) && g.state() != Some(&NatGatewayState::Deleted))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("NAT gateway {id} not found")))
}

fn state_name(g: &AwsNatGateway) -> String {
    g.state().map_or("unknown", NatGatewayState::as_str).to_string()
}

/// What one poll of a NAT gateway being created found: ready, pending, or failed with AWS's reason.
#[derive(Debug, PartialEq, Eq)]
enum CreateStatus {
    Available,
    Pending(String),
    Failed { code: String, message: String },
}

fn create_status(g: &AwsNatGateway) -> CreateStatus {
    match g.state() {
        Some(NatGatewayState::Available) => CreateStatus::Available,
        Some(NatGatewayState::Failed | NatGatewayState::Deleting | NatGatewayState::Deleted) => CreateStatus::Failed {
            code: g.failure_code().unwrap_or("unknown").to_string(),
            message: g.failure_message().unwrap_or("AWS gave no reason").to_string(),
        },
        _ => CreateStatus::Pending(state_name(g)),
    }
}

/// Why a create did not end with an available gateway.
enum CreateError {
    Failed { code: String, message: String },
    Aws(AwsError),
}

async fn wait_available(ctx: &AwsContext, id: &str, timeout: Duration) -> Result<(), CreateError> {
    let outcome = wait::wait_for(&format!("NAT gateway {id} to become available"), timeout, || async {
        match find_nat_gateway_by_id(ctx, id).await {
            Ok(g) => Ok(match create_status(&g) {
                CreateStatus::Available => Status::Ready(None),
                CreateStatus::Pending(s) => Status::Pending(s),
                CreateStatus::Failed { code, message } => Status::Ready(Some((code, message))),
            }),
            Err(e) if e.is_not_found() => Ok(Status::Pending("not yet visible".into())),
            Err(e) => Err(e),
        }
    })
    .await;
    match outcome {
        Ok(None) => Ok(()),
        Ok(Some((code, message))) => Err(CreateError::Failed { code, message }),
        Err(e) => Err(CreateError::Aws(e)),
    }
}

async fn read_nat_gateway(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let g = match find_nat_gateway_by_id(ctx, id).await {
        Ok(g) => g,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let primary = g.nat_gateway_addresses().iter().find(|a| a.is_primary() != Some(false));
    let all: Tags = tags::from_ec2(g.tags());
    Ok(Some(object([
        ("id", Value::from(id)),
        ("subnet_id", opt_str(g.subnet_id())),
        ("allocation_id", opt_str(primary.and_then(|a| a.allocation_id()))),
        ("connectivity_type", Value::from(g.connectivity_type().map_or("public", ConnectivityType::as_str))),
        ("network_interface_id", opt_str(primary.and_then(|a| a.network_interface_id()))),
        ("private_ip", opt_str(primary.and_then(|a| a.private_ip()))),
        ("public_ip", opt_str(primary.and_then(|a| a.public_ip()))),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

fn connectivity(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some("public" | "private") => Ok(()),
        Some(other) => Err(format!("{other:?} is not one of public, private")),
        None => Err("expected a string".into()),
    }
}

/// A public NAT gateway needs an Elastic IP; a private one cannot have one. Unknown values pass.
fn check_address(config: &Value, diags: &mut Diagnostics) {
    let kind = config.attr("connectivity_type");
    if kind.is_unknown() {
        return;
    }
    let allocation = config.attr("allocation_id");
    match kind.as_str().unwrap_or("public") {
        "public" if allocation.is_null() => diags.error_at(
            AttrPath::root("allocation_id"),
            "TDM-EC2-104",
            "a public NAT gateway needs allocation_id",
            "Set allocation_id to an Elastic IP's allocation ID (tandem_eip.x.id), or set connectivity_type = \
             \"private\" for a gateway that only translates to other private networks.",
        ),
        "private" if !allocation.is_null() => diags.error_at(
            AttrPath::root("allocation_id"),
            "TDM-EC2-105",
            "a private NAT gateway cannot have allocation_id",
            "Remove allocation_id, or set connectivity_type = \"public\" (the default).",
        ),
        _ => {}
    }
}

async fn check_placement(ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) {
    if let Some(subnet) = planned.attr("subnet_id").as_str() {
        match find_subnet_by_id(ctx, subnet).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => diags.error_at(
                AttrPath::root("subnet_id"),
                "TDM-EC2-109",
                format!("subnet {subnet} does not exist"),
                format!("No subnet with this ID exists in {} for these credentials.", ctx.region),
            ),
            Err(e) => report(diags, "checking", "EC2 Subnet", Some(subnet), &e),
        }
    }
    if let Some(allocation) = planned.attr("allocation_id").as_str() {
        check_allocation_exists(ctx, "allocation_id", allocation, diags).await;
    }
}

#[async_trait]
impl Resource for NatGateway {
    fn type_name(&self) -> &'static str {
        "tandem_nat_gateway"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("A NAT gateway: the private subnets' way out to the AWS APIs and the Internet.")
                .attr(Attribute::computed("id", Type::String).describe("The NAT gateway ID, e.g. `nat-0123…`."))
                .attr(
                    Attribute::required("subnet_id", Type::String)
                        .replace()
                        .describe("The subnet to place the gateway in: a public subnet for a public gateway."),
                )
                .attr(Attribute::optional("allocation_id", Type::String).replace().describe(
                    "The Elastic IP's allocation ID. Required for public gateways, not allowed for private ones.",
                ))
                .attr(
                    Attribute::with_default("connectivity_type", Value::from("public"))
                        .replace()
                        .validate(connectivity)
                        .describe("`public` (default) or `private`."),
                )
                .attr(
                    Attribute::computed("network_interface_id", Type::String)
                        .describe("The network interface AWS made for the gateway."),
                )
                .attr(Attribute::computed("private_ip", Type::String).describe("The gateway's private IPv4 address."))
                .attr(Attribute::computed("public_ip", Type::String).describe("The Elastic IP's public address."))
                .attr(tags)
                .attr(tags_all)
                .nested(timeouts_block(&["create", "delete"])),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_address(config, diags);
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        if plan.is_create() || plan.changes("subnet_id") || plan.changes("allocation_id") {
            check_placement(ctx, &plan.planned, diags).await;
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        check_address(planned, diags);
        if diags.has_errors() {
            return None;
        }
        let all = tags::tags_of(planned.attr("tags_all"));
        let kind = planned.attr("connectivity_type").as_str().unwrap_or("public");
        let created = ctx
            .ec2
            .create_nat_gateway()
            .subnet_id(planned.attr("subnet_id").as_str().unwrap_or_default())
            .set_allocation_id(planned.attr("allocation_id").as_str().map(str::to_string))
            .connectivity_type(ConnectivityType::from(kind))
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::Natgateway, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.nat_gateway().and_then(|g| g.nat_gateway_id()))?;
        let timeout = wait::timeout_for(planned, "create", NAT_CREATE_TIMEOUT);
        match wait_available(ctx, &id, timeout).await {
            Ok(()) => {}
            Err(CreateError::Failed { code, message }) => {
                diags.error(
                    FAILED,
                    format!("creating {OBJECT} ({id}): the gateway failed: {code}: {message}"),
                    failure_hint(&code),
                );
                // The failed gateway exists (AWS removes it after a while): keep it in state, tainted.
                let mut already_reported = Diagnostics::new();
                let failed = async { Err(AwsError::local(ErrorClass::Other, "failed")) };
                return lifecycle::finish_create(&mut already_reported, OBJECT, &id, planned, failed).await;
            }
            Err(CreateError::Aws(e)) => {
                let failed = async { Err(e) };
                return lifecycle::finish_create(diags, OBJECT, &id, planned, failed).await;
            }
        }
        let rest = lifecycle::read_after_create(|| read_nat_gateway(ctx, &id, planned));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_nat_gateway(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_nat_gateway(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        // A failed gateway cannot be deleted and needs no deleting: AWS removes it by itself.
        match find_nat_gateway_by_id(ctx, id).await {
            Ok(g) if g.state() == Some(&NatGatewayState::Failed) => return,
            Ok(_) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) => return report(diags, "deleting", OBJECT, Some(id), &e),
        }
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::timeout_for(state, "delete", NAT_DELETE_TIMEOUT),
            || async {
                ctx.ec2.delete_nat_gateway().nat_gateway_id(id).send().await.map(|_| ()).map_err(AwsError::from_sdk)
            },
            || async {
                find_nat_gateway_by_id(ctx, id)
                    .await
                    .map(|g| (g.state() != Some(&NatGatewayState::Failed)).then(|| state_name(&g)))
            },
        )
        .await;
    }
}

/// What to do about the failure codes AWS documents for NAT gateways.
fn failure_hint(code: &str) -> &'static str {
    match code {
        "Gateway.NotAttached" => {
            "The VPC has no Internet gateway attached: a public NAT gateway needs one. Attach a \
             tandem_internet_gateway to the VPC (and make the NAT gateway depend on it), then apply again."
        }
        "InvalidAllocationID.NotFound" | "Resource.AlreadyAssociated" => {
            "The Elastic IP does not exist or is associated elsewhere: give the NAT gateway an unassociated \
             address of its own."
        }
        "InsufficientFreeAddressesInSubnet" => "The subnet has no free IPv4 address left: use a larger subnet.",
        "InternalError" => "AWS failed on its side: apply again (the failed gateway is replaced).",
        _ => "The gateway stays in state as tainted; the next apply replaces it once the cause is fixed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    fn gateway(state: NatGatewayState) -> AwsNatGateway {
        AwsNatGateway::builder()
            .nat_gateway_id("nat-1")
            .state(state)
            .failure_code("Gateway.NotAttached")
            .failure_message("Network vpc-1 has no Internet gateway attached")
            .build()
    }

    #[test]
    fn failed_gateway_reports_aws_reason() {
        assert_eq!(
            create_status(&gateway(NatGatewayState::Failed)),
            CreateStatus::Failed {
                code: "Gateway.NotAttached".into(),
                message: "Network vpc-1 has no Internet gateway attached".into()
            }
        );
        assert!(failure_hint("Gateway.NotAttached").contains("Internet gateway"));
        assert_eq!(create_status(&gateway(NatGatewayState::Available)), CreateStatus::Available);
        assert_eq!(create_status(&gateway(NatGatewayState::Pending)), CreateStatus::Pending("pending".into()));
    }

    #[test]
    fn public_needs_an_address_and_private_refuses_one() {
        let cfg = |kind: Value, alloc: Value| Value::object([("connectivity_type", kind), ("allocation_id", alloc)]);
        let mut d = Diagnostics::new();
        check_address(&cfg(Value::Null, Value::Null), &mut d);
        assert!(d.0[0].summary.contains("TDM-EC2-104"));
        assert_eq!(d.0[0].path, Some(AttrPath::root("allocation_id")));
        let mut d = Diagnostics::new();
        check_address(&cfg("private".into(), "eipalloc-1".into()), &mut d);
        assert!(d.0[0].summary.contains("TDM-EC2-105"));
        let mut d = Diagnostics::new();
        check_address(&cfg("public".into(), Value::Unknown), &mut d);
        check_address(&cfg("private".into(), Value::Null), &mut d);
        check_address(&cfg(Value::Unknown, Value::Null), &mut d);
        assert!(!d.has_errors());
    }

    #[test]
    fn placement_forces_replacement_and_timeouts_are_configurable() {
        let s = NatGateway.schema();
        for name in ["subnet_id", "allocation_id", "connectivity_type"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        assert!(s.block.blocks.iter().any(|b| b.name == "timeouts"));
        let state = Value::object([("timeouts", Value::object([("create", Value::from("1m"))]))]);
        assert_eq!(wait::timeout_for(&state, "create", NAT_CREATE_TIMEOUT), Duration::from_secs(60));
    }
}
