// dlib's ResNet-20 and VGG-16 against LibTorch on identical weights: evaluation-mode logits
// (BatchNorm folded from the running statistics), every layer output dlib exposes, and training
// steps (weights and BatchNorm running statistics, which the dlib adapter keeps the PyTorch way).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "crossdl/adapter.h"
#include "crossdl/zoo.h"

#include "app_support.h"

using namespace crossdl;
using test::fashion_subset;
using test::first_n;
using test::max_abs_diff;

namespace {

#define REQUIRE_ADAPTER(name)                                    \
  do {                                                           \
    std::string why_;                                            \
    if (!test::adapter_built(name, &why_)) GTEST_SKIP() << why_; \
  } while (0)

const zoo::InputSpec kFashion{{1, 28, 28}, DType::F32, 10, 0};
const zoo::InputSpec kCifar{{3, 32, 32}, DType::F32, 10, 0};

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// init_weights leaves BatchNorm at weight 1, bias 0, mean 0, var 1, which would hide a wrong fold
// of the running statistics: give every BatchNorm tensor distinct values.
void perturb_batchnorm(const ir::Model& m, WeightSet& w, std::uint64_t seed) {
  Rng rng(seed);
  for (const ir::WeightSpec& s : ir::weight_specs(m)) {
    if (m.find(s.layer)->op != ir::Op::BatchNorm2d) continue;
    for (float& v : w.at(s.name).values<float>()) {
      if (s.param == "weight")
        v = static_cast<float>(rng.uniform(0.5, 1.5));
      else if (s.param == "bias")
        v = static_cast<float>(rng.uniform(-0.2, 0.2));
      else if (s.param == "running_mean")
        v = static_cast<float>(rng.uniform(-0.3, 0.3));
      else
        v = static_cast<float>(rng.uniform(0.5, 2.0));
    }
  }
}

Tensor random_images(const Shape& sample, std::int64_t n, std::uint64_t seed) {
  Shape s = sample;
  s.insert(s.begin(), n);
  Tensor x(DType::F32, s, Layout::NCHW);
  Rng rng(seed);
  for (float& v : x.values<float>()) v = static_cast<float>(rng.normal());
  return x;
}

Tensor logits_of(Framework& fw, const ir::Model& m, const WeightSet& w, const Tensor& x) {
  Status st;
  auto r = fw.load(m, w, RunOptions{}, st);
  EXPECT_TRUE(st.is_ok()) << st.message();
  Tensor out;
  if (!r) return out;
  st = r->infer(x, out);
  EXPECT_TRUE(st.is_ok()) << st.message();
  return out;
}

std::int64_t argmax_row(const Tensor& t, std::int64_t row) {
  const auto v = t.values<float>();
  const std::int64_t c = t.dim(1);
  std::int64_t best = 0;
  for (std::int64_t j = 1; j < c; ++j)
    if (v[row * c + j] > v[row * c + best]) best = j;
  return best;
}

void expect_same_top1(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  for (std::int64_t i = 0; i < a.dim(0); ++i) EXPECT_EQ(argmax_row(a, i), argmax_row(b, i)) << i;
}

// The model truncated after `layer`, flattened when the output is a map, so that LibTorch's logits
// are that layer's output: the reference for one dlib layer output.
ir::Model truncated(const ir::Model& m, const std::string& layer, WeightSet& w,
                    const WeightSet& full) {
  ir::Model t = m;
  t.layers.clear();
  for (const ir::Layer& l : m.layers) {
    t.layers.push_back(l);
    if (l.name == layer) break;
  }
  const Shape s = ir::infer_shapes(t).back();
  if (s.size() > 1) {
    ir::Layer f;
    f.name = "probe.flatten";
    f.op = ir::Op::Flatten;
    t.layers.push_back(f);
  }
  t.num_classes = shape_numel(s);
  w = WeightSet{};
  for (const ir::WeightSpec& spec : ir::weight_specs(t)) w.set(spec.name, full.at(spec.name));
  return t;
}

// Every layer output dlib reports against LibTorch's output of the same IR layer.
double layer_outputs_vs_torch(const ir::Model& m, const WeightSet& w, const Tensor& x,
                              std::vector<std::string>& names) {
  auto dl = make_framework("dlib");
  auto th = make_framework("torch");
  Status st;
  auto r = dl->load(m, w, RunOptions{}, st);
  EXPECT_TRUE(st.is_ok()) << st.message();
  if (!r) return INFINITY;
  std::vector<LayerOutput> outs;
  st = r->layer_outputs(x, outs);
  EXPECT_TRUE(st.is_ok()) << st.message();
  double worst = 0;
  for (const LayerOutput& o : outs) {
    SCOPED_TRACE(o.layer);
    names.push_back(o.layer);
    const ir::Layer* l = m.find(o.layer);
    EXPECT_NE(l, nullptr);
    if (l == nullptr) continue;
    WeightSet tw;
    const ir::Model t = truncated(m, o.layer, tw, w);
    const Tensor ref = logits_of(*th, t, tw, x);
    const Tensor got = o.value.reshaped({x.dim(0), o.value.numel() / x.dim(0)}, Layout::NC);
    const double d = max_abs_diff(got, ref);
    EXPECT_LE(d, 1e-5);
    worst = std::max(worst, d);
  }
  return worst;
}

}  // namespace

