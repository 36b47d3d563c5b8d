//! AWS access for the group resources (aws_vip, aws_eip, aws_dns): the clients, one node's AWS facts, and the
//! classification of every failed call into a [`ResourceError`] class.
//!
//! - Clients: EC2 and Route 53 from one `aws_config::SdkConfig`, loaded lazily on the first call with the
//!   standard chain (environment, shared files, instance role through IMDSv2; `AWS_ENDPOINT_URL` is honoured) and
//!   the region of the node's availability zone. Tests hand in their own clients.
//! - Every call runs under a per-call timeout ([`CALL_TIMEOUT`] unless set) and is counted per resource
//!   ([`Calls`]), so that tests and operators can see what one start costs.
//! - Classes (OCF, see docs/group-resources.md): throttling, 5xx, timeouts and an unreachable endpoint are soft
//!   (the API's answer is "unknown", not a verdict); a missing permission or bad credentials are hard (this node
//!   cannot act; another node may); a configured ID that does not exist is fatal (the config is wrong everywhere).

pub mod eni;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::{Config, Node};
use crate::resources::{ErrorClass, ResourceError};

/// Stable error codes of the runtime's AWS resources (never renumbered; listed in docs/group-resources.md).
/// The provider's TDM-AWS-001..006 are a different range.
pub const CODE_UNREACHABLE: &str = "TDM-AWS-101";
pub const CODE_THROTTLED: &str = "TDM-AWS-102";
pub const CODE_DENIED: &str = "TDM-AWS-103";
pub const CODE_CREDENTIALS: &str = "TDM-AWS-104";
pub const CODE_NO_REGION: &str = "TDM-AWS-105";
pub const CODE_REJECTED: &str = "TDM-AWS-106";
pub const CODE_VPC_NOT_FOUND: &str = "TDM-AWS-110";
pub const CODE_ROUTE_TABLE_NOT_FOUND: &str = "TDM-AWS-111";
pub const CODE_ENI_NOT_FOUND: &str = "TDM-AWS-112";
pub const CODE_EIP_NOT_FOUND: &str = "TDM-AWS-113";
pub const CODE_ZONE_NOT_FOUND: &str = "TDM-AWS-114";
pub const CODE_VIP_IN_VPC: &str = "TDM-AWS-120";
pub const CODE_SOURCE_DEST_CHECK: &str = "TDM-AWS-121";
pub const CODE_VIP_ROUTE_CHANGED: &str = "TDM-AWS-122";
pub const CODE_NO_VIP_ROUTE: &str = "TDM-AWS-123";
pub const CODE_VIP_BIND: &str = "TDM-AWS-124";
pub const CODE_ENI_OUTSIDE_VPC: &str = "TDM-AWS-125";
pub const CODE_EIP_NOT_OURS: &str = "TDM-AWS-130";
pub const CODE_DNS_NOT_INSYNC: &str = "TDM-AWS-140";
pub const CODE_RECORD_NOT_OURS: &str = "TDM-AWS-141";
/// A stop could not reach AWS (or was refused): the EIP / record stays in place for the next owner to take over.
pub const CODE_STOP_LEFT_IN_PLACE: &str = "TDM-AWS-142";

/// Every code of this module, for the docs and the uniqueness test.
pub const CODES: [&str; 20] = [
    CODE_UNREACHABLE,
    CODE_THROTTLED,
    CODE_DENIED,
    CODE_CREDENTIALS,
    CODE_NO_REGION,
    CODE_REJECTED,
    CODE_VPC_NOT_FOUND,
    CODE_ROUTE_TABLE_NOT_FOUND,
    CODE_ENI_NOT_FOUND,
    CODE_EIP_NOT_FOUND,
    CODE_ZONE_NOT_FOUND,
    CODE_VIP_IN_VPC,
    CODE_SOURCE_DEST_CHECK,
    CODE_VIP_ROUTE_CHANGED,
    CODE_NO_VIP_ROUTE,
    CODE_VIP_BIND,
    CODE_ENI_OUTSIDE_VPC,
    CODE_EIP_NOT_OURS,
    CODE_DNS_NOT_INSYNC,
    CODE_RECORD_NOT_OURS,
];

