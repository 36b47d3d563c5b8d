//! `resource "aws_vip"` at run time: a virtual IP outside the VPC CIDR, reached through a /32 route that every
//! route table carrying it points at the active node's ENI, and bound on that node.
//!
//! - start: refuses a VIP inside the VPC (TDM-AWS-120, fatal), binds the VIP (`ip addr add VIP/32 dev DEV`),
//!   reads the route tables with ONE DescribeRouteTables (filter `vpc-id` + `route.destination-cidr-block =
//!   VIP/32`, or the listed `route_table_ids`) and re-points, in parallel, every route that does not target this
//!   node's ENI (ReplaceRoute; CreateRoute where a listed table lacks the route). The first start also looks up
//!   the ENI (DescribeNetworkInterfaces) and the VPC's CIDRs (DescribeVpcs); both are cached, and looked up at
//!   daemon start already (`prepare`), so that a failover makes 1 DescribeRouteTables + 1 write per table.
//! - stop: unbinds the VIP. The routes stay (the next active node re-points them).
//! - probe: not bound → `Stopped` (no AWS call); bound and every VIP route targets our ENI → `Running`; bound
//!   but a route targets something else → soft TDM-AWS-122 ("routing for VIP was changed": restart re-points).
//!
//! With binding off (`TANDEM_VIP_BIND=0`, see [`crate::aws::VIP_BIND_ENV`]) the resource keeps an in-memory
//! "bound" flag instead of touching the node's interfaces.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, RouteTable};
use ipnet::Ipv4Net;
use tokio::process::Command;
use tokio::task::JoinSet;

use super::{ErrorClass, GroupResource, Invocation, Probe, ResourceContext, ResourceError};
use crate::aws::{
    AwsEnv, CODE_ENI_OUTSIDE_VPC, CODE_NO_VIP_ROUTE, CODE_REJECTED, CODE_ROUTE_TABLE_NOT_FOUND, CODE_VIP_BIND,
    CODE_VIP_IN_VPC, CODE_VIP_ROUTE_CHANGED, CODE_VPC_NOT_FOUND, Calls,
};
use crate::config::AwsVip;

/// How long one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a VIP route of one route table points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// The table has no route for the VIP (only possible for a listed table).
    Missing,
    /// An ENI.
    Eni(String),
    /// Anything else (instance, gateway, …), as EC2 names it.
    Other(String),
}

/// One route table's VIP route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipRoute {
    pub table: String,
    pub target: RouteTarget,
}

/// What start writes to one route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Replace,
    Create,
}

pub struct AwsVipResource {
    name: String,
    subject: String,
    config: AwsVip,
    device: Option<String>,
    env: AwsEnv,
    calls: Calls,
    vpc_cidrs: tokio::sync::OnceCell<Vec<Ipv4Net>>,
    /// The binding when binding is off.
    bound_flag: AtomicBool,
    /// Serialises start and stop.
    actions: tokio::sync::Mutex<()>,
}

impl AwsVipResource {
    pub fn new(name: &str, config: &AwsVip, cx: &ResourceContext, env: &AwsEnv) -> AwsVipResource {
        AwsVipResource {
            name: name.to_string(),
            subject: format!("aws_vip {}/{name}", cx.group),
            config: config.clone(),
            device: config.device_for(&cx.node).map(str::to_string),
            env: env.clone(),
            calls: Calls::default(),
            vpc_cidrs: tokio::sync::OnceCell::new(),
            bound_flag: AtomicBool::new(false),
            actions: tokio::sync::Mutex::new(()),
        }
    }

