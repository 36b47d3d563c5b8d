#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, and the acceptance suites (real terraform CLI against
# a local moto server). Needs only the Rust toolchain, Python 3 and Terraform; installs the rest itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Outside the clone, so a fresh clone reuses a warm build and a cold one is still correct.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tandem/target}"
# Never let the AWS SDK look for an instance metadata service on a test machine.
export AWS_EC2_METADATA_DISABLED=true

command -v terraform >/dev/null || { echo "tests/run.sh: terraform is not on PATH (Terraform >= 1.6 is needed)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "tests/run.sh: python3 is not on PATH (moto, the local AWS endpoint, needs it)" >&2; exit 1; }

echo "== test bed tools (nftables, spin; root)"
bash tests/support/testbed-deps.sh

echo "== moto (local AWS endpoint) venv"
bash tests/support/moto-venv.sh >/dev/null

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== build (one build of every target; the harness reuses the provider binary from it)"
cargo build --workspace --all-targets --locked
export TANDEM_PROVIDER_BIN="$CARGO_TARGET_DIR/debug/terraform-provider-tandem"

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== model check of the lease + vouch protocol (spin)"
bash docs/model/check.sh

echo "== tests"
cargo test --workspace --locked -- --test-threads="${TANDEM_TEST_THREADS:-2}"
