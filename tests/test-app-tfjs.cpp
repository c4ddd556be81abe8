// The tfjs runtime (TensorFlow.js layers models run by @tensorflow/tfjs through web/web-helper.mjs;
// `tfjs` alone is `tfjs:cpu@node`, tests/test-app-web.cpp covers the browsers) against
// the torch framework on the same weights and Fashion-MNIST test images: logits, top-1, every
// layer's output mapped back to the IR, what it refuses, and clear errors on damaged artefacts.
// TF.js' cpu backend is plain JavaScript, so the image counts are small.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
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

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// init_weights gives BatchNorm the identity (mean 0, var 1, scale 1, shift 0); other statistics
// make the moved gamma/beta/mean/variance and epsilon actually matter.
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

std::unique_ptr<Runner> torch_runner(const ir::Model& m, const WeightSet& w) {
  Status st;
  auto r = make_framework("torch")->load(m, w, RunOptions{}, st);
  EXPECT_TRUE(st.is_ok()) << st.message();
  return r;
}

Tensor images(std::int64_t n) {
  const Dataset ds = fashion_subset(0, n);
  return make_batch(ds, ds.test, first_n(n));
}

// Random token ids in [0, vocab).
Tensor tokens(std::int64_t n, std::int64_t t, std::int64_t vocab, std::uint64_t seed) {
  Tensor x(DType::I64, {n, t});
  Rng r(seed);
  for (std::int64_t& v : x.values<std::int64_t>()) v = static_cast<std::int64_t>(r.below(vocab));
  return x;
}

class TfjsRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!test::runtime_built("tfjs", &why)) GTEST_SKIP() << why;
    if (!test::adapter_built("torch", &why)) GTEST_SKIP() << why;
    rt_ = make_runtime("tfjs");
  }
  std::unique_ptr<Runner> export_and_load(const ir::Model& m, const WeightSet& w,
                                          const std::string& tag, bool layer_outputs, Artefact& a,
                                          double* load_ms = nullptr) {
    ExportOptions eo;
    eo.layer_outputs = layer_outputs;
    Status st = rt_->export_model(m, w, test::scratch_dir("tfjs-" + tag), eo, a);
    EXPECT_TRUE(st.is_ok()) << st.message();
    if (!st.is_ok()) return nullptr;
    EXPECT_EQ(a.format, "tfjs");
    EXPECT_EQ(a.files.size(), 2u);
    std::uint64_t bytes = 0;
    for (const std::string& f : a.files) bytes += std::filesystem::file_size(f);
    EXPECT_EQ(a.bytes, bytes);
    const auto t0 = Clock::now();
    auto r = rt_->load(a, m, RunOptions{}, st);
    if (load_ms != nullptr) *load_ms = ms_since(t0);
    EXPECT_TRUE(st.is_ok()) << st.message();
    return r;
  }
  std::unique_ptr<Runtime> rt_;
};

// `tfjs` alone is `tfjs:cpu@node` (docs/web-protocol.md); once a model is loaded the runtime
// reports what the helper's start said: the Node version and the backend's device.
TEST_F(TfjsRuntimeTest, ReportsItsLibraryAndBackend) {
  const FrameworkInfo before = rt_->info();
  EXPECT_EQ(before.name, "tfjs:cpu@node");
  std::string why;
  const std::string v = find_backend("tfjs")->probe(why);
  EXPECT_EQ(v, before.version) << why;
  EXPECT_EQ(v.rfind("4.22", 0), 0u) << v;
  EXPECT_EQ(before.device.rfind("cpu", 0), 0u) << before.device;
  const ir::Model m = zoo::build("lenet1", kMnistLike);
  Artefact a;
  auto r = export_and_load(m, init_weights(m, 1), "info", false, a);
  ASSERT_TRUE(r);
  const FrameworkInfo after = rt_->info();
  EXPECT_EQ(after.library.rfind("TensorFlow.js " + v + " (cpu) in Node v", 0), 0u) << after.library;
  EXPECT_EQ(after.device.rfind("cpu", 0), 0u) << after.device;
  EXPECT_NE(after.device.find("JavaScript"), std::string::npos) << after.device;
}

