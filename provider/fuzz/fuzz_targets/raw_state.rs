//! Arbitrary bytes as raw state JSON and as a type description: never a panic; what decodes re-encodes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

#[path = "types.rs"]
mod types;

use types::framework::cty::{CodecError, Type};
use types::framework::{json, msgpack};

static TYPES: LazyLock<Vec<Type>> = LazyLock::new(types::fixed_types);

fuzz_target!(|data: &[u8]| {
    if let Ok(ty) = json::type_from_json(data) {
        assert_eq!(
            json::type_from_json(&json::type_to_json(&ty)).expect("our type JSON parses"),
            ty
        );
    }
    for ty in TYPES.iter() {
        let Ok(value) = json::decode_value(data, ty) else {
            continue;
        };
        let bytes = msgpack::encode(&value, ty).expect("a decoded state encodes as msgpack");
        assert_eq!(msgpack::decode(&bytes, ty).expect("decodes"), value);
        match json::encode_value(&value, ty) {
            Ok(text) => assert_eq!(
                json::decode_value(&text, ty).expect("our JSON decodes"),
                value
            ),
            Err(CodecError::NumberNotJson { .. }) => {}
            Err(e) => panic!("a decoded state fails to encode as JSON: {e}"),
        }
    }
});
