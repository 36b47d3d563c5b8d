//! `tandem_volume_attachment`: an EBS volume attached to an instance at a device name, as the AWS
//! provider's `aws_volume_attachment`. The ID is `VOLUME:INSTANCE:DEVICE`; import takes that, or the AWS
//! provider's `DEVICE:VOLUME:INSTANCE`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{InstanceStateName, VolumeAttachment, VolumeAttachmentState};

use super::ebs_volume::find_volume_by_id;
use super::instance::{find_instance_by_id, wait_instance_state};
use super::{lifecycle, object, report};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::timeouts_block;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct VolumeAttachmentResource;

const OBJECT: &str = "EBS Volume Attachment";

const CREATE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

fn attachment_id(volume: &str, instance: &str, device: &str) -> String {
    format!("{volume}:{instance}:{device}")
}

/// `(volume, instance, device)` from an ID or an import string in either order.
fn parse_id(id: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = id.splitn(3, ':').collect();
    let [a, b, c] = parts.as_slice() else { return None };
    if a.starts_with("vol-") && b.starts_with("i-") && !c.is_empty() {
        return Some((a.to_string(), b.to_string(), c.to_string()));
    }
    // The AWS provider's import format: DEVICE:VOLUME:INSTANCE.
    if b.starts_with("vol-") && c.starts_with("i-") && !a.is_empty() {
        return Some((b.to_string(), c.to_string(), a.to_string()));
    }
    None
}

/// Finder: the attachment of `volume` to `instance` at `device`, or NotFound (also when it is detached).
pub(crate) async fn find_volume_attachment(
    ctx: &AwsContext,
    volume: &str,
    instance: &str,
    device: &str,
) -> Result<VolumeAttachment, AwsError> {
    let v = find_volume_by_id(ctx, volume).await?;
    v.attachments()
        .iter()
        .find(|a| {
            a.instance_id() == Some(instance)
                && a.device() == Some(device)
                && a.state() != Some(&VolumeAttachmentState::Detached)
        })
        .cloned()
        .ok_or_else(|| {
            AwsError::local(ErrorClass::NotFound, format!("volume {volume} is not attached to {instance} at {device}"))
        })
}

fn attachment_state(a: &VolumeAttachment) -> String {
    a.state().map_or("unknown", VolumeAttachmentState::as_str).to_string()
}