// Measured here (32 images; seed 11, BatchNorm statistics randomised), max |logit - torch|:
// LeNet-5 3.0e-08, ResNet-20 (BatchNorm, Add, 'same' and ZeroPadding2D convs) 2.1e-07, LSTM on
// image rows 6.0e-08. Top-1 identical on every image. Load (Node start + TF.js + model) 0.66-0.69
// s; inference of the 32 images: LeNet-5 0.56 s, ResNet-20 6.6 s, LSTM 1.6 s (2 busy cores).
TEST_F(TfjsRuntimeTest, LogitsMatchTorchOnFashionMnist) {
  const Tensor x = images(32);
  for (const char* name : {"lenet5", "resnet20", "lstm"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, kMnistLike);
    const WeightSet w = weights_for(m, 11);
    Artefact a;
    double load_ms = 0;
    auto r = export_and_load(m, w, name, false, a, &load_ms);
    ASSERT_TRUE(r);
    Tensor got;
    const auto t0 = Clock::now();
    const Status st = r->infer(x, got);
    const double infer_ms = ms_since(t0);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const Tensor want = torch_logits(m, w, x);
    const double d = max_abs_diff(got, want);
    std::printf(
        "[ tfjs ] %s: max |logit - torch| = %.3g over %lld images; load %.0f ms, infer %.0f "
        "ms (%s)\n",
        name, d, static_cast<long long>(x.dim(0)), load_ms, infer_ms, a.conversions.c_str());
    EXPECT_LT(d, 1e-4);
    EXPECT_EQ(argmax_rows(got), argmax_rows(want));
  }
}

// Measured here (seed 4, 32 sequences of 16 tokens, vocabulary 50): max |logit - torch| 6.0e-08.
TEST_F(TfjsRuntimeTest, TextLstmWithEmbeddingMatchesTorch) {
  const ir::Model m = zoo::build("lstm", zoo::InputSpec{{16}, DType::I64, 2, 50});
  const WeightSet w = init_weights(m, 4);
  Artefact a;
  auto r = export_and_load(m, w, "text-lstm", false, a);
  ASSERT_TRUE(r);
  const Tensor x = tokens(32, 16, 50, 9);
  Tensor got;
  const Status st = r->infer(x, got);
  ASSERT_TRUE(st.is_ok()) << st.message();
  const Tensor want = torch_logits(m, w, x);
  const double d = max_abs_diff(got, want);
  std::printf("[ tfjs ] text lstm: max |logit - torch| = %.3g (%s)\n", d, a.conversions.c_str());
  EXPECT_LT(d, 1e-4);
  EXPECT_EQ(argmax_rows(got), argmax_rows(want));
}

// TF.js' GRUCell has no reset_after=true, and PyTorch's GRU needs it: a skip naming the layer.
TEST_F(TfjsRuntimeTest, GruIsRefusedNamingTheLayer) {
  for (const zoo::InputSpec& in : {kMnistLike, zoo::InputSpec{{16}, DType::I64, 2, 50}}) {
    const ir::Model m = zoo::build("gru", in);
    const Capability c = rt_->supports(m);
    EXPECT_FALSE(c.ok);
    EXPECT_NE(c.why.find("layer gru (GRU)"), std::string::npos) << c.why;
    EXPECT_NE(c.why.find("reset_after"), std::string::npos) << c.why;
    Artefact a;
    const Status st =
        rt_->export_model(m, init_weights(m, 1), test::scratch_dir("tfjs-gru"), {}, a);
    EXPECT_EQ(st.code(), Status::Code::Unsupported) << st.message();
  }
}

