//! `resource "aws_dns"` at run time: a Route 53 A record that holds the active node's IP.
//!
//! - start: ListResourceRecordSets; the record already holds exactly our IP with the configured TTL → ok.
//!   Otherwise ChangeResourceRecordSets UPSERT (TTL, our IP: the per-node override, else the common `ip`, else
//!   the node's private IP), then GetChange until INSYNC, bounded by [`SYNC_TIMEOUT`].
//! - stop: with `delete_on_deactivate`, DELETE the record only while it still holds our value, in one change
//!   batch carrying the exact current values (Route 53 refuses a DELETE whose values differ, so a record another
//!   node has just UPSERTed survives even a race). A record that is not ours is left alone (TDM-AWS-141, logged).
//!   When Route 53 cannot be asked, the stop succeeds and leaves the record (TDM-AWS-142, logged): the next owner
//!   rewrites it, and a failed stop would get this node shut down.
//! - probe: the record exists and holds our IP → `Running`. Without `delete_on_deactivate` the record outlives a
//!   stop, so the resource also remembers (in memory) whether it was started here.
//!
//! A hosted zone that does not exist is fatal (TDM-AWS-114).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};

use super::{ErrorClass, GroupResource, Invocation, Probe, ResourceContext, ResourceError};
use crate::aws::{
    AwsEnv, AwsFailure, CODE_DNS_NOT_INSYNC, CODE_RECORD_NOT_OURS, CODE_REJECTED, CODE_STOP_LEFT_IN_PLACE, Calls,
};
use crate::config::AwsDns;

/// How long a start or stop waits for Route 53 to report the change INSYNC (it is usually < 60 s).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// First and longest pause between two GetChange calls.
const SYNC_POLL_FIRST: Duration = Duration::from_millis(500);
const SYNC_POLL_MAX: Duration = Duration::from_secs(5);

pub struct AwsDnsResource {
    name: String,
    subject: String,
    config: AwsDns,
    /// Lower case, with the trailing dot.
    record_name: String,
    value: Ipv4Addr,
    env: AwsEnv,
    calls: Calls,
    sync_timeout: Duration,
    /// Started here (and not stopped since): needed when the record outlives a stop.
    active: AtomicBool,
    actions: tokio::sync::Mutex<()>,
}

impl AwsDnsResource {
    pub fn new(name: &str, config: &AwsDns, cx: &ResourceContext, env: &AwsEnv) -> AwsDnsResource {
        AwsDnsResource {
            name: name.to_string(),
            subject: format!("aws_dns {}/{name}", cx.group),
            config: config.clone(),
            record_name: normalize_name(&config.record_name),
            value: config.ip_for(&env.node().as_node()),
            env: env.clone(),
            calls: Calls::default(),
            sync_timeout: SYNC_TIMEOUT,
            active: AtomicBool::new(false),
            actions: tokio::sync::Mutex::new(()),
        }
    }

    /// The address this node puts into the record.
    pub fn value(&self) -> Ipv4Addr {
        self.value
    }

