// Comparing runtimes that run the same weights: first *run* every runtime (each in its own child
// process, writing its outputs to files), then *compare* the outputs with the reference's. The two
// steps are apart so that outputs saved by one run can be compared again with other tolerances.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/dataset.h"
#include "crossdl/tensor.h"
#include "crossdl/train.h"

namespace crossdl {

// An element is within tolerance when |got - ref| <= atol + rtol * |ref| (NumPy's allclose rule,
// with the reference on the right). The defaults allow float32 reassociation noise through a
// network of LeNet/ResNet-20 depth (measured differences between correct fp32 runtimes are
// 1e-7..1e-5 on logits of magnitude ~10) and catch a wrong layout, a wrong padding or a wrong
// BatchNorm, which give differences of 1e-2 and more.
// NaN policy: a non-finite value is outside tolerance, except that with nan_equal a NaN where
// the reference has NaN counts as equal (an operator test whose expected output holds NaN), as
// does an infinity equal to the reference's.
struct Tolerance {
  double atol = 1e-4;
  double rtol = 1e-4;
  bool nan_equal = false;
};

// How far one tensor is from the reference, elementwise.
struct OutputDiff {
  std::int64_t count = 0;  // elements compared
  double max_abs = 0, mean_abs = 0;
  // |got - ref| / |ref| over the elements with |ref| > 0 (an element whose reference is 0 counts
  // only in the absolute figures).
  double max_rel = 0, mean_rel = 0;
  std::int64_t nan = 0, inf = 0;  // non-finite values in `got`
  std::int64_t outside = 0;       // elements beyond tolerance (non-finite ones included)
  bool within() const { return outside == 0; }
  nlohmann::json to_json() const;
};

// Shapes must match (InputError otherwise, naming both).
OutputDiff diff_outputs(const Tensor& ref, const Tensor& got, const Tolerance& tol);

// Rows of [N, classes] logits whose argmax differs (ties break to the lower index, like
// torch.argmax on CPU).
std::int64_t top1_disagreements(const Tensor& ref_logits, const Tensor& got_logits);
std::vector<std::int64_t> argmax_rows(const Tensor& logits);

// The one comparator: `crossdl compare`, the migrate and quantize stages and the ONNX
// conformance run all compare through diff_outputs.

// One layer of the first-diverging-layer walk.
struct LayerDivergence {
  std::string layer;
  OutputDiff diff;
};
// Compares layer outputs present in both lists, in the order of `ref` (the IR's layer order);
// layers only one runtime exposes are left out. Returns every compared layer; `first` gets the
// index of the first one beyond tolerance, or -1.
std::vector<LayerDivergence> layer_divergence(
    const std::vector<std::pair<std::string, Tensor>>& ref,
    const std::vector<std::pair<std::string, Tensor>>& got, const Tolerance& tol, int& first);

// {"layer_diffs": [{layer, max_abs, ...}], "first_divergent_layer": name or null}, as compare
// and the migrate stage record a layer walk.
nlohmann::json layer_divergence_json(const std::vector<LayerDivergence>& layers, int first);

// Percentile by linear interpolation between closest ranks (q in [0,1]); NaN for an empty sample.
double percentile(std::vector<double> sample, double q);

}  // namespace crossdl

// ---- running runtimes (crossdl_app) -------------------------------------------------------------