/// Longest time one AWS call (all its SDK attempts) may take before it counts as "endpoint unreachable".
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout of the lazily built clients.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The environment switch that turns VIP binding off (`TANDEM_VIP_BIND=0`): routes still move, but tandemd does
/// not run `ip addr add/del` (for tests, or when something else binds the VIP).
pub const VIP_BIND_ENV: &str = "TANDEM_VIP_BIND";

/// The EC2 and Route 53 clients, from one SDK configuration.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ec2: aws_sdk_ec2::Client,
    pub route53: aws_sdk_route53::Client,
}

impl AwsClients {
    pub fn new(sdk: &aws_config::SdkConfig) -> AwsClients {
        AwsClients { ec2: aws_sdk_ec2::Client::new(sdk), route53: aws_sdk_route53::Client::new(sdk) }
    }
}

/// This node as the AWS resources need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNode {
    pub name: String,
    /// The node's primary private IP: finds its ENI, and is the default value of an aws_dns record.
    pub private_ip: Ipv4Addr,
    pub availability_zone: String,
    /// The node's ENI when the config names it (`node { eni_id }`); otherwise it is discovered from the IP.
    pub eni_id: Option<String>,
}

impl AwsNode {
    pub fn from_node(node: &Node) -> AwsNode {
        AwsNode {
            name: node.name.clone(),
            private_ip: node.private_ip,
            availability_zone: node.availability_zone.clone(),
            eni_id: node.eni_id.clone(),
        }
    }

    /// The config's view of this node (for the config model's per-node helpers).
    pub fn as_node(&self) -> Node {
        let mut node = Node::new(&self.name, self.private_ip, &self.availability_zone);
        node.eni_id = self.eni_id.clone();
        node
    }

    /// The region of the node's zone (`us-east-1a` → `us-east-1`).
    pub fn region(&self) -> Option<String> {
        self.as_node().region()
    }
}

/// How an [`AwsEnv`] gets its clients and behaves.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Ready clients (tests); None: load them on first use from the standard chain and the node's region.
    pub clients: Option<AwsClients>,
    /// Bind the VIP of aws_vip resources on this node (`ip addr add`). Default: on, unless TANDEM_VIP_BIND=0.
    pub bind_vip: bool,
    /// Per-call timeout (all SDK attempts of one call together).
    pub call_timeout: Duration,
}

impl Default for AwsSettings {
    fn default() -> AwsSettings {
        AwsSettings { clients: None, bind_vip: vip_binding_from_env(), call_timeout: CALL_TIMEOUT }
    }
}

/// `TANDEM_VIP_BIND`: `0`, `false`, `no` or `off` turn binding off; anything else (or unset) leaves it on.
pub fn vip_binding_from_env() -> bool {
    match std::env::var(VIP_BIND_ENV) {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off"),
        Err(_) => true,
    }
}

/// What every AWS resource of one node shares: the node, its clients (built once) and its ENI (looked up once).
/// Cheap to clone.
#[derive(Clone)]
pub struct AwsEnv {
    inner: Arc<EnvInner>,
}

struct EnvInner {
    node: AwsNode,
    given: Option<AwsClients>,
    lazy: tokio::sync::OnceCell<AwsClients>,
    eni: tokio::sync::Mutex<Option<eni::Eni>>,
    bind_vip: bool,
    call_timeout: Duration,
}

impl std::fmt::Debug for AwsEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEnv")
            .field("node", &self.inner.node)
            .field("bind_vip", &self.inner.bind_vip)
            .field("call_timeout", &self.inner.call_timeout)
            .finish_non_exhaustive()
    }
}

impl AwsEnv {
    pub fn new(node: AwsNode, settings: AwsSettings) -> AwsEnv {
        AwsEnv {
            inner: Arc::new(EnvInner {
                node,
                given: settings.clients,
                lazy: tokio::sync::OnceCell::new(),
                eni: tokio::sync::Mutex::new(None),
                bind_vip: settings.bind_vip,
                call_timeout: settings.call_timeout,
            }),
        }
    }

