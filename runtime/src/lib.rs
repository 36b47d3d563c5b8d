//! tandem runtime library: the contracts shared by the Terraform provider and the node daemon.
//!
//! - [`config`]: the cluster config model, the one contract the provider renders and tandemd reads; [`net`]: the
//!   address rules both sides enforce.
//! - [`membership`]: heartbeats, the DynamoDB lease, the witnesses; [`group`]: the failover group runner;
//!   [`resources`] and [`monitors`]: one trait each, one file per kind; [`aws`]: the node's AWS clients and ENI.
//! - [`mirror`]: the mirror disk's block store and NBD export.
//! - [`daemon`]: tandemd's wiring, control and peer APIs, metrics, event log (binaries `tandemd`, `tandemctl`).

pub mod aws;
pub mod config;
pub mod daemon;
pub mod fence;
pub mod group;
pub mod membership;
pub mod mirror;
pub mod monitors;
pub mod net;
pub mod resources;