// Same weights (BatchNorm statistics perturbed), Fashion-MNIST images and random 3x32x32 ones:
// evaluation-mode logits as LibTorch's, same top-1.
TEST(DlibResnet, EvalLogitsMatchTorch) {
  REQUIRE_ADAPTER("dlib");
  REQUIRE_ADAPTER("torch");
  auto dl = make_framework("dlib");
  auto th = make_framework("torch");
  const Dataset ds = fashion_subset(1, 64);
  const Tensor fx = make_batch(ds, ds.test, first_n(64));
  for (const auto& [spec, x] :
       {std::pair{kFashion, fx}, {kCifar, random_images({3, 32, 32}, 8, 3)}}) {
    const ir::Model m = zoo::build("resnet20", spec);
    SCOPED_TRACE(shape_str(m.input_shape));
    ASSERT_TRUE(dl->supports(m).ok) << dl->supports(m).why;
    WeightSet w = init_weights(m, 11);
    perturb_batchnorm(m, w, 12);
    const auto t0 = std::chrono::steady_clock::now();
    const Tensor ld = logits_of(*dl, m, w, x);
    const double dlib_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const Tensor lt = logits_of(*th, m, w, x);
    ASSERT_EQ(ld.shape(), (Shape{x.dim(0), 10}));
    const double d = max_abs_diff(ld, lt);
    // Measured: 1x28x28, 64 images: 1.8e-7; 3x32x32, 8 images: 1.2e-7.
    EXPECT_LE(d, 1e-5);
    expect_same_top1(ld, lt);
    RecordProperty("resnet20_" + shape_str(m.input_shape) + "_max_abs_logit_diff", sci(d));
    RecordProperty("resnet20_" + shape_str(m.input_shape) + "_dlib_load_infer_s", sci(dlib_s));
  }
}

TEST(DlibVgg, EvalLogitsMatchTorch) {
  REQUIRE_ADAPTER("dlib");
  REQUIRE_ADAPTER("torch");
  auto dl = make_framework("dlib");
  auto th = make_framework("torch");
  const Dataset ds = fashion_subset(1, 8);
  const Tensor fx = make_batch(ds, ds.test, first_n(8));
  for (const auto& [spec, x] :
       {std::pair{kFashion, fx}, {kCifar, random_images({3, 32, 32}, 2, 4)}}) {
    const ir::Model m = zoo::build("vgg16", spec);
    SCOPED_TRACE(shape_str(m.input_shape));
    ASSERT_TRUE(dl->supports(m).ok) << dl->supports(m).why;
    WeightSet w = init_weights(m, 21);
    perturb_batchnorm(m, w, 22);
    const Tensor ld = logits_of(*dl, m, w, x);
    const Tensor lt = logits_of(*th, m, w, x);
    ASSERT_EQ(ld.shape(), (Shape{x.dim(0), 10}));
    const double d = max_abs_diff(ld, lt);
    // Measured: 1x28x28, 8 images: 3.0e-8; 3x32x32, 2 images: 3.5e-8.
    EXPECT_LE(d, 1e-5);
    expect_same_top1(ld, lt);
    RecordProperty("vgg16_" + shape_str(m.input_shape) + "_max_abs_logit_diff", sci(d));
  }
}

