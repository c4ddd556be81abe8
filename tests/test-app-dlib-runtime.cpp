// The dlib runtime: a model written with dlib::serialize (BatchNorm folded into affine_ layers) and
// read back with dlib::deserialize gives the dlib framework's logits bit for bit and LibTorch's
// within float rounding; a damaged or foreign file is a bad-input status, and dlib survives it.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "crossdl/runtime.h"
#include "crossdl/zoo.h"

#include "app_support.h"
#include "support.h"

using namespace crossdl;
using test::fashion_subset;
using test::first_n;
using test::max_abs_diff;

namespace {

#define REQUIRE_DLIB_RUNTIME()                                     \
  do {                                                             \
    std::string why_;                                              \
    if (!test::runtime_built("dlib", &why_)) GTEST_SKIP() << why_; \
  } while (0)

const zoo::InputSpec kFashion{{1, 28, 28}, DType::F32, 10, 0};

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST(DlibRuntime, IsRegisteredWithItsLibrary) {
  REQUIRE_DLIB_RUNTIME();
  const auto names = runtime_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "dlib"), names.end());
  const FrameworkInfo fi = make_runtime("dlib")->info();
  EXPECT_EQ(fi.name, "dlib");
  EXPECT_EQ(fi.version, "19.24.0");
  EXPECT_FALSE(make_runtime("dlib")->supports(zoo::build("lstm", {{40}, DType::I64, 2, 102})).ok);
}

