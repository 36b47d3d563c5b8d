//! `tandem_instance`: an EC2 instance (a cluster node), as the AWS provider's `aws_instance` for the
//! attributes a tandem node needs: fixed private IP, security groups, instance profile, user data, source/dest
//! check (off for VIP control), IMDSv2 settings and an encrypted gp3 root volume.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, BlockDeviceMapping, EbsBlockDevice, EbsInstanceBlockDeviceSpecification,
    Filter, HttpTokensState, IamInstanceProfileAssociationState, IamInstanceProfileSpecification,
    InstanceAttributeName, InstanceBlockDeviceMappingSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceMetadataOptionsState, InstanceStateName, InstanceType, ResourceType,
    SecureBlobAttributeValue, VolumeType,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tandem_runtime::net::{parse_ipv4, parse_ipv4_cidr};

use super::ami::find_image_by_id;
use super::ebs_volume::{find_volume_by_id, modify_volume_and_wait, volume_size, volume_type};
use super::subnet::find_subnet_by_id;
use super::{lifecycle, object, opt_str, report};
use crate::aws::tags::{self, Tags};
use crate::aws::wait::{self, Backoff, Status};
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::{Nesting, tags_attributes, timeouts_block};
use crate::framework::validators::ipv4_address;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct Instance;

const OBJECT: &str = "EC2 Instance";

const CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// AWS's limit on user data, before base64 encoding.
const USER_DATA_MAX: usize = 16 * 1024;

const METADATA_ATTRS: [&str; 3] = ["http_tokens", "http_endpoint", "http_put_response_hop_limit"];
const ROOT_ATTRS: [&str; 5] = ["volume_size", "volume_type", "encrypted", "delete_on_termination", "volume_id"];

/// Any instance as DescribeInstances reports it, terminated ones included, with the reservation's owner.
async fn describe_instance(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<(aws_sdk_ec2::types::Instance, Option<String>)>, AwsError> {
    let out = match ctx.ec2.describe_instances().instance_ids(id).send().await.map_err(AwsError::from_sdk) {
        Ok(out) => out,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(out.reservations().iter().find_map(|r| {
        r.instances()
            .iter()
            .find(|i| i.instance_id() == Some(id))
            .map(|i| (i.clone(), r.owner_id().map(str::to_string)))
    }))
}

/// Finder: the instance and its owner account, or NotFound (also for a terminated instance, which stays
/// visible for a while after it is gone).
pub(crate) async fn find_instance_by_id(
    ctx: &AwsContext,
    id: &str,
) -> Result<(aws_sdk_ec2::types::Instance, Option<String>), AwsError> {
    match describe_instance(ctx, id).await? {
        Some((i, owner)) if state_of(&i) != Some(&InstanceStateName::Terminated) => Ok((i, owner)),
        _ => Err(AwsError::local(ErrorClass::NotFound, format!("EC2 instance {id} not found"))),
    }
}

fn state_of(i: &aws_sdk_ec2::types::Instance) -> Option<&InstanceStateName> {
    i.state().and_then(|s| s.name())
}

fn state_name(i: &aws_sdk_ec2::types::Instance) -> String {
    state_of(i).map_or("unknown", InstanceStateName::as_str).to_string()
}

/// Waits until the instance is in `target`. Reaching a state it cannot leave towards `target` (terminated
/// while starting) fails at once with AWS's reason.
pub(crate) async fn wait_instance_state(
    ctx: &AwsContext,
    id: &str,
    target: InstanceStateName,
    timeout: Duration,
) -> Result<(), AwsError> {
    wait::wait_for(&format!("EC2 instance {id} to be {}", target.as_str()), timeout, || async {
        match describe_instance(ctx, id).await? {
            Some((i, _)) if state_of(&i) == Some(&target) => Ok(Status::Ready(())),
            Some((i, _))
                if matches!(state_of(&i), Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown))
                    && target != InstanceStateName::Terminated =>
            {
                let reason = i.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                Err(AwsError::local(
                    ErrorClass::Other,
                    format!("EC2 instance {id} is {} instead of {}: {reason}", state_name(&i), target.as_str()),
                ))
            }
            Some((i, _)) => Ok(Status::Pending(state_name(&i))),
            // Eventual consistency right after RunInstances.
            None => Ok(Status::Pending("not yet visible".into())),
        }
    })
    .await
}

/// The primary network interface (device index 0).
fn primary_eni(i: &aws_sdk_ec2::types::Instance) -> Option<&aws_sdk_ec2::types::InstanceNetworkInterface> {
    i.network_interfaces().iter().find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
}

/// `arn:…:instance-profile/path/NAME` → `NAME`.
fn profile_name_from_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn decode_user_data(encoded: &str) -> String {
    match BASE64.decode(encoded.trim()) {
        Ok(bytes) => String::from_utf8(bytes).unwrap_or_else(|_| encoded.to_string()),
        Err(_) => encoded.to_string(),
    }
}

async fn read_user_data(ctx: &AwsContext, id: &str) -> Result<Option<String>, AwsError> {
    let out = ctx
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(out.user_data().and_then(|v| v.value()).filter(|v| !v.is_empty()).map(decode_user_data))
}

fn int(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|n| i32::try_from(n).ok())
}

/// The configured block (first element) of a list block, if the configuration has one.
fn block_of<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.attr(name).elements().first()
}

/// The nested block value with every attribute null: what import starts from, so that read fills the
/// blocks from AWS.
fn placeholder(names: &[&str]) -> Value {
    Value::List(vec![Value::object(names.iter().map(|n| (*n, Value::Null)))])
}

