//! The mirror disk (issue 7): a block device replicated synchronously between the nodes of a group and served to
//! the active node over NBD.
//!
//! What exists now: the local export and replication:
//! - [`store`]: the [`BlockStore`](store::BlockStore) trait every layer implements, and
//!   [`FileStore`](store::FileStore) over a regular file or a block device;
//! - [`nbd`]: the NBD wire codec and the export server (Unix socket or loopback TCP);
//! - [`replication`]: synchronous replication to the peer (protocol C), `ReplicatedStore` and `serve_secondary`;
//! - [`meta`] (with [`superblock`]): the metadata file — double-buffered superblock, generations, persistent dirty
//!   bitmap; [`generations`]: the handshake decision (in sync, bitmap/full resync, split brain).
//!
//! The group resource and `tandemctl mirror` come later; the replication layer
//! wraps the write path by implementing `BlockStore` around a local store, and the NBD server does not change. See
//! docs/mirror.md.

pub mod generations;
pub mod meta;
pub mod nbd;
pub mod outdated;
pub mod replication;
pub mod store;
pub mod superblock;
