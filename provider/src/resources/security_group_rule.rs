//! `tandem_security_group_rule`: exactly one AWS security group rule object (`sgr-…`): one direction, one
//! protocol and port range, one source or destination (an IPv4 CIDR or another security group). Its ID is
//! AWS's rule ID, so drift detection, import and delete address that one rule and nothing else.

use async_trait::async_trait;
use aws_sdk_ec2::types::UserIdGroupPair;
use aws_sdk_ec2::types::{IpPermission, IpRange, SecurityGroupRule, SecurityGroupRuleRequest, SecurityGroupRuleUpdate};
use tandem_runtime::net::parse_ipv4_cidr;

use super::{lifecycle, object, opt_str, report};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};

pub struct SecurityGroupRuleResource;

const OBJECT: &str = "EC2 Security Group Rule";

pub(crate) async fn find_security_group_rule_by_id(ctx: &AwsContext, id: &str) -> Result<SecurityGroupRule, AwsError> {
    let out =
        ctx.ec2.describe_security_group_rules().security_group_rule_ids(id).send().await.map_err(AwsError::from_sdk)?;
    out.security_group_rules()
        .iter()
        .find(|r| r.security_group_rule_id() == Some(id))
        .cloned()
        .ok_or_else(|| AwsError::local(ErrorClass::NotFound, format!("security group rule {id} not found")))
}

/// AWS's name for "all protocols" is `-1`; `all` is accepted as an alias and kept as written.
fn normalize_protocol(p: &str) -> &str {
    if p == "all" { "-1" } else { p }
}

const PROTOCOLS: [&str; 5] = ["tcp", "udp", "icmp", "-1", "all"];

fn protocol(v: &Value) -> Result<(), String> {
    let p = v.as_str().ok_or("expected a string")?;
    if PROTOCOLS.contains(&p) {
        Ok(())
    } else {
        Err(format!("{p:?} is not one of tcp, udp, icmp, -1 (all protocols) or all"))
    }
}

fn rule_type(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some("ingress" | "egress") => Ok(()),
        Some(other) => Err(format!("{other:?} is neither ingress nor egress")),
        None => Err("expected a string".into()),
    }
}

/// Any IPv4 CIDR block (prefix 0 to 32) written as its network address.
fn ipv4_cidr(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    parse_ipv4_cidr(text).map(|_| ()).map_err(|e| e.to_string())
}

fn rule_description(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    if text.len() > 255 {
        return Err("a rule description has at most 255 characters".into());
    }
    if !text.chars().all(|c| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c)) {
        return Err(format!("{text:?}: only a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$* are allowed"));
    }
    Ok(())
}

/// Checks between attributes: exactly one peer, ports that fit the protocol. Unknown values are skipped.
fn check_rule(config: &Value, diags: &mut Diagnostics) {
    let cidr = config.attr("cidr_ipv4");
    let group = config.attr("source_security_group_id");
    if cidr.is_null() && group.is_null() {
        diags.error_at(
            AttrPath::root("cidr_ipv4"),
            "TDM-EC2-150",
            "a security group rule needs exactly one of cidr_ipv4 or source_security_group_id",
            "Set cidr_ipv4 for an address range, or source_security_group_id for traffic from (ingress) or to \
             (egress) the members of another security group.",
        );
    } else if !cidr.is_null() && !group.is_null() {
        diags.error_at(
            AttrPath::root("source_security_group_id"),
            "TDM-EC2-150",
            "a security group rule takes only one of cidr_ipv4 or source_security_group_id",
            "One rule is one AWS rule object with one peer: write a second tandem_security_group_rule for the other.",
        );
    }
    let Some(proto) = config.attr("protocol").as_str() else { return };
    let (from, to) = (config.attr("from_port"), config.attr("to_port"));
    if from.is_unknown() || to.is_unknown() {
        return;
    }
    let (from, to) = (from.as_i64(), to.as_i64());
    let mut port_error = |attr: &str, summary: String, detail: &str| {
        diags.error_at(AttrPath::root(attr), "TDM-EC2-151", summary, detail.to_string());
    };
    match normalize_protocol(proto) {
        "-1" => {
            for (attr, v) in [("from_port", from), ("to_port", to)] {
                if v.is_some() {
                    port_error(
                        attr,
                        format!("{attr} must be left out when protocol is {proto:?}"),
                        "A rule for all protocols covers every port; AWS records no port range for it.",
                    );
                }
            }
        }
        "icmp" => {
            for (attr, v, what) in [("from_port", from, "ICMP type"), ("to_port", to, "ICMP code")] {
                match v {
                    None => port_error(
                        attr,
                        format!("{attr} (the {what}) is required for protocol \"icmp\""),
                        "Use -1 for every type or code, e.g. from_port = 8, to_port = -1 for echo requests.",
                    ),
                    Some(n) if !(-1..=255).contains(&n) => port_error(
                        attr,
                        format!("{attr} = {n} is not an {what} (-1 to 255)"),
                        "For protocol icmp, from_port is the ICMP type and to_port the ICMP code; -1 means any.",
                    ),
                    _ => {}
                }
            }
        }
        _ => {
            for (attr, v) in [("from_port", from), ("to_port", to)] {
                match v {
                    None => port_error(
                        attr,
                        format!("{attr} is required for protocol {proto:?}"),
                        "Give the port range, e.g. from_port = 443, to_port = 443.",
                    ),
                    Some(n) if !(0..=65535).contains(&n) => port_error(
                        attr,
                        format!("{attr} = {n} is not a port (0 to 65535)"),
                        "TCP and UDP ports range from 0 to 65535.",
                    ),
                    _ => {}
                }
            }
            if let (Some(f), Some(t)) = (from, to)
                && f > t
                && (0..=65535).contains(&f)
                && (0..=65535).contains(&t)
            {
                port_error(
                    "to_port",
                    format!("to_port = {t} is below from_port = {f}"),
                    "The range runs from from_port to to_port, inclusive.",
                );
            }
        }
    }
}

