#!/usr/bin/env bash
# Example 1, end to end: an untrusted-input parser in a sandbox.
# Builds privsep and the parser, then runs the parser on a good file and on two
# malicious ones, and asks for a file outside the policy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! pkg-config --exists libseccomp 2>/dev/null; then
    echo "== installing libseccomp-dev"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y libseccomp-dev pkg-config || { apt-get update && apt-get install -y libseccomp-dev pkg-config; }
fi

cd "$root"
echo "== building (release)"
swift build -c release --product privsep
swift build -c release --product csv-parser
bin=$(swift build -c release --show-bin-path)

policy=$(mktemp --suffix=.json)
audit=$(mktemp --suffix=.jsonl)
trap 'rm -f "$policy" "$audit"' EXIT
sed "s|@DATA@|$here/data|g" "$here/policy.json" > "$policy"

step() { echo; echo "== $1"; echo "\$ privsep run --policy policy.json -- csv-parser ${*:2}"; }
run() { "$bin/privsep" run --policy "$policy" --audit-log "$audit" -- "$bin/csv-parser" "$@" && echo "(exit status 0)" || echo "(exit status $?)"; }

echo
echo "== the policy"
"$bin/privsep" check "$policy"

step "1. a valid CSV file: parsed, inside the sandbox" data/sales.csv
run "$here/data/sales.csv"

step "2. a CSV that makes the parser open /etc/shadow itself: stopped at the syscall" data/malicious-include.csv
run "$here/data/malicious-include.csv"

step "3. a CSV that makes the parser exec a shell: stopped at the syscall" data/malicious-exec.csv
run "$here/data/malicious-exec.csv"

step "4. asking the supervisor for a file outside the policy: refused" /etc/passwd
run /etc/passwd

echo
echo "== the audit log (every decision of the supervisor)"
cat "$audit"
