//! The wire format of one heartbeat datagram, and its decoder of untrusted bytes.
//!
//! Layout (big-endian), [`HEADER_LEN`] bytes of header, then `state_len` state bytes, then a 32-byte
//! HMAC-SHA256 over everything before it, under the cluster heartbeat key:
//!
//! | offset | size | field                                                               |
//! |-------:|-----:|---------------------------------------------------------------------|
//! |      0 |    4 | magic `TDHB`                                                        |
//! |      4 |    1 | version (1)                                                         |
//! |      5 |    1 | flags (reserved, 0)                                                 |
//! |      6 |    2 | sender node id (index in the config's `nodes`)                      |
//! |      8 |    8 | cluster id (first 8 bytes of SHA-256 of the cluster name)           |
//! |     16 |    8 | incarnation (random, chosen at process start)                       |
//! |     24 |    8 | sequence number (strictly increasing per incarnation, from 1)       |
//! |     32 |    8 | sender's monotonic send time, microseconds                          |
//! |     40 |    8 | echo: last sequence received from the destination (0: none)         |
//! |     48 |    8 | echo: that packet's send time, in the destination's clock           |
//! |     56 |    4 | echo: microseconds the sender held it before this send              |
//! |     60 |    2 | state length (at most [`MAX_STATE`])                                |
//! |     62 |    n | state bytes (e.g. the groups the sender runs)                       |
//! |   62+n |   32 | HMAC-SHA256                                                         |
//!
//! The decoder never panics, never allocates, and checks the MAC in constant time (`aws_lc_rs::hmac::verify`).

use std::path::Path;

use aws_lc_rs::{digest, hmac};

pub const MAGIC: [u8; 4] = *b"TDHB";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 62;
pub const MAC_LEN: usize = 32;
/// Largest state field.
pub const MAX_STATE: usize = 256;
/// Largest valid datagram.
pub const MAX_PACKET: usize = HEADER_LEN + MAX_STATE + MAC_LEN;
/// Shortest accepted key.
pub const MIN_KEY_LEN: usize = 16;

/// Why a datagram was rejected. Codes (`TDM-HB-NNN`) are stable: never renumber, only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("TDM-HB-001: heartbeat packet too short ({len} bytes, need at least {})", HEADER_LEN + MAC_LEN)]
    TooShort { len: usize },
    #[error("TDM-HB-002: not a heartbeat packet (bad magic)")]
    BadMagic,
    #[error("TDM-HB-003: unsupported heartbeat version {0} (this node speaks {VERSION})")]
    BadVersion(u8),
    #[error("TDM-HB-004: heartbeat packet authentication failed (bad MAC: wrong heartbeat key or tampering)")]
    BadMac,
    #[error("TDM-HB-005: heartbeat packet too large ({len} bytes, at most {MAX_PACKET})")]
    Oversize { len: usize },
    #[error("TDM-HB-006: heartbeat packet from another cluster (cluster id {0:016x})")]
    ForeignCluster(u64),
    #[error("TDM-HB-007: heartbeat state field of {state} bytes does not match the packet length {len}")]
    LengthMismatch { state: usize, len: usize },
    #[error("TDM-HB-008: heartbeat packet has reserved flags set ({0:#04x})")]
    BadFlags(u8),
    #[error("TDM-HB-009: heartbeat packet has sequence number 0")]
    ZeroSequence,
}

impl PacketError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            PacketError::TooShort { .. } => "TDM-HB-001",
            PacketError::BadMagic => "TDM-HB-002",
            PacketError::BadVersion(_) => "TDM-HB-003",
            PacketError::BadMac => "TDM-HB-004",
            PacketError::Oversize { .. } => "TDM-HB-005",
            PacketError::ForeignCluster(_) => "TDM-HB-006",
            PacketError::LengthMismatch { .. } => "TDM-HB-007",
            PacketError::BadFlags(_) => "TDM-HB-008",
            PacketError::ZeroSequence => "TDM-HB-009",
        }
    }
}

/// Why the heartbeat key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("TDM-HB-010: reading heartbeat key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("TDM-HB-011: heartbeat key is {len} bytes, at least {MIN_KEY_LEN} are required")]
    TooShort { len: usize },
}

impl KeyError {
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Read { .. } => "TDM-HB-010",
            KeyError::TooShort { .. } => "TDM-HB-011",
        }
    }
}

/// The cluster heartbeat key (HMAC-SHA256).
#[derive(Clone)]
pub struct HeartbeatKey(hmac::Key);

impl std::fmt::Debug for HeartbeatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeartbeatKey(..)")
    }
}