// Measured (32 Fashion-MNIST test images): runtime == framework exactly for lenet5 and resnet20;
// against LibTorch 6.0e-8 (lenet5) and 1.2e-7 (resnet20). ResNet-20 file 1.09 MB, load 0.08 s.
TEST(DlibRuntime, FilesGiveTheFrameworksLogitsExactlyAndTorchs) {
  REQUIRE_DLIB_RUNTIME();
  if (!test::adapter_built("torch")) GTEST_SKIP() << "no torch adapter to compare with";
  const Dataset ds = fashion_subset(1, 32);
  const Tensor x = make_batch(ds, ds.test, first_n(32));
  auto rt = make_runtime("dlib");
  for (const char* name : {"lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, kFashion);
    WeightSet w = init_weights(m, 17);
    // Non-trivial running statistics, so that the fold into affine_ is exercised.
    Rng rng(18);
    for (const ir::WeightSpec& s : ir::weight_specs(m))
      if (s.param == "running_mean" || s.param == "running_var")
        for (float& v : w.at(s.name).values<float>())
          v = static_cast<float>(s.param == "running_var" ? rng.uniform(0.5, 2)
                                                          : rng.uniform(-0.3, 0.3));
    const std::string dir = test::scratch_dir(std::string("dlib-rt-") + name);
    Artefact a;
    auto t0 = std::chrono::steady_clock::now();
    Status st = rt->export_model(m, w, dir, ExportOptions{}, a);
    const double export_s = seconds_since(t0);
    ASSERT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(a.format, "dlib");
    ASSERT_EQ(a.files.size(), 1u);
    EXPECT_EQ(a.files[0], dir + "/" + name + ".dnn");
    EXPECT_EQ(a.bytes, std::filesystem::file_size(a.files[0]));
    EXPECT_NE(a.conversions.find("affine_"), std::string::npos);
    t0 = std::chrono::steady_clock::now();
    auto r = rt->load(a, m, RunOptions{}, st);
    const double load_s = seconds_since(t0);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor lr, lf, lt;
    t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(r->infer(x, lr).is_ok());
    const double infer_s = seconds_since(t0);
    auto fw = make_framework("dlib")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_TRUE(fw->infer(x, lf).is_ok());
    auto th = make_framework("torch")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_TRUE(th->infer(x, lt).is_ok());
    EXPECT_TRUE(lr.identical(lf));  // the same computation on the same floats
    const double d = max_abs_diff(lr, lt);
    EXPECT_LE(d, 1e-5);
    // Every layer output named by the IR, the last one being the logits.
    std::vector<LayerOutput> outs;
    st = r->layer_outputs(x, outs);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_FALSE(outs.empty());
    for (const LayerOutput& o : outs) EXPECT_NE(m.find(o.layer), nullptr) << o.layer;
    EXPECT_EQ(outs.back().layer, m.layers.back().name);
    EXPECT_TRUE(outs.back().value.identical(lr));
    RecordProperty(std::string(name) + "_max_abs_diff_vs_torch", sci(d));
    RecordProperty(std::string(name) + "_bytes", std::to_string(a.bytes));
    RecordProperty(std::string(name) + "_export_s", sci(export_s));
    RecordProperty(std::string(name) + "_load_s", sci(load_s));
    RecordProperty(std::string(name) + "_infer_32_s", sci(infer_s));
  }
}

// A truncated file, a foreign one (another model's network) and a missing one are bad input with
// the file named; dlib's serialization_error is not the fatal_error it aborts on the second time,
// so several in a row leave the process working.
TEST(DlibRuntime, DamagedOrForeignFilesAreBadInput) {
  REQUIRE_DLIB_RUNTIME();
  auto rt = make_runtime("dlib");
  const ir::Model m = zoo::build("resnet20", kFashion);
  const WeightSet w = init_weights(m, 3);
  const std::string dir = test::scratch_dir("dlib-rt-damaged");
  Artefact a;
  ASSERT_TRUE(rt->export_model(m, w, dir, ExportOptions{}, a).is_ok());
  const std::vector<std::byte> bytes = test::read_bytes(a.files[0]);
  Status st;
  for (const std::size_t keep : {bytes.size() / 2, bytes.size() - 7, std::size_t{20}}) {
    SCOPED_TRACE(keep);
    test::write_bytes(
        a.files[0], std::vector<std::byte>(bytes.begin(), bytes.begin() + static_cast<long>(keep)));
    EXPECT_EQ(rt->load(a, m, RunOptions{}, st), nullptr);
    EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
    EXPECT_NE(st.message().find(a.files[0]), std::string::npos) << st.message();
  }
  // A lenet1 network where a resnet20 is expected.
  const ir::Model l1 = zoo::build("lenet1", kFashion);
  Artefact other;
  ASSERT_TRUE(rt->export_model(l1, init_weights(l1, 1), dir, ExportOptions{}, other).is_ok());
  Artefact swapped = a;
  swapped.files = other.files;
  EXPECT_EQ(rt->load(swapped, m, RunOptions{}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
  // A resnet20 network for 3x32x32 inputs where 1x28x28 is expected: deserialises, then its
  // first conv has 3 input channels.
  const ir::Model cifar = zoo::build("resnet20", {{3, 32, 32}, DType::F32, 10, 0});
  const std::string dir2 = test::scratch_dir("dlib-rt-cifar");
  Artefact c;
  ASSERT_TRUE(rt->export_model(cifar, init_weights(cifar, 1), dir2, ExportOptions{}, c).is_ok());
  EXPECT_EQ(rt->load(c, m, RunOptions{}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
  EXPECT_NE(st.message().find("conv1"), std::string::npos) << st.message();
  std::filesystem::remove(a.files[0]);
  EXPECT_EQ(rt->load(a, m, RunOptions{}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
  Artefact wrong = c;
  wrong.format = "onnx";
  EXPECT_EQ(rt->load(wrong, cifar, RunOptions{}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
  // Still working after all that.
  auto r = rt->load(c, cifar, RunOptions{}, st);
  ASSERT_TRUE(st.is_ok()) << st.message();
  Tensor logits;
  EXPECT_TRUE(r->infer(Tensor(DType::F32, {2, 3, 32, 32}, Layout::NCHW), logits).is_ok());
  EXPECT_EQ(logits.shape(), (Shape{2, 10}));
}
