//! Lease arbitration: one lease item per failover group in DynamoDB, taken and kept by conditional writes.
//!
//! The item (key `group`, S) carries the holder's node name and incarnation, the fencing token (N, incremented on
//! every takeover; a new item starts at the Unix time in milliseconds, see [`first_token`]), the holder's claimed
//! lease duration in milliseconds and a version (N, incremented on every write). No wall clock is ever compared
//! across nodes:
//!
//! - the holder believes it holds the lease until `start of its last successful write + ttl - drift margin`
//!   on its own monotonic clock ([`LeaseTiming::holder_validity`]);
//! - a contender may take over only after it has seen the *same version* of the item for at least
//!   `ttl + drift margin` on its own monotonic clock ([`LeaseTiming::contender_wait`]), and only by a conditional
//!   write on that version, so a renewal landing in between makes the takeover fail.
//!
//! With clock rates within `1 ± MAX_DRIFT_RATE` of real time, the holder's belief ends strictly before the earliest
//! real time a contender can take over (see docs/architecture.md, "Lease arbitration").
//!
//! The item also carries the Outdated marks of the group's mirror disks ([`LeaseStore::mark_outdated`],
//! [`LeaseStore::clear_outdated`]; docs/mirror.md, "The Outdated mark").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use tokio::sync::watch;

/// Bound on how far any node's monotonic clock rate may stray from real time: 1 % (10 000 ppm).
pub const MAX_DRIFT_PPM: u64 = 10_000;
/// Fixed slack added to the drift margin on both sides (timer granularity, scheduling jitter).
pub const MARGIN_SLACK: Duration = Duration::from_millis(10);
/// Shortest lease ttl the timing model accepts.
pub const MIN_TTL: Duration = Duration::from_millis(100);

const A_GROUP: &str = "group";
const A_HOLDER: &str = "holder";
const A_INCARNATION: &str = "incarnation";
const A_TOKEN: &str = "token";
const A_TTL_MS: &str = "ttl_ms";
const A_VERSION: &str = "version";
/// Operator requests carried by the item (see [`LeaseStore::request_move`], [`LeaseStore::set_stopped`]).
const A_TARGET: &str = "target";
const A_STOPPED: &str = "stopped";
/// Outdated replicas of the group's mirror disks (see [`LeaseStore::mark_outdated`]): a map (M) keyed by the mirror
/// resource's name, each value a map of the fields below.
const A_OUTDATED: &str = "outdated";
const M_NODE: &str = "node";
const M_GENERATION: &str = "generation";
const M_BY: &str = "by";
const M_TOKEN: &str = "token";

/// Errors of the lease store; `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease of group {group}: another node wrote the lease item first (lost race); retry after reading it")]
    LostRace { group: String },
    #[error("lease of group {group}: node {node} no longer holds token {token}; stop the group")]
    NotHolder { group: String, node: String, token: u64 },
    #[error("lease table {table} does not exist; create it (key `group`, type S) or set arbitration.table")]
    TableMissing { table: String },
    #[error("lease table {table}: DynamoDB throttled {action}; raise the table's capacity or use on-demand mode")]
    Throttled { table: String, action: &'static str },
    #[error("lease table {table}: DynamoDB unreachable during {action}: {detail}; check the VPC endpoint and routes")]
    Unreachable { table: String, action: &'static str, detail: String },
    #[error("lease table {table}: access denied to dynamodb:{action}; allow it in the node's instance role")]
    AccessDenied { table: String, action: &'static str },
    #[error("lease table {table}: {action} failed: {code}: {message}")]
    Api { table: String, action: &'static str, code: String, message: String },
    #[error("lease table {table}: item of group {group} is malformed: {detail}")]
    Malformed { table: String, group: String, detail: String },
    #[error("lease timing: {0}; lengthen the ttl or shorten renew_interval")]
    Timing(String),
    #[error(
        "lease of group {group}: the outdated mark of mirror {resource} no longer names node {node} at generation \
         {generation:#018x} (now: {now}); it was not cleared — read the lease item and resync again"
    )]
    MarkChanged { group: String, resource: String, node: String, generation: u64, now: String },
    #[error("lease of group {group}: invalid outdated mark: {detail}")]
    InvalidMark { group: String, detail: String },
}

impl LeaseError {
    pub fn code(&self) -> &'static str {
        match self {
            LeaseError::LostRace { .. } => "TDM-LEASE-001",
            LeaseError::NotHolder { .. } => "TDM-LEASE-002",
            LeaseError::TableMissing { .. } => "TDM-LEASE-003",
            LeaseError::Throttled { .. } => "TDM-LEASE-004",
            LeaseError::Unreachable { .. } => "TDM-LEASE-005",
            LeaseError::AccessDenied { .. } => "TDM-LEASE-006",
            LeaseError::Api { .. } => "TDM-LEASE-007",
            LeaseError::Malformed { .. } => "TDM-LEASE-008",
            LeaseError::Timing(_) => "TDM-LEASE-009",
            LeaseError::MarkChanged { .. } => "TDM-LEASE-010",
            LeaseError::InvalidMark { .. } => "TDM-LEASE-011",
        }
    }
}

/// The clock assumptions, as arithmetic. Pure, so that it is tested for every drift within the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub renew_interval: Duration,
}

