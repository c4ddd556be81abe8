// The darknet runtime: a model written as Darknet's own .cfg/.weights (darknet_write, no
// libdarknet) and read back by Darknet's loader gives the darknet framework's logits bit for bit
// and LibTorch's within float rounding; layer outputs carry IR names and match LibTorch's; a
// damaged artefact is a bad-input status, never a silent wrong answer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "crossdl/darknet_io.h"
#include "crossdl/runtime.h"
#include "crossdl/zoo.h"

#include "app_support.h"
#include "support.h"

using namespace crossdl;
using test::fashion_subset;
using test::first_n;
using test::max_abs_diff;

namespace {

std::vector<std::int64_t> top1(const Tensor& logits) {
  std::vector<std::int64_t> out;
  const auto v = logits.values<float>();
  const std::int64_t c = logits.dim(1);
  for (std::int64_t r = 0; r < logits.dim(0); ++r)
    out.push_back(std::max_element(v.begin() + r * c, v.begin() + (r + 1) * c) -
                  (v.begin() + r * c));
  return out;
}

struct Loaded {
  Artefact artefact;
  std::unique_ptr<Runner> runner;
  double load_ms = 0;
};

Loaded export_and_load(const ir::Model& m, const WeightSet& w, const std::string& dir) {
  auto rt = make_runtime("darknet");
  Loaded l;
  Status st = rt->export_model(m, w, dir, ExportOptions{}, l.artefact);
  EXPECT_TRUE(st.is_ok()) << st.message();
  const auto t0 = std::chrono::steady_clock::now();
  l.runner = rt->load(l.artefact, m, RunOptions{}, st);
  l.load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(st.is_ok()) << st.message();
  return l;
}

}  // namespace