/// The state of a rule as AWS reports it; `prior` supplies what AWS does not keep (the `all` spelling).
fn flatten_rule(ctx_arn: impl FnOnce(&str) -> String, r: &SecurityGroupRule, prior: &Value) -> Value {
    let aws_proto = r.ip_protocol().unwrap_or("-1");
    let proto = match prior.attr("protocol").as_str() {
        Some(p) if normalize_protocol(p) == aws_proto => p.to_string(),
        _ => aws_proto.to_string(),
    };
    let all = aws_proto == "-1";
    let port = |p: Option<i32>| if all { Value::Null } else { p.map_or(Value::Null, Value::from) };
    let description = match (r.description(), prior.attr("description").as_str()) {
        (None | Some(""), Some("")) => Value::from(""),
        (Some(d), _) if !d.is_empty() => Value::from(d),
        _ => Value::Null,
    };
    let id = r.security_group_rule_id().unwrap_or_default();
    object([
        ("id", Value::from(id)),
        ("arn", Value::from(r.security_group_rule_arn().map_or_else(|| ctx_arn(id), str::to_string))),
        ("type", Value::from(if r.is_egress() == Some(true) { "egress" } else { "ingress" })),
        ("security_group_id", opt_str(r.group_id())),
        ("protocol", Value::from(proto)),
        ("from_port", port(r.from_port())),
        ("to_port", port(r.to_port())),
        ("cidr_ipv4", opt_str(r.cidr_ipv4())),
        ("source_security_group_id", opt_str(r.referenced_group_info().and_then(|g| g.group_id()))),
        ("description", description),
    ])
}