// Each layer output, in IR order and IR layout, against the torch framework's own layer outputs.
// Measured here (4 images), worst max |diff| over the layers: LeNet-5 2.4e-07 (12 layers),
// ResNet-20 8.3e-07 (73 layers), LSTM 6.0e-08 (3 layers).
TEST_F(TfjsRuntimeTest, EveryLayerOutputMatchesTorchByIrName) {
  const Tensor x = images(4);
  for (const char* name : {"lenet5", "resnet20", "lstm"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, kMnistLike);
    const WeightSet w = weights_for(m, 5);
    Artefact a;
    auto r = export_and_load(m, w, std::string(name) + "-layers", true, a);
    ASSERT_TRUE(r);
    std::vector<LayerOutput> got;
    Status st = r->layer_outputs(x, got);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto torch = torch_runner(m, w);
    ASSERT_TRUE(torch);
    std::vector<LayerOutput> want;
    st = torch->layer_outputs(x, want);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_EQ(got.size(), m.layers.size()) << "every IR layer is a model output";
    ASSERT_EQ(want.size(), got.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      SCOPED_TRACE(got[i].layer);
      EXPECT_EQ(got[i].layer, m.layers[i].name);
      ASSERT_EQ(got[i].layer, want[i].layer);
      const double d = max_abs_diff(got[i].value, want[i].value);
      EXPECT_LT(d, 1e-4);
      worst = std::max(worst, d);
    }
    std::printf("[ tfjs ] %s: %zu layer outputs, worst max |diff| with torch = %.3g\n", name,
                got.size(), worst);
    Tensor logits;
    ASSERT_TRUE(r->infer(x, logits).is_ok());
    EXPECT_EQ(max_abs_diff(logits, got.back().value), 0.0);
  }
}

TEST_F(TfjsRuntimeTest, LayerOutputsNeedTheExportOption) {
  const ir::Model m = zoo::build("lenet1", kMnistLike);
  Artefact a;
  auto r = export_and_load(m, init_weights(m, 1), "no-layers", false, a);
  ASSERT_TRUE(r);
  std::vector<LayerOutput> out;
  const Status st = r->layer_outputs(images(1), out);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
  EXPECT_NE(st.message().find("ExportOptions.layer_outputs"), std::string::npos) << st.message();
}

