//! Membership: heartbeats, partition resolution, lease arbitration.

pub mod heartbeat;
pub mod lease;
pub mod witness;
