//! data `tandem_availability_zones`: the region's availability zones, as the AWS provider's
//! `aws_availability_zones` (state filter; names and zone IDs in the same order).

use async_trait::async_trait;
use aws_sdk_ec2::types::{AvailabilityZone, Filter};

use super::{object, report};
use crate::aws::{AwsContext, AwsError};
use crate::framework::{Attribute, Block, DataSource, Diagnostics, Schema, Type, Value};

pub struct AvailabilityZones;

const STATES: [&str; 4] = ["available", "information", "impaired", "unavailable"];

/// Finder: the region's zones (of type availability-zone), optionally only those in `state`, sorted by name.
pub(crate) async fn find_availability_zones(
    ctx: &AwsContext,
    state: Option<&str>,
) -> Result<Vec<AvailabilityZone>, AwsError> {
    let mut call = ctx.ec2.describe_availability_zones();
    if let Some(state) = state {
        call = call.filters(Filter::builder().name("state").values(state).build());
    }
    let out = call.send().await.map_err(AwsError::from_sdk)?;
    let mut zones: Vec<AvailabilityZone> = out
        .availability_zones()
        .iter()
        .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
        .cloned()
        .collect();
    zones.sort_by(|a, b| a.zone_name().cmp(&b.zone_name()));
    Ok(zones)
}

fn state_filter(v: &Value) -> Result<(), String> {
    let s = v.as_str().unwrap_or_default();
    if STATES.contains(&s) { Ok(()) } else { Err(format!("{s:?} is not one of {}", STATES.join(", "))) }
}

#[async_trait]
impl DataSource for AvailabilityZones {
    fn type_name(&self) -> &'static str {
        "tandem_availability_zones"
    }

    fn schema(&self) -> Schema {
        let strings = Type::List(Box::new(Type::String));
        Schema::new(
            0,
            Block::new("The availability zones of the provider's region, e.g. to spread cluster nodes over two zones.")
                .attr(Attribute::computed_volatile("id", Type::String).describe("The region name."))
                .attr(
                    Attribute::optional("state", Type::String)
                        .validate(state_filter)
                        .describe("Only zones in this state: `available`, `information`, `impaired` or `unavailable`."),
                )
                .attr(Attribute::computed_volatile("names", strings.clone()).describe("Zone names, sorted."))
                .attr(Attribute::computed_volatile("zone_ids", strings).describe("Zone IDs, in the order of `names`.")),
        )
    }

    async fn read(&self, ctx: &AwsContext, config: &Value, diags: &mut Diagnostics) -> Option<Value> {
        let state = config.attr("state").as_str();
        match find_availability_zones(ctx, state).await {
            Ok(zones) => Some(object([
                ("id", Value::from(ctx.region.as_str())),
                ("state", config.attr("state").clone()),
                ("names", Value::List(zones.iter().filter_map(|z| z.zone_name()).map(Value::from).collect())),
                ("zone_ids", Value::List(zones.iter().filter_map(|z| z.zone_id()).map(Value::from).collect())),
            ])),
            Err(e) => {
                report(diags, "reading", "EC2 Availability Zones", None, &e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_filter_accepts_aws_states_only() {
        assert!(state_filter(&"available".into()).is_ok());
        assert!(state_filter(&"up".into()).is_err());
    }
}