/// `d * ppm / 1e6`, rounded up.
fn scale_up(d: Duration, ppm: u64) -> Duration {
    let nanos = d.as_nanos() * u128::from(ppm);
    let n = nanos.div_ceil(1_000_000);
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// The margin each side applies to a lease of `ttl`: `2 x MAX_DRIFT_RATE x ttl + MARGIN_SLACK`.
pub fn drift_margin(ttl: Duration) -> Duration {
    scale_up(ttl, 2 * MAX_DRIFT_PPM) + MARGIN_SLACK
}

/// How long after the start of its last successful write the holder may believe it holds a lease of `ttl`.
pub fn holder_validity(ttl: Duration) -> Duration {
    ttl.saturating_sub(drift_margin(ttl))
}

/// How long a contender must see one version of a lease of `ttl` unchanged before it may take it over.
pub fn contender_wait(ttl: Duration) -> Duration {
    ttl + drift_margin(ttl)
}

impl LeaseTiming {
    /// Checks the config against the clock model: ttl >= MIN_TTL, ttl > 2 x renew_interval, and the holder's
    /// validity leaves room for at least one renewal.
    pub fn new(ttl: Duration, renew_interval: Duration) -> Result<LeaseTiming, LeaseError> {
        if ttl < MIN_TTL {
            return Err(LeaseError::Timing(format!("ttl {ttl:?} is below the minimum {MIN_TTL:?}")));
        }
        if renew_interval.is_zero() || ttl <= renew_interval * 2 {
            return Err(LeaseError::Timing(format!(
                "ttl {ttl:?} must be more than twice the renew interval {renew_interval:?}"
            )));
        }
        if holder_validity(ttl) <= renew_interval {
            return Err(LeaseError::Timing(format!(
                "after the drift margin {:?} the holder's validity {:?} does not exceed the renew interval {renew_interval:?}",
                drift_margin(ttl),
                holder_validity(ttl)
            )));
        }
        Ok(LeaseTiming { ttl, renew_interval })
    }

    pub fn holder_validity(&self) -> Duration {
        holder_validity(self.ttl)
    }

    pub fn contender_wait(&self) -> Duration {
        contender_wait(self.ttl)
    }
}

/// A monotonic clock; injected so that the takeover logic is testable.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The process's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Who holds (or wants) a lease: the node and its incarnation (changes on every daemon start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    pub incarnation: u64,
}

/// The lease item as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub group: String,
    /// None after a release.
    pub holder: Option<Holder>,
    /// Fencing token: incremented on every takeover; a new item starts at [`first_token`]. 0: none yet.
    pub token: u64,
    /// The holder's claimed lease duration.
    pub ttl: Duration,
    pub version: u64,
    /// A requested move: the holder stops and releases, and this node may take the free lease at once.
    pub target: Option<String>,
    /// The operator stopped the group: the holder stops and releases, nobody acquires.
    pub stopped: bool,
    /// Outdated replicas, by mirror resource name (empty when the item has none).
    pub outdated: BTreeMap<String, OutdatedMark>,
}

impl LeaseRecord {
    /// The outdated mark of mirror `resource`, if any.
    pub fn outdated_mark(&self, resource: &str) -> Option<&OutdatedMark> {
        self.outdated.get(resource)
    }
}

/// A replica of a mirror disk marked Outdated in the lease item: `node` misses writes acknowledged by `by`, which
/// held the lease under `token` and writes in `generation` (its new current generation). `node` must not be
/// promoted until a resync gave it that generation (see `mirror::outdated::promotion_check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutdatedMark {
    pub node: String,
    pub generation: u64,
    pub by: String,
    pub token: u64,
}

/// Generations are stored as `0x`-prefixed hex strings (S): exact for every u64 and as written in the logs.
fn generation_text(g: u64) -> String {
    format!("{g:#018x}")
}

impl OutdatedMark {
    fn to_attribute(&self) -> AttributeValue {
        AttributeValue::M(HashMap::from([
            (M_NODE.to_string(), s(&self.node)),
            (M_GENERATION.to_string(), s(&generation_text(self.generation))),
            (M_BY.to_string(), s(&self.by)),
            (M_TOKEN.to_string(), n(self.token)),
        ]))
    }

    fn from_attribute(resource: &str, v: &AttributeValue) -> Result<OutdatedMark, String> {
        let AttributeValue::M(m) = v else { return Err(format!("{A_OUTDATED}.{resource} is not a map")) };
        let text = |name: &str| match m.get(name) {
            Some(AttributeValue::S(v)) if !v.is_empty() => Ok(v.clone()),
            _ => Err(format!("{A_OUTDATED}.{resource}.{name} is not a non-empty string")),
        };
        let generation = text(M_GENERATION)?;
        let generation =
            generation.strip_prefix("0x").and_then(|h| u64::from_str_radix(h, 16).ok()).ok_or_else(|| {
                format!("{A_OUTDATED}.{resource}.{M_GENERATION} = {generation:?} is not a hex generation")
            })?;
        let token = match m.get(M_TOKEN) {
            Some(AttributeValue::N(v)) => {
                v.parse::<u64>().map_err(|_| format!("{A_OUTDATED}.{resource}.{M_TOKEN} = {v:?}"))?
            }
            _ => return Err(format!("{A_OUTDATED}.{resource}.{M_TOKEN} is not a number")),
        };
        Ok(OutdatedMark { node: text(M_NODE)?, generation, by: text(M_BY)?, token })
    }
}

