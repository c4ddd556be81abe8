// The tflite and armnn runtimes, which both run the .tflite files crossdl writes, against the
// torch framework on the same weights and Fashion-MNIST test images: logits, top-1, every layer's
// output mapped back to the IR, batches, and clear errors on damaged files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "crossdl/runtime.h"
#include "crossdl/zoo.h"

#include "app_support.h"
#include "crossdl/compare.h"
#include "support.h"

using namespace crossdl;
using test::fashion_subset;
using test::first_n;
using test::max_abs_diff;
using test::torch_logits;

namespace {

const zoo::InputSpec kMnistLike{{1, 28, 28}, DType::F32, 10, 0};

// How much each runtime is asked to run: Arm NN's CpuRef backend is a slow reference
// implementation, so it sees fewer images.
struct Case {
  const char* runtime;
  std::int64_t logit_images;
  std::int64_t layer_images;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.runtime;
}

// init_weights gives BatchNorm the identity (mean 0, var 1, scale 1, shift 0); trained-looking
// statistics make folding and MUL+ADD actually do something.
WeightSet weights_for(const ir::Model& m, std::uint64_t seed) {
  WeightSet w = init_weights(m, seed);
  Rng r(seed * 7919 + 1);
  for (const ir::Layer& l : m.layers) {
    if (l.op != ir::Op::BatchNorm2d) continue;
    auto fill = [&](const char* p, double lo, double hi) {
      for (float& v : w.at(l.name + "." + p).values<float>())
        v = static_cast<float>(r.uniform(lo, hi));
    };
    fill("weight", 0.5, 1.5);
    fill("bias", -0.2, 0.2);
    fill("running_mean", -0.3, 0.3);
    fill("running_var", 0.4, 2.0);
  }
  return w;
}

// Each layer's output from torch: the model cut after that layer (test::prefix_model) run by torch.
std::vector<LayerOutput> torch_layers(const ir::Model& m, const WeightSet& w, const Tensor& x) {
  std::vector<LayerOutput> out;
  const std::vector<Shape> shapes = ir::infer_shapes(m);
  for (std::size_t k = 0; k < m.layers.size(); ++k) {
    WeightSet wk;
    const ir::Model p = test::prefix_model(m, w, k, wk);
    Shape full{x.dim(0)};
    full.insert(full.end(), shapes[k].begin(), shapes[k].end());
    out.push_back({m.layers[k].name, torch_logits(p, wk, x).reshaped(full)});
  }
  return out;
}

class TfliteFiles : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    std::string why;
    if (!test::runtime_built(GetParam().runtime, &why)) GTEST_SKIP() << why;
    if (!test::adapter_built("torch", &why)) GTEST_SKIP() << why;
    rt_ = make_runtime(GetParam().runtime);
  }
  std::unique_ptr<Runner> export_and_load(const ir::Model& m, const WeightSet& w,
                                          const std::string& tag, bool layer_outputs, Artefact& a) {
    const std::string dir = test::scratch_dir(std::string(GetParam().runtime) + "-" + tag);
    ExportOptions eo;
    eo.layer_outputs = layer_outputs;
    Status st = rt_->export_model(m, w, dir, eo, a);
    EXPECT_TRUE(st.is_ok()) << st.message();
    if (!st.is_ok()) return nullptr;
    EXPECT_EQ(a.format, "tflite");
    EXPECT_EQ(a.files.size(), 1u);
    EXPECT_EQ(a.bytes, std::filesystem::file_size(a.files.at(0)));
    auto r = rt_->load(a, m, RunOptions{}, st);
    EXPECT_TRUE(st.is_ok()) << st.message();
    return r;
  }
  std::unique_ptr<Runtime> rt_;
};

TEST_P(TfliteFiles, ReportsItsLibrary) {
  const FrameworkInfo fi = rt_->info();
  EXPECT_EQ(fi.name, GetParam().runtime);
  EXPECT_EQ(fi.device, "cpu");
  std::string why;
  const std::string v = find_backend(GetParam().runtime)->probe(why);
  EXPECT_EQ(v, fi.version) << why;
  EXPECT_EQ(v.rfind(std::string(GetParam().runtime) == "tflite" ? "2.9" : "20.08", 0), 0u) << v;
}

