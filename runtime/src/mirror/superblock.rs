//! The mirror metadata superblock: a fixed 512-byte record, written to two slots in turn (see [`meta`]). Pure code,
//! no I/O: the fuzzer (`runtime/fuzz/fuzz_targets/meta_superblock.rs`) compiles this file on its own (it needs only
//! `thiserror` and `aws-lc-rs`).
//!
//! Layout, big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `TDMMETA1` |
//! | 8..12 | version, [`VERSION`] |
//! | 12..20 | sequence number (the newer valid slot wins) |
//! | 20..28 | export size in bytes |
//! | 28..32 | bitmap granularity in bytes (a power of two, 4 KiB..64 MiB) |
//! | 32 | disk state: 1 Inconsistent, 2 Outdated, 3 UpToDate |
//! | 33 | role: 1 Secondary, 2 Primary |
//! | 34..36 | reserved, 0 |
//! | 36..40 | flags: bit 0 peer-outdated-known, bit 1 discarded (resolve) |
//! | 40..48 | current generation (non-zero) |
//! | 48..80 | history generations, 4 × u64, most recent first, 0 = empty |
//! | 80..88 | bitmap generation: the generation the dirty bitmap is relative to (0 = none) |
//! | 88 | node name length (1..=255) |
//! | 89..344 | node name, UTF-8, zero padded |
//! | 344..480 | reserved, 0 |
//! | 480..512 | SHA-256 of bytes 0..480 |
//!
//! Every rejected input maps to one [`SuperblockError`] with a stable code `TDM-MIR-04N`.
//!
//! [`meta`]: super::meta

/// `TDMMETA1`.
pub const MAGIC: u64 = 0x5444_4d4d_4554_4131;
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of one superblock.
pub const SUPERBLOCK_LEN: usize = 512;
/// Generations kept in the history.
pub const HISTORY: usize = 4;
/// Smallest and largest bitmap granularity.
pub const MIN_GRANULARITY: u32 = 4096;
pub const MAX_GRANULARITY: u32 = 64 * 1024 * 1024;
/// Flag: the peer is known to be marked Outdated (set by the primary after its peer-loss gate passed).
pub const FLAG_PEER_OUTDATED: u32 = 1;
/// Flag: this node's data was discarded by `tandemctl mirror resolve --discard`; it must become a full sync target.
pub const FLAG_DISCARDED: u32 = 2;
const KNOWN_FLAGS: u32 = FLAG_PEER_OUTDATED | FLAG_DISCARDED;
const NODE_AT: usize = 89;
const NODE_MAX: usize = 255;
const SUM_AT: usize = 480;

/// Why a superblock slot was rejected. Codes are stable: never renumber, only append.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("TDM-MIR-041: not a tandem mirror metadata superblock (magic {0:#018x})")]
    BadMagic(u64),
    #[error("TDM-MIR-042: mirror metadata version {0} is not supported (this build reads {VERSION})")]
    BadVersion(u32),
    #[error("TDM-MIR-043: mirror metadata superblock checksum mismatch (torn or corrupted write)")]
    Checksum,
    #[error("TDM-MIR-044: mirror metadata superblock has an invalid field: {0}")]
    BadField(String),
    #[error("TDM-MIR-045: mirror metadata superblock truncated: {got} of {SUPERBLOCK_LEN} bytes")]
    Truncated { got: usize },
}

impl SuperblockError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            SuperblockError::BadMagic(_) => "TDM-MIR-041",
            SuperblockError::BadVersion(_) => "TDM-MIR-042",
            SuperblockError::Checksum => "TDM-MIR-043",
            SuperblockError::BadField(_) => "TDM-MIR-044",
            SuperblockError::Truncated { .. } => "TDM-MIR-045",
        }
    }
}

/// What this node's copy of the data is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    /// Not a usable copy: fresh, or a sync target whose sync has not completed.
    Inconsistent,
    /// A consistent copy known to miss writes the peer has (the peer marked it outdated).
    Outdated,
    /// A consistent, current copy.
    UpToDate,
}

impl DiskState {
    pub fn to_byte(self) -> u8 {
        match self {
            DiskState::Inconsistent => 1,
            DiskState::Outdated => 2,
            DiskState::UpToDate => 3,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(DiskState::Inconsistent),
            2 => Some(DiskState::Outdated),
            3 => Some(DiskState::UpToDate),
            _ => None,
        }
    }
}

/// The role this node last had for the mirror disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Secondary,
    Primary,
}

impl Role {
    pub fn to_byte(self) -> u8 {
        match self {
            Role::Secondary => 1,
            Role::Primary => 2,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Role::Secondary),
            2 => Some(Role::Primary),
            _ => None,
        }
    }
}