async fn read_instance(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    let (i, owner) = match find_instance_by_id(ctx, id).await {
        Ok(found) => found,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let user_data = read_user_data(ctx, id).await?;
    let eni = primary_eni(&i);
    let all: Tags = tags::from_ec2(i.tags());

    let metadata = if prior.attr("metadata_options").elements().is_empty() {
        Value::List(Vec::new())
    } else {
        let m = i.metadata_options();
        Value::List(vec![Value::object([
            ("http_tokens", opt_str(m.and_then(|m| m.http_tokens()).map(HttpTokensState::as_str))),
            ("http_endpoint", opt_str(m.and_then(|m| m.http_endpoint()).map(InstanceMetadataEndpointState::as_str))),
            (
                "http_put_response_hop_limit",
                m.and_then(|m| m.http_put_response_hop_limit()).map_or(Value::Null, Value::from),
            ),
        ])])
    };
    let root = if prior.attr("root_block_device").elements().is_empty() {
        Value::List(Vec::new())
    } else {
        let mapping = i
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name().is_some() && m.device_name() == i.root_device_name())
            .and_then(|m| m.ebs());
        match mapping.and_then(|e| e.volume_id()) {
            Some(volume_id) => {
                let v = find_volume_by_id(ctx, volume_id).await?;
                Value::List(vec![Value::object([
                    ("volume_id", Value::from(volume_id)),
                    ("volume_size", v.size().map_or(Value::Null, Value::from)),
                    ("volume_type", opt_str(v.volume_type().map(VolumeType::as_str))),
                    ("encrypted", Value::Bool(v.encrypted().unwrap_or(false))),
                    (
                        "delete_on_termination",
                        Value::Bool(mapping.and_then(|e| e.delete_on_termination()).unwrap_or(false)),
                    ),
                ])])
            }
            // Instance-store root: nothing EBS to describe.
            None => Value::List(Vec::new()),
        }
    };

    let arn = ctx.arn("ec2", owner.as_deref(), &format!("instance/{id}"));
    let profile = current_profile_association(ctx, id).await?.map(|(_, name, _)| name);
    let groups: Vec<Value> = i.security_groups().iter().filter_map(|g| g.group_id()).map(Value::from).collect();
    Ok(Some(object([
        ("id", Value::from(id)),
        ("arn", Value::from(arn)),
        ("ami", opt_str(i.image_id())),
        ("instance_type", opt_str(i.instance_type().map(InstanceType::as_str))),
        ("subnet_id", opt_str(i.subnet_id())),
        ("private_ip", opt_str(i.private_ip_address())),
        ("vpc_security_group_ids", Value::Set(groups)),
        ("iam_instance_profile", opt_str(profile.as_deref())),
        ("user_data", opt_str(user_data.as_deref())),
        (
            "user_data_replace_on_change",
            Value::Bool(prior.attr("user_data_replace_on_change").as_bool().unwrap_or(false)),
        ),
        ("key_name", opt_str(i.key_name())),
        (
            "source_dest_check",
            Value::Bool(eni.and_then(|n| n.source_dest_check()).or(i.source_dest_check()).unwrap_or(true)),
        ),
        ("metadata_options", metadata),
        ("root_block_device", root),
        ("availability_zone", opt_str(i.placement().and_then(|p| p.availability_zone()))),
        ("primary_network_interface_id", opt_str(eni.and_then(|n| n.network_interface_id()))),
        ("public_ip", opt_str(i.public_ip_address())),
        ("private_dns", opt_str(i.private_dns_name())),
        ("instance_state", Value::from(state_name(&i))),
        ("tags", tags::tags_from_aws(&all, &ctx.default_tags, prior.attr("tags"))),
        ("tags_all", tags::to_value(&all)),
    ])))
}

// ---- validators -------------------------------------------------------------------------------------------

/// `family.size`, e.g. `t3.micro`, `m7g.2xlarge`, `u-6tb1.metal`.
fn instance_type(v: &Value) -> Result<(), String> {
    let t = v.as_str().ok_or("expected a string")?;
    let ok = t.split_once('.').is_some_and(|(family, size)| {
        family.starts_with(|c: char| c.is_ascii_lowercase())
            && family.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !size.is_empty()
            && size.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    if ok { Ok(()) } else { Err(format!("{t:?} is not an instance type such as t3.micro or m7g.large")) }
}

fn ami_id(v: &Value) -> Result<(), String> {
    let t = v.as_str().ok_or("expected a string")?;
    match t.strip_prefix("ami-") {
        Some(hex) if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(()),
        _ => Err(format!("{t:?} is not an AMI ID such as ami-0123456789abcdef0")),
    }
}

fn user_data_size(v: &Value) -> Result<(), String> {
    let t = v.as_str().ok_or("expected a string")?;
    if t.len() > USER_DATA_MAX {
        Err(format!("user data is {} bytes; AWS allows at most {USER_DATA_MAX} (16 KiB) before base64", t.len()))
    } else {
        Ok(())
    }
}

fn http_tokens(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some("required" | "optional") => Ok(()),
        other => Err(format!("{other:?} is neither required (IMDSv2 only) nor optional")),
    }
}

fn http_endpoint(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some("enabled" | "disabled") => Ok(()),
        other => Err(format!("{other:?} is neither enabled nor disabled")),
    }
}

fn hop_limit(v: &Value) -> Result<(), String> {
    match v.as_i64() {
        Some(n) if (1..=64).contains(&n) => Ok(()),
        _ => Err("the hop limit is a whole number from 1 to 64".into()),
    }
}

// ---- plan-time checks -------------------------------------------------------------------------------------

/// Why `ip` cannot be the fixed address of an instance in `cidr`, if it cannot.
fn private_ip_problem(ip: &str, cidr: &str) -> Option<(&'static str, String, String)> {
    let (Ok(addr), Ok(net)) = (parse_ipv4(ip), parse_ipv4_cidr(cidr)) else { return None };
    if !net.contains(&addr) {
        return Some((
            "TDM-EC2-155",
            format!("private_ip {ip} is outside the subnet's CIDR {cidr}"),
            format!("Choose an address inside {cidr}, from {} to {}.", nth(&net, 4), nth_from_end(&net, 1)),
        ));
    }
    let offset = u32::from(addr) - u32::from(net.network());
    let last = u32::from(net.broadcast()) - u32::from(net.network());
    if offset < 4 || offset == last {
        let role = match offset {
            0 => "the network address",
            1 => "the VPC router",
            2 => "the Amazon DNS server",
            3 => "reserved by AWS for future use",
            _ => "the network broadcast address",
        };
        return Some((
            "TDM-EC2-156",
            format!("private_ip {ip} is reserved by AWS in subnet {cidr} ({role})"),
            format!(
                "AWS reserves the first four addresses and the last one of every subnet. Use {} to {}.",
                nth(&net, 4),
                nth_from_end(&net, 1)
            ),
        ));
    }
    None
}

