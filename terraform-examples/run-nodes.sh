#!/usr/bin/env bash
# The runtime part of the demo (terraform-examples/demo.sh): two real tandemd nodes, each in a network namespace
# that owns the node's private IP, run the config tandem_cluster rendered for it against the moto that Terraform
# used; the active node is SIGKILLed and the standby takes over (lease in DynamoDB, VIP routes in EC2).
#
#   run-nodes.sh net-up DIR        before moto starts: the bridge namespace and the host-side veth (prints the
#                                  host address moto must listen on); state in DIR/net.env
#   run-nodes.sh run DIR TFDIR     after `terraform apply` in TFDIR: node namespaces, two tandemd, kill, failover,
#                                  routes; stops the nodes and removes their namespaces when done (or on failure)
#   run-nodes.sh down DIR          removes everything net-up and run created (idempotent; demo.sh's exit trap)
#
#   root ns                       <id>-br                          <id>-<node>
#   <link> 10.0.0.250/24 ───────── host ─┐
#                                        br0 ── n0 ──────────────── eth0 10.0.10.11/24   (node1)
#                                            └─ n1 ──────────────── eth0 10.0.11.11/24   (node2)
#
# <id> is `tdemo-<pid of demo.sh>`, <link> `tdemo<pid>h` (its alias is <id>): `down`, and the next net-up for
# runs whose process is gone, find everything by these names. Only these addresses and loopback are traffic
# targets: the nodes' heartbeats go to each other, their AWS calls and the witness check to moto on the host
# address. The app of each node is a process in a cgroup of its own under $CG_MOUNT (cgroup2 mounted outside /sys:
# `ip netns exec` mounts a fresh sysfs over /sys, which hides /sys/fs/cgroup), and each node runs a fencer
# (`tandemd fencer`, what tandem-fencer.service runs on EC2) that kills that cgroup when the node's right to run
# the group ends while its tandemd is dead. Needs root and `ip` (iproute2). Settings (environment):
#   DEMO_HOST_ADDR   the host-side address (default 10.0.0.250, in the VPC range, outside its subnets)
#   FAILOVER_LIMIT   seconds the standby may take to become active after the kill (default 15)
#   FAST=1           the fast timing of docs/operations.md (heartbeat 100ms/500ms, lease ttl 1s/200ms)
#   DEMO_MODE=exec-only  the group without its aws_vip resource (for a tandemd build that lacks it)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tandem/target}"
bin="$CARGO_TARGET_DIR/debug"
ID_PREFIX=tdemo
# The demo's cgroup2 mount; the node cgroups are $CG_MOUNT/<id>/<node>. Left mounted after the demo.
CG_MOUNT=/run/tandem-demo/cgroup2

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { printf 'run-nodes: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------------------- cgroups

cg_mounted() { awk -v m="$CG_MOUNT" '$5 == m && / - cgroup2 /' /proc/self/mountinfo | grep -q .; }

# cgroup2 on $CG_MOUNT unless it is mounted there already.
cg_mount() {
  cg_mounted && return 0
  mkdir -p "$CG_MOUNT"
  mount -t cgroup2 cgroup2 "$CG_MOUNT" 2>/dev/null || true
  cg_mounted || die "cannot mount cgroup2 on $CG_MOUNT (each node's app runs in a cgroup of its own)"
}

# Kills everything in cgroup $1 and removes it (silent: net-up's output is the host address).
cg_remove() {
  local cg="$1" p
  [ -d "$cg" ] || return 0
  if ! echo 1 > "$cg/cgroup.kill" 2>/dev/null; then
    for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  fi
  for _ in $(seq 1 200); do
    rmdir "$cg" 2>/dev/null && return 0
    [ -d "$cg" ] || return 0
    sleep 0.01
  done
  return 1
}

# ---------------------------------------------------------------------------------------------------- network

# Namespaces and root-side links of earlier demo runs whose demo.sh is gone (killed with SIGKILL, say).
sweep_stale() {
  local name pid link p
  for name in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$ID_PREFIX-" || true); do
    pid="$(echo "$name" | cut -d- -f2)"
    if [ -n "$pid" ] && [ ! -d "/proc/$pid" ]; then
      for p in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
      ip netns del "$name" 2>/dev/null || true
    fi
  done
  ip -o link show 2>/dev/null | while read -r _ link _; do
    link="${link%%@*}"; link="${link%:}"
    case "$link" in "$ID_PREFIX"[0-9]*h) ;; *) continue ;; esac
    pid="${link#"$ID_PREFIX"}"; pid="${pid%h}"
    [ -d "/proc/$pid" ] || ip link del dev "$link" 2>/dev/null || true
  done
  local cg n
  for cg in "$CG_MOUNT/$ID_PREFIX"-*; do
    [ -d "$cg" ] || continue
    pid="${cg##*-}"
    [ -d "/proc/$pid" ] && continue
    for n in "$cg"/*/; do [ -d "$n" ] && { cg_remove "${n%/}" || true; }; done
    cg_remove "$cg" || true
  done
}

net_up() {
  local dir="$1" owner="${DEMO_PID:-$PPID}"
  local id="$ID_PREFIX-$owner" link="$ID_PREFIX${owner}h" addr="${DEMO_HOST_ADDR:-10.0.0.250}"
  command -v ip >/dev/null || die "the runtime part needs \`ip\` (iproute2)"
  sweep_stale
  if ip -4 -o addr show | grep -q " inet $addr/"; then
    die "$addr is already configured on this machine (another demo running?); set DEMO_HOST_ADDR"
  fi
  mkdir -p "$dir"
  # Written first: `down` removes whatever of this exists, so a failure half-way leaves nothing behind.
  printf 'ID=%s\nHOST_LINK=%s\nHOST_ADDR=%s\n' "$id" "$link" "$addr" > "$dir/net.env"
  ip netns add "$id-br"
  ip -n "$id-br" link add br0 type bridge
  ip -n "$id-br" link set dev br0 up
  ip link add "$link" type veth peer name host netns "$id-br"
  ip link set dev "$link" alias "$id"
  ip -n "$id-br" link set dev host master br0 up
  ip addr add "$addr/24" dev "$link"
  ip link set dev "$link" up
  echo "$addr"
}

load_net() {
  [ -f "$1/net.env" ] || die "$1/net.env is missing: run \`$0 net-up $1\` first"
  # shellcheck disable=SC1091
  . "$1/net.env"
}

# Node namespace $ID-<name>: eth0 with the node's IP and its subnet's prefix, an on-link route to the VPC range
# (the peer, in the other zone's subnet, is on the same bridge) and one to the host address.
node_ns_up() {
  local name="$1" ip="$2" prefix="$3" index="$4" ns="$ID-$1"
  echo "$ns" >> "$DIR/namespaces"
  ip netns add "$ns"
  ip -n "$ID-br" link add "n$index" type veth peer name eth0 netns "$ns"
  ip -n "$ID-br" link set dev "n$index" master br0 up
  ip -n "$ns" link set dev lo up
  ip -n "$ns" addr add "$ip/$prefix" dev eth0
  ip -n "$ns" link set dev eth0 up
  ip -n "$ns" route add 10.0.0.0/16 dev eth0
  ip -n "$ns" route add "$HOST_ADDR/32" dev eth0 2>/dev/null || true
  ip route add "$ip/32" dev "$HOST_LINK"
  echo "$ip" >> "$DIR/host-routes"
}

nodes_down() {
  local dir="$1" ns p r
  [ -f "$dir/net.env" ] || return 0
  load_net "$dir"
  # Every tandemd runs in a node namespace: `ip netns pids` names exactly the demo's processes (a pid from a
  # file could belong to another process by now).
  if [ -f "$dir/namespaces" ]; then
    for ns in $(cat "$dir/namespaces"); do
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    done
    rm -f "$dir/namespaces"
  fi
  # The app cgroups (the nodes' first, their parent last): what the kills above left, if anything, dies here.
  if [ -f "$dir/cgroups" ]; then
    for r in $(tac "$dir/cgroups"); do cg_remove "$r" || echo "run-nodes: could not remove cgroup $r" >&2; done
    rm -f "$dir/cgroups"
  fi
  if [ -f "$dir/host-routes" ]; then
    for r in $(cat "$dir/host-routes"); do ip route del "$r/32" dev "$HOST_LINK" 2>/dev/null || true; done
    rm -f "$dir/host-routes"
  fi
}

net_down() {
  local dir="$1" p
  [ -f "$dir/net.env" ] || return 0
  nodes_down "$dir"
  load_net "$dir"
  for p in $(ip netns pids "$ID-br" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  ip link del dev "$HOST_LINK" 2>/dev/null || true
  ip netns del "$ID-br" 2>/dev/null || true
  rm -f "$dir/net.env"
}

# ---------------------------------------------------------------------------------------------------- helpers

# Small Python helpers (boto3 from the moto venv; stdlib for the HCL rewrite).
write_helpers() {
  cat > "$DIR/aws.py" <<'PY'
"""AWS facts for the demo, read from the moto endpoint (AWS_ENDPOINT_URL)."""
import ipaddress, json, os, sys
import boto3

ec2 = boto3.client("ec2", region_name=os.environ.get("AWS_REGION", "us-east-1"))

def nodes(spec):
    """spec: {name: ip} -> one line per node: name ip prefix eni."""
    for name, ip in spec.items():
        enis = ec2.describe_network_interfaces(
            Filters=[{"Name": "addresses.private-ip-address", "Values": [ip]}])["NetworkInterfaces"]
        if len(enis) != 1:
            sys.exit(f"{len(enis)} ENIs hold {ip} (node {name}); expected one")
        subnet = ec2.describe_subnets(SubnetIds=[enis[0]["SubnetId"]])["Subnets"][0]
        prefix = ipaddress.ip_network(subnet["CidrBlock"]).prefixlen
        print(name, ip, prefix, enis[0]["NetworkInterfaceId"], subnet["CidrBlock"])

def routes(vip, vpc, enis, expect):
    """Prints every route table of the VPC with the target of its VIP route; exit 3 unless all are on `expect`."""
    owner = {eni: name for name, eni in enis.items()}
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    dest, ok, seen = f"{vip}/32", True, 0
    for t in sorted(tables, key=lambda t: t["RouteTableId"]):
        tag = {x["Key"]: x["Value"] for x in t.get("Tags", [])}.get("Name", "")
        if not tag and any(a.get("Main") for a in t.get("Associations", [])):
            tag = "(the VPC's main table)"
        route = next((r for r in t["Routes"] if r.get("DestinationCidrBlock") == dest), None)
        if route is None:
            print(f"   {t['RouteTableId']}  {tag:<30} (no route for {dest})")
            continue
        seen += 1
        target = route.get("NetworkInterfaceId") or route.get("InstanceId") or route.get("GatewayId") or "?"
        who = owner.get(target, "not a node")
        print(f"   {t['RouteTableId']}  {tag:<30} {dest} -> {target} ({who})")
        if expect and who != expect:
            ok = False
    if expect and (not ok or seen == 0):
        sys.exit(3)

cmd = sys.argv[1]
if cmd == "nodes":
    nodes(json.loads(sys.argv[2]))
elif cmd == "routes":
    routes(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "")
PY
  cat > "$DIR/rewrite.py" <<'PY'
"""Rewrites a rendered node config for the demo bed: what the machine here lacks is replaced, the rest is kept.

usage: rewrite.py IN OUT SECRETS_DIR WITNESS CGROUP MODE TIMING   (MODE: full | exec-only; TIMING: rendered | fast)
"""
import re, sys

src, out, secrets, witness, cgroup, mode, timing = sys.argv[1:8]
text = open(src).read()

def block_span(text, header):
    """(start, end) of the block whose first line matches `header` (a regex), with its nested blocks."""
    m = re.search(r"^[ \t]*" + header + r"[^\n{]*\{", text, re.M)
    if not m:
        return None
    depth, i = 0, m.end() - 1
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            end = text.find("\n", i)
            return m.start(), (len(text) if end < 0 else end + 1)
        i += 1
    sys.exit(f"unbalanced block {header}")

def drop_block(text, header):
    span = block_span(text, header)
    return text if span is None else text[: span[0]] + text[span[1]:]

def set_attr(text, header, attr, value):
    s, e = block_span(text, header)
    body = re.sub(r'^(\s*' + attr + r'\s*=\s*)"[^"]*"', lambda m: m.group(1) + '"' + value + '"',
                  text[s:e], count=1, flags=re.M)
    return text[:s] + body + text[e:]

def put_attr(text, header, attr, value):
    """set_attr, or a new line at the end of the block when the attribute is not there."""
    s, e = block_span(text, header)
    if re.search(r'^\s*' + attr + r'\s*=', text[s:e], re.M):
        return set_attr(text, header, attr, value)
    at = text.rindex("\n", s, text.rindex("}", s, e)) + 1  # the line of the block's closing brace
    indent = re.match(r"[ \t]*", text[s:]).group(0) + "  "
    return text[:at] + f'{indent}{attr} = "{value}"\n' + text[at:]

removed = []
def drop_resource(text, kind):
    for name in re.findall(r'^\s*resource\s+"' + kind + r'"\s+"([^"]+)"', text, re.M):
        text = drop_block(text, r'resource\s+"' + kind + r'"\s+"' + re.escape(name) + '"')
        removed.append(name)
    return text

# The secrets: the files user_data would write to /etc/tandem/secrets/, in the demo's directory instead.
for attr, file in [("heartbeat_key_file", "heartbeat.key"), ("ca_cert_file", "ca.crt"),
                   ("node_cert_file", "node.crt"), ("node_key_file", "node.key")]:
    text = set_attr(text, r"secrets", attr, f"{secrets}/{file}")
if timing == "fast":
    # The fast settings of docs/operations.md ("Timing"), tested by the runtime's failover tests.
    for block, attr, value in [("heartbeat", "interval", "100ms"), ("heartbeat", "timeout", "500ms"),
                               ("arbitration", "ttl", "1s"), ("arbitration", "renew_interval", "200ms")]:
        text = set_attr(text, block, attr, value)
# The witness: moto's address (the nodes reach nothing else) instead of ec2.<region>.amazonaws.com:443.
span = block_span(text, r"np_resolution")
if span:
    s, e = span
    body = text[s:e]
    for kind in ("ping", "http"):  # other witnesses are outside the bed: the TCP check of moto stands for them
        while block_span(body, kind + r"\b"):
            body = drop_block(body, kind + r"\b")
    body = re.sub(r'(\btcp\s*\{[^}]*?\baddress\s*=\s*)"[^"]*"', lambda m: m.group(1) + '"' + witness + '"', body)
    text = text[:s] + body + text[e:]
# No EBS volume here: each mirror_disk gets a file per node in the node's directory, and no mount point (this
# machine has no kernel NBD): the export is served on its Unix socket, which the demo writes to with qemu-io.
node_dir = secrets.rsplit("/", 1)[0]
for name in re.findall(r'^\s*resource\s+"mirror_disk"\s+"([^"]+)"', text, re.M):
    h = r'resource\s+"mirror_disk"\s+"' + re.escape(name) + '"'
    text = set_attr(text, h, "data_device", f"{node_dir}/{name}-data.img")
    text = set_attr(text, h, "metadata_device", f"{node_dir}/{name}-meta.img")
    s, e = block_span(text, h)
    body = re.sub(r'^\s*mount_point\s*=.*\n', "", text[s:e], flags=re.M)
    while block_span(body, r'override\b'):
        body = drop_block(body, r'override\b')
    text = text[:s] + body + text[e:]
if mode == "exec-only":
    text = drop_resource(text, "aws_vip")
# Monitors of removed resources go with them.
for kind, name in re.findall(r'^\s*monitor\s+"([^"]+)"\s+"([^"]+)"', text, re.M):
    h = r'monitor\s+"' + re.escape(kind) + r'"\s+"' + re.escape(name) + '"'
    s, e = block_span(text, h)
    m = re.search(r'^\s*resource\s*=\s*"([^"]+)"', text[s:e], re.M)
    if m and m.group(1) in removed:
        text = text[:s] + text[e:]
# No systemd unit tandem-app here: the app is a `sleep` in the node's own cgroup, started outside tandemd's process
# tree (setsid -f; writing 0 to cgroup.procs moves the writing shell itself), as `systemctl start` would; stopped
# with cgroup.kill, probed with cgroup.events. `cgroup` names that cgroup, so the node's fencer kills it when the
# node's right to run the group ends while tandemd is dead. One cgroup per node: one exec resource.
execs = re.findall(r'^\s*resource\s+"exec"\s+"([^"]+)"', text, re.M)
if len(execs) > 1:
    sys.exit(f"the demo gives each node one app cgroup, for one exec resource; this config has {execs}")
for name in execs:
    h = r'resource\s+"exec"\s+"' + re.escape(name) + '"'
    up = f"grep -qx 'populated 1' {cgroup}/cgroup.events"
    text = put_attr(text, h, "start",
                    f"{up} || setsid -f sh -c 'echo 0 > {cgroup}/cgroup.procs && exec sleep 1000000' "
                    f"</dev/null >/dev/null 2>&1; until {up}; do sleep 0.01; done")
    text = put_attr(text, h, "stop", f"echo 1 > {cgroup}/cgroup.kill; while {up}; do sleep 0.01; done")
    text = put_attr(text, h, "probe", f"{up} || exit 7")
    text = put_attr(text, h, "cgroup", cgroup)

def strip_deps(m):
    names = [n for n in re.findall(r'"([^"]+)"', m.group(2)) if n not in removed]
    return m.group(1) + "[" + ", ".join(f'"{n}"' for n in names) + "]"
text = re.sub(r'^(\s*depends_on\s*=\s*)\[([^\]]*)\]', strip_deps, text, flags=re.M)
text = re.sub(r"\n{3,}", "\n\n", text)
open(out, "w").write(text)
print(" ".join(removed))
PY
}

status_json() { "$bin/tandemctl" --socket "$DIR/$1/tandemd.sock" status --json 2>/dev/null; }
mirror_json() { "$bin/tandemctl" --socket "$DIR/$1/tandemd.sock" mirror status "$2" --json 2>/dev/null; }

# The role of group $2 on node $1 (empty while the socket does not answer).
role() {
  status_json "$1" | "$py" -c '
import json, sys
try:
    s = json.load(sys.stdin)
except ValueError:
    sys.exit()
print(next((g.get("state", "") for g in s.get("groups", []) if g.get("name") == sys.argv[1]), ""))' "$2" || true
}

# Waits until node $1's group $2 is in role $3, for at most $4 ms; fails if the node's tandemd exits.
wait_role() {
  local node="$1" group="$2" want="$3" limit="$4" start pid
  start="$(now_ms)"; pid="$(cat "$DIR/$node/pid")"
  while [ "$(role "$node" "$group")" != "$want" ]; do
    kill -0 "$pid" 2>/dev/null || return 2
    [ $(($(now_ms) - start)) -lt "$limit" ] || return 1
    sleep 0.05
  done
}

# The node's fencer, before its tandemd (tandem-fencer.service starts before tandemd.service on EC2): a process of
# its own, outside tandemd's tree, so that it outlives a tandemd that crashes.
start_fencer() {
  local name="$1" ns="$ID-$1" sock="$DIR/$1/fencer.sock" deadline=$(($(now_ms) + 10000))
  rm -f "$sock"
  ip netns exec "$ns" "$bin/tandemd" fencer --socket "$sock" > "$DIR/$name/fencer.log" 2>&1 &
  echo $! > "$DIR/$name/fencer.pid"
  disown $!
  until [ -S "$sock" ]; do
    kill -0 "$(cat "$DIR/$name/fencer.pid")" 2>/dev/null ||
      die "the fencer of $name exited: $(cat "$DIR/$name/fencer.log")"
    [ "$(now_ms)" -lt "$deadline" ] || die "the fencer of $name did not open $sock in 10 s"
    sleep 0.05
  done
}

start_node() {
  local name="$1" ns="$ID-$1"
  mkdir -p "$DIR/$name/state"
  rm -f "$DIR/$name/tandemd.sock"
  # `ip netns exec` execs tandemd in place: $! is tandemd's pid.
  ip netns exec "$ns" "$bin/tandemd" --config "$DIR/$name/cluster.hcl" --node "$name" \
    --state-dir "$DIR/$name/state" --socket "$DIR/$name/tandemd.sock" --fencer "$DIR/$name/fencer.sock" \
    --shutdown-command "echo demo: final action shutdown requested on $name" \
    > "$DIR/$name/tandemd.log" 2>&1 &
  echo $! > "$DIR/$name/pid"
  disown $!
}

# The pids in node $1's app cgroup (empty when its app does not run).
app_pids() { tr '\n' ' ' < "$CG_MOUNT/$ID/$1/cgroup.procs" 2>/dev/null | sed 's/ $//'; }

# A failure of the run: the nodes' last log lines and status, then exit 1.
fail() {
  local n
  for n in "${names[@]}"; do
    printf '   --- %s: last lines of %s\n' "$n" "$DIR/$n/tandemd.log" >&2
    tail -n 12 "$DIR/$n/tandemd.log" 2>/dev/null | sed 's/^/   /' >&2 || true
    tail -n 3 "$DIR/$n/fencer.log" 2>/dev/null | sed 's/^/   fencer: /' >&2 || true
    "$bin/tandemctl" --socket "$DIR/$n/tandemd.sock" status 2>/dev/null | sed 's/^/   /' >&2 || true
  done
  die "$@"
}

# Waits until both nodes answer on their sockets, or one exits; 0 = up, 1 = a node exited (its log says why).
wait_sockets() {
  local deadline=$(($(now_ms) + 20000)) n
  for n in "$@"; do
    until status_json "$n" >/dev/null; do
      kill -0 "$(cat "$DIR/$n/pid")" 2>/dev/null || return 1
      [ "$(now_ms)" -lt "$deadline" ] || die "tandemd on $n did not open its socket in 20 s; see $DIR/$n/tandemd.log"
      sleep 0.1
    done
  done
}

# ---------------------------------------------------------------------------------------------------- the run

run() {
  DIR="$1"; local tf="$2"
  load_net "$DIR"
  trap 'nodes_down "$DIR"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  [ -x "$bin/tandemd" ] && [ -x "$bin/tandemctl" ] || die "build tandemd first: cargo build -p tandem-runtime --bins"
  [ -n "${AWS_ENDPOINT_URL:-}" ] || die "AWS_ENDPOINT_URL must name the moto that Terraform used (demo.sh sets it)"
  py="$(dirname "$(bash "$root/tests/support/moto-venv.sh")")/python"
  write_helpers

  local nodes_json vip vpc group
  nodes_json="$(terraform -chdir="$tf" output -json nodes)"
  vip="$(terraform -chdir="$tf" output -raw vip)"
  vpc="$(terraform -chdir="$tf" output -raw vpc_id)"
  "$py" "$DIR/aws.py" nodes "$nodes_json" > "$DIR/nodes.txt"
  local names=() enis_json="{" name ip prefix eni cidr i=0
  while read -r name ip prefix eni cidr; do
    names+=("$name")
    enis_json+="\"$name\": \"$eni\","
  done < "$DIR/nodes.txt"
  enis_json="${enis_json%,}}"
  [ "${#names[@]}" = 2 ] || die "expected two nodes in the example, found ${#names[@]}"
  local active="${names[0]}" standby="${names[1]}"

  step "runtime: one network namespace per node, owning its private IP"
  local port
  port="$(echo "$AWS_ENDPOINT_URL" | sed -n 's#.*:\([0-9]*\)/*$#\1#p')"
  while read -r name ip prefix eni cidr; do
    node_ns_up "$name" "$ip" "$prefix" "$i"
    note "$name: namespace $ID-$name, eth0 $ip/$prefix (subnet $cidr), ENI $eni"
    i=$((i + 1))
  done < "$DIR/nodes.txt"
  note "host: $HOST_LINK $HOST_ADDR/24, moto (EC2, DynamoDB) on $AWS_ENDPOINT_URL, also the witness"
  # A TCP connect to a closed port: "refused" is the peer's kernel answering, so the path works (no ping needed).
  ip netns exec "$ID-$standby" "$py" -c '
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=2).close()
except ConnectionRefusedError:
    pass
except OSError as e:
    sys.exit(f"{e}")
' "$(awk -v n="$active" '$1 == n {print $2}' "$DIR/nodes.txt")" \
    && note "$standby reaches $active's private IP over the bridge" || die "$standby cannot reach $active"

  step "runtime: node configs as rendered by tandem_cluster, adapted to this machine"
  # One app cgroup per node, under a cgroup2 mount of the demo's own (see CG_MOUNT); listed before they exist, so
  # that nodes_down removes whatever of them was made.
  cg_mount
  echo "$CG_MOUNT/$ID" >> "$DIR/cgroups"
  mkdir -p "$CG_MOUNT/$ID"
  for name in "${names[@]}"; do
    echo "$CG_MOUNT/$ID/$name" >> "$DIR/cgroups"
    mkdir -p "$CG_MOUNT/$ID/$name"
  done
  # The secrets tandem_cluster generated (user_data writes them to /etc/tandem/secrets/ on a real node).
  terraform -chdir="$tf" show -json | "$py" -c '
import json, os, sys
def find(module):
    for r in module.get("resources", []):
        if r["type"] == "tandem_cluster":
            return r["values"]
    for child in module.get("child_modules", []):
        found = find(child)
        if found:
            return found
v = find(json.load(sys.stdin)["values"]["root_module"])
for node in sys.argv[2:]:
    d = os.path.join(sys.argv[1], node, "secrets")
    os.makedirs(d, mode=0o700, exist_ok=True)
    for file, value in [("heartbeat.key", v["heartbeat_key"]), ("ca.crt", v["ca_cert_pem"]),
                        ("node.crt", v["node_cert_pem"][node]), ("node.key", v["node_key_pem"][node])]:
        fd = os.open(os.path.join(d, file), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, value.encode())
        os.close(fd)' "$DIR" "${names[@]}"
  local mode=full timing=rendered
  [ -n "${FAST:-}" ] && timing=fast
  [ "${DEMO_MODE:-}" = exec-only ] && mode=exec-only
  render_configs() {
    for name in "${names[@]}"; do
      mkdir -p "$DIR/$name"
      terraform -chdir="$tf" output -json node_config |
        "$py" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$name" > "$DIR/$name/rendered.hcl"
      "$py" "$DIR/rewrite.py" "$DIR/$name/rendered.hcl" "$DIR/$name/cluster.hcl" "$DIR/$name/secrets" \
        "$HOST_ADDR:$port" "$CG_MOUNT/$ID/$name" "$1" "$timing" > "$DIR/removed"
      "$bin/tandemctl" config check "$DIR/$name/cluster.hcl" --node "$name" >/dev/null
    done
  }
  render_configs "$mode"
  note "secrets: the cluster's heartbeat key, CA and node certificates from the Terraform state, written to"
  note "         $DIR/<node>/secrets/ instead of /etc/tandem/secrets/ (what user_data does on EC2)"
  note "np_resolution witness ec2.<region>.amazonaws.com:443 -> tcp $HOST_ADDR:$port (moto)"
  note "removed (nothing here can run them): $(cat "$DIR/removed")"
  [ "$mode" = exec-only ] && note "DEMO_MODE=exec-only: aws_vip removed too; the VIP routes will not move"
  note "exec \"app\": systemctl start/stop/is-active tandem-app -> a \`sleep\` (setsid: outside tandemd's tree) in"
  note "         the node's cgroup, stopped with cgroup.kill, probed with cgroup.events"
  note "         cgroup system.slice/tandem-app.service -> $CG_MOUNT/$ID/<node>"
  note "         (cgroup2 mounted outside /sys: \`ip netns exec\` hides /sys/fs/cgroup)"
  note "fencer: \`tandemd fencer --socket $DIR/<node>/fencer.sock\` per node"
  note "         (tandem-fencer.service on EC2), started before tandemd, which gets --fencer; it kills the node's"
  note "         app cgroup when the node's right to run the group ends while tandemd is dead"
  if [ "$timing" = fast ]; then
    note "FAST set: heartbeat 100ms/500ms, lease ttl 1s renewed every 200ms (docs/operations.md, \"Timing\")"
    note "kept as rendered: nodes, interconnect, lease table, aws_vip, group order"
  else
    note "kept as rendered: nodes, heartbeat 1s/5s, interconnect, lease table and ttl, aws_vip, group order"
  fi
  diff -u "$DIR/$active/rendered.hcl" "$DIR/$active/cluster.hcl" | grep '^[-+] ' | sed 's/^/   /' || true
  group="$(sed -n 's/^group "\([^"]*\)".*/\1/p' "$DIR/$active/cluster.hcl" | head -1)"

  # The mirror disk: a sparse 64 MiB file per node stands for the EBS data partition.
  local mdisk
  mdisk="$(sed -n 's/^[[:space:]]*resource "mirror_disk" "\([^"]*\)".*/\1/p' "$DIR/$active/cluster.hcl" | head -1)"
  if [ -n "$mdisk" ]; then
    for name in "${names[@]}"; do rm -f "$DIR/$name/$mdisk-"*.img; truncate -s 64M "$DIR/$name/$mdisk-data.img"; done
    note "mirror_disk \"$mdisk\": data device $DIR/<node>/$mdisk-data.img (64 MiB file), no mount point (no kernel NBD"
    note "         here): the active node serves it as an NBD export on its Unix socket"
  fi

  export AWS_EC2_METADATA_DISABLED=true TANDEM_LOG="${TANDEM_LOG:-info}"
  step "runtime: start tandemd on $active and $standby"
  for name in "${names[@]}"; do start_fencer "$name"; done
  note "fencer pids: $active $(cat "$DIR/$active/fencer.pid"), $standby $(cat "$DIR/$standby/fencer.pid")"
  for name in "${names[@]}"; do start_node "$name"; done
  if ! wait_sockets "${names[@]}"; then
    if grep -q 'TDM-RES-001.*aws_vip' "$DIR"/*/tandemd.log; then
      note "this tandemd build cannot run aws_vip (TDM-RES-001): rebuild it, or run DEMO_MODE=exec-only"
    fi
    fail "tandemd exited at start"
  fi
  note "tandemd pids: $active $(cat "$DIR/$active/pid"), $standby $(cat "$DIR/$standby/pid")"
  note "both wait one heartbeat timeout for their peers; then the first server that is ready takes the lease"
  local t0 n found=""
  t0="$(now_ms)"
  while [ -z "$found" ]; do
    for n in "${names[@]}"; do
      [ "$(role "$n" "$group")" = active ] && found="$n"
      kill -0 "$(cat "$DIR/$n/pid")" 2>/dev/null || fail "tandemd on $n exited"
    done
    [ $(($(now_ms) - t0)) -lt 30000 ] || fail "group $group did not become active on any node in 30 s"
    [ -n "$found" ] || sleep 0.05
  done
  if [ "$found" != "$active" ]; then
    note "$found was ready a moment before $active and took the free lease (failback = \"manual\": it stays)"
    standby="$active"; active="$found"
  fi
  note "group $group active on $active $(($(now_ms) - t0)) ms after start"
  wait_role "$standby" "$group" standby 10000 || fail "$standby is not standby for $group"
  # ... and until the active node has heard so (the role travels in the heartbeats).
  local seen_at=$(($(now_ms) + 5000))
  until status_json "$active" | "$py" -c '
import json, sys
g = next(g for g in json.load(sys.stdin)["groups"] if g["name"] == sys.argv[1])
sys.exit(0 if all(p.get("state") == "standby" for p in g.get("peers", [])) else 1)' "$group" 2>/dev/null; do
    [ "$(now_ms)" -lt "$seen_at" ] || break
    sleep 0.1
  done

  step "tandemctl status on $active"
  "$bin/tandemctl" --socket "$DIR/$active/tandemd.sock" status | sed 's/^/   /'
  local other_app
  other_app="$(app_pids "$standby")"
  note "app on $active: pid $(app_pids "$active") in $CG_MOUNT/$ID/$active; on $standby: ${other_app:-none}"
  if [ -n "$mdisk" ]; then
    step "mirror disk $mdisk: the fresh pair's initial full sync, $active -> $standby"
    local synced_at=$(($(now_ms) + 60000))
    until mirror_json "$active" "$mdisk" | "$py" -c '
import json, sys
d = json.load(sys.stdin)["disks"][0]
sys.exit(0 if d["link"] == "connected" and d["dirty_bytes"] == 0 and not d["resyncing"] else 1)' 2>/dev/null; do
      [ "$(now_ms)" -lt "$synced_at" ] || fail "mirror disk $mdisk did not sync in 60 s"
      sleep 0.2
    done
    "$bin/tandemctl" --socket "$DIR/$active/tandemd.sock" mirror status | sed 's/^/   /'
    if command -v qemu-io >/dev/null; then
      qemu-io -f raw "nbd+unix:///$mdisk?socket=$DIR/$active/state/$group/$mdisk.nbd" -c "write -P 90 0 8M" \
        | sed 's/^/   qemu-io: /' || fail "qemu-io could not write through $active's export"
      note "8 MiB of byte 90 written through $active's NBD export: each write acknowledged once on both disks"
    fi
  fi
  if [ "$mode" = full ]; then
    step "AWS: the VIP route of every route table of $vpc"
    "$py" "$DIR/aws.py" routes "$vip" "$vpc" "$enis_json" "$active" || fail "VIP routes are not on $active's ENI"
    note "$active eth0: $(ip -n "$ID-$active" -br -4 addr show dev eth0 | awk '{for (i = 3; i <= NF; i++) printf "%s ", $i}')(VIP bound)"
  fi

  step "SIGKILL tandemd on $active (no clean stop: a crash)"
  local killed_at took app_pid
  app_pid="$(app_pids "$active")"
  killed_at="$(now_ms)"
  # tandemd alone (a crash, an OOM kill): its fencer and the app it started live on, as on a real node.
  kill -KILL "$(cat "$DIR/$active/pid")"
  note "killed pid $(cat "$DIR/$active/pid") at $(date -u +%T.%3N);" \
    "$active's fencer (pid $(cat "$DIR/$active/fencer.pid")) and app (pid $app_pid) live on"
  local limit="${FAILOVER_LIMIT:-15}"
  if ! wait_role "$standby" "$group" active "$((limit * 1000))"; then
    fail "FAILED: $standby did not take over group $group within $limit s of the kill"
  fi
  took=$(($(now_ms) - killed_at))
  note "$standby active $took ms after the kill (measured here: kill -> role active in tandemctl status)"
  local app_left fenced
  app_left="$(app_pids "$active")"
  [ -z "$app_left" ] || fail "FAILED: $active's app (pid $app_left) still runs while $standby is active"
  fenced="$(grep -m1 'deadline passed' "$DIR/$active/fencer.log" || true)"
  note "$active's app is gone: ${fenced:-no \"deadline passed\" line in $DIR/$active/fencer.log}"

  step "tandemctl status on $standby"
  "$bin/tandemctl" --socket "$DIR/$standby/tandemd.sock" status | sed 's/^/   /'
  local last
  last="$(status_json "$standby" | "$py" -c '
import json, sys
g = next(g for g in json.load(sys.stdin)["groups"] if g["name"] == sys.argv[1])
print(g.get("failovers", "?"), g.get("last_takeover_ms", "?"))' "$group")"
  note "tandemd on $standby: failovers ${last% *}, last took ${last#* } ms (from the holder's loss to running)"
  note "this demo: $took ms from SIGKILL to active (heartbeat timeout + witness check + lease expiry + start)"

  if [ -n "$mdisk" ]; then
    step "mirror disk $mdisk on $standby, after the failover"
    if command -v qemu-io >/dev/null; then
      local out
      out="$(qemu-io -f raw "nbd+unix:///$mdisk?socket=$DIR/$standby/state/$group/$mdisk.nbd" -c "read -P 90 0 8M" 2>&1)" \
        || fail "FAILED: $standby does not serve its export: $out"
      echo "$out" | sed 's/^/   qemu-io: /'
      case "$out" in *"verification failed"*|*"read failed"*) fail "FAILED: $standby lost bytes written on $active" ;; esac
      note "read back through $standby's export: the 8 MiB written on $active before the crash, byte for byte"
    fi
    "$bin/tandemctl" --socket "$DIR/$standby/tandemd.sock" mirror status | sed 's/^/   /'
    note "degraded: $active is gone; its replica is marked Outdated in the lease before the first write here,"
    note "and resyncs from the bitmap when it returns"
  fi

  step "tandemctl events on $standby"
  "$bin/tandemctl" --socket "$DIR/$standby/tandemd.sock" events --limit 8 | sed 's/^/   /'

  step "AWS: the VIP route of every route table of $vpc, after the failover"
  if [ "$mode" = full ]; then
    "$py" "$DIR/aws.py" routes "$vip" "$vpc" "$enis_json" "$standby" ||
      fail "FAILED: the VIP routes are not on $standby's ENI after the failover"
    note "all VIP routes moved to $standby's ENI ($(echo "$enis_json" | "$py" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$standby"))"
    note "$standby eth0: $(ip -n "$ID-$standby" -br -4 addr show dev eth0 | awk '{for (i = 3; i <= NF; i++) printf "%s ", $i}')(VIP bound)"
    note "($active was killed, not stopped, so its namespace still holds the VIP; clients follow the routes)"
  else
    "$py" "$DIR/aws.py" routes "$vip" "$vpc" "$enis_json"
    note "DEMO_MODE=exec-only: no aws_vip resource ran, the routes stay where they were"
  fi

  step "runtime: clean up (stop $standby, remove the node namespaces)"
  "$bin/tandemctl" --socket "$DIR/$standby/tandemd.sock" cluster stop >/dev/null 2>&1 &
  local stopper=$! pid
  pid="$(cat "$DIR/$standby/pid")"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && note "tandemd on $standby did not stop in 10 s: killed" || note "tandemd on $standby stopped cleanly"
  wait "$stopper" 2>/dev/null || true
  nodes_down "$DIR"
  trap - EXIT
  note "node namespaces, fencers and app cgroups removed"
}

case "${1:-}" in
  net-up) [ $# = 2 ] || die "usage: $0 net-up DIR"; net_up "$2" ;;
  run) [ $# = 3 ] || die "usage: $0 run DIR TFDIR"; run "$2" "$3" ;;
  down) [ $# = 2 ] || die "usage: $0 down DIR"; net_down "$2" ;;
  *) die "usage: $0 net-up DIR | run DIR TFDIR | down DIR" ;;
esac