// dlib computes conv -> affine -> relu in one buffer (in-place layers), so those come back under
// the last name; every reported output matches LibTorch's output of that IR layer.
TEST(DlibResnet, LayerOutputsMatchTorchByIrName) {
  REQUIRE_ADAPTER("dlib");
  REQUIRE_ADAPTER("torch");
  const Dataset ds = fashion_subset(1, 8);
  const Tensor x = make_batch(ds, ds.test, first_n(8));
  const ir::Model m = zoo::build("resnet20", kFashion);
  WeightSet w = init_weights(m, 31);
  perturb_batchnorm(m, w, 32);
  std::vector<std::string> names;
  const double worst = layer_outputs_vs_torch(m, w, x, names);
  // Measured: 8.3e-7 over the 33 outputs.
  RecordProperty("max_abs_layer_diff", sci(worst));
  const std::vector<std::string> head = {"relu1", "stage1.block0.relu1", "stage1.block0.bn2",
                                         "stage1.block0.relu2"};
  ASSERT_GE(names.size(), head.size());
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + 4), head);
  EXPECT_NE(std::find(names.begin(), names.end(), "stage2.block0.shortcut.bn"), names.end());
  const std::vector<std::string> tail = {"pool", "flatten", "fc"};
  EXPECT_EQ(std::vector<std::string>(names.end() - 3, names.end()), tail);
  EXPECT_EQ(names.size(), 33u);
}

TEST(DlibVgg, LayerOutputsMatchTorchByIrName) {
  REQUIRE_ADAPTER("dlib");
  REQUIRE_ADAPTER("torch");
  const Dataset ds = fashion_subset(1, 2);
  const Tensor x = make_batch(ds, ds.test, first_n(2));
  const ir::Model m = zoo::build("vgg16", kFashion);
  WeightSet w = init_weights(m, 41);
  perturb_batchnorm(m, w, 42);
  std::vector<std::string> names;
  const double worst = layer_outputs_vs_torch(m, w, x, names);
  // Measured: 1.2e-6 over the 21 outputs.
  RecordProperty("max_abs_layer_diff", sci(worst));
  // 13 conv+bn+relu (reported as relu), 4 pools, pool5, flatten, relu_fc1 (fc1 fused), fc2.
  EXPECT_EQ(names.size(), 21u);
  EXPECT_EQ(names.front(), "relu1_1");
  EXPECT_EQ(names.back(), "fc2");
}

