#!/bin/bash
# The code one brokered open runs, C beside privsep, in steady state: user instructions,
# and the pages and cache lines of code they come from (a request that finds them cold,
# as when many workers take turns on a CPU, pays for each). Deterministic, unlike a timing.
#   worker side   valgrind's lackey traces the bench's "footprint-worker" child, which
#                 marks one request of each kind (also pages and lines of data)
#   serving side  gdb single-steps the serving thread from one request's open to the next:
#                 the C broker on privsep's loop (checked_open_request), then privsep's
#                 (ActivePolicy.open). Valgrind cannot run a supervisor (no pidfd_open).
# Needs valgrind, gdb and python3, and a built bench (BENCHMARKS.md):
#   swift build -c release --static-swift-stdlib --product privsep-bench
#   bash Benchmarks/footprint/footprint.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench="$root/.build/release/privsep-bench"
work=$(mktemp -d)
trap 'pkill -f "privsep-bench --serve-for-tracing" 2>/dev/null || true; rm -rf "$work"' EXIT
for tool in valgrind gdb python3; do
    command -v "$tool" >/dev/null || { echo "footprint: $tool is needed (apt-get install -y valgrind gdb)" >&2; exit 1; }
done

echo "| one brokered open | user instructions | pages of code | lines of code | pages of data | lines of data |"
echo "|---|---:|---:|---:|---:|---:|"
# Valgrind's DWARF reader cannot read this toolchain's debug info: it gets a copy without.
objcopy --strip-debug "$bench" "$work/bench"
valgrind --tool=lackey --trace-mem=yes --log-file="$work/lackey" "$work/bench" --child footprint-worker 2>"$work/stderr"
python3 "$here/footprint.py" lackey "$work/lackey" "$(awk '/^MARKER/ {print $2}' "$work/stderr")"

for side in c swift; do
    case $side in
        c) symbol='checked_open_request$'; label='serving side: C broker on privsep'"'"'s loop (epoll), one client' ;;
        swift) symbol='ActivePolicyC4open4path5flags9requesterAA12OpenDecisionOSRys5UInt8VG_s5Int32VAC9RequesterVtF$'; label='serving side: privsep (policy, openat2, fstat, reply)' ;;
    esac
    "$bench" --serve-for-tracing $side >/dev/null 2>&1 &
    pid=$!
    sleep 1
    base=$(awk '/privsep-bench/ { split($1, range, "-"); print range[1]; exit }' "/proc/$pid/maps")
    offset=$(nm "$bench" | grep -E " [tT] .*$symbol" | awk '{print $1}' | head -1)
    FOOTPRINT_BREAK=$(printf '%x' $((0x$base + 0x$offset))) FOOTPRINT_OUT="$work/steps-$side" \
        timeout 600 gdb -p "$pid" -batch -x "$here/step_one_request.py" >"$work/gdb-$side" 2>&1 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 "$here/footprint.py" steps "$work/steps-$side" "$label"
done
