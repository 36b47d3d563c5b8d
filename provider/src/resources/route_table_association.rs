//! `tandem_route_table_association`: which route table a subnet uses, as the AWS provider's
//! `aws_route_table_association` (subnets only). Moving the subnet to another table is one
//! ReplaceRouteTableAssociation call, so the subnet is never without its explicit table in between.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, RouteTableAssociation as AwsAssociation, RouteTableAssociationStateCode};

use super::route_table::{check_route_table_exists, find_route_table_by_id};
use super::subnet::find_subnet_by_id;
use super::{lifecycle, object, opt_str, report};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct RouteTableAssociation;

const OBJECT: &str = "EC2 Route Table Association";

const BAD_IMPORT_ID: &str = "TDM-EC2-103";

fn is_gone(a: &AwsAssociation) -> bool {
    matches!(
        a.association_state().and_then(|s| s.state()),
        Some(RouteTableAssociationStateCode::Disassociated | RouteTableAssociationStateCode::Failed)
    )
}

fn state_name(a: &AwsAssociation) -> String {
    a.association_state().and_then(|s| s.state()).map_or("associated", |s| s.as_str()).to_string()
}

/// Finder: the association with this ID (not disassociated), or NotFound.
pub(crate) async fn find_route_table_association_by_id(ctx: &AwsContext, id: &str) -> Result<AwsAssociation, AwsError> {
    let out = ctx
        .ec2
        .describe_route_tables()
        .filters(Filter::builder().name("association.route-table-association-id").values(id).build())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    out.route_tables()
        .iter()
        .flat_map(|t| t.associations())
        .find(|a| a.route_table_association_id() == Some(id) && !is_gone(a))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("route table association {id} not found")))
}

/// The import ID `subnet-…/rtb-…`.
fn parse_import_id(id: &str) -> Option<(&str, &str)> {
    let (subnet, table) = id.split_once('/')?;
    (subnet.starts_with("subnet-") && table.starts_with("rtb-")).then_some((subnet, table))
}