/// Parses the item's outdated marks; absent → none.
fn parse_outdated(item: &HashMap<String, AttributeValue>) -> Result<BTreeMap<String, OutdatedMark>, String> {
    match item.get(A_OUTDATED) {
        None => Ok(BTreeMap::new()),
        Some(AttributeValue::M(m)) => {
            m.iter().map(|(r, v)| OutdatedMark::from_attribute(r, v).map(|mark| (r.clone(), mark))).collect()
        }
        Some(_) => Err(format!("{A_OUTDATED} is not a map")),
    }
}

/// A lease the caller now holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
    /// Self-fencing deadline: the holder must have stopped the group by then unless a renewal moved it.
    pub valid_until: Instant,
}

/// The result of `acquire` when no error occurred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    Acquired(Lease),
    /// Held by someone else and not yet expired by our clock; try again after `retry_in` at the earliest.
    Busy {
        holder: Holder,
        token: u64,
        retry_in: Duration,
    },
}

/// What a contender remembers: the version it saw and when (after the read returned) it first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    version: u64,
    since: Instant,
}

/// Remembers per group the first local instant a version was seen; decides when a takeover is allowed.
#[derive(Debug, Default)]
pub struct Observer {
    seen: HashMap<String, Observation>,
}

impl Observer {
    /// Records that `version` of `group` was seen at `now`; returns how much longer the contender must wait
    /// before it may take over a lease of `ttl` (zero: now).
    pub fn observe(&mut self, group: &str, version: u64, ttl: Duration, now: Instant) -> Duration {
        let obs = self.seen.entry(group.to_string()).or_insert(Observation { version, since: now });
        if obs.version != version {
            *obs = Observation { version, since: now };
        }
        contender_wait(ttl).saturating_sub(now.saturating_duration_since(obs.since))
    }

    pub fn forget(&mut self, group: &str) {
        self.seen.remove(group);
    }
}

/// The lease table in DynamoDB.
pub struct LeaseStore {
    client: Client,
    table: String,
    clock: Arc<dyn Clock>,
    observer: Mutex<Observer>,
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The fencing token of a lease item that has none yet: the Unix time `now` in milliseconds (1 for a clock before
/// the epoch, never 0, which stands for "no token").
///
/// Why not 1: tokens must never go back (a mirror's Outdated marks and the token handed to the resources rely on
/// it), but the item can vanish: deleted by hand (TDM-LEASE-008), lost in a table restore, or deleted and
/// re-created by an operator request before anyone acquires. Its old token was the wall-clock milliseconds of its
/// own creation plus one per takeover, and far fewer takeovers happen than milliseconds pass (each takes a
/// conditional write, and a takeover of a held lease waits a whole ttl), so a token taken from the clock now is
/// above every token the old item handed out. The clock only picks this starting point; the lease's safety never
/// depends on it.
pub fn first_token(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| ms(d).max(1))
}

/// The token of the next holder after `token`: +1, or [`first_token`] when the item carries none (0: it was
/// created by an operator request).
fn next_token(token: u64) -> u64 {
    if token == 0 { first_token(SystemTime::now()) } else { token.saturating_add(1) }
}

impl LeaseStore {
    pub fn new(client: Client, table: impl Into<String>) -> LeaseStore {
        LeaseStore::with_clock(client, table, Arc::new(MonotonicClock))
    }

    pub fn with_clock(client: Client, table: impl Into<String>, clock: Arc<dyn Clock>) -> LeaseStore {
        LeaseStore { client, table: table.into(), clock, observer: Mutex::new(Observer::default()) }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn classify<E, R>(&self, action: &'static str, err: SdkError<E, R>) -> LeaseError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let table = self.table.clone();
        match &err {
            SdkError::ServiceError(_) => {
                let code = err.code().unwrap_or("").to_string();
                let message = err.message().unwrap_or("").to_string();
                match code.as_str() {
                    "ResourceNotFoundException" => LeaseError::TableMissing { table },
                    "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded" => {
                        LeaseError::Throttled { table, action }
                    }
                    "AccessDeniedException" | "UnrecognizedClientException" => {
                        LeaseError::AccessDenied { table, action }
                    }
                    _ => LeaseError::Api { table, action, code, message },
                }
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                LeaseError::Unreachable { table, action, detail: DisplayErrorContext(&err).to_string() }
            }
            _ => LeaseError::Api {
                table,
                action,
                code: "SdkError".into(),
                message: DisplayErrorContext(&err).to_string(),
            },
        }
    }

    fn is_condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
        matches!(err, SdkError::ServiceError(_)) && err.code() == Some("ConditionalCheckFailedException")
    }