// Measured here (seed 11, BatchNorm statistics randomised), max |logit - torch|, tflite on 64 /
// armnn on 16 images: LeNet-1 2.2e-07 / 1.8e-07, LeNet-5 5.2e-08 / 4.5e-08, ResNet-20 (BatchNorm
// folded into the convs) 1.8e-07 / 2.1e-07. Top-1 identical on every image.
TEST_P(TfliteFiles, LogitsMatchTorchOnFashionMnist) {
  const Dataset ds = fashion_subset(0, GetParam().logit_images);
  const Tensor x = make_batch(ds, ds.test, first_n(GetParam().logit_images));
  for (const char* name : {"lenet1", "lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, kMnistLike);
    const WeightSet w = weights_for(m, 11);
    Artefact a;
    auto r = export_and_load(m, w, name, false, a);
    ASSERT_TRUE(r);
    Tensor got;
    const Status st = r->infer(x, got);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const Tensor want = torch_logits(m, w, x);
    const double d = max_abs_diff(got, want);
    std::printf("[ %s ] %s: max |logit - torch| = %.3g over %lld images (%s)\n", GetParam().runtime,
                name, d, static_cast<long long>(x.dim(0)), a.conversions.c_str());
    EXPECT_LT(d, 1e-4);
    EXPECT_EQ(argmax_rows(got), argmax_rows(want));
  }
}

// VGG-16 (CIFAR variant: convolutions with a bias *and* a BatchNorm, folded together) on
// CIFAR-shaped random inputs (no CIFAR-10 copy can be had here).
// Measured here: max |logit - torch| 3.7e-08 (tflite, 16 inputs), 3.0e-08 (armnn, 2 inputs).
TEST_P(TfliteFiles, Vgg16MatchesTorch) {
  const std::int64_t n = std::string(GetParam().runtime) == "armnn" ? 2 : 16;
  const ir::Model m = zoo::build("vgg16", zoo::InputSpec{{3, 32, 32}, DType::F32, 10, 0});
  const WeightSet w = weights_for(m, 17);
  Tensor x(DType::F32, {n, 3, 32, 32});
  Rng r(3);
  for (float& v : x.values<float>()) v = static_cast<float>(r.normal());
  Artefact a;
  auto run = export_and_load(m, w, "vgg16", false, a);
  ASSERT_TRUE(run);
  Tensor got;
  const Status st = run->infer(x, got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  const Tensor want = torch_logits(m, w, x);
  const double d = max_abs_diff(got, want);
  std::printf("[ %s ] vgg16: max |logit - torch| = %.3g over %lld inputs\n", GetParam().runtime, d,
              static_cast<long long>(n));
  EXPECT_LT(d, 1e-4);
  EXPECT_EQ(argmax_rows(got), argmax_rows(want));
}

// Pools whose padding TFLite can say as SAME: a padded max pool must ignore the padding and a
// padded average pool must not count it (PyTorch's count_include_pad=false), in both runtimes.
TEST_P(TfliteFiles, SamePaddedPoolsMatchTorch) {
  const Dataset ds = fashion_subset(0, GetParam().layer_images * 2);
  const Tensor x = make_batch(ds, ds.test, first_n(GetParam().layer_images * 2));
  for (const ir::Op op : {ir::Op::MaxPool2d, ir::Op::AvgPool2d}) {
    SCOPED_TRACE(std::string(ir::op_name(op)));
    ir::Model m = zoo::build("lenet1", kMnistLike);
    for (auto& l : m.layers)
      if (l.name == "pool1") {
        l.op = op;
        l.kernel[0] = l.kernel[1] = 3;
        l.stride[0] = l.stride[1] = 1;
        l.pad[0] = l.pad[1] = 1;
      }
    const WeightSet w = init_weights(m, 21);
    Artefact a;
    auto r = export_and_load(m, w, std::string(ir::op_name(op)), true, a);
    ASSERT_TRUE(r);
    std::vector<LayerOutput> got;
    const Status st = r->layer_outputs(x, got);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const std::vector<LayerOutput> want = torch_layers(m, w, x);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(max_abs_diff(got[i].value, want[i].value), 1e-5) << got[i].layer;
  }
}

// Measured here, worst per-layer max |diff| with torch: tflite (8 images) LeNet-5 4.8e-07,
// ResNet-20 8.9e-07 (73 layers, BatchNorm as MUL+ADD); armnn (2 images) 7.2e-07, 8.3e-07.
TEST_P(TfliteFiles, EveryLayerOutputMatchesTorch) {
  const Dataset ds = fashion_subset(0, GetParam().layer_images);
  const Tensor x = make_batch(ds, ds.test, first_n(GetParam().layer_images));
  for (const char* name : {"lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, kMnistLike);
    const WeightSet w = weights_for(m, 5);
    Artefact a;
    auto r = export_and_load(m, w, std::string(name) + "-layers", true, a);
    ASSERT_TRUE(r);
    std::vector<LayerOutput> got;
    const Status st = r->layer_outputs(x, got);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const std::vector<LayerOutput> want = torch_layers(m, w, x);
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].layer, want[i].layer);
      const double d = max_abs_diff(got[i].value, want[i].value);
      EXPECT_LT(d, 1e-4) << got[i].layer;
      worst = std::max(worst, d);
    }
    std::printf("[ %s ] %s: %zu layer outputs, worst max |diff| with torch = %.3g\n",
                GetParam().runtime, name, got.size(), worst);
    // The logits from layer_outputs are those infer gives.
    Tensor logits;
    ASSERT_TRUE(r->infer(x, logits).is_ok());
    EXPECT_TRUE(logits.identical(got.back().value) ||
                max_abs_diff(logits, got.back().value) == 0.0);
  }
}

