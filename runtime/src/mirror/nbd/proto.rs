//! The NBD wire format: constants, the handshake's option decoder, the transmission request decoder and the reply
//! encoders. Pure code, no I/O: the server in `server.rs` reads exact byte counts and hands them here, and the
//! fuzzer (`runtime/fuzz/fuzz_targets/nbd_request.rs`) compiles this file on its own.
//!
//! Numbers follow the NBD protocol (`doc/proto.md` of NetworkBlockDevice/nbd), fixed newstyle negotiation, simple
//! replies only. All integers are big-endian.
//!
//! Every rejected input maps to one [`NbdError`] with a stable code `TDM-NBD-0NN`. [`NbdError::is_fatal`] says
//! whether the server can still find the next message (reply with an error and continue) or has lost the framing
//! (log the code and close the connection).

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, sent by the server after [`NBD_MAGIC`] and before every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Server handshake flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags (the 32-bit word after the greeting).
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Options (handshake phase).
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information types of `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Error values of a reply (the protocol's fixed subset of errno).
pub const NBD_OK: u32 = 0;
pub const NBD_EPERM: u32 = 1;
pub const NBD_EIO: u32 = 5;
pub const NBD_ENOMEM: u32 = 12;
pub const NBD_EINVAL: u32 = 22;
pub const NBD_ENOSPC: u32 = 28;
pub const NBD_EOVERFLOW: u32 = 75;
pub const NBD_ENOTSUP: u32 = 95;
pub const NBD_ESHUTDOWN: u32 = 108;

/// Length of the server greeting: `NBDMAGIC`, `IHAVEOPT`, 16-bit handshake flags.
pub const GREETING_LEN: usize = 18;
/// Length of an option header: `IHAVEOPT`, option, data length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of a transmission request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Longest option data we accept. Export names are at most 4096 bytes; INFO/GO add 6 bytes and the list of
/// information requests.
pub const MAX_OPTION_DATA: u32 = 16 * 1024;
/// Longest export name (the protocol's limit).
pub const MAX_NAME: usize = 4096;
/// Largest READ or WRITE payload, advertised as the maximum payload size (the protocol's default, 32 MiB).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
/// Advertised minimum block size: any byte offset works.
pub const MIN_BLOCK: u32 = 1;
/// Advertised preferred block size.
pub const PREFERRED_BLOCK: u32 = 4096;

/// Why an NBD message was rejected. Codes (`TDM-NBD-NNN`) are stable: never renumber, only append.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NbdError {
    #[error("TDM-NBD-001: NBD request has bad magic {0:#010x} (expected 0x25609513); the connection is closed")]
    BadRequestMagic(u32),
    #[error("TDM-NBD-002: NBD request has unknown command {0}")]
    UnknownCommand(u16),
    #[error("TDM-NBD-003: NBD {cmd} request has unsupported flags {flags:#06x}")]
    BadFlags { cmd: &'static str, flags: u16 },
    #[error("TDM-NBD-004: NBD {cmd} request of {len} bytes exceeds the maximum payload of {MAX_PAYLOAD} bytes")]
    TooLarge { cmd: &'static str, len: u32 },
    #[error("TDM-NBD-005: NBD {cmd} request at offset {offset} length {len} is beyond the export size {size}")]
    OutOfRange { cmd: &'static str, offset: u64, len: u32, size: u64 },
    #[error("TDM-NBD-006: NBD {cmd} request on a read-only export")]
    ReadOnly { cmd: &'static str },
    #[error("TDM-NBD-007: NBD message truncated ({got} bytes, need {need})")]
    Truncated { got: usize, need: usize },
    #[error("TDM-NBD-008: NBD option has bad magic {0:#018x} (expected IHAVEOPT); the connection is closed")]
    BadOptionMagic(u64),
    #[error("TDM-NBD-009: NBD option {opt} carries {len} bytes of data, at most {MAX_OPTION_DATA} accepted")]
    OptionTooLarge { opt: u32, len: u32 },
    #[error("TDM-NBD-010: NBD client flags {0:#010x} unsupported (fixed newstyle is required)")]
    ClientFlags(u32),
    #[error("TDM-NBD-011: NBD option {opt} is malformed: {reason}")]
    MalformedOption { opt: u32, reason: &'static str },
    #[error("TDM-NBD-012: NBD client asked for export {name:?}, which this server does not serve")]
    UnknownExport { name: String },
}

impl NbdError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            NbdError::BadRequestMagic(_) => "TDM-NBD-001",
            NbdError::UnknownCommand(_) => "TDM-NBD-002",
            NbdError::BadFlags { .. } => "TDM-NBD-003",
            NbdError::TooLarge { .. } => "TDM-NBD-004",
            NbdError::OutOfRange { .. } => "TDM-NBD-005",
            NbdError::ReadOnly { .. } => "TDM-NBD-006",
            NbdError::Truncated { .. } => "TDM-NBD-007",
            NbdError::BadOptionMagic(_) => "TDM-NBD-008",
            NbdError::OptionTooLarge { .. } => "TDM-NBD-009",
            NbdError::ClientFlags(_) => "TDM-NBD-010",
            NbdError::MalformedOption { .. } => "TDM-NBD-011",
            NbdError::UnknownExport { .. } => "TDM-NBD-012",
        }
    }

    /// The error value of the reply to a rejected request (transmission phase).
    pub fn errno(&self) -> u32 {
        match self {
            NbdError::ReadOnly { .. } => NBD_EPERM,
            NbdError::OutOfRange { cmd, .. } if *cmd == "WRITE" || *cmd == "WRITE_ZEROES" => NBD_ENOSPC,
            _ => NBD_EINVAL,
        }
    }

    /// True when the server can no longer find the next message and must close the connection: a bad magic, a
    /// WRITE whose payload is too large to read, an option whose data is too large, bad client flags.
    pub fn is_fatal(&self) -> bool {
        match self {
            NbdError::BadRequestMagic(_)
            | NbdError::Truncated { .. }
            | NbdError::BadOptionMagic(_)
            | NbdError::OptionTooLarge { .. }
            | NbdError::ClientFlags(_) => true,
            NbdError::TooLarge { cmd, .. } => *cmd == "WRITE",
            _ => false,
        }
    }
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn need(b: &[u8], n: usize) -> Result<(), NbdError> {
    if b.len() < n { Err(NbdError::Truncated { got: b.len(), need: n }) } else { Ok(()) }
}

// ---------------------------------------------------------------------------------------------------------------
// Handshake phase
// ---------------------------------------------------------------------------------------------------------------

/// The server's first message: `NBDMAGIC`, `IHAVEOPT`, handshake flags (fixed newstyle, no zeroes).
pub fn encode_greeting() -> [u8; GREETING_LEN] {
    let mut out = [0u8; GREETING_LEN];
    out[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    out
}

/// The client's flags, answered to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client asked us to leave out the 124 zero bytes after the `NBD_OPT_EXPORT_NAME` reply.
    pub no_zeroes: bool,
}

/// Decode the client flags. Fixed newstyle is required; unknown bits are refused (the protocol says to close).
pub fn decode_client_flags(buf: &[u8]) -> Result<ClientFlags, NbdError> {
    need(buf, 4)?;
    let flags = be_u32(buf, 0);
    if flags & FLAG_C_FIXED_NEWSTYLE == 0 || flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(NbdError::ClientFlags(flags));
    }
    Ok(ClientFlags { no_zeroes: flags & FLAG_C_NO_ZEROES != 0 })
}

/// The fixed part of a client option: which option and how many data bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub opt: u32,
    pub len: u32,
}

/// Decode an option header. A bad magic or a data length over [`MAX_OPTION_DATA`] is fatal.
pub fn decode_option_header(buf: &[u8]) -> Result<OptionHeader, NbdError> {
    need(buf, OPTION_HEADER_LEN)?;
    let magic = be_u64(buf, 0);
    if magic != IHAVEOPT {
        return Err(NbdError::BadOptionMagic(magic));
    }
    let opt = be_u32(buf, 8);
    let len = be_u32(buf, 12);
    if len > MAX_OPTION_DATA {
        return Err(NbdError::OptionTooLarge { opt, len });
    }
    Ok(OptionHeader { opt, len })
}

/// A decoded client option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME`: enter transmission on this export (no error reply possible).
    ExportName(String),
    /// `NBD_OPT_ABORT`.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_INFO` (`go == false`) or `NBD_OPT_GO` (`go == true`).
    Info { go: bool, name: String, requests: Vec<u16> },
    /// Anything else (STARTTLS, STRUCTURED_REPLY, metadata contexts, extended headers…): answered with
    /// `NBD_REP_ERR_UNSUP`.
    Unsupported(u32),
}

