//! The type-erased layer between Terraform's wire format and typed resources: cty values and codecs,
//! schemas, diagnostics, plan mechanics, and the Resource / DataSource traits.

pub mod cty;
pub mod diag;
pub mod json;
pub mod msgpack;
pub mod plan;
pub mod resource;
pub mod schema;
pub mod validators;

pub use cty::{Type, Value};
pub use diag::{AttrPath, Diagnostics};
pub use plan::Plan;
pub use resource::{DataSource, Resource};
pub use schema::{Attribute, Block, Nesting, Schema};