TEST_P(TfliteFiles, LayerOutputsNeedTheExportOption) {
  const ir::Model m = zoo::build("lenet1", kMnistLike);
  Artefact a;
  auto r = export_and_load(m, init_weights(m, 1), "no-layers", false, a);
  ASSERT_TRUE(r);
  const Dataset ds = fashion_subset(0, 1);
  std::vector<LayerOutput> out;
  const Status st = r->layer_outputs(make_batch(ds, ds.test, first_n(1)), out);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
  EXPECT_NE(st.message().find("layer_outputs"), std::string::npos) << st.message();
}

// Batches of different sizes give each sample the logits it gets in any other batch.
TEST_P(TfliteFiles, BatchSizeDoesNotChangeResults) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  Artefact a;
  auto r = export_and_load(m, init_weights(m, 2), "batches", false, a);
  ASSERT_TRUE(r);
  const Dataset ds = fashion_subset(0, 6);
  const Tensor x = make_batch(ds, ds.test, first_n(6));
  Tensor all, one, three;
  ASSERT_TRUE(r->infer(x, all).is_ok());
  ASSERT_TRUE(r->infer(x.slice_rows(0, 1), one).is_ok());
  ASSERT_TRUE(r->infer(x.slice_rows(3, 6), three).is_ok());
  EXPECT_LT(max_abs_diff(one, all.slice_rows(0, 1)), 1e-6);
  EXPECT_LT(max_abs_diff(three, all.slice_rows(3, 6)), 1e-6);
  // A batch of the wrong image size is bad input, named.
  Tensor wrong(DType::F32, {2, 1, 32, 32});
  Tensor y;
  const Status st = r->infer(wrong, y);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find("[2,1,32,32]"), std::string::npos) << st.message();
}

TEST_P(TfliteFiles, DamagedFilesAreBadInputNamingTheFile) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  Artefact a;
  ASSERT_TRUE(export_and_load(m, init_weights(m, 3), "damaged", false, a));
  const std::string good = a.files.at(0);
  const std::vector<std::byte> bytes = test::read_bytes(good);
  struct Damage {
    const char* what;
    std::vector<std::byte> bytes;
  };
  std::vector<Damage> damages;
  damages.push_back({"truncated to half", {bytes.begin(), bytes.begin() + bytes.size() / 2}});
  damages.push_back({"empty", {}});
  std::vector<std::byte> id = bytes;
  id[4] = std::byte{'X'};
  damages.push_back({"wrong identifier", id});
  std::vector<std::byte> garbage = bytes;
  for (std::size_t i = 8; i < 64 && i < garbage.size(); ++i) garbage[i] = std::byte{0xff};
  damages.push_back({"root table offsets overwritten", garbage});
  for (const auto& d : damages) {
    SCOPED_TRACE(d.what);
    const std::string dir = test::scratch_dir(std::string(GetParam().runtime) + "-damage");
    const std::string path = dir + "/lenet5.tflite";
    test::write_bytes(path, d.bytes);
    Artefact bad = a;
    bad.dir = dir;
    bad.files = {path};
    Status st;
    auto r = rt_->load(bad, m, RunOptions{}, st);
    EXPECT_FALSE(r);
    EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
  }
  // An artefact without a .tflite file.
  Artefact none = a;
  none.files = {a.dir + "/model.onnx"};
  Status st;
  EXPECT_FALSE(rt_->load(none, m, RunOptions{}, st));
  EXPECT_EQ(st.code(), Status::Code::BadInput);
}

