#!/usr/bin/env bash
# Builds and runs the dlib training-mode BatchNorm reproduction against Debian's dlib 19.24.
# Exit 1 with "FINDING REPRODUCED" while dlib's batch variance cancels to a negative number.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
c++ -std=c++17 -O2 "$here/dlib_bn_float_variance.cpp" -o "$tmp/bn" $(pkg-config --cflags --libs dlib-1)
set +e
"$tmp/bn"
rc=$?
set -e
exit $rc
