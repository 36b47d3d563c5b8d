//! Arbitrary bytes to the fencer's request and reply decoders (runtime/src/fence/protocol.rs), and every request
//! that decodes through the fencer's state machine (fencer.rs): nothing may panic; whatever decodes re-encodes to
//! a line that decodes to the same value; the state machine's answers are well-formed replies.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/fence/protocol.rs"]
#[allow(dead_code)]
mod protocol;

#[path = "../../src/fence/fencer.rs"]
#[allow(dead_code)]
mod fencer;

use protocol::{Reply, Request};

fuzz_target!(|data: &[u8]| {
    let mut f = fencer::Fencer::default();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(req) = Request::decode(line) {
            let text = req.to_string();
            assert_eq!(Request::decode(text.as_bytes()).as_ref(), Ok(&req), "{text}");
            for reply in f.handle(req) {
                let text = reply.to_string();
                assert!(!text.contains('\n'), "{text:?}");
                assert_eq!(Reply::decode(text.as_bytes()).as_ref(), Ok(&reply), "{text}");
            }
        }
        if let Ok(reply) = Reply::decode(line) {
            let text = reply.to_string();
            assert_eq!(Reply::decode(text.as_bytes()), Ok(reply), "{text}");
        }
    }
    let now = data.len() as u64 * 1_000;
    for due in f.due(now) {
        f.fired(&due.group, now, true);
    }
    assert!(f.due(now).is_empty(), "a fired group is not due again");
});
