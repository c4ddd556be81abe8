#!/usr/bin/env bash
# Builds crossdl with its tests and runs them.
#   scripts/test.sh            the default suite (label "unit"; minutes on 2 cores)
#   scripts/test.sh --heavy    the heavy tests (label "heavy": full-data training, long studies)
#   scripts/test.sh --sanitize the core tests under AddressSanitizer + UBSan (no LibTorch)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-unit}
scripts/setup.sh --no-build --test-deps
case $mode in
  unit|--unit)
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j"$(nproc)"
    ctest --test-dir build -L unit --output-on-failure -j2 --timeout 600 ;;
  --heavy)
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j"$(nproc)"
    ctest --test-dir build -L heavy --output-on-failure --timeout 3600 ;;
  --sanitize)
    cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCROSSDL_SANITIZE=ON \
      -DCROSSDL_WITH_TORCH=OFF >/dev/null
    cmake --build build-asan -j"$(nproc)" --target crossdl_core_tests
    ctest --test-dir build-asan -R "^core\\." --output-on-failure -j2 --timeout 600 ;;
  *) echo "usage: scripts/test.sh [--heavy|--sanitize]" >&2; exit 2 ;;
esac
