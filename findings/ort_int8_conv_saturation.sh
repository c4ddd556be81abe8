#!/usr/bin/env bash
# Runs the ONNX Runtime int8 convolution reproduction (findings/ort_int8_conv_saturation.py).
# Exit 1 with "FINDING REPRODUCED" while the fused kernel saturates; 0 otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec /usr/bin/python3 "$here/ort_int8_conv_saturation.py"
