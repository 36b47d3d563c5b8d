//! Attribute validators shared by resources. Each checks one known, non-null value.

use tandem_runtime::net::{parse_ipv4, parse_ipv4_cidr};

use super::cty::Value;

/// An IPv4 CIDR block AWS accepts for a VPC or subnet: prefix /16 to /28.
pub fn vpc_cidr(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    let net = parse_ipv4_cidr(text).map_err(|e| e.to_string())?;
    if !(16..=28).contains(&net.prefix_len()) {
        return Err(format!("{text:?}: AWS allows prefix lengths /16 to /28 for VPCs and subnets"));
    }
    Ok(())
}

pub fn ipv4_address(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    parse_ipv4(text).map(|_| ()).map_err(|e| e.to_string())
}

/// AWS availability zone names look like `us-east-1a` / `us-west-2-lax-1a`.
pub fn availability_zone_name(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    let ok = text.len() >= 4
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && text.chars().last().is_some_and(|c| c.is_ascii_lowercase())
        && text.contains('-');
    if ok { Ok(()) } else { Err(format!("{text:?} is not an availability zone name such as us-east-1a")) }
}

/// A duration as `timeouts` blocks take it: `10m`, `90s`, `1h30m`.
pub fn duration(v: &Value) -> Result<(), String> {
    let text = v.as_str().ok_or("expected a string")?;
    crate::aws::wait::parse_duration(text).map(|_| ())
}

pub fn not_empty(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some(s) if !s.trim().is_empty() => Ok(()),
        _ => Err("must not be empty".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpc_cidr_accepts_network_addresses_only() {
        assert!(vpc_cidr(&"10.0.0.0/16".into()).is_ok());
        assert!(vpc_cidr(&"10.0.0.1/16".into()).unwrap_err().contains("host bits"));
        assert!(vpc_cidr(&"10.0.0.0/33".into()).is_err());
        assert!(vpc_cidr(&"10.0.0.0/8".into()).unwrap_err().contains("/16 to /28"));
        assert!(vpc_cidr(&"banana".into()).is_err());
    }

    #[test]
    fn az_names_are_checked_for_shape() {
        assert!(availability_zone_name(&"us-east-1a".into()).is_ok());
        assert!(availability_zone_name(&"US-EAST-1A".into()).is_err());
        assert!(availability_zone_name(&"us-east-1".into()).is_err());
    }
}
