#!/usr/bin/env bash
# Model check of the lease + vouch + fencer protocol, with faults of tandemd itself (docs/model/lease.pml).
# Exits non-zero when the correct model has an error, when a broken variant is NOT caught by the safety
# assertion, when a non-vacuity probe is NOT reached (or trips the safety assertion instead of its own), or when
# a search was incomplete (depth limit). Needs: spin, gcc (apt-get install spin gcc).
# Usage: docs/model/check.sh [--full]
#   --full also checks three tandemd faults (MAXF=3): one more search of ~2 min and ~3.3 GB.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v spin >/dev/null || { echo "check.sh: spin is not installed (apt-get install -y spin)" >&2; exit 2; }
command -v gcc >/dev/null || { echo "check.sh: gcc is not installed" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The safety assertion (SAFE in lease.pml) is the only one whose text names both applications.
safe_text='app\[0\]&&app\[1\]'
jobs_max="${CHECK_JOBS:-$(nproc 2>/dev/null || echo 1)}"
names=()

# check NAME EXPECT(pass|caught|reached) HASHBITS [spin -D options...]: runs one search, writes its verdict line
# to $work/NAME/verdict and 0/1 to $work/NAME/status.
#   pass: no violation and a complete search; caught: two applications run at once (a broken variant; the search
#   checks the applications alone, -DAPPS_ONLY); reached: a probe's own assertion is violated (non-vacuity).
check() {
    local name="$1" expect="$2" hashbits="$3"
    shift 3
    local dir="$work/$name"
    # a broken variant must lead to two running applications: check that part of the property alone
    [[ "$expect" != caught ]] || set -- -DAPPS_ONLY "$@"
    verdict() { echo "$2" >"$dir/verdict"; echo "$1" >"$dir/status"; }
    (
        cd "$dir"
        spin "$@" -a lease.pml >spin.log 2>&1 || { cat spin.log; exit 3; }
        gcc -O2 -w -DSAFETY -o pan pan.c
        ./pan -m1000000 -w"$hashbits" >pan.log 2>&1 || true
    ) >"$dir/build.log" 2>&1 || { verdict 1 "FAIL  $name: spin/gcc failed: $(tail -n 5 "$dir/build.log")"; return; }
    local log="$dir/pan.log" errors states secs violated
    errors="$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" | head -n1)"
    states="$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$log" | head -n1)"
    secs="$(sed -n 's/^pan: elapsed time \([0-9.e+]*\) seconds.*/\1/p' "$log" | head -n1)"
    violated="$(grep -m1 -o 'assertion violated.*' "$log" || true)"
    if [[ -z "$errors" ]]; then
        verdict 1 "FAIL  $name: no verdict from pan: $(tail -n 20 "$log")"; return
    fi
    case "$expect" in
    pass)
        if [[ "$errors" != 0 ]]; then
            verdict 1 "FAIL  $name: spin found a violation (states $states): $violated
$(cd "$dir" && spin "$@" -t -p -g lease.pml 2>&1 | tail -n 60)"
        elif grep -q "max search depth too small" "$log"; then
            verdict 1 "FAIL  $name: search incomplete (max search depth too small)"
        else
            verdict 0 "ok    $name: no violation, $states states, ${secs}s"
        fi
        ;;
    caught)
        if [[ "$errors" == 0 ]]; then
            verdict 1 "FAIL  $name: expected a counterexample, none found ($states states)"
        elif ! grep -q "$safe_text" <<<"$violated"; then
            verdict 1 "FAIL  $name: a violation, but not of the safety property: $violated"
        else
            verdict 0 "ok    $name: counterexample found as expected ($states states, ${secs}s)"
        fi
        ;;
    reached)
        if [[ "$errors" == 0 ]]; then
            verdict 1 "FAIL  $name: probe NOT reached: the model never does it ($states states)"
        elif grep -q "$safe_text" <<<"$violated"; then
            verdict 1 "FAIL  $name: the safety property failed before the probe: $violated"
        else
            verdict 0 "ok    $name: reached ($states states, ${secs}s)"
        fi
        ;;
    esac
}

# run NAME EXPECT HASHBITS [spin -D options...]: starts `check` in the background, at most $jobs_max at once.
run() {
    local dir="$work/$1"
    mkdir -p "$dir"
    cp "$here/lease.pml" "$dir/"
    names+=("$1")
    while (( $(jobs -rp | wc -l) >= jobs_max )); do
        wait -n || true
    done
    check "$@" &
}

# The longest searches first, so that the short ones fill in beside them.
if [[ "${1:-}" == --full ]]; then
    run correct-three-faults             pass    28 -DMAXF=3 -DFAULTS_BOTH
fi
# correct model: two tandemd faults on either node; one fault (every single-fault behaviour, by symmetry)
run correct-two-faults                   pass    27 -DMAXF=2 -DFAULTS_BOTH
run correct                              pass    25
# variants that stay safe (they document where safety does NOT come from)
run safe-1-adopt-without-fencer-check    pass    25 -DVARIANT=1
run safe-2-fencer-one-tick-late          pass    25 -DVARIANT=2
# broken variants: each must violate the safety property
run broken-1-holder-without-margin       caught  22 -DBROKEN=1
run broken-2-contender-ignores-vouch     caught  22 -DBROKEN=2
run broken-3-vouch-without-margin        caught  22 -DBROKEN=3
run broken-4-vouch-counted-from-arrival  caught  22 -DBROKEN=4
run broken-5-fencer-fires-late           caught  22 -DBROKEN=5
run broken-6-fencer-disarmed-on-crash    caught  22 -DBROKEN=6
run broken-7-restart-disarms-unstopped   caught  22 -DBROKEN=7
run broken-8-frozen-timers-no-recheck    caught  22 -DBROKEN=8
run broken-9-blind-readoption            caught  22 -DBROKEN=9
run broken-10-app-restart-without-arm    caught  22 -DBROKEN=10
run broken-11-resume-acts-before-check   caught  22 -DBROKEN=11
# non-vacuity probes: each must be reached
run probe-1-takeover-happens             reached 22 -DPROBE=1
run probe-2-running-on-vouch-alone       reached 22 -DPROBE=2
run probe-3-restart-readopts             reached 22 -DPROBE=3
run probe-4-fencer-kills-after-crash     reached 22 -DPROBE=4
run probe-5-failover-after-fencer-kill   reached 22 -DPROBE=5
run probe-6-resume-past-deadline         reached 22 -DPROBE=6
wait

status=0
for name in "${names[@]}"; do
    if [[ -f "$work/$name/verdict" ]]; then
        cat "$work/$name/verdict"
        [[ "$(cat "$work/$name/status")" == 0 ]] || status=1
    else
        echo "FAIL  $name: no verdict (the search did not finish)"; status=1
    fi
done
exit "$status"