fn nth(net: &tandem_runtime::net::Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(net.network()).saturating_add(n))
}

fn nth_from_end(net: &tandem_runtime::net::Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(net.broadcast()).saturating_sub(n))
}

/// Subnet exists, fixed IP inside it and not reserved, AMI exists. Unknown values are skipped; create runs
/// the checks again with everything known.
async fn check_placement(ctx: &AwsContext, planned: &Value, check_ami: bool, diags: &mut Diagnostics) {
    if let Some(subnet_id) = planned.attr("subnet_id").as_str() {
        match find_subnet_by_id(ctx, subnet_id).await {
            Ok(s) => {
                if let (Some(ip), Some(cidr)) = (planned.attr("private_ip").as_str(), s.cidr_block())
                    && let Some((code, summary, detail)) = private_ip_problem(ip, cidr)
                {
                    diags.error_at(AttrPath::root("private_ip"), code, summary, detail);
                }
            }
            Err(e) if e.is_not_found() => diags.error_at(
                AttrPath::root("subnet_id"),
                "TDM-EC2-157",
                format!("subnet {subnet_id} does not exist"),
                format!("No subnet with this ID exists in {} for these credentials.", ctx.region),
            ),
            Err(e) => report(diags, "checking", "EC2 Subnet", Some(subnet_id), &e),
        }
    }
    if check_ami && let Some(ami) = planned.attr("ami").as_str() {
        match find_image_by_id(ctx, ami).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => diags.error_at(
                AttrPath::root("ami"),
                "TDM-EC2-159",
                format!("AMI {ami} does not exist in {}", ctx.region),
                "AMI IDs differ per region; look the image up with the tandem_ami data source, or check that \
                 the image is shared with this account.",
            ),
            Err(e) => report(diags, "checking", "EC2 AMI", Some(ami), &e),
        }
    }
}

/// True when the planned change to `user_data` is made in place (stop, modify, start).
fn user_data_in_place(plan: &Plan<'_>) -> bool {
    !plan.is_create() && plan.changes("user_data") && plan.get("user_data_replace_on_change").as_bool() != Some(true)
}

fn push_replace(plan: &mut Plan<'_>, path: AttrPath) {
    if !plan.requires_replace.contains(&path) {
        plan.requires_replace.push(path);
    }
}

/// The resource's own plan rules that need no AWS call.
fn plan_rules(plan: &mut Plan<'_>) {
    if plan.is_create() {
        return;
    }
    if plan.changes("user_data") && plan.get("user_data_replace_on_change").as_bool() == Some(true) {
        push_replace(plan, AttrPath::root("user_data"));
    }
    // The root volume's encryption is fixed at launch; its size can only grow.
    let mut replace = Vec::new();
    if let (Some(old), Some(new)) =
        (block_of(plan.prior, "root_block_device"), block_of(&plan.planned, "root_block_device"))
    {
        let path = || AttrPath::root("root_block_device").index(0);
        let (old_enc, new_enc) = (old.attr("encrypted").as_bool(), new.attr("encrypted").as_bool());
        if old_enc.is_some() && new_enc.is_some() && old_enc != new_enc {
            replace.push(path().attr("encrypted"));
        }
        if let (Some(o), Some(n)) = (old.attr("volume_size").as_i64(), new.attr("volume_size").as_i64())
            && n < o
        {
            replace.push(path().attr("volume_size"));
        }
    }
    for path in replace {
        push_replace(plan, path);
    }
    // A stop/start gives the instance a new public address.
    if plan.requires_replace.is_empty() && (plan.changes("instance_type") || user_data_in_place(plan)) {
        plan.set("public_ip", Value::Unknown);
        plan.set("instance_state", Value::Unknown);
    }
}

// ---- create -----------------------------------------------------------------------------------------------

fn client_token() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("tandem-{nanos:x}-{}", std::process::id())
}

fn metadata_request(block: Option<&Value>) -> InstanceMetadataOptionsRequest {
    let get = |name: &str| block.map_or(&Value::Null, |b| b.attr(name));
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::from(get("http_tokens").as_str().unwrap_or("required")))
        .http_endpoint(InstanceMetadataEndpointState::from(get("http_endpoint").as_str().unwrap_or("enabled")))
        .http_put_response_hop_limit(int(get("http_put_response_hop_limit")).unwrap_or(2))
        .build()
}

/// The AMI's root device and the size of its root snapshot.
fn image_root(image: &aws_sdk_ec2::types::Image) -> Option<(String, Option<i32>)> {
    let device = image.root_device_name()?;
    let size = image
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(device))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_size());
    Some((device.to_string(), size))
}

/// The root volume as launched: the configured values, else the defaults (encrypted gp3, deleted with the
/// instance) and the AMI's own snapshot size, stated explicitly.
fn root_mapping(device: &str, image_size: Option<i32>, block: Option<&Value>) -> BlockDeviceMapping {
    let get = |name: &str| block.map_or(&Value::Null, |b| b.attr(name));
    let ebs = EbsBlockDevice::builder()
        .set_volume_size(int(get("volume_size")).or(image_size))
        .volume_type(VolumeType::from(get("volume_type").as_str().unwrap_or("gp3")))
        .encrypted(get("encrypted").as_bool().unwrap_or(true))
        .delete_on_termination(get("delete_on_termination").as_bool().unwrap_or(true))
        .build();
    BlockDeviceMapping::builder().device_name(device).ebs(ebs).build()
}

