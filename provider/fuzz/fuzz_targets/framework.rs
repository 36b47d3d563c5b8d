// The provider's value layer, file by file, in the module layout provider/src/framework/mod.rs gives it
// (so the files' `super::` paths resolve) without compiling the provider crate and its AWS SDK.
// Paths are relative to this directory, as this file is loaded through a #[path] attribute.

#[path = "../../src/framework/cty.rs"]
pub mod cty;
#[path = "../../src/framework/json.rs"]
pub mod json;
#[path = "../../src/framework/msgpack.rs"]
pub mod msgpack;
