//! `arbitration { }`: the lease per failover group (DynamoDB, conditional writes) and optional fencing.

use std::time::Duration;

use super::choice::choice;
use super::error::{ConfigPath, ErrorCode};
use super::format_duration;
use super::parse::{self, Cx, Reader};
use super::render::HclBlock;
use super::shape;
use super::validate::Validator;

pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_RACE_DELAY: Duration = Duration::from_secs(5);

choice!(
    /// How the HCL spells the fencing mode.
    pub enum FencingMode {
        None = "none",
        StopInstance = "stop_instance",
    }
);

/// The second layer after the lease: what a node does to a lost peer before taking over its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// Rely on the lease alone (the default).
    None,
    /// EC2 StopInstances on the lost peer and wait for `stopped`. The node that is not first in the group's
    /// server list waits `race_delay` before fencing, so that two nodes that lost only their interconnect do
    /// not stop each other at once.
    StopInstance { race_delay: Duration },
}

impl Fencing {
    pub fn mode(&self) -> FencingMode {
        match self {
            Fencing::None => FencingMode::None,
            Fencing::StopInstance { .. } => FencingMode::StopInstance,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arbitration {
    /// DynamoDB table holding one lease item per group. Default (None): `tandem-<cluster>-leases`.
    pub table: Option<String>,
    /// Region of the table. Default (None): the region of the nodes' zones.
    pub region: Option<String>,
    /// How long a lease is valid after each renewal. Must exceed 2 x `renew_interval`. Default 5s.
    pub ttl: Duration,
    /// How often the holder renews. Default 1s.
    pub renew_interval: Duration,
    /// Default: none.
    pub fencing: Fencing,
}

impl Default for Arbitration {
    fn default() -> Arbitration {
        Arbitration {
            table: None,
            region: None,
            ttl: DEFAULT_LEASE_TTL,
            renew_interval: DEFAULT_RENEW_INTERVAL,
            fencing: Fencing::None,
        }
    }
}

impl Arbitration {
    pub(crate) fn path() -> ConfigPath {
        ConfigPath::root().block("arbitration", "", 0)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<Arbitration> {
        let table = r.opt(cx, "table", parse::string);
        let region = r.opt(cx, "region", parse::string);
        let ttl = r.or(cx, "ttl", parse::duration, DEFAULT_LEASE_TTL);
        let renew_interval = r.or(cx, "renew_interval", parse::duration, DEFAULT_RENEW_INTERVAL);
        let mode = r.or(cx, "fencing", parse::choice::<FencingMode>, FencingMode::None);
        let race_delay = r.opt(cx, "race_delay", parse::duration);
        let fencing = match mode {
            FencingMode::StopInstance => Fencing::StopInstance { race_delay: race_delay.unwrap_or(DEFAULT_RACE_DELAY) },
            FencingMode::None => {
                if race_delay.is_some() {
                    let at = r.path.attr("race_delay");
                    cx.error(
                        ErrorCode::NotApplicable,
                        &at,
                        format!("{at}: race_delay applies only with fencing = \"stop_instance\""),
                    );
                    return None;
                }
                Fencing::None
            }
        };
        Some(Arbitration { table, region, ttl, renew_interval, fencing })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.opt_str("table", self.table.as_deref());
        b.opt_str("region", self.region.as_deref());
        b.duration("ttl", self.ttl);
        b.duration("renew_interval", self.renew_interval);
        b.choice("fencing", self.fencing.mode());
        if let Fencing::StopInstance { race_delay } = self.fencing {
            b.duration("race_delay", race_delay);
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        let path = Arbitration::path();
        if let Some(table) = &self.table {
            let ok = (3..=255).contains(&table.len())
                && table.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                let at = path.attr("table");
                v.error(
                    ErrorCode::BadName,
                    &at,
                    format!("{at}: {table:?} is not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)"),
                );
            }
        }
        if let Some(region) = &self.region
            && let Err(message) = shape::check_region(region)
        {
            let at = path.attr("region");
            v.error(ErrorCode::BadAvailabilityZone, &at, format!("{at}: {message}"));
        }
        v.positive(&path.attr("renew_interval"), self.renew_interval);
        v.whole_millis(&path.attr("ttl"), self.ttl);
        if self.ttl <= self.renew_interval * 2 {
            let at = path.attr("ttl");
            v.error(
                ErrorCode::LeaseTtl,
                &at,
                format!(
                    "{at}: the lease ttl ({}) must be more than twice the renew interval ({})",
                    format_duration(self.ttl),
                    format_duration(self.renew_interval)
                ),
            );
        }
        if let Fencing::StopInstance { race_delay } = self.fencing {
            v.whole_millis(&path.attr("race_delay"), race_delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{codes, parse_codes, two_nodes};

    const NODES: &str =
        "cluster \"c\" {}\nnode \"a\" {\n  private_ip = \"10.0.0.1\"\n  availability_zone = \"us-east-1a\"\n}\n";

    #[test]
    fn race_delay_needs_stop_instance_fencing() {
        assert_eq!(parse_codes(&format!("{NODES}arbitration {{\n  race_delay = \"1s\"\n}}\n")), vec!["TDM-CFG-022"]);
        let c = crate::config::parse(&format!("{NODES}arbitration {{\n  fencing = \"stop_instance\"\n}}\n")).unwrap();
        assert_eq!(c.arbitration.fencing, Fencing::StopInstance { race_delay: DEFAULT_RACE_DELAY });
    }

    #[test]
    fn ttl_must_exceed_twice_the_renew_interval() {
        let mut c = two_nodes();
        c.arbitration.ttl = Duration::from_secs(2);
        c.arbitration.renew_interval = Duration::from_secs(1);
        assert_eq!(codes(&c), vec!["TDM-CFG-020"]);
        c.arbitration.ttl = Duration::from_millis(2001);
        assert!(codes(&c).is_empty());
    }

    #[test]
    fn table_and_region_shapes_are_checked() {
        let mut c = two_nodes();
        c.arbitration.table = Some("x".into());
        c.arbitration.region = Some("useast1".into());
        assert_eq!(codes(&c), vec!["TDM-CFG-009", "TDM-CFG-018"]);
    }
}
