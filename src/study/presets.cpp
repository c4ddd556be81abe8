// Built-in studies. They are YAML text parsed by the same parser as a user's file, so they are
// also the reference examples of the format (docs/study-format.md).
#include <string>
#include <utility>
#include <vector>

#include "crossdl/status.h"
#include "crossdl/study.h"

namespace crossdl {
namespace {

// Training sized to finish in under 15 minutes on 2 cores: the LeNets on the full Fashion-MNIST in every
// framework for 3 seeds; ResNet-20 and the LSTM on a documented subset (2,000 training / 1,000
// test images: Darknet trains ResNet-20 ~18x slower than LibTorch) for one seed; LeNet-5 repeated
// and rerun on 2 threads on a 10,000-image subset to measure reproducibility. A framework that
// cannot express a model, or is not installed, is a recorded skip with its reason. LeNet-5 is also
// trained by TF.js in headless Chromium on a 2,048-image subset. Then every seed-1 model migrates
// to every native runtime, and the LibTorch ones to every web runtime, backend and browser; the
// LibTorch LeNet-5 and ResNet-20 are quantized in every scheme and run in every runtime.
constexpr const char* kQuick = R"(name: quick
description: >
  The same training configuration in every framework (LibTorch, dlib, Darknet): identical initial
  weights, minibatches and optimiser settings. LeNet-1 and LeNet-5 on Fashion-MNIST over 3 seeds;
  ResNet-20 and an LSTM on a subset; repeated runs and a second thread count for reproducibility;
  LeNet-5 trained by TF.js in Chromium (cpu and WebGL) on a subset. One epoch each. Then the same
  weights in every native runtime, and in TF.js, ONNX Runtime Web and TFLite in Chromium, Firefox
  and Node.
timeout_s: 900
defaults:
  epochs: 1
  batch_size: 64
  optimizer: sgd
  lr: 0.02
  momentum: 0.9
  threads: 1
stages:
  - stage: train
    axes:
      model: [lenet1, lenet5]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet]
      seed: [1, 2, 3]
  - stage: train
    axes:
      model: [resnet20, lstm]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet]
      seed: [1]
    params: {train_limit: 2000, test_limit: 1000}
  - stage: train
    axes:
      model: [lenet5]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet]
      seed: [1]
      replicate: [0, 1]
      threads: [1, 2]
    params: {train_limit: 10000, test_limit: 2000}
  # Training in the browser: TF.js trains the same description from the same initial weights on
  # the same minibatches in headless Chromium (cpu and WebGL backends), next to the three native
  # frameworks on the same subset (2,048 training images: TF.js takes ~1.5 s per 64-image step).
  - stage: train
    axes:
      model: [lenet5]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet, tfjs-train@chromium, tfjs-train:webgl@chromium]
      seed: [1]
    params: {train_limit: 2048, test_limit: 1000}
  # Migration: each seed-1 model trained above, written in every runtime's format and run there,
  # compared with the training framework's own outputs. Arm NN's CpuRef backend is a slow
  # reference implementation, so it runs fewer test images (recorded as test_size); so does TF.js's
  # pure-JavaScript backend on ResNet-20.
  - stage: migrate
    axes:
      model: [lenet1, lenet5]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet]
      runtime: [torch, opencv, opencv-darknet, ort, tflite, tfjs, dlib, darknet]
      seed: [1]
    params: {test_limit: 1000}
  - stage: migrate
    axes:
      model: [lenet1, lenet5]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet]
      runtime: [armnn]
      seed: [1]
    params: {test_limit: 300}
  - stage: migrate
    axes:
      model: [resnet20, lstm]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet]
      runtime: [torch, opencv, opencv-darknet, ort, tflite, dlib, darknet]
      seed: [1]
    params: {train_limit: 2000, test_limit: 1000}
  - stage: migrate
    axes:
      model: [resnet20, lstm]
      dataset: [fashion-mnist]
      framework: [torch, dlib, darknet]
      runtime: [tfjs, armnn]
      seed: [1]
    params: {train_limit: 2000, test_limit: 100}
  # The web platforms (docs/web-protocol.md): every runtime x backend x platform, in real headless
  # Chromium and Firefox ESR and in Node. A combination that does not exist here (WebGPU in
  # Firefox, a browser-only library in Node) is a recorded skip with its reason. The models come
  # from LibTorch: which framework trained them does not change what a web runtime does with the
  # same weights, and the native migration above already crosses every framework.
  - stage: migrate
    axes:
      model: [lenet1, lenet5]
      dataset: [fashion-mnist]
      framework: [torch]
      runtime: &web [tfjs:cpu@node, tfjs:wasm@node, tfjs:webgl@node, tfjs:webgpu@node,
                      ort-web:wasm@node, ort-web:webgl@node, ort-web:webgpu@node,
                      tflite-web:wasm@node, tfjs:cpu@chromium, tfjs:wasm@chromium,
                      tfjs:webgl@chromium, tfjs:webgpu@chromium, ort-web:wasm@chromium,
                      ort-web:webgl@chromium, ort-web:webgpu@chromium, tflite-web:wasm@chromium,
                      tfjs:cpu@firefox, tfjs:wasm@firefox, tfjs:webgl@firefox, tfjs:webgpu@firefox,
                      ort-web:wasm@firefox, ort-web:webgl@firefox, ort-web:webgpu@firefox,
                      tflite-web:wasm@firefox]
      seed: [1]
    params: {test_limit: 1000}
  - stage: migrate
    axes:
      model: [resnet20]
      dataset: [fashion-mnist]
      framework: [torch]
      runtime: *web
      seed: [1]
    params: {train_limit: 2000, test_limit: 200}
  # Reduced precision: the LibTorch LeNet-5 and ResNet-20 quantized once by crossdl in every
  # scheme (BatchNorm folded; int8 per-channel weights, activations calibrated by min-max on 512
  # training images) and run in every runtime, each in its own format with the same scales and
  # zero points. A runtime without the scheme is a skip that says why; each int8 output is counted
  # in steps of crossdl's exact integer reference.
  - stage: quantize
    axes:
      model: [lenet5]
      dataset: [fashion-mnist]
      framework: [torch]
      seed: [1]
      scheme: &schemes [int8-static, int8-dynamic, fp16, bf16, w8, w16]
      runtime: &quant_runtimes [torch, opencv, ort, tflite, armnn, tfjs, dlib, darknet,
                                ort-web:wasm@chromium, tflite-web:wasm@chromium]
    params: {test_limit: 1000}
  - stage: quantize
    axes:
      model: [resnet20]
      dataset: [fashion-mnist]
      framework: [torch]
      seed: [1]
      scheme: *schemes
      runtime: *quant_runtimes
    params: {train_limit: 2000, test_limit: 500}
  # The same LeNet-5 with one weight scale per tensor: TFLite 2.9 cannot run a per-axis
  # FULLY_CONNECTED (a finding), and ONNX Runtime recommends per-tensor on some CPUs.
  - stage: quantize
    axes:
      model: [lenet5]
      dataset: [fashion-mnist]
      framework: [torch]
      seed: [1]
      scheme: [int8-static]
      runtime: [ort, tflite, armnn, ort-web:wasm@chromium, tflite-web:wasm@chromium]
    params: {test_limit: 1000, per_channel: false}
)";

