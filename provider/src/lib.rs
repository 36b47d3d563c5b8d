//! terraform-provider-tandem: a Terraform provider written against plugin protocol 6 directly.
//!
//! Layers: `plugin` (go-plugin handshake, AutoMTLS, serving), `server` (the tfplugin6 service), `framework`
//! (cty values, schemas, plan mechanics, the Resource trait), `aws` (clients, errors, waiters), `resources`.

pub mod aws;
pub mod framework;
pub mod plugin;
pub mod provider_schema;
pub mod resources;
pub mod server;
