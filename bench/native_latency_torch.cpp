// The direct LibTorch side of the runtime latency benchmark: the TorchScript file crossdl wrote,
// loaded with torch::jit::load and run with Module::forward, as LibTorch's own documentation does
// it. The input is the user's buffer wrapped with from_blob (TorchScript takes NCHW as it is).
#include <torch/script.h>

#include <ATen/Parallel.h>

#include <cstring>

#include "runtime_latency.h"

namespace crossdl::bench {
namespace {

class TorchDirect : public DirectRunner {
 public:
  TorchDirect(const Artefact& a, const ir::Model& m) {
    at::set_num_threads(1);
    module_ = torch::jit::load(artefact_file(a, ".pt"));
    module_.eval();
    shape_ = {1};
    shape_.insert(shape_.end(), m.input_shape.begin(), m.input_shape.end());
  }
  void infer(const float* x, std::vector<float>& logits) override {
    // InferenceMode is what LibTorch recommends for inference (it skips autograd bookkeeping
    // that NoGradGuard still does).
    c10::InferenceMode guard;
    const at::Tensor in = torch::from_blob(const_cast<float*>(x), shape_, torch::kFloat32);
    const at::Tensor out = module_.forward({in}).toTensor().contiguous();
    logits.resize(static_cast<std::size_t>(out.numel()));
    std::memcpy(logits.data(), out.data_ptr<float>(), logits.size() * sizeof(float));
  }
  std::string api() const override {
    return "torch::jit::load; InferenceMode; from_blob; Module::forward; memcpy out";
  }

 private:
  torch::jit::Module module_;
  std::vector<std::int64_t> shape_;
};

}  // namespace

std::unique_ptr<DirectRunner> direct_torch(const Artefact& a, const ir::Model& m) {
  return std::make_unique<TorchDirect>(a, m);
}

}  // namespace crossdl::bench
