//! `tandem_route`: one IPv4 route of a route table, as the AWS provider's `aws_route` (targets: Internet or
//! virtual private gateway, NAT gateway, network interface). The VIP topology's `/32` routes to the active
//! node's ENI are routes like any other; the cluster runtime re-points them with ReplaceRoute.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Route as AwsRoute, RouteOrigin, RouteState};
use tandem_runtime::net::parse_ipv4_cidr;

use super::eip_association::check_network_interface_exists;
use super::route_table::{check_route_table_exists, find_route_table_by_id};
use super::{lifecycle, object, opt_str, report};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct Route;

const OBJECT: &str = "EC2 Route";

/// The target attributes; a route has exactly one.
const TARGETS: [&str; 3] = ["gateway_id", "nat_gateway_id", "network_interface_id"];

const NO_TARGET: &str = "TDM-EC2-100";
const ALREADY_EXISTS: &str = "TDM-EC2-101";
const BAD_IMPORT_ID: &str = "TDM-EC2-103";

/// The resource ID: `rtb-…_10.0.0.0/16`, also the import ID.
fn route_id(table: &str, destination: &str) -> String {
    format!("{table}_{destination}")
}

fn parse_route_id(id: &str) -> Option<(&str, &str)> {
    let (table, destination) = id.split_once('_')?;
    (table.starts_with("rtb-") && parse_ipv4_cidr(destination).is_ok()).then_some((table, destination))
}

/// Finder: the route for `destination` in the table, or NotFound (also when the table is gone).
pub(crate) async fn find_route(ctx: &AwsContext, table: &str, destination: &str) -> Result<AwsRoute, AwsError> {
    let t = find_route_table_by_id(ctx, table).await?;
    t.routes().iter().find(|r| r.destination_cidr_block() == Some(destination)).cloned().ok_or_else(|| {
        AwsError::local(ErrorClass::NotFound, format!("no route for {destination} in route table {table}"))
    })
}

/// The table and destination a state is about: its attributes, or after an import, its ID.
fn key_of(state: &Value) -> Option<(String, String)> {
    match (state.attr("route_table_id").as_str(), state.attr("destination_cidr_block").as_str()) {
        (Some(t), Some(d)) => Some((t.to_string(), d.to_string())),
        _ => state.attr("id").as_str().and_then(parse_route_id).map(|(t, d)| (t.to_string(), d.to_string())),
    }
}

fn flatten(table: &str, destination: &str, r: &AwsRoute) -> Value {
    object([
        ("id", Value::from(route_id(table, destination))),
        ("route_table_id", Value::from(table)),
        ("destination_cidr_block", Value::from(destination)),
        ("gateway_id", opt_str(r.gateway_id())),
        ("nat_gateway_id", opt_str(r.nat_gateway_id())),
        ("network_interface_id", opt_str(r.network_interface_id())),
        ("instance_id", opt_str(r.instance_id())),
        ("origin", opt_str(r.origin().map(RouteOrigin::as_str))),
        ("state", opt_str(r.state().map(RouteState::as_str))),
    ])
}

