//! `tandem_eip`: an Elastic IP address in the VPC domain, as the AWS provider's `aws_eip` without its
//! association arguments. Who holds the address (`association_id`, `network_interface`) is read, never set:
//! `tandem_eip_association` or the cluster runtime (EIP control) moves it.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Address, DomainType, Filter, ResourceType};

use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::tags_attributes;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct Eip;

const OBJECT: &str = "EC2 EIP";

/// AWS answers ReleaseAddress of an address that is still associated (or whose disassociation has not
/// propagated yet) with one of these.
const IN_USE_CODES: [&str; 2] = ["InvalidIPAddress.InUse", "AuthFailure"];

/// Finder: the address with this allocation ID, or NotFound.
pub(crate) async fn find_eip_by_allocation_id(ctx: &AwsContext, id: &str) -> Result<Address, AwsError> {
    let out = ctx.ec2.describe_addresses().allocation_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.addresses()
        .iter()
        .find(|a| a.allocation_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("Elastic IP {id} not found")))
}

/// Finder by association: the address whose current association has this ID, or NotFound.
pub(crate) async fn find_eip_by_association_id(ctx: &AwsContext, association_id: &str) -> Result<Address, AwsError> {
    let out = ctx
        .ec2
        .describe_addresses()
        .filters(Filter::builder().name("association-id").values(association_id).build())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    out.addresses()
        .iter()
        .find(|a| a.association_id() == Some(association_id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("EIP association {association_id} not found")))
}

/// AWS (and moto) answer empty strings for the fields of an unassociated address.
pub(crate) fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Plan-time check shared by the resources that take an allocation ID: the address exists in this region.
pub(crate) async fn check_allocation_exists(ctx: &AwsContext, attr: &str, id: &str, diags: &mut Diagnostics) {
    match find_eip_by_allocation_id(ctx, id).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => diags.error_at(
            AttrPath::root(attr),
            "TDM-EC2-107",
            format!("Elastic IP allocation {id} does not exist"),
            format!(
                "No Elastic IP with this allocation ID exists in {} for these credentials. Use the allocation \
                 ID (eipalloc-…), not the public IP; check the region and the account.",
                ctx.region
            ),
        ),
        Err(e) => report(diags, "checking", OBJECT, Some(id), &e),
    }
}

async fn read_eip(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let a = match find_eip_by_allocation_id(ctx, id).await {
        Ok(a) => a,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let all: Tags = tags::from_ec2(a.tags());
    Ok(Some(object([
        ("id", Value::from(id)),
        ("allocation_id", Value::from(id)),
        ("arn", Value::from(ctx.arn("ec2", None, &format!("elastic-ip/{id}")))),
        ("domain", Value::from(a.domain().map_or("vpc", DomainType::as_str))),
        ("public_ip", opt_str(non_empty(a.public_ip()))),
        ("association_id", opt_str(non_empty(a.association_id()))),
        ("network_interface", opt_str(non_empty(a.network_interface_id()))),
        ("private_ip", opt_str(non_empty(a.private_ip_address()))),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

async fn disassociate(ctx: &AwsContext, association_id: &str) -> Result<(), AwsError> {
    match ctx.ec2.disassociate_address().association_id(association_id).send().await.map_err(AwsError::from_sdk) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// ReleaseAddress; "still in use" becomes a DependencyViolation so that the delete retries it for a while.
async fn release(ctx: &AwsContext, id: &str) -> Result<(), AwsError> {
    ctx.ec2
        .release_address()
        .allocation_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| in_use_as_dependency(AwsError::from_sdk(e)))
}

fn in_use_as_dependency(e: AwsError) -> AwsError {
    if IN_USE_CODES.iter().any(|c| e.has_code(c)) {
        AwsError { class: ErrorClass::DependencyViolation, ..e }
    } else {
        e
    }
}

fn domain(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some("vpc") => Ok(()),
        Some(other) => Err(format!("{other:?}: only \"vpc\" is supported (EC2-Classic is retired)")),
        None => Err("expected a string".into()),
    }
}

#[async_trait]
impl Resource for Eip {
    fn type_name(&self) -> &'static str {
        "tandem_eip"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new(
                "An Elastic IP address. Who holds it is read, not set: use `tandem_eip_association`, or let a \
                 tandem failover group (EIP control) move it.",
            )
            .attr(Attribute::computed("id", Type::String).describe("The allocation ID, e.g. `eipalloc-0123…`."))
            .attr(Attribute::computed("allocation_id", Type::String).describe("The allocation ID (same as `id`)."))
            .attr(Attribute::computed("arn", Type::String).describe("The address's ARN."))
            .attr(
                Attribute::with_default("domain", Value::from("vpc"))
                    .replace()
                    .validate(domain)
                    .describe("Always `vpc` (the default)."),
            )
            .attr(Attribute::computed("public_ip", Type::String).describe("The public IPv4 address."))
            .attr(
                Attribute::computed_volatile("association_id", Type::String)
                    .describe("The current association's ID, if any; moved by associations and the cluster runtime."),
            )
            .attr(
                Attribute::computed_volatile("network_interface", Type::String)
                    .describe("The network interface that currently holds the address, if any."),
            )
            .attr(
                Attribute::computed_volatile("private_ip", Type::String)
                    .describe("The private IPv4 address the public one maps to, if associated."),
            )
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
            .allocate_address()
            .domain(DomainType::Vpc)
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::ElasticIp, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.allocation_id())?;
        let rest = lifecycle::read_after_create(|| read_eip(ctx, &id, planned));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_eip(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_eip(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        // Whoever holds the address now (the runtime may have moved it): AWS, not the state, knows.
        let association = match find_eip_by_allocation_id(ctx, id).await {
            Ok(a) => non_empty(a.association_id()).map(str::to_string),
            Err(e) if e.is_not_found() => return,
            Err(e) => return report(diags, "deleting", OBJECT, Some(id), &e),
        };
        if let Some(association) = association
            && let Err(e) = disassociate(ctx, &association).await
        {
            return report(diags, "disassociating", OBJECT, Some(id), &e);
        }
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::DELETE_TIMEOUT,
            || release(ctx, id),
            || async { find_eip_by_allocation_id(ctx, id).await.map(|_| Some("allocated".to_string())) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn holder_attributes_are_volatile_and_domain_is_vpc_only() {
        let s = Eip.schema();
        for name in ["association_id", "network_interface", "private_ip"] {
            let a = s.block.attribute(name).unwrap();
            assert!(a.computed && !a.optional && !a.has(PlanModifier::UseStateForUnknown), "{name}");
        }
        assert!(s.block.attribute("public_ip").unwrap().has(PlanModifier::UseStateForUnknown));
        assert!(domain(&Value::from("vpc")).is_ok());
        assert!(domain(&Value::from("standard")).unwrap_err().contains("EC2-Classic"));
    }

    #[test]
    fn empty_fields_of_an_unassociated_address_read_as_null() {
        assert_eq!(non_empty(Some("")), None);
        assert_eq!(non_empty(Some("eipassoc-1")), Some("eipassoc-1"));
    }

    #[test]
    fn release_of_an_address_in_use_is_retried_as_a_dependency() {
        for code in IN_USE_CODES {
            let e = AwsError { code: Some(code.into()), message: String::new(), class: ErrorClass::Auth };
            assert_eq!(in_use_as_dependency(e).class, ErrorClass::DependencyViolation);
        }
        let other =
            AwsError { code: Some("UnauthorizedOperation".into()), message: String::new(), class: ErrorClass::Auth };
        assert_eq!(in_use_as_dependency(other).class, ErrorClass::Auth);
    }
}
