//! `tandem_dynamodb_table`: a DynamoDB table with a hash key, as the AWS provider's `aws_dynamodb_table`
//! without range keys, indexes and streams. The cluster runtime keeps its leases (who may run which
//! failover group) in such a table; docs/resources/dynamodb_table.md gives the recommended settings.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ProvisionedThroughput, ScalarAttributeType, TableStatus, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::{lifecycle, object, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::{Nesting, tags_attributes, timeouts_block};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct DynamodbTable;

const OBJECT: &str = "DynamoDB Table";

const CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

const PAY_PER_REQUEST: &str = "PAY_PER_REQUEST";
const PROVISIONED: &str = "PROVISIONED";

mod code {
    pub const HASH_KEY_UNDECLARED: &str = "TDM-DDB-001";
    pub const UNUSED_ATTRIBUTE: &str = "TDM-DDB-002";
    pub const BAD_ATTRIBUTE_TYPE: &str = "TDM-DDB-003";
    pub const CAPACITY_MISSING: &str = "TDM-DDB-004";
    pub const CAPACITY_ON_DEMAND: &str = "TDM-DDB-005";
    pub const BAD_BILLING_MODE: &str = "TDM-DDB-006";
    pub const TTL_NO_ATTRIBUTE: &str = "TDM-DDB-007";
    pub const BAD_NAME: &str = "TDM-DDB-008";
    pub const PROTECTED: &str = "TDM-DDB-010";
}

fn build_err(e: impl std::fmt::Display) -> AwsError {
    AwsError::local(ErrorClass::Other, format!("building the request: {e}"))
}

/// Finder: the table, or NotFound (also while it is being deleted).
pub(crate) async fn find_table_by_name(
    ctx: &AwsContext,
    name: &str,
) -> Result<aws_sdk_dynamodb::types::TableDescription, AwsError> {
    let out = ctx.dynamodb.describe_table().table_name(name).send().await.map_err(AwsError::from_sdk)?;
    match out.table() {
        Some(t) if t.table_name() == Some(name) && t.table_status() != Some(&TableStatus::Deleting) => Ok(t.clone()),
        _ => Err(AwsError::local(ErrorClass::NotFound, format!("table {name} not found"))),
    }
}

fn status_name(t: &aws_sdk_dynamodb::types::TableDescription) -> String {
    t.table_status().map_or("unknown", TableStatus::as_str).to_string()
}

async fn wait_table_active(ctx: &AwsContext, name: &str, timeout: Duration) -> Result<(), AwsError> {
    wait::wait_for(&format!("{OBJECT} {name} to become ACTIVE"), timeout, || async {
        match find_table_by_name(ctx, name).await {
            Ok(t) if t.table_status() == Some(&TableStatus::Active) => Ok(Status::Ready(())),
            Ok(t) => Ok(Status::Pending(status_name(&t))),
            Err(e) if e.is_not_found() => Ok(Status::Pending("not yet visible".into())),
            Err(e) => Err(e),
        }
    })
    .await
}

/// The single element of a `max_items = 1` list block, if present.
fn single(v: &Value, block: &str) -> Option<Value> {
    v.attr(block).elements().first().cloned()
}

