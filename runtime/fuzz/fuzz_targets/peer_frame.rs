//! Arbitrary bytes to the mirror peer-frame decoder: it must never panic; whatever decodes re-encodes to exactly
//! the bytes it came from, and a frame that passes the range check fits the store it was checked against.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/mirror/replication/frame.rs"]
#[allow(dead_code)]
mod frame;

use frame::{Frame, HEADER_LEN, Header, MAX_DATA};

fuzz_target!(|data: &[u8]| {
    match Header::decode(data) {
        Ok(h) => {
            assert_eq!(&h.encode()[..], &data[..HEADER_LEN]);
            assert!(h.len <= MAX_DATA + 12, "a header admitted an oversized payload");
        }
        Err(e) => assert!(e.to_string().starts_with(e.code())),
    }
    let (f, used) = match frame::decode(data) {
        Ok(d) => d,
        Err(e) => {
            assert!(e.to_string().starts_with(e.code()));
            return;
        }
    };
    assert_eq!(f.encode(), &data[..used], "decode and encode disagree");
    if let Frame::Write { seq, offset, data: payload, fua } = &f {
        let prefix = Frame::write_prefix(*seq, *offset, payload.len(), *fua).expect("decoded writes fit");
        assert_eq!(&prefix[..], &data[..prefix.len()]);
    }
    // The bytes after the frame pick the store size.
    let tail = &data[used..];
    let mut size = [0u8; 8];
    let n = tail.len().min(8);
    size[..n].copy_from_slice(&tail[..n]);
    let size = u64::from_be_bytes(size);
    if f.check_range(size).is_ok()
        && let Some((offset, len)) = f.range()
    {
        let end = offset.checked_add(len).expect("a checked range overflows");
        assert!(end <= size, "a checked range is beyond the store");
    }
});
