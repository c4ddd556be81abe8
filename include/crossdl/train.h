// The training and evaluation pipeline shared by every framework: crossdl builds the initial
// weights, every minibatch and the learning-rate schedule; the framework only steps.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/adapter.h"
#include "crossdl/dataset.h"

namespace crossdl {

struct TrainEpoch {
  int epoch = 0;          // 1-based
  double train_loss = 0;  // mean over the epoch's minibatches
  double test_accuracy = 0;
  double seconds = 0;  // training wall time of the epoch (evaluation excluded)
  double samples_per_s = 0;
  double peak_rss_mb = 0;  // process peak so far
};

struct TrainProgress {
  std::function<void(int epoch, int epochs, std::int64_t batch, std::int64_t batches, double loss,
                     double samples_per_s)>
      on_batch;
  std::function<void(const TrainEpoch&)> on_epoch;
};

struct EvalResult {
  double accuracy = 0;
  Tensor predictions;  // I64 [N]
  Tensor logits;       // F32 [N, classes]
  double seconds = 0;
};

struct TrainRequest {
  std::string model;      // zoo name
  std::string dataset;    // dataset name
  std::string framework;  // backend name
  DataOptions data;
  TrainConfig config;
  std::string out_dir;             // receives model.onnx, metrics.json, test_logits.npy, ...
  std::int64_t eval_batch = 1000;  // batch size of evaluation passes
  // Which repetition of an otherwise identical run this is (studies repeat runs to measure
  // reproducibility); it changes nothing in the training and is recorded.
  int replicate = 0;
};

// Inputs to evaluate on: a dataset split, or inputs from a file (adversarial examples, a
// quantization study's own set). batch(indices) gives the model's input batch for those rows.
struct EvalInputs {
  std::int64_t n = 0;
  std::int64_t num_classes = 0;
  Tensor labels;  // I64 [n]
  std::function<Tensor(std::span<const std::int64_t>)> batch;
};
// The split's rows as make_batch gives them (ds and split must outlive the result).
EvalInputs eval_inputs_of(const Dataset& ds, const Split& split);
EvalResult evaluate_inputs(const EvalInputs& in, std::int64_t batch,
                           const std::function<Status(const Tensor&, Tensor&)>& infer);

// Evaluates `infer` (a Runner's or Trainer's) over a split in batches.
EvalResult evaluate_split(const Dataset& ds, const Split& split, std::int64_t batch,
                          const std::function<Status(const Tensor&, Tensor&)>& infer);

// A runner's or trainer's facts as a JSON object (non-finite numbers as null); empty when none.
nlohmann::json facts_json(const RunnerFacts& f);

// Trains and evaluates; writes the artefacts; returns the metrics object that `crossdl train
// --json` prints (framework, model, dataset, test_accuracy, seconds, peak_rss_mb, weights_sha256,
// artefact, epochs, ...), plus "outputs" {test_predictions, test_labels} (per-example, for the
// cross-framework statistics; callers printing metrics drop it). Throws InputError for bad input; a
// framework failure comes back as metrics["status"] == "failed" with its message, an unsupported
// model as "skipped".
nlohmann::json train_run(const TrainRequest& req, const TrainProgress& progress);

// Parses the JSON parameters of a study cell or the CLI into a request (InputError naming the
// parameter on a bad value or an unknown key).
TrainRequest train_request_from_json(const nlohmann::json& params);

}  // namespace crossdl