async fn read_table(ctx: &AwsContext, name: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let t = match find_table_by_name(ctx, name).await {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let arn = t.table_arn().unwrap_or_default().to_string();
    let hash_key = t.key_schema().iter().find(|k| k.key_type() == &KeyType::Hash).map(|k| k.attribute_name());
    let attributes: Vec<Value> = t
        .attribute_definitions()
        .iter()
        .map(|a| {
            object([("name", Value::from(a.attribute_name())), ("type", Value::from(a.attribute_type().as_str()))])
        })
        .collect();
    // Tables that were always provisioned have no billing mode summary.
    let billing = t.billing_mode_summary().and_then(|b| b.billing_mode()).map_or(PROVISIONED, BillingMode::as_str);
    let throughput = t.provisioned_throughput();
    // On demand there is no provisioned capacity (AWS reports 0; moto keeps the old figures after a switch).
    let on_demand = billing == PAY_PER_REQUEST;
    let capacity = |v: Option<i64>| Value::from(if on_demand { 0 } else { v.unwrap_or(0) });
    let backups =
        ctx.dynamodb.describe_continuous_backups().table_name(name).send().await.map_err(AwsError::from_sdk)?;
    let pitr = backups
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .is_some_and(|s| s.as_str() == "ENABLED");
    let ttl_out = ctx.dynamodb.describe_time_to_live().table_name(name).send().await.map_err(AwsError::from_sdk)?;
    let ttl_desc = ttl_out.time_to_live_description();
    let ttl_on = ttl_desc
        .and_then(|d| d.time_to_live_status())
        .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
    let all = table_tags(ctx, &arn).await?;

    // Optional blocks: present when the configuration (prior) had them, or when the setting is on.
    let prior_pitr = single(prior, "point_in_time_recovery");
    let pitr_block =
        if prior_pitr.is_some() || pitr { vec![object([("enabled", Value::Bool(pitr))])] } else { Vec::new() };
    let prior_ttl = single(prior, "ttl");
    let ttl_name = ttl_desc
        .and_then(|d| d.attribute_name())
        .filter(|n| !n.is_empty())
        .map(Value::from)
        .unwrap_or_else(|| prior_ttl.as_ref().map_or(Value::Null, |t| t.attr("attribute_name").clone()));
    let ttl_block = if prior_ttl.is_some() || ttl_on {
        vec![object([("attribute_name", ttl_name), ("enabled", Value::Bool(ttl_on))])]
    } else {
        Vec::new()
    };
    Ok(Some(object([
        ("id", Value::from(name)),
        ("arn", Value::from(arn.as_str())),
        ("name", Value::from(name)),
        ("hash_key", hash_key.map_or(Value::Null, Value::from)),
        ("attribute", Value::Set(attributes)),
        ("billing_mode", Value::from(billing)),
        ("read_capacity", capacity(throughput.and_then(|p| p.read_capacity_units()))),
        ("write_capacity", capacity(throughput.and_then(|p| p.write_capacity_units()))),
        ("deletion_protection_enabled", Value::Bool(t.deletion_protection_enabled().unwrap_or(false))),
        ("point_in_time_recovery", Value::List(pitr_block)),
        ("ttl", Value::List(ttl_block)),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

async fn table_tags(ctx: &AwsContext, arn: &str) -> Result<Tags, AwsError> {
    let mut all = Tags::new();
    let mut token: Option<String> = None;
    loop {
        let out = ctx
            .dynamodb
            .list_tags_of_resource()
            .resource_arn(arn)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
        all.extend(out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())));
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(all),
        }
    }
}

fn to_ddb_tags(tags: &Tags) -> Result<Vec<Tag>, AwsError> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect::<Result<_, _>>().map_err(build_err)
}

fn throughput(planned: &Value) -> Result<Option<ProvisionedThroughput>, AwsError> {
    if planned.attr("billing_mode").as_str() != Some(PROVISIONED) {
        return Ok(None);
    }
    ProvisionedThroughput::builder()
        .read_capacity_units(planned.attr("read_capacity").as_i64().unwrap_or(1))
        .write_capacity_units(planned.attr("write_capacity").as_i64().unwrap_or(1))
        .build()
        .map(Some)
        .map_err(build_err)
}

async fn set_pitr(ctx: &AwsContext, name: &str, on: bool) -> Result<(), AwsError> {
    let spec =
        PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(on).build().map_err(build_err)?;
    ctx.dynamodb
        .update_continuous_backups()
        .table_name(name)
        .point_in_time_recovery_specification(spec)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(())
}

async fn set_ttl(ctx: &AwsContext, name: &str, attribute: &str, on: bool) -> Result<(), AwsError> {
    let spec = TimeToLiveSpecification::builder().attribute_name(attribute).enabled(on).build().map_err(build_err)?;
    ctx.dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(())
}

/// `(attribute_name, enabled)` of the ttl block; disabled when absent.
fn ttl_of(v: &Value) -> (Option<String>, bool) {
    match single(v, "ttl") {
        Some(t) => {
            (t.attr("attribute_name").as_str().map(str::to_string), t.attr("enabled").as_bool().unwrap_or(false))
        }
        None => (None, false),
    }
}

fn pitr_of(v: &Value) -> bool {
    single(v, "point_in_time_recovery").is_some_and(|p| p.attr("enabled").as_bool() == Some(true))
}

async fn update_ttl(ctx: &AwsContext, name: &str, prior: &Value, planned: &Value) -> Result<(), AwsError> {
    let (old_name, old_on) = ttl_of(prior);
    let (new_name, new_on) = ttl_of(planned);
    if (old_name.as_deref(), old_on) == (new_name.as_deref(), new_on) || (!old_on && !new_on) {
        return Ok(());
    }
    if old_on && let Some(old) = &old_name {
        set_ttl(ctx, name, old, false).await?;
    }
    if new_on && let Some(new) = &new_name {
        set_ttl(ctx, name, new, true).await?;
    }
    Ok(())
}

async fn update_tags(ctx: &AwsContext, arn: &str, old: &Value, new: &Value) -> Result<(), AwsError> {
    let (removed, set) = tags::diff(&tags::tags_of(old), &tags::tags_of(new));
    if !removed.is_empty() {
        ctx.dynamodb
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(removed))
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
    }
    if !set.is_empty() {
        ctx.dynamodb
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(to_ddb_tags(&set)?))
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
    }
    Ok(())
}

