//! `tandem_route53_record`: one simple-routing record set (A, CNAME or TXT) in a hosted zone, as the AWS
//! provider's `aws_route53_record` without aliases and routing policies. The DNS name-control topology
//! creates the failover name with it; the cluster runtime UPSERTs its value at failover.

use async_trait::async_trait;
use aws_sdk_route53::types::{Change, ChangeAction, ResourceRecord, ResourceRecordSet, RrType};

use super::route53_zone::{
    CHANGE_TIMEOUT, build_err, change_records, check_domain_name, clean_zone_id, find_hosted_zone_by_id,
    find_record_set, fqdn, keep_name, keep_prior_spelling, name_in_zone, normalize_name,
};
use super::{lifecycle, object, report};
use crate::aws::wait;
use crate::aws::{AwsContext, AwsError, ErrorClass};
use crate::framework::schema::timeouts_block;
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Plan, Resource, Schema, Type, Value};
use tandem_runtime::net::parse_ipv4;

pub struct Route53Record;

const OBJECT: &str = "Route 53 Record";

const TYPES: [&str; 3] = ["A", "CNAME", "TXT"];

mod code {
    pub const BAD_NAME: &str = "TDM-R53-010";
    pub const NOT_IN_ZONE: &str = "TDM-R53-011";
    pub const NO_ZONE: &str = "TDM-R53-012";
    pub const BAD_TYPE: &str = "TDM-R53-013";
    pub const BAD_VALUE: &str = "TDM-R53-014";
    pub const EXISTS: &str = "TDM-R53-015";
    pub const CHANGED: &str = "TDM-R53-016";
    pub const BAD_ID: &str = "TDM-R53-017";
}

/// Where a record lives: `(zone ID, name, type)`.
#[derive(Debug, PartialEq, Eq)]
struct RecordKey {
    zone: String,
    name: String,
    rr_type: String,
}

impl RecordKey {
    /// From the state's attributes, or (right after an import) from the ID `ZONE_NAME_TYPE`.
    fn of(state: &Value) -> Option<RecordKey> {
        match (state.attr("zone_id").as_str(), state.attr("name").as_str(), state.attr("type").as_str()) {
            (Some(z), Some(n), Some(t)) => {
                Some(RecordKey { zone: clean_zone_id(z).to_string(), name: n.to_string(), rr_type: t.to_string() })
            }
            _ => parse_id(state.attr("id").as_str()?),
        }
    }

    /// `Z123_www.example.com_A`: the AWS provider's ID format (a name may itself contain `_`).
    fn id(&self) -> String {
        format!("{}_{}_{}", self.zone, normalize_name(&self.name), self.rr_type)
    }
}

fn parse_id(id: &str) -> Option<RecordKey> {
    let (zone, rest) = id.split_once('_')?;
    let (name, rr_type) = rest.rsplit_once('_')?;
    (!zone.is_empty() && !name.is_empty() && TYPES.contains(&rr_type)).then(|| RecordKey {
        zone: clean_zone_id(zone).to_string(),
        name: name.to_string(),
        rr_type: rr_type.to_string(),
    })
}

/// Route 53 wants TXT values quoted; users write them bare, as with the AWS provider.
fn expand_value(rr_type: &str, v: &str) -> String {
    if rr_type == "TXT" && !v.starts_with('"') { format!("\"{}\"", v.replace('"', "\\\"")) } else { v.to_string() }
}

fn flatten_value(rr_type: &str, v: &str) -> String {
    match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if rr_type == "TXT" && !inner.contains("\" \"") => inner.replace("\\\"", "\""),
        _ => v.to_string(),
    }
}

fn record_values(v: &Value) -> Vec<String> {
    v.attr("records").elements().iter().filter_map(|r| r.as_str().map(str::to_string)).collect()
}