async fn read_route(ctx: &AwsContext, table: &str, destination: &str) -> Result<Option<Value>, AwsError> {
    match find_route(ctx, table, destination).await {
        Ok(r) => Ok(Some(flatten(table, destination, &r))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Exactly one target must be set. A target that is unknown counts as set.
fn check_targets(config: &Value, diags: &mut Diagnostics) {
    let set: Vec<&str> = TARGETS.iter().copied().filter(|t| !config.attr(t).is_null()).collect();
    match set.as_slice() {
        [] => diags.error(
            NO_TARGET,
            "a route needs a target",
            "Set exactly one of gateway_id (Internet or virtual private gateway), nat_gateway_id or \
             network_interface_id (e.g. the ENI of the active node, for a VIP route).",
        ),
        [_] => {}
        [first, rest @ ..] => {
            for other in rest {
                diags.error_at(
                    AttrPath::root(other),
                    NO_TARGET,
                    format!("{other} conflicts with {first}: a route has exactly one target"),
                    "Keep one of gateway_id, nat_gateway_id and network_interface_id.",
                );
            }
        }
    }
}

/// Creating a route where the destination already has one: AWS answers RouteAlreadyExists (moto silently
/// replaces it), so the provider looks first.
fn already_exists(diags: &mut Diagnostics, table: &str, destination: &str, existing: &AwsRoute) {
    let target =
        [existing.gateway_id(), existing.nat_gateway_id(), existing.network_interface_id(), existing.instance_id()]
            .into_iter()
            .flatten()
            .next()
            .unwrap_or("another target");
    diags.error_at(
        AttrPath::root("destination_cidr_block"),
        ALREADY_EXISTS,
        format!("route table {table} already has a route for {destination} (to {target})"),
        format!(
            "Each destination has one route per table. If this route should be managed here, import it: \
             terraform import <address> {}. Otherwise remove the other route (or its other owner) first.",
            route_id(table, destination)
        ),
    );
}

/// Plan/create-time checks against the account: the table exists and has no route for the destination yet,
/// and a target ENI exists. Unknown values are skipped.
async fn check_new_route(ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) {
    if let (Some(table), Some(destination)) =
        (planned.attr("route_table_id").as_str(), planned.attr("destination_cidr_block").as_str())
        && let Some(t) = check_route_table_exists(ctx, table, diags).await
        && let Some(existing) = t.routes().iter().find(|r| r.destination_cidr_block() == Some(destination))
    {
        already_exists(diags, table, destination, existing);
    }
    if let Some(eni) = planned.attr("network_interface_id").as_str() {
        check_network_interface_exists(ctx, "network_interface_id", eni, diags).await;
    }
}

fn cidr(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    parse_ipv4_cidr(text).map(|_| ()).map_err(|e| e.to_string())
}

fn prefixed(v: &Value, prefixes: &[&str], what: &str) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    if prefixes.iter().any(|p| text.starts_with(p)) {
        Ok(())
    } else {
        Err(format!("{text:?} is not {what} (an ID starting with {})", prefixes.join(" or ")))
    }
}

fn gateway(v: &Value) -> Result<(), String> {
    prefixed(v, &["igw-", "vgw-"], "an Internet or virtual private gateway ID; NAT gateways go in nat_gateway_id")
}

fn nat_gateway(v: &Value) -> Result<(), String> {
    prefixed(v, &["nat-"], "a NAT gateway ID")
}

fn network_interface(v: &Value) -> Result<(), String> {
    prefixed(v, &["eni-"], "a network interface ID")
}

/// The one target as the create/replace call takes it.
macro_rules! with_target {
    ($call:expr, $planned:expr) => {
        $call
            .set_gateway_id($planned.attr("gateway_id").as_str().map(str::to_string))
            .set_nat_gateway_id($planned.attr("nat_gateway_id").as_str().map(str::to_string))
            .set_network_interface_id($planned.attr("network_interface_id").as_str().map(str::to_string))
    };
}

#[async_trait]
impl Resource for Route {
    fn type_name(&self) -> &'static str {
        "tandem_route"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new(
                "One IPv4 route in a route table, to exactly one target. For a VIP route that a tandem failover \
                 group re-points, add `lifecycle { ignore_changes = [network_interface_id] }`.",
            )
            .attr(
                Attribute::computed("id", Type::String)
                    .describe("`ROUTE_TABLE_ID_DESTINATION`, e.g. `rtb-0123…_0.0.0.0/0`; also the import ID."),
            )
            .attr(
                Attribute::required("route_table_id", Type::String)
                    .replace()
                    .describe("The route table. Changing it replaces the route."),
            )
            .attr(
                Attribute::required("destination_cidr_block", Type::String)
                    .replace()
                    .validate(cidr)
                    .describe("The destination, e.g. `0.0.0.0/0` or a VIP's `/32`. Changing it replaces the route."),
            )
            .attr(
                Attribute::optional("gateway_id", Type::String)
                    .validate(gateway)
                    .describe("An Internet gateway or virtual private gateway ID. Changed in place."),
            )
            .attr(
                Attribute::optional("nat_gateway_id", Type::String)
                    .validate(nat_gateway)
                    .describe("A NAT gateway ID. Changed in place."),
            )
            .attr(
                Attribute::optional("network_interface_id", Type::String)
                    .validate(network_interface)
                    .describe("A network interface ID (e.g. the active node's ENI for a VIP). Changed in place."),
            )
            .attr(
                Attribute::computed_volatile("instance_id", Type::String)
                    .describe("The instance the target interface is attached to, if any."),
            )
            .attr(
                Attribute::computed("origin", Type::String).describe(
                    "How the route was made: `CreateRoute`, `CreateRouteTable` or `EnableVgwRoutePropagation`.",
                ),
            )
            .attr(
                Attribute::computed_volatile("state", Type::String)
                    .describe("`active`, or `blackhole` when the target is gone (e.g. a terminated node's ENI)."),
            ),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_targets(config, diags);
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        if plan.is_create() {
            check_new_route(ctx, &plan.planned, diags).await;
        } else if plan.changes("network_interface_id")
            && let Some(eni) = plan.planned.attr("network_interface_id").as_str()
        {
            check_network_interface_exists(ctx, "network_interface_id", eni, diags).await;
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        check_targets(planned, diags);
        if diags.has_errors() {
            return None;
        }
        let table = planned.attr("route_table_id").as_str().unwrap_or_default();
        let destination = planned.attr("destination_cidr_block").as_str().unwrap_or_default();
        let id = route_id(table, destination);
        // Values unknown at plan time are known now. A table made in the same apply may not be visible yet.
        let existing =
            wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || find_route_table_by_id(ctx, table))
                .await
                .map(|t| t.routes().iter().find(|r| r.destination_cidr_block() == Some(destination)).cloned());
        match existing {
            Ok(None) => {}
            Ok(Some(route)) => {
                already_exists(diags, table, destination, &route);
                return None;
            }
            Err(e) => {
                report(diags, "creating", OBJECT, Some(&id), &e);
                return None;
            }
        }
        let call = ctx.ec2.create_route().route_table_id(table).destination_cidr_block(destination);
        if let Err(e) = with_target!(call, planned).send().await.map_err(AwsError::from_sdk) {
            if e.has_code("RouteAlreadyExists") {
                // Someone else created it between the check and the call.
                diags.error_at(
                    AttrPath::root("destination_cidr_block"),
                    ALREADY_EXISTS,
                    format!("route table {table} already has a route for {destination}"),
                    format!("{e}. Import it (terraform import <address> {id}) or remove the other route first."),
                );
            } else {
                report(diags, "creating", OBJECT, Some(&id), &e);
            }
            return None;
        }
        let rest = lifecycle::read_after_create(|| read_route(ctx, table, destination));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let Some((table, destination)) = key_of(state) else {
            diags.error(
                BAD_IMPORT_ID,
                format!("{:?} is not a route ID", state.attr("id").as_str().unwrap_or_default()),
                "A route's ID (and import ID) is ROUTE_TABLE_ID_DESTINATION, e.g. rtb-0123456789abcdef0_0.0.0.0/0.",
            );
            return Some(state.clone());
        };
        lifecycle::read_or_remove(diags, OBJECT, state, read_route(ctx, &table, &destination)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let table = prior.attr("route_table_id").as_str().unwrap_or_default();
        let destination = prior.attr("destination_cidr_block").as_str().unwrap_or_default();
        let result = async {
            let targets_changed = TARGETS.iter().any(|t| prior.attr(t) != planned.attr(t));
            if targets_changed {
                let call = ctx.ec2.replace_route().route_table_id(table).destination_cidr_block(destination);
                with_target!(call, planned).send().await.map_err(AwsError::from_sdk)?;
            }
            read_route(ctx, table, destination).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        let Some((table, destination)) = key_of(state) else { return };
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::DELETE_TIMEOUT,
            || async {
                ctx.ec2
                    .delete_route()
                    .route_table_id(&table)
                    .destination_cidr_block(&destination)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(AwsError::from_sdk)
            },
            || async { find_route(ctx, &table, &destination).await.map(|_| Some("present".to_string())) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    fn cfg(gw: Value, nat: Value, eni: Value) -> Value {
        Value::object([("gateway_id", gw), ("nat_gateway_id", nat), ("network_interface_id", eni)])
    }

    #[test]
    fn exactly_one_target_is_required() {
        let mut d = Diagnostics::new();
        check_targets(&cfg(Value::Null, Value::Null, Value::Null), &mut d);
        assert!(d.0[0].summary.contains(NO_TARGET) && d.0[0].summary.contains("needs a target"));
        let mut d = Diagnostics::new();
        check_targets(&cfg("igw-1".into(), Value::Null, Value::Unknown), &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path, Some(AttrPath::root("network_interface_id")));
        let mut d = Diagnostics::new();
        check_targets(&cfg(Value::Null, Value::Null, Value::Unknown), &mut d);
        check_targets(&cfg(Value::Null, "nat-1".into(), Value::Null), &mut d);
        assert!(!d.has_errors());
    }

    #[test]
    fn route_ids_round_trip_and_bad_ones_are_refused() {
        let id = route_id("rtb-0abc", "192.168.10.1/32");
        assert_eq!(id, "rtb-0abc_192.168.10.1/32");
        assert_eq!(parse_route_id(&id), Some(("rtb-0abc", "192.168.10.1/32")));
        assert_eq!(parse_route_id("rtb-0abc/10.0.0.0/16"), None);
        assert_eq!(parse_route_id("igw-1_10.0.0.0/16"), None);
        assert_eq!(parse_route_id("rtb-1_10.0.0.1/16"), None);
        let imported = Value::object([("id", Value::from(id.as_str()))]);
        assert_eq!(key_of(&imported), Some(("rtb-0abc".into(), "192.168.10.1/32".into())));
    }

    #[test]
    fn target_ids_are_checked_for_kind() {
        assert!(gateway(&"igw-1".into()).is_ok() && gateway(&"vgw-1".into()).is_ok());
        assert!(gateway(&"nat-1".into()).unwrap_err().contains("nat_gateway_id"));
        assert!(nat_gateway(&"nat-1".into()).is_ok() && network_interface(&"eni-1".into()).is_ok());
        assert!(network_interface(&"i-1".into()).is_err());
        assert!(cidr(&"10.0.0.1/32".into()).is_ok() && cidr(&"10.0.0.1/24".into()).is_err());
    }

    #[test]
    fn table_and_destination_replace_targets_change_in_place() {
        let s = Route.schema();
        for name in ["route_table_id", "destination_cidr_block"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        for name in TARGETS {
            let a = s.block.attribute(name).unwrap();
            assert!(a.optional && !a.computed && !a.has(PlanModifier::RequiresReplace), "{name}");
        }
    }

    #[test]
    fn a_route_found_in_aws_is_flattened_with_its_target() {
        let r = AwsRoute::builder()
            .destination_cidr_block("192.168.10.1/32")
            .network_interface_id("eni-1")
            .state(RouteState::Active)
            .origin(RouteOrigin::CreateRoute)
            .build();
        let v = flatten("rtb-1", "192.168.10.1/32", &r);
        assert_eq!(v.attr("id"), &Value::from("rtb-1_192.168.10.1/32"));
        assert_eq!(v.attr("network_interface_id"), &Value::from("eni-1"));
        assert!(v.attr("gateway_id").is_null());
        assert_eq!(v.attr("state"), &Value::from("active"));
    }
}