fn decode_name(opt: u32, bytes: &[u8]) -> Result<String, NbdError> {
    if bytes.len() > MAX_NAME {
        return Err(NbdError::MalformedOption { opt, reason: "export name longer than 4096 bytes" });
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| NbdError::MalformedOption { opt, reason: "export name is not UTF-8" })
}

/// Decode an option's data. Errors are not fatal: the server answers `NBD_REP_ERR_INVALID` and reads the next
/// option (the header told it where that starts).
pub fn decode_option(opt: u32, data: &[u8]) -> Result<ClientOption, NbdError> {
    match opt {
        OPT_EXPORT_NAME => Ok(ClientOption::ExportName(decode_name(opt, data)?)),
        OPT_ABORT => Ok(ClientOption::Abort),
        OPT_LIST if data.is_empty() => Ok(ClientOption::List),
        OPT_LIST => Err(NbdError::MalformedOption { opt, reason: "NBD_OPT_LIST carries data" }),
        OPT_INFO | OPT_GO => {
            if data.len() < 6 {
                return Err(NbdError::MalformedOption { opt, reason: "shorter than 6 bytes" });
            }
            let name_len = be_u32(data, 0) as usize;
            if name_len > data.len() - 6 {
                return Err(NbdError::MalformedOption { opt, reason: "name length exceeds the option data" });
            }
            let name = decode_name(opt, &data[4..4 + name_len])?;
            let rest = &data[4 + name_len..];
            let count = be_u16(rest, 0) as usize;
            let list = &rest[2..];
            if list.len() != count * 2 {
                return Err(NbdError::MalformedOption { opt, reason: "information request count does not match" });
            }
            let requests = list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            Ok(ClientOption::Info { go: opt == OPT_GO, name, requests })
        }
        other => Ok(ClientOption::Unsupported(other)),
    }
}

