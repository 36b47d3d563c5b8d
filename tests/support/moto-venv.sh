#!/usr/bin/env bash
# Creates (once) the Python venv with the pinned moto server, and prints the path of its moto_server.
# Safe to call concurrently: a lock serialises the first install.
set -euo pipefail
MOTO_SPEC='moto[server,ec2,iam,route53,dynamodb,sts]==5.2.5'
venv="${TANDEM_MOTO_VENV:-/var/tmp/tandem/moto-venv}"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$venv/.spec" 2>/dev/null)" != "$MOTO_SPEC" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC" >&2
  echo "$MOTO_SPEC" > "$venv/.spec"
fi
echo "$venv/bin/moto_server"
