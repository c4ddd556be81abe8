// Shared by the runtime latency-overhead benchmark's translation units
// (bench/runtime_latency_main.cpp and one bench/native_latency_<lib>.cpp per library): the
// "direct" side, i.e. the artefact crossdl exported, loaded and run with the library's own API in
// the most direct way a user of that library would write it. Library headers stay in the
// native_latency_*.cpp files so that this header compiles everywhere.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "crossdl/ir.h"
#include "crossdl/runtime.h"

namespace crossdl::bench {

// One loaded model on the library's own API. infer() takes what a user holds, one NCHW float
// sample (model.input_shape, batch 1), and leaves the logits in `logits` (num_classes floats):
// whatever conversion the library needs on the way in or out is inside the call, as it is inside
// crossdl's Runner::infer.
class DirectRunner {
 public:
  virtual ~DirectRunner() = default;
  virtual void infer(const float* x, std::vector<float>& logits) = 0;
  // The calls it makes, in words, for the report.
  virtual std::string api() const = 0;
  // Where crossdl's extra time goes, for --breakdown: named thread-CPU medians (us) of the pieces
  // of crossdl's Runner::infer timed alone, next to the library call they wrap. Empty where no
  // breakdown was written.
  virtual std::vector<std::pair<std::string, double>> breakdown(const ir::Model& m,
                                                                const float* x) {
    return {};
  }
};

// Median thread-CPU time of `calls` calls of fn, in microseconds.
double median_cpu_us(const std::function<void()>& fn, int calls);

// Each loads the artefact's own files and throws std::exception (with the library's message) on
// failure; one thread everywhere. Declared only when the library is built into the benchmark.
std::unique_ptr<DirectRunner> direct_torch(const Artefact& a, const ir::Model& m);
// Handles both ONNX (readNetFromONNX) and Darknet (readNetFromDarknet) artefacts.
std::unique_ptr<DirectRunner> direct_opencv(const Artefact& a, const ir::Model& m);
std::unique_ptr<DirectRunner> direct_tflite(const Artefact& a, const ir::Model& m);
std::unique_ptr<DirectRunner> direct_armnn(const Artefact& a, const ir::Model& m);
std::unique_ptr<DirectRunner> direct_darknet(const Artefact& a, const ir::Model& m);
std::unique_ptr<DirectRunner> direct_dlib(const Artefact& a, const ir::Model& m);

// The first file of `a` whose name ends with `suffix`; throws naming the artefact otherwise.
std::string artefact_file(const Artefact& a, const std::string& suffix);

}  // namespace crossdl::bench