// Batches of different sizes give each sample the logits it gets in any other batch; a wrong
// input is bad input naming its shape; more than one thread is refused, not silently ignored.
TEST_F(TfjsRuntimeTest, BatchesInputsAndThreads) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  const WeightSet w = init_weights(m, 2);
  Artefact a;
  auto r = export_and_load(m, w, "batches", false, a);
  ASSERT_TRUE(r);
  const Tensor x = images(6);
  Tensor all, one, three;
  ASSERT_TRUE(r->infer(x, all).is_ok());
  ASSERT_TRUE(r->infer(x.slice_rows(0, 1), one).is_ok());
  ASSERT_TRUE(r->infer(x.slice_rows(3, 6), three).is_ok());
  EXPECT_LT(max_abs_diff(one, all.slice_rows(0, 1)), 1e-6);
  EXPECT_LT(max_abs_diff(three, all.slice_rows(3, 6)), 1e-6);
  Tensor wrong(DType::F32, {2, 1, 32, 32}), y;
  Status st = r->infer(wrong, y);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find("[2,1,32,32]"), std::string::npos) << st.message();
  // The helper is still usable after a refused input.
  ASSERT_TRUE(r->infer(x.slice_rows(0, 1), y).is_ok());
  EXPECT_EQ(max_abs_diff(y, one), 0.0);

  // The cpu backend is single-threaded JavaScript: two threads are refused, not ignored.
  RunOptions two;
  two.threads = 2;
  EXPECT_EQ(rt_->load(a, m, two, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
  EXPECT_NE(st.message().find("thread"), std::string::npos) << st.message();
}

// A damaged model.json or weights.bin is bad input naming the file (checked before TF.js sees
// it); a well-formed model.json that TF.js itself rejects is a failed status carrying TF.js' own
// message.
TEST_F(TfjsRuntimeTest, DamagedArtefactsAreClearErrors) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  Artefact good;
  ASSERT_TRUE(export_and_load(m, init_weights(m, 3), "damage-src", false, good));
  const std::vector<std::byte> json = test::read_bytes(good.files.at(0));
  const std::vector<std::byte> bin = test::read_bytes(good.files.at(1));
  const std::string text(reinterpret_cast<const char*>(json.data()), json.size());
  auto as_bytes = [](const std::string& s) {
    std::vector<std::byte> b(s.size());
    std::memcpy(b.data(), s.data(), s.size());
    return b;
  };
  struct Damage {
    const char* what;
    std::vector<std::byte> json, bin;
    Status::Code code;
    const char* says;
  };
  std::string renamed = text;
  renamed.replace(renamed.find("\"layers-model\""), 14, "\"graph-model\"");
  std::string unknown_class = text;
  unknown_class.replace(unknown_class.find("\"Conv2D\""), 8, "\"Conv9D\"");
  const std::vector<Damage> damages = {
      {"model.json truncated",
       {json.begin(), json.begin() + json.size() / 2},
       bin,
       Status::Code::BadInput,
       "not valid JSON"},
      {"model.json empty", {}, bin, Status::Code::BadInput, "not valid JSON"},
      {"model.json of another format", as_bytes(renamed), bin, Status::Code::BadInput,
       "layers-model"},
      {"weights.bin truncated",
       json,
       {bin.begin(), bin.begin() + bin.size() - 4},
       Status::Code::BadInput,
       "truncated"},
      {"a layer class TF.js does not know", as_bytes(unknown_class), bin, Status::Code::Failed,
       "Conv9D"},
  };
  for (const Damage& d : damages) {
    SCOPED_TRACE(d.what);
    const std::string dir = test::scratch_dir("tfjs-damage");
    Artefact bad = good;
    bad.dir = dir;
    bad.files = {dir + "/model.json", dir + "/weights.bin"};
    test::write_bytes(bad.files[0], d.json);
    test::write_bytes(bad.files[1], d.bin);
    Status st;
    EXPECT_EQ(rt_->load(bad, m, RunOptions{}, st), nullptr);
    EXPECT_EQ(st.code(), d.code) << st.message();
    EXPECT_NE(st.message().find(d.says), std::string::npos) << st.message();
    if (d.code == Status::Code::BadInput) {
      EXPECT_NE(st.message().find(dir), std::string::npos) << "names the file: " << st.message();
    }
  }
  // The files of another model: TF.js would load them; crossdl sees the layers do not match.
  const ir::Model other = zoo::build("lenet1", kMnistLike);
  Status st;
  EXPECT_EQ(rt_->load(good, other, RunOptions{}, st), nullptr);
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("model.json"), std::string::npos) << st.message();
}

}  // namespace

namespace {

// The web helper's settings reach the shared client: a missing script is a failed load naming it,
// and an {"ok":false} from the helper is quoted with the runtime's full name.
TEST_F(TfjsRuntimeTest, HelperProblemsAreFailedStatusesNamingTheCause) {
  const ir::Model m = zoo::build("lenet1", kMnistLike);
  Artefact a;
  ASSERT_TRUE(
      rt_->export_model(m, init_weights(m, 1), test::scratch_dir("tfjs-helper"), {}, a).is_ok());
  const std::string dir = test::scratch_dir("tfjs-helper-fake");
  struct Case {
    const char* what;
    std::string script;  // "" : no such file
    const char* says;
  };
  const std::vector<Case> cases = {
      {"no helper script", "", "is missing"},
      {"a helper that refuses every request",
       "import { createInterface } from 'node:readline';\n"
       "for await (const line of createInterface({ input: process.stdin })) {\n"
       "  const id = JSON.parse(line).id;\n"
       "  process.stdout.write(JSON.stringify({ id, ok: false, error: 'no backend here' }) + "
       "'\\n');\n"
       "}\n",
       "tfjs:cpu@node: no backend here"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string path = dir + "/helper.mjs";
    std::filesystem::remove(path);
    if (!c.script.empty()) test::write_text(path, c.script);
    ::setenv("CROSSDL_WEB_HELPER", path.c_str(), 1);
    Status st;
    auto r = rt_->load(a, m, RunOptions{}, st);
    ::unsetenv("CROSSDL_WEB_HELPER");
    EXPECT_EQ(r, nullptr);
    EXPECT_EQ(st.code(), Status::Code::Failed) << st.message();
    EXPECT_NE(st.message().find(c.says), std::string::npos) << st.message();
  }
}

}  // namespace