/// The decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub seq: u64,
    pub size: u64,
    pub granularity: u32,
    pub disk: DiskState,
    pub role: Role,
    pub flags: u32,
    pub current: u64,
    /// Most recent first; 0 = empty.
    pub history: [u64; HISTORY],
    pub bitmap_uuid: u64,
    pub node: String,
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

fn checksum(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b[..SUM_AT]);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn bad(detail: impl Into<String>) -> SuperblockError {
    SuperblockError::BadField(detail.into())
}

impl Superblock {
    /// Check the fields a valid superblock must have (the encoder refuses what the decoder would).
    pub fn validate(&self) -> Result<(), SuperblockError> {
        let g = self.granularity;
        if !g.is_power_of_two() || !(MIN_GRANULARITY..=MAX_GRANULARITY).contains(&g) {
            return Err(bad(format!("bitmap granularity {g} (a power of two from 4 KiB to 64 MiB)")));
        }
        if self.size == 0 {
            return Err(bad("export size 0"));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(bad(format!("unknown flags {:#x}", self.flags)));
        }
        if self.current == 0 {
            return Err(bad("current generation 0"));
        }
        if self.node.is_empty() || self.node.len() > NODE_MAX {
            return Err(bad(format!("node name of {} bytes (1..=255)", self.node.len())));
        }
        Ok(())
    }

    /// Number of bitmap bits (chunks of the export).
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(u64::from(self.granularity.max(1)))
    }

    /// The record's bytes, or the reason the fields are invalid.
    pub fn encode(&self) -> Result<[u8; SUPERBLOCK_LEN], SuperblockError> {
        self.validate()?;
        let mut b = [0u8; SUPERBLOCK_LEN];
        b[0..8].copy_from_slice(&MAGIC.to_be_bytes());
        b[8..12].copy_from_slice(&VERSION.to_be_bytes());
        b[12..20].copy_from_slice(&self.seq.to_be_bytes());
        b[20..28].copy_from_slice(&self.size.to_be_bytes());
        b[28..32].copy_from_slice(&self.granularity.to_be_bytes());
        b[32] = self.disk.to_byte();
        b[33] = self.role.to_byte();
        b[36..40].copy_from_slice(&self.flags.to_be_bytes());
        b[40..48].copy_from_slice(&self.current.to_be_bytes());
        for (i, g) in self.history.iter().enumerate() {
            b[48 + 8 * i..56 + 8 * i].copy_from_slice(&g.to_be_bytes());
        }
        b[80..88].copy_from_slice(&self.bitmap_uuid.to_be_bytes());
        b[88] = self.node.len() as u8;
        b[NODE_AT..NODE_AT + self.node.len()].copy_from_slice(self.node.as_bytes());
        let sum = checksum(&b);
        b[SUM_AT..].copy_from_slice(&sum);
        Ok(b)
    }

    /// Decode and validate one slot (exactly [`SUPERBLOCK_LEN`] bytes are read; more are ignored).
    pub fn decode(buf: &[u8]) -> Result<Superblock, SuperblockError> {
        if buf.len() < SUPERBLOCK_LEN {
            return Err(SuperblockError::Truncated { got: buf.len() });
        }
        let b = &buf[..SUPERBLOCK_LEN];
        let magic = be_u64(b, 0);
        if magic != MAGIC {
            return Err(SuperblockError::BadMagic(magic));
        }
        if checksum(b)[..] != b[SUM_AT..] {
            return Err(SuperblockError::Checksum);
        }
        let version = be_u32(b, 8);
        if version != VERSION {
            return Err(SuperblockError::BadVersion(version));
        }
        let disk = DiskState::from_byte(b[32]).ok_or_else(|| bad(format!("disk state {}", b[32])))?;
        let role = Role::from_byte(b[33]).ok_or_else(|| bad(format!("role {}", b[33])))?;
        if b[34..36].iter().chain(&b[344..SUM_AT]).any(|x| *x != 0) {
            return Err(bad("reserved bytes are not zero"));
        }
        let node_len = usize::from(b[88]);
        if b[NODE_AT + node_len..NODE_AT + NODE_MAX].iter().any(|x| *x != 0) {
            return Err(bad("bytes after the node name are not zero"));
        }
        let node = std::str::from_utf8(&b[NODE_AT..NODE_AT + node_len]).map_err(|_| bad("node name is not UTF-8"))?;
        let mut history = [0u64; HISTORY];
        for (i, g) in history.iter_mut().enumerate() {
            *g = be_u64(b, 48 + 8 * i);
        }
        let sb = Superblock {
            seq: be_u64(b, 12),
            size: be_u64(b, 20),
            granularity: be_u32(b, 28),
            disk,
            role,
            flags: be_u32(b, 36),
            current: be_u64(b, 40),
            history,
            bitmap_uuid: be_u64(b, 80),
            node: node.to_string(),
        };
        sb.validate()?;
        Ok(sb)
    }
}

