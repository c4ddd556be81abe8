// The `opencv` runtime (OpenCV DNN 4.6 reading crossdl's ONNX file) against the torch framework
// on the same weights, its per-layer outputs against torch runs of the model's prefixes, what it
// refuses, and bad artefacts.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "crossdl/runtime.h"
#include "crossdl/zoo.h"
#include "support.h"

#include "app_support.h"
#include "crossdl/compare.h"

using namespace crossdl;
using test::fashion_subset;
using test::first_n;
using test::max_abs_diff;
using test::torch_logits;

namespace {

#define REQUIRE_RUNTIME(name)                                       \
  do {                                                              \
    std::string why_;                                               \
    if (!test::runtime_built(name, &why_)) GTEST_SKIP() << why_;    \
    if (!test::adapter_built("torch", &why_)) GTEST_SKIP() << why_; \
  } while (0)

const Dataset& data() {
  static const Dataset ds = fashion_subset(64, 64);
  return ds;
}

Tensor images(std::int64_t n) {
  return make_batch(data(), data().test, first_n(n));
}

std::unique_ptr<Runner> load_rt(const std::string& runtime, const ir::Model& m, const WeightSet& w,
                                const std::string& tag, Status& st, double* load_ms = nullptr) {
  auto rt = make_runtime(runtime);
  Artefact a;
  st = rt->export_model(m, w, test::scratch_dir(tag), {}, a);
  if (!st.is_ok()) return nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = rt->load(a, m, RunOptions{}, st);
  if (load_ms)
    *load_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// Runs the logits and per-layer comparisons of `runtime` against torch for one model.
void compare_with_torch(const std::string& runtime, const char* name, double* logit_diff,
                        double* worst_layer) {
  const ir::Model m = zoo::build(name, zoo::input_spec(data()));
  const WeightSet w = init_weights(m, 7);
  Status st;
  double load_ms = 0;
  auto r = load_rt(runtime, m, w, runtime + "-" + name, st, &load_ms);
  ASSERT_TRUE(st.is_ok()) << st.message();
  ASSERT_TRUE(r);
  const Tensor x = images(64);
  Tensor logits;
  const auto t0 = std::chrono::steady_clock::now();
  st = r->infer(x, logits);
  const double run_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(st.is_ok()) << st.message();
  const Tensor ref = torch_logits(m, w, x);
  *logit_diff = max_abs_diff(logits, ref);
  EXPECT_LT(*logit_diff, 1e-4);
  EXPECT_EQ(argmax_rows(logits), argmax_rows(ref));

  const Tensor x8 = images(8);
  std::vector<LayerOutput> outs;
  st = r->layer_outputs(x8, outs);
  ASSERT_TRUE(st.is_ok()) << st.message();
  ASSERT_FALSE(outs.empty());
  EXPECT_EQ(outs.back().layer, m.layers.back().name);
  *worst_layer = 0;
  for (const LayerOutput& o : outs) {
    SCOPED_TRACE(o.layer);
    std::size_t k = 0;
    while (m.layers[k].name != o.layer) ++k;
    WeightSet wk;
    const ir::Model p = test::prefix_model(m, w, k, wk);
    const Tensor ref_k = torch_logits(p, wk, x8);
    const double d = max_abs_diff(o.value.reshaped({8, o.value.numel() / 8}), ref_k);
    *worst_layer = std::max(*worst_layer, d);
    EXPECT_LT(d, 1e-4);
  }
  std::printf(
      "[%s] %s: max|logits-torch| %.3g, %zu/%zu layers exposed, worst layer %.3g, load %.0f "
      "ms, infer(64) %.1f ms\n",
      runtime.c_str(), name, *logit_diff, outs.size(), m.layers.size(), *worst_layer, load_ms,
      run_ms);
}

}  // namespace

TEST(OpencvRuntime, ReportsItsVersion) {
  REQUIRE_RUNTIME("opencv");
  std::string why = "stale";
  EXPECT_EQ(find_backend("opencv")->probe(why), "4.6.0");
  EXPECT_TRUE(why.empty());
  const FrameworkInfo fi = make_runtime("opencv")->info();
  EXPECT_EQ(fi.name, "opencv");
  EXPECT_EQ(fi.library, "OpenCV DNN");
}

// Same weights (init_weights seed 7), 64 Fashion-MNIST test images. Measured here: max
// |OpenCV - torch| logits lenet5 6.0e-08, resnet20 3.7e-08, top-1 identical; every IR layer is
// exposed (12 and 73) and the worst layer differs by 7.2e-07 and 9.5e-07.
TEST(OpencvRuntime, LeNet5LogitsAndLayersMatchTorch) {
  REQUIRE_RUNTIME("opencv");
  double d = 0, worst = 0;
  compare_with_torch("opencv", "lenet5", &d, &worst);
}

TEST(OpencvRuntime, ResNet20LogitsAndLayersMatchTorch) {
  REQUIRE_RUNTIME("opencv");
  double d = 0, worst = 0;
  compare_with_torch("opencv", "resnet20", &d, &worst);
}

TEST(OpencvRuntime, CorruptOrTruncatedArtefactIsBadInput) {
  REQUIRE_RUNTIME("opencv");
  const ir::Model m = zoo::build("lenet5", zoo::input_spec(data()));
  auto rt = make_runtime("opencv");
  Artefact a;
  ASSERT_TRUE(
      rt->export_model(m, init_weights(m, 1), test::scratch_dir("opencv-corrupt"), {}, a).is_ok());
  auto bytes = test::read_bytes(a.files[0]);
  bytes.resize(bytes.size() / 2);
  test::write_bytes(a.files[0], bytes);
  Status st;
  EXPECT_EQ(rt->load(a, m, {}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find(a.files[0]), std::string::npos) << st.message();
  test::write_bytes(a.files[0], std::vector<std::byte>(100, std::byte{0x08}));
  EXPECT_EQ(rt->load(a, m, {}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
}

TEST(OpencvRuntime, WrongInputShapeIsBadInput) {
  REQUIRE_RUNTIME("opencv");
  const ir::Model m = zoo::build("lenet1", zoo::input_spec(data()));
  Status st;
  auto r = load_rt("opencv", m, init_weights(m, 1), "opencv-shape", st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  Tensor logits;
  st = r->infer(Tensor(DType::F32, {2, 1, 28, 27}), logits);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find("[2,1,28,27]"), std::string::npos) << st.message();
  EXPECT_TRUE(r->infer(images(2), logits).is_ok());
}

// Findings: OpenCV 4.6 cannot import crossdl's LSTM/GRU files (they pass the ONNX checker and run
// in ONNX Runtime). Loading lstm.onnx fails with "parseSqueeze ... (-215:Assertion failed)
// node_proto.input_size() == 1" (opset-13 Squeeze with axes as an input); gru.onnx with
// "parseGRU ... (-215:Assertion failed) node_proto.input_size() == 6". The runtime refuses both
// up front, naming the layer and the assertion.
TEST(OpencvRuntime, RecurrentModelsAreRefusedWithOpenCvsAssertion) {
  REQUIRE_RUNTIME("opencv");
  const struct {
    const char* model;
    const char* why;
  } cases[] = {{"lstm", "parseSqueeze"}, {"gru", "parseGRU"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.model);
    const ir::Model m = zoo::build(c.model, zoo::input_spec(data()));
    const Capability cap = make_runtime("opencv")->supports(m);
    EXPECT_FALSE(cap.ok);
    EXPECT_NE(cap.why.find(c.why), std::string::npos) << cap.why;
    Artefact a;
    Status st;
    EXPECT_EQ(make_runtime("opencv")->load(a, m, {}, st), nullptr);
    EXPECT_EQ(st.code(), Status::Code::Unsupported);
  }
}

TEST(OpencvRuntime, TokenModelsAreRefusedWithTheReason) {
  REQUIRE_RUNTIME("opencv");
  const ir::Model m = zoo::build("lstm", zoo::InputSpec{{16}, DType::I64, 2, 50});
  const Capability c = make_runtime("opencv")->supports(m);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.why.find("int64"), std::string::npos) << c.why;
  Artefact a;
  const Status st = make_runtime("opencv")->export_model(m, init_weights(m, 1),
                                                         test::scratch_dir("cv-tok"), {}, a);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
}

// OpenCV's Darknet importer on the cfg + weights crossdl writes (darknet_write). Measured: max
// |OpenCV-Darknet - torch| logits lenet1 2.4e-07, lenet5 6.0e-08, resnet20 2.9e-06 (its importer
// fixes BatchNorm's eps at 1e-6, the IR's is 1e-5); layers: one per Darknet section (6/8, 8/12,
// 33/73 IR layers), worst 7.2e-07, 7.2e-07, 2.2e-05.
TEST(OpencvDarknetRuntime, LogitsAndLayersMatchTorch) {
  REQUIRE_RUNTIME("opencv-darknet");
  for (const char* name : {"lenet1", "lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    double d = 0, worst = 0;
    compare_with_torch("opencv-darknet", name, &d, &worst);
  }
}

TEST(OpencvDarknetRuntime, TruncatedWeightsAreBadInput) {
  REQUIRE_RUNTIME("opencv-darknet");
  const ir::Model m = zoo::build("lenet5", zoo::input_spec(data()));
  auto rt = make_runtime("opencv-darknet");
  Artefact a;
  ASSERT_TRUE(
      rt->export_model(m, init_weights(m, 1), test::scratch_dir("cvdn-corrupt"), {}, a).is_ok());
  ASSERT_EQ(a.format, "darknet");
  ASSERT_EQ(a.files.size(), 2u);
  auto bytes = test::read_bytes(a.files[1]);
  bytes.resize(bytes.size() - 4);
  test::write_bytes(a.files[1], bytes);
  Status st;
  EXPECT_EQ(rt->load(a, m, {}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find(a.files[1]), std::string::npos) << st.message();
}

TEST(OpencvDarknetRuntime, RefusesWhatDarknetCannotExpress) {
  REQUIRE_RUNTIME("opencv-darknet");
  const ir::Model m = zoo::build("lstm", zoo::input_spec(data()));
  const Capability c = make_runtime("opencv-darknet")->supports(m);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.why.find("lstm"), std::string::npos) << c.why;
}

// VGG-16 (CIFAR shape: conv bias and BatchNorm together) on 4 random 3x32x32 inputs, in OpenCV
// from ONNX and in ONNX Runtime when built. Measured: max |OpenCV - torch| 7.5e-09, |ORT - torch|
// 6.5e-09 (an untrained VGG-16's logits are at most 0.053 here).
TEST(OpencvRuntime, Vgg16LogitsMatchTorch) {
  REQUIRE_RUNTIME("opencv");
  const ir::Model m = zoo::build("vgg16", zoo::InputSpec{{3, 32, 32}, DType::F32, 10, 0});
  const WeightSet w = init_weights(m, 2);
  Tensor x(DType::F32, {4, 3, 32, 32});
  Rng rng(3);
  for (float& v : x.values<float>()) v = static_cast<float>(rng.uniform(-1, 1));
  const Tensor ref = torch_logits(m, w, x);
  std::vector<std::string> runtimes = {"opencv"};
  if (test::runtime_built("ort")) runtimes.push_back("ort");
  for (const std::string& rt : runtimes) {
    SCOPED_TRACE(rt);
    Status st;
    auto r = load_rt(rt, m, w, rt + "-vgg16", st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor logits;
    st = r->infer(x, logits);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const double d = max_abs_diff(logits, ref);
    std::printf("[%s] vgg16: max|logits-torch| %.3g (torch logits up to %.3g)\n", rt.c_str(), d,
                static_cast<double>(
                    *std::max_element(ref.values<float>().begin(), ref.values<float>().end())));
    EXPECT_LT(d, 1e-4);
    EXPECT_EQ(argmax_rows(logits), argmax_rows(ref));
  }
}

// VGG-16 through OpenCV's Darknet importer: the conv biases are cancelled into Darknet's rolling
// mean by darknet_write (see DarknetLayer::conv_bias), with biases up to 0.5 and BN statistics
// away from (0, 1) so that a wrong compensation shows. 4 random 3x32x32 inputs. Measured: max
// |OpenCV-Darknet - torch| 1.4e-07 (logits up to 0.057; BN eps 1e-6 instead of the IR's 1e-5).
TEST(OpencvDarknetRuntime, Vgg16LogitsMatchTorch) {
  REQUIRE_RUNTIME("opencv-darknet");
  const ir::Model m = zoo::build("vgg16", zoo::InputSpec{{3, 32, 32}, DType::F32, 10, 0});
  WeightSet w = init_weights(m, 2);
  Rng rng(12);
  for (std::size_t i = 0; i + 1 < m.layers.size(); ++i) {
    if (m.layers[i].op != ir::Op::Conv2d) continue;
    const std::string b = m.layers[i].name + ".bias", bn = m.layers[i + 1].name;
    Tensor bias = w.at(b), mean = w.at(bn + ".running_mean"), var = w.at(bn + ".running_var");
    auto bv = bias.values<float>(), mv = mean.values<float>(), vv = var.values<float>();
    for (std::size_t c = 0; c < bv.size(); ++c) {
      bv[c] = static_cast<float>(rng.uniform(-0.5, 0.5));
      mv[c] = bv[c] + static_cast<float>(rng.uniform(-0.1, 0.1));
      vv[c] = static_cast<float>(rng.uniform(0.5, 1.5));
    }
    w.set(b, bias);
    w.set(bn + ".running_mean", mean);
    w.set(bn + ".running_var", var);
  }
  Tensor x(DType::F32, {4, 3, 32, 32});
  for (float& v : x.values<float>()) v = static_cast<float>(rng.uniform(-1, 1));
  const Tensor ref = torch_logits(m, w, x);
  Status st;
  auto r = load_rt("opencv-darknet", m, w, "opencv-darknet-vgg16", st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  Tensor logits;
  st = r->infer(x, logits);
  ASSERT_TRUE(st.is_ok()) << st.message();
  const double d = max_abs_diff(logits, ref);
  std::printf("[opencv-darknet] vgg16: max|logits-torch| %.3g (torch logits up to %.3g)\n", d,
              static_cast<double>(
                  *std::max_element(ref.values<float>().begin(), ref.values<float>().end())));
  EXPECT_LT(d, 1e-4);
  EXPECT_EQ(argmax_rows(logits), argmax_rows(ref));
}
