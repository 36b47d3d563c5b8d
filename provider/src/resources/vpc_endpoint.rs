//! `tandem_vpc_endpoint`: a VPC endpoint, as the AWS provider's `aws_vpc_endpoint` (Gateway and Interface
//! types). Nodes in private subnets reach DynamoDB (lease arbitration) or EC2 without a NAT gateway.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, VpcEndpoint as AwsVpcEndpoint, VpcEndpointType};

use super::policy_json;
use super::vpc::find_vpc_by_id;
use super::{lifecycle, object, opt_str, report};
use crate::aws::error::classify_code;
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::{tags_attributes, timeouts_block};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct VpcEndpoint;

const OBJECT: &str = "EC2 VPC Endpoint";

/// As the AWS provider: 10 minutes for each of create, update and delete.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

const WRONG_REGION: &str = "TDM-EC2-110";
const WRONG_TYPE: &str = "TDM-EC2-111";
const FAILED: &str = "TDM-EC2-112";

/// The attributes that only one endpoint type takes.
const GATEWAY_ONLY: [&str; 1] = ["route_table_ids"];
const INTERFACE_ONLY: [&str; 2] = ["subnet_ids", "security_group_ids"];

/// Finder: the endpoint, or NotFound — also in state `deleted`, which AWS keeps listing for a while.
pub(crate) async fn find_vpc_endpoint_by_id(ctx: &AwsContext, id: &str) -> Result<AwsVpcEndpoint, AwsError> {
    let out = ctx.ec2.describe_vpc_endpoints().vpc_endpoint_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.vpc_endpoints()
        .iter()
        .find(|e| e.vpc_endpoint_id() == Some(id) && state_of(e) != "deleted")
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("VPC endpoint {id} not found")))
}

/// EC2 answers endpoint states in lower case (`available`, `pendingAcceptance`), which the SDK's shared
/// `State` enum does not parse; compare the text, case-insensitively.
fn state_of(e: &AwsVpcEndpoint) -> String {
    e.state().map_or("unknown", |s| s.as_str()).to_ascii_lowercase()
}

/// What one poll of an endpoint being created or modified found.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Ready,
    Pending(String),
    Failed(String),
}

fn progress(e: &AwsVpcEndpoint) -> Progress {
    let state = state_of(e);
    match state.as_str() {
        // An endpoint to a service that needs the owner's acceptance is usable from our side once requested.
        "available" | "pendingacceptance" => Progress::Ready,
        "failed" | "rejected" | "expired" | "deleted" | "deleting" => {
            let why = e
                .last_error()
                .map(|l| format!("{}: {}", l.code().unwrap_or("unknown"), l.message().unwrap_or("no message")))
                .or_else(|| e.failure_reason().map(str::to_string))
                .unwrap_or_else(|| "AWS gave no reason".to_string());
            Progress::Failed(format!("the endpoint is {state}: {why}"))
        }
        _ => Progress::Pending(state),
    }
}

/// Why a wait for `available` did not end well.
enum WaitError {
    Failed(String),
    Aws(AwsError),
}

