#!/usr/bin/env bash
# Example 2: a file broker. The reader may read public/ and notes.txt, nothing
# else; `..` and symlink tricks are refused, and the audit log shows each decision.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
swift build -c release --product privsep >/dev/null
swift build -c release --product reader >/dev/null
bin=$(swift build -c release --show-bin-path)

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/public/sub" "$tree/private"
echo "hello from public" > "$tree/public/hello.txt"
echo "nested" > "$tree/public/sub/deep.txt"
echo "notes: allowed as an exact file" > "$tree/notes.txt"
echo "the secret" > "$tree/private/secret.txt"
ln -s ../private/secret.txt "$tree/public/shortcut"      # a symlink out of the grant
ln -s /etc/shadow "$tree/public/shadow"                  # an absolute one
sed "s|@ROOT@|$tree|g" "$here/policy.json" > "$tree/policy.json"

"$bin/privsep" run --policy "$tree/policy.json" --audit-log "$tree/audit.jsonl" -- "$bin/reader" \
    "$tree/public/hello.txt" "$tree/public/sub/deep.txt" "$tree/notes.txt" \
    "$tree/private/secret.txt" "$tree/public/../private/secret.txt" "$tree/public/shortcut" \
    "$tree/public/shadow" "$tree/public/missing.txt" "$tree/private/missing.txt" /etc/passwd
echo
echo "== audit log"
cat "$tree/audit.jsonl"
