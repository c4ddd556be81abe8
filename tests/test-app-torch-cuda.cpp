// The torch-cuda framework (LibTorch on cuda:0) against the CPU torch framework: the same weights
// give the same logits, and deterministic GPU training is reproducible run to run. Skipped when
// this crossdl has no torch-cuda (its LibTorch has no CUDA) or no CUDA device is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/dataset.h"
#include "crossdl/train.h"
#include "crossdl/zoo.h"

#include "app_support.h"

using namespace crossdl;

namespace {

// True when torch-cuda is built in and its probe finds a device; otherwise `why` says what lacks.
bool torch_cuda_usable(std::string& why) {
  if (!test::adapter_built("torch-cuda", &why)) return false;
  const BackendEntry* e = find_backend("torch-cuda");
  std::string reason;
  if (e->probe(reason).empty()) {
    why = "torch-cuda: " + reason;
    return false;
  }
  return true;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, double(std::fabs(a.values<float>()[i] - b.values<float>()[i])));
  return m;
}

}  // namespace

// LeNet-5 with the same weights on 64 Fashion-MNIST test images: GPU logits and input gradients
// equal the CPU's to 1e-4.
TEST(TorchCuda, Lenet5LogitsAndGradientMatchCpu) {
  std::string why;
  if (!torch_cuda_usable(why)) GTEST_SKIP() << why;
  DataOptions o;
  o.train_limit = 1;
  o.test_limit = 64;
  const Dataset ds = load_dataset("fashion-mnist", o);
  const ir::Model model = zoo::build("lenet5", zoo::input_spec(ds));
  const WeightSet w = init_weights(model, 11);
  std::vector<std::int64_t> idx(64);
  std::iota(idx.begin(), idx.end(), 0);
  const Tensor x = make_batch(ds, ds.test, idx);
  const Tensor y = make_labels(ds.test, idx);

  auto cuda_fw = make_framework("torch-cuda");
  EXPECT_EQ(cuda_fw->info().name, "torch-cuda");
  EXPECT_EQ(cuda_fw->info().device.rfind("cuda:0", 0), 0u) << cuda_fw->info().device;
  RecordProperty("device", cuda_fw->info().device);

  Tensor logits[2], grad[2];
  double loss[2] = {0, 0};
  const char* names[2] = {"torch", "torch-cuda"};
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(names[i]);
    auto fw = make_framework(names[i]);
    Status st;
    auto runner = fw->load(model, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    st = runner->infer(x, logits[i]);
    ASSERT_TRUE(st.is_ok()) << st.message();
    st = runner->input_gradient(x, y, grad[i], loss[i]);
    ASSERT_TRUE(st.is_ok()) << st.message();
  }
  ASSERT_EQ(logits[1].shape(), logits[0].shape());
  ASSERT_EQ(grad[1].shape(), grad[0].shape());
  const double dl = max_abs_diff(logits[0], logits[1]);
  const double dg = max_abs_diff(grad[0], grad[1]);
  EXPECT_LE(dl, 1e-4);
  EXPECT_LE(dg, 1e-4);
  EXPECT_NEAR(loss[0], loss[1], 1e-4);
  RecordProperty("max_abs_logit_diff", std::to_string(dl));
  RecordProperty("max_abs_grad_diff", std::to_string(dg));
}

// Two deterministic GPU training runs of LeNet-5 (2,000 images, batch 16, seed 3) end with
// bit-identical weights, and the model learns (chance is 0.10).
TEST(TorchCuda, DeterministicTrainingIsReproducible) {
  std::string why;
  if (!torch_cuda_usable(why)) GTEST_SKIP() << why;
  TrainRequest r;
  r.model = "lenet5";
  r.dataset = "fashion-mnist";
  r.framework = "torch-cuda";
  r.data.train_limit = 2000;
  r.data.test_limit = 1000;
  r.config.seed = 3;
  r.config.batch_size = 16;
  r.config.run.deterministic = true;
  const nlohmann::json a = train_run(r, {});
  const nlohmann::json b = train_run(r, {});
  ASSERT_EQ(a["status"], "ok") << a.dump();
  ASSERT_EQ(b["status"], "ok") << b.dump();
  EXPECT_EQ(a["weights_sha256"], b["weights_sha256"]);
  EXPECT_EQ(a["initial_weights_sha256"], b["initial_weights_sha256"]);
  EXPECT_GE(a["test_accuracy"].get<double>(), 0.55) << a.dump();
  EXPECT_EQ(a["nonfinite_losses"], 0);
}
