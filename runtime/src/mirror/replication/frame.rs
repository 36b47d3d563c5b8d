//! The peer wire format of mirror replication: one fixed header and a typed payload per frame. Pure code, no I/O:
//! the link tasks read exact byte counts and hand them here, and the fuzzer
//! (`runtime/fuzz/fuzz_targets/peer_frame.rs`) compiles this file on its own (it needs only `thiserror`).
//!
//! Header, 20 bytes, big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `TDMR` (0x54444d52) |
//! | 4 | version, [`VERSION`] |
//! | 5 | type |
//! | 6..8 | reserved, 0 |
//! | 8..12 | payload length |
//! | 12..20 | seq: the data sequence number of WRITE/WRITE_ZEROES/TRIM/FLUSH (1, 2, 3… on one link), the seq being
//! acknowledged in ACK, an echo token in PING/PONG, 0 in HELLO |
//!
//! Payloads: HELLO `size u64, uuid u64, generation u64, flags u32 (bit 0 [`HELLO_META`]), node name (≤ 255 bytes
//! UTF-8)`; WRITE `offset u64, flags u32 (bit 0 FUA), data (≤ 32 MiB)`; WRITE_ZEROES `offset u64, len u64, flags
//! u32`; TRIM `offset u64, len u64`; FLUSH, PING, PONG empty; ACK `errno u32, code length u8, code (ASCII, ≤ 32 bytes)`, errno
//! 0 = success with an empty code; META (piece 3, sent right after HELLO by a node whose HELLO has
//! [`HELLO_META`] set, and only when the peer's HELLO has it too) `current u64, bitmap generation u64, history 4 ×
//! u64, disk state u8 (1 Inconsistent, 2 Outdated, 3 UpToDate), role u8 (1 Secondary, 2 Primary), reserved u16 = 0`,
//! seq 0; SYNC_DONE (a data frame, numbered like WRITE: the resync completed) empty. A build without metadata
//! sends flags 0 and never a META, so the extension is compatible with version 1 peers that do not use it.
//!
//! Online verify and out-of-sync exchange (HELLO flag bit 1, [`HELLO_V2`]; a node sends these only to a peer whose
//! HELLO has it): VERIFY_REQ (a data frame, numbered like WRITE, so the secondary answers it after every earlier
//! overlapping write and before every later one) `offset u64, len u64` (1..=[`MAX_VERIFY`] bytes); VERIFY_REP `errno
//! u32, SHA-256 digest [32]` with the request's seq (errno 0 = the digest of the secondary's bytes; otherwise its read
//! failed and the digest is zero); OUT_OF_SYNC `flags u32 (bit 0 [`OOS_LAST`]), count u32, count × (offset u64, len
//! u64)` (at most [`MAX_OOS_RANGES`], each non-empty), seq 0: sent by the secondary right after META (metadata on both
//! sides), the ranges its own bitmap holds (e.g. its activity log after a crash as primary); the last frame has
//! [`OOS_LAST`].
//!
//! Every rejected input maps to one [`FrameError`] with a stable code `TDM-MIR-02N`. Every frame error is fatal to
//! the link: the receiver closes the connection without applying the frame.

/// `TDMR`, the first 4 bytes of every frame.
pub const MAGIC: u32 = 0x5444_4d52;
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Length of a frame header.
pub const HEADER_LEN: usize = 20;
/// Largest WRITE data (the NBD export's maximum payload).
pub const MAX_DATA: u32 = 32 * 1024 * 1024;
/// Longest node name in HELLO.
pub const MAX_NODE_NAME: usize = 255;
/// Longest error code in ACK.
pub const MAX_CODE: usize = 32;

pub const T_HELLO: u8 = 1;
pub const T_WRITE: u8 = 2;
pub const T_WRITE_ZEROES: u8 = 3;
pub const T_TRIM: u8 = 4;
pub const T_FLUSH: u8 = 5;
pub const T_ACK: u8 = 6;
pub const T_PING: u8 = 7;
pub const T_PONG: u8 = 8;
pub const T_META: u8 = 9;
pub const T_SYNC_DONE: u8 = 10;
pub const T_VERIFY_REQ: u8 = 11;
pub const T_VERIFY_REP: u8 = 12;
pub const T_OUT_OF_SYNC: u8 = 13;

/// Largest range one VERIFY_REQ asks about (the largest bitmap granularity).
pub const MAX_VERIFY: u64 = 64 * 1024 * 1024;
/// Most ranges in one OUT_OF_SYNC frame.
pub const MAX_OOS_RANGES: u32 = 4096;
/// OUT_OF_SYNC flag: the last frame of the list.
pub const OOS_LAST: u32 = 1;
/// Length of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

/// HELLO flag: this node has mirror metadata and sends META after HELLO.
pub const HELLO_META: u32 = 1;
/// HELLO flag: this node understands VERIFY_REQ / VERIFY_REP and the OUT_OF_SYNC list after META.
pub const HELLO_V2: u32 = 2;

/// WRITE / WRITE_ZEROES flag: durable on the peer before its ACK.
pub const FLAG_FUA: u32 = 1;