/// An option reply: magic, option, reply type, data.
pub fn encode_option_reply(opt: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// `NBD_REP_INFO` data for `NBD_INFO_EXPORT`: size and transmission flags.
pub fn encode_info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out
}

/// `NBD_REP_INFO` data for `NBD_INFO_BLOCK_SIZE`: [`MIN_BLOCK`], [`PREFERRED_BLOCK`], [`MAX_PAYLOAD`].
pub fn encode_info_block_size() -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&MIN_BLOCK.to_be_bytes());
    out.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
    out.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    out
}

/// `NBD_REP_INFO` data for `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`.
pub fn encode_info_text(info: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&info.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// `NBD_REP_SERVER` data: one export name for `NBD_OPT_LIST`.
pub fn encode_server_entry(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// The answer to `NBD_OPT_EXPORT_NAME`: size, transmission flags, and 124 zero bytes unless the client set
/// `NBD_FLAG_C_NO_ZEROES`.
pub fn encode_export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(134);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Transmission phase
// ---------------------------------------------------------------------------------------------------------------

/// A request header as it came off the wire; only the magic is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

impl RequestHeader {
    /// Decode the 28-byte header. A bad magic is fatal: the stream has lost its framing.
    pub fn decode(buf: &[u8]) -> Result<Self, NbdError> {
        need(buf, REQUEST_HEADER_LEN)?;
        let magic = be_u32(buf, 0);
        if magic != REQUEST_MAGIC {
            return Err(NbdError::BadRequestMagic(magic));
        }
        Ok(RequestHeader {
            flags: be_u16(buf, 4),
            kind: be_u16(buf, 6),
            cookie: be_u64(buf, 8),
            offset: be_u64(buf, 16),
            length: be_u32(buf, 24),
        })
    }

    /// The wire form (what a client sends).
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut out = [0u8; REQUEST_HEADER_LEN];
        out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.kind.to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// How many payload bytes follow this header on the wire (only WRITE carries a payload). The server must read
    /// them even when it rejects the request, or report the error as fatal when they are too many to read.
    pub fn payload_len(&self) -> Result<u32, NbdError> {
        if self.kind != CMD_WRITE {
            return Ok(0);
        }
        if self.length > MAX_PAYLOAD {
            return Err(NbdError::TooLarge { cmd: "WRITE", len: self.length });
        }
        Ok(self.length)
    }
}

/// A validated command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    WriteZeroes,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Read => "READ",
            Command::Write => "WRITE",
            Command::Disc => "DISC",
            Command::Flush => "FLUSH",
            Command::Trim => "TRIM",
            Command::WriteZeroes => "WRITE_ZEROES",
        }
    }

    /// Whether the command changes the export (so it counts for FLUSH ordering and is refused when read-only).
    pub fn is_write(self) -> bool {
        matches!(self, Command::Write | Command::Trim | Command::WriteZeroes)
    }
}

