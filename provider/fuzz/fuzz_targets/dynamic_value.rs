//! Arbitrary bytes as a DynamicValue: decoding must never panic, and whatever decodes must re-encode,
//! decode again to an equal value, and (when wholly known) survive the JSON form too.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

#[path = "types.rs"]
mod types;

use types::framework::cty::{CodecError, Type};
use types::framework::{json, msgpack};

static TYPES: LazyLock<Vec<Type>> = LazyLock::new(types::fixed_types);

fuzz_target!(|data: &[u8]| {
    for ty in TYPES.iter() {
        let Ok(value) = msgpack::decode(data, ty) else {
            continue;
        };
        let bytes = msgpack::encode(&value, ty).expect("a decoded value re-encodes");
        let again = msgpack::decode(&bytes, ty).expect("re-encoded bytes decode");
        assert_eq!(again, value, "msgpack round trip changed the value");
        assert_eq!(
            msgpack::encode(&again, ty).expect("encodes"),
            bytes,
            "encoding is deterministic"
        );
        if value.is_wholly_known() {
            match json::encode_value(&value, ty) {
                Ok(text) => {
                    let back = json::decode_value_strict(&text, ty).expect("our JSON decodes");
                    assert_eq!(back, value, "JSON round trip changed the value");
                }
                Err(CodecError::NumberNotJson { .. }) => {} // infinities have no JSON form
                Err(e) => panic!("a wholly known decoded value fails to encode as JSON: {e}"),
            }
        }
    }
});