const HELLO_FIXED: u32 = 28;
/// The fixed part of a WRITE payload (offset u64, flags u32) before its data.
pub const WRITE_FIXED: u32 = 12;
const RANGE_FIXED: u32 = 20;
const TRIM_LEN: u32 = 16;
const ACK_FIXED: u32 = 5;
const META_LEN: u32 = 52;
const VERIFY_REQ_LEN: u32 = 16;
const VERIFY_REP_LEN: u32 = 4 + DIGEST_LEN as u32;
const OOS_FIXED: u32 = 8;

/// Why a peer frame was rejected. Codes (`TDM-MIR-NNN`) are stable: never renumber, only append.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("TDM-MIR-020: mirror peer frame has bad magic {0:#010x} (expected 0x54444d52); the link is closed")]
    BadMagic(u32),
    #[error("TDM-MIR-021: mirror peer speaks protocol version {0}, this node speaks {VERSION}")]
    BadVersion(u8),
    #[error("TDM-MIR-022: mirror peer frame has unknown type {0}")]
    UnknownType(u8),
    #[error("TDM-MIR-023: mirror peer {kind} frame has an invalid payload length {len}")]
    BadLength { kind: &'static str, len: u32 },
    #[error("TDM-MIR-024: mirror peer WRITE of {0} bytes exceeds the maximum of {MAX_DATA} bytes")]
    TooLarge(u32),
    #[error("TDM-MIR-025: mirror peer frame truncated: {got} of {need} bytes")]
    Truncated { need: usize, got: usize },
    #[error("TDM-MIR-026: mirror peer {kind} frame at offset {offset} length {len} overflows")]
    Overflow { kind: &'static str, offset: u64, len: u64 },
    #[error("TDM-MIR-027: mirror peer {kind} frame at offset {offset} length {len} is beyond the store size {size}")]
    OutOfRange { kind: &'static str, offset: u64, len: u64, size: u64 },
    #[error("TDM-MIR-028: mirror peer {kind} frame has an invalid field: {detail}")]
    BadField { kind: &'static str, detail: String },
    #[error("TDM-MIR-029: mirror peer VERIFY_REQ of {0} bytes exceeds the maximum of {MAX_VERIFY} bytes")]
    VerifyTooLarge(u64),
}

impl FrameError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::BadMagic(_) => "TDM-MIR-020",
            FrameError::BadVersion(_) => "TDM-MIR-021",
            FrameError::UnknownType(_) => "TDM-MIR-022",
            FrameError::BadLength { .. } => "TDM-MIR-023",
            FrameError::TooLarge(_) => "TDM-MIR-024",
            FrameError::Truncated { .. } => "TDM-MIR-025",
            FrameError::Overflow { .. } => "TDM-MIR-026",
            FrameError::OutOfRange { .. } => "TDM-MIR-027",
            FrameError::BadField { .. } => "TDM-MIR-028",
            FrameError::VerifyTooLarge(_) => "TDM-MIR-029",
        }
    }
}

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub len: u32,
    pub seq: u64,
}

/// What one node tells the other when the link opens. With metadata, `generation` is the node's current generation,
/// `uuid` its bitmap generation and `flags` has [`HELLO_META`] (a META frame follows); without, all three are 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node: String,
    pub size: u64,
    pub uuid: u64,
    pub generation: u64,
    pub flags: u32,
}

/// The outcome carried by an ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckStatus {
    Ok,
    /// The peer's store failed: an errno-like value (NBD's subset) and the peer's error code.
    Failed {
        errno: u32,
        code: String,
    },
}

/// One peer frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Write {
        seq: u64,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    WriteZeroes {
        seq: u64,
        offset: u64,
        len: u64,
        fua: bool,
    },
    Trim {
        seq: u64,
        offset: u64,
        len: u64,
    },
    Flush {
        seq: u64,
    },
    Ack {
        seq: u64,
        status: AckStatus,
    },
    Ping {
        token: u64,
    },
    Pong {
        token: u64,
    },
    Meta(MetaInfo),
    SyncDone {
        seq: u64,
    },
    VerifyReq {
        seq: u64,
        offset: u64,
        len: u64,
    },
    /// `errno` 0: `digest` is the SHA-256 of the peer's bytes; otherwise the peer's read failed (digest zero).
    VerifyRep {
        seq: u64,
        errno: u32,
        digest: [u8; DIGEST_LEN],
    },
    OutOfSync {
        last: bool,
        ranges: Vec<(u64, u64)>,
    },
}

