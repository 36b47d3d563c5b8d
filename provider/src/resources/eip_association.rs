//! `tandem_eip_association`: one association of an Elastic IP with a network interface, as the AWS provider's
//! `aws_eip_association` (VPC, by ENI). The object is that association (its ID): when the address is moved
//! elsewhere — by hand or by a tandem failover group — this association no longer exists.

use async_trait::async_trait;
use aws_sdk_ec2::types::NetworkInterface;

use super::eip::{check_allocation_exists, find_eip_by_allocation_id, find_eip_by_association_id, non_empty};
use super::{lifecycle, object, opt_str, report};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::validators::ipv4_address;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct EipAssociation;

const OBJECT: &str = "EC2 EIP Association";

/// Finder: the network interface, or NotFound.
pub(crate) async fn find_network_interface_by_id(ctx: &AwsContext, id: &str) -> Result<NetworkInterface, AwsError> {
    let out =
        ctx.ec2.describe_network_interfaces().network_interface_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.network_interfaces()
        .iter()
        .find(|n| n.network_interface_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("network interface {id} not found")))
}

/// Plan-time check shared by the resources that point at an ENI: it exists in this region.
pub(crate) async fn check_network_interface_exists(ctx: &AwsContext, attr: &str, id: &str, diags: &mut Diagnostics) {
    match find_network_interface_by_id(ctx, id).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => diags.error_at(
            AttrPath::root(attr),
            "TDM-EC2-108",
            format!("network interface {id} does not exist"),
            format!("No network interface with this ID exists in {} for these credentials.", ctx.region),
        ),
        Err(e) => report(diags, "checking", "EC2 Network Interface", Some(id), &e),
    }
}

/// The address's current association. When the runtime has moved the address since (a failover makes a
/// new association), that one is read: the initial association this resource made lives on as whatever
/// association the address has, so Terraform does not move the address back. Gone only when the address is
/// no longer associated at all.
async fn read_association(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let a = match find_eip_by_association_id(ctx, id).await {
        Ok(a) => a,
        Err(e) if e.is_not_found() => {
            let Some(allocation) = prior.attr("allocation_id").as_str() else { return Ok(None) };
            match find_eip_by_allocation_id(ctx, allocation).await {
                Ok(a) if non_empty(a.association_id()).is_some() => a,
                Ok(_) => return Ok(None),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let reassociate = prior.attr("allow_reassociation").as_bool().unwrap_or(true);
    Ok(Some(object([
        ("id", opt_str(non_empty(a.association_id()))),
        ("allocation_id", opt_str(non_empty(a.allocation_id()))),
        ("network_interface_id", opt_str(non_empty(a.network_interface_id()))),
        ("private_ip_address", opt_str(non_empty(a.private_ip_address()))),
        ("public_ip", opt_str(non_empty(a.public_ip()))),
        ("allow_reassociation", Value::Bool(reassociate)),
    ])))
}

async fn check_targets(ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) {
    if let Some(id) = planned.attr("allocation_id").as_str() {
        check_allocation_exists(ctx, "allocation_id", id, diags).await;
    }
    if let Some(id) = planned.attr("network_interface_id").as_str() {
        check_network_interface_exists(ctx, "network_interface_id", id, diags).await;
    }
}

#[async_trait]
impl Resource for EipAssociation {
    fn type_name(&self) -> &'static str {
        "tandem_eip_association"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new(
                "Associates an Elastic IP with a network interface: the initial association of a failover \
                 group's address. After the runtime moves the address, this resource reads the address's \
                 current association; use `lifecycle { ignore_changes = [network_interface_id, \
                 private_ip_address] }` so Terraform never moves it back.",
            )
            .attr(Attribute::computed("id", Type::String).describe("The association ID, e.g. `eipassoc-0123…`."))
            .attr(
                Attribute::required("allocation_id", Type::String)
                    .replace()
                    .describe("The Elastic IP's allocation ID (`tandem_eip.x.id`)."),
            )
            .attr(
                Attribute::required("network_interface_id", Type::String)
                    .replace()
                    .describe("The network interface to associate the address with."),
            )
            .attr(
                Attribute::optional_computed("private_ip_address", Type::String)
                    .replace()
                    .validate(ipv4_address)
                    .describe("Which private IPv4 address of the interface; AWS uses the primary one by default."),
            )
            .attr(Attribute::with_default("allow_reassociation", Value::Bool(true)).describe(
                "Whether to take the address from whatever holds it now. Default `true`. With `false`, AWS \
                     refuses an address that is already associated.",
            ))
            .attr(Attribute::computed("public_ip", Type::String).describe("The Elastic IP's public address.")),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        if plan.is_create() || plan.changes("allocation_id") || plan.changes("network_interface_id") {
            check_targets(ctx, &plan.planned, diags).await;
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let allocation = planned.attr("allocation_id").as_str().unwrap_or_default();
        let eni = planned.attr("network_interface_id").as_str().unwrap_or_default();
        // An address or interface made in the same apply may not be visible to the associate call yet.
        let created = wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
            ctx.ec2
                .associate_address()
                .allocation_id(allocation)
                .network_interface_id(eni)
                .set_private_ip_address(planned.attr("private_ip_address").as_str().map(str::to_string))
                .allow_reassociation(planned.attr("allow_reassociation").as_bool().unwrap_or(true))
                .send()
                .await
                .map_err(AwsError::from_sdk)
        })
        .await
        .and_then(|o| {
            o.association_id()
                .map(str::to_string)
                .ok_or_else(|| AwsError::local(ErrorClass::Other, "AWS returned no association ID"))
        });
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                report(diags, "creating", OBJECT, Some(allocation), &e);
                return None;
            }
        };
        let rest = lifecycle::read_after_create(|| read_association(ctx, &id, planned));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_association(ctx, id, state)).await
    }

    /// Only `allow_reassociation` changes in place, and it matters only when associating: nothing to call.
    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = read_association(ctx, id, planned).await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::DELETE_TIMEOUT,
            || async {
                ctx.ec2.disassociate_address().association_id(id).send().await.map(|_| ()).map_err(AwsError::from_sdk)
            },
            || async { find_eip_by_association_id(ctx, id).await.map(|_| Some("associated".to_string())) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn address_and_interface_force_replacement_reassociation_does_not() {
        let s = EipAssociation.schema();
        for name in ["allocation_id", "network_interface_id", "private_ip_address"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        let r = s.block.attribute("allow_reassociation").unwrap();
        assert_eq!(r.default, Some(Value::Bool(true)));
        assert!(!r.has(PlanModifier::RequiresReplace));
    }
}