/// `TDMACTL1`: the first 8 bytes of an activity-log slot.
pub const AL_MAGIC: u64 = 0x5444_4d41_4354_4c31;
/// Bytes of one activity-log slot (two slots follow the bitmap).
pub const AL_SLOT_LEN: usize = 4096;
const AL_HEAD: usize = 32;
const AL_SUM_AT: usize = AL_SLOT_LEN - 32;
/// Most extents one activity-log slot holds.
pub const AL_MAX_EXTENTS: usize = (AL_SUM_AT - AL_HEAD) / 4;

/// One activity-log slot: the extents (units of `extent_bytes` of the export) in which the primary may have writes
/// that the peer does not have yet. Layout, big-endian: magic `TDMACTL1` (0..8), sequence number (8..16, the newer
/// valid slot wins), extent size in bytes (16..24, a power of two from 4 KiB to 1 GiB), count (24..28, at most
/// [`AL_MAX_EXTENTS`]), reserved 0 (28..32), `count` × u32 extent numbers (32..), zero up to byte 4064, then the
/// SHA-256 of bytes 0..4064. An all-zero slot is an empty log never written (metadata created before the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRecord {
    pub seq: u64,
    pub extent_bytes: u64,
    pub extents: Vec<u32>,
}

impl ActivityRecord {
    fn validate(&self) -> Result<(), SuperblockError> {
        let e = self.extent_bytes;
        if !e.is_power_of_two() || !(4096..=1 << 30).contains(&e) {
            return Err(bad(format!("activity log extent size {e} (a power of two from 4 KiB to 1 GiB)")));
        }
        if self.extents.len() > AL_MAX_EXTENTS {
            return Err(bad(format!("activity log of {} extents (at most {AL_MAX_EXTENTS})", self.extents.len())));
        }
        Ok(())
    }

