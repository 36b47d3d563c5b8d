//! The mirror disk (issue 7): a block device replicated synchronously between the nodes of a group and served to
//! the active node over NBD.
//!
//! - [`store`]: the [`BlockStore`](store::BlockStore) trait every layer implements, and
//!   [`FileStore`](store::FileStore) over a regular file or a block device;
//! - [`nbd`]: the NBD wire codec and the export server (Unix socket or loopback TCP);
//! - [`attach`]: the kernel side on a real node: /dev/nbdX over netlink, mkfs and mount;
//! - [`replication`]: synchronous replication to the peer (protocol C), `ReplicatedStore` and `serve_secondary`;
//! - [`meta`] (with [`superblock`]): the metadata file — double-buffered superblock, generations, persistent dirty
//!   bitmap; [`generations`]: the handshake decision (in sync, bitmap/full resync, split brain);
//! - [`outdated`]: the peer's Outdated mark in the lease record and the promotion check.
//!
//! The group resource is `resources::mirror_disk`; tandemd wires it in `resources::mirror_env`. See
//! docs/mirror.md.

pub mod attach;
pub mod generations;
pub mod meta;
pub mod nbd;
pub mod outdated;
pub mod replication;
pub mod store;
pub mod superblock;
