#!/usr/bin/env bash
# Builds and runs the Darknet load_weights reproduction against Debian's libdarknet.
# Exit 1 with "FINDING REPRODUCED" while a truncated .weights still loads silently; 0 once not.
# Also shows that Darknet exits with status 0 when it cannot open a weights file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/net.cfg" <<'CFG'
[net]
batch=1
width=4
height=4
channels=1

[convolutional]
filters=2
size=3
stride=1
pad=1
activation=relu

[connected]
output=8
activation=linear
CFG
gcc -O1 -o "$tmp/repro" "$here/darknet_load_weights_unchecked.c" -I/usr/lib/darknet/include \
  -L/usr/lib/darknet -ldarknet -Wl,-rpath,/usr/lib/darknet -lm
set +e
"$tmp/repro" "$tmp/net.cfg" "$tmp/does-not-exist/net.weights" >"$tmp/missing.log" 2>&1
missing=$?
"$tmp/repro" "$tmp/net.cfg" "$tmp/net.weights" 2>/dev/null
status=$?
set -e
echo "saving to a path that cannot be opened: exit status $missing ($(grep -o "Couldn't open file.*" "$tmp/missing.log" | head -1))"
exit $status