    /// The slot's bytes, or the reason the fields are invalid.
    pub fn encode(&self) -> Result<Vec<u8>, SuperblockError> {
        self.validate()?;
        let mut b = vec![0u8; AL_SLOT_LEN];
        b[0..8].copy_from_slice(&AL_MAGIC.to_be_bytes());
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..24].copy_from_slice(&self.extent_bytes.to_be_bytes());
        b[24..28].copy_from_slice(&(self.extents.len() as u32).to_be_bytes());
        for (i, e) in self.extents.iter().enumerate() {
            b[AL_HEAD + 4 * i..AL_HEAD + 4 * i + 4].copy_from_slice(&e.to_be_bytes());
        }
        let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b[..AL_SUM_AT]);
        b[AL_SUM_AT..].copy_from_slice(sum.as_ref());
        Ok(b)
    }

    /// Decode and validate one slot. `Ok(None)`: an all-zero slot (never written).
    pub fn decode(buf: &[u8]) -> Result<Option<ActivityRecord>, SuperblockError> {
        if buf.len() < AL_SLOT_LEN {
            return Err(SuperblockError::Truncated { got: buf.len() });
        }
        let b = &buf[..AL_SLOT_LEN];
        if b.iter().all(|x| *x == 0) {
            return Ok(None);
        }
        let magic = be_u64(b, 0);
        if magic != AL_MAGIC {
            return Err(SuperblockError::BadMagic(magic));
        }
        let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &b[..AL_SUM_AT]);
        if sum.as_ref() != &b[AL_SUM_AT..] {
            return Err(SuperblockError::Checksum);
        }
        let count = be_u32(b, 24) as usize;
        if count > AL_MAX_EXTENTS {
            return Err(bad(format!("activity log of {count} extents (at most {AL_MAX_EXTENTS})")));
        }
        if b[28..32].iter().chain(&b[AL_HEAD + 4 * count..AL_SUM_AT]).any(|x| *x != 0) {
            return Err(bad("activity log reserved bytes are not zero"));
        }
        let extents = (0..count).map(|i| be_u32(b, AL_HEAD + 4 * i)).collect();
        let r = ActivityRecord { seq: be_u64(b, 8), extent_bytes: be_u64(b, 16), extents };
        r.validate()?;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            seq: 7,
            size: 1 << 30,
            granularity: 64 * 1024,
            disk: DiskState::UpToDate,
            role: Role::Primary,
            flags: FLAG_PEER_OUTDATED,
            current: 0xfeed,
            history: [3, 2, 1, 0],
            bitmap_uuid: 3,
            node: "node-a".into(),
        }
    }

    fn resum(b: &mut [u8; SUPERBLOCK_LEN]) {
        let sum = checksum(b);
        b[SUM_AT..].copy_from_slice(&sum);
    }

    #[test]
    fn a_superblock_round_trips() {
        let sb = sample();
        let bytes = sb.encode().expect("encode");
        assert_eq!(Superblock::decode(&bytes).expect("decode"), sb);
    }

    #[test]
    fn any_flipped_bit_is_a_checksum_error() {
        let bytes = sample().encode().expect("encode");
        for i in [9, 40, 100, 300, 479, 500] {
            let mut b = bytes;
            b[i] ^= 0x10;
            assert_eq!(Superblock::decode(&b).expect_err("flipped").code(), "TDM-MIR-043", "byte {i}");
        }
        let mut b = bytes;
        b[0] = 0;
        assert_eq!(Superblock::decode(&b).expect_err("magic").code(), "TDM-MIR-041");
        assert_eq!(Superblock::decode(&b[..100]).expect_err("short").code(), "TDM-MIR-045");
    }

    #[test]
    fn invalid_fields_are_refused_even_with_a_good_checksum() {
        let bytes = sample().encode().expect("encode");
        let cases: Vec<(usize, u8, &str)> = vec![
            (11, 2, "TDM-MIR-042"),
            (32, 9, "TDM-MIR-044"),
            (33, 0, "TDM-MIR-044"),
            (35, 1, "TDM-MIR-044"),
            (39, 0x80, "TDM-MIR-044"),
            (88, 0, "TDM-MIR-044"),
            (88, 3, "TDM-MIR-044"),
            (400, 1, "TDM-MIR-044"),
            (31, 1, "TDM-MIR-044"),
        ];
        for (at, v, code) in cases {
            let mut b = bytes;
            b[at] = v;
            resum(&mut b);
            assert_eq!(Superblock::decode(&b).expect_err("invalid").code(), code, "byte {at} = {v}");
        }
        let mut b = bytes;
        b[40..48].fill(0);
        resum(&mut b);
        assert_eq!(Superblock::decode(&b).expect_err("gen 0").code(), "TDM-MIR-044");
        let mut b = bytes;
        b[NODE_AT] = 0xff;
        resum(&mut b);
        assert_eq!(Superblock::decode(&b).expect_err("utf8").code(), "TDM-MIR-044");
    }

    #[test]
    fn the_encoder_refuses_what_the_decoder_would() {
        for sb in [
            Superblock { granularity: 1000, ..sample() },
            Superblock { current: 0, ..sample() },
            Superblock { node: String::new(), ..sample() },
            Superblock { node: "x".repeat(256), ..sample() },
            Superblock { flags: 4, ..sample() },
            Superblock { size: 0, ..sample() },
        ] {
            assert_eq!(sb.encode().expect_err("invalid").code(), "TDM-MIR-044");
        }
    }

    #[test]
    fn an_activity_record_round_trips_and_damage_is_refused() {
        let r = ActivityRecord { seq: 9, extent_bytes: 4 << 20, extents: vec![0, 7, u32::MAX] };
        let bytes = r.encode().expect("encode");
        assert_eq!(ActivityRecord::decode(&bytes).expect("decode"), Some(r.clone()));
        assert_eq!(ActivityRecord::decode(&[0u8; AL_SLOT_LEN]).expect("blank"), None);
        let mut b = bytes.clone();
        b[40] ^= 1;
        assert_eq!(ActivityRecord::decode(&b).expect_err("flipped").code(), "TDM-MIR-043");
        let mut b = bytes.clone();
        b[0] = 0;
        assert_eq!(ActivityRecord::decode(&b).expect_err("magic").code(), "TDM-MIR-041");
        assert_eq!(ActivityRecord::decode(&bytes[..100]).expect_err("short").code(), "TDM-MIR-045");
        let full = ActivityRecord { extents: vec![1; AL_MAX_EXTENTS], ..r.clone() };
        assert!(ActivityRecord::decode(&full.encode().expect("full")).is_ok());
        for bad in [
            ActivityRecord { extents: vec![1; AL_MAX_EXTENTS + 1], ..r.clone() },
            ActivityRecord { extent_bytes: 3 << 20, ..r.clone() },
            ActivityRecord { extent_bytes: 2048, ..r.clone() },
        ] {
            assert_eq!(bad.encode().expect_err("invalid").code(), "TDM-MIR-044");
        }
    }
}
