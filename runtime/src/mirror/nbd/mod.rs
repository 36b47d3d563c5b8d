//! The NBD export of a mirror disk: the wire codec ([`proto`], pure) and the tokio server ([`server`]).
//!
//! Supported: fixed newstyle handshake (`NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`, `NBD_OPT_INFO`, `NBD_OPT_GO`,
//! `NBD_OPT_ABORT`; everything else `NBD_REP_ERR_UNSUP`), simple replies, READ, WRITE, FLUSH, TRIM,
//! WRITE_ZEROES and DISC with FUA, pipelined requests, on a Unix socket or loopback TCP. See docs/mirror.md.

pub mod proto;
pub mod server;

pub use proto::NbdError;
pub use server::{Export, ServerError, bind_tcp, bind_unix, serve_connection, serve_tcp, serve_unix};
