#!/usr/bin/env bash
# CPU vs GPU LibTorch comparison, prepared for the lent GPU machine (bare: CMake, ninja and a pip
# torch with CUDA; no Debian -dev packages, no network). Run from the repository root:
#
#   DATA_DIR=build-gpu-data/fashion-mnist scripts/gpu-compare.sh
#
# DATA_DIR: the four Fashion-MNIST IDX files (*-ubyte.gz or uncompressed), carried in the working
# tree (copy /usr/share/datasets/fashion-mnist/*.gz there first; build-gpu-data/ is git-ignored,
# so name it in the device tool's carry list). Results: printed, and as JSON in
# $OUT (or the build folder). Whole run: ~1-3 minutes with a warm GPU machine.
#
# 1. Says whether crossdl itself can build here: its core needs ONNX, Protobuf, yaml-cpp, SQLite3,
#    nlohmann_json, CLI11, zlib and GoogleTest development files (Debian packages).
# 2. Always: builds scripts/gpu/gpu_compare (links only LibTorch) and trains LeNet-5 from identical
#    initial weights with identical minibatches on the CPU and on the GPU: deterministic settings
#    with CUBLAS_WORKSPACE_CONFIG=:4096:8 (CPU + 2 GPU runs), then without any of them (2 GPU runs).
# 3. Only when every core dependency is present (and CROSSDL_FULL is not 0): builds crossdl with
#    torch-cuda and runs the Torch* tests, tests/test-app-torch-cuda.cpp included.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BUILD=${BUILD:-build-gpu}
EPOCHS=${EPOCHS:-1}
THREADS=${THREADS:-1}
RESULTS=${OUT:-$ROOT/$BUILD}
mkdir -p "$BUILD" "$RESULTS"

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%T)"; }

# ---- LibTorch: a pip torch's CMake config when python3 has torch, else whatever CMake finds ----
TORCH_PREFIX=${TORCH_PREFIX:-$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)}
if [[ -n "$TORCH_PREFIX" && ! -f "$TORCH_PREFIX/Torch/TorchConfig.cmake" ]]; then
  TORCH_PREFIX=""
fi
step "environment"
echo "torch cmake prefix: ${TORCH_PREFIX:-(none: system LibTorch)}"
python3 -c 'import torch;print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>/dev/null || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
cmake --version | head -1
nproc

# ---- data -------------------------------------------------------------------------------------
DATA_DIR=${DATA_DIR:-build-gpu-data/fashion-mnist}
if [[ ! -d "$DATA_DIR" && -d /usr/share/datasets/fashion-mnist ]]; then
  DATA_DIR=/usr/share/datasets/fashion-mnist
fi
RAW="$BUILD/fashion-mnist"
mkdir -p "$RAW"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [[ -f "$DATA_DIR/$f.gz" ]]; then
    [[ -f "$RAW/$f" ]] || gzip -dc "$DATA_DIR/$f.gz" >"$RAW/$f" || exit 1
  elif [[ -f "$DATA_DIR/$f" ]]; then
    cp -f "$DATA_DIR/$f" "$RAW/$f"
  else
    echo "missing $DATA_DIR/$f(.gz): copy the Fashion-MNIST IDX files there (DATA_DIR=...)" >&2
    exit 2
  fi
done
echo "data: $DATA_DIR -> $RAW"

# ---- can crossdl's core build here? ----------------------------------------------------------
step "crossdl core dependencies"
missing=()
have_header() { for d in /usr/include /usr/local/include; do [[ -e "$d/$1" ]] && return 0; done; return 1; }
have_header onnx/onnx_pb.h || missing+=("ONNX (libonnx-dev)")
have_header google/protobuf/message.h || missing+=("Protobuf (libprotobuf-dev)")
have_header yaml-cpp/yaml.h || missing+=("yaml-cpp (libyaml-cpp-dev)")
have_header sqlite3.h || missing+=("SQLite3 (libsqlite3-dev)")
have_header nlohmann/json.hpp || missing+=("nlohmann_json (nlohmann-json3-dev)")
have_header CLI/CLI.hpp || missing+=("CLI11 (libcli11-dev)")
have_header zlib.h || missing+=("zlib (zlib1g-dev)")
have_header gtest/gtest.h || missing+=("GoogleTest (libgtest-dev)")
if ((${#missing[@]})); then
  echo "crossdl core cannot build here; missing: ${missing[*]}"
  echo "(no network to install them): running only the standalone LibTorch comparison"
fi

# ---- the standalone comparison ----------------------------------------------------------------
step "build scripts/gpu (LibTorch only)"
cmake -S scripts/gpu -B "$BUILD/gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  ${TORCH_PREFIX:+-DCMAKE_PREFIX_PATH="$TORCH_PREFIX"} >"$RESULTS/gpu-configure.log" 2>&1 ||
  { tail -30 "$RESULTS/gpu-configure.log"; exit 1; }
grep 'gpu_compare:' "$RESULTS/gpu-configure.log"
cmake --build "$BUILD/gpu" -j"$(nproc)" >"$RESULTS/gpu-build.log" 2>&1 ||
  { tail -30 "$RESULTS/gpu-build.log"; exit 1; }

BIN="$BUILD/gpu/gpu_compare"
COMMON=(--epochs "$EPOCHS" --threads "$THREADS")
step "deterministic: CPU + 2 GPU runs, CUBLAS_WORKSPACE_CONFIG=:4096:8"
CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout 300 "$BIN" "$RAW" --mode det "${COMMON[@]}" \
  --json "$RESULTS/gpu-compare-det.json" || exit 1
if python3 -c 'import torch,sys;sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
   command -v nvidia-smi >/dev/null; then
  step "non-deterministic: 2 GPU runs, no deterministic settings, CUBLAS_WORKSPACE_CONFIG unset"
  env -u CUBLAS_WORKSPACE_CONFIG timeout 300 "$BIN" "$RAW" --mode nondet --no-cpu "${COMMON[@]}" \
    --json "$RESULTS/gpu-compare-nondet.json" || exit 1
fi

if ((${#missing[@]} == 0)) && [[ "${CROSSDL_FULL:-1}" != 0 ]]; then
  step "crossdl with torch-cuda"
  echo "all present: building crossdl with torch-cuda"
  if timeout 120 cmake -S . -B "$BUILD/crossdl" -G Ninja -DCMAKE_BUILD_TYPE=Release \
       ${TORCH_PREFIX:+-DCMAKE_PREFIX_PATH="$TORCH_PREFIX"} >"$RESULTS/crossdl-configure.log" 2>&1 &&
     timeout 240 cmake --build "$BUILD/crossdl" -j"$(nproc)" --target crossdl crossdl_app_tests \
       >"$RESULTS/crossdl-build.log" 2>&1; then
    "$BUILD/crossdl/crossdl" doctor 2>&1 | tee "$RESULTS/crossdl-doctor.txt"
    CROSSDL_DATA_FASHION_MNIST=$(realpath "$DATA_DIR") timeout 150 "$BUILD/crossdl/crossdl_app_tests" --gtest_filter='Torch*' \
      --gtest_output="json:$RESULTS/crossdl-torch-tests.json" 2>&1 | tail -40
  else
    echo "crossdl build failed: see crossdl-configure.log / crossdl-build.log"
    tail -20 "$RESULTS/crossdl-configure.log" "$RESULTS/crossdl-build.log" 2>/dev/null
  fi
fi
step "done: results in $RESULTS"