// Training from identical weights on identical batches: dlib's BatchNorm uses batch statistics
// like PyTorch's training mode, and the adapter's running statistics follow torch's momentum rule
// with the unbiased variance. After one SGD step the running statistics (a function of the forward
// pass only) agree to float rounding. The weights do not agree as closely: dlib's CPU bn_
// accumulates the batch statistics and its backward sums in float (variance as E[x^2]-mean^2), so
// its BatchNorm gradients differ from LibTorch's by ~1% of the step (the evaluation-mode input
// gradients agree to 3e-11, LeNet-5's SGD steps to 7.5e-9), and the gap grows with every step.
TEST(DlibResnet, TrainingStepsMatchTorchWithRunningStats) {
  REQUIRE_ADAPTER("dlib");
  REQUIRE_ADAPTER("torch");
  auto dl = make_framework("dlib");
  auto th = make_framework("torch");
  const std::int64_t batch = 16;
  const int steps = 3;
  const Dataset ds = fashion_subset(batch * steps, 16);
  const ir::Model m = zoo::build("resnet20", kFashion);
  const WeightSet init = init_weights(m, 5);
  TrainConfig cfg;
  cfg.lr = 0.02;
  cfg.momentum = 0.9;
  cfg.weight_decay = 5e-4;
  Status st;
  auto td = dl->trainer(m, init, cfg, st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  auto tt = th->trainer(m, init, cfg, st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  // Largest difference of the parameters and of the running statistics.
  auto gaps = [&](double& params, double& stats) {
    WeightSet wd, wt;
    ASSERT_TRUE(td->export_weights(wd).is_ok());
    ASSERT_TRUE(tt->export_weights(wt).is_ok());
    ASSERT_EQ(wd.names(), wt.names());
    EXPECT_GT(max_abs_diff(wd, init), 1e-3);  // the steps did move the weights
    params = stats = 0;
    for (const std::string& n : wd.names()) {
      double& g = n.find(".running_") != std::string::npos ? stats : params;
      g = std::max(g, max_abs_diff(wd.at(n), wt.at(n)));
    }
  };
  double first_loss_gap = 0, params1 = 0, stats1 = 0;
  for (int s = 0; s < steps; ++s) {
    std::vector<std::int64_t> idx(static_cast<std::size_t>(batch));
    std::iota(idx.begin(), idx.end(), s * batch);
    const Tensor x = make_batch(ds, ds.train, idx);
    const Tensor y = make_labels(ds.train, idx);
    double ld = 0, lt = 0;
    st = td->step(x, y, cfg.lr, ld);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_TRUE(tt->step(x, y, cfg.lr, lt).is_ok());
    if (s == 0) {
      first_loss_gap = std::fabs(ld - lt);
      gaps(params1, stats1);
    }
  }
  double params3 = 0, stats3 = 0;
  gaps(params3, stats3);
  // Measured: first loss 3.9e-6; after one step parameters 1.1e-4 (steps of ~1e-2), running
  // statistics 1.8e-6; after three steps parameters 9.5e-3, running statistics 3.3e-3.
  EXPECT_LE(first_loss_gap, 1e-5);
  EXPECT_LE(stats1, 1e-5);
  EXPECT_LE(params1, 5e-4);
  EXPECT_LE(params3, 5e-2);
  EXPECT_LE(stats3, 2e-2);
  const Tensor x = make_batch(ds, ds.test, first_n(16));
  Tensor ed, et;
  ASSERT_TRUE(td->infer(x, ed).is_ok());
  ASSERT_TRUE(tt->infer(x, et).is_ok());
  const double eval_gap = max_abs_diff(ed, et);
  EXPECT_LE(eval_gap, 1e-2);  // measured: 1.3e-3
  RecordProperty("first_loss_diff", sci(first_loss_gap));
  RecordProperty("one_step_params_max_diff", sci(params1));
  RecordProperty("one_step_running_stats_max_diff", sci(stats1));
  RecordProperty("three_step_params_max_diff", sci(params3));
  RecordProperty("three_step_running_stats_max_diff", sci(stats3));
  RecordProperty("eval_logits_max_diff", sci(eval_gap));
}

// VGG-16's training type (13 bn_con layers, the last ones on 3x3 and 1x1 maps) takes a step like
// LibTorch's: the same loss and running statistics to float rounding; the weights only within the
// BatchNorm gradient gap described above.
TEST(DlibVgg, OneTrainingStepMatchesTorch) {
  REQUIRE_ADAPTER("dlib");
  REQUIRE_ADAPTER("torch");
  auto dl = make_framework("dlib");
  auto th = make_framework("torch");
  const Dataset ds = fashion_subset(4, 1);
  const ir::Model m = zoo::build("vgg16", kFashion);
  const WeightSet init = init_weights(m, 9);
  TrainConfig cfg;
  cfg.lr = 0.02;
  cfg.momentum = 0.9;
  Status st;
  auto td = dl->trainer(m, init, cfg, st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  auto tt = th->trainer(m, init, cfg, st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  const Tensor x = make_batch(ds, ds.train, first_n(4));
  const Tensor y = make_labels(ds.train, first_n(4));
  double ld = 0, lt = 0;
  st = td->step(x, y, cfg.lr, ld);
  ASSERT_TRUE(st.is_ok()) << st.message();
  ASSERT_TRUE(tt->step(x, y, cfg.lr, lt).is_ok());
  WeightSet wd, wt;
  ASSERT_TRUE(td->export_weights(wd).is_ok());
  ASSERT_TRUE(tt->export_weights(wt).is_ok());
  ASSERT_EQ(wd.names(), wt.names());
  double params = 0, stats = 0;
  for (const std::string& n : wd.names()) {
    double& g = n.find(".running_") != std::string::npos ? stats : params;
    g = std::max(g, max_abs_diff(wd.at(n), wt.at(n)));
  }
  EXPECT_GT(max_abs_diff(wd, init), 1e-4);
  // Measured (batch 4): loss 9.9e-6, running statistics 1.4e-6, parameters 2.8e-3 -- wider than
  // ResNet-20's one-step gap, as the last BatchNorms normalise 4 values per channel (1x1 maps).
  EXPECT_LE(std::fabs(ld - lt), 5e-5);
  EXPECT_LE(stats, 1e-5);
  EXPECT_LE(params, 1e-2);
  RecordProperty("loss_diff", sci(ld - lt));
  RecordProperty("params_max_diff", sci(params));
  RecordProperty("running_stats_max_diff", sci(stats));
}

// dlib's bn_ silently switches to its inference formula on a batch of one; refused instead.
TEST(DlibResnet, BatchOfOneIsRefusedForTraining) {
  REQUIRE_ADAPTER("dlib");
  auto dl = make_framework("dlib");
  const ir::Model m = zoo::build("resnet20", kFashion);
  Status st;
  auto t = dl->trainer(m, init_weights(m, 1), TrainConfig{}, st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  Tensor y(DType::I64, {1});
  double loss = 0;
  st = t->step(Tensor(DType::F32, {1, 1, 28, 28}, Layout::NCHW), y, 0.01, loss);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find("batch of 1"), std::string::npos) << st.message();
}
