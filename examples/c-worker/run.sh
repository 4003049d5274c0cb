#!/usr/bin/env bash
# Example 4: a worker written in C using only privsep_protocol.h.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
swift build -c release --product privsep >/dev/null
bin=$(swift build -c release --show-bin-path)
worker=$(mktemp)
trap 'rm -f "$worker"' EXIT
cc -O2 -Wall -I "$root/Sources/CPrivsepProtocol/include" "$here/worker.c" -lseccomp -o "$worker"
"$bin/privsep" run --policy "$here/policy.json" -- "$worker" /etc/hostname /etc/passwd
