//! `tandem_ebs_volume`: an EBS volume in one availability zone, as the AWS provider's `aws_ebs_volume`
//! (e.g. a node's mirror disk). Size, type, IOPS and throughput change in place through ModifyVolume.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, VolumeModificationState, VolumeState, VolumeType};

use super::availability_zones::find_availability_zones;
use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::{tags_attributes, timeouts_block};
use crate::framework::validators::availability_zone_name;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct EbsVolume;

const OBJECT: &str = "EBS Volume";

const CREATE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

pub(crate) const VOLUME_TYPES: [&str; 7] = ["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"];

/// Finder: the volume, or NotFound (also for a volume in state `deleted`).
pub(crate) async fn find_volume_by_id(ctx: &AwsContext, id: &str) -> Result<aws_sdk_ec2::types::Volume, AwsError> {
    let out = ctx.ec2.describe_volumes().volume_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.volumes()
        .iter()
        .find(|v| v.volume_id() == Some(id) && v.state() != Some(&VolumeState::Deleted))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("EBS volume {id} not found")))
}

fn state_name(v: &aws_sdk_ec2::types::Volume) -> String {
    v.state().map_or("unknown", VolumeState::as_str).to_string()
}

pub(crate) fn volume_type(v: &Value) -> Result<(), String> {
    let t = v.as_str().ok_or("expected a string")?;
    if VOLUME_TYPES.contains(&t) { Ok(()) } else { Err(format!("{t:?} is not one of {}", VOLUME_TYPES.join(", "))) }
}

pub(crate) fn volume_size(v: &Value) -> Result<(), String> {
    match v.as_i64() {
        Some(n) if (1..=65536).contains(&n) => Ok(()),
        _ => Err("a volume size is a whole number of GiB from 1 to 65536".into()),
    }
}

fn positive(v: &Value) -> Result<(), String> {
    match v.as_i64() {
        Some(n) if n > 0 => Ok(()),
        _ => Err("expected a positive whole number".into()),
    }
}

fn int(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|n| i32::try_from(n).ok())
}

/// Changes size / type / IOPS / throughput (only what is `Some`) and waits until the volume is usable with
/// the new settings (`optimizing` or `completed`, as the AWS provider waits).
pub(crate) async fn modify_volume_and_wait(
    ctx: &AwsContext,
    id: &str,
    size: Option<i32>,
    kind: Option<&str>,
    iops: Option<i32>,
    throughput: Option<i32>,
    timeout: Duration,
) -> Result<(), AwsError> {
    if size.is_none() && kind.is_none() && iops.is_none() && throughput.is_none() {
        return Ok(());
    }
    ctx.ec2
        .modify_volume()
        .volume_id(id)
        .set_size(size)
        .set_volume_type(kind.map(VolumeType::from))
        .set_iops(iops)
        .set_throughput(throughput)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    wait::wait_for(&format!("EBS volume {id} modification"), timeout, || async {
        let out = ctx.ec2.describe_volumes_modifications().volume_ids(id).send().await.map_err(AwsError::from_sdk)?;
        let latest = out.volumes_modifications().iter().max_by_key(|m| m.start_time().map(|t| t.as_nanos()));
        match latest.and_then(|m| m.modification_state()) {
            Some(VolumeModificationState::Optimizing | VolumeModificationState::Completed) => Ok(Status::Ready(())),
            Some(VolumeModificationState::Failed) => Err(AwsError::local(
                ErrorClass::Other,
                format!(
                    "the modification of EBS volume {id} failed: {}",
                    latest.and_then(|m| m.status_message()).unwrap_or("no reason given")
                ),
            )),
            Some(s) => Ok(Status::Pending(s.as_str().to_string())),
            // Not yet visible right after ModifyVolume.
            None => Ok(Status::Pending("modification not yet visible".into())),
        }
    })
    .await
}

async fn read_volume(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let v = match find_volume_by_id(ctx, id).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let all: Tags = tags::from_ec2(v.tags());
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(ctx.arn("ec2", None, &format!("volume/{id}")))),
        ("availability_zone", opt_str(v.availability_zone())),
        ("size", v.size().map_or(Value::Null, Value::from)),
        ("type", opt_str(v.volume_type().map(VolumeType::as_str))),
        ("iops", v.iops().map_or(Value::Null, Value::from)),
        ("throughput", v.throughput().map_or(Value::Null, Value::from)),
        ("encrypted", Value::Bool(v.encrypted().unwrap_or(false))),
        ("kms_key_id", opt_str(v.kms_key_id())),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

