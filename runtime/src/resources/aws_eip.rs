//! `resource "aws_eip"` at run time: an Elastic IP associated with the active node's ENI.
//!
//! - start: DescribeAddresses; already associated with our ENI → ok. Otherwise AssociateAddress (allocation ID,
//!   our ENI and the node's private IP, `AllowReassociation`: it takes the EIP from the old node in one call),
//!   then DescribeAddresses again to verify.
//! - stop: DisassociateAddress, only while the association is still ours (a new active node may own it already).
//!   When AWS cannot be asked, the stop succeeds and leaves the EIP in place (TDM-AWS-142, logged): the next owner
//!   re-associates it in one call, and a failed stop would get this node shut down.
//! - probe: associated with our ENI → `Running`, else `Stopped`.
//!
//! An allocation ID that does not exist is fatal (TDM-AWS-113).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Address;

use super::{ErrorClass, GroupResource, Invocation, Probe, ResourceContext, ResourceError};
use crate::aws::eni::Eni;
use crate::aws::{AwsEnv, CODE_EIP_NOT_FOUND, CODE_EIP_NOT_OURS, CODE_STOP_LEFT_IN_PLACE, Calls};
use crate::config::AwsEip;

pub struct AwsEipResource {
    name: String,
    subject: String,
    config: AwsEip,
    env: AwsEnv,
    calls: Calls,
    actions: tokio::sync::Mutex<()>,
}

/// The EIP's association as DescribeAddresses reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Association {
    association_id: Option<String>,
    eni: Option<String>,
    public_ip: Option<String>,
}

impl Association {
    fn of(a: &Address) -> Association {
        // moto answers "" for the ENI of a disassociated EIP; treat an empty ID as none.
        let id = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        Association {
            association_id: id(a.association_id()),
            eni: id(a.network_interface_id()),
            public_ip: id(a.public_ip()),
        }
    }

    fn is_ours(&self, eni: &Eni) -> bool {
        self.eni.as_deref() == Some(eni.id.as_str())
    }
}

