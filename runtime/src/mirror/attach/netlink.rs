//! Generic netlink messages for the kernel NBD driver: pure encoders and decoders, no I/O.
//!
//! Layouts (all integers in host byte order, as netlink wants):
//! - `nlmsghdr` (16 bytes): length (whole message, header included), type (the family id), flags, seq, port id;
//! - `genlmsghdr` (4 bytes): command, version, two reserved bytes;
//! - attributes (`nlattr`): length (4 + payload, unpadded), type, payload, then padding to a 4-byte boundary.
//!   Nested attributes carry [`NLA_F_NESTED`] in their type.
//!
//! Constants come from the Linux uapi headers `linux/netlink.h`, `linux/genetlink.h` and `linux/nbd-netlink.h`.

use super::AttachError;

// linux/netlink.h
pub const NLMSG_HDRLEN: usize = 16;
pub const NLA_HDRLEN: usize = 4;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
/// In an NLMSG_ERROR: the original request was cut down to its header.
pub const NLM_F_CAPPED: u16 = 0x100;
/// In an NLMSG_ERROR: extended-ACK attributes follow the original request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
pub const NLMSGERR_ATTR_MSG: u16 = 1;

// linux/genetlink.h
pub const GENL_HDRLEN: usize = 4;
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_VERSION: u8 = 2;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

// linux/nbd-netlink.h
pub const NBD_GENL_FAMILY_NAME: &str = "nbd";
pub const NBD_GENL_VERSION: u8 = 1;
pub const NBD_ATTR_INDEX: u16 = 1;
pub const NBD_ATTR_SIZE_BYTES: u16 = 2;
pub const NBD_ATTR_BLOCK_SIZE_BYTES: u16 = 3;
pub const NBD_ATTR_TIMEOUT: u16 = 4;
pub const NBD_ATTR_SERVER_FLAGS: u16 = 5;
pub const NBD_ATTR_CLIENT_FLAGS: u16 = 6;
pub const NBD_ATTR_SOCKETS: u16 = 7;
pub const NBD_ATTR_DEAD_CONN_TIMEOUT: u16 = 8;
pub const NBD_ATTR_DEVICE_LIST: u16 = 9;
pub const NBD_DEVICE_ITEM: u16 = 1;
pub const NBD_DEVICE_INDEX: u16 = 1;
pub const NBD_DEVICE_CONNECTED: u16 = 2;
pub const NBD_SOCK_ITEM: u16 = 1;
pub const NBD_SOCK_FD: u16 = 1;
pub const NBD_CMD_CONNECT: u8 = 1;
pub const NBD_CMD_DISCONNECT: u8 = 2;
pub const NBD_CMD_STATUS: u8 = 5;

/// Round up to the netlink alignment (4 bytes).
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A generic netlink request under construction: `nlmsghdr` + `genlmsghdr` + attributes.
#[derive(Debug, Clone)]
pub struct GenlMessage {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl GenlMessage {
    /// Start a message to `family` (its numeric id) with `flags` (e.g. `NLM_F_REQUEST | NLM_F_ACK`).
    pub fn new(family: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0 = to the kernel
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        GenlMessage { buf, nests: Vec::new() }
    }

    /// An attribute with a raw payload, padded to 4 bytes.
    pub fn put(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    pub fn put_u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.put(ty, &[v])
    }

    pub fn put_u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    pub fn put_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    pub fn put_u64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute (`NLA_NUL_STRING`).
    pub fn put_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut payload = Vec::with_capacity(s.len() + 1);
        payload.extend_from_slice(s.as_bytes());
        payload.push(0);
        self.put(ty, &payload)
    }

    /// Open a nested attribute (type gets [`NLA_F_NESTED`]); close it with [`GenlMessage::end_nested`].
    pub fn begin_nested(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Close the innermost open nest: its length covers everything written since it was opened.
    pub fn end_nested(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The finished message (open nests are closed, the length is set).
    pub fn finish(mut self) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.end_nested();
        }
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }
}