    fn parse(&self, group: &str, item: &HashMap<String, AttributeValue>) -> Result<LeaseRecord, LeaseError> {
        let bad = |detail: String| LeaseError::Malformed { table: self.table.clone(), group: group.into(), detail };
        // An item created by an operator request (move/stop before any acquisition) has no token or ttl yet.
        let num = |name: &str| -> Result<u64, LeaseError> {
            match item.get(name) {
                Some(AttributeValue::N(v)) => v.parse::<u64>().map_err(|_| bad(format!("{name} = {v:?}"))),
                None => Ok(0),
                Some(_) => Err(bad(format!("{name} is not a number"))),
            }
        };
        let holder = match item.get(A_HOLDER) {
            Some(AttributeValue::S(node)) => Some(Holder { node: node.clone(), incarnation: num(A_INCARNATION)? }),
            None => None,
            Some(_) => return Err(bad(format!("{A_HOLDER} is not a string"))),
        };
        Ok(LeaseRecord {
            group: group.into(),
            holder,
            token: num(A_TOKEN)?,
            ttl: Duration::from_millis(num(A_TTL_MS)?),
            version: num(A_VERSION)?,
            target: match item.get(A_TARGET) {
                Some(AttributeValue::S(t)) => Some(t.clone()),
                None => None,
                Some(_) => return Err(bad(format!("{A_TARGET} is not a string"))),
            },
            stopped: match item.get(A_STOPPED) {
                Some(AttributeValue::Bool(b)) => *b,
                None => false,
                Some(_) => return Err(bad(format!("{A_STOPPED} is not a boolean"))),
            },
            outdated: parse_outdated(item).map_err(bad)?,
        })
    }

