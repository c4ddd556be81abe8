// Shared by the adapter-overhead benchmark's translation units (bench/adapter_overhead_main.cpp
// and one bench/native_<framework>.cpp per library): the data and configuration every native
// training loop receives, prepared once outside the timed region, and what a run reports.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/ir.h"

namespace crossdl::bench {

struct BenchData {
  Dataset ds;          // loaded with crossdl's loader, the same options as the crossdl side
  ir::Model model;     // zoo lenet5 for the dataset
  WeightSet init;      // init_weights(model, seed): the crossdl side starts from the same tensors
  std::int64_t n = 0;  // training examples
  std::int64_t sample = 0;            // floats per example (784)
  std::int64_t classes = 0;           // 10
  std::vector<float> train_x;         // [n, sample], normalised exactly as make_batch does
  std::vector<std::int64_t> train_y;  // [n]
  std::vector<float> test_x;          // [test, sample]
  std::vector<std::int64_t> test_y;
  std::vector<std::int64_t> order;  // epoch_order(n, seed, 0): the crossdl side's minibatch order
  std::int64_t batch = 64;
  std::int64_t batches = 0;  // full minibatches (drop_last, as crossdl)
  double lr = 0.02, momentum = 0.9;
};

struct RunResult {
  double seconds = 0;      // the training loop only
  double train_loss = -1;  // mean of the minibatch losses; -1 when the loop does not expose it
  double test_accuracy = 0;
  std::string baseline;  // what the loop is, in words
};

// Fraction of rows whose largest logit is the label's.
double accuracy_of(const float* logits, std::int64_t rows, std::int64_t classes,
                   const std::int64_t* labels);

RunResult run_native_torch(const BenchData& d);
// manual = false: dlib's dnn_trainer::train_one_step with dlib's sgd solver.
// manual = true: compute_parameter_gradients + a hand-written PyTorch-formula SGD update, which is
// what the crossdl adapter itself does.
RunResult run_native_dlib(const BenchData& d, bool manual);
RunResult run_native_darknet(const BenchData& d);

}  // namespace crossdl::bench
