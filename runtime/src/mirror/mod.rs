//! The mirror disk (issue 7): a block device replicated synchronously between the nodes of a group and served to
//! the active node over NBD.
//!
//! What exists now is the first piece, the local export:
//! - [`store`]: the [`BlockStore`](store::BlockStore) trait every layer implements, and
//!   [`FileStore`](store::FileStore) over a regular file or a block device;
//! - [`nbd`]: the NBD wire codec and the export server (Unix socket or loopback TCP).
//!
//! Replication to the peer (protocol C over TLS), metadata and generation IDs, resync, the group resource and
//! `tandemctl mirror` come later; the replication layer wraps the write path by implementing `BlockStore` around a
//! local store, and the NBD server does not change. See docs/mirror.md.

pub mod nbd;
pub mod store;