namespace crossdl {

// One runtime on one model: export it into the runtime's format, load it, run the test subset,
// time it. What `crossdl compare` runs in a child process per runtime (`crossdl __runtime`).
struct RuntimeJob {
  std::string runtime;     // CLI name
  std::string model_path;  // an ONNX file (crossdl's, or a user's within the operator set)
  std::string dataset = "fashion-mnist";
  DataOptions data;     // test_limit: how many test examples
  std::string out_dir;  // receives artefact/, logits.npy, layers/ and result.json
  int threads = 1;
  int opset = 13;
  std::int64_t batch = 64;         // batch of the accuracy pass
  std::int64_t latency_runs = 50;  // timed single-example inferences, after 3 untimed ones
  bool layers = false;             // also capture every layer's output on the first examples
  std::int64_t layer_examples = 8;
  // Inputs from files instead of the dataset's test split (adversarial examples, a set of the
  // user's): a .npy [N, ...] of model inputs as make_batch gives them (normalised float images,
  // or int64 tokens) and a .npy I64 [N] of labels. The dataset still names the input shape and
  // the classes; test_limit keeps the first N rows.
  std::string inputs_path, labels_path;
  // "fp32", or a scheme of crossdl/quant.h ("int8-static", "fp16", ...): the runtime runs
  // crossdl's quantization of the model, with these options (quant_options_from_json's keys,
  // without "scheme").
  std::string precision = "fp32";
  nlohmann::json quant = nlohmann::json::object();
  nlohmann::json to_json() const;
  static RuntimeJob from_json(const nlohmann::json& j);  // InputError naming a bad key
};

// The inputs a job evaluates on (the dataset's test split, or the job's files); `x` owns the
// rows read from a file and eval points into it (and into ds), so it is filled in place.
struct JobInputs {
  EvalInputs eval;
  Tensor x;
  std::string source;  // "fashion-mnist test split" or the inputs file
  JobInputs() = default;
  JobInputs(const JobInputs&) = delete;
  JobInputs& operator=(const JobInputs&) = delete;
};
void job_inputs(const RuntimeJob& job, const Dataset& ds, JobInputs& out);

// The layer outputs a runtime job wrote (its result's "layers": [{layer, file}] under dir), in
// order; empty when it has none.
std::vector<std::pair<std::string, Tensor>> read_layer_outputs(const std::string& dir,
                                                               const nlohmann::json& result);

// Runs the job in this process. Returns the result object (also written to out_dir/result.json):
// {runtime, library, version, device, threads, status: ok|skipped|failed, message, artefact
// {format, bytes, files, conversions}, export_ms, load_ms, latency_ms {p50, p95, runs, batch},
// test_size, accuracy, logits: "logits.npy", layers: [{layer, file}], peak_rss_mb}. A runtime
// failure is a status, not an exception; InputError only for bad input (model, dataset).
nlohmann::json runtime_run(const RuntimeJob& job);

struct CompareOptions {
  std::string model_path;  // .onnx, or a folder holding model.onnx (what `crossdl train` wrote)
  std::vector<std::string> runtimes;
  std::string reference = "torch";
  std::string dataset = "fashion-mnist";
  DataOptions data;  // test_limit
  bool layers = false;
  Tolerance tol;
  int threads = 1;
  int opset = 13;
  std::int64_t latency_runs = 50;
  std::string out_dir;  // per-runtime folders; empty: a temporary folder, removed afterwards
  std::string inputs_path, labels_path;  // inputs from files (RuntimeJob), both or neither
  // Precisions to run every runtime in ("fp32", "int8-static", "fp16", ...; empty: fp32), and the
  // quantization options (quant_options_from_json's keys without "scheme").
  std::vector<std::string> precisions;
  nlohmann::json quant = nlohmann::json::object();
  double timeout_s = 600;                 // per runtime
  std::vector<std::string> self_command;  // how to start crossdl itself ({"/proc/self/exe"})
  // Progress lines ("ort: ok in 3.2 s") go here when set.
  std::function<void(const std::string&)> on_line;
};

// Runs every runtime (the reference first) each in its own child process, then compares.
// Returns {model, dataset, test_size, reference, tolerance, provenance, runtimes: [{runtime,
// status, message, ..., accuracy, accuracy_delta, disagreement, disagreement_rate, logits diff,
// first_divergent_layer, layers: [{layer, max_abs, ...}], peak_rss_mb}]}. InputError for bad input.
nlohmann::json compare_run(const CompareOptions& opt);

}  // namespace crossdl