fn record_set(key: &RecordKey, ttl: i64, values: &[String]) -> Result<ResourceRecordSet, AwsError> {
    let records = values
        .iter()
        .map(|v| ResourceRecord::builder().value(expand_value(&key.rr_type, v)).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(build_err)?;
    ResourceRecordSet::builder()
        .name(fqdn(&key.name))
        .r#type(RrType::from(key.rr_type.as_str()))
        .ttl(ttl)
        .set_resource_records(Some(records))
        .build()
        .map_err(build_err)
}

/// True when the record set Route 53 holds has exactly `ttl` and `values` (in any order).
fn same_values(rr_type: &str, current: &ResourceRecordSet, ttl: i64, values: &[String]) -> bool {
    let mut have: Vec<String> = current.resource_records().iter().map(|r| flatten_value(rr_type, r.value())).collect();
    let mut want: Vec<String> = values.to_vec();
    have.sort();
    want.sort();
    current.ttl() == Some(ttl) && have == want
}

fn change(action: ChangeAction, set: ResourceRecordSet) -> Result<Change, AwsError> {
    Change::builder().action(action).resource_record_set(set).build().map_err(build_err)
}

async fn read_record(ctx: &AwsContext, key: &RecordKey, prior: &Value) -> Result<Option<Value>, AwsError> {
    let found = match find_record_set(ctx, &key.zone, &key.name, RrType::from(key.rr_type.as_str())).await {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(set) = found else { return Ok(None) };
    let values: Vec<Value> =
        set.resource_records().iter().map(|r| Value::from(flatten_value(&key.rr_type, r.value()))).collect();
    let zone_id = match prior.attr("zone_id").as_str() {
        Some(z) if clean_zone_id(z) == key.zone => Value::from(z),
        _ => Value::from(key.zone.as_str()),
    };
    Ok(Some(object([
        ("id", Value::from(key.id())),
        ("zone_id", zone_id),
        ("name", keep_name(prior.attr("name"), set.name(), fqdn(set.name()))),
        ("type", Value::from(key.rr_type.as_str())),
        ("ttl", set.ttl().map_or(Value::Null, Value::from)),
        ("records", Value::Set(values)),
        ("fqdn", Value::from(fqdn(set.name()))),
    ])))
}

/// Offline checks: the name's shape, the type, and the values for the type.
fn check_config(config: &Value, diags: &mut Diagnostics) {
    if let Some(n) = config.attr("name").as_str()
        && let Err(msg) = check_domain_name(n, true)
    {
        diags.error_at(
            AttrPath::root("name"),
            code::BAD_NAME,
            format!("invalid record name {n:?}"),
            format!("{msg}. Write the full name inside the zone, e.g. db.example.com."),
        );
    }
    let rr_type = config.attr("type").as_str();
    if let Some(t) = rr_type
        && !TYPES.contains(&t)
    {
        diags.error_at(
            AttrPath::root("type"),
            code::BAD_TYPE,
            format!("record type {t:?} is not supported"),
            format!("Supported types: {} (upper case).", TYPES.join(", ")),
        );
    }
    let records = config.attr("records");
    if !records.is_wholly_known() {
        return;
    }
    let values = record_values(config);
    if records.elements().is_empty() && !records.is_null() {
        diags.error_at(AttrPath::root("records"), code::BAD_VALUE, "records is empty", "Give at least one value.");
    }
    match rr_type {
        Some("A") => {
            for v in &values {
                if let Err(e) = parse_ipv4(v) {
                    diags.error_at(
                        AttrPath::root("records"),
                        code::BAD_VALUE,
                        format!("{v:?} is not a valid value for an A record"),
                        format!("{e}. An A record holds IPv4 addresses such as 10.0.1.10."),
                    );
                }
            }
        }
        Some("CNAME") if values.len() > 1 => diags.error_at(
            AttrPath::root("records"),
            code::BAD_VALUE,
            "a CNAME record holds exactly one value",
            format!("records has {} values; a name can be an alias of one name only.", values.len()),
        ),
        Some("CNAME") => {
            for v in &values {
                if let Err(msg) = check_domain_name(v, false) {
                    diags.error_at(
                        AttrPath::root("records"),
                        code::BAD_VALUE,
                        format!("{v:?} is not a valid value for a CNAME record"),
                        msg,
                    );
                }
            }
        }
        Some("TXT") => {
            for v in values.iter().filter(|v| v.len() > 255 && !v.starts_with('"')) {
                diags.error_at(
                    AttrPath::root("records"),
                    code::BAD_VALUE,
                    format!("a TXT value is {} characters long", v.len()),
                    "A TXT string holds at most 255 characters; split it into quoted strings: \"\\\"part1\\\" \\\"part2\\\"\".",
                );
            }
        }
        _ => {}
    }
}

/// Checks against the account: the zone exists and the name lies inside it. Skips unknown values.
async fn check_zone(ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) {
    let (Some(zone_id), Some(name)) = (planned.attr("zone_id").as_str(), planned.attr("name").as_str()) else {
        return;
    };
    match find_hosted_zone_by_id(ctx, zone_id).await {
        Ok(out) => {
            let zone = out.hosted_zone().map(|z| z.name()).unwrap_or_default();
            if !name_in_zone(name, zone) {
                diags.error_at(
                    AttrPath::root("name"),
                    code::NOT_IN_ZONE,
                    format!("record name {name:?} is not inside zone {}", normalize_name(zone)),
                    format!(
                        "Hosted zone {zone_id} holds names ending in {}. Write the full name, e.g. db.{}.",
                        normalize_name(zone),
                        normalize_name(zone)
                    ),
                );
            }
        }
        Err(e) if e.is_not_found() => diags.error_at(
            AttrPath::root("zone_id"),
            code::NO_ZONE,
            format!("hosted zone {zone_id} does not exist"),
            "No hosted zone with this ID exists for these credentials. Check the ID (Z…, without /hostedzone/).",
        ),
        Err(e) => report(diags, "checking", "Route 53 Hosted Zone", Some(zone_id), &e),
    }
}

#[async_trait]
impl Resource for Route53Record {
    fn type_name(&self) -> &'static str {
        "tandem_route53_record"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("A Route 53 record set (A, CNAME or TXT) with simple routing.")
                .attr(
                    Attribute::computed("id", Type::String)
                        .describe("`ZONEID_NAME_TYPE`, e.g. `Z0123456789ABCDEFGHIJ_db.example.com_A`."),
                )
                .attr(Attribute::required("zone_id", Type::String).replace().describe("The hosted zone's ID."))
                .attr(Attribute::required("name", Type::String).replace().describe(
                    "The record's full name inside the zone, e.g. `db.example.com`. Case and a trailing dot make no difference.",
                ))
                .attr(
                    Attribute::required("type", Type::String)
                        .replace()
                        .describe("`A`, `CNAME` or `TXT`. Changing it replaces the record."),
                )
                .attr(Attribute::required("ttl", Type::Number).describe("Time to live, in seconds."))
                .attr(
                    Attribute::required("records", Type::set(Type::String))
                        .describe("The values: IPv4 addresses for `A`, one name for `CNAME`, strings for `TXT`."),
                )
                .attr(
                    Attribute::computed("fqdn", Type::String)
                        .describe("The record's name as a lower-case FQDN with its trailing dot."),
                )
                .nested(timeouts_block(&["create", "update", "delete"])),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        check_config(config, diags);
        if let Some(ttl) = config.attr("ttl").as_number()
            && !(ttl.is_integer() && ttl.as_i64().is_some_and(|t| (0..=2_147_483_647).contains(&t)))
        {
            diags.error_at(
                AttrPath::root("ttl"),
                code::BAD_VALUE,
                format!("ttl {ttl} is out of range"),
                "The TTL is a whole number of seconds from 0 to 2147483647.",
            );
        }
    }

    async fn plan(&self, ctx: &AwsContext, plan: &mut Plan<'_>, diags: &mut Diagnostics) {
        keep_prior_spelling(plan, "name", |a, b| normalize_name(a) == normalize_name(b));
        keep_prior_spelling(plan, "zone_id", |a, b| clean_zone_id(a) == clean_zone_id(b));
        if plan.is_create() || plan.changes("name") || plan.changes("zone_id") {
            check_zone(ctx, &plan.planned, diags).await;
        }
        // The FQDN follows from the name (known or not).
        let fqdn_value = plan.get("name").as_str().map_or(Value::Unknown, |n| Value::from(fqdn(n)));
        plan.set("fqdn", fqdn_value);
    }

    async fn create(&self, ctx: &AwsContext, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        check_config(planned, diags);
        check_zone(ctx, planned, diags).await;
        if diags.has_errors() {
            return None;
        }
        let Some(key) = RecordKey::of(planned) else {
            diags.error(code::BAD_ID, "creating Route 53 Record: zone_id, name or type is missing", "");
            return None;
        };
        let ttl = planned.attr("ttl").as_i64().unwrap_or(300);
        let timeout = wait::timeout_for(planned, "create", CHANGE_TIMEOUT);
        // CREATE, not UPSERT: a record that already exists (made by hand, or by another configuration) is
        // never silently adopted; AWS answers InvalidChangeBatch. The lookup first says so before any change
        // (and covers endpoints that accept a CREATE over an existing record).
        let created = async {
            if find_record_set(ctx, &key.zone, &key.name, RrType::from(key.rr_type.as_str())).await?.is_some() {
                return Err(AwsError {
                    code: Some("InvalidChangeBatch".into()),
                    message: "the record set already exists".into(),
                    class: ErrorClass::Other,
                });
            }
            let c = change(ChangeAction::Create, record_set(&key, ttl, &record_values(planned))?)?;
            change_records(ctx, &key.zone, vec![c], timeout).await
        }
        .await;
        match created {
            Ok(()) => {}
            Err(e) if e.has_code("InvalidChangeBatch") && e.message.contains("already exists") => {
                diags.error_at(
                    AttrPath::root("name"),
                    code::EXISTS,
                    format!(
                        "creating {OBJECT}: {} {} already exists in zone {}",
                        fqdn(&key.name),
                        key.rr_type,
                        key.zone
                    ),
                    format!(
                        "The record was made outside this configuration. Import it to manage it here: \
                         terraform import ADDRESS {}",
                        key.id()
                    ),
                );
                return None;
            }
            Err(e) => {
                report(diags, "creating", OBJECT, Some(&key.id()), &e);
                return None;
            }
        }
        let id = key.id();
        let rest = lifecycle::read_after_create(|| read_record(ctx, &key, planned));
        lifecycle::finish_create(diags, OBJECT, &id, planned, rest).await
    }

    async fn read(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let Some(key) = RecordKey::of(state) else {
            let id = state.attr("id").as_str().unwrap_or_default();
            diags.error(
                code::BAD_ID,
                format!("invalid Route 53 record ID {id:?}"),
                "Import a record by ZONEID_NAME_TYPE, e.g. Z0123456789ABCDEFGHIJ_db.example.com_A (type A, CNAME or TXT).",
            );
            return None;
        };
        lifecycle::read_or_remove(diags, OBJECT, state, read_record(ctx, &key, state)).await
    }

    async fn update(&self, ctx: &AwsContext, prior: &Value, planned: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let timeout = wait::timeout_for(planned, "update", CHANGE_TIMEOUT);
        let result = async {
            let key = RecordKey::of(planned)
                .ok_or_else(|| AwsError::local(ErrorClass::Other, "zone_id, name or type is missing"))?;
            let ttl = planned.attr("ttl").as_i64().unwrap_or(300);
            let c = change(ChangeAction::Upsert, record_set(&key, ttl, &record_values(planned))?)?;
            change_records(ctx, &key.zone, vec![c], timeout).await?;
            read_record(ctx, &key, planned).await
        }
        .await;
        lifecycle::finish_update(diags, OBJECT, prior, planned, result)
    }

    async fn delete(&self, ctx: &AwsContext, state: &Value, diags: &mut Diagnostics) {
        let Some(key) = RecordKey::of(state) else { return };
        let id = key.id();
        let timeout = wait::timeout_for(state, "delete", CHANGE_TIMEOUT);
        let ttl = state.attr("ttl").as_i64().unwrap_or(300);
        // DELETE names the values we own: AWS refuses it when someone else changed the record since. The
        // lookup first says so before any change (and covers endpoints that do not check the values).
        let deleted = async {
            let values = record_values(state);
            match find_record_set(ctx, &key.zone, &key.name, RrType::from(key.rr_type.as_str())).await? {
                None => return Err(AwsError::local(ErrorClass::NotFound, "the record set was not found")),
                Some(current) if !same_values(&key.rr_type, &current, ttl, &values) => {
                    return Err(AwsError {
                        code: Some("InvalidChangeBatch".into()),
                        message: format!(
                            "the values provided do not match the current values (Route 53 holds TTL {} and {:?})",
                            current.ttl().unwrap_or_default(),
                            current.resource_records().iter().map(|r| r.value()).collect::<Vec<_>>()
                        ),
                        class: ErrorClass::Other,
                    });
                }
                Some(_) => {}
            }
            let c = change(ChangeAction::Delete, record_set(&key, ttl, &values)?)?;
            change_records(ctx, &key.zone, vec![c], timeout).await
        }
        .await;
        match deleted {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return,
            Err(e) if e.has_code("InvalidChangeBatch") && e.message.contains("not found") => return,
            Err(e) if e.has_code("InvalidChangeBatch") && e.message.contains("do not match") => {
                return diags.error(
                    code::CHANGED,
                    format!("deleting {OBJECT} ({id}): the record's values were changed outside Terraform"),
                    format!(
                        "{e}\nThe record no longer holds the values in state, so it is not deleted (it may now belong \
                         to someone else). Run terraform apply -refresh-only to take the current values into state, \
                         then destroy again; or delete the record by hand."
                    ),
                );
            }
            Err(e) => return report(diags, "deleting", OBJECT, Some(&id), &e),
        }
        lifecycle::wait_gone(diags, OBJECT, &id, timeout, || async {
            find_record_set(ctx, &key.zone, &key.name, RrType::from(key.rr_type.as_str()))
                .await
                .map(|r| r.map(|_| "still listed".to_string()))
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, rr_type: &str, records: &[&str]) -> Value {
        object([
            ("zone_id", "Z1".into()),
            ("name", name.into()),
            ("type", rr_type.into()),
            ("ttl", 60i64.into()),
            ("records", Value::Set(records.iter().map(|r| Value::from(*r)).collect())),
        ])
    }

    #[test]
    fn ids_round_trip_and_names_may_hold_underscores() {
        let k = parse_id("Z1_acme_challenge.example.com_TXT").unwrap();
        assert_eq!(k.zone, "Z1");
        assert_eq!(k.name, "acme_challenge.example.com");
        assert_eq!(k.rr_type, "TXT");
        assert_eq!(k.id(), "Z1_acme_challenge.example.com_TXT");
        assert!(parse_id("Z1_www.example.com_MX").is_none());
        assert!(parse_id("nonsense").is_none());
        let from_state = RecordKey::of(&config("DB.example.com.", "A", &["10.0.0.1"])).unwrap();
        assert_eq!(from_state.id(), "Z1_db.example.com_A");
    }

    #[test]
    fn a_records_need_ipv4_addresses() {
        let mut d = Diagnostics::new();
        check_config(&config("db.example.com", "A", &["10.0.0.1", "10.0.0.300"]), &mut d);
        assert_eq!(d.0.len(), 1);
        assert!(d.0[0].summary.contains(code::BAD_VALUE) && d.0[0].summary.contains("10.0.0.300"));
        assert_eq!(d.0[0].path, Some(AttrPath::root("records")));
    }

    #[test]
    fn bad_type_name_and_cname_count_are_reported_on_their_attributes() {
        let mut d = Diagnostics::new();
        check_config(&config("bad name.example.com", "MX", &["a"]), &mut d);
        let paths: Vec<_> = d.0.iter().filter_map(|x| x.path.clone()).collect();
        assert!(paths.contains(&AttrPath::root("name")) && paths.contains(&AttrPath::root("type")), "{d:?}");
        let mut d = Diagnostics::new();
        check_config(&config("www.example.com", "CNAME", &["a.example.com", "b.example.com"]), &mut d);
        assert!(d.0[0].summary.contains("exactly one"));
    }

    #[test]
    fn delete_owns_only_the_values_in_state() {
        let set = record_set(&parse_id("Z1_db.example.com_TXT").unwrap(), 60, &["b".into(), "a".into()]).unwrap();
        assert!(same_values("TXT", &set, 60, &["a".into(), "b".into()]));
        assert!(!same_values("TXT", &set, 30, &["a".into(), "b".into()]));
        assert!(!same_values("TXT", &set, 60, &["a".into()]));
    }

    #[test]
    fn txt_values_are_quoted_for_route53_and_unquoted_in_state() {
        assert_eq!(expand_value("TXT", "v=spf1 -all"), "\"v=spf1 -all\"");
        assert_eq!(flatten_value("TXT", "\"v=spf1 -all\""), "v=spf1 -all");
        assert_eq!(expand_value("A", "10.0.0.1"), "10.0.0.1");
        assert_eq!(flatten_value("TXT", "\"a\" \"b\""), "\"a\" \"b\"");
    }
}