/// One netlink message of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub port: u32,
    /// Everything after the `nlmsghdr` (for a generic netlink message: `genlmsghdr` + attributes).
    pub payload: &'a [u8],
}

fn ne_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn malformed(reason: &'static str) -> AttachError {
    AttachError::NetlinkMalformed { reason }
}

/// Split a datagram into its messages (each starts at a 4-byte boundary).
pub fn split_messages(mut buf: &[u8]) -> Result<Vec<NlMsg<'_>>, AttachError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = ne_u32(buf, 0) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(malformed("message length outside the datagram"));
        }
        out.push(NlMsg {
            ty: ne_u16(buf, 4),
            flags: ne_u16(buf, 6),
            seq: ne_u32(buf, 8),
            port: ne_u32(buf, 12),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    if !buf.is_empty() {
        return Err(malformed("trailing bytes shorter than a message header"));
    }
    Ok(out)
}

/// One attribute; `ty` has the flag bits removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub ty: u16,
    pub nested: bool,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Result<u8, AttachError> {
        self.payload.first().copied().ok_or_else(|| malformed("u8 attribute too short"))
    }

    pub fn u16(&self) -> Result<u16, AttachError> {
        if self.payload.len() < 2 {
            return Err(malformed("u16 attribute too short"));
        }
        Ok(ne_u16(self.payload, 0))
    }

    pub fn u32(&self) -> Result<u32, AttachError> {
        if self.payload.len() < 4 {
            return Err(malformed("u32 attribute too short"));
        }
        Ok(ne_u32(self.payload, 0))
    }

    /// A string attribute, without its trailing NUL bytes.
    pub fn string(&self) -> String {
        let end = self.payload.iter().position(|b| *b == 0).unwrap_or(self.payload.len());
        String::from_utf8_lossy(&self.payload[..end]).into_owned()
    }

    /// The attributes nested in this one.
    pub fn attrs(&self) -> Result<Vec<Attr<'a>>, AttachError> {
        parse_attrs(self.payload)
    }
}

/// Parse a run of attributes.
pub fn parse_attrs(mut buf: &[u8]) -> Result<Vec<Attr<'_>>, AttachError> {
    let mut out = Vec::new();
    while buf.len() >= NLA_HDRLEN {
        let len = ne_u16(buf, 0) as usize;
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(malformed("attribute length outside its container"));
        }
        let raw = ne_u16(buf, 2);
        out.push(Attr { ty: raw & NLA_TYPE_MASK, nested: raw & NLA_F_NESTED != 0, payload: &buf[NLA_HDRLEN..len] });
        buf = &buf[align4(len).min(buf.len())..];
    }
    if !buf.is_empty() {
        return Err(malformed("trailing bytes shorter than an attribute header"));
    }
    Ok(out)
}

fn find<'a>(attrs: &[Attr<'a>], ty: u16) -> Option<Attr<'a>> {
    attrs.iter().find(|a| a.ty == ty).copied()
}

/// The generic netlink part of a message: its command and attributes.
pub fn genl_body(payload: &[u8]) -> Result<(u8, Vec<Attr<'_>>), AttachError> {
    if payload.len() < GENL_HDRLEN {
        return Err(malformed("generic netlink message shorter than its header"));
    }
    Ok((payload[0], parse_attrs(&payload[GENL_HDRLEN..])?))
}

/// The content of an `NLMSG_ERROR`: `errno` 0 is the acknowledgement, otherwise a positive errno and, when the
/// socket asked for extended ACKs, the kernel's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    pub errno: i32,
    pub message: Option<String>,
}

