// The `ort` runtime (ONNX Runtime through web/ort-helper.mjs) against the torch framework on the
// same weights, its per-layer outputs against torch runs of the model's prefixes, bad artefacts,
// and the helper protocol's failure modes (hung, dying and confused helpers).
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <onnx/onnx_pb.h>

#include "crossdl/onnx_io.h"
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

#define REQUIRE_ORT()                                                              \
  do {                                                                             \
    std::string why_;                                                              \
    if (!test::runtime_built("ort", &why_)) GTEST_SKIP() << why_;                  \
    if (find_backend("ort")->probe(why_).empty()) GTEST_SKIP() << "ort: " << why_; \
    if (!test::adapter_built("torch", &why_)) GTEST_SKIP() << why_;                \
  } while (0)

const Dataset& data() {
  static const Dataset ds = fashion_subset(64, 64);
  return ds;
}

Tensor images(std::int64_t n) {
  return make_batch(data(), data().test, first_n(n));
}

std::unique_ptr<Runner> load_ort(const ir::Model& m, const WeightSet& w, const std::string& tag,
                                 bool layers, Artefact& a, double* load_ms = nullptr) {
  auto rt = make_runtime("ort");
  ExportOptions eo;
  eo.layer_outputs = layers;
  Status st = rt->export_model(m, w, test::scratch_dir(tag), eo, a);
  EXPECT_TRUE(st.is_ok()) << st.message();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = rt->load(a, m, RunOptions{}, st);
  if (load_ms)
    *load_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(st.is_ok()) << st.message();
  return r;
}

// Children of this process, reaped or not (a zombie still shows here until it is waited for).
std::size_t child_count() {
  std::size_t n = 0;
  const std::string dir = "/proc/self/task";
  for (const auto& t : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(t.path() / "children");
    int pid;
    while (in >> pid) ++n;
  }
  return n;
}

// Runs the block with the helper replaced by a script and a short reply timeout.
class FakeHelper {
 public:
  FakeHelper(const std::string& tag, const std::string& js, const char* timeout_ms = "1500") {
    const std::string dir = test::scratch_dir(tag);
    path_ = dir + "/fake-helper.mjs";
    test::write_text(path_, js);
    ::setenv("CROSSDL_ORT_HELPER", path_.c_str(), 1);
    ::setenv("CROSSDL_ORT_TIMEOUT_MS", timeout_ms, 1);
  }
  ~FakeHelper() {
    ::unsetenv("CROSSDL_ORT_HELPER");
    ::unsetenv("CROSSDL_ORT_TIMEOUT_MS");
  }

 private:
  std::string path_;
};

// Answers hello and load like the real helper; what it does with `run` is the test's.
std::string fake_helper(const std::string& on_run) {
  return R"JS(
import { createInterface } from 'node:readline';
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const req = JSON.parse(line);
  const say = (o) => process.stdout.write(JSON.stringify({ id: req.id, ok: true, ...o }) + '\n');
  if (req.op === 'hello') return say({ protocol: 1, ort_version: 'fake' });
  if (req.op === 'load') return say({ outputs: ['logits'], inputs: ['input'] });
  )JS" + on_run +
         R"JS(
});
)JS";
}

}  // namespace