    /// AWS calls made by this resource, by action, since creation or [`reset_calls`](Self::reset_calls).
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.snapshot()
    }

    pub fn reset_calls(&self) {
        self.calls.reset();
    }

    fn cidr(&self) -> String {
        format!("{}/32", self.config.ip)
    }

    fn error(&self, class: ErrorClass, code: &'static str, what: impl std::fmt::Display) -> ResourceError {
        ResourceError::new(class, code, format!("{}: {what}", self.subject))
    }

    /// The VPC's CIDR blocks (DescribeVpcs once), plus the configured ones.
    async fn vpc_cidrs(&self) -> Result<&Vec<Ipv4Net>, ResourceError> {
        self.vpc_cidrs
            .get_or_try_init(|| async {
                let ec2 = &self.env.clients().await?.ec2;
                let vpc = &self.config.vpc_id;
                let out = self
                    .env
                    .call(&self.calls, "ec2:DescribeVpcs", ec2.describe_vpcs().vpc_ids(vpc).send())
                    .await
                    .map_err(|f| f.to_resource_error(&self.subject, &format!("VPC {vpc}")))?;
                let Some(v) = out.vpcs().iter().find(|v| v.vpc_id() == Some(vpc.as_str())) else {
                    return Err(self.error(ErrorClass::Fatal, CODE_VPC_NOT_FOUND, format!("VPC {vpc} does not exist")));
                };
                let mut cidrs = self.config.vpc_cidrs.clone();
                let blocks = v.cidr_block().into_iter().chain(v.cidr_block_association_set().iter().filter_map(|a| {
                    let gone = a.cidr_block_state().and_then(|s| s.state()).is_some_and(|s| {
                        matches!(s.as_str(), "disassociated" | "disassociating" | "failed" | "failing")
                    });
                    if gone { None } else { a.cidr_block() }
                }));
                for block in blocks {
                    if let Ok(net) = block.parse::<Ipv4Net>()
                        && !cidrs.contains(&net)
                    {
                        cidrs.push(net);
                    }
                }
                Ok(cidrs)
            })
            .await
    }

    /// Refuses a VIP inside one of `cidrs`.
    fn check_outside(&self, cidrs: &[Ipv4Net]) -> Result<(), ResourceError> {
        match cidrs.iter().find(|c| c.contains(&self.config.ip)) {
            Some(cidr) => Err(self.error(
                ErrorClass::Fatal,
                CODE_VIP_IN_VPC,
                format!(
                    "VIP {} is inside the CIDR {cidr} of VPC {}; a VIP route only works for an address outside \
                     every CIDR of the VPC: choose another VIP",
                    self.config.ip, self.config.vpc_id
                ),
            )),
            None => Ok(()),
        }
    }

    /// The VIP route of every table concerned, from one DescribeRouteTables.
    async fn describe(&self) -> Result<Vec<VipRoute>, ResourceError> {
        let ec2 = &self.env.clients().await?.ec2;
        let cidr = self.cidr();
        let listed = &self.config.route_table_ids;
        let (req, target) = if listed.is_empty() {
            let req = ec2
                .describe_route_tables()
                .filters(Filter::builder().name("vpc-id").values(&self.config.vpc_id).build())
                .filters(Filter::builder().name("route.destination-cidr-block").values(&cidr).build());
            (req, format!("the route tables of {}", self.config.vpc_id))
        } else {
            let req = ec2.describe_route_tables().set_route_table_ids(Some(listed.clone()));
            (req, format!("route tables {}", listed.join(", ")))
        };
        let out = self
            .env
            .call(&self.calls, "ec2:DescribeRouteTables", req.send())
            .await
            .map_err(|f| f.to_resource_error(&self.subject, &target))?;
        let tables = out.route_tables();
        for t in tables {
            if let Some(vpc) = t.vpc_id()
                && vpc != self.config.vpc_id
            {
                return Err(self.error(
                    ErrorClass::Fatal,
                    CODE_ROUTE_TABLE_NOT_FOUND,
                    format!(
                        "route table {} belongs to {vpc}, not to {}: fix route_table_ids",
                        t.route_table_id().unwrap_or_default(),
                        self.config.vpc_id
                    ),
                ));
            }
        }
        for id in listed {
            if !tables.iter().any(|t| t.route_table_id() == Some(id.as_str())) {
                return Err(self.error(
                    ErrorClass::Fatal,
                    CODE_ROUTE_TABLE_NOT_FOUND,
                    format!("route table {id} does not exist: fix route_table_ids"),
                ));
            }
        }
        let routes = vip_routes(tables, &cidr);
        if routes.is_empty() {
            return Err(self.error(
                ErrorClass::Fatal,
                CODE_NO_VIP_ROUTE,
                format!(
                    "no route table of {} has a route for {cidr}: create the VIP route (resource \"tandem_route\") \
                     or list the tables in route_table_ids",
                    self.config.vpc_id
                ),
            ));
        }
        Ok(routes)
    }

    /// Points every route of `writes` at `eni`, all tables in parallel; the worst failure wins.
    async fn repoint(&self, writes: Vec<(String, Write)>, eni: &str) -> Result<(), ResourceError> {
        let ec2 = self.env.clients().await?.ec2.clone();
        let mut set = JoinSet::new();
        for (table, write) in writes {
            let (env, calls, ec2, cidr, eni, subject) =
                (self.env.clone(), self.calls.clone(), ec2.clone(), self.cidr(), eni.to_string(), self.subject.clone());
            set.spawn(async move {
                let done = match write {
                    Write::Replace => {
                        let req = ec2
                            .replace_route()
                            .route_table_id(&table)
                            .destination_cidr_block(&cidr)
                            .network_interface_id(&eni);
                        env.call(&calls, "ec2:ReplaceRoute", req.send()).await.map(|_| ())
                    }
                    Write::Create => {
                        let req = ec2
                            .create_route()
                            .route_table_id(&table)
                            .destination_cidr_block(&cidr)
                            .network_interface_id(&eni);
                        env.call(&calls, "ec2:CreateRoute", req.send()).await.map(|_| ())
                    }
                };
                done.map_err(|f| f.to_resource_error(&subject, &format!("route table {table}")))
            });
        }
        let mut worst: Option<ResourceError> = None;
        while let Some(joined) = set.join_next().await {
            let result = joined.unwrap_or_else(|e| {
                Err(self.error(ErrorClass::Hard, CODE_REJECTED, format!("re-pointing a route failed: {e}")))
            });
            if let Err(e) = result
                && worst.as_ref().is_none_or(|w| e.class > w.class)
            {
                worst = Some(e);
            }
        }
        worst.map_or(Ok(()), Err)
    }

    // ---- binding -------------------------------------------------------------------------------------------

    async fn is_bound(&self) -> Result<bool, ResourceError> {
        if !self.env.bind_vip() {
            return Ok(self.bound_flag.load(Ordering::SeqCst));
        }
        let addrs = self.local_addresses(ErrorClass::Soft).await?;
        Ok(addrs.iter().any(|(_, net)| net.addr() == self.config.ip))
    }

    async fn local_addresses(&self, class: ErrorClass) -> Result<Vec<(String, Ipv4Net)>, ResourceError> {
        let out = run_ip(&["-o", "-4", "addr", "show"])
            .await
            .map_err(|why| self.error(class, CODE_VIP_BIND, format!("listing the node's addresses: {why}")))?;
        Ok(parse_addresses(&out))
    }

    /// The configured device, else the one holding the node's private IP.
    async fn device(&self) -> Result<String, ResourceError> {
        if let Some(d) = &self.device {
            return Ok(d.clone());
        }
        let ip = self.env.node().private_ip;
        let addrs = self.local_addresses(ErrorClass::Hard).await?;
        addrs.into_iter().find(|(_, net)| net.addr() == ip).map(|(dev, _)| dev).ok_or_else(|| {
            self.error(
                ErrorClass::Hard,
                CODE_VIP_BIND,
                format!("no network device of this node holds its private IP {ip}: set `device` on the resource"),
            )
        })
    }

    async fn bind(&self) -> Result<(), ResourceError> {
        if !self.env.bind_vip() {
            self.bound_flag.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if self.is_bound().await? {
            return Ok(());
        }
        let dev = self.device().await?;
        let cidr = self.cidr();
        match run_ip(&["addr", "add", &cidr, "dev", &dev]).await {
            Ok(_) => Ok(()),
            Err(why) if why.contains("File exists") => Ok(()),
            Err(why) => {
                Err(self.error(ErrorClass::Hard, CODE_VIP_BIND, format!("ip addr add {cidr} dev {dev}: {why}")))
            }
        }
    }

    async fn unbind(&self) -> Result<(), ResourceError> {
        if !self.env.bind_vip() {
            self.bound_flag.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let addrs = self.local_addresses(ErrorClass::Hard).await?;
        for (dev, net) in addrs.into_iter().filter(|(_, net)| net.addr() == self.config.ip) {
            let cidr = net.to_string();
            if let Err(why) = run_ip(&["addr", "del", &cidr, "dev", &dev]).await
                && !why.contains("Cannot assign requested address")
            {
                return Err(self.error(
                    ErrorClass::Hard,
                    CODE_VIP_BIND,
                    format!("ip addr del {cidr} dev {dev}: {why}"),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl GroupResource for AwsVipResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "aws_vip"
    }

    async fn prepare(&self) -> Result<(), ResourceError> {
        self.vpc_cidrs().await?;
        self.env.eni(&self.calls, &self.subject).await?;
        Ok(())
    }

    async fn start(&self, _inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        self.check_outside(&self.config.vpc_cidrs)?;
        let cidrs = self.vpc_cidrs().await?;
        self.check_outside(cidrs)?;
        let eni = self.env.eni(&self.calls, &self.subject).await?;
        if let Some(vpc) = &eni.vpc_id
            && vpc != &self.config.vpc_id
        {
            return Err(self.error(
                ErrorClass::Fatal,
                CODE_ENI_OUTSIDE_VPC,
                format!("this node's ENI {} is in {vpc}, not in the VIP's VPC {}", eni.id, self.config.vpc_id),
            ));
        }
        let routes = self.describe().await?;
        self.bind().await?;
        let writes = plan_writes(&routes, &eni.id);
        if writes.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let count = writes.len();
        self.repoint(writes, &eni.id).await?;
        tracing::info!(
            resource = %self.subject,
            eni = %eni.id,
            tables = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "VIP {} re-pointed at this node",
            self.config.ip
        );
        Ok(())
    }

    async fn stop(&self, _inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        self.unbind().await
    }

    async fn probe(&self, _inv: &Invocation) -> Result<Probe, ResourceError> {
        if !self.is_bound().await? {
            return Ok(Probe::Stopped);
        }
        let eni = self.env.eni(&self.calls, &self.subject).await?;
        let routes = self.describe().await?;
        let wrong = changed_routes(&routes, &eni.id);
        if wrong.is_empty() {
            Ok(Probe::Running)
        } else {
            Err(self.error(
                ErrorClass::Soft,
                CODE_VIP_ROUTE_CHANGED,
                format!(
                    "routing for VIP {} was changed: {} (expected ENI {}); a restart re-points it",
                    self.config.ip,
                    wrong.join(", "),
                    eni.id
                ),
            ))
        }
    }
}

/// The VIP route (`cidr`) of every table in `tables`; a table without it is `Missing`.
pub fn vip_routes(tables: &[RouteTable], cidr: &str) -> Vec<VipRoute> {
    tables
        .iter()
        .filter_map(|t| {
            let table = t.route_table_id()?.to_string();
            let target = match t.routes().iter().find(|r| r.destination_cidr_block() == Some(cidr)) {
                None => RouteTarget::Missing,
                Some(r) => match r.network_interface_id() {
                    Some(eni) => RouteTarget::Eni(eni.to_string()),
                    None => RouteTarget::Other(
                        [r.instance_id(), r.gateway_id(), r.nat_gateway_id(), r.transit_gateway_id()]
                            .into_iter()
                            .flatten()
                            .next()
                            .unwrap_or("blackhole")
                            .to_string(),
                    ),
                },
            };
            Some(VipRoute { table, target })
        })
        .collect()
}

/// The writes that point every route at `eni`: none for routes that already do.
fn plan_writes(routes: &[VipRoute], eni: &str) -> Vec<(String, Write)> {
    routes
        .iter()
        .filter_map(|r| match &r.target {
            RouteTarget::Eni(e) if e == eni => None,
            RouteTarget::Missing => Some((r.table.clone(), Write::Create)),
            _ => Some((r.table.clone(), Write::Replace)),
        })
        .collect()
}

/// Descriptions of the routes that do not target `eni`.
fn changed_routes(routes: &[VipRoute], eni: &str) -> Vec<String> {
    routes
        .iter()
        .filter_map(|r| match &r.target {
            RouteTarget::Eni(e) if e == eni => None,
            RouteTarget::Eni(e) | RouteTarget::Other(e) => Some(format!("{} → {e}", r.table)),
            RouteTarget::Missing => Some(format!("{} has no VIP route", r.table)),
        })
        .collect()
}

/// `ip -o -4 addr show` → (device, address/prefix).
fn parse_addresses(out: &str) -> Vec<(String, Ipv4Net)> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let _index = words.next()?;
            let dev = words.next()?.split('@').next()?.to_string();
            if words.next()? != "inet" {
                return None;
            }
            let net: Ipv4Net = words.next()?.parse().ok()?;
            Some((dev, net))
        })
        .collect()
}

/// Runs `ip ARGS`; Ok(stdout) on exit 0, Err(why) otherwise.
async fn run_ip(args: &[&str]) -> Result<String, String> {
    let child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(IP_TIMEOUT, child).await {
        Err(_) => Err(format!("no answer within {} s", IP_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(format!("cannot run `ip`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => Err(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use aws_sdk_ec2::types::Route;

    use super::*;

    fn table(id: &str, routes: Vec<Route>) -> RouteTable {
        RouteTable::builder().route_table_id(id).vpc_id("vpc-1").set_routes(Some(routes)).build()
    }

    fn to_eni(eni: &str) -> Route {
        Route::builder().destination_cidr_block("10.1.0.10/32").network_interface_id(eni).build()
    }

    #[test]
    fn routes_are_read_per_table() {
        let tables = vec![
            table("rtb-1", vec![to_eni("eni-a")]),
            table("rtb-2", vec![Route::builder().destination_cidr_block("10.1.0.10/32").instance_id("i-1").build()]),
            table("rtb-3", vec![Route::builder().destination_cidr_block("0.0.0.0/0").gateway_id("igw-1").build()]),
        ];
        let routes = vip_routes(&tables, "10.1.0.10/32");
        assert_eq!(routes[0].target, RouteTarget::Eni("eni-a".into()));
        assert_eq!(routes[1].target, RouteTarget::Other("i-1".into()));
        assert_eq!(routes[2].target, RouteTarget::Missing);
    }

    #[test]
    fn only_routes_elsewhere_are_written() {
        let routes = vec![
            VipRoute { table: "rtb-1".into(), target: RouteTarget::Eni("eni-a".into()) },
            VipRoute { table: "rtb-2".into(), target: RouteTarget::Eni("eni-b".into()) },
            VipRoute { table: "rtb-3".into(), target: RouteTarget::Missing },
        ];
        assert_eq!(
            plan_writes(&routes, "eni-a"),
            vec![("rtb-2".into(), Write::Replace), ("rtb-3".into(), Write::Create)]
        );
        assert_eq!(changed_routes(&routes, "eni-a"), vec!["rtb-2 → eni-b", "rtb-3 has no VIP route"]);
        assert!(plan_writes(&routes[..1], "eni-a").is_empty());
    }

    #[test]
    fn ip_addr_output_is_parsed() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                   2: eth0    inet 10.0.1.10/24 brd 10.0.1.255 scope global eth0\\       valid_lft forever\n\
                   2: eth0    inet 10.1.0.10/32 scope global eth0\\       valid_lft forever\n";
        let addrs = parse_addresses(out);
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs[1], ("eth0".to_string(), "10.0.1.10/24".parse().expect("net")));
        assert_eq!(addrs[2].1.addr(), Ipv4Addr::new(10, 1, 0, 10));
    }
}