/// A validated request: the command fits the export and the advertised limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub cmd: Command,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
    /// `NBD_CMD_FLAG_FUA`: persist before replying.
    pub fua: bool,
    /// `NBD_CMD_FLAG_NO_HOLE` (WRITE_ZEROES only): the range must be allocated afterwards.
    pub no_hole: bool,
}

/// What the export allows; the validator checks requests against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub size: u64,
    pub read_only: bool,
}

/// Validate a request header against the export. The error says how to answer ([`NbdError::errno`]) and whether
/// the connection must close ([`NbdError::is_fatal`]).
pub fn validate_request(h: &RequestHeader, limits: Limits) -> Result<Request, NbdError> {
    let cmd = match h.kind {
        CMD_READ => Command::Read,
        CMD_WRITE => Command::Write,
        CMD_DISC => Command::Disc,
        CMD_FLUSH => Command::Flush,
        CMD_TRIM => Command::Trim,
        CMD_WRITE_ZEROES => Command::WriteZeroes,
        other => return Err(NbdError::UnknownCommand(other)),
    };
    let name = cmd.name();
    let allowed = match cmd {
        Command::WriteZeroes => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        _ => CMD_FLAG_FUA,
    };
    if h.flags & !allowed != 0 {
        return Err(NbdError::BadFlags { cmd: name, flags: h.flags });
    }
    if matches!(cmd, Command::Read | Command::Write) && h.length > MAX_PAYLOAD {
        return Err(NbdError::TooLarge { cmd: name, len: h.length });
    }
    if matches!(cmd, Command::Read | Command::Write | Command::Trim | Command::WriteZeroes) {
        let end = h.offset.checked_add(u64::from(h.length));
        if end.is_none_or(|end| end > limits.size) {
            return Err(NbdError::OutOfRange { cmd: name, offset: h.offset, len: h.length, size: limits.size });
        }
    }
    if limits.read_only && cmd.is_write() {
        return Err(NbdError::ReadOnly { cmd: name });
    }
    Ok(Request {
        cmd,
        cookie: h.cookie,
        offset: h.offset,
        length: h.length,
        fua: h.flags & CMD_FLAG_FUA != 0,
        no_hole: h.flags & CMD_FLAG_NO_HOLE != 0,
    })
}

