//! Arbitrary bytes to the NBD decoders (client flags, option header, option data, request header and its
//! validation): they must never panic. Whatever decodes must re-encode to the same bytes, and a request that
//! validates must fit the export it was validated against.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/mirror/nbd/proto.rs"]
#[allow(dead_code)]
mod proto;

use proto::{ClientOption, Command, Limits, MAX_PAYLOAD, RequestHeader};

fuzz_target!(|data: &[u8]| {
    let _ = proto::decode_client_flags(data);
    if let Ok(h) = proto::decode_option_header(data) {
        assert!(h.len <= proto::MAX_OPTION_DATA);
    }
    if data.len() >= 4 {
        let opt = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) % 16;
        if let Ok(ClientOption::Info { name, requests, .. }) = proto::decode_option(opt, &data[4..]) {
            assert_eq!(4 + name.len() + 2 + 2 * requests.len(), data.len() - 4);
        }
    }
    let Ok(h) = RequestHeader::decode(data) else { return };
    assert_eq!(&h.encode()[..], &data[..proto::REQUEST_HEADER_LEN]);
    if let Ok(n) = h.payload_len() {
        assert!(n <= MAX_PAYLOAD);
    }
    // The bytes after the header pick the export.
    let tail = &data[proto::REQUEST_HEADER_LEN..];
    let mut size = [0u8; 8];
    let n = tail.len().min(8);
    size[..n].copy_from_slice(&tail[..n]);
    let limits = Limits { size: u64::from_be_bytes(size), read_only: tail.get(8).is_some_and(|b| b & 1 == 1) };
    match proto::validate_request(&h, limits) {
        Ok(r) => {
            if matches!(r.cmd, Command::Read | Command::Write | Command::Trim | Command::WriteZeroes) {
                let end = r.offset.checked_add(u64::from(r.length)).expect("validated range overflows");
                assert!(end <= limits.size, "validated request beyond the export");
            }
            if matches!(r.cmd, Command::Read | Command::Write) {
                assert!(r.length <= MAX_PAYLOAD);
            }
            assert!(!(limits.read_only && r.cmd.is_write()), "write validated on a read-only export");
        }
        Err(e) => {
            assert!(e.to_string().starts_with(e.code()));
            let _ = (e.errno(), e.is_fatal());
        }
    }
});
