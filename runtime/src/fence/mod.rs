//! The fencer: a small process apart from tandemd that ends a group's processes on this node when the node's
//! right to run the group ends, whether or not tandemd is alive, frozen or hung (docs/fencing.md).
//!
//! tandemd arms it at every step of a running group with the group's deadline (the later of the lease's validity
//! and the peers' vouch, the same instant tandemd itself stops by) and the cgroups of the group's `exec`
//! resources; a group that stops cleanly is disarmed. When a deadline passes unextended, the fencer SIGKILLs every
//! process of those cgroups. The deadline is one the other nodes already respect before they may start the group
//! (the lease's drift margins), so the fencer adds nothing to a failover.

pub mod client;
pub mod clock;
pub mod fencer;
pub mod killer;
pub mod protocol;
pub mod server;