    /// Consistent read of the group's lease item.
    pub async fn read(&self, group: &str) -> Result<Option<LeaseRecord>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(A_GROUP, s(group))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.classify("GetItem", e))?;
        match out.item() {
            Some(item) => {
                let record = self.parse(group, item)?;
                // Every read counts as an observation, so a standby that keeps reading starts its takeover wait
                // at the first read of the holder's last version, not at its first acquisition attempt.
                if record.holder.is_some() {
                    self.remember(group, record.version, record.ttl, self.clock.now());
                }
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    fn remember(&self, group: &str, version: u64, ttl: Duration, now: Instant) -> Duration {
        match self.observer.lock() {
            Ok(mut o) => o.observe(group, version, ttl, now),
            Err(poisoned) => poisoned.into_inner().observe(group, version, ttl, now),
        }
    }

    /// Takes the lease of `group` if it is free, released, ours (same node and incarnation), or unchanged for
    /// `contender_wait(its ttl)` on our clock since we first saw that version. All writes are conditional.
    pub async fn acquire(&self, group: &str, me: &Holder, ttl: Duration) -> Result<Acquire, LeaseError> {
        self.acquire_with(group, me, ttl, true).await
    }

    /// Like [`LeaseStore::acquire`], but never takes over a lease another holder has not released: such a lease
    /// answers `Busy` at once. For a node that may still be vouching for whoever holds it (see the group runner).
    pub async fn acquire_if_free(&self, group: &str, me: &Holder, ttl: Duration) -> Result<Acquire, LeaseError> {
        self.acquire_with(group, me, ttl, false).await
    }

    async fn acquire_with(
        &self,
        group: &str,
        me: &Holder,
        ttl: Duration,
        takeover: bool,
    ) -> Result<Acquire, LeaseError> {
        let record = self.read(group).await?;
        let seen_at = self.clock.now();
        let start = seen_at;
        let lost = || LeaseError::LostRace { group: group.into() };
        let Some(rec) = record else {
            let token = first_token(SystemTime::now());
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(A_GROUP, s(group))
                .item(A_HOLDER, s(&me.node))
                .item(A_INCARNATION, n(me.incarnation))
                .item(A_TOKEN, n(token))
                .item(A_TTL_MS, n(ms(ttl)))
                .item(A_VERSION, n(1))
                .condition_expression("attribute_not_exists(#g)")
                .expression_attribute_names("#g", A_GROUP)
                .send()
                .await;
            return match res {
                Ok(_) => Ok(Acquire::Acquired(Lease { token, valid_until: start + holder_validity(ttl) })),
                Err(e) if Self::is_condition_failed(&e) => Err(lost()),
                Err(e) => Err(self.classify("PutItem", e)),
            };
        };
        let (new_token, takeover) = match &rec.holder {
            Some(h) if h == me => (rec.token, false),
            None => (next_token(rec.token), true),
            Some(h) if !takeover => {
                return Ok(Acquire::Busy { holder: h.clone(), token: rec.token, retry_in: contender_wait(rec.ttl) });
            }
            Some(h) => {
                let wait = self.remember(group, rec.version, rec.ttl, seen_at);
                if !wait.is_zero() {
                    return Ok(Acquire::Busy { holder: h.clone(), token: rec.token, retry_in: wait });
                }
                (next_token(rec.token), true)
            }
        };
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(A_GROUP, s(group))
            .update_expression("SET #h = :h, #i = :i, #t = :t, #l = :l, #v = :nv REMOVE #tg")
            .condition_expression("#v = :v")
            .expression_attribute_names("#h", A_HOLDER)
            .expression_attribute_names("#i", A_INCARNATION)
            .expression_attribute_names("#t", A_TOKEN)
            .expression_attribute_names("#l", A_TTL_MS)
            .expression_attribute_names("#v", A_VERSION)
            .expression_attribute_names("#tg", A_TARGET)
            .expression_attribute_values(":h", s(&me.node))
            .expression_attribute_values(":i", n(me.incarnation))
            .expression_attribute_values(":t", n(new_token))
            .expression_attribute_values(":l", n(ms(ttl)))
            .expression_attribute_values(":v", n(rec.version))
            .expression_attribute_values(":nv", n(rec.version + 1))
            .send()
            .await;
        match res {
            Ok(_) => {
                if takeover {
                    tracing::info!(group, node = %me.node, token = new_token, "lease taken over");
                }
                Ok(Acquire::Acquired(Lease { token: new_token, valid_until: start + holder_validity(ttl) }))
            }
            Err(e) if Self::is_condition_failed(&e) => Err(lost()),
            Err(e) => Err(self.classify("UpdateItem", e)),
        }
    }

    /// Extends the lease we hold under `token` (bumps the version, which restarts every contender's wait).
    /// Returns the item as written, so the holder sees operator requests (move, stop) at every renewal.
    pub async fn renew(&self, group: &str, node: &str, token: u64) -> Result<LeaseRecord, LeaseError> {
        self.extend(group, node, token, None).await
    }

    /// A renewal by a new incarnation of the holder (tandemd restarted while the group ran on, and the fencer
    /// says the old deadline has not passed): extends the lease under the same `token` and records `me`'s
    /// incarnation, so the peers see the holder's restart. Fails with `NotHolder` once anyone else took it.
    pub async fn adopt(&self, group: &str, me: &Holder, token: u64) -> Result<LeaseRecord, LeaseError> {
        self.extend(group, &me.node, token, Some(me.incarnation)).await
    }

    async fn extend(
        &self,
        group: &str,
        node: &str,
        token: u64,
        incarnation: Option<u64>,
    ) -> Result<LeaseRecord, LeaseError> {
        let req = self.client.update_item().table_name(&self.table).key(A_GROUP, s(group));
        let req = match incarnation {
            None => req.update_expression("SET #v = #v + :one"),
            Some(i) => req
                .update_expression("SET #v = #v + :one, #i = :i")
                .expression_attribute_names("#i", A_INCARNATION)
                .expression_attribute_values(":i", n(i)),
        };
        let res = req
            .condition_expression("#h = :h AND #t = :t")
            .expression_attribute_names("#h", A_HOLDER)
            .expression_attribute_names("#t", A_TOKEN)
            .expression_attribute_names("#v", A_VERSION)
            .expression_attribute_values(":h", s(node))
            .expression_attribute_values(":t", n(token))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => match out.attributes() {
                Some(item) => self.parse(group, item),
                None => Err(LeaseError::Malformed {
                    table: self.table.clone(),
                    group: group.into(),
                    detail: "no attributes returned by the renewal".into(),
                }),
            },
            Err(e) if Self::is_condition_failed(&e) => {
                Err(LeaseError::NotHolder { group: group.into(), node: node.into(), token })
            }
            Err(e) => Err(self.classify("UpdateItem", e)),
        }
    }

    /// Asks the holder to hand the group to `target` (None withdraws the request). Creates the item if needed.
    pub async fn request_move(&self, group: &str, target: Option<&str>) -> Result<(), LeaseError> {
        self.operator_request(group, A_TARGET, target.map(s)).await
    }

    /// Marks the group stopped by the operator (the holder stops and releases; nobody acquires) or started.
    pub async fn set_stopped(&self, group: &str, stopped: bool) -> Result<(), LeaseError> {
        self.operator_request(group, A_STOPPED, stopped.then_some(AttributeValue::Bool(true))).await
    }

    /// Sets (or, with None, removes) one operator-request attribute, bumping the version like every write.
    async fn operator_request(
        &self,
        group: &str,
        attribute: &str,
        value: Option<AttributeValue>,
    ) -> Result<(), LeaseError> {
        let req = self.client.update_item().table_name(&self.table).key(A_GROUP, s(group));
        let req = match value {
            Some(v) => req.update_expression("SET #a = :a ADD #v :one").expression_attribute_values(":a", v),
            None => req.update_expression("REMOVE #a ADD #v :one"),
        };
        req.expression_attribute_names("#a", attribute)
            .expression_attribute_names("#v", A_VERSION)
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.classify("UpdateItem", e))
    }

