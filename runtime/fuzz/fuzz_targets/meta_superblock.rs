//! Arbitrary bytes to the mirror metadata superblock decoder and the activity-log slot decoder: they must never
//! panic; every error carries its code; whatever decodes is valid and re-encodes to exactly the bytes it came from
//! (the first 512, or the 4096 of a slot).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/mirror/superblock.rs"]
#[allow(dead_code)]
mod superblock;

use superblock::{AL_SLOT_LEN, ActivityRecord, SUPERBLOCK_LEN, Superblock};

fuzz_target!(|data: &[u8]| {
    match Superblock::decode(data) {
        Ok(sb) => {
            assert!(sb.validate().is_ok());
            assert!(sb.current != 0 && sb.granularity.is_power_of_two());
            let bytes = sb.encode().expect("a decoded superblock encodes");
            assert_eq!(&bytes[..], &data[..SUPERBLOCK_LEN], "decode and encode disagree");
        }
        Err(e) => assert!(e.to_string().starts_with(e.code())),
    }
    // The input as an activity-log slot (padded with zeros, so short inputs reach the field checks).
    let mut slot = data.to_vec();
    slot.resize(slot.len().max(AL_SLOT_LEN), 0);
    match ActivityRecord::decode(&slot) {
        Ok(Some(r)) => assert_eq!(&r.encode().expect("a decoded slot encodes")[..], &slot[..AL_SLOT_LEN]),
        Ok(None) => assert!(slot[..AL_SLOT_LEN].iter().all(|b| *b == 0)),
        Err(e) => assert!(e.to_string().starts_with(e.code())),
    }
    // A valid superblock with one byte changed by the input never decodes to different fields unnoticed.
    if let Some((&at, rest)) = data.split_first() {
        let sb = Superblock {
            seq: 1,
            size: 1 << 30,
            granularity: 65536,
            disk: superblock::DiskState::UpToDate,
            role: superblock::Role::Primary,
            flags: 0,
            current: 42,
            history: [1, 2, 3, 4],
            bitmap_uuid: 1,
            node: "node-a".into(),
        };
        let mut bytes = sb.encode().expect("encode");
        let i = usize::from(at) * 2 % SUPERBLOCK_LEN;
        let v = rest.first().copied().unwrap_or(0);
        bytes[i] ^= v;
        match Superblock::decode(&bytes) {
            Ok(back) => assert!(v == 0 && back == sb, "a corrupted superblock was accepted"),
            Err(e) => assert!(v != 0 && e.to_string().starts_with(e.code())),
        }
    }
});