/// Resolves an imported `subnet-…/rtb-…` to the association ID; None when the subnet is not associated
/// with that table.
async fn resolve_import(ctx: &AwsContext, subnet: &str, table: &str) -> Result<Option<String>, AwsError> {
    let t = match find_route_table_by_id(ctx, table).await {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(t.associations()
        .iter()
        .find(|a| a.subnet_id() == Some(subnet) && !is_gone(a))
        .and_then(|a| a.route_table_association_id())
        .map(str::to_string))
}

async fn read_association(ctx: &AwsContext, id: &str) -> Result<Option<Value>, AwsError> {
    let a = match find_route_table_association_by_id(ctx, id).await {
        Ok(a) => a,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(object([
        ("id", Value::from(id)),
        ("subnet_id", opt_str(a.subnet_id())),
        ("route_table_id", opt_str(a.route_table_id())),
    ])))
}

async fn wait_associated(ctx: &AwsContext, id: &str) -> Result<(), AwsError> {
    wait::wait_for(&format!("route table association {id} to become associated"), wait::CREATE_TIMEOUT, || async {
        let out = ctx
            .ec2
            .describe_route_tables()
            .filters(Filter::builder().name("association.route-table-association-id").values(id).build())
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
        let found = out
            .route_tables()
            .iter()
            .flat_map(|t| t.associations())
            .find(|a| a.route_table_association_id() == Some(id));
        match found.and_then(|a| a.association_state()).and_then(|s| s.state()) {
            Some(RouteTableAssociationStateCode::Failed) => Err(AwsError::local(
                ErrorClass::Other,
                format!(
                    "the association failed: {}",
                    found
                        .and_then(|a| a.association_state())
                        .and_then(|s| s.status_message())
                        .unwrap_or("no reason given")
                ),
            )),
            Some(RouteTableAssociationStateCode::Associated) => Ok(Status::Ready(())),
            // Older answers carry no state: an association that is listed is in effect.
            None if found.is_some() => Ok(Status::Ready(())),
            other => Ok(Status::Pending(other.map_or("not yet visible", |s| s.as_str()).to_string())),
        }
    })
    .await
}

async fn check_placement(ctx: &AwsContext, plan: &Plan<'_>, diags: &mut Diagnostics) {
    if (plan.is_create() || plan.changes("route_table_id"))
        && let Some(table) = plan.planned.attr("route_table_id").as_str()
    {
        check_route_table_exists(ctx, table, diags).await;
    }
    if plan.is_create()
        && let Some(subnet) = plan.planned.attr("subnet_id").as_str()
    {
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
}

#[async_trait]
impl Resource for RouteTableAssociation {
    fn type_name(&self) -> &'static str {
        "tandem_route_table_association"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("Makes a subnet use a route table (instead of the VPC's main route table).")
                .attr(
                    // A new table gives a new association ID: not kept across changes.
                    Attribute::computed_volatile("id", Type::String)
                        .describe("The association ID, e.g. `rtbassoc-0123…`. Changes when the table changes."),
                )
                .attr(
                    Attribute::required("subnet_id", Type::String)
                        .replace()
                        .describe("The subnet. Changing it replaces the association."),
                )
                .attr(
                    Attribute::required("route_table_id", Type::String)
                        .describe("The route table. Changing it moves the subnet to the new table in place."),
                ),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        check_placement(ctx, plan, diags).await;
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let subnet = planned.attr("subnet_id").as_str().unwrap_or_default();
        let table = planned.attr("route_table_id").as_str().unwrap_or_default();
        // A table or subnet made in the same apply may not be visible yet.
        let created = wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
            ctx.ec2
                .associate_route_table()
                .route_table_id(table)
                .subnet_id(subnet)
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
                report(diags, "creating", OBJECT, Some(&format!("{subnet}/{table}")), &e);
                return None;
            }
        };
        let rest = async {
            wait_associated(ctx, &id).await?;
            lifecycle::read_after_create(|| read_association(ctx, &id)).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        if id.contains('/') {
            // An import by `subnet-…/rtb-…`.
            let Some((subnet, table)) = parse_import_id(id) else {
                diags.error(
                    BAD_IMPORT_ID,
                    format!("{id:?} is not a route table association import ID"),
                    "Import by SUBNET_ID/ROUTE_TABLE_ID, e.g. subnet-0123456789abcdef0/rtb-0123456789abcdef0.",
                );
                return Some(state.clone());
            };
            let read = async {
                match resolve_import(ctx, subnet, table).await? {
                    Some(assoc) => read_association(ctx, &assoc).await,
                    None => Ok(None),
                }
            };
            return lifecycle::read_or_remove(diags, OBJECT, state, read).await;
        }
        lifecycle::read_or_remove(diags, OBJECT, state, read_association(ctx, id)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let table = planned.attr("route_table_id").as_str().unwrap_or_default();
        let result = async {
            let out = wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
                ctx.ec2
                    .replace_route_table_association()
                    .association_id(id)
                    .route_table_id(table)
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)
            })
            .await?;
            let new_id = out
                .new_association_id()
                .map(str::to_string)
                .ok_or_else(|| AwsError::local(ErrorClass::Other, "AWS returned no new association ID"))?;
            wait_associated(ctx, &new_id).await?;
            lifecycle::read_after_create(|| read_association(ctx, &new_id)).await
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
            || async {
                ctx.ec2
                    .disassociate_route_table()
                    .association_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(AwsError::from_sdk)
            },
            || async { find_route_table_association_by_id(ctx, id).await.map(|a| Some(state_name(&a))) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::RouteTableAssociationState;

    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn table_changes_in_place_with_a_new_id_subnet_replaces() {
        let s = RouteTableAssociation.schema();
        assert!(s.block.attribute("subnet_id").unwrap().has(PlanModifier::RequiresReplace));
        assert!(!s.block.attribute("route_table_id").unwrap().has(PlanModifier::RequiresReplace));
        assert!(!s.block.attribute("id").unwrap().has(PlanModifier::UseStateForUnknown));
    }

    #[test]
    fn import_ids_name_subnet_then_table() {
        assert_eq!(parse_import_id("subnet-1/rtb-2"), Some(("subnet-1", "rtb-2")));
        assert_eq!(parse_import_id("rtb-2/subnet-1"), None);
        assert_eq!(parse_import_id("rtbassoc-1"), None);
    }

    #[test]
    fn disassociated_associations_count_as_gone() {
        let a = |code| {
            AwsAssociation::builder()
                .route_table_association_id("rtbassoc-1")
                .association_state(RouteTableAssociationState::builder().state(code).build())
                .build()
        };
        assert!(is_gone(&a(RouteTableAssociationStateCode::Disassociated)));
        assert!(!is_gone(&a(RouteTableAssociationStateCode::Associated)));
    }
}