async fn read_rule(ctx: &AwsContext, id: &str, prior: &Value) -> Result<Option<Value>, AwsError> {
    match find_security_group_rule_by_id(ctx, id).await {
        Ok(r) => {
            let owner = r.group_owner_id().map(str::to_string);
            let arn = |id: &str| ctx.arn("ec2", owner.as_deref(), &format!("security-group-rule/{id}"));
            Ok(Some(flatten_rule(arn, &r, prior)))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The one IpPermission the planned rule stands for.
fn expand_permission(planned: &Value) -> IpPermission {
    let proto = normalize_protocol(planned.attr("protocol").as_str().unwrap_or("-1"));
    let description = planned.attr("description").as_str().filter(|d| !d.is_empty()).map(str::to_string);
    let mut p = IpPermission::builder().ip_protocol(proto);
    if proto != "-1" {
        p = p
            .set_from_port(planned.attr("from_port").as_i64().and_then(|n| i32::try_from(n).ok()))
            .set_to_port(planned.attr("to_port").as_i64().and_then(|n| i32::try_from(n).ok()));
    }
    if let Some(cidr) = planned.attr("cidr_ipv4").as_str() {
        p = p.ip_ranges(IpRange::builder().cidr_ip(cidr).set_description(description).build());
    } else if let Some(group) = planned.attr("source_security_group_id").as_str() {
        p = p.user_id_group_pairs(UserIdGroupPair::builder().group_id(group).set_description(description).build());
    }
    p.build()
}

fn is_egress(v: &Value) -> bool {
    v.attr("type").as_str() == Some("egress")
}

/// Errors AWS gives for a rule it refuses, mapped to the attribute the user has to change.
fn report_create_error(diags: &mut Diagnostics, planned: &Value, err: &AwsError) {
    let group = planned.attr("security_group_id").as_str().unwrap_or_default();
    if err.has_code("InvalidPermission.Duplicate") {
        diags.error_at(
            AttrPath::root("security_group_id"),
            "TDM-EC2-152",
            format!("security group {group} already has this rule: {err}"),
            "The same rule exists already, made by another tandem_security_group_rule, by hand, or left over. \
             Remove the duplicate from the configuration, or import the existing rule by its sgr- ID.",
        );
    } else if err.has_code("InvalidGroup.NotFound") && planned.attr("source_security_group_id").as_str().is_some() {
        diags.error_at(
            AttrPath::root("source_security_group_id"),
            "TDM-EC2-153",
            format!("creating the rule of security group {group}: {err}"),
            "The rule's group or its source group does not exist in this account and region.",
        );
    } else {
        report(diags, "creating", OBJECT, None, err);
    }
}

#[async_trait]
impl Resource for SecurityGroupRuleResource {
    fn type_name(&self) -> &'static str {
        "tandem_security_group_rule"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new(
                "One rule of a security group (one AWS rule object, `sgr-…`): a direction, a protocol and port range, \
                 and one peer, an IPv4 CIDR or a security group. Only the description changes in place.",
            )
            .attr(Attribute::computed("id", Type::String).describe("The rule's AWS ID, e.g. `sgr-0123…`."))
            .attr(Attribute::computed("arn", Type::String).describe("The rule's ARN."))
            .attr(
                Attribute::required("type", Type::String)
                    .replace()
                    .validate(rule_type)
                    .describe("`ingress` (traffic to members of the group) or `egress` (traffic from them)."),
            )
            .attr(
                Attribute::required("security_group_id", Type::String)
                    .replace()
                    .describe("The security group the rule belongs to."),
            )
            .attr(
                Attribute::required("protocol", Type::String).replace().validate(protocol).describe(
                    "`tcp`, `udp`, `icmp`, or `-1` for all protocols (`all` is accepted and kept as written).",
                ),
            )
            .attr(Attribute::optional("from_port", Type::Number).replace().describe(
                "First port of the range (tcp/udp, 0-65535), or the ICMP type (icmp, -1 = any). Leave out for `-1`.",
            ))
            .attr(Attribute::optional("to_port", Type::Number).replace().describe(
                "Last port of the range (tcp/udp, 0-65535), or the ICMP code (icmp, -1 = any). Leave out for `-1`.",
            ))
            .attr(
                Attribute::optional("cidr_ipv4", Type::String).replace().validate(ipv4_cidr).describe(
                    "The peer as an IPv4 CIDR block. Exactly one of `cidr_ipv4` and `source_security_group_id`.",
                ),
            )
            .attr(Attribute::optional("source_security_group_id", Type::String).replace().describe(
                "The peer as a security group: its members are the source (ingress) or destination (egress).",
            ))
            .attr(
                Attribute::optional("description", Type::String)
                    .validate(rule_description)
                    .describe("The rule's description. Changed in place."),
            ),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_rule(config, diags);
    }

    async fn plan(&self, _ctx: &AwsContext, plan: &mut Plan<'_>, _diags: &mut Diagnostics) {
        // `all` and `-1` are the same protocol: keep the prior spelling rather than replace the rule.
        if !plan.is_create()
            && let (Some(old), Some(new)) = (plan.prior.attr("protocol").as_str(), plan.get("protocol").as_str())
            && old != new
            && normalize_protocol(old) == normalize_protocol(new)
        {
            let old = old.to_string();
            plan.set("protocol", Value::from(old));
            plan.requires_replace.retain(|p| *p != AttrPath::root("protocol"));
        }
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let group = planned.attr("security_group_id").as_str().unwrap_or_default();
        let permission = expand_permission(planned);
        // A group made in the same apply may not be visible to the authorize call yet.
        let created = wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || async {
            let rules = if is_egress(planned) {
                ctx.ec2
                    .authorize_security_group_egress()
                    .group_id(group)
                    .ip_permissions(permission.clone())
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)?
                    .security_group_rules()
                    .to_vec()
            } else {
                ctx.ec2
                    .authorize_security_group_ingress()
                    .group_id(group)
                    .ip_permissions(permission.clone())
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)?
                    .security_group_rules()
                    .to_vec()
            };
            Ok(rules)
        })
        .await;
        let rules = match created {
            Ok(rules) => rules,
            Err(e) => {
                report_create_error(diags, planned, &e);
                return None;
            }
        };
        let Some(id) = rules.first().and_then(|r| r.security_group_rule_id()).map(str::to_string) else {
            report(
                diags,
                "creating",
                OBJECT,
                None,
                &AwsError::local(ErrorClass::Other, "AWS returned no security group rule ID"),
            );
            return None;
        };
        let rest = lifecycle::read_after_create(|| read_rule(ctx, &id, planned));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = state.attr("id").as_str().unwrap_or_default();
        lifecycle::read_or_remove(diags, OBJECT, state, read_rule(ctx, id, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let id = prior.attr("id").as_str().unwrap_or_default();
        let group = prior.attr("security_group_id").as_str().unwrap_or_default();
        let result = async {
            if prior.attr("description") != planned.attr("description") {
                let proto = normalize_protocol(planned.attr("protocol").as_str().unwrap_or("-1"));
                let port = |name: &str| {
                    if proto == "-1" {
                        Some(-1)
                    } else {
                        planned.attr(name).as_i64().and_then(|n| i32::try_from(n).ok())
                    }
                };
                let request = SecurityGroupRuleRequest::builder()
                    .ip_protocol(proto)
                    .set_from_port(port("from_port"))
                    .set_to_port(port("to_port"))
                    .set_cidr_ipv4(planned.attr("cidr_ipv4").as_str().map(str::to_string))
                    .set_referenced_group_id(planned.attr("source_security_group_id").as_str().map(str::to_string))
                    .set_description(Some(planned.attr("description").as_str().unwrap_or_default().to_string()))
                    .build();
                ctx.ec2
                    .modify_security_group_rules()
                    .group_id(group)
                    .security_group_rules(
                        SecurityGroupRuleUpdate::builder()
                            .security_group_rule_id(id)
                            .security_group_rule(request)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(AwsError::from_sdk)?;
            }
            read_rule(ctx, id, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let id = state.attr("id").as_str().unwrap_or_default();
        let group = state.attr("security_group_id").as_str().unwrap_or_default();
        lifecycle::delete_and_wait(
            diags,
            OBJECT,
            id,
            wait::DELETE_TIMEOUT,
            || async {
                if is_egress(state) {
                    ctx.ec2
                        .revoke_security_group_egress()
                        .group_id(group)
                        .security_group_rule_ids(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(AwsError::from_sdk)
                } else {
                    ctx.ec2
                        .revoke_security_group_ingress()
                        .group_id(group)
                        .security_group_rule_ids(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(AwsError::from_sdk)
                }
            },
            || async { find_security_group_rule_by_id(ctx, id).await.map(|_| Some("present".to_string())) },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::schema::PlanModifier;

    fn config(pairs: &[(&str, Value)]) -> Value {
        let mut v = crate::framework::resource::empty_object(&SecurityGroupRuleResource.schema());
        for (k, val) in pairs {
            v.attrs_mut().unwrap().insert(k.to_string(), val.clone());
        }
        v
    }

    fn codes(config: &Value) -> Vec<(String, String)> {
        let mut d = Diagnostics::new();
        check_rule(config, &mut d);
        d.0.iter().map(|x| (x.summary.clone(), x.path.as_ref().map(ToString::to_string).unwrap_or_default())).collect()
    }

    #[test]
    fn only_the_description_changes_in_place() {
        let s = SecurityGroupRuleResource.schema();
        for a in &s.block.attributes {
            let replace = a.has(PlanModifier::RequiresReplace);
            match a.name {
                "description" | "id" | "arn" => assert!(!replace, "{}", a.name),
                _ => assert!(replace, "{}", a.name),
            }
        }
    }

    #[test]
    fn exactly_one_peer_is_required() {
        let base = [("protocol", Value::from("tcp")), ("from_port", 443.into()), ("to_port", 443.into())];
        let none = codes(&config(&base));
        assert_eq!(none.len(), 1);
        assert!(none[0].0.contains("TDM-EC2-150") && none[0].1 == "cidr_ipv4");
        let mut both = base.to_vec();
        both.push(("cidr_ipv4", "10.0.0.0/8".into()));
        both.push(("source_security_group_id", "sg-1".into()));
        let both = codes(&config(&both));
        assert!(both[0].1 == "source_security_group_id");
        let mut one = base.to_vec();
        one.push(("cidr_ipv4", "10.0.0.0/8".into()));
        assert!(codes(&config(&one)).is_empty());
    }

    #[test]
    fn ports_must_fit_the_protocol() {
        let peer = ("cidr_ipv4", Value::from("0.0.0.0/0"));
        let all = codes(&config(&[peer.clone(), ("protocol", "all".into()), ("from_port", 0.into())]));
        assert!(all.len() == 1 && all[0].1 == "from_port" && all[0].0.contains("TDM-EC2-151"), "{all:?}");
        let tcp = codes(&config(&[peer.clone(), ("protocol", "tcp".into()), ("from_port", 443.into())]));
        assert!(tcp.len() == 1 && tcp[0].1 == "to_port", "{tcp:?}");
        let reversed = codes(&config(&[
            peer.clone(),
            ("protocol", "udp".into()),
            ("from_port", 10.into()),
            ("to_port", 5.into()),
        ]));
        assert!(reversed.len() == 1 && reversed[0].0.contains("below"), "{reversed:?}");
        let icmp = codes(&config(&[
            peer.clone(),
            ("protocol", "icmp".into()),
            ("from_port", 8.into()),
            ("to_port", (-1).into()),
        ]));
        assert!(icmp.is_empty(), "{icmp:?}");
        let big =
            codes(&config(&[peer, ("protocol", "tcp".into()), ("from_port", 1.into()), ("to_port", 70000.into())]));
        assert!(big.len() == 1 && big[0].0.contains("70000"), "{big:?}");
    }

    #[test]
    fn all_is_read_back_as_written() {
        let rule = SecurityGroupRule::builder()
            .security_group_rule_id("sgr-1")
            .group_id("sg-1")
            .is_egress(true)
            .ip_protocol("-1")
            .from_port(-1)
            .to_port(-1)
            .cidr_ipv4("0.0.0.0/0")
            .build();
        let prior = object([("protocol", Value::from("all"))]);
        let arn = |id: &str| format!("arn:aws:ec2:us-east-1:1:security-group-rule/{id}");
        let v = flatten_rule(arn, &rule, &prior);
        assert_eq!(v.attr("arn"), &Value::from("arn:aws:ec2:us-east-1:1:security-group-rule/sgr-1"));
        assert_eq!(v.attr("protocol"), &Value::from("all"));
        assert!(v.attr("from_port").is_null() && v.attr("to_port").is_null());
        assert_eq!(v.attr("type"), &Value::from("egress"));
        let imported = flatten_rule(arn, &rule, &Value::Null);
        assert_eq!(imported.attr("protocol"), &Value::from("-1"));
    }

    #[test]
    fn permission_carries_one_peer_and_normalized_protocol() {
        let planned = config(&[
            ("type", "egress".into()),
            ("protocol", "all".into()),
            ("cidr_ipv4", "0.0.0.0/0".into()),
            ("description", "out".into()),
        ]);
        let p = expand_permission(&planned);
        assert_eq!(p.ip_protocol(), Some("-1"));
        assert!(p.from_port().is_none());
        assert_eq!(p.ip_ranges()[0].description(), Some("out"));
        assert!(p.user_id_group_pairs().is_empty());
    }

    #[test]
    fn validators_reject_bad_values() {
        assert!(ipv4_cidr(&"10.0.0.0/33".into()).is_err());
        assert!(ipv4_cidr(&"10.0.0.1/16".into()).is_err());
        assert!(ipv4_cidr(&"0.0.0.0/0".into()).is_ok());
        assert!(protocol(&"TCP".into()).is_err());
        assert!(rule_type(&"inbound".into()).is_err());
    }
}
