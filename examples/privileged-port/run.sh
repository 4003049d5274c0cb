#!/usr/bin/env bash
# Example 3: a worker serves HTTP on port 80 of loopback. The supervisor binds the
# socket under the policy; the worker, locked down, only accepts on it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
swift build -c release --product privsep >/dev/null
swift build -c release --product hello-server >/dev/null
bin=$(swift build -c release --show-bin-path)

"$bin/privsep" run --policy "$here/policy.json" -- "$bin/hello-server" 80 &
server=$!
for _ in $(seq 50); do
    if { exec 3<>/dev/tcp/127.0.0.1/80; } 2>/dev/null; then break; fi
    sleep 0.1
done
printf 'GET / HTTP/1.0\r\n\r\n' >&3
cat <&3
exec 3<&-
wait "$server"