// The writer's layer_outputs option (onnx_io.h) on every zoo model: onnx_write itself runs the
// ONNX checker and strict shape inference on the result, so writing is the check that the extra
// outputs' declared types and shapes agree with the nodes.
TEST(OnnxLayerOutputs, EveryLayerIsAGraphOutputAfterTheLogits) {
  const zoo::InputSpec image{{1, 28, 28}, DType::F32, 10, 0};
  const zoo::InputSpec cifar{{3, 32, 32}, DType::F32, 10, 0};
  const zoo::InputSpec text{{16}, DType::I64, 2, 50};
  const struct {
    const char* model;
    zoo::InputSpec in;
  } cases[] = {{"lenet1", image}, {"lenet5", image}, {"resnet20", cifar}, {"vgg16", cifar},
               {"lstm", image},   {"gru", image},    {"lstm", text},      {"gru", text}};
  for (const auto& c : cases) {
    const ir::Model m = zoo::build(c.model, c.in);
    SCOPED_TRACE(m.name + (c.in.dtype == DType::I64 ? " (text)" : ""));
    const std::string path = test::scratch_dir("onnx-layer-outputs") + "/m.onnx";
    for (int opset : {13, 17}) {
      OnnxWriteOptions o;
      o.opset = opset;
      o.layer_outputs = true;
      ASSERT_NO_THROW(onnx_write(path, m, init_weights(m, 1), o));
      onnx::ModelProto mp;
      const auto bytes = test::read_bytes(path);
      ASSERT_TRUE(mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
      const auto& g = mp.graph();
      ASSERT_EQ(g.output_size(), static_cast<int>(m.layers.size()) + 1);
      EXPECT_EQ(g.output(0).name(), "logits");
      const std::vector<Shape> shapes = ir::infer_shapes(m);
      for (std::size_t i = 0; i < m.layers.size(); ++i) {
        const auto& o_i = g.output(static_cast<int>(i) + 1);
        EXPECT_EQ(o_i.name(), m.layers[i].name);
        const auto& dims = o_i.type().tensor_type().shape().dim();
        ASSERT_EQ(static_cast<std::size_t>(dims.size()), shapes[i].size() + 1);
        // ImageToSequence stays time-major [T,batch,F] in the graph; everything else is
        // [batch,...].
        const int batch_axis = m.layers[i].op == ir::Op::ImageToSequence ? 1 : 0;
        EXPECT_EQ(dims[batch_axis].dim_param(), "batch");
      }
    }
    // Without the option the file is the interchange file: one output, read back identically.
    ASSERT_NO_THROW(onnx_write(path, m, init_weights(m, 1)));
    EXPECT_EQ(onnx_read(path).model, m);
  }
}

TEST(OrtRuntime, ProbeReportsOnnxRuntimeNodeVersion) {
  REQUIRE_ORT();
  std::string why = "stale";
  EXPECT_EQ(find_backend("ort")->probe(why), "1.30.0");
  EXPECT_TRUE(why.empty()) << why;
  const FrameworkInfo fi = make_runtime("ort")->info();
  EXPECT_EQ(fi.name, "ort");
  EXPECT_EQ(fi.version, "1.30.0");
  EXPECT_NE(fi.device.find("graphOptimizationLevel all"), std::string::npos) << fi.device;
}

// Same weights, 64 Fashion-MNIST test images. Measured here: max |ORT - torch| logits
// lenet5 6.0e-08, resnet20 3.0e-08, lstm 8.9e-08; top-1 identical on all 64.
// (resnet20's BatchNorm layers keep their initial statistics, so its logits are small.)
TEST(OrtRuntime, LogitsMatchTorchOnSameWeights) {
  REQUIRE_ORT();
  const Tensor x = images(64);
  for (const char* name : {"lenet5", "resnet20", "lstm"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, zoo::input_spec(data()));
    const WeightSet w = init_weights(m, 7);
    Artefact a;
    double load_ms = 0;
    auto r = load_ort(m, w, std::string("ort-logits-") + name, false, a, &load_ms);
    ASSERT_TRUE(r);
    Tensor logits;
    const auto t0 = std::chrono::steady_clock::now();
    Status st = r->infer(x, logits);
    const double run_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(st.is_ok()) << st.message();
    const Tensor ref = torch_logits(m, w, x);
    const double d = max_abs_diff(logits, ref);
    std::printf("[ort] %s: max|ort-torch| %.3g, load %.0f ms, infer(64) %.1f ms, artefact %llu B\n",
                name, d, load_ms, run_ms, static_cast<unsigned long long>(a.bytes));
    EXPECT_LT(d, 1e-4);
    EXPECT_EQ(argmax_rows(logits), argmax_rows(ref));
    // A second call on the same helper gives the same bits (the session is reused).
    Tensor again;
    ASSERT_TRUE(r->infer(x, again).is_ok());
    EXPECT_TRUE(again.identical(logits));
  }
}

// Token models take I64 input through Gather; GRU uses linear_before_reset (PyTorch's form).
// Measured: max |ORT - torch| text lstm 6.0e-08, text gru 7.1e-08, image gru 1.5e-07.
TEST(OrtRuntime, TextModelsAndGruMatchTorch) {
  REQUIRE_ORT();
  const zoo::InputSpec text{{16}, DType::I64, 2, 50};
  Tensor tokens(DType::I64, {32, 16});
  Rng rng(5);
  for (auto& t : tokens.values<std::int64_t>()) t = static_cast<std::int64_t>(rng.below(50));
  const struct {
    const char* model;
    bool text;
  } cases[] = {{"lstm", true}, {"gru", true}, {"gru", false}};
  for (const auto& c : cases) {
    const ir::Model m = zoo::build(c.model, c.text ? text : zoo::input_spec(data()));
    SCOPED_TRACE(m.name + (c.text ? " (text)" : ""));
    const WeightSet w = init_weights(m, 9);
    Artefact a;
    auto r = load_ort(m, w, std::string("ort-text-") + c.model, false, a);
    ASSERT_TRUE(r);
    const Tensor x = c.text ? tokens : images(32);
    Tensor logits;
    const Status st = r->infer(x, logits);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const Tensor ref = torch_logits(m, w, x);
    const double d = max_abs_diff(logits, ref);
    std::printf("[ort] %s%s: max|ort-torch| %.3g\n", c.model, c.text ? " (text)" : "", d);
    EXPECT_LT(d, 1e-4);
    EXPECT_EQ(argmax_rows(logits), argmax_rows(ref));
  }
}

TEST(OrtRuntime, Opset17AndTwoThreadsMatchTorch) {
  REQUIRE_ORT();
  const ir::Model m = zoo::build("lenet5", zoo::input_spec(data()));
  const WeightSet w = init_weights(m, 3);
  auto rt = make_runtime("ort");
  ExportOptions eo;
  eo.onnx_opset = 17;
  Artefact a;
  ASSERT_TRUE(rt->export_model(m, w, test::scratch_dir("ort-opset17"), eo, a).is_ok());
  Status st;
  RunOptions ro;
  ro.threads = 2;
  auto r = rt->load(a, m, ro, st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  Tensor logits;
  const Tensor x = images(16);
  ASSERT_TRUE(r->infer(x, logits).is_ok());
  EXPECT_LT(max_abs_diff(logits, torch_logits(m, w, x)), 1e-4);
}

// Each exposed layer output against torch's logits of the model cut after that layer (the IR
// layout, flattened). Measured: largest difference over all layers lenet5 6.0e-07 (12 layers),
// resnet20 4.5e-08 (73 layers), lstm 7.5e-08 (3 layers).
TEST(OrtRuntime, LayerOutputsMatchTorchPrefixes) {
  REQUIRE_ORT();
  const Tensor x = images(8);
  for (const char* name : {"lenet5", "resnet20", "lstm"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, zoo::input_spec(data()));
    const WeightSet w = init_weights(m, 11);
    Artefact a;
    auto r = load_ort(m, w, std::string("ort-layers-") + name, true, a);
    ASSERT_TRUE(r);
    std::vector<LayerOutput> outs;
    Status st = r->layer_outputs(x, outs);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_EQ(outs.size(), m.layers.size()) << "ONNX fuses nothing away: every layer is exposed";
    double worst = 0;
    for (std::size_t k = 0; k < outs.size(); ++k) {
      SCOPED_TRACE(outs[k].layer);
      EXPECT_EQ(outs[k].layer, m.layers[k].name);
      WeightSet wk;
      const ir::Model p = test::prefix_model(m, w, k, wk);
      const Tensor ref = torch_logits(p, wk, x);
      const Tensor flat = outs[k].value.reshaped({x.dim(0), outs[k].value.numel() / x.dim(0)});
      const double d = max_abs_diff(flat, ref);
      worst = std::max(worst, d);
      EXPECT_LT(d, 1e-4);
    }
    std::printf("[ort] %s: %zu layers, worst per-layer max|ort-torch| %.3g\n", name, outs.size(),
                worst);
    Tensor logits;
    ASSERT_TRUE(r->infer(x, logits).is_ok());
    EXPECT_TRUE(outs.back().value.identical(logits) ||
                max_abs_diff(outs.back().value, logits) == 0.0);
  }
}

TEST(OrtRuntime, LayerOutputsNeedTheExport) {
  REQUIRE_ORT();
  const ir::Model m = zoo::build("lenet1", zoo::input_spec(data()));
  Artefact a;
  auto r = load_ort(m, init_weights(m, 1), "ort-nolayers", false, a);
  ASSERT_TRUE(r);
  std::vector<LayerOutput> outs;
  const Status st = r->layer_outputs(images(2), outs);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
  EXPECT_NE(st.message().find("ExportOptions.layer_outputs"), std::string::npos) << st.message();
}

TEST(OrtRuntime, CorruptOrTruncatedArtefactIsBadInput) {
  REQUIRE_ORT();
  const ir::Model m = zoo::build("lenet5", zoo::input_spec(data()));
  auto rt = make_runtime("ort");
  Artefact a;
  ASSERT_TRUE(
      rt->export_model(m, init_weights(m, 1), test::scratch_dir("ort-corrupt"), {}, a).is_ok());
  auto bytes = test::read_bytes(a.files[0]);
  const std::size_t before = child_count();

  bytes.resize(bytes.size() / 2);
  test::write_bytes(a.files[0], bytes);
  Status st;
  EXPECT_EQ(rt->load(a, m, {}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find(a.files[0]), std::string::npos) << st.message();

  std::vector<std::byte> junk(4096, std::byte{0xff});
  test::write_bytes(a.files[0], junk);
  EXPECT_EQ(rt->load(a, m, {}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();

  Artefact missing = a;
  missing.files = {a.dir + "/nope.onnx"};
  EXPECT_EQ(rt->load(missing, m, {}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
  EXPECT_EQ(child_count(), before);
}

TEST(OrtRuntime, WrongInputShapeIsBadInput) {
  REQUIRE_ORT();
  const ir::Model m = zoo::build("lenet1", zoo::input_spec(data()));
  Artefact a;
  auto r = load_ort(m, init_weights(m, 1), "ort-shape", false, a);
  ASSERT_TRUE(r);
  Tensor logits;
  const Status st = r->infer(Tensor(DType::F32, {2, 1, 27, 28}), logits);
  EXPECT_EQ(st.code(), Status::Code::BadInput);
  EXPECT_NE(st.message().find("[2,1,27,28]"), std::string::npos) << st.message();
  // The helper is still usable after a refused input.
  EXPECT_TRUE(r->infer(images(2), logits).is_ok());
}

TEST(OrtRuntime, HungHelperTimesOutAndIsKilled) {
  REQUIRE_ORT();
  const ir::Model m = zoo::build("lenet1", zoo::input_spec(data()));
  Artefact a;
  ASSERT_TRUE(make_runtime("ort")
                  ->export_model(m, init_weights(m, 1), test::scratch_dir("ort-hung"), {}, a)
                  .is_ok());
  const std::size_t before = child_count();
  {
    FakeHelper fake("ort-hung-helper", fake_helper("/* run: never answers */"));
    Status st;
    auto r = make_runtime("ort")->load(a, m, {}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(child_count(), before + 1);
    Tensor logits;
    const auto t0 = std::chrono::steady_clock::now();
    st = r->infer(images(2), logits);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(st.code(), Status::Code::Failed);
    EXPECT_NE(st.message().find("no reply within 1500 ms"), std::string::npos) << st.message();
    EXPECT_LT(s, 10.0);
    EXPECT_EQ(child_count(), before) << "the hung helper must be killed and reaped";
    st = r->infer(images(2), logits);
    EXPECT_EQ(st.code(), Status::Code::Failed);
    EXPECT_NE(st.message().find("not running"), std::string::npos) << st.message();
  }
}

TEST(OrtRuntime, DyingOrConfusedHelperGivesClearErrors) {
  REQUIRE_ORT();
  const ir::Model m = zoo::build("lenet1", zoo::input_spec(data()));
  Artefact a;
  ASSERT_TRUE(make_runtime("ort")
                  ->export_model(m, init_weights(m, 1), test::scratch_dir("ort-dying"), {}, a)
                  .is_ok());
  const std::size_t before = child_count();
  struct Case {
    const char* tag;
    const char* on_run;
    const char* expect;
  } cases[] = {
      {"exit", "process.stderr.write('boom\\n'); process.exit(3);", "exited with status 3"},
      {"wrong-id", "say({ id: 999, outputs: {} });", "does not answer request"},
      {"not-json", "process.stdout.write('hello there\\n');", "not JSON"},
      {"bad-data", "say({ outputs: { logits: { dtype: 'f32', shape: [2, 10], data: 'AAAA' } } });",
       "3 bytes for shape [2,10]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.tag);
    // The fake's `say` spreads its argument after id, so a wrong id overrides it.
    FakeHelper fake(std::string("ort-fake-") + c.tag, fake_helper(c.on_run), "5000");
    Status st;
    auto r = make_runtime("ort")->load(a, m, {}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor logits;
    st = r->infer(images(2), logits);
    EXPECT_EQ(st.code(), Status::Code::Failed);
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << st.message();
    if (std::string(c.tag) == "exit") {
      EXPECT_NE(st.message().find("boom"), std::string::npos) << "stderr tail: " << st.message();
    }
    r.reset();
    EXPECT_EQ(child_count(), before);
  }
}

TEST(OrtRuntime, HelperExitsOnEofWhenTheRunnerGoes) {
  REQUIRE_ORT();
  const ir::Model m = zoo::build("lenet1", zoo::input_spec(data()));
  Artefact a;
  auto r = load_ort(m, init_weights(m, 1), "ort-eof", false, a);
  ASSERT_TRUE(r);
  // Deleting the runner closes the helper's stdin: it must exit on EOF, not be killed.
  const std::size_t with = child_count();
  const auto t0 = std::chrono::steady_clock::now();
  r.reset();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(child_count(), with - 1);
  EXPECT_LT(s, 2.5) << "the helper did not exit on EOF (it was killed after the grace period)";
}
