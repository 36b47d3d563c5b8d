#!/usr/bin/env bash
# The demo: a local AWS endpoint (moto), the provider built from this checkout, `terraform apply` of the
# VIP-control cluster (terraform-examples/vip-cluster: network in two zones with NAT, nodes, IAM from the
# cluster, lease table, VIP routes, tandem_cluster), the config rendered for node1 and checked by the
# runtime; then (as root, vip-cluster) two real tandemd nodes in network namespaces that own the nodes' private
# IPs run the rendered configs against the same moto, the active one is SIGKILLed and the standby takes over
# (lease, VIP routes: terraform-examples/run-nodes.sh, docs/demo.md); a second plan that must be empty, then
# `terraform destroy`. Needs the Rust toolchain, Python 3 and Terraform; the runtime part needs root and `ip`.
#   EXAMPLE=dns-cluster KEEP=1 bash terraform-examples/demo.sh   # KEEP=1: leave moto and the state for a look
#   NO_NODES=1 bash terraform-examples/demo.sh                   # skip the runtime part
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
example="${EXAMPLE:-vip-cluster}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tandem/target}"
export AWS_EC2_METADATA_DISABLED=true
started="$(date +%s)"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The runtime part: root, `ip`, and the VIP example (its outputs name the VIP, the VPC and the nodes).
nodes=""
if [ -n "${NO_NODES:-}" ]; then
  skip_nodes="runtime part skipped (NO_NODES is set)"
elif [ "$example" != vip-cluster ]; then
  skip_nodes="runtime part skipped: it runs with EXAMPLE=vip-cluster only"
elif [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
  skip_nodes="runtime part skipped: starting tandemd nodes in network namespaces needs root and \`ip\` (iproute2)"
else
  nodes=1
fi

step "local AWS endpoint: moto (pinned, in a venv)"
moto_server="$(bash "$root/tests/support/moto-venv.sh")"
work="$(mktemp -d /tmp/tandem-demo.XXXXXX)"
moto_pid=""
runner_pid=""
cleanup() {
  if [ -n "$runner_pid" ]; then
    # run-nodes.sh runs in the background (so that Ctrl-C reaches this trap at once); its TERM trap stops the nodes.
    kill -TERM "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  if [ -z "${KEEP:-}" ]; then
    if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
    [ -n "$nodes" ] && bash "$root/terraform-examples/run-nodes.sh" down "$work/net" || true
    rm -rf "$work"
  elif [ -n "$nodes" ]; then
    echo "KEEP set: remove the demo network with: bash $root/terraform-examples/run-nodes.sh down $work/net"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
moto_addr=127.0.0.1
if [ -n "$nodes" ]; then
  # moto listens on the host side of the nodes' bridge, so that Terraform and the nodes use the same one.
  moto_addr="$(DEMO_PID=$$ bash "$root/terraform-examples/run-nodes.sh" net-up "$work/net")"
fi
"$moto_server" -H "$moto_addr" -p 0 2>"$work/moto.log" >/dev/null &
moto_pid=$!
for _ in $(seq 1 600); do
  port="$(grep -o "http://$moto_addr:[0-9]*" "$work/moto.log" | head -1 | cut -d: -f3 || true)"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "moto did not start; see $work/moto.log" >&2; exit 1; }
echo "moto on http://$moto_addr:$port"
export AWS_ENDPOINT_URL="http://$moto_addr:$port" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

step "build terraform-provider-tandem, tandemd and tandemctl"
(cd "$root" && cargo build --locked -p terraform-provider-tandem -p tandem-runtime --bins)
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
mkdir -p "$work/examples"
cp -r "$root/terraform-examples/$example" "$root/terraform-examples/modules" "$work/examples/"
cd "$work/examples/$example"
# moto's image catalogue has Amazon Linux 2, not the AL2023 the examples default to on AWS.
if grep -q 'variable "ami_name"' ./*.tf 2>/dev/null; then
  echo 'ami_name = "amzn2-ami-hvm-*-x86_64-gp2"' > moto.auto.tfvars
fi

step "terraform init (offline, from the filesystem mirror)"
terraform init -input=false -no-color >/dev/null && echo "initialised"

step "terraform apply"
time terraform apply -auto-approve -input=false -no-color

if terraform output node_config >/dev/null 2>&1; then
  step "node1's cluster config, as tandem_cluster rendered it (user_data installs it on the node)"
  terraform output -json node_config | python3 -c 'import json,sys; print(json.load(sys.stdin)["node1"])' > node1.hcl
  head -40 node1.hcl; echo "..."
  step "tandemctl config check: the runtime accepts it"
  "$CARGO_TARGET_DIR/debug/tandemctl" config check node1.hcl --node node1
fi

if [ -n "$nodes" ]; then
  bash "$root/terraform-examples/run-nodes.sh" run "$work/net" "$PWD" &
  runner_pid=$!
  wait "$runner_pid"
  runner_pid=""
else
  step "runtime: two tandemd nodes, failover"
  echo "$skip_nodes"
fi

step "terraform plan -detailed-exitcode (must be empty)"
set +e
terraform plan -detailed-exitcode -input=false -no-color >/dev/null
code=$?
set -e
[ "$code" = 0 ] && echo "no changes: the second plan is empty" || { echo "second plan not empty (exit $code)" >&2; exit 1; }

if [ -n "${KEEP:-}" ]; then
  echo; echo "KEEP set: state in $work/examples/$example, moto at $AWS_ENDPOINT_URL (pid $moto_pid)"; exit 0
fi

step "terraform destroy"
time terraform destroy -auto-approve -input=false -no-color | tail -1
echo; echo "demo done in $(($(date +%s) - started)) s"