/// Offline checks: names, key and attribute definitions, billing settings, ttl.
fn check_config(config: &Value, diags: &mut Diagnostics) {
    if let Some(name) = config.attr("name").as_str()
        && (!(3..=255).contains(&name.len()) || name.chars().any(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(c))))
    {
        diags.error_at(
            AttrPath::root("name"),
            code::BAD_NAME,
            format!("invalid table name {name:?}"),
            "A table name has 3 to 255 characters: letters, digits, '_', '-' and '.'.",
        );
    }
    let attrs = config.attr("attribute");
    if attrs.is_wholly_known() {
        let declared: Vec<(&str, Option<&str>)> =
            attrs.elements().iter().filter_map(|a| Some((a.attr("name").as_str()?, a.attr("type").as_str()))).collect();
        for (name, ty) in &declared {
            if let Some(t) = ty
                && !["S", "N", "B"].contains(t)
            {
                diags.error_at(
                    AttrPath::root("attribute"),
                    code::BAD_ATTRIBUTE_TYPE,
                    format!("attribute {name:?} has type {t:?}"),
                    "A key attribute has type S (string), N (number) or B (binary).",
                );
            }
        }
        if let Some(hash) = config.attr("hash_key").as_str() {
            if !declared.iter().any(|(n, _)| n == &hash) {
                diags.error_at(
                    AttrPath::root("hash_key"),
                    code::HASH_KEY_UNDECLARED,
                    format!("hash_key {hash:?} has no attribute block"),
                    format!("Declare its type: attribute {{ name = \"{hash}\" type = \"S\" }}."),
                );
            }
            for (name, _) in declared.iter().filter(|(n, _)| n != &hash) {
                diags.error_at(
                    AttrPath::root("attribute"),
                    code::UNUSED_ATTRIBUTE,
                    format!("attribute {name:?} is not a key"),
                    "DynamoDB accepts attribute blocks only for key attributes (here: the hash key). Other \
                     attributes need no declaration: remove this block.",
                );
            }
        }
    }
    let billing = config.attr("billing_mode").as_str();
    if let Some(b) = billing
        && b != PAY_PER_REQUEST
        && b != PROVISIONED
    {
        diags.error_at(
            AttrPath::root("billing_mode"),
            code::BAD_BILLING_MODE,
            format!("billing_mode {b:?} is not a billing mode"),
            "Use PAY_PER_REQUEST (on demand, the default) or PROVISIONED (with read_capacity and write_capacity).",
        );
    }
    for attr in ["read_capacity", "write_capacity"] {
        let v = config.attr(attr);
        match (billing.unwrap_or(PAY_PER_REQUEST), v.as_i64()) {
            (PROVISIONED, None) if v.is_null() => diags.error_at(
                AttrPath::root(attr),
                code::CAPACITY_MISSING,
                format!("{attr} is required with billing_mode = \"PROVISIONED\""),
                "Set read_capacity and write_capacity (units per second, at least 1), or use PAY_PER_REQUEST.",
            ),
            (PROVISIONED, Some(n)) if n < 1 => diags.error_at(
                AttrPath::root(attr),
                code::CAPACITY_MISSING,
                format!("{attr} must be at least 1"),
                "Provisioned capacity is at least 1 unit per second.",
            ),
            (PAY_PER_REQUEST, Some(n)) if n != 0 => diags.error_at(
                AttrPath::root(attr),
                code::CAPACITY_ON_DEMAND,
                format!("{attr} is set but billing_mode is PAY_PER_REQUEST"),
                "On-demand tables have no provisioned capacity: remove read_capacity and write_capacity, or set \
                 billing_mode = \"PROVISIONED\".",
            ),
            _ => {}
        }
    }
    if let Some(t) = single(config, "ttl")
        && t.attr("enabled").as_bool() == Some(true)
        && t.attr("attribute_name").is_null()
    {
        diags.error_at(
            AttrPath::root("ttl").index(0).attr("attribute_name"),
            code::TTL_NO_ATTRIBUTE,
            "ttl is enabled without an attribute_name",
            "Name the attribute that holds each item's expiry time (epoch seconds), e.g. attribute_name = \"expires_at\".",
        );
    }
}