/// The generation state a node sends in META. `disk` and `role` are the metadata's byte codes (validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaInfo {
    pub current: u64,
    pub bitmap_uuid: u64,
    pub history: [u64; 4],
    pub disk: u8,
    pub role: u8,
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        T_HELLO => "HELLO",
        T_WRITE => "WRITE",
        T_WRITE_ZEROES => "WRITE_ZEROES",
        T_TRIM => "TRIM",
        T_FLUSH => "FLUSH",
        T_ACK => "ACK",
        T_PING => "PING",
        T_PONG => "PONG",
        T_META => "META",
        T_SYNC_DONE => "SYNC_DONE",
        T_VERIFY_REQ => "VERIFY_REQ",
        T_VERIFY_REP => "VERIFY_REP",
        T_OUT_OF_SYNC => "OUT_OF_SYNC",
        _ => "unknown",
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Header {
    /// Decode and validate the first [`HEADER_LEN`] bytes of `buf`: magic, version, reserved bits, a known type and
    /// a payload length that type allows. After `Ok`, reading exactly `len` more bytes keeps the framing.
    pub fn decode(buf: &[u8]) -> Result<Header, FrameError> {
        if buf.len() < HEADER_LEN {
            return Err(FrameError::Truncated { need: HEADER_LEN, got: buf.len() });
        }
        let magic = be_u32(buf, 0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if buf[4] != VERSION {
            return Err(FrameError::BadVersion(buf[4]));
        }
        let kind = buf[5];
        let name = kind_name(kind);
        if name == "unknown" {
            return Err(FrameError::UnknownType(kind));
        }
        if buf[6] != 0 || buf[7] != 0 {
            return Err(FrameError::BadField {
                kind: name,
                detail: format!("reserved bytes {:#04x}{:02x}", buf[6], buf[7]),
            });
        }
        let len = be_u32(buf, 8);
        let ok = match kind {
            T_HELLO => (HELLO_FIXED..=HELLO_FIXED + MAX_NODE_NAME as u32).contains(&len),
            T_WRITE => {
                if len > WRITE_FIXED + MAX_DATA {
                    return Err(FrameError::TooLarge(len.saturating_sub(WRITE_FIXED)));
                }
                len >= WRITE_FIXED
            }
            T_WRITE_ZEROES => len == RANGE_FIXED,
            T_TRIM => len == TRIM_LEN,
            T_ACK => (ACK_FIXED..=ACK_FIXED + MAX_CODE as u32).contains(&len),
            T_META => len == META_LEN,
            T_VERIFY_REQ => len == VERIFY_REQ_LEN,
            T_VERIFY_REP => len == VERIFY_REP_LEN,
            T_OUT_OF_SYNC => {
                len >= OOS_FIXED && (len - OOS_FIXED).is_multiple_of(16) && (len - OOS_FIXED) / 16 <= MAX_OOS_RANGES
            }
            _ => len == 0,
        };
        if !ok {
            return Err(FrameError::BadLength { kind: name, len });
        }
        Ok(Header { kind, len, seq: be_u64(buf, 12) })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4] = VERSION;
        b[5] = self.kind;
        b[8..12].copy_from_slice(&self.len.to_be_bytes());
        b[12..20].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

fn end_of(kind: &'static str, offset: u64, len: u64) -> Result<u64, FrameError> {
    offset.checked_add(len).ok_or(FrameError::Overflow { kind, offset, len })
}

fn fua_flag(kind: &'static str, flags: u32) -> Result<bool, FrameError> {
    if flags & !FLAG_FUA != 0 {
        return Err(FrameError::BadField { kind, detail: format!("unknown flags {flags:#x}") });
    }
    Ok(flags & FLAG_FUA != 0)
}

/// A WRITE frame from its fixed part (`WRITE_FIXED` bytes) and its data, already separated: the link reader reads
/// the data straight into its own buffer, so a 1 MiB write is not copied once more.
pub fn decode_write(head: &Header, fixed: &[u8], data: Vec<u8>) -> Result<Frame, FrameError> {
    let kind = kind_name(head.kind);
    if head.kind != T_WRITE || fixed.len() != WRITE_FIXED as usize || head.len as usize != fixed.len() + data.len() {
        return Err(FrameError::Truncated { need: head.len as usize, got: fixed.len() + data.len() });
    }
    let offset = be_u64(fixed, 0);
    let fua = fua_flag(kind, be_u32(fixed, 8))?;
    end_of(kind, offset, data.len() as u64)?;
    Ok(Frame::Write { seq: head.seq, offset, data, fua })
}

/// Decode the payload of a frame whose header [`Header::decode`] accepted. `payload` must be exactly `head.len`
/// bytes.
pub fn decode_payload(head: &Header, payload: &[u8]) -> Result<Frame, FrameError> {
    let kind = kind_name(head.kind);
    if payload.len() != head.len as usize {
        return Err(FrameError::Truncated { need: head.len as usize, got: payload.len() });
    }
    let seq = head.seq;
    let p = payload;
    let frame = match head.kind {
        T_HELLO => {
            if seq != 0 {
                return Err(FrameError::BadField { kind, detail: format!("seq {seq} in HELLO (must be 0)") });
            }
            let node = std::str::from_utf8(&p[HELLO_FIXED as usize..])
                .map_err(|_| FrameError::BadField { kind, detail: "node name is not UTF-8".into() })?;
            Frame::Hello(Hello {
                size: be_u64(p, 0),
                uuid: be_u64(p, 8),
                generation: be_u64(p, 16),
                flags: be_u32(p, 24),
                node: node.to_string(),
            })
        }
        T_WRITE => decode_write(head, &p[..WRITE_FIXED as usize], p[WRITE_FIXED as usize..].to_vec())?,
        T_WRITE_ZEROES => {
            let (offset, len) = (be_u64(p, 0), be_u64(p, 8));
            let fua = fua_flag(kind, be_u32(p, 16))?;
            end_of(kind, offset, len)?;
            Frame::WriteZeroes { seq, offset, len, fua }
        }
        T_TRIM => {
            let (offset, len) = (be_u64(p, 0), be_u64(p, 8));
            end_of(kind, offset, len)?;
            Frame::Trim { seq, offset, len }
        }
        T_FLUSH => Frame::Flush { seq },
        T_ACK => {
            let errno = be_u32(p, 0);
            let code_len = p[4] as usize;
            if code_len != p.len() - ACK_FIXED as usize {
                return Err(FrameError::BadField { kind, detail: format!("code length {code_len}") });
            }
            let code = &p[ACK_FIXED as usize..];
            if !code.iter().all(|c| c.is_ascii_graphic()) {
                return Err(FrameError::BadField { kind, detail: "code is not printable ASCII".into() });
            }
            let status = match (errno, code.is_empty()) {
                (0, true) => AckStatus::Ok,
                (0, false) => return Err(FrameError::BadField { kind, detail: "a code on a successful ACK".into() }),
                (errno, _) => AckStatus::Failed { errno, code: String::from_utf8_lossy(code).into_owned() },
            };
            Frame::Ack { seq, status }
        }
        T_PING => Frame::Ping { token: seq },
        T_PONG => Frame::Pong { token: seq },
        T_META => {
            if seq != 0 {
                return Err(FrameError::BadField { kind, detail: format!("seq {seq} in META (must be 0)") });
            }
            let mut history = [0u64; 4];
            for (i, g) in history.iter_mut().enumerate() {
                *g = be_u64(p, 16 + 8 * i);
            }
            let m = MetaInfo { current: be_u64(p, 0), bitmap_uuid: be_u64(p, 8), history, disk: p[48], role: p[49] };
            if m.current == 0 || !(1..=3).contains(&m.disk) || !(1..=2).contains(&m.role) || p[50..52] != [0, 0] {
                let detail =
                    format!("current {:#x}, disk {}, role {}, reserved {:?}", m.current, m.disk, m.role, &p[50..]);
                return Err(FrameError::BadField { kind, detail });
            }
            Frame::Meta(m)
        }
        T_SYNC_DONE => Frame::SyncDone { seq },
        T_VERIFY_REQ => {
            let (offset, len) = (be_u64(p, 0), be_u64(p, 8));
            if len == 0 {
                return Err(FrameError::BadField { kind, detail: "length 0".into() });
            }
            if len > MAX_VERIFY {
                return Err(FrameError::VerifyTooLarge(len));
            }
            end_of(kind, offset, len)?;
            Frame::VerifyReq { seq, offset, len }
        }
        T_VERIFY_REP => {
            let errno = be_u32(p, 0);
            let mut digest = [0u8; DIGEST_LEN];
            digest.copy_from_slice(&p[4..]);
            if errno != 0 && digest.iter().any(|b| *b != 0) {
                return Err(FrameError::BadField { kind, detail: "a digest on a failed VERIFY_REP".into() });
            }
            Frame::VerifyRep { seq, errno, digest }
        }
        T_OUT_OF_SYNC => {
            if seq != 0 {
                return Err(FrameError::BadField { kind, detail: format!("seq {seq} in OUT_OF_SYNC (must be 0)") });
            }
            let (flags, count) = (be_u32(p, 0), be_u32(p, 4));
            if flags & !OOS_LAST != 0 {
                return Err(FrameError::BadField { kind, detail: format!("unknown flags {flags:#x}") });
            }
            if u64::from(count) * 16 + u64::from(OOS_FIXED) != p.len() as u64 {
                return Err(FrameError::BadField { kind, detail: format!("count {count}") });
            }
            let mut ranges = Vec::with_capacity(count as usize);
            for i in 0..count as usize {
                let (offset, len) = (be_u64(p, 8 + 16 * i), be_u64(p, 16 + 16 * i));
                if len == 0 {
                    return Err(FrameError::BadField { kind, detail: format!("range {i} is empty") });
                }
                end_of(kind, offset, len)?;
                ranges.push((offset, len));
            }
            Frame::OutOfSync { last: flags & OOS_LAST != 0, ranges }
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(frame)
}

/// Decode one whole frame (header and payload) from the start of `buf`; returns it and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
    let head = Header::decode(buf)?;
    let total = HEADER_LEN + head.len as usize;
    if buf.len() < total {
        return Err(FrameError::Truncated { need: total, got: buf.len() });
    }
    Ok((decode_payload(&head, &buf[HEADER_LEN..total])?, total))
}

impl Frame {
    /// The data sequence number of a WRITE, WRITE_ZEROES, TRIM or FLUSH.
    pub fn data_seq(&self) -> Option<u64> {
        match self {
            Frame::Write { seq, .. }
            | Frame::WriteZeroes { seq, .. }
            | Frame::Trim { seq, .. }
            | Frame::Flush { seq }
            | Frame::SyncDone { seq }
            | Frame::VerifyReq { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The byte range a WRITE, WRITE_ZEROES or TRIM touches, or a VERIFY_REQ reads: (offset, length).
    pub fn range(&self) -> Option<(u64, u64)> {
        match self {
            Frame::Write { offset, data, .. } => Some((*offset, data.len() as u64)),
            Frame::WriteZeroes { offset, len, .. }
            | Frame::Trim { offset, len, .. }
            | Frame::VerifyReq { offset, len, .. } => Some((*offset, *len)),
            _ => None,
        }
    }

    /// Check the frame's range against a store of `size` bytes.
    pub fn check_range(&self, size: u64) -> Result<(), FrameError> {
        let Some((offset, len)) = self.range() else { return Ok(()) };
        let kind = self.kind_name();
        let end = end_of(kind, offset, len)?;
        if end > size {
            return Err(FrameError::OutOfRange { kind, offset, len, size });
        }
        Ok(())
    }

    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => T_HELLO,
            Frame::Write { .. } => T_WRITE,
            Frame::WriteZeroes { .. } => T_WRITE_ZEROES,
            Frame::Trim { .. } => T_TRIM,
            Frame::Flush { .. } => T_FLUSH,
            Frame::Ack { .. } => T_ACK,
            Frame::Ping { .. } => T_PING,
            Frame::Pong { .. } => T_PONG,
            Frame::Meta(_) => T_META,
            Frame::SyncDone { .. } => T_SYNC_DONE,
            Frame::VerifyReq { .. } => T_VERIFY_REQ,
            Frame::VerifyRep { .. } => T_VERIFY_REP,
            Frame::OutOfSync { .. } => T_OUT_OF_SYNC,
        }
    }

    /// The frame's bytes. Fields beyond the format's limits (a node name over 255 bytes, a code over 32 bytes or
    /// not printable ASCII, over [`MAX_OOS_RANGES`] ranges, a digest on a failed VERIFY_REP) are truncated or replaced
    /// so that the result always decodes, except ranges that are empty, overflow or exceed [`MAX_VERIFY`] (the
    /// senders never build them).
    pub fn encode(&self) -> Vec<u8> {
        let mut p: Vec<u8> = Vec::new();
        let mut seq = 0;
        match self {
            Frame::Hello(h) => {
                p.extend_from_slice(&h.size.to_be_bytes());
                p.extend_from_slice(&h.uuid.to_be_bytes());
                p.extend_from_slice(&h.generation.to_be_bytes());
                p.extend_from_slice(&h.flags.to_be_bytes());
                let mut end = h.node.len().min(MAX_NODE_NAME);
                while !h.node.is_char_boundary(end) {
                    end -= 1;
                }
                p.extend_from_slice(&h.node.as_bytes()[..end]);
            }
            Frame::Write { seq: s, offset, data, fua } => {
                seq = *s;
                p.reserve(WRITE_FIXED as usize + data.len());
                p.extend_from_slice(&offset.to_be_bytes());
                p.extend_from_slice(&(u32::from(*fua) * FLAG_FUA).to_be_bytes());
                p.extend_from_slice(data);
            }
            Frame::WriteZeroes { seq: s, offset, len, fua } => {
                seq = *s;
                p.extend_from_slice(&offset.to_be_bytes());
                p.extend_from_slice(&len.to_be_bytes());
                p.extend_from_slice(&(u32::from(*fua) * FLAG_FUA).to_be_bytes());
            }
            Frame::Trim { seq: s, offset, len } => {
                seq = *s;
                p.extend_from_slice(&offset.to_be_bytes());
                p.extend_from_slice(&len.to_be_bytes());
            }
            Frame::Flush { seq: s } => seq = *s,
            Frame::Ack { seq: s, status } => {
                seq = *s;
                let (errno, code) = match status {
                    AckStatus::Ok => (0, Vec::new()),
                    AckStatus::Failed { errno, code } => {
                        let c: Vec<u8> = code.bytes().filter(|b| b.is_ascii_graphic()).take(MAX_CODE).collect();
                        ((*errno).max(1), c)
                    }
                };
                p.extend_from_slice(&u32::to_be_bytes(errno));
                p.push(code.len() as u8);
                p.extend_from_slice(&code);
            }
            Frame::Ping { token } | Frame::Pong { token } => seq = *token,
            Frame::Meta(m) => {
                p.extend_from_slice(&m.current.to_be_bytes());
                p.extend_from_slice(&m.bitmap_uuid.to_be_bytes());
                for g in m.history {
                    p.extend_from_slice(&g.to_be_bytes());
                }
                p.extend_from_slice(&[m.disk, m.role, 0, 0]);
            }
            Frame::SyncDone { seq: s } => seq = *s,
            Frame::VerifyReq { seq: s, offset, len } => {
                seq = *s;
                p.extend_from_slice(&offset.to_be_bytes());
                p.extend_from_slice(&len.to_be_bytes());
            }
            Frame::VerifyRep { seq: s, errno, digest } => {
                seq = *s;
                p.extend_from_slice(&errno.to_be_bytes());
                if *errno == 0 {
                    p.extend_from_slice(digest);
                } else {
                    p.extend_from_slice(&[0u8; DIGEST_LEN]);
                }
            }
            Frame::OutOfSync { last, ranges } => {
                let ranges = &ranges[..ranges.len().min(MAX_OOS_RANGES as usize)];
                p.extend_from_slice(&(u32::from(*last) * OOS_LAST).to_be_bytes());
                p.extend_from_slice(&(ranges.len() as u32).to_be_bytes());
                for (offset, len) in ranges {
                    p.extend_from_slice(&offset.to_be_bytes());
                    p.extend_from_slice(&len.to_be_bytes());
                }
            }
        }
        let head = Header { kind: self.kind(), len: p.len() as u32, seq };
        let mut out = Vec::with_capacity(HEADER_LEN + p.len());
        out.extend_from_slice(&head.encode());
        out.extend_from_slice(&p);
        out
    }

    /// The header of a WRITE carrying `data_len` bytes, for senders that write the data without copying it into
    /// one buffer. `None` when `data_len` is over [`MAX_DATA`].
    pub fn write_prefix(seq: u64, offset: u64, data_len: usize, fua: bool) -> Option<[u8; HEADER_LEN + 12]> {
        let data_len = u32::try_from(data_len).ok().filter(|n| *n <= MAX_DATA)?;
        let mut b = [0u8; HEADER_LEN + 12];
        b[..HEADER_LEN].copy_from_slice(&Header { kind: T_WRITE, len: WRITE_FIXED + data_len, seq }.encode());
        b[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&offset.to_be_bytes());
        b[HEADER_LEN + 8..].copy_from_slice(&(u32::from(fua) * FLAG_FUA).to_be_bytes());
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello { node: "node-a".into(), size: 1 << 30, uuid: 7, generation: 9, flags: 0 }),
            Frame::Write { seq: 1, offset: 4096, data: vec![1, 2, 3], fua: true },
            Frame::Write { seq: 2, offset: 0, data: vec![], fua: false },
            Frame::WriteZeroes { seq: 3, offset: 10, len: 1 << 20, fua: false },
            Frame::Trim { seq: 4, offset: 0, len: 512 },
            Frame::Flush { seq: 5 },
            Frame::Ack { seq: 5, status: AckStatus::Ok },
            Frame::Ack { seq: 6, status: AckStatus::Failed { errno: 5, code: "TDM-MIR-006".into() } },
            Frame::Ping { token: 77 },
            Frame::Pong { token: 77 },
            Frame::Meta(MetaInfo { current: 9, bitmap_uuid: 5, history: [5, 4, 0, 0], disk: 3, role: 2 }),
            Frame::SyncDone { seq: 12 },
            Frame::VerifyReq { seq: 13, offset: 1 << 20, len: 64 * 1024 },
            Frame::VerifyRep { seq: 13, errno: 0, digest: [7; DIGEST_LEN] },
            Frame::VerifyRep { seq: 14, errno: 5, digest: [0; DIGEST_LEN] },
            Frame::OutOfSync { last: true, ranges: vec![] },
            Frame::OutOfSync { last: false, ranges: vec![(0, 4096), (1 << 30, 1 << 22)] },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for f in all_frames() {
            let bytes = f.encode();
            let (back, used) = decode(&bytes).expect("decode");
            assert_eq!((back, used), (f, bytes.len()));
        }
    }

    #[test]
    fn write_prefix_matches_the_encoded_write() {
        let f = Frame::Write { seq: 3, offset: 99, data: vec![7; 10], fua: true };
        let bytes = f.encode();
        let prefix = Frame::write_prefix(3, 99, 10, true).expect("prefix");
        assert_eq!(&bytes[..prefix.len()], &prefix[..]);
        assert!(Frame::write_prefix(3, 0, MAX_DATA as usize + 1, false).is_none());
    }

    fn header(kind: u8, len: u32) -> [u8; HEADER_LEN] {
        Header { kind, len, seq: 1 }.encode()
    }

    #[test]
    fn bad_magic_version_type_and_reserved_bytes_are_refused() {
        let mut h = header(T_FLUSH, 0);
        h[0] = b'X';
        assert_eq!(Header::decode(&h).expect_err("magic").code(), "TDM-MIR-020");
        let mut h = header(T_FLUSH, 0);
        h[4] = 2;
        assert_eq!(Header::decode(&h).expect_err("version"), FrameError::BadVersion(2));
        for t in [0, 14, 255] {
            assert_eq!(Header::decode(&header(t, 0)).expect_err("type"), FrameError::UnknownType(t));
        }
        let mut h = header(T_FLUSH, 0);
        h[7] = 1;
        assert_eq!(Header::decode(&h).expect_err("reserved").code(), "TDM-MIR-028");
        assert_eq!(Header::decode(&h[..19]).expect_err("short").code(), "TDM-MIR-025");
    }

    #[test]
    fn lengths_each_type_does_not_allow_are_refused() {
        let bad = [
            (T_HELLO, 27),
            (T_HELLO, 28 + 256),
            (T_WRITE, 11),
            (T_WRITE_ZEROES, 19),
            (T_WRITE_ZEROES, 21),
            (T_TRIM, 17),
            (T_FLUSH, 1),
            (T_PING, 8),
            (T_PONG, 1),
            (T_ACK, 4),
            (T_ACK, 5 + 33),
            (T_META, 51),
            (T_SYNC_DONE, 1),
            (T_VERIFY_REQ, 15),
            (T_VERIFY_REP, 35),
            (T_OUT_OF_SYNC, 7),
            (T_OUT_OF_SYNC, 8 + 15),
            (T_OUT_OF_SYNC, 8 + 16 * (MAX_OOS_RANGES + 1)),
        ];
        for (t, len) in bad {
            let e = Header::decode(&header(t, len)).expect_err("bad length");
            assert_eq!(e.code(), "TDM-MIR-023", "type {t} length {len}");
        }
        let good = [(T_HELLO, 28), (T_HELLO, 283), (T_WRITE, 12), (T_WRITE, 12 + MAX_DATA), (T_ACK, 37)];
        for (t, len) in good {
            assert_eq!(Header::decode(&header(t, len)).expect("good").len, len);
        }
    }

    #[test]
    fn writes_over_the_maximum_are_refused_before_their_payload() {
        let e = Header::decode(&header(T_WRITE, WRITE_FIXED + MAX_DATA + 1)).expect_err("too large");
        assert_eq!(e, FrameError::TooLarge(MAX_DATA + 1));
        assert_eq!(Header::decode(&header(T_WRITE, u32::MAX)).expect_err("huge").code(), "TDM-MIR-024");
    }

    #[test]
    fn truncated_payloads_are_refused() {
        let bytes = Frame::Trim { seq: 1, offset: 0, len: 1 }.encode();
        assert_eq!(decode(&bytes[..bytes.len() - 1]).expect_err("short").code(), "TDM-MIR-025");
        let head = Header::decode(&bytes).expect("head");
        assert!(matches!(decode_payload(&head, &bytes[HEADER_LEN..HEADER_LEN + 3]), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn overflowing_ranges_are_refused() {
        let w = Frame::Write { seq: 1, offset: u64::MAX, data: vec![1], fua: false }.encode();
        assert_eq!(decode(&w).expect_err("write overflow").code(), "TDM-MIR-026");
        let z = Frame::WriteZeroes { seq: 1, offset: 2, len: u64::MAX, fua: false }.encode();
        assert_eq!(decode(&z).expect_err("zeroes overflow").code(), "TDM-MIR-026");
        let t = Frame::Trim { seq: 1, offset: u64::MAX, len: 1 }.encode();
        assert_eq!(decode(&t).expect_err("trim overflow").code(), "TDM-MIR-026");
        let fine = Frame::Write { seq: 1, offset: u64::MAX, data: vec![], fua: false }.encode();
        assert!(decode(&fine).is_ok(), "an empty write at the last offset does not overflow");
    }

    #[test]
    fn ranges_beyond_the_store_are_refused_by_check_range() {
        let f = Frame::Write { seq: 1, offset: 1000, data: vec![0; 25], fua: false };
        assert!(f.check_range(1025).is_ok());
        assert_eq!(f.check_range(1024).expect_err("past end").code(), "TDM-MIR-027");
        assert!(Frame::Trim { seq: 1, offset: 1024, len: 1 }.check_range(1024).is_err());
        assert!(Frame::WriteZeroes { seq: 1, offset: u64::MAX, len: 2, fua: false }.check_range(9).is_err());
        assert!(Frame::Flush { seq: 1 }.check_range(0).is_ok());
    }

    #[test]
    fn unknown_flags_bad_names_and_bad_codes_are_refused() {
        let mut w = Frame::Write { seq: 1, offset: 0, data: vec![1], fua: false }.encode();
        w[HEADER_LEN + 11] = 2;
        assert_eq!(decode(&w).expect_err("flags").code(), "TDM-MIR-028");
        let mut z = Frame::WriteZeroes { seq: 1, offset: 0, len: 1, fua: true }.encode();
        z[HEADER_LEN + 16] = 0x80;
        assert_eq!(decode(&z).expect_err("flags").code(), "TDM-MIR-028");
        let mut h = Frame::Hello(Hello { node: "ab".into(), size: 1, uuid: 0, generation: 0, flags: 0 }).encode();
        let n = h.len();
        h[n - 1] = 0xff;
        assert_eq!(decode(&h).expect_err("utf8").code(), "TDM-MIR-028");
        let mut h = Frame::Hello(Hello { node: "ab".into(), size: 1, uuid: 0, generation: 0, flags: 0 }).encode();
        h[19] = 1;
        assert_eq!(decode(&h).expect_err("seq in hello").code(), "TDM-MIR-028");

        let ack = |errno: u32, code_len: u8, code: &[u8]| {
            let mut b = Header { kind: T_ACK, len: 5 + code.len() as u32, seq: 1 }.encode().to_vec();
            b.extend_from_slice(&errno.to_be_bytes());
            b.push(code_len);
            b.extend_from_slice(code);
            b
        };
        assert_eq!(decode(&ack(5, 3, b"ab")).expect_err("length").code(), "TDM-MIR-028");
        assert_eq!(decode(&ack(5, 2, b"a\n")).expect_err("ascii").code(), "TDM-MIR-028");
        assert_eq!(decode(&ack(0, 1, b"x")).expect_err("code on ok").code(), "TDM-MIR-028");
        let failed = decode(&ack(5, 0, b"")).expect("errno without code").0;
        assert_eq!(failed, Frame::Ack { seq: 1, status: AckStatus::Failed { errno: 5, code: String::new() } });
    }

    #[test]
    fn meta_frames_with_invalid_fields_are_refused() {
        let good = MetaInfo { current: 9, bitmap_uuid: 0, history: [0; 4], disk: 1, role: 1 };
        for bad in [
            MetaInfo { current: 0, ..good },
            MetaInfo { disk: 0, ..good },
            MetaInfo { disk: 4, ..good },
            MetaInfo { role: 3, ..good },
        ] {
            assert_eq!(decode(&Frame::Meta(bad).encode()).expect_err("bad meta").code(), "TDM-MIR-028", "{bad:?}");
        }
        let mut b = Frame::Meta(good).encode();
        let n = b.len();
        b[n - 1] = 1;
        assert_eq!(decode(&b).expect_err("reserved").code(), "TDM-MIR-028");
        let mut b = Frame::Meta(good).encode();
        b[19] = 1;
        assert_eq!(decode(&b).expect_err("seq").code(), "TDM-MIR-028");
    }

    #[test]
    fn encode_clamps_fields_to_what_decodes() {
        let long = Frame::Hello(Hello { node: "é".repeat(200), size: 1, uuid: 0, generation: 0, flags: 0 });
        let Frame::Hello(h) = decode(&long.encode()).expect("decode").0 else { panic!("not a hello") };
        assert_eq!(h.node.len(), 254, "cut at a character boundary");
        let ack = Frame::Ack { seq: 1, status: AckStatus::Failed { errno: 0, code: "bad code\n".repeat(9) } };
        let (back, _) = decode(&ack.encode()).expect("decode");
        let Frame::Ack { status: AckStatus::Failed { errno, code }, .. } = back else { panic!("not failed") };
        assert_eq!((errno, code.len()), (1, MAX_CODE));
    }

    #[test]
    fn accessors_describe_data_frames() {
        let w = Frame::Write { seq: 8, offset: 5, data: vec![0; 3], fua: false };
        assert_eq!((w.data_seq(), w.range(), w.kind_name()), (Some(8), Some((5, 3)), "WRITE"));
        assert_eq!(Frame::Flush { seq: 2 }.data_seq(), Some(2));
        assert_eq!(Frame::Flush { seq: 2 }.range(), None);
        assert_eq!(Frame::Ping { token: 1 }.data_seq(), None);
        for f in all_frames() {
            let e = FrameError::BadLength { kind: f.kind_name(), len: 0 };
            assert!(e.to_string().starts_with(e.code()));
        }
    }

    #[test]
    fn verify_and_out_of_sync_frames_with_invalid_fields_are_refused() {
        let req = |offset: u64, len: u64| Frame::VerifyReq { seq: 1, offset, len }.encode();
        assert_eq!(decode(&req(0, 0)).expect_err("empty").code(), "TDM-MIR-028");
        assert_eq!(decode(&req(0, MAX_VERIFY + 1)).expect_err("too large"), FrameError::VerifyTooLarge(MAX_VERIFY + 1));
        assert_eq!(decode(&req(u64::MAX, 1)).expect_err("overflow").code(), "TDM-MIR-026");
        assert!(decode(&req(0, MAX_VERIFY)).is_ok());
        assert_eq!(
            Frame::VerifyReq { seq: 1, offset: 10, len: 5 }.check_range(14).expect_err("past").code(),
            "TDM-MIR-027"
        );

        let mut rep = Frame::VerifyRep { seq: 1, errno: 5, digest: [0; DIGEST_LEN] }.encode();
        rep[HEADER_LEN + 10] = 1;
        assert_eq!(decode(&rep).expect_err("digest on failure").code(), "TDM-MIR-028");

        let oos = |flags: u32, count: u32, ranges: &[(u64, u64)]| {
            let mut b = Header { kind: T_OUT_OF_SYNC, len: 8 + 16 * ranges.len() as u32, seq: 0 }.encode().to_vec();
            b.extend_from_slice(&flags.to_be_bytes());
            b.extend_from_slice(&count.to_be_bytes());
            for (o, l) in ranges {
                b.extend_from_slice(&o.to_be_bytes());
                b.extend_from_slice(&l.to_be_bytes());
            }
            b
        };
        assert!(decode(&oos(1, 1, &[(0, 1)])).is_ok());
        assert_eq!(decode(&oos(2, 1, &[(0, 1)])).expect_err("flags").code(), "TDM-MIR-028");
        assert_eq!(decode(&oos(1, 2, &[(0, 1)])).expect_err("count").code(), "TDM-MIR-028");
        assert_eq!(decode(&oos(1, 1, &[(0, 0)])).expect_err("empty range").code(), "TDM-MIR-028");
        assert_eq!(decode(&oos(1, 1, &[(u64::MAX, 2)])).expect_err("overflow").code(), "TDM-MIR-026");
        let mut b = oos(1, 0, &[]);
        b[19] = 1;
        assert_eq!(decode(&b).expect_err("seq").code(), "TDM-MIR-028");
        let v = Frame::VerifyReq { seq: 4, offset: 8, len: 2 };
        assert_eq!((v.data_seq(), v.range()), (Some(4), Some((8, 2))));
    }
}