    /// Gives the lease up (the token is kept, so the next holder gets a higher one); others may take it at once.
    pub async fn release(&self, group: &str, node: &str, token: u64) -> Result<(), LeaseError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(A_GROUP, s(group))
            .update_expression("REMOVE #h, #i SET #v = #v + :one")
            .condition_expression("#h = :h AND #t = :t")
            .expression_attribute_names("#h", A_HOLDER)
            .expression_attribute_names("#i", A_INCARNATION)
            .expression_attribute_names("#t", A_TOKEN)
            .expression_attribute_names("#v", A_VERSION)
            .expression_attribute_values(":h", s(node))
            .expression_attribute_values(":t", n(token))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if Self::is_condition_failed(&e) => {
                Err(LeaseError::NotHolder { group: group.into(), node: node.into(), token })
            }
            Err(e) => Err(self.classify("UpdateItem", e)),
        }
    }

    /// Marks `outdated_node`'s replica of mirror `resource` Outdated in the lease item: it misses writes made in
    /// `generation`. Succeeds only while `me` holds the lease under exactly `token` (a deposed primary gets
    /// `NotHolder`), replaces an earlier mark of the resource, bumps the version like every write; idempotent.
    pub async fn mark_outdated(
        &self,
        group: &str,
        resource: &str,
        outdated_node: &str,
        generation: u64,
        me: &str,
        token: u64,
    ) -> Result<(), LeaseError> {
        let invalid = |detail: &str| LeaseError::InvalidMark { group: group.into(), detail: detail.into() };
        if resource.is_empty() || outdated_node.is_empty() || me.is_empty() {
            return Err(invalid("the resource and node names must not be empty"));
        }
        if outdated_node == me {
            return Err(invalid("a node cannot mark its own replica outdated"));
        }
        let mark = OutdatedMark { node: outdated_node.into(), generation, by: me.into(), token };
        // DynamoDB cannot set a key of a map that does not exist, nor create the map and set the key in one
        // expression: set the key while the map exists, else create the map while it does not. Only the holder
        // writes the map and nothing removes it, so when both conditions fail the holder or token differs.
        for nested in [true, false, true] {
            let req = self.client.update_item().table_name(&self.table).key(A_GROUP, s(group));
            let req = if nested {
                req.update_expression("SET #o.#r = :m, #v = #v + :one")
                    .condition_expression("#h = :h AND #t = :t AND attribute_exists(#o)")
                    .expression_attribute_names("#r", resource)
                    .expression_attribute_values(":m", mark.to_attribute())
            } else {
                req.update_expression("SET #o = :all, #v = #v + :one")
                    .condition_expression("#h = :h AND #t = :t AND attribute_not_exists(#o)")
                    .expression_attribute_values(
                        ":all",
                        AttributeValue::M(HashMap::from([(resource.to_string(), mark.to_attribute())])),
                    )
            };
            let res = req
                .expression_attribute_names("#o", A_OUTDATED)
                .expression_attribute_names("#h", A_HOLDER)
                .expression_attribute_names("#t", A_TOKEN)
                .expression_attribute_names("#v", A_VERSION)
                .expression_attribute_values(":h", s(me))
                .expression_attribute_values(":t", n(token))
                .expression_attribute_values(":one", n(1))
                .send()
                .await;
            match res {
                Ok(_) => {
                    tracing::warn!(
                        group,
                        resource,
                        node = outdated_node,
                        generation = format_args!("{generation:#018x}"),
                        "mirror replica marked outdated in the lease"
                    );
                    return Ok(());
                }
                Err(e) if Self::is_condition_failed(&e) => {}
                Err(e) => return Err(self.classify("UpdateItem", e)),
            }
        }
        Err(LeaseError::NotHolder { group: group.into(), node: me.into(), token })
    }

    /// Removes the outdated mark of mirror `resource` if it still names `node` at `generation` (after a resync
    /// gave the node that generation). No mark left: success. A mark naming another node or generation stays:
    /// `MarkChanged`.
    pub async fn clear_outdated(
        &self,
        group: &str,
        resource: &str,
        node: &str,
        generation: u64,
    ) -> Result<(), LeaseError> {
        if resource.is_empty() || node.is_empty() {
            let detail = "the resource and node names must not be empty".into();
            return Err(LeaseError::InvalidMark { group: group.into(), detail });
        }
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(A_GROUP, s(group))
            .update_expression("REMOVE #o.#r SET #v = #v + :one")
            .condition_expression("#o.#r.#n = :n AND #o.#r.#g = :g")
            .expression_attribute_names("#o", A_OUTDATED)
            .expression_attribute_names("#r", resource)
            .expression_attribute_names("#n", M_NODE)
            .expression_attribute_names("#g", M_GENERATION)
            .expression_attribute_names("#v", A_VERSION)
            .expression_attribute_values(":n", s(node))
            .expression_attribute_values(":g", s(&generation_text(generation)))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match res {
            Ok(_) => {
                tracing::info!(group, resource, node, "outdated mark cleared from the lease");
                Ok(())
            }
            Err(e) if Self::is_condition_failed(&e) => {
                let now = self.read(group).await?.and_then(|r| r.outdated.get(resource).cloned());
                match now {
                    None => Ok(()),
                    Some(m) => Err(LeaseError::MarkChanged {
                        group: group.into(),
                        resource: resource.into(),
                        node: node.into(),
                        generation,
                        now: format!("node {} at generation {:#018x}", m.node, m.generation),
                    }),
                }
            }
            Err(e) => Err(self.classify("UpdateItem", e)),
        }
    }
}

/// What the keeper reports to the group's state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Run the group only while `Instant::now() < valid_until` (check it yourself; do not wait for `Lost`).
    /// `record` is the item as of the last successful renewal (None before the first): operator requests.
    Held { token: u64, valid_until: Instant, record: Option<LeaseRecord> },
    /// Stop the group. `code` is the error code of the cause, or "deadline" when valid_until passed.
    Lost { token: u64, code: &'static str },
}

