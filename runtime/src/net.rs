//! IPv4 address and CIDR rules as AWS applies them, shared by plan-time validation and the runtime.

use std::net::Ipv4Addr;

pub use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    #[error("{0:?} is not an IPv4 CIDR block such as 10.0.0.0/16")]
    NotACidr(String),
    #[error("{text:?} has host bits set; the network address is {network}")]
    HostBitsSet { text: String, network: Ipv4Net },
    #[error("{0:?} is not an IPv4 address")]
    NotAnAddress(String),
}

impl NetError {
    pub fn code(&self) -> &'static str {
        match self {
            NetError::NotACidr(_) => "TDM-NET-001",
            NetError::HostBitsSet { .. } => "TDM-NET-002",
            NetError::NotAnAddress(_) => "TDM-NET-003",
        }
    }
}

/// Parses `a.b.c.d/n` strictly: the address must be the network address (AWS rejects host bits).
pub fn parse_ipv4_cidr(text: &str) -> Result<Ipv4Net, NetError> {
    let net: Ipv4Net = text.parse().map_err(|_| NetError::NotACidr(text.to_string()))?;
    if net.network() != net.addr() {
        return Err(NetError::HostBitsSet { text: text.to_string(), network: net.trunc() });
    }
    Ok(net)
}

pub fn parse_ipv4(text: &str) -> Result<Ipv4Addr, NetError> {
    text.parse().map_err(|_| NetError::NotAnAddress(text.to_string()))
}

/// True when `inner` lies entirely inside one of `outer`.
pub fn inside_any(inner: &Ipv4Net, outer: &[Ipv4Net]) -> bool {
    outer.iter().any(|o| o.contains(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_must_be_network_addresses() {
        assert_eq!(parse_ipv4_cidr("10.0.0.0/16").unwrap().prefix_len(), 16);
        let e = parse_ipv4_cidr("10.0.0.1/16").unwrap_err();
        assert_eq!(e.code(), "TDM-NET-002");
        assert!(e.to_string().contains("10.0.0.0/16"));
        assert!(matches!(parse_ipv4_cidr("10.0.0.0/33"), Err(NetError::NotACidr(_))));
        assert!(parse_ipv4("10.0.0.300").is_err());
    }

    #[test]
    fn containment_checks_every_block() {
        let vpc = [parse_ipv4_cidr("10.0.0.0/16").unwrap(), parse_ipv4_cidr("10.1.0.0/16").unwrap()];
        assert!(inside_any(&parse_ipv4_cidr("10.1.2.0/24").unwrap(), &vpc));
        assert!(!inside_any(&parse_ipv4_cidr("10.2.0.0/24").unwrap(), &vpc));
        assert!(!inside_any(&parse_ipv4_cidr("10.0.0.0/15").unwrap(), &vpc));
    }
}
