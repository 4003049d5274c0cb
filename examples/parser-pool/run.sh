#!/usr/bin/env bash
# Example 6, end to end: a pool of sandboxed parsers over 10,000 untrusted files.
# Generates valid, malformed and malicious inputs, then parses them all with
# `privsep pool`: four warm, locked-down workers, each replaced after 100 jobs
# and after every failure. Prints throughput and failures by reason.
#   bash examples/parser-pool/run.sh [COUNT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
count=${1:-10000}

if ! pkg-config --exists libseccomp 2>/dev/null; then
    echo "== installing libseccomp-dev"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y libseccomp-dev pkg-config || { apt-get update && apt-get install -y libseccomp-dev pkg-config; }
fi

cd "$root"
echo "== building (release)"
swift build -c release --product privsep
swift build -c release --product record-parser
bin=$(swift build -c release --show-bin-path)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/in"

echo
echo "== generating $count inputs: 90% valid, 9% malformed, 1% malicious"
# The malicious kinds, each aimed at one of the parser's (deliberate) bugs.
printf '!include /etc/shadow\n' > "$work/include.rec"             # reads a file itself
{ printf 'x = '; printf '{a=%.0s' $(seq 300000); printf '\n'; } > "$work/deep.rec"   # unbounded recursion
printf '!reserve 1000000000\n' > "$work/bomb.rec"                 # trusts a count
printf '[s]\nkey = value \\' > "$work/loop.rec"                    # continuation at the end
malicious=(include deep bomb loop)
malformed=('key value' '[unterminated' 'x = {a = 1' '!frobnicate 3')
for ((i = 0; i < count; i++)); do
    kind=$((i % 100))
    if ((kind < 90)); then
        printf '# input %d\n[server]\nname = host%d\nport = %d\nlimits = {cpu = 2, memory = {soft = 1, hard = %d}}\n[client]\nretries = %d\n' \
            "$i" "$i" $((i % 65535)) $((i % 7)) $((i % 5)) > "$work/in/$i.rec"
    elif ((kind < 99)); then
        printf '[ok]\na = 1\n%s\n' "${malformed[$((i % 4))]}" > "$work/in/$i.rec"
    else
        name=${malicious[$(((i / 100) % 4))]}
        cp "$work/$name.rec" "$work/in/$i-$name.rec"
    fi
done

# Warm workers, 100 jobs each, for throughput: a worker that an input takes over without
# crashing it sees the next inputs that worker gets. --jobs-per-worker 1 gives every input a
# fresh process (a few hundred a second on a small machine; SECURITY.md, "Known limits").
pool() { "$bin/privsep" pool --policy "$here/policy.json" --workers 4 --jobs-per-worker 100 --timeout 0.5 --memory 64M "$@" -- "$bin/record-parser"; }

echo
echo "== one input of each kind (path, outcome, output or reason)"
pool --input "$work/in/0.rec" --input "$work/in/90.rec" --input "$work/in/91.rec" \
     --input "$work/include.rec" --input "$work/deep.rec" --input "$work/bomb.rec" --input "$work/loop.rec" || true

echo
echo "== all $count inputs"
echo "\$ find in -type f | privsep pool --policy policy.json --workers 4 --jobs-per-worker 100 --timeout 0.5 --memory 64M --quiet -- record-parser"
status=0
find "$work/in" -type f | pool --quiet || status=$?
echo "(exit status $status: 1 means some jobs failed, as some inputs are meant to)"
