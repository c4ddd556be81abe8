#!/usr/bin/env bash
# Runs the ONNX Runtime int8 convolution reproduction (findings/ort_int8_conv_saturation.py).
# Exit 1 with "FINDING REPRODUCED" while the fused kernel saturates; 0 otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The u8*s8 pair saturation is a property of ONNX Runtime's AVX2 kernels; a CPU with VNNI takes
# another path, so the reproduction says so there instead of failing.
if grep -qE 'avx512_vnni|avx_vnni' /proc/cpuinfo; then
  echo "SKIP: this CPU has VNNI; ONNX Runtime's AVX2 u8*s8 kernels (the finding) are not used here"
  exit 0
fi
exec /usr/bin/python3 "$here/ort_int8_conv_saturation.py"