/// Decode an `NLMSG_ERROR` payload: an `int` (negative errno), the original request (its header only when
/// `flags` has [`NLM_F_CAPPED`]), then extended-ACK attributes when `flags` has [`NLM_F_ACK_TLVS`].
pub fn decode_error(flags: u16, payload: &[u8]) -> Result<ErrorMsg, AttachError> {
    if payload.len() < 4 + NLMSG_HDRLEN {
        return Err(malformed("NLMSG_ERROR shorter than errno + original header"));
    }
    let error = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let errno = error.checked_neg().ok_or_else(|| malformed("NLMSG_ERROR errno out of range"))?;
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let orig_len = if flags & NLM_F_CAPPED != 0 { NLMSG_HDRLEN } else { ne_u32(payload, 4) as usize };
        let start = 4 + align4(orig_len);
        if start <= payload.len() {
            message = find(&parse_attrs(&payload[start..])?, NLMSGERR_ATTR_MSG).map(|a| a.string());
        }
    }
    Ok(ErrorMsg { errno, message })
}

/// `CTRL_CMD_GETFAMILY` for `name`.
pub fn encode_get_family(seq: u32, name: &str) -> Vec<u8> {
    let mut m = GenlMessage::new(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, CTRL_CMD_GETFAMILY, CTRL_VERSION);
    m.put_str(CTRL_ATTR_FAMILY_NAME, name);
    m.finish()
}

/// The family id in the answer to `CTRL_CMD_GETFAMILY`.
pub fn decode_family_id(genl_payload: &[u8]) -> Result<u16, AttachError> {
    let (_, attrs) = genl_body(genl_payload)?;
    find(&attrs, CTRL_ATTR_FAMILY_ID).ok_or_else(|| malformed("GETFAMILY answer without CTRL_ATTR_FAMILY_ID"))?.u16()
}

/// What `NBD_CMD_CONNECT` tells the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// `/dev/nbdN` to use; `None` lets the kernel pick a free one (or create one).
    pub index: Option<u32>,
    pub size_bytes: u64,
    pub block_size: u64,
    /// The export's transmission flags (`NBD_FLAG_*`).
    pub server_flags: u64,
    /// Seconds before a request is considered timed out (0: the kernel's default, 30 s).
    pub timeout_secs: u64,
    /// Seconds the device waits for a dead connection to be replaced before failing I/O.
    pub dead_conn_timeout_secs: u64,
    /// File descriptors of connected sockets, already past the handshake (in this process).
    pub socket_fds: Vec<u32>,
}

/// `NBD_CMD_CONNECT`.
pub fn encode_connect(family: u16, seq: u32, req: &ConnectRequest) -> Vec<u8> {
    let mut m = GenlMessage::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, NBD_CMD_CONNECT, NBD_GENL_VERSION);
    if let Some(index) = req.index {
        m.put_u32(NBD_ATTR_INDEX, index);
    }
    m.put_u64(NBD_ATTR_SIZE_BYTES, req.size_bytes)
        .put_u64(NBD_ATTR_BLOCK_SIZE_BYTES, req.block_size)
        .put_u64(NBD_ATTR_SERVER_FLAGS, req.server_flags)
        .put_u64(NBD_ATTR_TIMEOUT, req.timeout_secs)
        .put_u64(NBD_ATTR_DEAD_CONN_TIMEOUT, req.dead_conn_timeout_secs)
        .begin_nested(NBD_ATTR_SOCKETS);
    for fd in &req.socket_fds {
        m.begin_nested(NBD_SOCK_ITEM).put_u32(NBD_SOCK_FD, *fd).end_nested();
    }
    m.end_nested();
    m.finish()
}

/// The device index in the kernel's answer to `NBD_CMD_CONNECT`.
pub fn decode_connect_reply(genl_payload: &[u8]) -> Result<u32, AttachError> {
    let (_, attrs) = genl_body(genl_payload)?;
    find(&attrs, NBD_ATTR_INDEX).ok_or_else(|| malformed("CONNECT answer without NBD_ATTR_INDEX"))?.u32()
}