/// A simple reply header: magic, error, cookie. A successful READ is followed by its data.
pub fn encode_simple_reply(cookie: u64, error: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut out = [0u8; SIMPLE_REPLY_LEN];
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { size: 1 << 20, read_only: false };

    fn header(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader { flags, kind, cookie: 0xdead_beef, offset, length }
    }

    fn option_bytes(opt: u32, len: u32) -> Vec<u8> {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b
    }

    fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    #[test]
    fn greeting_carries_both_magics_and_fixed_newstyle() {
        let g = encode_greeting();
        assert_eq!(&g[0..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    }

    #[test]
    fn client_flags_require_fixed_newstyle_and_refuse_unknown_bits() {
        assert_eq!(decode_client_flags(&3u32.to_be_bytes()), Ok(ClientFlags { no_zeroes: true }));
        assert_eq!(decode_client_flags(&1u32.to_be_bytes()), Ok(ClientFlags { no_zeroes: false }));
        assert_eq!(decode_client_flags(&2u32.to_be_bytes()), Err(NbdError::ClientFlags(2)));
        assert_eq!(decode_client_flags(&5u32.to_be_bytes()), Err(NbdError::ClientFlags(5)));
        assert_eq!(decode_client_flags(&[0, 0]), Err(NbdError::Truncated { got: 2, need: 4 }));
        assert!(NbdError::ClientFlags(2).is_fatal());
    }

    #[test]
    fn option_header_checks_magic_and_length() {
        assert_eq!(decode_option_header(&option_bytes(OPT_GO, 10)), Ok(OptionHeader { opt: OPT_GO, len: 10 }));
        let mut bad = option_bytes(OPT_GO, 10);
        bad[0] ^= 1;
        let e = decode_option_header(&bad).expect_err("bad magic");
        assert_eq!(e.code(), "TDM-NBD-008");
        assert!(e.is_fatal());
        let e = decode_option_header(&option_bytes(OPT_GO, MAX_OPTION_DATA + 1)).expect_err("too large");
        assert_eq!(e, NbdError::OptionTooLarge { opt: OPT_GO, len: MAX_OPTION_DATA + 1 });
        assert!(e.is_fatal());
        assert_eq!(decode_option_header(&[0; 15]), Err(NbdError::Truncated { got: 15, need: 16 }));
    }

    #[test]
    fn export_name_abort_list_and_unknown_options_decode() {
        assert_eq!(decode_option(OPT_EXPORT_NAME, b"disk"), Ok(ClientOption::ExportName("disk".into())));
        assert_eq!(decode_option(OPT_ABORT, b""), Ok(ClientOption::Abort));
        assert_eq!(decode_option(OPT_LIST, b""), Ok(ClientOption::List));
        assert_eq!(decode_option(OPT_STRUCTURED_REPLY, b""), Ok(ClientOption::Unsupported(OPT_STRUCTURED_REPLY)));
        assert_eq!(decode_option(OPT_STARTTLS, b""), Ok(ClientOption::Unsupported(OPT_STARTTLS)));
        assert_eq!(decode_option(99, b"xyz"), Ok(ClientOption::Unsupported(99)));
    }

    #[test]
    fn list_with_data_and_bad_names_are_malformed_but_not_fatal() {
        let e = decode_option(OPT_LIST, b"x").expect_err("list with data");
        assert_eq!(e.code(), "TDM-NBD-011");
        assert!(!e.is_fatal());
        assert_eq!(decode_option(OPT_EXPORT_NAME, &[0xff, 0xfe]).map_err(|e| e.code()), Err("TDM-NBD-011"));
        assert!(decode_option(OPT_EXPORT_NAME, &vec![b'a'; MAX_NAME + 1]).is_err());
        assert!(decode_option(OPT_EXPORT_NAME, &vec![b'a'; MAX_NAME]).is_ok());
    }

    #[test]
    fn info_and_go_decode_name_and_requests() {
        let d = info_data("disk", &[INFO_BLOCK_SIZE, INFO_NAME]);
        assert_eq!(
            decode_option(OPT_GO, &d),
            Ok(ClientOption::Info { go: true, name: "disk".into(), requests: vec![INFO_BLOCK_SIZE, INFO_NAME] })
        );
        assert_eq!(
            decode_option(OPT_INFO, &info_data("", &[])),
            Ok(ClientOption::Info { go: false, name: String::new(), requests: vec![] })
        );
    }

    #[test]
    fn info_with_inconsistent_lengths_is_malformed() {
        assert!(decode_option(OPT_GO, &[0, 0, 0, 0, 0]).is_err(), "shorter than 6 bytes");
        let mut long_name = info_data("disk", &[]);
        long_name[3] = 5;
        assert!(decode_option(OPT_GO, &long_name).is_err(), "name length beyond data");
        let mut count = info_data("disk", &[INFO_EXPORT]);
        count.pop();
        assert!(decode_option(OPT_GO, &count).is_err(), "odd request list");
        let mut extra = info_data("disk", &[INFO_EXPORT]);
        extra.extend_from_slice(&[0, 1]);
        assert!(decode_option(OPT_INFO, &extra).is_err(), "count too small");
        let mut huge = (u32::MAX).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0, 0]);
        assert!(decode_option(OPT_GO, &huge).is_err(), "name length near u32::MAX");
    }

    #[test]
    fn option_replies_encode_magic_option_type_and_length() {
        let r = encode_option_reply(OPT_GO, REP_ERR_UNKNOWN, b"no");
        assert_eq!(&r[0..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&r[8..12], &OPT_GO.to_be_bytes());
        assert_eq!(&r[12..16], &REP_ERR_UNKNOWN.to_be_bytes());
        assert_eq!(&r[16..20], &2u32.to_be_bytes());
        assert_eq!(&r[20..], b"no");
        assert_eq!(encode_info_export(4096, 0x1ff).len(), 12);
        let bs = encode_info_block_size();
        assert_eq!(bs.len(), 14);
        assert_eq!(&bs[10..14], &MAX_PAYLOAD.to_be_bytes());
        assert_eq!(encode_info_text(INFO_NAME, "d"), vec![0, 1, b'd']);
        assert_eq!(encode_server_entry("d"), vec![0, 0, 0, 1, b'd']);
        assert_eq!(encode_export_name_reply(1, 1, false).len(), 134);
        assert_eq!(encode_export_name_reply(1, 1, true).len(), 10);
    }

    #[test]
    fn request_header_round_trips() {
        let h = header(CMD_WRITE, CMD_FLAG_FUA, 512, 4096);
        assert_eq!(RequestHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn request_with_bad_magic_is_fatal() {
        let mut b = header(CMD_READ, 0, 0, 1).encode();
        b[0] = 0;
        let e = RequestHeader::decode(&b).expect_err("bad magic");
        assert_eq!(e.code(), "TDM-NBD-001");
        assert!(e.is_fatal());
        let e = RequestHeader::decode(&b[..27]).expect_err("short");
        assert_eq!(e.code(), "TDM-NBD-007");
    }

    #[test]
    fn every_known_command_validates() {
        for (kind, cmd) in [
            (CMD_READ, Command::Read),
            (CMD_WRITE, Command::Write),
            (CMD_DISC, Command::Disc),
            (CMD_FLUSH, Command::Flush),
            (CMD_TRIM, Command::Trim),
            (CMD_WRITE_ZEROES, Command::WriteZeroes),
        ] {
            let r = validate_request(&header(kind, CMD_FLAG_FUA, 0, 512), LIMITS).expect("valid");
            assert_eq!(r.cmd, cmd);
            assert!(r.fua);
            assert_eq!(r.cookie, 0xdead_beef);
        }
        let z = validate_request(&header(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 512), LIMITS).expect("no hole");
        assert!(z.no_hole && !z.fua);
    }

    #[test]
    fn unknown_command_gets_einval_and_the_connection_continues() {
        let e = validate_request(&header(5, 0, 0, 0), LIMITS).expect_err("CACHE is not supported");
        assert_eq!(e, NbdError::UnknownCommand(5));
        assert_eq!((e.errno(), e.is_fatal()), (NBD_EINVAL, false));
        assert!(validate_request(&header(0xffff, 0, 0, 0), LIMITS).is_err());
    }

    #[test]
    fn unsupported_flags_get_einval() {
        let e = validate_request(&header(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 1), LIMITS).expect_err("no hole on write");
        assert_eq!((e.code(), e.errno(), e.is_fatal()), ("TDM-NBD-003", NBD_EINVAL, false));
        assert!(validate_request(&header(CMD_READ, 1 << 3, 0, 1), LIMITS).is_err());
    }

    #[test]
    fn oversized_write_is_fatal_and_oversized_read_is_not() {
        let w = header(CMD_WRITE, 0, 0, MAX_PAYLOAD + 1);
        let e = w.payload_len().expect_err("too large");
        assert!(e.is_fatal());
        assert_eq!(e.code(), "TDM-NBD-004");
        let limits = Limits { size: u64::MAX, read_only: false };
        let e = validate_request(&header(CMD_READ, 0, 0, MAX_PAYLOAD + 1), limits).expect_err("too large");
        assert_eq!((e.code(), e.errno(), e.is_fatal()), ("TDM-NBD-004", NBD_EINVAL, false));
        assert_eq!(header(CMD_WRITE, 0, 0, MAX_PAYLOAD).payload_len(), Ok(MAX_PAYLOAD));
        assert_eq!(header(CMD_READ, 0, 0, MAX_PAYLOAD + 1).payload_len(), Ok(0));
        let big_zero = header(CMD_WRITE_ZEROES, 0, 0, u32::MAX);
        assert!(validate_request(&big_zero, limits).is_ok(), "no payload: WRITE_ZEROES may exceed it");
    }

    #[test]
    fn requests_beyond_the_end_are_refused() {
        let size = LIMITS.size;
        assert!(validate_request(&header(CMD_READ, 0, size - 512, 512), LIMITS).is_ok());
        let e = validate_request(&header(CMD_READ, 0, size - 511, 512), LIMITS).expect_err("past end");
        assert_eq!((e.code(), e.errno()), ("TDM-NBD-005", NBD_EINVAL));
        let e = validate_request(&header(CMD_WRITE, 0, size, 1), LIMITS).expect_err("past end");
        assert_eq!(e.errno(), NBD_ENOSPC);
        let e = validate_request(&header(CMD_TRIM, 0, u64::MAX, 2), LIMITS).expect_err("overflow");
        assert_eq!(e.code(), "TDM-NBD-005");
        assert!(validate_request(&header(CMD_FLUSH, 0, u64::MAX, 2), LIMITS).is_ok(), "flush ignores the range");
    }

    #[test]
    fn writes_on_read_only_exports_get_eperm() {
        let ro = Limits { size: 4096, read_only: true };
        for kind in [CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
            let e = validate_request(&header(kind, 0, 0, 1), ro).expect_err("read-only");
            assert_eq!((e.code(), e.errno(), e.is_fatal()), ("TDM-NBD-006", NBD_EPERM, false));
        }
        assert!(validate_request(&header(CMD_READ, 0, 0, 1), ro).is_ok());
        assert!(validate_request(&header(CMD_FLUSH, 0, 0, 0), ro).is_ok());
    }

    #[test]
    fn simple_reply_encodes_magic_error_cookie() {
        let r = encode_simple_reply(7, NBD_EIO);
        assert_eq!(&r[0..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&r[4..8], &5u32.to_be_bytes());
        assert_eq!(&r[8..16], &7u64.to_be_bytes());
    }

    #[test]
    fn codes_are_distinct_and_in_order() {
        let all = [
            NbdError::BadRequestMagic(0),
            NbdError::UnknownCommand(0),
            NbdError::BadFlags { cmd: "READ", flags: 0 },
            NbdError::TooLarge { cmd: "READ", len: 0 },
            NbdError::OutOfRange { cmd: "READ", offset: 0, len: 0, size: 0 },
            NbdError::ReadOnly { cmd: "WRITE" },
            NbdError::Truncated { got: 0, need: 0 },
            NbdError::BadOptionMagic(0),
            NbdError::OptionTooLarge { opt: 0, len: 0 },
            NbdError::ClientFlags(0),
            NbdError::MalformedOption { opt: 0, reason: "" },
            NbdError::UnknownExport { name: String::new() },
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.code(), format!("TDM-NBD-{:03}", i + 1));
            assert!(e.to_string().starts_with(e.code()));
        }
    }
}