// Measured: darknet from files == darknet from the IR exactly (0) on LeNet-1, LeNet-5 and
// ResNet-20; against LibTorch the logits differ by at most ~2e-6 (LeNet) / ~1e-6 (ResNet-20,
// fresh BN statistics), with the same top-1 on every image.
TEST(DarknetRuntime, FilesGiveTheFrameworksLogitsExactlyAndTorchs) {
  std::string why;
  if (!test::runtime_built("darknet", &why)) GTEST_SKIP() << why;
  if (!test::adapter_built("torch")) GTEST_SKIP() << "no torch adapter to compare with";
  Dataset ds = fashion_subset(1, 64);
  for (const char* name : {"lenet1", "lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    const std::int64_t count = std::string(name) == "resnet20" ? 16 : 64;
    const auto idx = first_n(count);
    const Tensor x = make_batch(ds, ds.test, idx);
    const ir::Model m = zoo::build(name, zoo::input_spec(ds));
    const WeightSet w = init_weights(m, 21);
    Loaded files = export_and_load(m, w, test::scratch_dir(std::string("dn-rt-") + name));
    ASSERT_NE(files.runner, nullptr);
    EXPECT_EQ(files.artefact.format, "darknet");
    ASSERT_EQ(files.artefact.files.size(), 2u);
    std::uint64_t bytes = 0;
    for (const auto& f : files.artefact.files) bytes += std::filesystem::file_size(f);
    EXPECT_EQ(files.artefact.bytes, bytes);
    Status st;
    auto fw = make_framework("darknet")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto th = make_framework("torch")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor lf, ld, lt;
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(files.runner->infer(x, lf).is_ok());
    const double infer_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(fw->infer(x, ld).is_ok());
    ASSERT_TRUE(th->infer(x, lt).is_ok());
    EXPECT_TRUE(lf.identical(ld)) << "max diff " << max_abs_diff(lf, ld);
    const double vs_torch = max_abs_diff(lf, lt);
    EXPECT_LT(vs_torch, 1e-4);
    EXPECT_EQ(top1(lf), top1(lt));
    std::printf(
        "[ darknet  ] %s from files (%llu bytes): load %.1f ms, %lld images %.1f ms; max diff vs "
        "framework %.3g, vs torch %.3g\n",
        name, static_cast<unsigned long long>(files.artefact.bytes), files.load_ms,
        static_cast<long long>(count), infer_ms, max_abs_diff(lf, ld), vs_torch);
  }
}

// A batch that is not a multiple of the cfg's batch (64) runs the last chunk with a smaller
// set_batch_network: the rows equal those of the same images run alone.
TEST(DarknetRuntime, PartialChunksGiveTheSameRows) {
  std::string why;
  if (!test::runtime_built("darknet", &why)) GTEST_SKIP() << why;
  Dataset ds = fashion_subset(1, 70);
  const ir::Model m = zoo::build("lenet5", zoo::input_spec(ds));
  const WeightSet w = init_weights(m, 4);
  Loaded files = export_and_load(m, w, test::scratch_dir("dn-rt-chunks"));
  ASSERT_NE(files.runner, nullptr);
  Tensor all, tail;
  ASSERT_TRUE(files.runner->infer(make_batch(ds, ds.test, first_n(70)), all).is_ok());
  std::vector<std::int64_t> last{67, 68, 69};
  ASSERT_TRUE(files.runner->infer(make_batch(ds, ds.test, last), tail).is_ok());
  EXPECT_TRUE(all.slice_rows(67, 70).identical(tail));
}

// The .weights file holds every IR tensor exactly once after a 20-byte header (major 0, minor 2,
// revision 0, 64-bit seen), and its first arrays are conv1's biases then its OIHW kernel.
TEST(DarknetRuntime, WeightsFileFollowsDarknetsLayout) {
  Dataset ds = fashion_subset(1, 1);
  for (const char* name : {"lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, zoo::input_spec(ds));
    const WeightSet w = init_weights(m, 2);
    const DarknetFiles f = darknet_write(m, w, test::scratch_dir(std::string("dn-w-") + name), 8);
    const auto bytes = test::read_bytes(f.weights);
    ASSERT_EQ(bytes.size(), 20 + 4 * static_cast<std::size_t>(w.parameter_count()));
    std::int32_t head[3];
    std::uint64_t seen = 1;
    std::memcpy(head, bytes.data(), 12);
    std::memcpy(&seen, bytes.data() + 12, 8);
    EXPECT_EQ(head[0], 0);
    EXPECT_EQ(head[1], 2);
    EXPECT_EQ(head[2], 0);
    EXPECT_EQ(seen, 0u);
    if (std::string(name) == "lenet5") {
      const Tensor& b = w.at("conv1.bias");
      const Tensor& k = w.at("conv1.weight");
      EXPECT_EQ(std::memcmp(bytes.data() + 20, b.raw(), b.nbytes()), 0);
      EXPECT_EQ(std::memcmp(bytes.data() + 20 + b.nbytes(), k.raw(), k.nbytes()), 0);
    }
    // One name per darknet layer; the logits layer is named by the final Dense.
    EXPECT_FALSE(f.layer_ir_names.empty());
    EXPECT_NE(std::find(f.layer_ir_names.begin(), f.layer_ir_names.end(), m.layers.back().name),
              f.layer_ir_names.end());
  }
}

// Every darknet layer's output is reported under an IR layer name, in IR order, and equals
// LibTorch's output of that layer (fused conv+relu under the relu's name). Measured max diff over
// all LeNet-5 layers on 32 images: ~2e-6.
TEST(DarknetRuntime, LayerOutputsAreNamedByIrLayersAndMatchTorch) {
  std::string why;
  if (!test::runtime_built("darknet", &why)) GTEST_SKIP() << why;
  if (!test::adapter_built("torch")) GTEST_SKIP() << "no torch adapter to compare with";
  Dataset ds = fashion_subset(1, 32);
  const Tensor x = make_batch(ds, ds.test, first_n(32));
  for (const char* name : {"lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, zoo::input_spec(ds));
    const WeightSet w = init_weights(m, 9);
    Loaded files = export_and_load(m, w, test::scratch_dir(std::string("dn-lo-") + name));
    ASSERT_NE(files.runner, nullptr);
    std::vector<LayerOutput> dn, th;
    Status st = files.runner->layer_outputs(x, dn);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto torch = make_framework("torch")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    st = torch->layer_outputs(x, th);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_EQ(th.size(), m.layers.size());
    std::map<std::string, const Tensor*> ref;
    for (const auto& o : th) ref[o.layer] = &o.value;
    ASSERT_FALSE(dn.empty());
    EXPECT_EQ(dn.back().layer, m.layers.back().name);
    double worst = 0;
    std::size_t last_pos = 0;
    for (const auto& o : dn) {
      SCOPED_TRACE(o.layer);
      ASSERT_TRUE(ref.count(o.layer)) << "not an IR layer";
      const std::size_t pos = static_cast<std::size_t>(
          std::find_if(m.layers.begin(), m.layers.end(),
                       [&](const ir::Layer& l) { return l.name == o.layer; }) -
          m.layers.begin());
      EXPECT_GE(pos, last_pos) << "out of IR order";
      last_pos = pos;
      worst = std::max(worst, max_abs_diff(o.value, *ref[o.layer]));
    }
    EXPECT_LT(worst, 1e-4);
    std::printf("[ darknet  ] %s: %zu layer outputs (IR has %zu), max diff vs torch %.3g\n", name,
                dn.size(), m.layers.size(), worst);
  }
}

// Damaged artefacts: Darknet's own loader would read a truncated .weights silently and exit(0)
// on a missing file; the runtime refuses them first, naming the file.
TEST(DarknetRuntime, DamagedArtefactsAreBadInput) {
  std::string why;
  if (!test::runtime_built("darknet", &why)) GTEST_SKIP() << why;
  Dataset ds = fashion_subset(1, 1);
  const ir::Model m = zoo::build("lenet5", zoo::input_spec(ds));
  const ir::Model other = zoo::build("lenet1", zoo::input_spec(ds));
  const WeightSet w = init_weights(m, 1);
  auto rt = make_runtime("darknet");
  const std::string dir = test::scratch_dir("dn-bad");
  Artefact a;
  ASSERT_TRUE(rt->export_model(m, w, dir, ExportOptions{}, a).is_ok());
  const std::string cfg = a.files.at(0), weights = a.files.at(1);
  auto expect_bad = [&](const Artefact& art, const ir::Model& model, const std::string& needle) {
    Status st;
    EXPECT_EQ(rt->load(art, model, RunOptions{}, st), nullptr);
    EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  // Truncated weights (the last 100 bytes gone).
  auto bytes = test::read_bytes(weights);
  const auto full = bytes;
  bytes.resize(bytes.size() - 100);
  test::write_bytes(weights, bytes);
  expect_bad(a, m, "truncated");
  // Only the header left.
  bytes.resize(6);
  test::write_bytes(weights, bytes);
  expect_bad(a, m, weights);
  test::write_bytes(weights, full);
  // The files of another model.
  expect_bad(a, other, "does not describe lenet1");
  // A cfg that is not one.
  const auto cfg_bytes = test::read_bytes(cfg);
  const std::string good_cfg(reinterpret_cast<const char*>(cfg_bytes.data()), cfg_bytes.size());
  test::write_text(cfg, "[net]\nbatch=1\n[convolution]\nfilters=2\n");
  expect_bad(a, m, "darknet has no section [convolution]");
  test::write_text(cfg, "\x89PNG garbage");
  expect_bad(a, m, "line 1");
  test::write_text(cfg, good_cfg);
  // A missing file.
  Artefact gone = a;
  gone.files[1] = dir + "/missing.weights";
  expect_bad(gone, m, "missing.weights");
  // And the intact artefact still loads.
  Status st;
  EXPECT_NE(rt->load(a, m, RunOptions{}, st), nullptr) << st.message();
  // Two threads are not something Darknet can do: a skip, not an error.
  RunOptions two;
  two.threads = 2;
  EXPECT_EQ(rt->load(a, m, two, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
}

TEST(DarknetRuntime, RecurrentModelsAreUnsupportedNamingTheLayer) {
  std::string why;
  if (!test::runtime_built("darknet", &why)) GTEST_SKIP() << why;
  Dataset ds = fashion_subset(1, 1);
  const ir::Model m = zoo::build("lstm", zoo::input_spec(ds));
  auto rt = make_runtime("darknet");
  EXPECT_FALSE(rt->supports(m).ok);
  Artefact a;
  const Status st =
      rt->export_model(m, init_weights(m, 1), test::scratch_dir("dn-lstm"), ExportOptions{}, a);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
  EXPECT_NE(st.message().find("(LSTM)"), std::string::npos) << st.message();
}

// A real migration: weights trained in LibTorch (12 SGD steps of 32 images, so ResNet-20's
// BatchNorm statistics are no longer fresh) are written as Darknet files and as TorchScript, and
// each is read back by its library's loader. Measured: both equal their own framework on the same
// weights bit for bit; LeNet-5 from the Darknet files is within 1e-6 of LibTorch with the same
// top-1; ResNet-20 from the Darknet files differs from LibTorch by Darknet's own BatchNorm
// (sqrt(var)+1e-6 instead of sqrt(var+1e-5)), printed below and recorded, not hidden.
TEST(DarknetRuntime, WeightsTrainedInTorchMigrateToDarknetFilesAndTorchScript) {
  std::string why;
  if (!test::runtime_built("darknet", &why)) GTEST_SKIP() << why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  Dataset ds = fashion_subset(384, 64);
  const Tensor x = make_batch(ds, ds.test, first_n(64));
  for (const char* name : {"lenet5", "resnet20"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, zoo::input_spec(ds));
    TrainConfig cfg;
    cfg.batch_size = 32;
    cfg.lr = 0.05;
    Status st;
    auto trainer = make_framework("torch")->trainer(m, init_weights(m, 8), cfg, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    for (std::int64_t b = 0; b < 12; ++b) {
      std::vector<std::int64_t> idx;
      for (std::int64_t k = 0; k < 32; ++k) idx.push_back(b * 32 + k);
      double loss = 0;
      ASSERT_TRUE(
          trainer->step(make_batch(ds, ds.train, idx), make_labels(ds.train, idx), cfg.lr, loss)
              .is_ok());
    }
    WeightSet w;
    ASSERT_TRUE(trainer->export_weights(w).is_ok());
    auto torch_fw = make_framework("torch")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto darknet_fw = make_framework("darknet")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor l_torch, l_darknet;
    ASSERT_TRUE(torch_fw->infer(x, l_torch).is_ok());
    ASSERT_TRUE(darknet_fw->infer(x, l_darknet).is_ok());

    Loaded files = export_and_load(m, w, test::scratch_dir(std::string("dn-mig-") + name));
    ASSERT_NE(files.runner, nullptr);
    Tensor l_files;
    ASSERT_TRUE(files.runner->infer(x, l_files).is_ok());
    EXPECT_TRUE(l_files.identical(l_darknet)) << max_abs_diff(l_files, l_darknet);

    auto ts = make_runtime("torch");
    Artefact pt;
    st = ts->export_model(m, w, test::scratch_dir(std::string("ts-mig-") + name), ExportOptions{},
                          pt);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto script = ts->load(pt, m, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor l_script;
    ASSERT_TRUE(script->infer(x, l_script).is_ok());
    EXPECT_TRUE(l_script.identical(l_torch)) << max_abs_diff(l_script, l_torch);

    const double darknet_vs_torch = max_abs_diff(l_files, l_torch);
    std::size_t disagree = 0;
    const auto a = top1(l_files), b = top1(l_torch);
    for (std::size_t i = 0; i < a.size(); ++i) disagree += a[i] != b[i];
    if (std::string(name) == "lenet5") {
      EXPECT_LT(darknet_vs_torch, 1e-4);
      EXPECT_EQ(disagree, 0u);
    }
    std::printf(
        "[ migrate  ] %s trained 12 steps in torch: darknet files vs darknet framework %.3g, "
        "torchscript vs torch %.3g, darknet files vs torch %.3g (%zu/64 top-1 differ)\n",
        name, max_abs_diff(l_files, l_darknet), max_abs_diff(l_script, l_torch), darknet_vs_torch,
        disagree);
  }
}