async fn wait_available(ctx: &AwsContext, id: &str, timeout: Duration) -> Result<(), WaitError> {
    let outcome = wait::wait_for(&format!("VPC endpoint {id} to become available"), timeout, || async {
        match find_vpc_endpoint_by_id(ctx, id).await {
            Ok(e) => Ok(match progress(&e) {
                Progress::Ready => Status::Ready(None),
                Progress::Pending(s) => Status::Pending(s),
                Progress::Failed(why) => Status::Ready(Some(why)),
            }),
            Err(e) if e.is_not_found() => Ok(Status::Pending("not yet visible".into())),
            Err(e) => Err(e),
        }
    })
    .await;
    match outcome {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(WaitError::Failed(why)),
        Err(e) => Err(WaitError::Aws(e)),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.elements().iter().filter_map(|e| e.as_str().map(str::to_string)).collect()
}

/// A set attribute as read back: null while AWS lists nothing and the state never held a set.
fn set_or_null(ids: Vec<String>, prior: &Value) -> Value {
    if ids.is_empty() && !matches!(prior, Value::Set(_)) {
        Value::Null
    } else {
        Value::Set(ids.into_iter().map(Value::from).collect())
    }
}

async fn prefix_list_id(ctx: &AwsContext, service: &str) -> Result<Option<String>, AwsError> {
    let out = ctx
        .ec2
        .describe_prefix_lists()
        .filters(Filter::builder().name("prefix-list-name").values(service).build())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(out.prefix_lists().first().and_then(|p| p.prefix_list_id()).map(str::to_string))
}

async fn read_endpoint(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let e = match find_vpc_endpoint_by_id(ctx, id).await {
        Ok(e) => e,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let kind = e.vpc_endpoint_type().map_or("Gateway", VpcEndpointType::as_str);
    let gateway = kind.eq_ignore_ascii_case("Gateway");
    let prefix_list = match (gateway, e.service_name()) {
        (true, Some(service)) => prefix_list_id(ctx, service).await?,
        _ => None,
    };
    let groups: Vec<String> = e.groups().iter().filter_map(|g| g.group_id()).map(str::to_string).collect();
    let all: Tags = tags::from_ec2(e.tags());
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(ctx.arn("ec2", e.owner_id(), &format!("vpc-endpoint/{id}")))),
        ("owner_id", opt_str(e.owner_id())),
        ("vpc_id", opt_str(e.vpc_id())),
        ("service_name", opt_str(e.service_name())),
        ("vpc_endpoint_type", Value::from(if gateway { "Gateway" } else { kind })),
        ("route_table_ids", set_or_null(e.route_table_ids().to_vec(), prior.attr("route_table_ids"))),
        ("subnet_ids", set_or_null(e.subnet_ids().to_vec(), prior.attr("subnet_ids"))),
        ("security_group_ids", set_or_null(groups, prior.attr("security_group_ids"))),
        // Gateway endpoints have no private DNS, whatever the API answers for them.
        ("private_dns_enabled", Value::Bool(!gateway && e.private_dns_enabled().unwrap_or(false))),
        ("policy", e.policy_document().map_or(Value::Null, |p| policy_json::keep_prior(prior.attr("policy"), p))),
        ("state", Value::from(state_of(&e))),
        ("prefix_list_id", opt_str(prefix_list.as_deref())),
        (
            "network_interface_ids",
            Value::Set(e.network_interface_ids().iter().map(|n| Value::from(n.as_str())).collect()),
        ),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

/// The region named in a service name such as `com.amazonaws.us-east-1.dynamodb`, if any.
fn service_region(service: &str) -> Option<&str> {
    service.split('.').find(|part| {
        let fields: Vec<&str> = part.split('-').collect();
        fields.len() >= 3
            && fields[0].len() == 2
            && fields[0].bytes().all(|b| b.is_ascii_lowercase())
            && fields[1..fields.len() - 1].iter().all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_lowercase()))
            && fields.last().is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn check_region(service: &str, region: &str, diags: &mut Diagnostics) {
    if let Some(named) = service_region(service)
        && named != region
    {
        diags.error_at(
            AttrPath::root("service_name"),
            WRONG_REGION,
            format!("service {service} is in {named}, but the provider works in {region}"),
            format!(
                "A VPC endpoint connects to a service in the VPC's own region. Use the {region} name of the \
                 service (e.g. com.amazonaws.{region}.dynamodb), or a provider configured for {named}."
            ),
        );
    }
}

/// The arguments that do not apply to the endpoint type. Unknown types pass.
fn check_type_arguments(config: &Value, diags: &mut Diagnostics) {
    let kind = config.attr("vpc_endpoint_type");
    if kind.is_unknown() {
        return;
    }
    let kind = kind.as_str().unwrap_or("Gateway");
    let (wrong, also_private_dns): (&[&str], bool) = match kind {
        "Gateway" => (&INTERFACE_ONLY, config.attr("private_dns_enabled").as_bool() == Some(true)),
        "Interface" => (&GATEWAY_ONLY, false),
        _ => return,
    };
    let extra = if also_private_dns { Some("private_dns_enabled") } else { None };
    for name in wrong.iter().copied().filter(|n| !config.attr(n).is_null()).chain(extra) {
        diags.error_at(
            AttrPath::root(name),
            WRONG_TYPE,
            format!("{name} does not apply to a {kind} endpoint"),
            "Gateway endpoints (S3, DynamoDB) take route_table_ids; Interface endpoints take subnet_ids, \
             security_group_ids and private_dns_enabled. Remove the argument or change vpc_endpoint_type.",
        );
    }
}

fn endpoint_type(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some("Gateway" | "Interface") => Ok(()),
        Some(other) => Err(format!("{other:?} is not one of Gateway, Interface")),
        None => Err("expected a string".into()),
    }
}

fn service_name(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    if text.split('.').count() >= 3 && !text.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!("{text:?} is not a service name such as com.amazonaws.us-east-1.dynamodb"))
    }
}

fn policy(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    policy_json::check(text).map_err(|e| match e {
        policy_json::PolicyError::Syntax(m) => format!("not valid JSON: {m}"),
        policy_json::PolicyError::Shape(m) => format!("not an IAM policy document: {m}"),
    })
}