// LSTM and GRU, unrolled by the writer, on image rows and on embedded tokens.
// Measured here, max |logit - torch|: tflite (64 samples) LSTM 1.0e-07 and GRU 1.0e-07 on image
// rows, 4.5e-08 and 8.9e-08 on 40 tokens; armnn (16 samples) 6.0e-08 for both on image rows. Arm NN
// 20.08 cannot read the token models (its TfLite parser has no GATHER): a capability "no".
TEST_P(TfliteFiles, RecurrentModelsMatchTorch) {
  const std::int64_t n = GetParam().logit_images;
  const Dataset ds = fashion_subset(0, n);
  const Tensor images = make_batch(ds, ds.test, first_n(n));
  const zoo::InputSpec text{{40}, DType::I64, 2, 500};
  Tensor tokens(DType::I64, {n, 40});
  Rng r(5);
  for (auto& t : tokens.values<std::int64_t>()) t = static_cast<std::int64_t>(r.below(500));
  struct Rnn {
    const char* model;
    zoo::InputSpec spec;
    const Tensor* x;
  };
  for (const Rnn& c : {Rnn{"lstm", kMnistLike, &images}, Rnn{"gru", kMnistLike, &images},
                       Rnn{"lstm", text, &tokens}, Rnn{"gru", text, &tokens}}) {
    const std::string tag = std::string(c.model) + (c.x == &tokens ? "-text" : "-image");
    SCOPED_TRACE(tag);
    const ir::Model m = zoo::build(c.model, c.spec);
    const WeightSet w = init_weights(m, 13);
    const Capability cap = rt_->supports(m);
    if (std::string(GetParam().runtime) == "armnn" && c.x == &tokens) {
      // Arm NN 20.08's parser has no GATHER, which the Embedding needs.
      EXPECT_FALSE(cap.ok);
      EXPECT_NE(cap.why.find("embed (Embedding)"), std::string::npos) << cap.why;
      Artefact a;
      const Status st = rt_->export_model(m, w, test::scratch_dir("armnn-" + tag), {}, a);
      EXPECT_EQ(st.code(), Status::Code::Unsupported);
      continue;
    }
    ASSERT_TRUE(cap.ok) << cap.why;
    Artefact a;
    auto run = export_and_load(m, w, tag, false, a);
    ASSERT_TRUE(run);
    Tensor got;
    const Status st = run->infer(*c.x, got);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const Tensor want = torch_logits(m, w, *c.x);
    const double d = max_abs_diff(got, want);
    std::printf("[ %s ] %s: max |logit - torch| = %.3g over %lld samples\n", GetParam().runtime,
                tag.c_str(), d, static_cast<long long>(n));
    EXPECT_LT(d, 1e-4);
    EXPECT_EQ(argmax_rows(got), argmax_rows(want));
  }
}

INSTANTIATE_TEST_SUITE_P(Runtimes, TfliteFiles,
                         ::testing::Values(Case{"tflite", 64, 8}, Case{"armnn", 16, 2}),
                         [](const auto& info) { return std::string(info.param.runtime); });

}  // namespace

namespace {

// TFLite gets exactly RunOptions.threads. Like LibTorch, its result depends on the thread count:
// measured here on ResNet-20, 1 and 2 threads differ by 1.2e-07 (not bit-identical), each run
// being repeatable; the thread count is part of the run configuration.
TEST(TfliteRuntime, ThreadCountChangesLogitsOnlyByRounding) {
  std::string why;
  if (!test::runtime_built("tflite", &why)) GTEST_SKIP() << why;
  auto rt = make_runtime("tflite");
  const ir::Model m = zoo::build("resnet20", kMnistLike);
  Artefact a;
  ASSERT_TRUE(
      rt->export_model(m, weights_for(m, 4), test::scratch_dir("tflite-threads"), {}, a).is_ok());
  const Dataset ds = fashion_subset(0, 16);
  const Tensor x = make_batch(ds, ds.test, first_n(16));
  Tensor y[3];
  for (int k = 0; k < 3; ++k) {
    RunOptions o;
    o.threads = k == 2 ? 2 : 1;
    Status st;
    auto r = rt->load(a, m, o, st);
    ASSERT_TRUE(r) << st.message();
    ASSERT_TRUE(r->infer(x, y[k]).is_ok());
  }
  EXPECT_TRUE(y[0].identical(y[1]));  // the same thread count repeats bit for bit
  const double d = max_abs_diff(y[0], y[2]);
  std::printf("[ tflite ] resnet20: 1 vs 2 threads, max |logit difference| = %.3g\n", d);
  EXPECT_LT(d, 1e-5);
  RunOptions none;
  none.threads = 0;
  Status st;
  EXPECT_FALSE(rt->load(a, m, none, st));
  EXPECT_EQ(st.code(), Status::Code::BadInput);
}

}  // namespace