/// RunInstances errors that name an attribute the user has to change; the rest are reported as they come.
fn report_launch_error(diags: &mut Diagnostics, planned: &Value, err: &AwsError) {
    let code = err.code.as_deref().unwrap_or_default();
    let text = err.message.to_ascii_lowercase();
    let get = |name: &str| planned.attr(name).as_str().unwrap_or_default().to_string();
    let (attr, tdm, summary, detail) = if code.starts_with("InvalidInstanceType")
        || (code == "InvalidParameterValue" && text.contains("instancetype"))
        || (code == "Unsupported" && text.contains("instance type"))
    {
        (
            "instance_type",
            "TDM-EC2-158",
            format!("instance type {} is not available: {err}", get("instance_type")),
            "Check the spelling and that the type is offered in this region and zone (aws ec2 \
             describe-instance-type-offerings --location-type availability-zone).",
        )
    } else if code.starts_with("InvalidAMIID") {
        ("ami", "TDM-EC2-159", format!("AMI {} cannot be launched: {err}", get("ami")), "")
    } else if code.starts_with("InvalidSubnetID") || code.starts_with("InvalidSubnet") {
        ("subnet_id", "TDM-EC2-157", format!("subnet {} cannot be used: {err}", get("subnet_id")), "")
    } else if code == "InvalidIPAddress.InUse" {
        (
            "private_ip",
            "TDM-EC2-160",
            format!("private_ip {} is already in use: {err}", get("private_ip")),
            "Another network interface in the subnet has this address; pick a free one.",
        )
    } else if code == "InvalidParameterValue" && text.contains("iaminstanceprofile") {
        (
            "iam_instance_profile",
            "TDM-EC2-161",
            format!("IAM instance profile {} cannot be used: {err}", get("iam_instance_profile")),
            "The instance profile does not exist (or is not visible to EC2 yet after 2 minutes). Give the \
             profile's name, not the role's.",
        )
    } else {
        return report(diags, "creating", OBJECT, None, err);
    };
    diags.error_at(AttrPath::root(attr), tdm, summary, detail);
}

fn is_profile_propagation(err: &AwsError) -> bool {
    err.has_code("InvalidParameterValue") && err.message.to_ascii_lowercase().contains("iaminstanceprofile")
}

