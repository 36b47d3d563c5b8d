#!/usr/bin/env bash
# The demo: a local AWS endpoint (moto), the provider built from this checkout, and `terraform apply` of
# terraform-examples/network (VPC, two subnets in two zones, Internet gateway), a second plan that must be
# empty, then `terraform destroy`. Needs only the Rust toolchain, Python 3 and Terraform.
#   EXAMPLE=network KEEP=1 bash terraform-examples/demo.sh   # KEEP=1: leave moto and the state for a look
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
example="${EXAMPLE:-network}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tandem/target}"
export AWS_EC2_METADATA_DISABLED=true

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "local AWS endpoint: moto (pinned, in a venv)"
moto_server="$(bash "$root/tests/support/moto-venv.sh")"
work="$(mktemp -d /tmp/tandem-demo.XXXXXX)"
"$moto_server" -H 127.0.0.1 -p 0 2>"$work/moto.log" >/dev/null &
moto_pid=$!
cleanup() {
  if [ -z "${KEEP:-}" ]; then kill "$moto_pid" 2>/dev/null || true; rm -rf "$work"; fi
}
trap cleanup EXIT
for _ in $(seq 1 600); do
  port="$(grep -o 'http://127.0.0.1:[0-9]*' "$work/moto.log" | head -1 | cut -d: -f3 || true)"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "moto did not start; see $work/moto.log" >&2; exit 1; }
echo "moto on http://127.0.0.1:$port"
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

step "build terraform-provider-tandem"
(cd "$root" && cargo build --locked -p terraform-provider-tandem)
mirror="$work/mirror/registry.terraform.io/tandem/tandem/0.1.0/linux_amd64"
mkdir -p "$mirror"
cp "$CARGO_TARGET_DIR/debug/terraform-provider-tandem" "$mirror/terraform-provider-tandem_v0.1.0"
cat > "$work/terraformrc" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$work/mirror"
    include = ["registry.terraform.io/tandem/tandem"]
  }
  direct {
    exclude = ["registry.terraform.io/tandem/tandem"]
  }
}
RC
export TF_CLI_CONFIG_FILE="$work/terraformrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
cp -r "$root/terraform-examples/$example" "$work/example"
cd "$work/example"

step "terraform init (offline, from the filesystem mirror)"
terraform init -input=false -no-color >/dev/null && echo "initialised"

step "terraform apply"
time terraform apply -auto-approve -input=false -no-color

step "terraform plan -detailed-exitcode (must be empty)"
set +e
terraform plan -detailed-exitcode -input=false -no-color >/dev/null
code=$?
set -e
[ "$code" = 0 ] && echo "no changes: the second plan is empty" || { echo "second plan not empty (exit $code)" >&2; exit 1; }

if [ -n "${KEEP:-}" ]; then
  echo; echo "KEEP set: state in $work/example, moto at $AWS_ENDPOINT_URL (pid $moto_pid)"; exit 0
fi

step "terraform destroy"
time terraform destroy -auto-approve -input=false -no-color | tail -1