impl HeartbeatKey {
    pub fn new(secret: &[u8]) -> Result<HeartbeatKey, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        Ok(HeartbeatKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// Reads the key file (`secrets.heartbeat_key_file`); its raw bytes, without surrounding whitespace, are the key.
    pub fn load(path: &Path) -> Result<HeartbeatKey, KeyError> {
        let bytes =
            std::fs::read(path).map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
        HeartbeatKey::new(bytes.trim_ascii())
    }
}

/// The cluster id carried in every packet: the first 8 bytes of SHA-256 of the cluster name.
pub fn cluster_id(cluster_name: &str) -> u64 {
    let d = digest::digest(&digest::SHA256, cluster_name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// One heartbeat. The state field is a fixed array so that decoding never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub sender: u16,
    pub cluster_id: u64,
    pub incarnation: u64,
    pub seq: u64,
    pub send_time_us: u64,
    pub echo_seq: u64,
    pub echo_time_us: u64,
    pub echo_hold_us: u32,
    state_len: u16,
    state: [u8; MAX_STATE],
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("sender", &self.sender)
            .field("cluster_id", &self.cluster_id)
            .field("incarnation", &self.incarnation)
            .field("seq", &self.seq)
            .field("send_time_us", &self.send_time_us)
            .field("echo_seq", &self.echo_seq)
            .field("echo_time_us", &self.echo_time_us)
            .field("echo_hold_us", &self.echo_hold_us)
            .field("state", &self.state())
            .finish()
    }
}

impl Packet {
    /// A packet with an empty state and no echo.
    pub fn new(sender: u16, cluster_id: u64, incarnation: u64, seq: u64, send_time_us: u64) -> Packet {
        Packet {
            sender,
            cluster_id,
            incarnation,
            seq,
            send_time_us,
            echo_seq: 0,
            echo_time_us: 0,
            echo_hold_us: 0,
            state_len: 0,
            state: [0; MAX_STATE],
        }
    }

    /// Sets the state field; `None` when it is longer than [`MAX_STATE`].
    pub fn with_state(mut self, state: &[u8]) -> Option<Packet> {
        let len = state.len();
        if len > MAX_STATE {
            return None;
        }
        self.state[..len].copy_from_slice(state);
        self.state[len..].fill(0);
        self.state_len = u16::try_from(len).ok()?;
        Some(self)
    }

    pub fn state(&self) -> &[u8] {
        &self.state[..usize::from(self.state_len)]
    }

    /// Encodes and authenticates the packet into `out`; returns the number of bytes written.
    pub fn encode_into(&self, key: &HeartbeatKey, out: &mut [u8; MAX_PACKET]) -> usize {
        let n = usize::from(self.state_len);
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = 0;
        out[6..8].copy_from_slice(&self.sender.to_be_bytes());
        out[8..16].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[16..24].copy_from_slice(&self.incarnation.to_be_bytes());
        out[24..32].copy_from_slice(&self.seq.to_be_bytes());
        out[32..40].copy_from_slice(&self.send_time_us.to_be_bytes());
        out[40..48].copy_from_slice(&self.echo_seq.to_be_bytes());
        out[48..56].copy_from_slice(&self.echo_time_us.to_be_bytes());
        out[56..60].copy_from_slice(&self.echo_hold_us.to_be_bytes());
        out[60..62].copy_from_slice(&self.state_len.to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + n].copy_from_slice(self.state());
        let body = HEADER_LEN + n;
        let tag = hmac::sign(&key.0, &out[..body]);
        out[body..body + MAC_LEN].copy_from_slice(tag.as_ref());
        body + MAC_LEN
    }

    /// Encodes into a new buffer.
    pub fn encode(&self, key: &HeartbeatKey) -> Vec<u8> {
        let mut buf = [0u8; MAX_PACKET];
        let n = self.encode_into(key, &mut buf);
        buf[..n].to_vec()
    }

    /// Decodes untrusted bytes. Checks, in order: length, magic, version, flags, state length, cluster id,
    /// MAC (constant time), sequence number.
    pub fn decode(bytes: &[u8], key: &HeartbeatKey, expected_cluster: u64) -> Result<Packet, PacketError> {
        let len = bytes.len();
        if len < HEADER_LEN + MAC_LEN {
            return Err(PacketError::TooShort { len });
        }
        if len > MAX_PACKET {
            return Err(PacketError::Oversize { len });
        }
        if bytes[0..4] != MAGIC {
            return Err(PacketError::BadMagic);
        }
        if bytes[4] != VERSION {
            return Err(PacketError::BadVersion(bytes[4]));
        }
        if bytes[5] != 0 {
            return Err(PacketError::BadFlags(bytes[5]));
        }
        let state_len = u16::from_be_bytes([bytes[60], bytes[61]]);
        let n = usize::from(state_len);
        if n > MAX_STATE || HEADER_LEN + n + MAC_LEN != len {
            return Err(PacketError::LengthMismatch { state: n, len });
        }
        let cluster = be_u64(bytes, 8);
        if cluster != expected_cluster {
            return Err(PacketError::ForeignCluster(cluster));
        }
        let body = HEADER_LEN + n;
        hmac::verify(&key.0, &bytes[..body], &bytes[body..]).map_err(|_| PacketError::BadMac)?;
        let seq = be_u64(bytes, 24);
        if seq == 0 {
            return Err(PacketError::ZeroSequence);
        }
        let mut state = [0u8; MAX_STATE];
        state[..n].copy_from_slice(&bytes[HEADER_LEN..body]);
        Ok(Packet {
            sender: u16::from_be_bytes([bytes[6], bytes[7]]),
            cluster_id: cluster,
            incarnation: be_u64(bytes, 16),
            seq,
            send_time_us: be_u64(bytes, 32),
            echo_seq: be_u64(bytes, 40),
            echo_time_us: be_u64(bytes, 48),
            echo_hold_us: u32::from_be_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]),
            state_len,
            state,
        })
    }
}

