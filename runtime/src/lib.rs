//! tandem runtime library: the contracts shared by the Terraform provider and the node daemon.
//!
//! Today it holds the network address rules both sides enforce (the provider at plan time, the runtime when
//! it loads a cluster config); the cluster config model, membership, groups and the daemons follow.

pub mod aws;
pub mod config;
pub mod daemon;
pub mod group;
pub mod membership;
pub mod monitors;
pub mod net;
pub mod resources;