/// `NBD_CMD_DISCONNECT` of `/dev/nbd<index>`.
pub fn encode_disconnect(family: u16, seq: u32, index: u32) -> Vec<u8> {
    let mut m = GenlMessage::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, NBD_CMD_DISCONNECT, NBD_GENL_VERSION);
    m.put_u32(NBD_ATTR_INDEX, index);
    m.finish()
}

/// `NBD_CMD_STATUS` of one device, or of all of them.
pub fn encode_status(family: u16, seq: u32, index: Option<u32>) -> Vec<u8> {
    let mut m = GenlMessage::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, NBD_CMD_STATUS, NBD_GENL_VERSION);
    if let Some(index) = index {
        m.put_u32(NBD_ATTR_INDEX, index);
    }
    m.finish()
}

/// One device of an `NBD_CMD_STATUS` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    pub index: u32,
    pub connected: bool,
}

/// The devices listed in an `NBD_CMD_STATUS` answer (`NBD_ATTR_DEVICE_LIST` → `NBD_DEVICE_ITEM`s).
pub fn decode_status_reply(genl_payload: &[u8]) -> Result<Vec<DeviceStatus>, AttachError> {
    let (_, attrs) = genl_body(genl_payload)?;
    let Some(list) = find(&attrs, NBD_ATTR_DEVICE_LIST) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in list.attrs()?.iter().filter(|a| a.ty == NBD_DEVICE_ITEM) {
        let fields = item.attrs()?;
        let index = find(&fields, NBD_DEVICE_INDEX).ok_or_else(|| malformed("device item without index"))?.u32()?;
        let connected = match find(&fields, NBD_DEVICE_CONNECTED) {
            Some(a) => a.u8()? != 0,
            None => false,
        };
        out.push(DeviceStatus { index, connected });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = ((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes().to_vec();
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&77u32.to_ne_bytes());
        b.extend_from_slice(payload);
        b.resize(align4(b.len()), 0);
        b
    }

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = ((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes().to_vec();
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(payload);
        b.resize(align4(b.len()), 0);
        b
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn get_family_request_matches_the_kernel_layout_byte_for_byte() {
        let m = encode_get_family(7, "nbd");
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            28, 0, 0, 0,      // nlmsg_len = 16 + 4 + 8
            0x10, 0,          // nlmsg_type = GENL_ID_CTRL
            0x05, 0,          // NLM_F_REQUEST | NLM_F_ACK
            7, 0, 0, 0,       // seq
            0, 0, 0, 0,       // port id
            3, 2, 0, 0,       // CTRL_CMD_GETFAMILY, version 2, reserved
            8, 0, 2, 0,       // nla_len = 4 + "nbd\0", CTRL_ATTR_FAMILY_NAME
            b'n', b'b', b'd', 0,
        ];
        assert_eq!(m, expected);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn connect_request_nests_the_socket_fd_with_nla_f_nested() {
        let req = ConnectRequest {
            index: None,
            size_bytes: 1 << 20,
            block_size: 4096,
            server_flags: 0x0d,
            timeout_secs: 30,
            dead_conn_timeout_secs: 10,
            socket_fds: vec![9],
        };
        let m = encode_connect(0x1f, 3, &req);
        let u64attr = |ty: u8, v: u64| {
            let mut b = vec![12, 0, ty, 0];
            b.extend_from_slice(&v.to_le_bytes());
            b
        };
        #[rustfmt::skip]
        let mut expected: Vec<u8> = vec![
            0, 0, 0, 0, 0x1f, 0, 0x05, 0, 3, 0, 0, 0, 0, 0, 0, 0,
            1, 1, 0, 0,                            // NBD_CMD_CONNECT, version 1
        ];
        expected.extend(u64attr(2, 1 << 20));
        expected.extend(u64attr(3, 4096));
        expected.extend(u64attr(5, 0x0d));
        expected.extend(u64attr(4, 30));
        expected.extend(u64attr(8, 10));
        #[rustfmt::skip]
        expected.extend_from_slice(&[
            16, 0, 7, 0x80,                        // NBD_ATTR_SOCKETS | NLA_F_NESTED, 4 + 12
            12, 0, 1, 0x80,                        // NBD_SOCK_ITEM | NLA_F_NESTED, 4 + 8
            8, 0, 1, 0, 9, 0, 0, 0,                // NBD_SOCK_FD = 9
        ]);
        let len = expected.len() as u32;
        expected[0..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(m, expected);
    }

    #[test]
    fn connect_with_an_index_puts_it_first_and_decodes_back() {
        let req = ConnectRequest {
            index: Some(3),
            size_bytes: 8192,
            block_size: 512,
            server_flags: 1,
            timeout_secs: 0,
            dead_conn_timeout_secs: 0,
            socket_fds: vec![5, 6],
        };
        let m = encode_connect(30, 1, &req);
        let msgs = split_messages(&m).expect("split");
        assert_eq!(msgs.len(), 1);
        let (cmd, attrs) = genl_body(msgs[0].payload).expect("genl");
        assert_eq!(cmd, NBD_CMD_CONNECT);
        assert_eq!(attrs[0].ty, NBD_ATTR_INDEX);
        assert_eq!(attrs[0].u32().expect("u32"), 3);
        let socks = find(&attrs, NBD_ATTR_SOCKETS).expect("sockets");
        assert!(socks.nested);
        let fds: Vec<u32> =
            socks.attrs().expect("items").iter().map(|item| item.attrs().expect("fd")[0].u32().expect("u32")).collect();
        assert_eq!(fds, vec![5, 6]);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn disconnect_and_status_carry_the_index() {
        let d = encode_disconnect(0x1f, 9, 2);
        assert_eq!(d, vec![28, 0, 0, 0, 0x1f, 0, 5, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 8, 0, 1, 0, 2, 0, 0, 0]);
        let all = encode_status(0x1f, 1, None);
        assert_eq!(all.len(), 20);
        assert_eq!(&all[16..20], &[5, 1, 0, 0]);
        assert_eq!(encode_status(0x1f, 1, Some(0)).len(), 28);
    }

    #[test]
    fn odd_payloads_are_padded_to_four_bytes() {
        let mut m = GenlMessage::new(1, 0, 0, 0, 0);
        m.put_u8(1, 0xab).put_u16(2, 0x1234);
        let b = m.finish();
        assert_eq!(b.len(), 20 + 8 + 8);
        let attrs = parse_attrs(&b[20..]).expect("attrs");
        assert_eq!(attrs[0].payload, &[0xab]);
        assert_eq!(attrs[1].u16().expect("u16"), 0x1234);
        assert_eq!(u16::from_ne_bytes([b[20], b[21]]), 5, "nla_len is unpadded");
    }

    #[test]
    fn family_id_is_read_from_the_getfamily_answer() {
        let mut body = vec![1, 2, 0, 0];
        body.extend(attr(CTRL_ATTR_FAMILY_NAME, b"nbd\0"));
        body.extend(attr(CTRL_ATTR_FAMILY_ID, &0x23u16.to_ne_bytes()));
        assert_eq!(decode_family_id(&body).expect("id"), 0x23);
        let e = decode_family_id(&[1, 2, 0, 0]).expect_err("no id");
        assert_eq!(e.code(), "TDM-ATT-003");
    }

    #[test]
    fn connect_answer_gives_the_device_index() {
        let mut body = vec![NBD_CMD_CONNECT, 1, 0, 0];
        body.extend(attr(NBD_ATTR_INDEX, &4u32.to_ne_bytes()));
        assert_eq!(decode_connect_reply(&body).expect("index"), 4);
        assert!(decode_connect_reply(&[NBD_CMD_CONNECT, 1, 0, 0]).is_err());
    }

    #[test]
    fn status_answer_lists_devices_and_their_connection() {
        let item = |index: u32, connected: u8| {
            let mut inner = attr(NBD_DEVICE_INDEX, &index.to_ne_bytes());
            inner.extend(attr(NBD_DEVICE_CONNECTED, &[connected]));
            attr(NBD_DEVICE_ITEM, &inner)
        };
        let mut list = item(0, 1);
        list.extend(item(1, 0));
        let mut body = vec![NBD_CMD_STATUS, 1, 0, 0];
        body.extend(attr(NBD_ATTR_DEVICE_LIST, &list));
        assert_eq!(
            decode_status_reply(&body).expect("status"),
            vec![DeviceStatus { index: 0, connected: true }, DeviceStatus { index: 1, connected: false }]
        );
        assert_eq!(decode_status_reply(&[NBD_CMD_STATUS, 1, 0, 0]).expect("empty"), vec![]);
    }

    #[test]
    fn several_messages_in_one_datagram_are_split() {
        let mut dgram = nlmsg(0x1f, 0, 5, &[1, 1, 0, 0, 9]);
        dgram.extend(nlmsg(NLMSG_ERROR, 0, 5, &[0u8; 20]));
        let msgs = split_messages(&dgram).expect("split");
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].ty, msgs[0].seq, msgs[0].port, msgs[0].payload.len()), (0x1f, 5, 77, 5));
        assert_eq!(msgs[1].ty, NLMSG_ERROR);
    }

    #[test]
    fn truncated_messages_and_attributes_are_malformed() {
        let mut m = nlmsg(1, 0, 0, &[0; 8]);
        m[0] = 200;
        assert_eq!(split_messages(&m).map_err(|e| e.code()), Err("TDM-ATT-003"));
        assert!(split_messages(&[0; 5]).is_err());
        assert!(parse_attrs(&[9, 0, 1, 0, 0]).is_err(), "attribute longer than the buffer");
        assert!(parse_attrs(&[2, 0, 1, 0]).is_err(), "attribute shorter than its header");
        assert!(parse_attrs(&[1, 2]).is_err(), "trailing bytes");
        assert!(Attr { ty: 1, nested: false, payload: &[1, 2] }.u32().is_err());
    }

    #[test]
    fn error_zero_is_an_ack() {
        let mut p = 0i32.to_ne_bytes().to_vec();
        p.extend(nlmsg(0x1f, 5, 1, &[])[..16].iter());
        assert_eq!(decode_error(0, &p).expect("ack"), ErrorMsg { errno: 0, message: None });
    }

    #[test]
    fn error_carries_the_positive_errno_and_the_extended_ack_message() {
        let orig = nlmsg(0x1f, 5, 1, &[1, 1, 0, 0, 8, 0, 1, 0, 0, 0, 0, 0]);
        let mut p = (-16i32).to_ne_bytes().to_vec();
        p.extend_from_slice(&orig);
        assert_eq!(decode_error(0, &p).expect("error"), ErrorMsg { errno: 16, message: None });
        p.extend(attr(NLMSGERR_ATTR_MSG, b"nbd0 already in use\0"));
        assert_eq!(
            decode_error(NLM_F_ACK_TLVS, &p).expect("error"),
            ErrorMsg { errno: 16, message: Some("nbd0 already in use".into()) }
        );
        let mut capped = (-2i32).to_ne_bytes().to_vec();
        capped.extend_from_slice(&orig[..16]);
        capped.extend(attr(NLMSGERR_ATTR_MSG, b"no such family\0"));
        assert_eq!(
            decode_error(NLM_F_ACK_TLVS | NLM_F_CAPPED, &capped).expect("capped"),
            ErrorMsg { errno: 2, message: Some("no such family".into()) }
        );
        assert!(decode_error(0, &[0; 8]).is_err(), "shorter than errno + header");
    }
}