    /// The environment of node `node` of `config`, with default settings (lazy clients in the node's region).
    pub fn for_node(config: &Config, node: &str) -> Option<AwsEnv> {
        let node = config.node_by_name(node)?;
        Some(AwsEnv::new(AwsNode::from_node(node), AwsSettings::default()))
    }

    pub fn node(&self) -> &AwsNode {
        &self.inner.node
    }

    pub fn bind_vip(&self) -> bool {
        self.inner.bind_vip
    }

    pub fn call_timeout(&self) -> Duration {
        self.inner.call_timeout
    }

    /// The clients; the first call loads the SDK configuration (region: the node's zone's region, else the
    /// standard chain). A failure is not cached: the next call tries again.
    pub async fn clients(&self) -> Result<&AwsClients, ResourceError> {
        if let Some(c) = &self.inner.given {
            return Ok(c);
        }
        let region = self.inner.node.region();
        self.inner.lazy.get_or_try_init(|| load_clients(region)).await
    }

    /// This node's ENI: looked up once (DescribeNetworkInterfaces, counted in `calls`), then cached.
    pub async fn eni(&self, calls: &Calls, subject: &str) -> Result<eni::Eni, ResourceError> {
        let mut cached = self.inner.eni.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let found = eni::find_local_eni(self, calls, subject).await?;
        *cached = Some(found.clone());
        Ok(found)
    }

    /// Runs one AWS call: counts it as `action`, bounds it by the call timeout, and classifies its failure.
    pub async fn call<T, E, F>(&self, calls: &Calls, action: &'static str, fut: F) -> Result<T, AwsFailure>
    where
        F: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        calls.add(action);
        match tokio::time::timeout(self.inner.call_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(AwsFailure::from_sdk(action, &e)),
            Err(_) => Err(AwsFailure::timed_out(action, self.inner.call_timeout)),
        }
    }
}

async fn load_clients(region: Option<String>) -> Result<AwsClients, ResourceError> {
    use aws_config::timeout::TimeoutConfig;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(CALL_TIMEOUT)
            .operation_timeout(CALL_TIMEOUT)
            .build(),
    );
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none_or(|r| r.as_ref().is_empty()) {
        return Err(ResourceError::new(
            ErrorClass::Fatal,
            CODE_NO_REGION,
            "no AWS region: the node's availability_zone is not a zone name and AWS_REGION is not set",
        ));
    }
    Ok(AwsClients::new(&sdk))
}