async fn read_attachment(ctx: &AwsContext, state: &Value) -> Result<Option<Value>, AwsError> {
    let id = state.attr("id").as_str().unwrap_or_default();
    let Some((volume, instance, device)) = parse_id(id) else {
        return Err(AwsError::local(
            ErrorClass::Other,
            format!("{id:?} is not a volume attachment ID (VOLUME:INSTANCE:DEVICE, or DEVICE:VOLUME:INSTANCE)"),
        ));
    };
    match find_volume_attachment(ctx, &volume, &instance, &device).await {
        Ok(_) => Ok(Some(object([
            ("id", Value::from(attachment_id(&volume, &instance, &device))),
            ("volume_id", Value::from(volume)),
            ("instance_id", Value::from(instance)),
            ("device_name", Value::from(device)),
            // Provider-side settings: kept as the state has them.
            ("force_detach", state.attr("force_detach").clone()),
            ("skip_destroy", state.attr("skip_destroy").clone()),
            ("stop_instance_before_detaching", state.attr("stop_instance_before_detaching").clone()),
        ]))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn device_name(v: &Value) -> Result<(), String> {
    let d = v.as_str().ok_or("expected a string")?;
    let ok = (d.starts_with("/dev/") && d.len() > 5 || d.starts_with("xvd") && d.len() > 3)
        && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '/');
    if ok { Ok(()) } else { Err(format!("{d:?} is not a device name such as /dev/sdf or /dev/xvdf (Windows: xvdf)")) }
}

/// EBS attaches only within a zone. AWS refuses a cross-zone attach; checked here so that the plan says so.
async fn check_same_zone(ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) {
    let (Some(volume), Some(instance)) = (planned.attr("volume_id").as_str(), planned.attr("instance_id").as_str())
    else {
        return;
    };
    let v = match find_volume_by_id(ctx, volume).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => {
            return diags.error_at(
                AttrPath::root("volume_id"),
                "TDM-EC2-171",
                format!("EBS volume {volume} does not exist"),
                format!("No volume with this ID exists in {} for these credentials.", ctx.region),
            );
        }
        Err(e) => return report(diags, "checking", "EBS Volume", Some(volume), &e),
    };
    let i = match find_instance_by_id(ctx, instance).await {
        Ok((i, _)) => i,
        Err(e) if e.is_not_found() => {
            return diags.error_at(
                AttrPath::root("instance_id"),
                "TDM-EC2-171",
                format!("EC2 instance {instance} does not exist"),
                format!("No running or stopped instance with this ID exists in {}.", ctx.region),
            );
        }
        Err(e) => return report(diags, "checking", "EC2 Instance", Some(instance), &e),
    };
    let (vz, iz) = (v.availability_zone(), i.placement().and_then(|p| p.availability_zone()));
    if let (Some(vz), Some(iz)) = (vz, iz)
        && vz != iz
    {
        diags.error_at(
            AttrPath::root("instance_id"),
            "TDM-EC2-170",
            format!("volume {volume} is in {vz} but instance {instance} is in {iz}"),
            "An EBS volume can only be attached to an instance in its own availability zone. Create the volume \
             in the instance's zone (availability_zone = the instance's availability_zone).",
        );
    }
}

#[async_trait]
impl Resource for VolumeAttachmentResource {
    fn type_name(&self) -> &'static str {
        "tandem_volume_attachment"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("Attaches an EBS volume to an instance in the same availability zone.")
                .attr(Attribute::computed("id", Type::String).describe("`VOLUME:INSTANCE:DEVICE`."))
                .attr(
                    Attribute::required("device_name", Type::String)
                        .replace()
                        .validate(device_name)
                        .describe("The device the instance sees, e.g. `/dev/sdf`."),
                )
                .attr(Attribute::required("volume_id", Type::String).replace().describe("The volume to attach."))
                .attr(
                    Attribute::required("instance_id", Type::String)
                        .replace()
                        .describe("The instance to attach to; it must be in the volume's zone."),
                )
                .attr(Attribute::optional("force_detach", Type::Bool).describe(
                    "Force the detach on destroy if a normal detach fails to complete (as after an instance \
                     failure). Data not flushed is lost.",
                ))
                .attr(
                    Attribute::optional("skip_destroy", Type::Bool)
                        .describe("On destroy, only forget the attachment; leave the volume attached."),
                )
                .attr(
                    Attribute::optional("stop_instance_before_detaching", Type::Bool)
                        .describe("Stop the instance (and wait until stopped) before detaching on destroy."),
                )
                .nested(timeouts_block(&["create", "delete"])),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        if plan.is_create() || plan.changes("volume_id") || plan.changes("instance_id") {
            check_same_zone(ctx, &plan.planned, diags).await;
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        check_same_zone(ctx, planned, diags).await;
        if diags.has_errors() {
            return None;
        }
        let volume = planned.attr("volume_id").as_str().unwrap_or_default();
        let instance = planned.attr("instance_id").as_str().unwrap_or_default();
        let device = planned.attr("device_name").as_str().unwrap_or_default();
        let id = attachment_id(volume, instance, device);
        // Already attached here (e.g. adopted after a lost state): just wait for it.
        let existing = find_volume_attachment(ctx, volume, instance, device).await.is_ok();
        if !existing
            && let Err(e) = ctx
                .ec2
                .attach_volume()
                .volume_id(volume)
                .instance_id(instance)
                .device(device)
                .send()
                .await
                .map_err(AwsError::from_sdk)
        {
            report(diags, "creating", OBJECT, Some(&id), &e);
            return None;
        }
        let timeout = wait::timeout_for(planned, "create", CREATE_TIMEOUT);
        let mut state = planned.clone();
        if let Some(attrs) = state.attrs_mut() {
            attrs.insert("id".into(), Value::from(id.as_str()));
        }
        let rest = async {
            wait::wait_for(&format!("volume {volume} to attach to {instance}"), timeout, || async {
                match find_volume_attachment(ctx, volume, instance, device).await {
                    Ok(a) if a.state() == Some(&VolumeAttachmentState::Attached) => Ok(Status::Ready(())),
                    Ok(a) => Ok(Status::Pending(attachment_state(&a))),
                    Err(e) if e.is_not_found() => Ok(Status::Pending("not yet attaching".into())),
                    Err(e) => Err(e),
                }
            })
            .await?;
            read_attachment(ctx, &state).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        lifecycle::read_or_remove(diags, OBJECT, state, read_attachment(ctx, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        // Only the provider-side flags can change in place: nothing to do in AWS.
        let mut state = prior.clone();
        if let Some(attrs) = state.attrs_mut() {
            for name in ["force_detach", "skip_destroy", "stop_instance_before_detaching"] {
                attrs.insert(name.into(), planned.attr(name).clone());
            }
        }
        let result = read_attachment(ctx, &state).await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        if state.attr("skip_destroy").as_bool() == Some(true) {
            return;
        }
        let Some((volume, instance, device)) = parse_id(id) else {
            return report(
                diags,
                "deleting",
                OBJECT,
                Some(id),
                &AwsError::local(ErrorClass::Other, "not a volume attachment ID"),
            );
        };
        let timeout = wait::timeout_for(state, "delete", DELETE_TIMEOUT);
        if state.attr("stop_instance_before_detaching").as_bool() == Some(true) {
            let stopped = async {
                ctx.ec2.stop_instances().instance_ids(&instance).send().await.map_err(AwsError::from_sdk)?;
                wait_instance_state(ctx, &instance, InstanceStateName::Stopped, timeout).await
            }
            .await;
            match stopped {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return report(diags, "stopping the instance of", OBJECT, Some(id), &e),
            }
        }
        let force = state.attr("force_detach").as_bool() == Some(true);
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            timeout,
            // VolumeId + InstanceId + Device, as the AWS provider sends and as AWS documents for force detach.
            || async {
                match ctx
                    .ec2
                    .detach_volume()
                    .volume_id(&volume)
                    .instance_id(&instance)
                    .device(&device)
                    .force(force)
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)
                {
                    // Already detached: the volume is `available`.
                    Err(e) if e.has_code("IncorrectState") => Ok(()),
                    other => other.map(|_| ()),
                }
            },
            || async {
                find_volume_attachment(ctx, &volume, &instance, &device).await.map(|a| Some(attachment_state(&a)))
            },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_in_both_orders() {
        let ours = parse_id("vol-1:i-2:/dev/sdf").unwrap();
        assert_eq!(ours, ("vol-1".into(), "i-2".into(), "/dev/sdf".into()));
        assert_eq!(parse_id("/dev/sdf:vol-1:i-2").unwrap(), ours);
        assert!(parse_id("vai-123").is_none());
        assert_eq!(attachment_id("vol-1", "i-2", "/dev/sdf"), "vol-1:i-2:/dev/sdf");
    }

    #[test]
    fn device_names_look_like_devices() {
        assert!(device_name(&"/dev/sdf".into()).is_ok());
        assert!(device_name(&"xvdf".into()).is_ok());
        assert!(device_name(&"sdf".into()).is_err());
        assert!(device_name(&"/dev/".into()).is_err());
    }

    #[test]
    fn every_aws_attribute_forces_replacement() {
        use crate::framework::schema::PlanModifier;
        let s = VolumeAttachmentResource.schema();
        for name in ["device_name", "volume_id", "instance_id"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        assert!(!s.block.attribute("force_detach").unwrap().has(PlanModifier::RequiresReplace));
    }
}
