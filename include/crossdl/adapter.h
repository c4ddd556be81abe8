// The framework adapter interface. A framework trains (Trainer) and runs (Runner) zoo models from
// their description and the shared weight set. Adapters never throw across this interface: library
// exceptions become a failed Status carrying the library's own message; "cannot express this
// model" is a Capability, recorded as a skip with its reason.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "crossdl/ir.h"
#include "crossdl/status.h"
#include "crossdl/tensor.h"

namespace crossdl {

struct RunOptions {
  int threads = 1;            // intra-op threads the library may use (recorded)
  bool deterministic = true;  // ask the library for deterministic algorithms
};

struct TrainConfig {
  std::string optimizer = "sgd";  // sgd | adam
  double lr = 0.02;
  double momentum = 0.9;      // sgd only
  double weight_decay = 0.0;  // L2 added to the gradient (PyTorch convention)
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  std::string schedule = "constant";  // constant | step | cosine
  int step_size = 1;                  // step: epochs between decays
  double gamma = 0.1;                 // step: decay factor
  std::int64_t batch_size = 64;
  // Every framework sees only full minibatches: the last partial one of an epoch is skipped
  // (Darknet sizes its buffers for one batch). Which examples it holds changes every epoch.
  bool drop_last = true;
  int epochs = 1;
  std::uint64_t seed = 1;  // initial weights and minibatch order
  RunOptions run;
};
// Learning rate for a 0-based epoch under the configured schedule.
double scheduled_lr(const TrainConfig& c, int epoch);

struct FrameworkInfo {
  std::string name;     // "torch"
  std::string library;  // "LibTorch"
  std::string version;  // "1.13.1"
  std::string device;   // "cpu"
};

// One layer's output, for finding where two runtimes part. `layer` is the IR layer name; `value`
// is in the IR's layout whatever the runtime's own ([N,C,H,W] for images, [N,F] after Flatten or
// Dense, [N,T,F] for sequences), so outputs of different runtimes compare element by element.
struct LayerOutput {
  std::string layer;
  Tensor value;
};

// Figures only a runtime can see: the browser's memory (PSS, peak, JS heap), what a backend ran
// on. Names are snake_case with their unit; the web runtimes give the numbers pss_mb,
// peak_pss_mb, js_heap_mb (NaN: none reported), processes, timer_resolution_ms, start_ms and the
// texts platform, browser, backend, device, js_heap_source, cross_origin_isolated. `crossdl
// compare` stores them as one object, "facts", in each runtime's result.
struct RunnerFacts {
  std::vector<std::pair<std::string, double>> numbers;
  std::vector<std::pair<std::string, std::string>> text;
};

// Inference on loaded weights; the model is in evaluation mode (BatchNorm uses running stats).
class Runner {
 public:
  virtual ~Runner() = default;
  // x: a batch from make_batch(); logits: F32 [B, num_classes].
  virtual Status infer(const Tensor& x, Tensor& logits) = 0;
  // d(mean cross-entropy over the batch)/dx, same shape as x; `loss` gets that loss.
  // Optional: the default says unsupported.
  virtual Status input_gradient(const Tensor& x, const Tensor& labels, Tensor& grad, double& loss);
  // Every layer output the runtime can expose for x, in layer order; the last one is the logits.
  // A runtime that fuses layers (Conv+ReLU) reports the fused layer under the last IR name it
  // covers. Optional: the default says unsupported.
  virtual Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out);
  // Per-sample batch-1 times in milliseconds for each of the R samples of xs (a batch [R, ...]),
  // after `warmup` untimed runs on sample 0, measured where the runtime runs (in the page for a
  // browser). The default infers each sample here, timed with steady_clock.
  virtual Status timed_runs(const Tensor& xs, std::int64_t warmup, std::vector<double>& ms);
  // What the runtime can say about itself after running (the default: nothing).
  virtual RunnerFacts facts();
};

// One training run. The core drives it: it builds every minibatch, sets the learning rate of each
// epoch and evaluates between epochs, so that every framework sees the same sequence.
class Trainer {
 public:
  virtual ~Trainer() = default;
  // One optimiser step on (x, labels) with learning rate lr; `loss` gets the mean batch loss.
  virtual Status step(const Tensor& x, const Tensor& labels, double lr, double& loss) = 0;
  // Logits in evaluation mode with the current weights.
  virtual Status infer(const Tensor& x, Tensor& logits) = 0;
  // The current weights, in the weight set's declared layouts.
  virtual Status export_weights(WeightSet& out) = 0;
  // Figures only the trainer can see, read once after training (a browser trainer's process-tree
  // memory, what its backend ran on, the step time measured in the page). Default: none.
  virtual RunnerFacts facts();
};

class Framework {
 public:
  virtual ~Framework() = default;
  virtual FrameworkInfo info() const = 0;
  virtual Capability supports(const ir::Model& m) const = 0;
  virtual std::unique_ptr<Runner> load(const ir::Model& m, const WeightSet& w,
                                       const RunOptions& opt, Status& status) = 0;
  virtual std::unique_ptr<Trainer> trainer(const ir::Model& m, const WeightSet& init,
                                           const TrainConfig& cfg, Status& status) = 0;
};

class Runtime;  // crossdl/runtime.h

// A framework or runtime name is `<base>[:<backend>][@<platform>]` ("torch", "tfjs:wasm@chromium").
// The base names the registry entry; the variant (the text after it, "" or ":wasm@chromium") goes
// to the adapter's factory, which throws InputError for a variant it does not know.
struct BackendName {
  std::string base;     // "tfjs"
  std::string variant;  // ":wasm@chromium", or ""
};
BackendName split_backend_name(const std::string& name);
// For adapters without variants: InputError("<base>: no variants (got '<variant>')") when
// `variant` is not empty.
inline void require_no_variant(const std::string& base, const std::string& variant) {
  if (!variant.empty()) throw InputError(base + ": no variants (got '" + variant + "')");
}

// What crossdl knows about a framework or runtime, built in or not.
struct BackendEntry {
  std::string name;          // CLI base name: "torch", "tfjs"
  std::string kind;          // "framework" or "runtime"
  std::string library;       // "LibTorch"
  std::string install_hint;  // "apt-get install libtorch-dev" / how to get it built in
  // The variants the name takes ("<backend>@<platform>" forms), empty for none; for `doctor`.
  std::string variants;
  // Set when the adapter is compiled into this crossdl (a framework trains; a runtime runs
  // exported artefacts; torch, dlib and darknet are both). The argument is the variant
  // (BackendName::variant); they throw InputError for one they do not know.
  std::function<std::unique_ptr<Framework>(const std::string& variant)> make_framework;
  std::function<std::unique_ptr<Runtime>(const std::string& variant)> make_runtime;
  // Library version when usable here, else empty; `why` says what is missing.
  std::function<std::string(std::string& why)> probe;
};

// Every backend crossdl knows, in a stable order (built-in ones have make_framework set).
const std::vector<BackendEntry>& backends();
// The entry of a name's base ("tfjs:wasm@chromium" finds "tfjs"), or null.
const BackendEntry* find_backend(const std::string& name);
// Throws InputError naming the backend and listing the known ones (or, for a variant the
// adapter does not know, the valid backends and platforms).
std::unique_ptr<Framework> make_framework(const std::string& name);

}  // namespace crossdl
