#!/usr/bin/env bash
# Set up this checkout, then run every test layer:
#   1. lint and types (ruff, mypy),
#   2. unit + integration tests on this host (real namespaces and cgroups; v1 or v2, as the host is),
#   3. the cgroup v2 tests inside the ../shared/vm rig (pure v2 VM), unless the host is pure v2,
#   4. the systemd end-to-end test (install, systemctl start/reload/restart/stop, watchdog,
#      uninstall) inside the rig's systemd VM.
# Every layer runs even when an earlier one failed, so one run says everything it can; the end
# prints one line per layer (passed/failed/skipped and duration), and the exit status is 1 if
# any layer failed. Each layer's full output is also kept in build/test-logs/LAYER.log.
# Set SANDBOXD_SKIP_VM=1 to skip 3 and 4 where the rig is unavailable.
# Extra arguments go to the host pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --no-next || exit 1
# The checkout's bytecode, written once before any layer (see scripts/bytecode.sh: every
# daemon and sandboxctl the tests start would compile it again otherwise).
./scripts/bytecode.sh

logs=build/test-logs
mkdir -p "$logs"
summary=()
failed=()
skipped=()
started=$SECONDS

# The counts from pytest's last summary line ("713 passed, 2 failed, 32 skipped in 840.1s").
counts() {
    local line
    line=$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed)' "$1" |
        grep -E ' in [0-9.]+s' | tail -n 1)
    grep -oE '[0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed)' <<<"$line" | paste -sd, - |
        sed 's/,/, /g'
}

# layer NAME CMD...: run CMD with its output on the terminal and in build/test-logs/NAME.log.
layer() {
    local name=$1 log=$logs/$1.log start=$SECONDS rc verdict detail
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    detail=$(counts "$log")
    if grep -q '^test-[a-z0-9]*: SKIPPED' "$log"; then
        verdict=skipped
        skipped+=("$name")
        detail=$(grep -m1 '^test-[a-z0-9]*: SKIPPED' "$log" | sed 's/^[^:]*: SKIPPED: //')
    elif ((rc == 0)); then
        verdict=ok
    else
        verdict="FAILED (exit $rc)"
        failed+=("$name")
    fi
    summary+=("$(printf '%-10s %-17s %6ss  %s' "$name" "$verdict" $((SECONDS - start)) "$detail")")
}

lint() {
    local rc=0
    .venv/bin/ruff check . || rc=1
    .venv/bin/ruff format --check . || rc=1
    .venv/bin/mypy || rc=1
    return $rc
}

layer lint lint
# pytest exits 5 when it collected nothing: that fails here too, never passes silently.
# --durations: every layer's log ends with its slowest tests, so a CI run shows where its
# minutes went (the VM layers pass their own).
layer host .venv/bin/pytest -p no:cacheprovider --durations=30 "$@"
layer v2-vm ./scripts/test-v2.sh
layer systemd-vm ./scripts/test-systemd.sh

echo
echo "== summary (full output in $logs/)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} ($((SECONDS - started)) s in all)"
    exit 1
fi
if ((${#skipped[@]})); then
    echo "passed, but skipped: ${skipped[*]} ($((SECONDS - started)) s in all)"
else
    echo "all layers passed ($((SECONDS - started)) s in all)"
fi