/// Reads a big-endian u64 at `at`; the caller has checked the length.
fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HeartbeatKey {
        HeartbeatKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn sample() -> Packet {
        let mut p = Packet::new(1, cluster_id("web"), 0xdead_beef, 42, 1_000_000);
        p.echo_seq = 7;
        p.echo_time_us = 900_000;
        p.echo_hold_us = 1234;
        p.with_state(b"g1,g2").unwrap()
    }

    /// Re-signs `bytes` (after a test edited the header) so that only the edited check can fail.
    fn resign(bytes: &mut [u8]) {
        let body = bytes.len() - MAC_LEN;
        let tag = hmac::sign(&key().0, &bytes[..body]);
        bytes[body..].copy_from_slice(tag.as_ref());
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let bytes = p.encode(&key());
        assert_eq!(bytes.len(), HEADER_LEN + 5 + MAC_LEN);
        let q = Packet::decode(&bytes, &key(), cluster_id("web")).unwrap();
        assert_eq!(p, q);
        assert_eq!(q.state(), b"g1,g2");
        let full = Packet::new(0, 1, 2, 3, 4).with_state(&[7; MAX_STATE]).unwrap();
        let bytes = full.encode(&key());
        assert_eq!(bytes.len(), MAX_PACKET);
        assert_eq!(Packet::decode(&bytes, &key(), 1).unwrap(), full);
        assert!(Packet::new(0, 1, 2, 3, 4).with_state(&[0; MAX_STATE + 1]).is_none());
    }

    #[test]
    fn rejections_have_stable_codes() {
        let good = sample().encode(&key());
        let cid = cluster_id("web");
        let decode = |b: &[u8]| Packet::decode(b, &key(), cid).unwrap_err();

        assert_eq!(decode(&[]).code(), "TDM-HB-001");
        assert_eq!(decode(&good[..HEADER_LEN + MAC_LEN - 1]).code(), "TDM-HB-001");
        assert_eq!(decode(&[0; MAX_PACKET + 1]).code(), "TDM-HB-005");

        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), PacketError::BadMagic);
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(decode(&b), PacketError::BadVersion(2));
        let mut b = good.clone();
        b[5] = 1;
        assert_eq!(decode(&b).code(), "TDM-HB-008");
        let mut b = good.clone();
        b[61] = 6;
        assert_eq!(decode(&b).code(), "TDM-HB-007");
        let mut b = good.clone();
        b[60] = 0xff;
        assert_eq!(decode(&b).code(), "TDM-HB-007");
        assert_eq!(decode(&good[..good.len() - 1]).code(), "TDM-HB-007");

        let foreign = Packet::new(1, cluster_id("other"), 1, 1, 0).encode(&key());
        assert_eq!(decode(&foreign), PacketError::ForeignCluster(cluster_id("other")));

        let other_key = HeartbeatKey::new(b"another key, 16+ bytes long").unwrap();
        assert_eq!(decode(&sample().encode(&other_key)), PacketError::BadMac);

        let mut b = Packet::new(1, cid, 1, 1, 0).encode(&key());
        b[24..32].fill(0);
        resign(&mut b);
        assert_eq!(decode(&b), PacketError::ZeroSequence);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let good = sample().encode(&key());
        for i in 0..good.len() * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Packet::decode(&b, &key(), cluster_id("web")).is_err(), "bit {i} flipped and accepted");
        }
        // A flipped bit past the header checks (anywhere in the authenticated fields, state or MAC) is a bad MAC.
        for i in 16 * 8..good.len() * 8 {
            if (60 * 8..62 * 8).contains(&i) {
                continue;
            }
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(Packet::decode(&b, &key(), cluster_id("web")), Err(PacketError::BadMac), "bit {i}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(HeartbeatKey::new(b"short").unwrap_err().code(), "TDM-HB-011");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.key");
        assert_eq!(HeartbeatKey::load(&path).unwrap_err().code(), "TDM-HB-010");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let k = HeartbeatKey::load(&path).unwrap();
        let bytes = sample().encode(&k);
        assert!(Packet::decode(&bytes, &key(), cluster_id("web")).is_ok());
    }
}
