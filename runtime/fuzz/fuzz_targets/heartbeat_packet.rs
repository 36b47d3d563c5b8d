//! Arbitrary bytes to the heartbeat packet decoder: it must never panic. Because random bytes almost never carry
//! a valid MAC, each input is also decoded once re-signed with the key, so the fuzzer explores the checks behind
//! the MAC; whatever decodes must re-encode to exactly the same bytes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../src/membership/heartbeat/packet.rs"]
#[allow(dead_code)]
mod packet;

use packet::{HeartbeatKey, MAC_LEN, MAX_PACKET, Packet, PacketError, cluster_id};

static KEY: LazyLock<HeartbeatKey> =
    LazyLock::new(|| HeartbeatKey::new(b"fuzzing heartbeat key, 32 bytes.").expect("key"));
static CLUSTER: LazyLock<u64> = LazyLock::new(|| cluster_id("fuzz"));

fn check(bytes: &[u8]) -> Result<Packet, PacketError> {
    let r = Packet::decode(bytes, &KEY, *CLUSTER);
    if let Ok(p) = &r {
        assert_eq!(p.encode(&KEY), bytes, "a decoded packet must re-encode to the same bytes");
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
    if data.len() >= MAC_LEN && data.len() <= MAX_PACKET {
        let body = data.len() - MAC_LEN;
        let mut signed = data.to_vec();
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"fuzzing heartbeat key, 32 bytes."),
            &signed[..body],
        );
        signed[body..].copy_from_slice(tag.as_ref());
        if let Err(e) = check(&signed) {
            assert_ne!(e, PacketError::BadMac, "a correctly signed packet failed the MAC");
        }
    }
});
