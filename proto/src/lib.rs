//! Protocol definitions for tandem, compiled at build time by protox and tonic-prost-build (no system `protoc`).
//!
//! - [`tfplugin6`]: Terraform plugin protocol 6.8, the `tfplugin6.Provider` service Terraform calls.
//! - [`plugin`]: the go-plugin services every Terraform plugin serves beside it (`GRPCController`, `GRPCStdio`).
//! - [`control`]: tandem's own control API (`tandem.v1.Control`), tandemd <-> tandemctl.

/// Terraform plugin protocol 6.8 (`tfplugin6`), as spoken by Terraform 1.11.
///
/// Implement [`tfplugin6::provider_server::Provider`] and serve it with
/// [`tfplugin6::provider_server::ProviderServer`].
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery, clippy::unwrap_used, rustdoc::all)]
pub mod tfplugin6 {
    tonic::include_proto!("tfplugin6");
}

/// go-plugin's own services (`plugin` package): `GRPCController` (graceful shutdown requested by the host) and
/// `GRPCStdio` (optional stdout/stderr mirroring).
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery, clippy::unwrap_used, rustdoc::all)]
pub mod plugin {
    tonic::include_proto!("plugin");
}

/// tandem's control API (`tandem.v1.Control`), served by tandemd on its Unix socket and called by tandemctl.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery, clippy::unwrap_used, rustdoc::all)]
pub mod control {
    tonic::include_proto!("tandem.v1");
}