// The ASE 2019 study's training setup: each model on the dataset the paper paired it with,
// 5 seeds, 10 epochs, full data.
constexpr const char* kPaper = R"(name: paper
description: >
  The six models of the ASE 2019 study on their datasets, 5 seeds, 10 epochs, full data.
timeout_s: 21600
defaults:
  epochs: 10
  batch_size: 64
  optimizer: sgd
  lr: 0.02
  momentum: 0.9
  threads: 1
stages:
  - stage: train
    axes:
      model: [lenet1, lenet5]
      dataset: [mnist]
      framework: [torch, dlib, darknet]
      seed: [1, 2, 3, 4, 5]
  - stage: train
    axes:
      model: [resnet20, vgg16]
      dataset: [cifar10]
      framework: [torch, dlib, darknet]
      seed: [1, 2, 3, 4, 5]
  - stage: train
    axes:
      model: [lstm, gru]
      dataset: [imdb]
      framework: [torch, dlib, darknet]
      seed: [1, 2, 3, 4, 5]
  - stage: migrate
    axes:
      model: [lenet1, lenet5]
      dataset: [mnist]
      framework: [torch, dlib, darknet]
      runtime: [torch, opencv, opencv-darknet, ort, tflite, tfjs, armnn, dlib, darknet]
      seed: [1]
  - stage: migrate
    axes:
      model: [resnet20, vgg16]
      dataset: [cifar10]
      framework: [torch, dlib, darknet]
      runtime: [torch, opencv, opencv-darknet, ort, tflite, tfjs, armnn, dlib, darknet]
      seed: [1]
  - stage: migrate
    axes:
      model: [lstm, gru]
      dataset: [imdb]
      framework: [torch, dlib, darknet]
      runtime: [torch, opencv, opencv-darknet, ort, tflite, tfjs, armnn, dlib, darknet]
      seed: [1]
)";

const std::vector<std::pair<std::string, const char*>>& presets() {
  static const std::vector<std::pair<std::string, const char*>> p{{"quick", kQuick},
                                                                  {"paper", kPaper}};
  return p;
}

}  // namespace

std::vector<std::string> study_preset_names() {
  std::vector<std::string> out;
  for (const auto& [name, text] : presets()) out.push_back(name);
  return out;
}

std::string study_preset_yaml(const std::string& name) {
  for (const auto& [n, text] : presets())
    if (n == name) return text;
  std::string known;
  for (const auto& n : study_preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw InputError("unknown study preset '" + name + "' (presets: " + known + ")");
}

Study study_preset(const std::string& name) {
  return study_parse(study_preset_yaml(name), "preset:" + name);
}

}  // namespace crossdl