/// Plan-time checks: the zone exists; IOPS and throughput only where the volume type takes them.
async fn check_volume(ctx: &AwsContext, plan: &Plan<'_>, diags: &mut Diagnostics) {
    let kind = plan.get("type").as_str();
    if let Some(kind) = kind {
        let configured = |name: &str| !plan.config.attr(name).is_null();
        if configured("iops") && !["gp3", "io1", "io2"].contains(&kind) {
            diags.error_at(
                AttrPath::root("iops"),
                "TDM-EC2-166",
                format!("iops cannot be set for volume type {kind:?}"),
                "Only gp3, io1 and io2 volumes take provisioned IOPS; leave iops out for other types.",
            );
        }
        if configured("throughput") && kind != "gp3" {
            diags.error_at(
                AttrPath::root("throughput"),
                "TDM-EC2-166",
                format!("throughput cannot be set for volume type {kind:?}"),
                "Only gp3 volumes take a provisioned throughput (MiB/s); leave throughput out for other types.",
            );
        }
    }
    if (plan.is_create() || plan.changes("availability_zone"))
        && let Some(az) = plan.get("availability_zone").as_str()
    {
        check_zone(ctx, az, diags).await;
    }
}

async fn check_zone(ctx: &AwsContext, az: &str, diags: &mut Diagnostics) {
    match find_availability_zones(ctx, None).await {
        Ok(zones) => {
            let names: Vec<&str> = zones.iter().filter_map(|z| z.zone_name()).collect();
            if !names.contains(&az) {
                diags.error_at(
                    AttrPath::root("availability_zone"),
                    "TDM-EC2-165",
                    format!("availability zone {az:?} does not exist in {}", ctx.region),
                    format!(
                        "Zones of {}: {}. Put the volume in the zone of the instance it is for.",
                        ctx.region,
                        names.join(", ")
                    ),
                );
            }
        }
        Err(e) => report(diags, "checking", "EC2 Availability Zones", None, &e),
    }
}

/// EBS volumes grow but never shrink: a smaller size is a new volume. A new type or size also changes what
/// AWS provisions by default (gp2 IOPS scale with size), so IOPS / throughput the user left out are unknown.
fn plan_size_change(plan: &mut Plan<'_>) {
    if plan.is_create() {
        return;
    }
    if let (Some(old), Some(new)) = (plan.prior.attr("size").as_i64(), plan.get("size").as_i64())
        && new < old
        && !plan.requires_replace.contains(&AttrPath::root("size"))
    {
        plan.requires_replace.push(AttrPath::root("size"));
    }
    if plan.changes("type") || plan.changes("size") {
        for name in ["iops", "throughput"] {
            if plan.config.attr(name).is_null() {
                plan.set(name, Value::Unknown);
            }
        }
    }
}