async fn run_instance(
    ctx: &AwsContext,
    planned: &Value,
    root: Option<&(String, Option<i32>)>,
) -> Result<String, AwsError> {
    let all = tags::tags_of(planned.attr("tags_all"));
    let groups: Option<Vec<String>> = match planned.attr("vpc_security_group_ids") {
        Value::Set(items) | Value::List(items) => {
            Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        }
        _ => None,
    };
    let token = client_token();
    let call = || {
        ctx.ec2
            .run_instances()
            .image_id(planned.attr("ami").as_str().unwrap_or_default())
            .instance_type(InstanceType::from(planned.attr("instance_type").as_str().unwrap_or_default()))
            .min_count(1)
            .max_count(1)
            .client_token(&token)
            .subnet_id(planned.attr("subnet_id").as_str().unwrap_or_default())
            .set_private_ip_address(planned.attr("private_ip").as_str().map(str::to_string))
            .set_security_group_ids(groups.clone())
            .set_iam_instance_profile(
                planned
                    .attr("iam_instance_profile")
                    .as_str()
                    .map(|name| IamInstanceProfileSpecification::builder().name(name).build()),
            )
            .set_user_data(planned.attr("user_data").as_str().map(|t| BASE64.encode(t.as_bytes())))
            .set_key_name(planned.attr("key_name").as_str().map(str::to_string))
            .metadata_options(metadata_request(block_of(planned, "metadata_options")))
            .set_block_device_mappings(
                root.map(|(d, size)| vec![root_mapping(d, *size, block_of(planned, "root_block_device"))]),
            )
            .set_tag_specifications(tags::ec2_tag_spec(ResourceType::Instance, &all).map(|t| vec![t]))
    };
    // An instance profile made in the same apply takes a while to be usable by EC2 (as in the AWS provider).
    let deadline = tokio::time::Instant::now() + wait::PROPAGATION_TIMEOUT;
    let mut backoff = Backoff::default();
    loop {
        match call().send().await.map_err(AwsError::from_sdk) {
            Ok(out) => {
                return out
                    .instances()
                    .first()
                    .and_then(|i| i.instance_id())
                    .map(str::to_string)
                    .ok_or_else(|| AwsError::local(ErrorClass::Other, "AWS returned no instance ID"));
            }
            Err(e) if is_profile_propagation(&e) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "instance profile not yet usable, retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn set_source_dest_check(ctx: &AwsContext, id: &str, on: bool) -> Result<(), AwsError> {
    let (i, _) = find_instance_by_id(ctx, id).await?;
    let eni = primary_eni(&i).and_then(|n| n.network_interface_id()).ok_or_else(|| {
        AwsError::local(ErrorClass::Other, format!("EC2 instance {id} has no primary network interface"))
    })?;
    ctx.ec2
        .modify_network_interface_attribute()
        .network_interface_id(eni)
        .source_dest_check(AttributeBooleanValue::builder().value(on).build())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(())
}

// ---- update -----------------------------------------------------------------------------------------------

/// Changes AWS makes only to a stopped instance: stop it, modify, and start it again if it was running.
async fn modify_stopped(
    ctx: &AwsContext,
    id: &str,
    prior: &Value,
    planned: &Value,
    timeout: Duration,
) -> Result<(), AwsError> {
    let new_type = planned.attr("instance_type").as_str().filter(|t| Some(*t) != prior.attr("instance_type").as_str());
    let user_data_changed = planned.attr("user_data") != prior.attr("user_data");
    if new_type.is_none() && !user_data_changed {
        return Ok(());
    }
    let (i, _) = find_instance_by_id(ctx, id).await?;
    let was_running = matches!(state_of(&i), Some(InstanceStateName::Running | InstanceStateName::Pending));
    if state_of(&i) != Some(&InstanceStateName::Stopped) {
        ctx.ec2.stop_instances().instance_ids(id).send().await.map_err(AwsError::from_sdk)?;
        wait_instance_state(ctx, id, InstanceStateName::Stopped, timeout).await?;
    }
    if let Some(t) = new_type {
        ctx.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .instance_type(AttributeValue::builder().value(t).build())
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
    }
    if user_data_changed {
        let text = planned.attr("user_data").as_str().unwrap_or_default();
        ctx.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .user_data(user_data_blob(text))
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
    }
    if was_running {
        ctx.ec2.start_instances().instance_ids(id).send().await.map_err(AwsError::from_sdk)?;
        wait_instance_state(ctx, id, InstanceStateName::Running, timeout).await?;
    }
    Ok(())
}

/// ModifyInstanceAttribute's user data: the text itself, which the SDK base64-encodes on the wire (as the AWS
/// provider does: "decode so the AWS SDK doesn't double encode"). RunInstances instead takes base64 text.
fn user_data_blob(text: &str) -> SecureBlobAttributeValue {
    SecureBlobAttributeValue::builder().value(Blob::new(text.as_bytes())).build()
}

async fn update_security_groups(ctx: &AwsContext, id: &str, prior: &Value, planned: &Value) -> Result<(), AwsError> {
    let new = planned.attr("vpc_security_group_ids");
    if new == prior.attr("vpc_security_group_ids") || !new.is_wholly_known() || new.is_null() {
        return Ok(());
    }
    let groups: Vec<String> = new.elements().iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    ctx.ec2
        .modify_instance_attribute()
        .instance_id(id)
        .set_groups(Some(groups))
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(())
}

/// The instance's profile association (ID, profile name, state), from DescribeIamInstanceProfileAssociations:
/// the authority on which profile an instance has, and the only place that shows a replacement in progress.
async fn current_profile_association(
    ctx: &AwsContext,
    id: &str,
) -> Result<Option<(String, String, IamInstanceProfileAssociationState)>, AwsError> {
    let out = ctx
        .ec2
        .describe_iam_instance_profile_associations()
        .filters(Filter::builder().name("instance-id").values(id).build())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    Ok(out.iam_instance_profile_associations().iter().find_map(|a| {
        let state = a.state()?;
        if matches!(state, IamInstanceProfileAssociationState::Disassociated) || a.instance_id() != Some(id) {
            return None;
        }
        let name = a.iam_instance_profile().and_then(|p| p.arn()).map(profile_name_from_arn)?;
        Some((a.association_id()?.to_string(), name.to_string(), state.clone()))
    }))
}

async fn update_instance_profile(
    ctx: &AwsContext,
    id: &str,
    prior: &Value,
    planned: &Value,
    timeout: Duration,
) -> Result<(), AwsError> {
    let (old, new) = (prior.attr("iam_instance_profile").as_str(), planned.attr("iam_instance_profile").as_str());
    if old == new {
        return Ok(());
    }
    let association = current_profile_association(ctx, id).await?.map(|(assoc, _, _)| assoc);
    match (association, new) {
        (Some(assoc), None) => {
            ctx.ec2
                .disassociate_iam_instance_profile()
                .association_id(assoc)
                .send()
                .await
                .map_err(AwsError::from_sdk)?;
        }
        (assoc, Some(name)) => {
            let spec = IamInstanceProfileSpecification::builder().name(name).build();
            // A profile made in the same apply may not be usable by EC2 yet.
            let deadline = tokio::time::Instant::now() + wait::PROPAGATION_TIMEOUT;
            let mut backoff = Backoff::default();
            loop {
                let result = match &assoc {
                    Some(a) => ctx
                        .ec2
                        .replace_iam_instance_profile_association()
                        .association_id(a)
                        .iam_instance_profile(spec.clone())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(AwsError::from_sdk),
                    None => ctx
                        .ec2
                        .associate_iam_instance_profile()
                        .instance_id(id)
                        .iam_instance_profile(spec.clone())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(AwsError::from_sdk),
                };
                match result {
                    Err(e) if is_profile_propagation(&e) && tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    other => break other?,
                }
            }
        }
        (None, None) => return Ok(()),
    }
    wait::wait_for(&format!("the instance profile of EC2 instance {id}"), timeout, || async {
        Ok(match (current_profile_association(ctx, id).await?, new) {
            (None, None) => Status::Ready(()),
            (Some((_, name, IamInstanceProfileAssociationState::Associated)), Some(want)) if name == want => {
                Status::Ready(())
            }
            (Some((_, name, state)), _) => Status::Pending(format!("{name} {}", state.as_str())),
            (None, Some(_)) => Status::Pending("no profile".into()),
        })
    })
    .await
}

async fn update_metadata_options(
    ctx: &AwsContext,
    id: &str,
    planned: &Value,
    timeout: Duration,
) -> Result<(), AwsError> {
    let Some(block) = block_of(planned, "metadata_options") else { return Ok(()) };
    let (i, _) = find_instance_by_id(ctx, id).await?;
    let m = i.metadata_options();
    let want = metadata_request(Some(block));
    let same = m.and_then(|m| m.http_tokens()) == want.http_tokens()
        && m.and_then(|m| m.http_endpoint()) == want.http_endpoint()
        && m.and_then(|m| m.http_put_response_hop_limit()) == want.http_put_response_hop_limit();
    if same {
        return Ok(());
    }
    ctx.ec2
        .modify_instance_metadata_options()
        .instance_id(id)
        .set_http_tokens(want.http_tokens().cloned())
        .set_http_endpoint(want.http_endpoint().cloned())
        .set_http_put_response_hop_limit(want.http_put_response_hop_limit())
        .send()
        .await
        .map_err(AwsError::from_sdk)?;
    wait::wait_for(&format!("the metadata options of EC2 instance {id} to apply"), timeout, || async {
        let (i, _) = find_instance_by_id(ctx, id).await?;
        Ok(match i.metadata_options().and_then(|m| m.state()) {
            Some(InstanceMetadataOptionsState::Pending) => Status::Pending("pending".into()),
            _ => Status::Ready(()),
        })
    })
    .await
}

async fn update_root_block_device(
    ctx: &AwsContext,
    id: &str,
    planned: &Value,
    timeout: Duration,
) -> Result<(), AwsError> {
    let Some(block) = block_of(planned, "root_block_device") else { return Ok(()) };
    let (i, _) = find_instance_by_id(ctx, id).await?;
    let Some(device) = i.root_device_name() else { return Ok(()) };
    let Some(ebs) = i.block_device_mappings().iter().find(|m| m.device_name() == Some(device)).and_then(|m| m.ebs())
    else {
        return Ok(());
    };
    let Some(volume_id) = ebs.volume_id() else { return Ok(()) };
    let v = find_volume_by_id(ctx, volume_id).await?;
    if let Some(enc) = block.attr("encrypted").as_bool()
        && Some(enc) != v.encrypted()
    {
        return Err(AwsError::local(
            ErrorClass::Other,
            format!(
                "the encryption of root volume {volume_id} cannot change in place; replace the instance \
                 (terraform apply -replace=…) to get a root volume with encrypted = {enc}"
            ),
        ));
    }
    let size = int(block.attr("volume_size")).filter(|s| Some(*s) != v.size());
    let kind = block.attr("volume_type").as_str().filter(|t| Some(*t) != v.volume_type().map(VolumeType::as_str));
    modify_volume_and_wait(ctx, volume_id, size, kind, None, None, timeout).await?;
    if let Some(keep) = block.attr("delete_on_termination").as_bool()
        && Some(keep) != ebs.delete_on_termination()
    {
        ctx.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .block_device_mappings(
                InstanceBlockDeviceMappingSpecification::builder()
                    .device_name(device)
                    .ebs(EbsInstanceBlockDeviceSpecification::builder().delete_on_termination(keep).build())
                    .build(),
            )
            .send()
            .await
            .map_err(AwsError::from_sdk)?;
    }
    Ok(())
}

// ---- the resource -----------------------------------------------------------------------------------------

fn metadata_block() -> Block {
    Block::new("Instance metadata service (IMDS) settings. Changed in place.")
        .attr(
            Attribute::with_default("http_tokens", Value::from("required"))
                .validate(http_tokens)
                .describe("`required` (IMDSv2 only, the default) or `optional`."),
        )
        .attr(
            Attribute::with_default("http_endpoint", Value::from("enabled"))
                .validate(http_endpoint)
                .describe("`enabled` (default) or `disabled`."),
        )
        .attr(
            Attribute::with_default("http_put_response_hop_limit", Value::from(2))
                .validate(hop_limit)
                .describe("Hops the IMDSv2 token may travel, 1-64. Default 2 (containers on the node)."),
        )
}

fn root_block() -> Block {
    Block::new("The root EBS volume.")
        .attr(
            Attribute::optional_computed("volume_size", Type::Number)
                .validate(volume_size)
                .describe("Size in GiB; the AMI's size when left out. Grows in place; smaller replaces the instance."),
        )
        .attr(
            Attribute::with_default("volume_type", Value::from("gp3"))
                .validate(volume_type)
                .describe("Volume type, default `gp3`. Changed in place."),
        )
        .attr(
            Attribute::with_default("encrypted", Value::Bool(true))
                .describe("Encrypt the root volume (default `true`). Changing it replaces the instance."),
        )
        .attr(
            Attribute::with_default("delete_on_termination", Value::Bool(true))
                .describe("Delete the volume with the instance (default `true`). Changed in place."),
        )
        .attr(Attribute::computed("volume_id", Type::String).describe("The root volume's ID."))
}

#[async_trait]
impl Resource for Instance {
    fn type_name(&self) -> &'static str {
        "tandem_instance"
    }

    fn schema(&self) -> Schema {
        let [tags, tags_all] = tags_attributes();
        Schema::new(
            0,
            Block::new("An EC2 instance: a node of a tandem cluster.")
                .attr(Attribute::computed("id", Type::String).describe("The instance ID, e.g. `i-0123…`."))
                .attr(Attribute::computed("arn", Type::String).describe("The instance's ARN."))
                .attr(
                    Attribute::required("ami", Type::String)
                        .replace()
                        .validate(ami_id)
                        .describe("The image to launch. Changing it replaces the instance."),
                )
                .attr(
                    Attribute::required("instance_type", Type::String)
                        .validate(instance_type)
                        .describe("E.g. `t3.micro`. Changed in place by stopping and starting the instance."),
                )
                .attr(
                    Attribute::required("subnet_id", Type::String)
                        .replace()
                        .describe("The subnet (and so the zone) of the instance."),
                )
                .attr(
                    Attribute::optional_computed("private_ip", Type::String).replace().validate(ipv4_address).describe(
                        "A fixed primary private IPv4 address inside the subnet; AWS picks one when left out.",
                    ),
                )
                .attr(
                    Attribute::optional_computed("vpc_security_group_ids", Type::Set(Box::new(Type::String)))
                        .describe("Security groups of the primary interface; the VPC's default group when left out."),
                )
                .attr(
                    Attribute::optional("iam_instance_profile", Type::String)
                        .describe("The instance profile's name (not the role's). Changed in place."),
                )
                .attr(
                    Attribute::optional("user_data", Type::String)
                        .validate(user_data_size)
                        .describe("User data as text (the provider base64-encodes it), at most 16 KiB."),
                )
                .attr(Attribute::with_default("user_data_replace_on_change", Value::Bool(false)).describe(
                    "Replace the instance when user_data changes, instead of stopping, modifying and starting it.",
                ))
                .attr(
                    Attribute::optional("key_name", Type::String)
                        .replace()
                        .describe("An EC2 key pair for SSH. Changing it replaces the instance."),
                )
                .attr(Attribute::with_default("source_dest_check", Value::Bool(true)).describe(
                    "Whether the primary interface drops traffic not addressed to it. Must be `false` for VIP control.",
                ))
                .block("metadata_options", Nesting::List, 1, metadata_block())
                .block("root_block_device", Nesting::List, 1, root_block())
                .attr(Attribute::computed("availability_zone", Type::String).describe("The instance's zone."))
                .attr(
                    Attribute::computed("primary_network_interface_id", Type::String)
                        .describe("The primary ENI (the target of VIP routes)."),
                )
                .attr(Attribute::computed("public_ip", Type::String).describe("The public IPv4 address, if any."))
                .attr(Attribute::computed("private_dns", Type::String).describe("The private DNS name."))
                .attr(
                    Attribute::computed("instance_state", Type::String)
                        .describe("`running`, `stopped`, … as last read."),
                )
                .attr(tags)
                .attr(tags_all)
                .nested(timeouts_block(&["create", "update", "delete"])),
        )
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        plan.set("tags_all", tags::plan_tags_all(&ctx.default_tags, plan.config.attr("tags")));
        plan_rules(plan);
        let placement_changes = plan.is_create() || plan.changes("subnet_id") || plan.changes("private_ip");
        let ami_changes = plan.is_create() || plan.changes("ami");
        if placement_changes || ami_changes {
            let planned = plan.planned.clone();
            check_placement(ctx, &planned, ami_changes, diags).await;
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        check_placement(ctx, planned, true, diags).await;
        if diags.has_errors() {
            return None;
        }
        let ami = planned.attr("ami").as_str().unwrap_or_default();
        let root = match find_image_by_id(ctx, ami).await {
            Ok(image) => image_root(&image),
            Err(e) => {
                report(diags, "reading", "EC2 AMI", Some(ami), &e);
                return None;
            }
        };
        let id = match run_instance(ctx, planned, root.as_ref()).await {
            Ok(id) => id,
            Err(e) => {
                report_launch_error(diags, planned, &e);
                return None;
            }
        };
        let timeout = wait::timeout_for(planned, "create", CREATE_TIMEOUT);
        let rest = async {
            wait_instance_state(ctx, &id, InstanceStateName::Running, timeout).await?;
            if planned.attr("source_dest_check").as_bool() == Some(false) {
                set_source_dest_check(ctx, &id, false).await?;
            }
            lifecycle::read_after_create(|| read_instance(ctx, &id, planned)).await
        };
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_instance(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let timeout = wait::timeout_for(planned, "update", UPDATE_TIMEOUT);
        let result = async {
            modify_stopped(ctx, id, prior, planned, timeout).await?;
            update_security_groups(ctx, id, prior, planned).await?;
            update_instance_profile(ctx, id, prior, planned, timeout).await?;
            let sdc = planned.attr("source_dest_check").as_bool().unwrap_or(true);
            if prior.attr("source_dest_check").as_bool() != Some(sdc) {
                set_source_dest_check(ctx, id, sdc).await?;
            }
            if block_of(prior, "metadata_options") != block_of(planned, "metadata_options") {
                update_metadata_options(ctx, id, planned, timeout).await?;
            }
            if block_of(prior, "root_block_device") != block_of(planned, "root_block_device") {
                update_root_block_device(ctx, id, planned, timeout).await?;
            }
            tags::update_ec2(ctx, id, prior.attr("tags_all"), planned.attr("tags_all")).await?;
            read_instance(ctx, id, planned).await
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
                ctx.ec2.terminate_instances().instance_ids(id).send().await.map(|_| ()).map_err(AwsError::from_sdk)
            },
            || async { find_instance_by_id(ctx, id).await.map(|(i, _)| Some(state_name(&i))) },
        )
        .await;
    }

    fn import_state(&self, id: &str) -> Value {
        let mut state = crate::framework::resource::empty_object(&self.schema());
        if let Some(attrs) = state.attrs_mut() {
            attrs.insert("id".into(), Value::from(id));
            // Non-empty blocks tell read to fill them from AWS.
            attrs.insert("metadata_options".into(), placeholder(&METADATA_ATTRS));
            attrs.insert("root_block_device".into(), placeholder(&ROOT_ATTRS));
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::plan::plan_from_schema;
    use crate::framework::schema::PlanModifier;

    #[test]
    fn fixed_ip_must_be_a_usable_address_of_the_subnet() {
        assert!(private_ip_problem("10.0.1.10", "10.0.1.0/24").is_none());
        let (code, summary, detail) = private_ip_problem("10.9.9.9", "10.0.1.0/24").unwrap();
        assert_eq!(code, "TDM-EC2-155");
        assert!(summary.contains("outside") && detail.contains("10.0.1.4 to 10.0.1.254"), "{detail}");
        for (ip, role) in [
            ("10.0.1.0", "network"),
            ("10.0.1.1", "router"),
            ("10.0.1.2", "DNS"),
            ("10.0.1.3", "future"),
            ("10.0.1.255", "broadcast"),
        ] {
            let (code, summary, _) = private_ip_problem(ip, "10.0.1.0/24").unwrap();
            assert!(code == "TDM-EC2-156" && summary.contains(role), "{ip}: {summary}");
        }
        assert!(private_ip_problem("10.0.1.4", "10.0.1.0/24").is_none());
        assert!(private_ip_problem("10.0.1.254", "10.0.1.0/24").is_none());
    }

    #[test]
    fn instance_types_and_amis_are_checked_for_shape() {
        for ok in ["t3.micro", "m7g.2xlarge", "u-6tb1.metal", "c7gn.16xlarge"] {
            assert!(instance_type(&ok.into()).is_ok(), "{ok}");
        }
        for bad in ["t3micro", "T3.micro", "t3.", ".micro", "t3 .micro"] {
            assert!(instance_type(&bad.into()).is_err(), "{bad}");
        }
        assert!(ami_id(&"ami-04681a1dbd79675a5".into()).is_ok());
        assert!(ami_id(&"ami-xyz".into()).is_err());
        assert!(user_data_size(&Value::from("x".repeat(USER_DATA_MAX + 1))).is_err());
    }

    #[test]
    fn user_data_round_trips_as_text() {
        let text = "#!/bin/sh\necho hi\n";
        assert_eq!(decode_user_data(&BASE64.encode(text)), text);
        assert_eq!(decode_user_data("not base64!"), "not base64!");
        assert_eq!(profile_name_from_arn("arn:aws:iam::1:instance-profile/path/node"), "node");
        let blob = user_data_blob(text);
        assert_eq!(blob.value().map(|b| b.as_ref()), Some(text.as_bytes()), "encoded once, by the SDK");
    }

    #[test]
    fn launch_errors_point_at_the_attribute() {
        let planned = object([("instance_type", "x9.huge".into())]);
        for (code, message) in [
            ("InvalidParameterValue", "Invalid value 'x9.huge' for InstanceType."),
            ("InvalidInstanceType.NotFound", "The instance type 'x9.huge' does not exist"),
        ] {
            let mut d = Diagnostics::new();
            let err = AwsError { code: Some(code.into()), message: message.into(), class: ErrorClass::Other };
            report_launch_error(&mut d, &planned, &err);
            assert!(d.0[0].summary.contains("TDM-EC2-158"), "{:?}", d.0);
            assert_eq!(d.0[0].path, Some(AttrPath::root("instance_type")));
        }
        let mut d = Diagnostics::new();
        let err = AwsError { code: Some("InternalError".into()), message: "x".into(), class: ErrorClass::Transient };
        report_launch_error(&mut d, &planned, &err);
        assert!(d.0[0].path.is_none() && d.0[0].summary.contains("creating EC2 Instance"));
    }

    fn state(pairs: &[(&str, Value)]) -> Value {
        let mut v = crate::framework::resource::empty_object(&Instance.schema());
        for (k, val) in pairs {
            v.attrs_mut().unwrap().insert(k.to_string(), val.clone());
        }
        v
    }

    #[test]
    fn user_data_replaces_only_when_asked_and_stop_start_unknowns_the_public_ip() {
        let schema = Instance.schema();
        let prior = state(&[
            ("id", "i-1".into()),
            ("ami", "ami-1".into()),
            ("instance_type", "t3.micro".into()),
            ("subnet_id", "subnet-1".into()),
            ("user_data", "one".into()),
            ("user_data_replace_on_change", false.into()),
            ("public_ip", "1.2.3.4".into()),
            ("instance_state", "running".into()),
        ]);
        let mut config = prior.clone();
        for k in ["id", "public_ip", "instance_state"] {
            config.attrs_mut().unwrap().insert(k.into(), Value::Null);
        }
        config.attrs_mut().unwrap().insert("user_data".into(), "two".into());
        let mut proposed = prior.clone();
        proposed.attrs_mut().unwrap().insert("user_data".into(), "two".into());
        let mut plan = plan_from_schema(&schema.block, &prior, &config, proposed.clone());
        plan_rules(&mut plan);
        assert!(plan.requires_replace.is_empty());
        assert!(plan.get("public_ip").is_unknown(), "a stop/start changes the public IP");

        config.attrs_mut().unwrap().insert("user_data_replace_on_change".into(), true.into());
        proposed.attrs_mut().unwrap().insert("user_data_replace_on_change".into(), true.into());
        let mut plan = plan_from_schema(&schema.block, &prior, &config, proposed);
        plan_rules(&mut plan);
        assert_eq!(plan.requires_replace, vec![AttrPath::root("user_data")]);
    }

    #[test]
    fn root_encryption_change_replaces_size_growth_does_not() {
        let schema = Instance.schema();
        let root = |size: i64, enc: bool| {
            Value::List(vec![Value::object([
                ("volume_size", Value::from(size)),
                ("volume_type", "gp3".into()),
                ("encrypted", enc.into()),
                ("delete_on_termination", true.into()),
                ("volume_id", "vol-1".into()),
            ])])
        };
        let prior = state(&[("id", "i-1".into()), ("root_block_device", root(10, true))]);
        let grown = state(&[("id", "i-1".into()), ("root_block_device", root(20, true))]);
        let mut plan = plan_from_schema(&schema.block, &prior, &grown, grown.clone());
        plan_rules(&mut plan);
        assert!(plan.requires_replace.is_empty(), "{:?}", plan.requires_replace);
        let plain = state(&[("id", "i-1".into()), ("root_block_device", root(10, false))]);
        let mut plan = plan_from_schema(&schema.block, &prior, &plain, plain.clone());
        plan_rules(&mut plan);
        assert_eq!(plan.requires_replace, vec![AttrPath::root("root_block_device").index(0).attr("encrypted")]);
    }

    #[test]
    fn schema_replaces_what_aws_fixes_at_launch() {
        let s = Instance.schema();
        for name in ["ami", "subnet_id", "private_ip", "key_name"] {
            assert!(s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        for name in
            ["instance_type", "vpc_security_group_ids", "iam_instance_profile", "user_data", "source_dest_check"]
        {
            assert!(!s.block.attribute(name).unwrap().has(PlanModifier::RequiresReplace), "{name}");
        }
        let imported = Instance.import_state("i-1");
        assert_eq!(imported.attr("metadata_options").elements().len(), 1);
        assert_eq!(imported.attr("root_block_device").elements().len(), 1);
    }

    #[test]
    fn defaults_apply_when_blocks_are_left_out() {
        let m = metadata_request(None);
        assert_eq!(m.http_tokens(), Some(&HttpTokensState::Required));
        assert_eq!(m.http_put_response_hop_limit(), Some(2));
        let r = root_mapping("/dev/xvda", None, None);
        let ebs = r.ebs().unwrap();
        assert_eq!((ebs.encrypted(), ebs.delete_on_termination()), (Some(true), Some(true)));
        assert_eq!(ebs.volume_type(), Some(&VolumeType::Gp3));
        assert!(ebs.volume_size().is_none());
        let sized = root_mapping("/dev/xvda", Some(8), None);
        assert_eq!(sized.ebs().and_then(|e| e.volume_size()), Some(8), "the AMI's size, stated");
        let block = Value::object([("volume_size", Value::from(20))]);
        let configured = root_mapping("/dev/xvda", Some(8), Some(&block));
        assert_eq!(configured.ebs().and_then(|e| e.volume_size()), Some(20));
    }
}
