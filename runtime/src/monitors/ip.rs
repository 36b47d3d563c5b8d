//! `monitor "ip"`: ICMP echo to each of the node's targets (e.g. the NAT of its zone), to check the subnet's
//! health. Every target is pinged in parallel (the NP witness's ping, [`crate::membership::witness`]):
//! all answer = ok; some answer = warn (naming the silent ones); none answers = error.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Check, Outcome};
use crate::config::NpProbe;
use crate::membership::witness::Witness;

/// No target answered.
pub const CODE_IP_NONE_ANSWERED: &str = "TDM-MON-013";

/// Each echo waits this share of the monitor's timeout (in quarters), so that the check can report which
/// targets answered before the monitor's own timeout ends it.
const ECHO_SHARE_QUARTERS: u32 = 3;

pub struct IpCheck {
    targets: Vec<Ipv4Addr>,
    echo_timeout: Duration,
}

impl IpCheck {
    /// `timeout` is the monitor's; each echo waits three quarters of it.
    pub fn new(targets: Vec<Ipv4Addr>, timeout: Duration) -> IpCheck {
        let echo_timeout = (timeout * ECHO_SHARE_QUARTERS / 4).max(Duration::from_millis(1));
        IpCheck { targets, echo_timeout }
    }
}

#[async_trait::async_trait]
impl Check for IpCheck {
    fn kind(&self) -> &'static str {
        "ip"
    }

    async fn check(&self) -> Outcome {
        let mut pings = JoinSet::new();
        for (i, &address) in self.targets.iter().enumerate() {
            let timeout = self.echo_timeout;
            pings.spawn(async move { (i, Witness::new(NpProbe::Ping { address }).probe(timeout).await) });
        }
        let mut failures: Vec<Option<String>> = vec![None; self.targets.len()];
        let mut answered = 0usize;
        while let Some(joined) = pings.join_next().await {
            match joined {
                Ok((_, Ok(()))) => answered += 1,
                Ok((i, Err(e))) => failures[i] = Some(e.reason()),
                Err(e) => tracing::warn!("an ip monitor ping ended abnormally: {e}"),
            }
        }
        let silent: Vec<String> = self
            .targets
            .iter()
            .zip(&failures)
            .filter_map(|(t, f)| f.as_ref().map(|reason| format!("{t} ({reason})")))
            .collect();
        if answered == self.targets.len() {
            Outcome::Ok
        } else if answered > 0 {
            Outcome::Warn(format!(
                "{} of {} targets did not answer: {}",
                self.targets.len() - answered,
                self.targets.len(),
                silent.join("; ")
            ))
        } else {
            Outcome::error(CODE_IP_NONE_ANSWERED, format!("no ping target answered: {}", silent.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_echo_waits_three_quarters_of_the_timeout() {
        let check = IpCheck::new(vec![Ipv4Addr::LOCALHOST], Duration::from_secs(4));
        assert_eq!(check.echo_timeout, Duration::from_secs(3));
    }
}