/// Set differences for a Modify call: what to add and what to remove.
fn set_diff(old: &Value, new: &Value) -> (Vec<String>, Vec<String>) {
    let (old, new) = (strings(old), strings(new));
    let add = new.iter().filter(|x| !old.contains(x)).cloned().collect();
    let remove = old.iter().filter(|x| !new.contains(x)).cloned().collect();
    (add, remove)
}

fn none_if_empty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

/// ModifyVpcEndpoint for what changed (if anything); true when a call was made.
async fn modify(ctx: &AwsContext, id: &str, prior: &Value, planned: &Value) -> Result<bool, AwsError> {
    let (add_rt, remove_rt) = set_diff(prior.attr("route_table_ids"), planned.attr("route_table_ids"));
    let (add_sn, remove_sn) = set_diff(prior.attr("subnet_ids"), planned.attr("subnet_ids"));
    let (add_sg, remove_sg) = if planned.attr("security_group_ids").is_wholly_known() {
        set_diff(prior.attr("security_group_ids"), planned.attr("security_group_ids"))
    } else {
        (Vec::new(), Vec::new())
    };
    let new_policy = planned.attr("policy").as_str().filter(|p| Some(*p) != prior.attr("policy").as_str());
    let interface = planned.attr("vpc_endpoint_type").as_str() == Some("Interface");
    let dns = planned
        .attr("private_dns_enabled")
        .as_bool()
        .filter(|d| interface && prior.attr("private_dns_enabled").as_bool() != Some(*d));
    let nothing = [&add_rt, &remove_rt, &add_sn, &remove_sn, &add_sg, &remove_sg].iter().all(|v| v.is_empty())
        && new_policy.is_none()
        && dns.is_none();
    if nothing {
        return Ok(false);
    }
    ctx.ec2
        .modify_vpc_endpoint()
        .vpc_endpoint_id(id)
        .set_add_route_table_ids(none_if_empty(add_rt))
        .set_remove_route_table_ids(none_if_empty(remove_rt))
        .set_add_subnet_ids(none_if_empty(add_sn))
        .set_remove_subnet_ids(none_if_empty(remove_sn))
        .set_add_security_group_ids(none_if_empty(add_sg))
        .set_remove_security_group_ids(none_if_empty(remove_sg))
        .set_policy_document(new_policy.map(str::to_string))
        .set_private_dns_enabled(dns)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(true)
}

/// DeleteVpcEndpoints reports per-endpoint failures in the answer, not as an error.
async fn delete_endpoint(ctx: &AwsContext, id: &str) -> Result<(), AwsError> {
    let out = ctx.ec2.delete_vpc_endpoints().vpc_endpoint_ids(id).send().await.map_err(AwsError::from_sdk)?;
    match out.unsuccessful().iter().find_map(|u| u.error()) {
        None => Ok(()),
        Some(err) => {
            let code = err.code().unwrap_or("Unknown");
            Err(AwsError {
                code: Some(code.to_string()),
                message: err.message().unwrap_or_default().to_string(),
                class: classify_code(code),
            })
        }
    }
}

fn failed(diags: &mut Diagnostics, action: &str, id: &str, why: &str) {
    diags.error(
        FAILED,
        format!("{action} {OBJECT} ({id}): {why}"),
        "Check the service name and, for endpoint services of other accounts, that the owner accepted the \
         connection. A failed endpoint stays in state as tainted; the next apply replaces it.",
    );
}

