//! The provider binary, built once per test run, installed into a filesystem mirror so that `terraform init`
//! works offline exactly as with a registry.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{HarnessError, workspace_root};

pub const VERSION: &str = "0.1.0";
pub const SOURCE: &str = "tandem/tandem";

/// `target/debug` of the build that produced this test binary.
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test-binary>, or target/debug/<bin> for the benchmarks run with `cargo run`
    let dir = exe.parent().unwrap_or(Path::new(""));
    if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().unwrap_or(dir) } else { dir }.to_path_buf()
}

static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Makes the harness use `path` (e.g. a release build for benchmarks); must come before any other use.
pub fn use_provider_binary(path: PathBuf) -> bool {
    BIN.set(Ok(path)).is_ok()
}

/// The provider binary: TANDEM_PROVIDER_BIN when tests/run.sh built it, else built here with the same
/// command `.ci/run` uses (so the dependency graph compiles once, with one feature set).
pub fn provider_binary() -> Result<PathBuf, HarnessError> {
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("TANDEM_PROVIDER_BIN") {
            return Ok(PathBuf::from(p));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--all-targets"])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("cargo build of the provider failed".into());
        }
        Ok(target_profile_dir().join("terraform-provider-tandem"))
    })
    .clone()
    .map_err(|detail| HarnessError::Start { what: "provider build".into(), detail })
}

/// Lays out `DIR/registry.terraform.io/tandem/tandem/VERSION/linux_amd64/terraform-provider-tandem_vVERSION`
/// and returns DIR.
pub fn install_mirror(dir: &Path) -> Result<PathBuf, HarnessError> {
    let bin = provider_binary()?;
    let plat = dir.join(format!("registry.terraform.io/{SOURCE}/{VERSION}/linux_amd64"));
    std::fs::create_dir_all(&plat)?;
    let dest = plat.join(format!("terraform-provider-tandem_v{VERSION}"));
    // A symlink keeps the mirror current when the binary is rebuilt.
    if dest.exists() {
        std::fs::remove_file(&dest)?;
    }
    std::os::unix::fs::symlink(&bin, &dest)?;
    Ok(dir.to_path_buf())
}

/// A binary of the workspace (e.g. `tandemd`, `tandemctl`), built once with everything else.
pub fn workspace_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let provider = provider_binary()?;
    let dir = provider.parent().map(Path::to_path_buf).unwrap_or_else(target_profile_dir);
    Ok(dir.join(name))
}
