// The direct LibTorch side of the runtime latency benchmark: the TorchScript file crossdl wrote,
// loaded with torch::jit::load and run with Module::forward, as LibTorch's own documentation does
// it. The input is the user's buffer wrapped with from_blob (TorchScript takes NCHW as it is).
#include <torch/script.h>

#include <ATen/Parallel.h>

#include <algorithm>
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
  // crossdl's TorchScript runner runs forward under NoGradGuard and converts the result with
  // detach().to(kCPU).contiguous() into a new crossdl Tensor.
  std::vector<std::pair<std::string, double>> breakdown(const ir::Model&, const float* x) override {
    const at::Tensor in = torch::from_blob(const_cast<float*>(x), shape_, torch::kFloat32);
    auto forward = [&](bool inference) {
      if (inference) {
        c10::InferenceMode guard;
        return module_.forward({in}).toTensor();
      }
      torch::NoGradGuard guard;
      return module_.forward({in}).toTensor();
    };
    const double one = median_cpu_us([&] { forward(false); }, 5);
    const int n = std::clamp(static_cast<int>(3e5 / std::max(one, 1.0)), 10, 2000);
    const at::Tensor out = forward(false);
    std::vector<std::pair<std::string, double>> r;
    // Alternated, since the two differ by a few percent.
    double nograd = 0, inference = 0;
    for (int k = 0; k < 3; ++k) {
      nograd += median_cpu_us([&] { forward(false); }, n) / 3;
      inference += median_cpu_us([&] { forward(true); }, n) / 3;
    }
    r.push_back({"Module::forward under NoGradGuard (crossdl's runner)", nograd});
    r.push_back({"Module::forward under InferenceMode (the direct loop)", inference});
    r.push_back({"detach().to(kCPU).contiguous() + copy into a new crossdl Tensor",
                 median_cpu_us(
                     [&] {
                       const at::Tensor t = out.detach().to(at::kCPU).contiguous();
                       Tensor c(DType::F32, {t.size(0), t.size(1)}, Layout::NC);
                       std::memcpy(c.raw(), t.data_ptr<float>(), c.nbytes());
                     },
                     5000)});
    return r;
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