#[async_trait]
impl Resource for VpcEndpoint {
    fn type_name(&self) -> &'static str {
        "tandem_vpc_endpoint"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        let ids = Type::Set(Box::new(Type::String));
        Schema::new(
            0,
            Block::new(
                "A VPC endpoint: private access to an AWS service (DynamoDB for lease arbitration, EC2, ...) \
                 without a NAT gateway.",
            )
            .attr(Attribute::computed("id", Type::String).describe("The endpoint ID, e.g. `vpce-0123…`."))
            .attr(Attribute::computed("arn", Type::String).describe("The endpoint's ARN."))
            .attr(Attribute::computed("owner_id", Type::String).describe("The AWS account that owns the endpoint."))
            .attr(Attribute::required("vpc_id", Type::String).replace().describe("The VPC. Changing it replaces the endpoint."))
            .attr(
                Attribute::required("service_name", Type::String)
                    .replace()
                    .validate(service_name)
                    .describe("The service, e.g. `com.amazonaws.us-east-1.dynamodb`; must be in the provider's region."),
            )
            .attr(
                Attribute::with_default("vpc_endpoint_type", Value::from("Gateway"))
                    .replace()
                    .validate(endpoint_type)
                    .describe("`Gateway` (default; S3 and DynamoDB) or `Interface`."),
            )
            .attr(
                Attribute::optional("route_table_ids", ids.clone())
                    .describe("Gateway: the route tables that get a route to the service. Changed in place."),
            )
            .attr(
                Attribute::optional("subnet_ids", ids.clone())
                    .describe("Interface: the subnets to place endpoint interfaces in. Changed in place."),
            )
            .attr(
                Attribute::optional_computed("security_group_ids", ids.clone())
                    .describe("Interface: the security groups of the endpoint interfaces. Changed in place."),
            )
            .attr(
                Attribute::with_default("private_dns_enabled", Value::Bool(false))
                    .describe("Interface: whether the service's public DNS name resolves to the endpoint. Default `false`."),
            )
            .attr(
                Attribute::optional_computed("policy", Type::String)
                    .validate(policy)
                    .describe("An IAM policy document (JSON) limiting use of the endpoint; compared by meaning. AWS's default allows everything."),
            )
            .attr(Attribute::computed("state", Type::String).describe("The endpoint's state, e.g. `available`."))
            .attr(
                Attribute::computed("prefix_list_id", Type::String)
                    .describe("Gateway: the service's prefix list ID, for security group rules."),
            )
            .attr(
                Attribute::computed_volatile("network_interface_ids", ids)
                    .describe("Interface: the endpoint's network interfaces."),
            )
            .attr(tags)
            .attr(tags_all)
            .nested(timeouts_block(&["create", "update", "delete"])),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_type_arguments(config, diags);
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        if (plan.is_create() || plan.changes("service_name"))
            && let Some(service) = plan.planned.attr("service_name").as_str()
        {
            check_region(service, &ctx.region, diags);
        }
        if plan.is_create()
            && let Some(vpc_id) = plan.planned.attr("vpc_id").as_str()
        {
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
        // The same document in another spelling is no change: keep the state's spelling.
        if let (Some(configured), Some(prior)) =
            (plan.config.attr("policy").as_str(), plan.prior.attr("policy").as_str())
            && configured != prior
            && policy_json::equivalent(configured, prior)
        {
            plan.set("policy", Value::from(prior));
            // The schema-driven plan saw a change and made the volatile attributes unknown; there is none.
            let mut unchanged = plan.planned.clone();
            if let Some(attrs) = unchanged.attrs_mut() {
                attrs.insert("network_interface_ids".into(), plan.prior.attr("network_interface_ids").clone());
            }
            if unchanged == *plan.prior {
                plan.planned = unchanged;
            }
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        // A service name unknown at plan time is known now. (The type checks ran on the configuration.)
        if let Some(service) = planned.attr("service_name").as_str() {
            check_region(service, &ctx.region, diags);
        }
        if diags.has_errors() {
            return None;
        }
        let interface = planned.attr("vpc_endpoint_type").as_str() == Some("Interface");
        let all = tags::tags_of(planned.attr("tags_all"));
        let list = |name: &str| none_if_empty(strings(planned.attr(name)));
        let created = ctx
            .ec2
            .create_vpc_endpoint()
            .vpc_id(planned.attr("vpc_id").as_str().unwrap_or_default())
            .service_name(planned.attr("service_name").as_str().unwrap_or_default())
            .vpc_endpoint_type(if interface { VpcEndpointType::Interface } else { VpcEndpointType::Gateway })
            .set_route_table_ids(list("route_table_ids"))
            .set_subnet_ids(list("subnet_ids"))
            .set_security_group_ids(list("security_group_ids"))
            .set_private_dns_enabled(interface.then(|| planned.attr("private_dns_enabled").as_bool().unwrap_or(false)))
            .set_policy_document(planned.attr("policy").as_str().map(str::to_string))
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::VpcEndpoint, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.vpc_endpoint().and_then(|e| e.vpc_endpoint_id()))?;
        match wait_available(ctx, &id, wait::timeout_for(planned, "create", ENDPOINT_TIMEOUT)).await {
            Ok(()) => {}
            Err(WaitError::Failed(why)) => {
                failed(diags, "creating", &id, &why);
                let mut already_reported = Diagnostics::new();
                let failure = async { Err(AwsError::local(ErrorClass::Other, why)) };
                return lifecycle::finish_create(&mut already_reported, OBJECT, &id, planned, failure).await;
            }
            Err(WaitError::Aws(e)) => {
                return lifecycle::finish_create(diags, OBJECT, &id, planned, async { Err(e) }).await;
            }
        }
        let rest = lifecycle::read_after_create(|| read_endpoint(ctx, &id, planned));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_endpoint(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            if modify(ctx, id, prior, planned).await? {
                match wait_available(ctx, id, wait::timeout_for(planned, "update", ENDPOINT_TIMEOUT)).await {
                    Ok(()) => {}
                    Err(WaitError::Failed(why)) => return Err(AwsError::local(ErrorClass::Other, why)),
                    Err(WaitError::Aws(e)) => return Err(e),
                }
            }
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_endpoint(ctx, id, planned).await
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
            wait::timeout_for(state, "delete", ENDPOINT_TIMEOUT),
            || delete_endpoint(ctx, id),
            || async { find_vpc_endpoint_by_id(ctx, id).await.map(|e| Some(state_of(&e))) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{LastError, State};

    use super::*;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn service_region_must_be_the_providers() {
        assert_eq!(service_region("com.amazonaws.us-east-1.dynamodb"), Some("us-east-1"));
        assert_eq!(service_region("com.amazonaws.us-gov-west-1.s3"), Some("us-gov-west-1"));
        assert_eq!(service_region("com.amazonaws.vpce.eu-west-1.vpce-svc-0123"), Some("eu-west-1"));
        assert_eq!(service_region("aws.api.global.codeartifact"), None);
        let mut d = Diagnostics::new();
        check_region("com.amazonaws.us-east-1.dynamodb", "us-east-1", &mut d);
        assert!(!d.has_errors());
        check_region("com.amazonaws.eu-west-1.dynamodb", "us-east-1", &mut d);
        assert!(d.0[0].summary.contains(WRONG_REGION) && d.0[0].summary.contains("eu-west-1"));
        assert_eq!(d.0[0].path, Some(AttrPath::root("service_name")));
    }

    #[test]
    fn arguments_of_the_other_type_are_refused_on_their_attribute() {
        let cfg = |kind: Value| {
            Value::object([
                ("vpc_endpoint_type", kind),
                ("route_table_ids", Value::Set(vec!["rtb-1".into()])),
                ("subnet_ids", Value::Unknown),
                ("security_group_ids", Value::Null),
                ("private_dns_enabled", Value::Bool(true)),
            ])
        };
        let mut d = Diagnostics::new();
        check_type_arguments(&cfg(Value::Null), &mut d);
        let paths: Vec<_> = d.0.iter().filter_map(|x| x.path.clone()).collect();
        assert_eq!(paths, vec![AttrPath::root("subnet_ids"), AttrPath::root("private_dns_enabled")]);
        let mut d = Diagnostics::new();
        check_type_arguments(&cfg("Interface".into()), &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path, Some(AttrPath::root("route_table_ids")));
        let mut d = Diagnostics::new();
        check_type_arguments(&cfg(Value::Unknown), &mut d);
        assert!(!d.has_errors());
    }

    #[test]
    fn states_are_compared_in_any_case_and_failures_say_why() {
        let e = |s: &str| AwsVpcEndpoint::builder().state(State::from(s)).build();
        assert_eq!(progress(&e("available")), Progress::Ready);
        assert_eq!(progress(&e("pendingAcceptance")), Progress::Ready);
        assert_eq!(progress(&e("pending")), Progress::Pending("pending".into()));
        let failed = AwsVpcEndpoint::builder()
            .state(State::from("failed"))
            .last_error(LastError::builder().code("Client.Error").message("no such service").build())
            .build();
        assert_eq!(progress(&failed), Progress::Failed("the endpoint is failed: Client.Error: no such service".into()));
    }

    #[test]
    fn set_changes_become_add_and_remove_lists() {
        let set = |xs: &[&str]| Value::Set(xs.iter().map(|x| Value::from(*x)).collect());
        let (add, remove) = set_diff(&set(&["rtb-1", "rtb-2"]), &set(&["rtb-2", "rtb-3"]));
        assert_eq!((add, remove), (vec!["rtb-3".to_string()], vec!["rtb-1".to_string()]));
        assert_eq!(set_or_null(Vec::new(), &Value::Null), Value::Null);
        assert_eq!(set_or_null(Vec::new(), &set(&[])), set(&[]));
    }

    #[test]
    fn sets_change_in_place_identity_replaces() {
        let s = VpcEndpoint.schema();
        for name in ["vpc_id", "service_name", "vpc_endpoint_type"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        for name in ["route_table_ids", "subnet_ids", "security_group_ids", "policy", "private_dns_enabled"] {
            assert!(!s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        assert!(policy(&Value::from("{not json")).unwrap_err().contains("JSON"));
    }
}