impl AwsEipResource {
    pub fn new(name: &str, config: &AwsEip, cx: &ResourceContext, env: &AwsEnv) -> AwsEipResource {
        AwsEipResource {
            name: name.to_string(),
            subject: format!("aws_eip {}/{name}", cx.group),
            config: config.clone(),
            env: env.clone(),
            calls: Calls::default(),
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

    fn target(&self) -> String {
        format!("EIP {}", self.config.allocation_id)
    }

    async fn describe(&self) -> Result<Association, ResourceError> {
        let ec2 = &self.env.clients().await?.ec2;
        let id = &self.config.allocation_id;
        let out = self
            .env
            .call(&self.calls, "ec2:DescribeAddresses", ec2.describe_addresses().allocation_ids(id).send())
            .await
            .map_err(|f| f.to_resource_error(&self.subject, &self.target()))?;
        match out.addresses().iter().find(|a| a.allocation_id() == Some(id.as_str())) {
            Some(a) => Ok(Association::of(a)),
            None => Err(ResourceError::new(
                ErrorClass::Fatal,
                CODE_EIP_NOT_FOUND,
                format!("{}: EIP allocation {id} does not exist: fix allocation_id", self.subject),
            )),
        }
    }

    /// Stop's work: DisassociateAddress while the association is still ours.
    async fn disassociate_if_ours(&self) -> Result<(), ResourceError> {
        let eni = self.env.eni(&self.calls, &self.subject).await?;
        let current = match self.describe().await {
            Ok(a) => a,
            Err(e) if e.code == CODE_EIP_NOT_FOUND => {
                tracing::warn!(resource = %self.subject, "{e}; nothing to disassociate");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let (true, Some(association)) = (current.is_ours(&eni), current.association_id) else {
            return Ok(());
        };
        let ec2 = &self.env.clients().await?.ec2;
        let req = ec2.disassociate_address().association_id(&association);
        match self.env.call(&self.calls, "ec2:DisassociateAddress", req.send()).await {
            Ok(_) => Ok(()),
            // Another node re-associated it between our read and our call: it is not ours any more.
            Err(f) if f.has_code("InvalidAssociationID.NotFound") => Ok(()),
            Err(f) => Err(f.to_resource_error(&self.subject, &self.target())),
        }
    }
}

#[async_trait::async_trait]
impl GroupResource for AwsEipResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "aws_eip"
    }

    async fn start(&self, _inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        let eni = self.env.eni(&self.calls, &self.subject).await?;
        let before = self.describe().await?;
        if before.is_ours(&eni) {
            return Ok(());
        }
        let ec2 = &self.env.clients().await?.ec2;
        let ip = self.env.node().private_ip;
        let req = ec2
            .associate_address()
            .allocation_id(&self.config.allocation_id)
            .network_interface_id(&eni.id)
            .set_private_ip_address(eni.private_ips.contains(&ip).then(|| ip.to_string()))
            .allow_reassociation(true);
        self.env
            .call(&self.calls, "ec2:AssociateAddress", req.send())
            .await
            .map_err(|f| f.to_resource_error(&self.subject, &self.target()))?;
        let after = self.describe().await?;
        if !after.is_ours(&eni) {
            return Err(ResourceError::new(
                ErrorClass::Soft,
                CODE_EIP_NOT_OURS,
                format!(
                    "{}: after AssociateAddress, EIP {} is associated with {} instead of ENI {}",
                    self.subject,
                    self.config.allocation_id,
                    after.eni.as_deref().unwrap_or("nothing"),
                    eni.id
                ),
            ));
        }
        tracing::info!(
            resource = %self.subject,
            eni = %eni.id,
            previous = before.eni.as_deref().unwrap_or("none"),
            "EIP {} associated with this node",
            after.public_ip.as_deref().unwrap_or(&self.config.allocation_id)
        );
        Ok(())
    }

    async fn stop(&self, _inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        // A stop that cannot reach AWS leaves the EIP where it is. That is safe: the association is only this
        // node's claim, and the next owner takes it over in one call (AllowReassociation). Failing the stop
        // would have the node shut down (a failed stop is fenced) over an AWS API hiccup.
        if let Err(e) = self.disassociate_if_ours().await {
            tracing::warn!(
                code = CODE_STOP_LEFT_IN_PLACE,
                cause = e.code,
                resource = %self.subject,
                "stop: {e}; the EIP may stay associated with this node until the next active node takes it"
            );
        }
        Ok(())
    }

    async fn prepare(&self) -> Result<(), ResourceError> {
        self.env.eni(&self.calls, &self.subject).await.map(|_| ())
    }

    async fn probe(&self, _inv: &Invocation) -> Result<Probe, ResourceError> {
        let eni = self.env.eni(&self.calls, &self.subject).await?;
        let current = self.describe().await?;
        Ok(if current.is_ours(&eni) { Probe::Running } else { Probe::Stopped })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn association_is_ours_only_on_our_eni() {
        let eni = Eni {
            id: "eni-a".into(),
            vpc_id: None,
            private_ips: vec![Ipv4Addr::new(10, 0, 1, 10)],
            source_dest_check: None,
        };
        let a =
            Address::builder().allocation_id("eipalloc-1").association_id("eipassoc-1").network_interface_id("eni-a");
        assert!(Association::of(&a.build()).is_ours(&eni));
        let b = Address::builder().allocation_id("eipalloc-1").network_interface_id("eni-b").build();
        assert!(!Association::of(&b).is_ours(&eni));
        let none = Address::builder().allocation_id("eipalloc-1").build();
        assert!(!Association::of(&none).is_ours(&eni));
        let empty = Address::builder().allocation_id("eipalloc-1").network_interface_id("").association_id("").build();
        assert_eq!(Association::of(&empty).eni, None);
    }
}