#[async_trait]
impl Resource for DynamodbTable {
    fn type_name(&self) -> &'static str {
        "tandem_dynamodb_table"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        let attribute = Block::new("A key attribute and its type.")
            .attr(Attribute::required("name", Type::String).replace().describe("The attribute's name."))
            .attr(
                Attribute::required("type", Type::String)
                    .replace()
                    .describe("`S` (string), `N` (number) or `B` (binary)."),
            );
        let pitr = Block::new("Point-in-time recovery (continuous backups for 35 days).")
            .attr(Attribute::required("enabled", Type::Bool).describe("Whether point-in-time recovery is on."));
        let ttl = Block::new("Expiry of items by a timestamp attribute.")
            .attr(
                Attribute::optional("attribute_name", Type::String)
                    .describe("The attribute holding each item's expiry time, in epoch seconds."),
            )
            .attr(
                Attribute::with_default("enabled", Value::Bool(false))
                    .describe("Whether expiry is on. Default `false`."),
            );
        Schema::new(
            0,
            Block::new("A DynamoDB table with a hash key, e.g. the cluster runtime's lease table.")
                .attr(Attribute::computed("id", Type::String).describe("The table's name."))
                .attr(Attribute::computed("arn", Type::String).describe("The table's ARN."))
                .attr(
                    Attribute::required("name", Type::String)
                        .replace()
                        .describe("The table's name, unique in the region. Changing it replaces the table."),
                )
                .attr(
                    Attribute::required("hash_key", Type::String)
                        .replace()
                        .describe("The partition key's attribute name. Changing it replaces the table."),
                )
                .attr(
                    Attribute::with_default("billing_mode", Value::from(PAY_PER_REQUEST))
                        .describe("`PAY_PER_REQUEST` (on demand, default) or `PROVISIONED`. Changed in place."),
                )
                .attr(
                    Attribute::optional_computed("read_capacity", Type::Number)
                        .describe("Read capacity units with `PROVISIONED` billing; 0 on demand."),
                )
                .attr(
                    Attribute::optional_computed("write_capacity", Type::Number)
                        .describe("Write capacity units with `PROVISIONED` billing; 0 on demand."),
                )
                .attr(
                    Attribute::with_default("deletion_protection_enabled", Value::Bool(false))
                        .describe("Whether DynamoDB refuses to delete the table. Default `false`. Changed in place."),
                )
                .attr(tags)
                .attr(tags_all)
                .block("attribute", Nesting::Set, 0, attribute)
                .block("point_in_time_recovery", Nesting::List, 1, pitr)
                .block("ttl", Nesting::List, 1, ttl)
                .nested(timeouts_block(&["create", "update", "delete"])),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_config(config, diags);
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        // On demand, DynamoDB reports zero capacity: plan it, so that switching modes has a known result.
        if plan.get("billing_mode").as_str() == Some(PAY_PER_REQUEST) {
            for attr in ["read_capacity", "write_capacity"] {
                if plan.config.attr(attr).is_null() {
                    plan.set(attr, Value::from(0i64));
                }
            }
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = planned.attr("name").as_str().unwrap_or_default();
        let timeout = wait::timeout_for(planned, "create", CREATE_TIMEOUT);
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = async {
            let hash_key = planned.attr("hash_key").as_str().unwrap_or_default();
            let key = KeySchemaElement::builder()
                .attribute_name(hash_key)
                .key_type(KeyType::Hash)
                .build()
                .map_err(build_err)?;
            let definitions = planned
                .attr("attribute")
                .elements()
                .iter()
                .map(|a| {
                    AttributeDefinition::builder()
                        .attribute_name(a.attr("name").as_str().unwrap_or_default())
                        .attribute_type(ScalarAttributeType::from(a.attr("type").as_str().unwrap_or("S")))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(build_err)?;
            ctx.dynamodb
                .create_table()
                .table_name(name)
                .key_schema(key)
                .set_attribute_definitions(Some(definitions))
                .billing_mode(BillingMode::from(planned.attr("billing_mode").as_str().unwrap_or(PAY_PER_REQUEST)))
                .set_provisioned_throughput(throughput(planned)?)
                .deletion_protection_enabled(planned.attr("deletion_protection_enabled").as_bool().unwrap_or(false))
                .set_tags((!all.is_empty()).then(|| to_ddb_tags(&all)).transpose()?)
                .send()
                .await
                .map_err(AwsError::from_sdk)
        }
        .await;
        if let Err(e) = created {
            report(diags, "creating", OBJECT, Some(name), &e);
            return None;
        }
        let rest = async {
            wait_table_active(ctx, name, timeout).await?;
            if pitr_of(planned) {
                set_pitr(ctx, name, true).await?;
            }
            update_ttl(ctx, name, &Value::Null, planned).await?;
            lifecycle::read_after_create(|| read_table(ctx, name, planned)).await
        };
        lifecycle::finish_create(diags, OBJECT, name, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_table(ctx, name, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let name = prior.attr("id").as_str().unwrap_or_default();
        let timeout = wait::timeout_for(planned, "update", UPDATE_TIMEOUT);
        let result = async {
            let changed = |a: &str| prior.attr(a) != planned.attr(a);
            if changed("billing_mode") || changed("read_capacity") || changed("write_capacity") {
                ctx.dynamodb
                    .update_table()
                    .table_name(name)
                    .billing_mode(BillingMode::from(planned.attr("billing_mode").as_str().unwrap_or(PAY_PER_REQUEST)))
                    .set_provisioned_throughput(throughput(planned)?)
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)?;
                wait_table_active(ctx, name, timeout).await?;
            }
            if changed("deletion_protection_enabled") {
                ctx.dynamodb
                    .update_table()
                    .table_name(name)
                    .deletion_protection_enabled(planned.attr("deletion_protection_enabled").as_bool().unwrap_or(false))
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)?;
                wait_table_active(ctx, name, timeout).await?;
            }
            if pitr_of(prior) != pitr_of(planned) {
                set_pitr(ctx, name, pitr_of(planned)).await?;
            }
            update_ttl(ctx, name, prior, planned).await?;
            let arn = prior.attr("arn").as_str().unwrap_or_default();
            update_tags(ctx, arn, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_table(ctx, name, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let name = state.attr("id").as_str().unwrap_or_default();
        let timeout = wait::timeout_for(state, "delete", DELETE_TIMEOUT);
        let protected = || {
            format!(
                "DynamoDB refuses to delete {name} while deletion protection is on. Set \
                 deletion_protection_enabled = false and apply, then destroy. For the lease table this is \
                 deliberate: destroying it while a cluster runs takes the cluster's leases away."
            )
        };
        match find_table_by_name(ctx, name).await {
            Ok(t) if t.deletion_protection_enabled() == Some(true) => {
                return diags.error_at(
                    AttrPath::root("deletion_protection_enabled"),
                    code::PROTECTED,
                    format!("deleting {OBJECT} ({name}): deletion protection is enabled"),
                    protected(),
                );
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) => return report(diags, "deleting", OBJECT, Some(name), &e),
        }
        let deleted = wait::retry_while(ErrorClass::DependencyViolation, timeout, || async {
            match ctx.dynamodb.delete_table().table_name(name).send().await.map_err(AwsError::from_sdk) {
                Ok(_) => Ok(()),
                // The table is being created or updated: it can be deleted once ACTIVE.
                Err(e) if e.has_code("ResourceInUseException") => {
                    Err(AwsError { class: ErrorClass::DependencyViolation, ..e })
                }
                Err(e) => Err(e),
            }
        })
        .await;
        match deleted {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) if e.message.contains("DeletionProtection") || e.message.contains("protected against deletion") => {
                return diags.error_at(
                    AttrPath::root("deletion_protection_enabled"),
                    code::PROTECTED,
                    format!("deleting {OBJECT} ({name}): deletion protection is enabled"),
                    format!("{e}\n{}", protected()),
                );
            }
            Err(e) => return report(diags, "deleting", OBJECT, Some(name), &e),
        }
        lifecycle::wait_gone(diags, OBJECT, name, timeout, || async {
            find_table_by_name(ctx, name).await.map(|t| Some(status_name(&t)))
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, ty: &str) -> Value {
        object([("name", name.into()), ("type", ty.into())])
    }

    fn config(billing: &str, read: Value, attrs: Vec<Value>) -> Value {
        object([
            ("name", "tandem-leases".into()),
            ("hash_key", "group".into()),
            ("billing_mode", billing.into()),
            ("read_capacity", read),
            ("write_capacity", Value::Null),
            ("attribute", Value::Set(attrs)),
            ("ttl", Value::List(vec![])),
        ])
    }

    fn codes(d: &Diagnostics) -> Vec<String> {
        d.0.iter()
            .map(|x| x.summary.split(']').next().unwrap_or_default().trim_start_matches('[').to_string())
            .collect()
    }

    #[test]
    fn recommended_lease_table_passes() {
        let mut d = Diagnostics::new();
        check_config(&config(PAY_PER_REQUEST, Value::Null, vec![attr("group", "S")]), &mut d);
        assert!(d.0.is_empty(), "{d:?}");
    }

    #[test]
    fn keys_and_attribute_blocks_must_match() {
        let mut d = Diagnostics::new();
        check_config(&config(PAY_PER_REQUEST, Value::Null, vec![attr("grp", "X")]), &mut d);
        let c = codes(&d);
        assert!(c.contains(&code::HASH_KEY_UNDECLARED.to_string()), "{c:?}");
        assert!(c.contains(&code::UNUSED_ATTRIBUTE.to_string()), "{c:?}");
        assert!(c.contains(&code::BAD_ATTRIBUTE_TYPE.to_string()), "{c:?}");
        let on_hash_key = d.0.iter().find(|x| x.summary.contains(code::HASH_KEY_UNDECLARED)).unwrap();
        assert_eq!(on_hash_key.path, Some(AttrPath::root("hash_key")));
    }

    #[test]
    fn capacity_follows_the_billing_mode() {
        let mut d = Diagnostics::new();
        check_config(&config(PROVISIONED, Value::from(5i64), vec![attr("group", "S")]), &mut d);
        assert_eq!(codes(&d), vec![code::CAPACITY_MISSING.to_string()], "write_capacity is missing");
        assert_eq!(d.0[0].path, Some(AttrPath::root("write_capacity")));
        let mut d = Diagnostics::new();
        check_config(&config(PAY_PER_REQUEST, Value::from(5i64), vec![attr("group", "S")]), &mut d);
        assert_eq!(codes(&d), vec![code::CAPACITY_ON_DEMAND.to_string()]);
        let mut d = Diagnostics::new();
        check_config(&config("ON_DEMAND", Value::Null, vec![attr("group", "S")]), &mut d);
        assert_eq!(codes(&d), vec![code::BAD_BILLING_MODE.to_string()]);
    }

    #[test]
    fn ttl_needs_an_attribute_when_enabled() {
        let mut cfg = config(PAY_PER_REQUEST, Value::Null, vec![attr("group", "S")]);
        cfg.attrs_mut().unwrap().insert(
            "ttl".into(),
            Value::List(vec![object([("attribute_name", Value::Null), ("enabled", true.into())])]),
        );
        let mut d = Diagnostics::new();
        check_config(&cfg, &mut d);
        assert_eq!(codes(&d), vec![code::TTL_NO_ATTRIBUTE.to_string()]);
    }

    #[test]
    fn ttl_and_pitr_settings_are_read_from_their_blocks() {
        let on = |n: &str| {
            object([("ttl", Value::List(vec![object([("attribute_name", n.into()), ("enabled", true.into())])]))])
        };
        assert_eq!(ttl_of(&on("exp")), (Some("exp".to_string()), true));
        assert_eq!(ttl_of(&Value::Null), (None, false));
        assert!(pitr_of(&object([("point_in_time_recovery", Value::List(vec![object([("enabled", true.into())])]))])));
        assert!(!pitr_of(&Value::Null));
    }
}
