// Every framework and runtime crossdl knows, whether or not it is built into this binary.
// Built-in adapters come from the list CMake generates from the crossdl_add_adapter() lines.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/runtime.h"

namespace crossdl {

struct BuiltinAdapter {
  const char* name;
  std::unique_ptr<Framework> (*make)(const std::string& variant);
  std::unique_ptr<Runtime> (*make_runtime)(const std::string& variant);
  std::string (*probe)(std::string& why);
};
const std::vector<BuiltinAdapter>& builtin_adapters();

Status Runner::input_gradient(const Tensor&, const Tensor&, Tensor&, double&) {
  return Status::unsupported("this runtime cannot compute input gradients");
}

Status Runner::layer_outputs(const Tensor&, std::vector<LayerOutput>&) {
  return Status::unsupported("this runtime cannot expose layer outputs");
}

Status Runner::timed_runs(const Tensor& xs, std::int64_t warmup, std::vector<double>& ms) {
  ms.clear();
  const std::int64_t r = xs.rank() > 0 ? xs.dim(0) : 0;
  if (r == 0) return Status::ok();
  Tensor logits;
  const Tensor first = xs.slice_rows(0, 1);
  for (std::int64_t i = 0; i < warmup; ++i)
    if (Status s = infer(first, logits); !s.is_ok()) return s;
  ms.reserve(static_cast<std::size_t>(r));
  for (std::int64_t i = 0; i < r; ++i) {
    const Tensor x = xs.slice_rows(i, i + 1);
    const auto t0 = std::chrono::steady_clock::now();
    Status s = infer(x, logits);
    const auto t1 = std::chrono::steady_clock::now();
    if (!s.is_ok()) return s;
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return Status::ok();
}

RunnerFacts Runner::facts() {
  return {};
}

RunnerFacts Trainer::facts() {
  return {};
}

namespace {

struct Known {
  const char* name;
  const char* kind;
  const char* library;
  const char* install_hint;
  const char* marker;         // a file whose presence means the library is installed here
  const char* variants = "";  // "<backend>@<platform>" forms the name takes (docs/web-protocol.md)
};

// Adapters that later work adds; `doctor` still tells the user what each needs.
constexpr Known kKnown[] = {
    {"torch", "framework", "LibTorch", "apt-get install libtorch-dev, then rebuild crossdl",
     "/usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake"},
    {"torch-cuda", "framework", "LibTorch (CUDA)",
     "configure with a CUDA-enabled Torch: -DCMAKE_PREFIX_PATH=$(python3 -c 'import "
     "torch;print(torch.utils.cmake_prefix_path)')",
     nullptr},
    {"dlib", "framework", "dlib", "apt-get install libdlib-dev, then rebuild crossdl",
     "/usr/include/dlib/dnn.h"},
    {"darknet", "framework", "Darknet", "apt-get install darknet, then rebuild crossdl",
     "/usr/lib/darknet/include/darknet.h"},
    {"opencv", "runtime", "OpenCV DNN", "apt-get install libopencv-dev",
     "/usr/include/opencv4/opencv2/dnn.hpp"},
    {"opencv-darknet", "runtime", "OpenCV DNN (Darknet importer)", "apt-get install libopencv-dev",
     "/usr/include/opencv4/opencv2/dnn.hpp"},
    {"armnn", "runtime", "Arm NN (CpuRef)",
     "apt-get install libarmnn-dev libarmnntfliteparser-dev libarmnn-cpuref-backend22",
     "/usr/include/armnn/ArmNN.hpp"},
    {"tflite", "runtime", "TensorFlow Lite C API", "cd web && npm ci (tfjs-tflite-node)", nullptr},
    {"ort", "runtime", "ONNX Runtime (onnxruntime-node)", "cd web && npm ci (onnxruntime-node)",
     nullptr},
    // The web families (docs/web-protocol.md): `<name>:<backend>@<platform>`, run by
    // web/web-helper.mjs in Node or in a headless browser.
    {"tfjs", "runtime", "TensorFlow.js (Node or browser)",
     "apt-get install nodejs chromium firefox-esr; cd web && npm ci", nullptr,
     "cpu|wasm|webgl|webgpu @ node (cpu, wasm)|chromium|firefox; default cpu@node"},
    {"ort-web", "runtime", "ONNX Runtime Web",
     "apt-get install nodejs chromium firefox-esr; cd web && npm ci", nullptr,
     "wasm|webgl|webgpu @ chromium|firefox|node (wasm); default wasm@chromium"},
    {"tflite-web", "runtime", "TFLite (tfjs-tflite, browser)",
     "apt-get install nodejs chromium firefox-esr; cd web && npm ci", nullptr,
     "wasm @ chromium|firefox; default wasm@chromium"},
    {"tfjs-train", "framework", "TensorFlow.js training (Node or browser)",
     "apt-get install nodejs chromium firefox-esr; cd web && npm ci", nullptr,
     "cpu|wasm|webgl|webgpu @ chromium|firefox|node (cpu, wasm); default cpu@chromium"},
};

std::vector<BackendEntry> build_entries() {
  std::vector<BackendEntry> out;
  for (const Known& k : kKnown) {
    BackendEntry e;
    e.name = k.name;
    e.kind = k.kind;
    e.library = k.library;
    e.install_hint = k.install_hint;
    e.variants = k.variants;
    const BuiltinAdapter* built = nullptr;
    for (const auto& b : builtin_adapters())
      if (e.name == b.name) built = &b;
    if (built != nullptr) {
      if (built->make != nullptr) e.make_framework = built->make;
      if (built->make_runtime != nullptr) e.make_runtime = built->make_runtime;
      e.probe = built->probe;
    } else {
      const std::string marker = k.marker ? k.marker : "";
      e.probe = [marker](std::string& why) -> std::string {
        if (!marker.empty() && std::filesystem::exists(marker))
          why = "library installed (" + marker + ") but this crossdl has no adapter for it yet";
        else
          why = "not built into this crossdl";
        return "";
      };
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

const std::vector<BackendEntry>& backends() {
  static const std::vector<BackendEntry> list = build_entries();
  return list;
}

BackendName split_backend_name(const std::string& name) {
  const std::size_t cut = name.find_first_of(":@");
  if (cut == std::string::npos) return {name, ""};
  return {name.substr(0, cut), name.substr(cut)};
}

const BackendEntry* find_backend(const std::string& name) {
  const std::string base = split_backend_name(name).base;
  for (const auto& e : backends())
    if (e.name == base) return &e;
  return nullptr;
}

std::unique_ptr<Framework> make_framework(const std::string& name) {
  const BackendEntry* e = find_backend(name);
  std::string known;
  for (const auto& b : backends())
    if (b.make_framework) known += (known.empty() ? "" : ", ") + b.name;
  if (e == nullptr) throw InputError("unknown framework '" + name + "' (built in: " + known + ")");
  if (!e->make_framework)
    throw InputError("framework '" + name + "' is not built into this crossdl (built in: " + known +
                     "); " + e->install_hint);
  return e->make_framework(split_backend_name(name).variant);
}

std::vector<std::string> runtime_names() {
  std::vector<std::string> out;
  for (const auto& b : backends())
    if (b.make_runtime) out.push_back(b.name);
  return out;
}

std::unique_ptr<Runtime> make_runtime(const std::string& name) {
  const BackendEntry* e = find_backend(name);
  std::string known;
  for (const std::string& n : runtime_names()) known += (known.empty() ? "" : ", ") + n;
  if (known.empty()) known = "none";
  if (e == nullptr) throw InputError("unknown runtime '" + name + "' (built in: " + known + ")");
  if (!e->make_runtime)
    throw InputError("runtime '" + name + "' is not built into this crossdl (built in: " + known +
                     "); " + e->install_hint);
  return e->make_runtime(split_backend_name(name).variant);
}

double scheduled_lr(const TrainConfig& c, int epoch) {
  if (c.schedule == "step") {
    int drops = c.step_size > 0 ? epoch / c.step_size : 0;
    double lr = c.lr;
    for (int i = 0; i < drops; ++i) lr *= c.gamma;
    return lr;
  }
  if (c.schedule == "cosine") {
    const double pi = 3.14159265358979323846;
    return c.epochs <= 1 ? c.lr : 0.5 * c.lr * (1.0 + std::cos(pi * epoch / c.epochs));
  }
  return c.lr;
}

}  // namespace crossdl