/// AWS calls made, by action (`ec2:ReplaceRoute` …), since creation or the last reset.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl Calls {
    pub fn add(&self, action: &'static str) {
        let mut c = match self.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *c.entry(action).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        match self.counts.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn reset(&self) {
        match self.counts.lock() {
            Ok(mut c) => c.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

/// What kind of failure an AWS call had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer: timeout, connection refused, DNS failure.
    Unreachable,
    /// Throttled, or AWS failed on its side (5xx, unparseable answer).
    Transient,
    /// The credentials lack permission for the action (AccessDenied / UnauthorizedOperation).
    Denied,
    /// No credentials, or AWS does not accept them.
    Credentials,
    /// The object does not exist (`*.NotFound`, `NoSuch*`).
    NotFound,
    /// Any other refusal (a 4xx the caller did not expect).
    Rejected,
}

/// One failed AWS call: its action, the API's error code (if it answered) and message, and the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFailure {
    pub action: &'static str,
    pub kind: FailureKind,
    pub code: Option<String>,
    pub message: String,
}

impl AwsFailure {
    pub fn from_sdk<E>(action: &'static str, err: &SdkError<E>) -> AwsFailure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let text = DisplayErrorContext(err).to_string();
        let (kind, code, message) = match err {
            SdkError::ServiceError(ctx) => {
                let code = ctx.err().code().map(str::to_string);
                let status = ctx.raw().status().as_u16();
                let message = ctx.err().message().map_or_else(|| format!("HTTP {status}"), str::to_string);
                let kind = code.as_deref().map_or_else(|| classify_status(status), |c| classify_code(c, status));
                (kind, code, message)
            }
            SdkError::TimeoutError(_) => (FailureKind::Unreachable, None, "no answer in time".to_string()),
            SdkError::ResponseError(_) => (FailureKind::Transient, None, text.clone()),
            _ if mentions_credentials(&text) => (FailureKind::Credentials, None, text.clone()),
            SdkError::DispatchFailure(_) => (FailureKind::Unreachable, None, text.clone()),
            _ => (FailureKind::Rejected, None, text.clone()),
        };
        AwsFailure { action, kind, code, message }
    }

    pub fn timed_out(action: &'static str, after: Duration) -> AwsFailure {
        AwsFailure {
            action,
            kind: FailureKind::Unreachable,
            code: None,
            message: format!("no answer within {} ms", after.as_millis()),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == FailureKind::NotFound
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The error for the operator. `subject` names the resource (`aws_vip web/vip`), `target` the object of the
    /// call (`route table rtb-1`).
    pub fn to_resource_error(&self, subject: &str, target: &str) -> ResourceError {
        let what = match &self.code {
            Some(code) => format!("{code}: {}", self.message),
            None => self.message.clone(),
        };
        let (class, code, text) = match self.kind {
            FailureKind::Unreachable => (
                ErrorClass::Soft,
                CODE_UNREACHABLE,
                format!(
                    "{} on {target}: the AWS endpoint did not answer ({what}); check NAT / proxy / route tables / VPC \
                     endpoints between this node and AWS (Route 53 has no VPC endpoint)",
                    self.action
                ),
            ),
            FailureKind::Transient => (
                ErrorClass::Soft,
                CODE_THROTTLED,
                format!("{} on {target}: AWS throttled the call or failed on its side ({what})", self.action),
            ),
            FailureKind::Denied => (
                ErrorClass::Hard,
                CODE_DENIED,
                format!("not authorized to call {} on {target} ({what}); grant it to the node's role", self.action),
            ),
            FailureKind::Credentials => (
                ErrorClass::Hard,
                CODE_CREDENTIALS,
                format!(
                    "{} on {target}: AWS credentials are missing or not accepted ({what}); give the instance a role",
                    self.action
                ),
            ),
            FailureKind::NotFound => match not_found_code(self.code.as_deref()) {
                Some(code) => {
                    (ErrorClass::Fatal, code, format!("{} on {target}: {target} does not exist ({what})", self.action))
                }
                None => (ErrorClass::Hard, CODE_REJECTED, format!("{} on {target}: {what}", self.action)),
            },
            FailureKind::Rejected => {
                (ErrorClass::Hard, CODE_REJECTED, format!("{} on {target}: AWS refused the call ({what})", self.action))
            }
        };
        ResourceError::new(class, code, format!("{subject}: {text}"))
    }
}

impl std::fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{}: {code}: {}", self.action, self.message),
            None => write!(f, "{}: {}", self.action, self.message),
        }
    }
}

/// The SDK reports missing or unusable credentials as a construction/dispatch failure whose text says so.
fn mentions_credentials(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("credential") || t.contains("no identity")
}

/// Maps an AWS error code (EC2 and Route 53 share these conventions) and the HTTP status to a kind.
pub fn classify_code(code: &str, status: u16) -> FailureKind {
    match code {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "Forbidden" => FailureKind::Denied,
        "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "UnrecognizedClientException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "OptInRequired" => FailureKind::Credentials,
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "RequestThrottled"
        | "PriorRequestNotComplete"
        | "InternalError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "Unavailable" => FailureKind::Transient,
        c if c.ends_with(".NotFound") || c.starts_with("NoSuch") => FailureKind::NotFound,
        _ => classify_status(status),
    }
}

/// The kind of an error that came without a known code.
pub fn classify_status(status: u16) -> FailureKind {
    match status {
        401 => FailureKind::Credentials,
        403 => FailureKind::Denied,
        429 | 500..=599 => FailureKind::Transient,
        _ => FailureKind::Rejected,
    }
}

