#!/usr/bin/env bash
# Model check of the lease + vouch protocol (docs/model/lease.pml) with spin.
# Exits non-zero when the correct model has an error, when a broken variant is NOT caught, when a non-vacuity
# probe is NOT reached, or when a search was incomplete (depth limit). Needs: spin, gcc (apt-get install spin gcc).
# Usage: docs/model/check.sh [--full]   (--full also checks every timer value, FULL_RANGES: slower)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v spin >/dev/null || { echo "check.sh: spin is not installed (apt-get install -y spin)" >&2; exit 2; }
command -v gcc >/dev/null || { echo "check.sh: gcc is not installed" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0

# run NAME EXPECT(pass|fail) [spin -D options...]
run() {
    local name="$1" expect="$2"
    shift 2
    local dir="$work/$name"
    mkdir -p "$dir"
    cp "$here/lease.pml" "$dir/"
    (
        cd "$dir"
        spin "$@" -a lease.pml >spin.log 2>&1 || { cat spin.log; exit 3; }
        gcc -O2 -w -o pan pan.c
        ./pan -m1000000 >pan.log 2>&1 || true
    ) || { echo "FAIL  $name: spin/gcc failed"; status=1; return; }
    local log="$dir/pan.log" errors states secs
    errors="$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" | head -n1)"
    states="$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$log" | head -n1)"
    secs="$(sed -n 's/^pan: elapsed time \([0-9.e+]*\) seconds.*/\1/p' "$log" | head -n1)"
    if [[ -z "$errors" ]]; then
        echo "FAIL  $name: no verdict from pan"; cat "$log"; status=1; return
    fi
    if [[ "$expect" == pass ]]; then
        if [[ "$errors" != 0 ]]; then
            echo "FAIL  $name: spin found a violation (states $states)"; grep -E "violated|error" "$log" || true
            (cd "$dir" && spin "$@" -t -p -g lease.pml | tail -n 60) || true
            status=1
        elif grep -q "max search depth too small" "$log"; then
            echo "FAIL  $name: search incomplete (max search depth too small)"; status=1
        else
            echo "ok    $name: no violation, $states states, ${secs}s"
        fi
    else
        if [[ "$errors" == 0 ]]; then
            echo "FAIL  $name: expected a counterexample, none found ($states states)"; status=1
        else
            echo "ok    $name: counterexample found as expected ($(grep -m1 -o 'assertion violated.*' "$log"))"
        fi
    fi
}

run correct pass
run broken-1-holder-without-margin fail -DBROKEN=1
run broken-2-contender-ignores-vouch fail -DBROKEN=2
run broken-3-vouch-without-margin fail -DBROKEN=3
run broken-4-vouch-counted-from-arrival fail -DBROKEN=4
run probe-1-takeover-happens fail -DPROBE=1
run probe-2-running-on-vouch-alone fail -DPROBE=2
if [[ "${1:-}" == --full ]]; then
    run correct-full-ranges pass -DFULL_RANGES
fi
exit "$status"
