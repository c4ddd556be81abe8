#!/bin/sh
# Builds and runs bn_float_variance.cpp against the installed dlib (libdlib-dev).
set -e
dir=$(mktemp -d)
c++ -std=c++17 -O2 "$(dirname "$0")/bn_float_variance.cpp" -o "$dir/bn" $(pkg-config --cflags --libs dlib-1)
"$dir/bn"
rm -rf "$dir"
