//! `arbitration { }`: the lease per failover group (DynamoDB, conditional writes).

use std::time::Duration;

use super::error::{ConfigPath, ErrorCode};
use super::format_duration;
use super::parse::{self, Cx, Reader};
use super::render::HclBlock;
use super::shape;
use super::validate::Validator;

pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// Why `fencing` is gone, for a config that still sets it (any value: `"none"` was the only other one).
const FENCING_REMOVED: &str = "stop_instance fencing was removed (tandemd never carried it out); the fencer \
                               (tandem-fencer.service, docs/fencing.md) replaces it";
/// `race_delay` only ever applied to stop_instance fencing.
const RACE_DELAY_REMOVED: &str = "race_delay was removed together with stop_instance fencing; the fencer \
                                  (tandem-fencer.service, docs/fencing.md) replaces it";
const REMOVED_HINT: &str = "delete the line: the fencer needs no setting in the arbitration block (docs/fencing.md)";

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
}

impl Default for Arbitration {
    fn default() -> Arbitration {
        Arbitration { table: None, region: None, ttl: DEFAULT_LEASE_TTL, renew_interval: DEFAULT_RENEW_INTERVAL }
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
        r.removed(cx, "fencing", FENCING_REMOVED, REMOVED_HINT);
        r.removed(cx, "race_delay", RACE_DELAY_REMOVED, REMOVED_HINT);
        Some(Arbitration { table, region, ttl, renew_interval })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.opt_str("table", self.table.as_deref());
        b.opt_str("region", self.region.as_deref());
        b.duration("ttl", self.ttl);
        b.duration("renew_interval", self.renew_interval);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{codes, two_nodes};

    const NODES: &str =
        "cluster \"c\" {}\nnode \"a\" {\n  private_ip = \"10.0.0.1\"\n  availability_zone = \"us-east-1a\"\n}\n";

    #[test]
    fn fencing_and_race_delay_are_removed_and_point_to_the_fencer() {
        for (line, attribute) in [
            ("fencing = \"stop_instance\"", "fencing"),
            ("fencing = \"none\"", "fencing"),
            ("race_delay = \"5s\"", "race_delay"),
        ] {
            let src = format!("{NODES}arbitration {{\n  {line}\n}}\n");
            let errors = crate::config::parse(&src).expect_err(line).errors;
            assert_eq!(errors.len(), 1, "{line}: {errors:?}");
            let e = &errors[0];
            assert_eq!(e.code, ErrorCode::UnknownName, "{line}");
            assert_eq!(e.path, Arbitration::path().attr(attribute), "{line}");
            assert!(e.message.contains("stop_instance fencing"), "{line}: {}", e.message);
            assert!(e.message.contains("removed") && e.message.contains("docs/fencing.md"), "{line}: {}", e.message);
            assert!(!e.message.contains("unknown attribute"), "{line}: not the spelling message: {}", e.message);
            assert!(e.hint.starts_with("delete the line") && !e.hint.contains("did you mean"), "{line}: {}", e.hint);
            assert_eq!(e.location.map(|l| l.line), Some(7), "{line}: at the attribute");
        }
    }

    #[test]
    fn a_removed_name_is_not_offered_as_a_spelling_fix() {
        let src = format!("{NODES}arbitration {{\n  fencin = \"none\"\n}}\n");
        let errors = crate::config::parse(&src).expect_err("unknown attribute").errors;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("unknown attribute \"fencin\""), "{}", errors[0].message);
        assert!(!errors[0].hint.contains("fencing"), "{}", errors[0].hint);
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
