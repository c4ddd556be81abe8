#!/usr/bin/env bash
# Builds and runs the Darknet 1x1-stride reproduction against Debian's libdarknet.
# Exit 1 with "FINDING REPRODUCED" while the bug is there; 0 once Darknet honours the stride.
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
filters=1
size=1
stride=2
pad=0
activation=linear
CFG
gcc -O1 -o "$tmp/repro" "$here/darknet_conv1x1_stride.c" -I/usr/lib/darknet/include \
  -L/usr/lib/darknet -ldarknet -Wl,-rpath,/usr/lib/darknet -lm
"$tmp/repro" "$tmp/net.cfg" 2>/dev/null
