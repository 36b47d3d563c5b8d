//! `tandem_route53_zone`: a Route 53 hosted zone, public or private (associated with VPCs), as the AWS
//! provider's `aws_route53_zone`. The DNS name-control topology keeps its failover record in such a zone.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, HostedZoneConfig, ResourceRecordSet, RrType, Tag, TagResourceType,
    Vpc as R53Vpc, VpcRegion,
};

use super::{lifecycle, object, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::{Nesting, tags_attributes, timeouts_block};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct Route53Zone;

const OBJECT: &str = "Route 53 Hosted Zone";

/// How long a Route 53 change may stay PENDING (AWS documents "within 60 seconds" for propagation).
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const DEFAULT_COMMENT: &str = "Managed by Terraform";

mod code {
    pub const BAD_NAME: &str = "TDM-R53-001";
    pub const NOT_EMPTY: &str = "TDM-R53-002";
    pub const BAD_VPC_REGION: &str = "TDM-R53-003";
}

// ---- DNS names ---------------------------------------------------------------------------------------------

/// A DNS name as Route 53 means it: lower case, octal escapes (`\052` for `*`) decoded, no trailing dot.
/// `Example.COM.` and `example.com` are the same zone.
pub(crate) fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3
                && digits.chars().all(|d| d.is_ascii_digit())
                && let Ok(code) = u8::from_str_radix(&digits, 8)
            {
                out.push(char::from(code));
                for _ in 0..3 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    if out.ends_with('.') && out.len() > 1 {
        out.pop();
    }
    out
}

/// The lower-case FQDN with its trailing dot, the form of record names in Route 53's answers.
pub(crate) fn fqdn(name: &str) -> String {
    format!("{}.", normalize_name(name))
}

/// True when `name` is `zone` or lies below it (both in any spelling).
pub(crate) fn name_in_zone(name: &str, zone: &str) -> bool {
    let (n, z) = (normalize_name(name), normalize_name(zone));
    n == z || n.ends_with(&format!(".{z}"))
}

/// `/hostedzone/Z123` → `Z123` (the form AWS answers with vs. the ID users and ARNs use).
pub(crate) fn clean_zone_id(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// Checks the shape of a domain name: labels of 1 to 63 letters, digits, `-` or `_` (not starting or
/// ending with `-`), at most 253 characters, one optional trailing dot. `wildcard` allows `*` as the
/// leftmost label (record names).
pub(crate) fn check_domain_name(name: &str, wildcard: bool) -> Result<(), String> {
    let n = normalize_name(name);
    if n.is_empty() || n == "." {
        return Err("the name is empty".into());
    }
    if n.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for (i, label) in n.split('.').enumerate() {
        if label.is_empty() {
            return Err(format!("{name:?} has an empty label (two dots in a row, or a leading dot)"));
        }
        if label.len() > 63 {
            return Err(format!("{name:?}: the label {label:?} is longer than 63 characters"));
        }
        if wildcard && i == 0 && label == "*" {
            continue;
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!(
                "{name:?}: the label {label:?} contains {bad:?}; use letters, digits, '-' and '_'{}",
                if wildcard { " (or '*' as the whole leftmost label)" } else { "" }
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{name:?}: the label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// The name as state keeps it: the prior spelling when it means the same name, else `canonical`.
pub(crate) fn keep_name(prior: &Value, from_aws: &str, canonical: String) -> Value {
    match prior.as_str() {
        Some(p) if normalize_name(p) == normalize_name(from_aws) => Value::from(p),
        _ => Value::from(canonical),
    }
}

/// Plans `attr` as its prior value when the configuration spells the same name differently, and takes back
/// the replacement the schema planned for the spelling change.
pub(crate) fn keep_prior_spelling(plan: &mut Plan<'_>, attr: &str, same: impl Fn(&str, &str) -> bool) {
    if plan.is_create() {
        return;
    }
    if let (Some(p), Some(n)) = (plan.prior.attr(attr).as_str(), plan.get(attr).as_str())
        && p != n
        && same(p, n)
    {
        let prior = Value::from(p);
        plan.set(attr, prior);
        plan.requires_replace.retain(|path| path != &AttrPath::root(attr));
    }
}

// ---- changes -----------------------------------------------------------------------------------------------

fn change_state(status: &ChangeStatus) -> Status<()> {
    match status {
        ChangeStatus::Insync => Status::Ready(()),
        other => Status::Pending(other.as_str().to_string()),
    }
}

/// Waits until a Route 53 change is INSYNC; `get` answers the change's current status.
async fn wait_change_with<F, Fut>(change_id: &str, timeout: Duration, mut get: F) -> Result<(), AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<ChangeStatus, AwsError>>,
{
    wait::wait_for(&format!("Route 53 change {change_id} to be INSYNC"), timeout, || {
        let fut = get();
        async move { fut.await.map(|s| change_state(&s)) }
    })
    .await
}

/// Waits until the change `change_id` (with or without its `/change/` prefix) is INSYNC.
pub(crate) async fn wait_change_insync(ctx: &AwsContext, change_id: &str, timeout: Duration) -> Result<(), AwsError> {
    let id = clean_zone_id(change_id).to_string();
    wait_change_with(&id, timeout, || async {
        let out = ctx.route53.get_change().id(&id).send().await.map_err(AwsError::from_sdk)?;
        Ok(out.change_info().map_or(ChangeStatus::Pending, |c| c.status().clone()))
    })
    .await
}

pub(crate) fn build_err(e: impl std::fmt::Display) -> AwsError {
    AwsError::local(ErrorClass::Other, format!("building the request: {e}"))
}

/// Sends one change batch and waits until it is INSYNC.
pub(crate) async fn change_records(
    ctx: &AwsContext,
    zone_id: &str,
    changes: Vec<Change>,
    timeout: Duration,
) -> Result<(), AwsError> {
    let batch = ChangeBatch::builder().set_changes(Some(changes)).build().map_err(build_err)?;
    let out = ctx
        .route53
        .change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(batch)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    match out.change_info() {
        Some(info) => wait_change_insync(ctx, info.id(), timeout).await,
        None => Ok(()),
    }
}

// ---- finder and read ---------------------------------------------------------------------------------------

pub(crate) async fn find_hosted_zone_by_id(
    ctx: &AwsContext,
    id: &str,
) -> Result<aws_sdk_route53::operation::get_hosted_zone::GetHostedZoneOutput, AwsError> {
    let out = ctx.route53.get_hosted_zone().id(clean_zone_id(id)).send().await.map_err(AwsError::from_sdk)?;
    match out.hosted_zone() {
        Some(z) if clean_zone_id(z.id()) == clean_zone_id(id) => Ok(out),
        _ => Err(AwsError::local(ErrorClass::NotFound, format!("hosted zone {id} not found"))),
    }
}

/// The first record set at or after (`name`, `rr_type`), if it is exactly that one.
pub(crate) async fn find_record_set(
    ctx: &AwsContext,
    zone_id: &str,
    name: &str,
    rr_type: RrType,
) -> Result<Option<ResourceRecordSet>, AwsError> {
    let out = ctx
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .start_record_name(fqdn(name))
        .start_record_type(rr_type.clone())
        .max_items(1)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(out
        .resource_record_sets()
        .iter()
        .find(|r| {
            normalize_name(r.name()) == normalize_name(name) && r.r#type() == &rr_type && r.set_identifier().is_none()
        })
        .cloned())
}

fn trim_dot(s: &str) -> String {
    s.trim_end_matches('.').to_string()
}

/// The SOA's MNAME field (the primary name server), when it looks like a host name.
fn soa_primary(soa: &str) -> Option<String> {
    let first = soa.split_whitespace().next()?;
    first.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-').then(|| trim_dot(first))
}

async fn zone_tags(ctx: &AwsContext, id: &str) -> Result<Tags, AwsError> {
    let out = ctx
        .route53
        .list_tags_for_resource()
        .resource_type(TagResourceType::Hostedzone)
        .resource_id(id)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(out
        .resource_tag_set()
        .map(|s| {
            s.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))).collect()
        })
        .unwrap_or_default())
}

async fn read_zone(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let out = match find_hosted_zone_by_id(ctx, id).await {
        Ok(o) => o,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(zone) = out.hosted_zone() else { return Ok(None) };
    let id = clean_zone_id(zone.id()).to_string();
    let private = zone.config().is_some_and(|c| c.private_zone());
    let comment = zone.config().and_then(|c| c.comment()).unwrap_or("");
    let ns_record = find_record_set(ctx, &id, zone.name(), RrType::Ns).await?;
    let soa = find_record_set(ctx, &id, zone.name(), RrType::Soa).await?;
    // Public zones have a delegation set; private zones only their apex NS record (as the AWS provider reads).
    let mut name_servers: Vec<String> = match out.delegation_set() {
        Some(d) if !private && !d.name_servers().is_empty() => d.name_servers().iter().map(|s| trim_dot(s)).collect(),
        _ => ns_record.iter().flat_map(|r| r.resource_records()).map(|r| trim_dot(r.value())).collect(),
    };
    let primary = soa
        .as_ref()
        .and_then(|r| r.resource_records().first())
        .and_then(|r| soa_primary(r.value()))
        .or_else(|| name_servers.first().cloned());
    name_servers.sort();
    let vpcs: Vec<Value> = out
        .vpcs()
        .iter()
        .map(|v| {
            object([
                ("vpc_id", Value::from(v.vpc_id().unwrap_or_default())),
                ("vpc_region", v.vpc_region().map_or(Value::from(ctx.region.as_str()), |r| Value::from(r.as_str()))),
            ])
        })
        .collect();
    let all = zone_tags(ctx, &id).await?;
    Ok(Some(object([
        ("id", Value::from(id.as_str())),
        ("zone_id", Value::from(id.as_str())),
        ("arn", Value::from(format!("arn:{}:route53:::hostedzone/{id}", ctx.partition))),
        ("name", keep_name(prior.attr("name"), zone.name(), normalize_name(zone.name()))),
        ("comment", Value::from(comment)),
        ("force_destroy", Value::Bool(prior.attr("force_destroy").as_bool().unwrap_or(false))),
        ("vpc", Value::Set(vpcs)),
        ("name_servers", Value::List(name_servers.into_iter().map(Value::from).collect())),
        ("primary_name_server", primary.map_or(Value::Null, Value::from)),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

// ---- updates -----------------------------------------------------------------------------------------------

/// `(vpc_id, vpc_region)` pairs of the `vpc` blocks in a state or plan.
fn vpcs_of(v: &Value, default_region: &str) -> Vec<(String, String)> {
    v.attr("vpc")
        .elements()
        .iter()
        .filter_map(|b| {
            let id = b.attr("vpc_id").as_str()?.to_string();
            let region = b.attr("vpc_region").as_str().unwrap_or(default_region).to_string();
            Some((id, region))
        })
        .collect()
}

fn r53_vpc(id: &str, region: &str) -> R53Vpc {
    R53Vpc::builder().vpc_id(id).vpc_region(VpcRegion::from(region)).build()
}

async fn associate(ctx: &AwsContext, zone: &str, vpc: &(String, String), timeout: Duration) -> Result<(), AwsError> {
    let out = ctx
        .route53
        .associate_vpc_with_hosted_zone()
        .hosted_zone_id(zone)
        .vpc(r53_vpc(&vpc.0, &vpc.1))
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    match out.change_info() {
        Some(c) => wait_change_insync(ctx, c.id(), timeout).await,
        None => Ok(()),
    }
}

async fn disassociate(ctx: &AwsContext, zone: &str, vpc: &(String, String), timeout: Duration) -> Result<(), AwsError> {
    let result = ctx
        .route53
        .disassociate_vpc_from_hosted_zone()
        .hosted_zone_id(zone)
        .vpc(r53_vpc(&vpc.0, &vpc.1))
        .send()
        .await
        .map_err(AwsError::from_sdk);
    match result {
        Ok(out) => match out.change_info() {
            Some(c) => wait_change_insync(ctx, c.id(), timeout).await,
            None => Ok(()),
        },
        // Already not associated: the goal is reached.
        Err(e) if e.has_code("VPCAssociationNotFound") => Ok(()),
        Err(e) => Err(e),
    }
}

async fn update_tags(ctx: &AwsContext, id: &str, old: &Value, new: &Value) -> Result<(), AwsError> {
    let (removed, set) = tags::diff(&tags::tags_of(old), &tags::tags_of(new));
    if removed.is_empty() && set.is_empty() {
        return Ok(());
    }
    ctx.route53
        .change_tags_for_resource()
        .resource_type(TagResourceType::Hostedzone)
        .resource_id(id)
        .set_add_tags(
            (!set.is_empty()).then(|| set.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()),
        )
        .set_remove_tag_keys((!removed.is_empty()).then_some(removed))
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(())
}

/// Deletes every record set but the apex SOA and NS (force_destroy), in batches of up to 100 changes.
async fn delete_all_records(ctx: &AwsContext, id: &str, zone_name: &str, timeout: Duration) -> Result<(), AwsError> {
    loop {
        let out = ctx
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(id)
            .max_items(100)
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
        let changes: Vec<Change> = out
            .resource_record_sets()
            .iter()
            .filter(|r| {
                !(normalize_name(r.name()) == normalize_name(zone_name)
                    && matches!(r.r#type(), RrType::Soa | RrType::Ns))
            })
            .map(|r| Change::builder().action(ChangeAction::Delete).resource_record_set(r.clone()).build())
            .collect::<Result<_, _>>()
            .map_err(build_err)?;
        if changes.is_empty() {
            // Only the apex SOA and NS are left on this page; a truncated listing cannot hold more of them.
            return Ok(());
        }
        change_records(ctx, id, changes, timeout).await?;
    }
}

fn check_name(name: &Value, diags: &mut Diagnostics) {
    if let Some(n) = name.as_str()
        && let Err(msg) = check_domain_name(n, false)
    {
        diags.error_at(
            AttrPath::root("name"),
            code::BAD_NAME,
            format!("invalid hosted zone name {n:?}"),
            format!("{msg}. A hosted zone is named by a domain such as example.com or corp.internal."),
        );
    }
}

#[async_trait]
impl Resource for Route53Zone {
    fn type_name(&self) -> &'static str {
        "tandem_route53_zone"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        let vpc = Block::new("A VPC the private zone is associated with. One or more make the zone private.")
            .attr(Attribute::required("vpc_id", Type::String).describe("The VPC's ID."))
            .attr(
                Attribute::optional_computed("vpc_region", Type::String)
                    .describe("The VPC's region. Default: the provider's region."),
            );
        Schema::new(
            0,
            Block::new("A Route 53 hosted zone; private when associated with VPCs.")
                .attr(Attribute::computed("id", Type::String).describe("The zone ID, e.g. `Z0123456789ABCDEFGHIJ`."))
                .attr(Attribute::computed("zone_id", Type::String).describe("The zone ID (the same as `id`)."))
                .attr(Attribute::computed("arn", Type::String).describe("The zone's ARN."))
                .attr(Attribute::required("name", Type::String).replace().describe(
                    "The domain, e.g. `example.com`. Case and a trailing dot make no difference. Changing it replaces the zone.",
                ))
                .attr(
                    Attribute::with_default("comment", Value::from(DEFAULT_COMMENT))
                        .describe("A comment on the zone. Default `Managed by Terraform`."),
                )
                .attr(Attribute::with_default("force_destroy", Value::Bool(false)).describe(
                    "Whether destroying the zone first deletes all its records (but the apex SOA and NS). Default `false`.",
                ))
                .attr(
                    Attribute::computed("name_servers", Type::list(Type::String))
                        .describe("The zone's name servers, sorted."),
                )
                .attr(
                    Attribute::computed("primary_name_server", Type::String)
                        .describe("The name server in the zone's SOA record."),
                )
                .attr(tags)
                .attr(tags_all)
                .block("vpc", Nesting::Set, 0, vpc)
                .nested(timeouts_block(&["create", "update", "delete"])),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_name(config.attr("name"), diags);
        for (i, v) in config.attr("vpc").elements().iter().enumerate() {
            if let Some(r) = v.attr("vpc_region").as_str()
                && crate::framework::validators::availability_zone_name(&Value::from(format!("{r}a"))).is_err()
            {
                diags.error_at(
                    AttrPath::root("vpc").index(i).attr("vpc_region"),
                    code::BAD_VPC_REGION,
                    format!("{r:?} is not an AWS region name"),
                    "Write a region such as us-east-1, or leave vpc_region out to use the provider's region.",
                );
            }
        }
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        keep_prior_spelling(plan, "name", |a, b| normalize_name(a) == normalize_name(b));
        // vpc_region defaults to the provider's region (unless the configuration leaves it unknown).
        let config_unknown_region =
            plan.config.attr("vpc").elements().iter().any(|v| v.attr("vpc_region").is_unknown());
        if !config_unknown_region && let Value::Set(items) = plan.get("vpc").clone() {
            let filled = items
                .into_iter()
                .map(|mut v| {
                    if let Some(attrs) = v.attrs_mut()
                        && matches!(attrs.get("vpc_region"), None | Some(Value::Null | Value::Unknown))
                    {
                        attrs.insert("vpc_region".into(), Value::from(ctx.region.as_str()));
                    }
                    v
                })
                .collect();
            plan.set("vpc", Value::Set(filled));
        }
        // A public zone cannot become private, nor the other way round.
        if !plan.is_create() {
            let was_private = !plan.prior.attr("vpc").elements().is_empty();
            let is_private = !plan.get("vpc").elements().is_empty();
            if was_private != is_private && !plan.requires_replace.contains(&AttrPath::root("vpc")) {
                plan.requires_replace.push(AttrPath::root("vpc"));
            }
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = normalize_name(planned.attr("name").as_str().unwrap_or_default());
        let comment = planned.attr("comment").as_str().unwrap_or(DEFAULT_COMMENT);
        let vpcs = vpcs_of(planned, &ctx.region);
        let timeout = wait::timeout_for(planned, "create", CHANGE_TIMEOUT);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        // PrivateZone must be sent with the VPC (moto makes the zone public otherwise; AWS infers it).
        let config = HostedZoneConfig::builder().comment(comment).private_zone(!vpcs.is_empty()).build();
        let created = ctx
            .route53
            .create_hosted_zone()
            .name(&name)
            .caller_reference(format!("tandem-{name}-{nanos}"))
            .hosted_zone_config(config)
            .set_vpc(vpcs.first().map(|v| r53_vpc(&v.0, &v.1)))
            .send()
            .await
            .map_err(AwsError::from_sdk)
            .and_then(|o| {
                let id = o.hosted_zone().map(|z| clean_zone_id(z.id()).to_string());
                let change = o.change_info().map(|c| c.id().to_string());
                id.map(|id| (id, change)).ok_or_else(|| AwsError::local(ErrorClass::Other, "AWS returned no zone ID"))
            });
        let (id, change) = match created {
            Ok(v) => v,
            Err(e) => {
                report(diags, "creating", OBJECT, None, &e);
                return None;
            }
        };
        let rest = async {
            if let Some(change) = &change {
                wait_change_insync(ctx, change, timeout).await?;
            }
            for vpc in vpcs.iter().skip(1) {
                associate(ctx, &id, vpc, timeout).await?;
            }
            update_tags(ctx, &id, &Value::Null, planned.attr("tags_all")).await?;
            lifecycle::read_after_create(|| read_zone(ctx, &id, planned)).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_zone(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let timeout = wait::timeout_for(planned, "update", CHANGE_TIMEOUT);
        let result = async {
            if prior.attr("comment") != planned.attr("comment") {
                ctx.route53
                    .update_hosted_zone_comment()
                    .id(id)
                    .comment(planned.attr("comment").as_str().unwrap_or_default())
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)?;
            }
            let (old, new) = (vpcs_of(prior, &ctx.region), vpcs_of(planned, &ctx.region));
            // Associate first: a private zone must keep at least one VPC at every moment.
            for vpc in new.iter().filter(|v| !old.iter().any(|o| o.0 == v.0)) {
                associate(ctx, id, vpc, timeout).await?;
            }
            for vpc in old.iter().filter(|o| !new.iter().any(|v| v.0 == o.0)) {
                disassociate(ctx, id, vpc, timeout).await?;
            }
            update_tags(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_zone(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        let timeout = wait::timeout_for(state, "delete", CHANGE_TIMEOUT);
        if state.attr("force_destroy").as_bool() == Some(true) {
            let name = state.attr("name").as_str().unwrap_or_default();
            match delete_all_records(ctx, id, name, timeout).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => return,
                Err(e) => return report(diags, "deleting records of", OBJECT, Some(id), &e),
            }
        }
        let deleted = ctx.route53.delete_hosted_zone().id(id).send().await.map_err(AwsError::from_sdk);
        let change = match deleted {
            Ok(out) => out.change_info().map(|c| c.id().to_string()),
            Err(e) if e.is_not_found() => return,
            // Not retried: records do not go away by themselves.
            Err(e) if e.has_code("HostedZoneNotEmpty") => {
                return diags.error_at(
                    AttrPath::root("force_destroy"),
                    code::NOT_EMPTY,
                    format!("deleting {OBJECT} ({id}): the zone still has records"),
                    "Route 53 deletes only zones that hold nothing but their SOA and NS records. Delete the other \
                     records first (their tandem_route53_record resources, or by hand), or set force_destroy = true \
                     and apply before destroying, to have them deleted with the zone.",
                );
            }
            Err(e) => return report(diags, "deleting", OBJECT, Some(id), &e),
        };
        let result = async {
            if let Some(change) = &change {
                wait_change_insync(ctx, change, timeout).await?;
            }
            wait::wait_for(&format!("{OBJECT} {id} to be deleted"), timeout, || async {
                match find_hosted_zone_by_id(ctx, id).await {
                    Ok(_) => Ok(Status::Pending("still listed".to_string())),
                    Err(e) if e.is_not_found() => Ok(Status::Ready(())),
                    Err(e) => Err(e),
                }
            })
            .await
        }
        .await;
        if let Err(e) = result {
            report(diags, "deleting", OBJECT, Some(id), &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::framework::plan::plan_from_schema;
    use crate::framework::resource::empty_object;

    #[test]
    fn names_normalise_to_lower_case_without_trailing_dot() {
        assert_eq!(normalize_name("Example.COM."), "example.com");
        assert_eq!(normalize_name("\\052.example.com."), "*.example.com");
        assert_eq!(fqdn("WWW.Example.com"), "www.example.com.");
        assert!(name_in_zone("db.Example.com.", "example.com"));
        assert!(name_in_zone("example.com", "example.com."));
        assert!(!name_in_zone("badexample.com", "example.com"));
        assert_eq!(clean_zone_id("/hostedzone/Z1"), "Z1");
        assert_eq!(clean_zone_id("Z1"), "Z1");
    }

    #[test]
    fn domain_names_are_checked_for_shape() {
        assert!(check_domain_name("example.com.", false).is_ok());
        assert!(check_domain_name("corp.internal", false).is_ok());
        assert!(check_domain_name("exa mple.com", false).unwrap_err().contains("' '"));
        assert!(check_domain_name("a..b", false).unwrap_err().contains("empty label"));
        assert!(check_domain_name("-a.com", false).is_err());
        assert!(check_domain_name("*.a.com", false).is_err());
        assert!(check_domain_name("*.a.com", true).is_ok());
        assert!(check_domain_name(&"a".repeat(64), false).is_err());
    }

    #[test]
    fn read_keeps_the_users_spelling_of_the_same_name() {
        assert_eq!(
            keep_name(&Value::from("Example.COM."), "example.com.", "example.com".into()),
            "Example.COM.".into()
        );
        assert_eq!(keep_name(&Value::Null, "example.com.", "example.com".into()), "example.com".into());
        assert_eq!(keep_name(&Value::from("other.com"), "example.com.", "example.com".into()), "example.com".into());
    }

    #[test]
    fn respelled_name_plans_no_change_and_no_replacement() {
        let schema = Route53Zone.schema();
        let mut prior = empty_object(&schema);
        let attrs = prior.attrs_mut().unwrap();
        attrs.insert("id".into(), "Z1".into());
        attrs.insert("name".into(), "example.com".into());
        attrs.insert("comment".into(), DEFAULT_COMMENT.into());
        attrs.insert("force_destroy".into(), false.into());
        let mut config = empty_object(&schema);
        config.attrs_mut().unwrap().insert("name".into(), "Example.COM.".into());
        let mut proposed = prior.clone();
        proposed.attrs_mut().unwrap().insert("name".into(), "Example.COM.".into());
        let mut plan = plan_from_schema(&schema.block, &prior, &config, proposed);
        assert_eq!(plan.requires_replace, vec![AttrPath::root("name")]);
        keep_prior_spelling(&mut plan, "name", |a, b| normalize_name(a) == normalize_name(b));
        assert!(plan.requires_replace.is_empty());
        assert_eq!(plan.get("name"), &Value::from("example.com"));
    }

    #[test]
    fn soa_gives_the_primary_name_server() {
        assert_eq!(
            soa_primary("ns-2048.awsdns-64.com. hostmaster.example.com. 1 7200 900 1209600 86400").as_deref(),
            Some("ns-2048.awsdns-64.com")
        );
        assert_eq!(soa_primary("{'Value': 'x'}"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn change_wait_polls_until_insync() {
        let polls = Cell::new(0);
        wait_change_with("C1", Duration::from_secs(60), || {
            polls.set(polls.get() + 1);
            let n = polls.get();
            async move { Ok(if n < 3 { ChangeStatus::Pending } else { ChangeStatus::Insync }) }
        })
        .await
        .unwrap();
        assert_eq!(polls.get(), 3);
        let err =
            wait_change_with("C2", Duration::from_secs(2), || async { Ok(ChangeStatus::Pending) }).await.unwrap_err();
        assert!(err.message.contains("C2") && err.message.contains("PENDING"), "{err}");
    }
}
