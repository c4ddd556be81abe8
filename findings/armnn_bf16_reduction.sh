#!/usr/bin/env bash
# Builds and runs the Arm NN bf16-reduction reproduction against Debian's Arm NN 20.08.
# Exit 1 with "FINDING REPRODUCED" while Optimize() aborts with bf16 reduction on; 0 once it works.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++17 -O1 -o "$tmp/repro" "$here/armnn_bf16_reduction.cpp" -larmnn
"$tmp/repro" >/dev/null  # fp32: must work, or the reproduction itself is broken
set +e
BF16=1 "$tmp/repro" >/dev/null 2>"$tmp/err"
rc=$?
set -e
if ((rc >= 128)); then
  echo "FINDING REPRODUCED: Optimize() with ReduceFp32ToBf16 killed the process (exit $rc):"
  tail -n 2 "$tmp/err"
  exit 1
fi
echo "not reproduced: bf16 reduction returned normally (exit $rc)"
