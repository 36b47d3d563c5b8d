//! A generic netlink socket (through `rustix`, no `unsafe`) and the NBD driver's commands on it.
//!
//! Blocking calls with a receive timeout ([`NETLINK_TIMEOUT`]), so a kernel that never answers is an error, not a
//! hang; run them on the blocking pool from async code.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::sockopt::Timeout;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::AttachError;
use super::netlink::{
    ConnectRequest, DeviceStatus, NBD_GENL_FAMILY_NAME, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    decode_connect_reply, decode_error, decode_family_id, decode_status_reply, encode_connect, encode_disconnect,
    encode_get_family, encode_status, split_messages,
};

/// Longest wait for the kernel's answer to one request.
pub const NETLINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive buffer: an answer (or an error echoing a request) is far smaller.
const RECV_BUF: usize = 64 * 1024;

/// An open `NETLINK_GENERIC` socket.
pub struct GenlSocket {
    fd: OwnedFd,
    seq: u32,
    timeout: Duration,
}

fn io_err(op: &'static str, e: Errno) -> AttachError {
    AttachError::NetlinkIo { op, source: std::io::Error::from(e) }
}

impl GenlSocket {
    /// Open and bind a generic netlink socket; answers are awaited at most `timeout` per request.
    pub fn open(timeout: Duration) -> Result<Self, AttachError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(netlink::GENERIC),
        )
        .map_err(|e| io_err("socket(AF_NETLINK, NETLINK_GENERIC)", e))?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0)).map_err(|e| io_err("bind", e))?;
        rustix::net::sockopt::set_socket_timeout(&fd, Timeout::Recv, Some(timeout))
            .map_err(|e| io_err("setsockopt(SO_RCVTIMEO)", e))?;
        // A per-process start value keeps two sockets of one daemon apart in traces.
        let seq = std::process::id().wrapping_mul(1000);
        Ok(GenlSocket { fd, seq, timeout })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Send one request (built for `seq`) and collect the generic netlink payloads of its answers until the ACK.
    /// An `NLMSG_ERROR` with a non-zero errno becomes [`AttachError::Kernel`] (or `NotPermitted` for EPERM).
    fn request(&mut self, cmd: &'static str, build: impl FnOnce(u32) -> Vec<u8>) -> Result<Vec<Vec<u8>>, AttachError> {
        let seq = self.next_seq();
        let msg = build(seq);
        let sent = rustix::net::sendto(&self.fd, &msg, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))
            .map_err(|e| io_err("sendto", e))?;
        if sent != msg.len() {
            return Err(AttachError::NetlinkIo {
                op: "sendto",
                source: std::io::Error::other(format!("sent {sent} of {} bytes", msg.len())),
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; RECV_BUF];
        let mut answers = Vec::new();
        loop {
            if Instant::now() >= deadline {
                return Err(AttachError::NetlinkTimeout { cmd, timeout: self.timeout });
            }
            let (n, _) = match rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty()) {
                Ok(r) => r,
                Err(Errno::AGAIN) => return Err(AttachError::NetlinkTimeout { cmd, timeout: self.timeout }),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(io_err("recv", e)),
            };
            for m in split_messages(&buf[..n])? {
                if m.seq != seq {
                    continue; // a late answer to an earlier, timed-out request
                }
                match m.ty {
                    NLMSG_ERROR => {
                        let e = decode_error(m.flags, m.payload)?;
                        return match e.errno {
                            0 => Ok(answers),
                            1 => Err(AttachError::NotPermitted { cmd }),
                            errno => Err(AttachError::Kernel { cmd, errno, message: e.message }),
                        };
                    }
                    NLMSG_DONE => return Ok(answers),
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    _ => answers.push(m.payload.to_vec()),
                }
            }
        }
    }

    /// The numeric id of a generic netlink family. An unknown family (ENOENT) is
    /// [`AttachError::FamilyNotFound`].
    pub fn resolve_family(&mut self, name: &str) -> Result<u16, AttachError> {
        let answers = match self.request("CTRL_CMD_GETFAMILY", |seq| encode_get_family(seq, name)) {
            Err(AttachError::Kernel { errno: 2, .. }) => {
                return Err(AttachError::FamilyNotFound { family: name.to_string() });
            }
            other => other?,
        };
        let first = answers.first().ok_or(AttachError::NetlinkMalformed { reason: "GETFAMILY without an answer" })?;
        decode_family_id(first)
    }
}

/// The NBD driver's netlink interface: a socket and the resolved `nbd` family.
pub struct NbdNetlink {
    sock: GenlSocket,
    family: u16,
}

impl NbdNetlink {
    /// Open a socket and resolve the `nbd` family.
    pub fn open() -> Result<Self, AttachError> {
        let mut sock = GenlSocket::open(NETLINK_TIMEOUT)?;
        let family = sock.resolve_family(NBD_GENL_FAMILY_NAME)?;
        Ok(NbdNetlink { sock, family })
    }

    pub fn family(&self) -> u16 {
        self.family
    }

    /// `NBD_CMD_CONNECT`: hand the sockets to the kernel; returns the index N of `/dev/nbdN`.
    pub fn connect(&mut self, req: &ConnectRequest) -> Result<u32, AttachError> {
        let family = self.family;
        let answers = self.sock.request("NBD_CMD_CONNECT", |seq| encode_connect(family, seq, req))?;
        let first =
            answers.first().ok_or(AttachError::NetlinkMalformed { reason: "NBD_CMD_CONNECT without an answer" })?;
        decode_connect_reply(first)
    }

    /// `NBD_CMD_DISCONNECT` of `/dev/nbd<index>`.
    pub fn disconnect(&mut self, index: u32) -> Result<(), AttachError> {
        let family = self.family;
        self.sock.request("NBD_CMD_DISCONNECT", |seq| encode_disconnect(family, seq, index)).map(|_| ())
    }

    /// `NBD_CMD_STATUS`: every device, or one.
    pub fn status(&mut self, index: Option<u32>) -> Result<Vec<DeviceStatus>, AttachError> {
        let family = self.family;
        let answers = self.sock.request("NBD_CMD_STATUS", |seq| encode_status(family, seq, index))?;
        let mut out = Vec::new();
        for a in &answers {
            out.extend(decode_status_reply(a)?);
        }
        Ok(out)
    }
}