    /// AWS calls made by this resource, by action, since creation or [`reset_calls`](Self::reset_calls).
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.snapshot()
    }

    pub fn reset_calls(&self) {
        self.calls.reset();
    }

    fn target(&self) -> String {
        format!("record {} in hosted zone {}", self.record_name, self.config.hosted_zone_id)
    }

    fn fail(&self, f: AwsFailure) -> ResourceError {
        if f.has_code("NoSuchHostedZone") {
            return f.to_resource_error(&self.subject, &format!("hosted zone {}", self.config.hosted_zone_id));
        }
        f.to_resource_error(&self.subject, &self.target())
    }

    /// The record set as Route 53 holds it (simple routing only), or None.
    async fn find(&self) -> Result<Option<ResourceRecordSet>, ResourceError> {
        let r53 = &self.env.clients().await?.route53;
        let req = r53
            .list_resource_record_sets()
            .hosted_zone_id(&self.config.hosted_zone_id)
            .start_record_name(&self.record_name)
            .start_record_type(RrType::A)
            .max_items(1);
        let out =
            self.env.call(&self.calls, "route53:ListResourceRecordSets", req.send()).await.map_err(|f| self.fail(f))?;
        Ok(out
            .resource_record_sets()
            .iter()
            .find(|r| {
                normalize_name(r.name()) == self.record_name && r.r#type() == &RrType::A && r.set_identifier().is_none()
            })
            .cloned())
    }

    fn holds_ours(&self, set: &ResourceRecordSet) -> bool {
        holds_only(set, self.value)
    }

    /// Sends one change and waits until it is INSYNC.
    async fn change(&self, action: ChangeAction, set: ResourceRecordSet) -> Result<(), ResourceError> {
        let build = |e: aws_sdk_route53::error::BuildError| {
            ResourceError::new(ErrorClass::Hard, CODE_REJECTED, format!("{}: building the change: {e}", self.subject))
        };
        let change = Change::builder().action(action).resource_record_set(set).build().map_err(build)?;
        let batch = ChangeBatch::builder().changes(change).build().map_err(build)?;
        let r53 = &self.env.clients().await?.route53;
        let req = r53.change_resource_record_sets().hosted_zone_id(&self.config.hosted_zone_id).change_batch(batch);
        let out = self
            .env
            .call(&self.calls, "route53:ChangeResourceRecordSets", req.send())
            .await
            .map_err(|f| self.fail(f))?;
        let Some(info) = out.change_info() else { return Ok(()) };
        if info.status() == &ChangeStatus::Insync {
            return Ok(());
        }
        let id = info.id().trim_start_matches("/change/").to_string();
        let get = || async {
            let out = self
                .env
                .call(&self.calls, "route53:GetChange", r53.get_change().id(&id).send())
                .await
                .map_err(|f| self.fail(f))?;
            Ok(out.change_info().map_or(ChangeStatus::Pending, |c| c.status().clone()))
        };
        match wait_insync(self.sync_timeout, SYNC_POLL_FIRST, get).await? {
            true => Ok(()),
            false => Err(ResourceError::new(
                ErrorClass::Soft,
                CODE_DNS_NOT_INSYNC,
                format!(
                    "{}: Route 53 change {id} for {} is not INSYNC after {} s",
                    self.subject,
                    self.target(),
                    self.sync_timeout.as_secs()
                ),
            )),
        }
    }

    fn our_set(&self) -> Result<ResourceRecordSet, ResourceError> {
        let build = |e: aws_sdk_route53::error::BuildError| {
            ResourceError::new(ErrorClass::Hard, CODE_REJECTED, format!("{}: building the record: {e}", self.subject))
        };
        let record = ResourceRecord::builder().value(self.value.to_string()).build().map_err(build)?;
        ResourceRecordSet::builder()
            .name(&self.record_name)
            .r#type(RrType::A)
            .ttl(i64::from(self.config.ttl))
            .resource_records(record)
            .build()
            .map_err(build)
    }

    /// Stop's work: DELETE the record while it still holds our value.
    async fn delete_if_ours(&self) -> Result<(), ResourceError> {
        let current = match self.find().await {
            Ok(c) => c,
            Err(e) if e.class == ErrorClass::Fatal => {
                tracing::warn!(resource = %self.subject, "{e}; nothing to delete");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(current) = current else { return Ok(()) };
        if !self.holds_ours(&current) {
            let values: Vec<&str> = current.resource_records().iter().map(|r| r.value()).collect();
            tracing::warn!(
                code = CODE_RECORD_NOT_OURS,
                resource = %self.subject,
                "{} holds {} instead of {}: someone else changed it; not deleting it",
                self.record_name,
                values.join(", "),
                self.value
            );
            return Ok(());
        }
        match self.change(ChangeAction::Delete, current).await {
            Ok(()) => Ok(()),
            // The values changed between our read and the DELETE: Route 53 refused it, the record is not ours.
            Err(e) if e.message.contains("InvalidChangeBatch") => {
                tracing::warn!(code = CODE_RECORD_NOT_OURS, resource = %self.subject, "not deleting: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl GroupResource for AwsDnsResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "aws_dns"
    }

    async fn start(&self, _inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        let current = self.find().await?;
        let up_to_date =
            current.as_ref().is_some_and(|s| self.holds_ours(s) && s.ttl() == Some(i64::from(self.config.ttl)));
        if !up_to_date {
            let started = Instant::now();
            self.change(ChangeAction::Upsert, self.our_set()?).await?;
            tracing::info!(
                resource = %self.subject,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "{} now points at {}",
                self.record_name,
                self.value
            );
        }
        self.active.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn stop(&self, _inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        self.active.store(false, Ordering::SeqCst);
        if !self.config.delete_on_deactivate {
            return Ok(());
        }
        // A DELETE that cannot reach Route 53 leaves the record in place: the next owner UPSERTs its own value
        // over it, and a failed stop would have this node shut down (a failed stop is fenced) over an API hiccup.
        if let Err(e) = self.delete_if_ours().await {
            tracing::warn!(
                code = CODE_STOP_LEFT_IN_PLACE,
                cause = e.code,
                resource = %self.subject,
                "stop: {e}; {} may keep pointing at this node until the next active node rewrites it",
                self.record_name
            );
        }
        Ok(())
    }

    async fn probe(&self, _inv: &Invocation) -> Result<Probe, ResourceError> {
        if !self.config.delete_on_deactivate && !self.active.load(Ordering::SeqCst) {
            return Ok(Probe::Stopped);
        }
        let current = self.find().await?;
        Ok(if current.as_ref().is_some_and(|s| self.holds_ours(s)) { Probe::Running } else { Probe::Stopped })
    }
}

/// Lower case, with exactly one trailing dot (Route 53 answers names that way).
pub fn normalize_name(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// True when the record set holds exactly one value, `ip`.
fn holds_only(set: &ResourceRecordSet, ip: Ipv4Addr) -> bool {
    let values = set.resource_records();
    set.alias_target().is_none() && values.len() == 1 && values[0].value().trim().parse::<Ipv4Addr>() == Ok(ip)
}

/// Polls `get` until it answers INSYNC (Ok(true)) or `timeout` passes (Ok(false)); the pause between polls
/// doubles from `first` up to [`SYNC_POLL_MAX`]. Errors of `get` end the wait.
async fn wait_insync<F, Fut>(timeout: Duration, first: Duration, mut get: F) -> Result<bool, ResourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ChangeStatus, ResourceError>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = first;
    loop {
        if get().await? == ChangeStatus::Insync {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(SYNC_POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn set(values: &[&str]) -> ResourceRecordSet {
        let mut b = ResourceRecordSet::builder().name("app.example.internal.").r#type(RrType::A).ttl(60);
        for v in values {
            b = b.resource_records(ResourceRecord::builder().value(*v).build().expect("record"));
        }
        b.build().expect("set")
    }

    #[test]
    fn names_are_compared_lower_case_with_a_trailing_dot() {
        assert_eq!(normalize_name("App.Example.Internal"), "app.example.internal.");
        assert_eq!(normalize_name("app.example.internal."), "app.example.internal.");
    }

    #[test]
    fn only_a_record_with_exactly_our_ip_is_ours() {
        let ip = Ipv4Addr::new(10, 0, 1, 10);
        assert!(holds_only(&set(&["10.0.1.10"]), ip));
        assert!(!holds_only(&set(&["10.0.2.10"]), ip));
        assert!(!holds_only(&set(&["10.0.1.10", "10.0.2.10"]), ip));
        assert!(!holds_only(&set(&[]), ip));
    }

    #[tokio::test]
    async fn waiter_polls_until_insync() {
        let polls = AtomicU32::new(0);
        let got = wait_insync(Duration::from_secs(5), Duration::from_millis(1), || async {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            Ok(if n < 3 { ChangeStatus::Pending } else { ChangeStatus::Insync })
        })
        .await;
        assert_eq!(got, Ok(true));
        assert_eq!(polls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn waiter_gives_up_at_its_bound() {
        let got =
            wait_insync(Duration::from_millis(30), Duration::from_millis(5), || async { Ok(ChangeStatus::Pending) })
                .await;
        assert_eq!(got, Ok(false));
    }

    #[tokio::test]
    async fn waiter_stops_on_an_error() {
        let err = ResourceError::new(ErrorClass::Soft, "TDM-AWS-101", "down");
        let got = wait_insync(Duration::from_secs(5), Duration::from_millis(1), || {
            let err = err.clone();
            async move { Err(err) }
        })
        .await;
        assert_eq!(got, Err(err));
    }
}