/// The fatal code for a configured object AWS does not know.
fn not_found_code(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "InvalidVpcID.NotFound" => Some(CODE_VPC_NOT_FOUND),
        "InvalidRouteTableID.NotFound" => Some(CODE_ROUTE_TABLE_NOT_FOUND),
        "InvalidNetworkInterfaceID.NotFound" => Some(CODE_ENI_NOT_FOUND),
        "InvalidAllocationID.NotFound" => Some(CODE_EIP_NOT_FOUND),
        "NoSuchHostedZone" => Some(CODE_ZONE_NOT_FOUND),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind, code: Option<&str>) -> AwsFailure {
        AwsFailure { action: "ec2:ReplaceRoute", kind, code: code.map(str::to_string), message: "m".into() }
    }

    #[test]
    fn codes_are_distinct_and_in_the_runtime_range() {
        let set: std::collections::BTreeSet<_> = CODES.iter().collect();
        assert_eq!(set.len(), CODES.len());
        for code in CODES {
            let n: u32 = code.trim_start_matches("TDM-AWS-").parse().expect("number");
            assert!((100..200).contains(&n), "{code}");
        }
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert_eq!(classify_code("RequestLimitExceeded", 503), FailureKind::Transient);
        assert_eq!(classify_code("Throttling", 400), FailureKind::Transient);
        assert_eq!(classify_code("SomethingNew", 500), FailureKind::Transient);
        assert_eq!(classify_status(429), FailureKind::Transient);
    }

    #[test]
    fn permissions_credentials_and_not_found_are_told_apart() {
        assert_eq!(classify_code("UnauthorizedOperation", 403), FailureKind::Denied);
        assert_eq!(classify_code("AccessDenied", 403), FailureKind::Denied);
        assert_eq!(classify_code("AuthFailure", 401), FailureKind::Credentials);
        assert_eq!(classify_code("InvalidRouteTableID.NotFound", 400), FailureKind::NotFound);
        assert_eq!(classify_code("NoSuchHostedZone", 404), FailureKind::NotFound);
        assert_eq!(classify_code("InvalidParameterValue", 400), FailureKind::Rejected);
    }

    #[test]
    fn classes_follow_the_ocf_rules() {
        let soft = failure(FailureKind::Unreachable, None).to_resource_error("aws_vip g/v", "route table rtb-1");
        assert_eq!((soft.class, soft.code), (ErrorClass::Soft, CODE_UNREACHABLE));
        let denied =
            failure(FailureKind::Denied, Some("UnauthorizedOperation")).to_resource_error("aws_vip g/v", "rtb-1");
        assert_eq!((denied.class, denied.code), (ErrorClass::Hard, CODE_DENIED));
        assert!(denied.message.contains("not authorized to call ec2:ReplaceRoute on rtb-1"), "{denied}");
        let gone = failure(FailureKind::NotFound, Some("InvalidAllocationID.NotFound"))
            .to_resource_error("aws_eip g/e", "EIP eipalloc-1");
        assert_eq!((gone.class, gone.code), (ErrorClass::Fatal, CODE_EIP_NOT_FOUND));
        let other_gone =
            failure(FailureKind::NotFound, Some("InvalidAssociationID.NotFound")).to_resource_error("s", "t");
        assert_eq!((other_gone.class, other_gone.code), (ErrorClass::Hard, CODE_REJECTED));
    }

    #[test]
    fn calls_are_counted_by_action() {
        let calls = Calls::default();
        calls.add("ec2:ReplaceRoute");
        calls.add("ec2:ReplaceRoute");
        calls.add("ec2:DescribeRouteTables");
        assert_eq!(calls.snapshot().get("ec2:ReplaceRoute"), Some(&2));
        assert_eq!(calls.total(), 3);
        calls.reset();
        assert_eq!(calls.total(), 0);
    }

    #[test]
    fn node_region_comes_from_its_zone() {
        let node = AwsNode {
            name: "a".into(),
            private_ip: Ipv4Addr::new(10, 0, 1, 10),
            availability_zone: "eu-west-1b".into(),
            eni_id: None,
        };
        assert_eq!(node.region().as_deref(), Some("eu-west-1"));
    }
}