/// Renews a held lease every renew interval; the deadline moves only on a successful renewal, to the start of
/// that renewal + holder validity. A failed renewal (timeout, throttling, unreachable) is not a loss by itself;
/// reaching the deadline is, and so is NotHolder.
pub struct LeaseKeeper {
    state: watch::Receiver<LeaseState>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    pub fn start(
        store: Arc<LeaseStore>,
        group: String,
        node: String,
        lease: Lease,
        timing: LeaseTiming,
    ) -> LeaseKeeper {
        let (tx, rx) =
            watch::channel(LeaseState::Held { token: lease.token, valid_until: lease.valid_until, record: None });
        let task = tokio::spawn(async move {
            let token = lease.token;
            let mut valid_until = lease.valid_until;
            loop {
                let start = Instant::now();
                if start >= valid_until {
                    let _ = tx.send(LeaseState::Lost { token, code: "deadline" });
                    return;
                }
                let limit = timing.renew_interval.min(valid_until - start);
                match tokio::time::timeout(limit, store.renew(&group, &node, token)).await {
                    Ok(Ok(record)) => {
                        valid_until = valid_until.max(start + timing.holder_validity());
                        let _ = tx.send(LeaseState::Held { token, valid_until, record: Some(record) });
                    }
                    Ok(Err(e @ LeaseError::NotHolder { .. })) => {
                        tracing::warn!(group, code = e.code(), "{e}");
                        let _ = tx.send(LeaseState::Lost { token, code: e.code() });
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(group, code = e.code(), "lease renewal failed: {e}"),
                    Err(_) => tracing::warn!(group, "lease renewal timed out"),
                }
                let next = (start + timing.renew_interval).min(valid_until);
                tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
            }
        });
        LeaseKeeper { state: rx, task }
    }

    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops renewing (the lease then runs out; call `release` to free it at once).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real duration elapsed while a clock running at `ppm_delta` parts per million off real time shows `local`.
    /// rate = 1 + delta: local = real * rate, so real = local / rate. Computed in nanoseconds, bounds rounded
    /// against the claim being tested.
    fn real_of(local: Duration, delta_ppm: i64) -> f64 {
        local.as_nanos() as f64 / (1.0 + delta_ppm as f64 / 1e6)
    }

    #[test]
    fn holder_deadline_precedes_takeover_for_any_drift_within_the_bound() {
        let bound = MAX_DRIFT_PPM as i64;
        let drifts = [-bound, -bound / 2, -1, 0, 1, bound / 3, bound];
        for ttl_ms in [100u64, 101, 333, 1000, 2001, 5000, 30_000, 3_600_000] {
            let ttl = Duration::from_millis(ttl_ms);
            for &h in &drifts {
                for &c in &drifts {
                    // The contender first sees the version no earlier than the holder's write started (0 real ns).
                    let holder_end = real_of(holder_validity(ttl), h);
                    let takeover = real_of(contender_wait(ttl), c);
                    assert!(holder_end < takeover, "ttl {ttl_ms} ms, drift h {h} c {c}: {holder_end} >= {takeover}");
                    // and there is a real gap, at least the slack.
                    assert!(takeover - holder_end >= MARGIN_SLACK.as_nanos() as f64, "ttl {ttl_ms}");
                }
            }
        }
    }

    #[test]
    fn margins_are_as_documented() {
        assert_eq!(drift_margin(Duration::from_secs(5)), Duration::from_millis(110));
        assert_eq!(holder_validity(Duration::from_secs(5)), Duration::from_millis(4890));
        assert_eq!(contender_wait(Duration::from_secs(5)), Duration::from_millis(5110));
    }

    #[test]
    fn timing_is_validated_against_the_config() {
        assert!(LeaseTiming::new(Duration::from_secs(5), Duration::from_secs(1)).is_ok());
        for (ttl, renew) in [(2000, 1000), (50, 10), (1000, 0), (99, 10)] {
            let e = LeaseTiming::new(Duration::from_millis(ttl), Duration::from_millis(renew));
            assert_eq!(e.err().map(|e| e.code()), Some("TDM-LEASE-009"), "{ttl} {renew}");
        }
        // The shortest accepted ttl: the holder keeps 88 ms of its 100 ms, more than one 49 ms renew interval.
        assert!(LeaseTiming::new(Duration::from_millis(100), Duration::from_millis(49)).is_ok());
    }

    /// An injected clock: a base instant plus a settable offset.
    struct ManualClock {
        base: Instant,
        offset: Mutex<Duration>,
    }

    impl ManualClock {
        fn advance(&self, d: Duration) {
            let mut o = self.offset.lock().unwrap();
            *o += d;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            self.base + *self.offset.lock().unwrap()
        }
    }

    #[test]
    fn contender_waits_for_one_version_unchanged_on_its_own_clock() {
        let clock = ManualClock { base: Instant::now(), offset: Mutex::new(Duration::ZERO) };
        let ttl = Duration::from_secs(5);
        let mut o = Observer::default();
        assert_eq!(o.observe("g", 7, ttl, clock.now()), contender_wait(ttl));
        clock.advance(Duration::from_secs(5));
        assert_eq!(o.observe("g", 7, ttl, clock.now()), Duration::from_millis(110));
        // A renewal (new version) restarts the wait.
        clock.advance(Duration::from_millis(100));
        assert_eq!(o.observe("g", 8, ttl, clock.now()), contender_wait(ttl));
        clock.advance(contender_wait(ttl) - Duration::from_nanos(1));
        assert_eq!(o.observe("g", 8, ttl, clock.now()), Duration::from_nanos(1));
        clock.advance(Duration::from_nanos(1));
        assert_eq!(o.observe("g", 8, ttl, clock.now()), Duration::ZERO);
        // Groups are independent; forgetting restarts.
        assert_eq!(o.observe("h", 8, ttl, clock.now()), contender_wait(ttl));
        o.forget("g");
        assert_eq!(o.observe("g", 8, ttl, clock.now()), contender_wait(ttl));
    }

    #[test]
    fn error_codes_are_stable_and_distinct() {
        let t = || "t".to_string();
        let all = [
            LeaseError::LostRace { group: "g".into() },
            LeaseError::NotHolder { group: "g".into(), node: "a".into(), token: 1 },
            LeaseError::TableMissing { table: t() },
            LeaseError::Throttled { table: t(), action: "UpdateItem" },
            LeaseError::Unreachable { table: t(), action: "UpdateItem", detail: "x".into() },
            LeaseError::AccessDenied { table: t(), action: "UpdateItem" },
            LeaseError::Api { table: t(), action: "GetItem", code: "X".into(), message: "y".into() },
            LeaseError::Malformed { table: t(), group: "g".into(), detail: "d".into() },
            LeaseError::Timing("x".into()),
        ];
        let codes: Vec<_> = all.iter().map(LeaseError::code).collect();
        let want: Vec<String> = (1..=9).map(|i| format!("TDM-LEASE-{i:03}")).collect();
        assert_eq!(codes, want);
        assert!(all[5].to_string().contains("dynamodb:UpdateItem"));
    }

    #[test]
    fn outdated_mark_codes_are_appended() {
        let changed = LeaseError::MarkChanged {
            group: "g".into(),
            resource: "r".into(),
            node: "b".into(),
            generation: 0xab,
            now: "node b at generation 0x00000000000000ac".into(),
        };
        assert_eq!(changed.code(), "TDM-LEASE-010");
        assert!(changed.to_string().contains("0x00000000000000ab"), "{changed}");
        let invalid = LeaseError::InvalidMark { group: "g".into(), detail: "d".into() };
        assert_eq!(invalid.code(), "TDM-LEASE-011");
    }

    fn mark_attr(node: &str, generation: &str, by: &str, token: &str) -> AttributeValue {
        AttributeValue::M(HashMap::from([
            (M_NODE.to_string(), s(node)),
            (M_GENERATION.to_string(), s(generation)),
            (M_BY.to_string(), s(by)),
            (M_TOKEN.to_string(), AttributeValue::N(token.into())),
        ]))
    }

    #[test]
    fn outdated_marks_round_trip_and_absence_is_no_marks() {
        assert!(parse_outdated(&HashMap::new()).unwrap().is_empty());
        let mark = OutdatedMark { node: "b".into(), generation: u64::MAX, by: "a".into(), token: 7 };
        let item = HashMap::from([(
            A_OUTDATED.to_string(),
            AttributeValue::M(HashMap::from([("db-disk".into(), mark.to_attribute())])),
        )]);
        let marks = parse_outdated(&item).unwrap();
        assert_eq!(marks.len(), 1);
        assert_eq!(marks.get("db-disk"), Some(&mark));
        let small = OutdatedMark { generation: 1, ..mark };
        assert_eq!(OutdatedMark::from_attribute("r", &small.to_attribute()).unwrap(), small);
    }

    #[test]
    fn malformed_outdated_marks_are_refused() {
        let bad = [
            AttributeValue::S("x".into()),
            mark_attr("b", "12", "a", "1"),
            mark_attr("b", "0xzz", "a", "1"),
            mark_attr("b", "0x1", "a", "-1"),
            mark_attr("", "0x1", "a", "1"),
            mark_attr("b", "0x1", "", "1"),
            AttributeValue::M(HashMap::from([(M_NODE.to_string(), s("b"))])),
        ];
        for v in bad {
            let item =
                HashMap::from([(A_OUTDATED.to_string(), AttributeValue::M(HashMap::from([("r".into(), v.clone())])))]);
            assert!(parse_outdated(&item).is_err(), "{v:?}");
        }
        let item = HashMap::from([(A_OUTDATED.to_string(), AttributeValue::S("x".into()))]);
        assert!(parse_outdated(&item).is_err());
        assert!(
            parse_outdated(&HashMap::from([(A_OUTDATED.to_string(), AttributeValue::M(HashMap::new()))]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_first_token_is_the_unix_time_in_ms_and_never_zero() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(first_token(at + Duration::from_micros(999)), 1_700_000_000_123);
        assert_eq!(first_token(SystemTime::UNIX_EPOCH), 1, "0 means no token");
        assert_eq!(first_token(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 1, "a clock before the epoch");
        let before = first_token(SystemTime::now());
        let next = next_token(0);
        assert!(next >= before && next > 1_700_000_000_000, "an item without a token starts at the clock: {next}");
        assert_eq!(next_token(41), 42);
        assert_eq!(next_token(u64::MAX), u64::MAX, "no overflow panic on a malformed item");
    }
}