#[async_trait]
impl Resource for EbsVolume {
    fn type_name(&self) -> &'static str {
        "tandem_ebs_volume"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("An EBS volume in one availability zone, e.g. the mirror disk of a cluster node.")
                .attr(Attribute::computed("id", Type::String).describe("The volume ID, e.g. `vol-0123…`."))
                .attr(Attribute::computed("arn", Type::String).describe("The volume's ARN."))
                .attr(
                    Attribute::required("availability_zone", Type::String)
                        .replace()
                        .validate(availability_zone_name)
                        .describe("The zone, which must be the zone of the instance it will be attached to."),
                )
                .attr(
                    Attribute::required("size", Type::Number).validate(volume_size).describe(
                        "Size in GiB. Grows in place; a smaller size replaces the volume (EBS cannot shrink).",
                    ),
                )
                .attr(
                    Attribute::with_default("type", Value::from("gp3")).validate(volume_type).describe(
                        "`gp3` (default), `gp2`, `io1`, `io2`, `st1`, `sc1` or `standard`. Changed in place.",
                    ),
                )
                .attr(
                    Attribute::optional_computed("iops", Type::Number)
                        .validate(positive)
                        .describe("Provisioned IOPS (gp3, io1, io2). AWS's default for the type when left out."),
                )
                .attr(
                    Attribute::optional_computed("throughput", Type::Number)
                        .validate(positive)
                        .describe("Provisioned throughput in MiB/s (gp3 only). AWS's default when left out."),
                )
                .attr(
                    Attribute::with_default("encrypted", Value::Bool(true))
                        .replace()
                        .describe("Encrypt the volume. Default `true`. Changing it replaces the volume."),
                )
                .attr(
                    Attribute::optional_computed("kms_key_id", Type::String)
                        .replace()
                        .describe("The KMS key (ARN) for encryption; the account's EBS default key when left out."),
                )
                .attr(tags)
                .attr(tags_all)
                .nested(timeouts_block(&["create", "update", "delete"])),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        check_volume(ctx, plan, diags).await;
        plan_size_change(plan);
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        if let Some(az) = planned.attr("availability_zone").as_str() {
            check_zone(ctx, az, diags).await;
            if diags.has_errors() {
                return None;
            }
        }
        let all = tags::tags_of(planned.attr("tags_all"));
        let created = ctx
            .ec2
            .create_volume()
            .availability_zone(planned.attr("availability_zone").as_str().unwrap_or_default())
            .set_size(int(planned.attr("size")))
            .volume_type(VolumeType::from(planned.attr("type").as_str().unwrap_or("gp3")))
            .set_iops(int(planned.attr("iops")))
            .set_throughput(int(planned.attr("throughput")))
            .encrypted(planned.attr("encrypted").as_bool().unwrap_or(true))
            .set_kms_key_id(planned.attr("kms_key_id").as_str().map(str::to_string))
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::Volume, &all).map(|t| vec![t]))
            .send()
            .await
            .map_err(AwsError::from_sdk);
        let id = lifecycle::created_id(diags, OBJECT, created, |o| o.volume_id())?;
        let timeout = wait::timeout_for(planned, "create", CREATE_TIMEOUT);
        let rest = async {
            wait::wait_for(&format!("EBS volume {id} to become available"), timeout, || async {
                match find_volume_by_id(ctx, &id).await {
                    Ok(v) if v.state() == Some(&VolumeState::Available) => Ok(Status::Ready(())),
                    Ok(v) if v.state() == Some(&VolumeState::Error) => {
                        Err(AwsError::local(ErrorClass::Other, format!("EBS volume {id} entered state error")))
                    }
                    Ok(v) => Ok(Status::Pending(state_name(&v))),
                    Err(e) if e.is_not_found() => Ok(Status::Pending("not yet visible".into())),
                    Err(e) => Err(e),
                }
            })
            .await?;
            lifecycle::read_after_create(|| read_volume(ctx, &id, planned)).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_volume(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let result = async {
            let changed = |name: &str| {
                let new = planned.attr(name);
                (!new.is_unknown() && !new.is_null() && new != prior.attr(name)).then_some(new)
            };
            modify_volume_and_wait(
                ctx,
                id,
                changed("size").and_then(int),
                changed("type").and_then(Value::as_str),
                changed("iops").and_then(int),
                changed("throughput").and_then(int),
                wait::timeout_for(planned, "update", UPDATE_TIMEOUT),
            )
            .await?;
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_volume(ctx, id, planned).await
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
            wait::timeout_for(state, "delete", DELETE_TIMEOUT),
            || async {
                match ctx.ec2.delete_volume().volume_id(id).send().await.map_err(AwsError::from_sdk) {
                    // Still attached (a detach in progress): retried like a dependency.
                    Err(e) if e.has_code("VolumeInUse") => {
                        Err(AwsError { class: ErrorClass::DependencyViolation, ..e })
                    }
                    other => other.map(|_| ()),
                }
            },
            || async { find_volume_by_id(ctx, id).await.map(|v| Some(state_name(&v))) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::plan::plan_from_schema;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn zone_and_encryption_replace_size_and_type_do_not() {
        let s = EbsVolume.schema();
        for name in ["availability_zone", "encrypted", "kms_key_id"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        for name in ["size", "type", "iops", "throughput", "tags"] {
            assert!(!s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        assert_eq!(s.block.attribute("type").unwrap().default, Some(Value::from("gp3")));
        assert_eq!(s.block.attribute("encrypted").unwrap().default, Some(Value::Bool(true)));
    }

    #[test]
    fn validators_know_types_and_sizes() {
        assert!(volume_type(&"gp3".into()).is_ok());
        assert!(volume_type(&"gp4".into()).is_err());
        assert!(volume_size(&10.into()).is_ok());
        assert!(volume_size(&0.into()).is_err());
        assert!(positive(&(-1).into()).is_err());
    }

    #[test]
    fn shrinking_plans_a_replacement_and_growth_makes_defaults_unknown() {
        let schema = EbsVolume.schema();
        let prior = object([
            ("id", "vol-1".into()),
            ("availability_zone", "us-east-1a".into()),
            ("size", 20.into()),
            ("type", "gp3".into()),
            ("iops", 3000.into()),
            ("encrypted", true.into()),
        ]);
        let config = object([("availability_zone", "us-east-1a".into()), ("size", 10.into())]);
        let mut proposed = prior.clone();
        proposed.attrs_mut().unwrap().insert("size".into(), 10.into());
        let mut plan = plan_from_schema(&schema.block, &prior, &config, proposed);
        plan_size_change(&mut plan);
        assert_eq!(plan.requires_replace, vec![AttrPath::root("size")]);
        assert!(plan.get("iops").is_unknown(), "IOPS the user left out follow the new size");

        let grow = object([("availability_zone", "us-east-1a".into()), ("size", 30.into()), ("iops", 3000.into())]);
        let mut proposed = prior.clone();
        proposed.attrs_mut().unwrap().insert("size".into(), 30.into());
        let mut plan = plan_from_schema(&schema.block, &prior, &grow, proposed);
        plan_size_change(&mut plan);
        assert!(plan.requires_replace.is_empty());
        assert_eq!(plan.get("iops"), &Value::from(3000), "configured IOPS stay as written");
    }
}
