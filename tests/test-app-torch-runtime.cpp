// The torch runtime: a TorchScript module generated from the IR (no Python), saved with
// torch::jit::Module::save and read back with torch::jit::load, gives the torch framework's logits
// and per-layer outputs on the same weights; a damaged .pt is a failed status, not a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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

std::vector<std::int64_t> top1(const Tensor& logits) {
  std::vector<std::int64_t> out;
  const auto v = logits.values<float>();
  const std::int64_t c = logits.dim(1);
  for (std::int64_t r = 0; r < logits.dim(0); ++r)
    out.push_back(std::max_element(v.begin() + r * c, v.begin() + (r + 1) * c) -
                  (v.begin() + r * c));
  return out;
}

}  // namespace

// Measured on 64 Fashion-MNIST test images, same weights: the TorchScript module's logits equal
// the torch framework's bit for bit (max diff 0) on LeNet-5, ResNet-20, the LSTM and the GRU:
// the generated source calls the aten ops torch::nn's modules call, with the same arguments.
TEST(TorchScriptRuntime, LogitsAndLayerOutputsEqualTheTorchFramework) {
  std::string why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  Dataset ds = fashion_subset(1, 64);
  const Tensor x = make_batch(ds, ds.test, first_n(64));
  auto rt = make_runtime("torch");
  for (const char* name : {"lenet5", "resnet20", "lstm", "gru"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, zoo::input_spec(ds));
    const WeightSet w = init_weights(m, 17);
    Artefact a;
    Status st =
        rt->export_model(m, w, test::scratch_dir(std::string("ts-") + name), ExportOptions{}, a);
    ASSERT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(a.format, "torchscript");
    ASSERT_EQ(a.files.size(), 1u);
    EXPECT_EQ(a.bytes, std::filesystem::file_size(a.files[0]));
    const auto t0 = std::chrono::steady_clock::now();
    auto script = rt->load(a, m, RunOptions{}, st);
    const auto t1 = std::chrono::steady_clock::now();
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto fw = make_framework("torch")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor ls, lf;
    ASSERT_TRUE(script->infer(x, ls).is_ok());  // the first run also optimises the graph
    const auto t2 = std::chrono::steady_clock::now();
    ASSERT_TRUE(script->infer(x, ls).is_ok());
    const auto t3 = std::chrono::steady_clock::now();
    ASSERT_TRUE(fw->infer(x, lf).is_ok());
    const auto t4 = std::chrono::steady_clock::now();
    ASSERT_TRUE(fw->infer(x, lf).is_ok());
    const auto t5 = std::chrono::steady_clock::now();
    const double diff = max_abs_diff(ls, lf);
    EXPECT_LT(diff, 1e-5);
    EXPECT_EQ(top1(ls), top1(lf));

    std::vector<LayerOutput> os, of;
    st = script->layer_outputs(x, os);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_TRUE(fw->layer_outputs(x, of).is_ok());
    ASSERT_EQ(os.size(), m.layers.size());
    ASSERT_EQ(of.size(), m.layers.size());
    double worst = 0;
    for (std::size_t i = 0; i < os.size(); ++i) {
      SCOPED_TRACE(os[i].layer);
      EXPECT_EQ(os[i].layer, m.layers[i].name);
      EXPECT_EQ(os[i].value.shape(), of[i].value.shape());
      EXPECT_EQ(os[i].value.layout(), of[i].value.layout());
      worst = std::max(worst, max_abs_diff(os[i].value, of[i].value));
    }
    EXPECT_LT(worst, 1e-5);
    EXPECT_TRUE(os.back().value.identical(ls));
    using ms = std::chrono::duration<double, std::milli>;
    std::printf(
        "[ torchscript ] %s: %llu bytes, load %.1f ms, 64 images %.1f ms (framework %.1f ms); "
        "logits max diff vs framework %.3g, layers %.3g\n",
        name, static_cast<unsigned long long>(a.bytes), ms(t1 - t0).count(), ms(t3 - t2).count(),
        ms(t5 - t4).count(), diff, worst);
  }
}

// The ops the image models do not reach: Embedding (token input), and VGG-16's padded
// convolutions with bias followed by BatchNorm on 32x32 images. Same weights, same inputs:
// measured bit-identical to the torch framework.
TEST(TorchScriptRuntime, TextModelsAndVggEqualTheTorchFramework) {
  std::string why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  auto rt = make_runtime("torch");
  zoo::InputSpec text;
  text.sample_shape = {24};
  text.dtype = DType::I64;
  text.num_classes = 2;
  text.vocab_size = 50;
  Tensor tokens(DType::I64, {8, 24});
  Rng rng(5);
  for (auto& t : tokens.values<std::int64_t>()) t = static_cast<std::int64_t>(rng.below(50));
  zoo::InputSpec cifar;
  cifar.sample_shape = {3, 32, 32};
  Tensor images(DType::F32, {4, 3, 32, 32}, Layout::NCHW);
  for (auto& v : images.values<float>()) v = static_cast<float>(rng.uniform(-1, 1));
  struct Case {
    const char* model;
    zoo::InputSpec spec;
    const Tensor* x;
  };
  for (const Case& c :
       {Case{"lstm", text, &tokens}, Case{"gru", text, &tokens}, Case{"vgg16", cifar, &images}}) {
    SCOPED_TRACE(c.model);
    const ir::Model m = zoo::build(c.model, c.spec);
    const WeightSet w = init_weights(m, 6);
    Artefact a;
    Status st = rt->export_model(m, w, test::scratch_dir(std::string("ts-x-") + c.model),
                                 ExportOptions{}, a);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto script = rt->load(a, m, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto fw = make_framework("torch")->load(m, w, RunOptions{}, st);
    ASSERT_TRUE(st.is_ok()) << st.message();
    Tensor ls, lf;
    st = script->infer(*c.x, ls);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_TRUE(fw->infer(*c.x, lf).is_ok());
    EXPECT_LT(max_abs_diff(ls, lf), 1e-5);
    std::printf("[ torchscript ] %s: logits max diff vs framework %.3g\n", c.model,
                max_abs_diff(ls, lf));
  }
}

// Python's torch.jit.load reads the same file, runs forward and layer_outputs, and finds the
// weights under the names weight_names() records: the artefact is a real TorchScript module, not
// something only crossdl reads. ResNet-20's dotted names ("stage1.block0.conv1.weight") are not
// Python identifiers: the attribute is stage1_block0_conv1_weight. Needs Debian's python3-torch.
TEST(TorchScriptRuntime, PythonLoadsTheModule) {
  std::string why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no /usr/bin/python3 with torch (apt-get install python3-torch)";
  Dataset ds = fashion_subset(1, 1);
  const ir::Model m = zoo::build("resnet20", zoo::input_spec(ds));
  const WeightSet w = init_weights(m, 3);
  Artefact a;
  ASSERT_TRUE(make_runtime("torch")
                  ->export_model(m, w, test::scratch_dir("ts-py"), ExportOptions{}, a)
                  .is_ok());
  EXPECT_NE(a.conversions.find("weight_names()"), std::string::npos) << a.conversions;
  const std::string out = test::scratch_dir("ts-py-out") + "/report.txt";
  const std::string cmd =
      "/usr/bin/python3 -c \"import torch,sys; m=torch.jit.load(sys.argv[1]); "
      "x=torch.zeros(2,1,28,28); y=m(x); outs=m.layer_outputs(x); "
      "assert len(outs)==len(m.layer_names()) and torch.equal(outs[-1], y); "
      "a=m.weight_names()['stage1.block0.conv1.weight']; "
      "open(sys.argv[2],'w').write(','.join(m.layer_names())+' '+str(tuple(y.shape))+' '+a+' '+"
      "str(tuple(getattr(m,a).shape)))\" " +
      a.files[0] + " " + out + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto bytes = test::read_bytes(out);
  const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::string names;
  for (const auto& l : m.layers) names += (names.empty() ? "" : ",") + l.name;
  EXPECT_EQ(text, names + " (2, 10) stage1_block0_conv1_weight " + "(" +
                      std::to_string(w.at("stage1.block0.conv1.weight").dim(0)) + ", " +
                      std::to_string(w.at("stage1.block0.conv1.weight").dim(1)) + ", 3, 3)");
}

// A truncated .pt: LibTorch's reader throws c10::Error, which comes back as a failed status with
// its message. The files of another model and a missing file are bad input.
TEST(TorchScriptRuntime, DamagedArtefactsGiveAStatus) {
  std::string why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  Dataset ds = fashion_subset(1, 1);
  const ir::Model m = zoo::build("lenet5", zoo::input_spec(ds));
  const ir::Model other = zoo::build("lenet1", zoo::input_spec(ds));
  auto rt = make_runtime("torch");
  Artefact a;
  ASSERT_TRUE(
      rt->export_model(m, init_weights(m, 1), test::scratch_dir("ts-bad"), ExportOptions{}, a)
          .is_ok());
  Status st;
  // Another model's description.
  EXPECT_EQ(rt->load(a, other, RunOptions{}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
  EXPECT_NE(st.message().find("not lenet1"), std::string::npos) << st.message();
  // Truncated to half.
  auto bytes = test::read_bytes(a.files[0]);
  bytes.resize(bytes.size() / 2);
  test::write_bytes(a.files[0], bytes);
  EXPECT_EQ(rt->load(a, m, RunOptions{}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::Failed) << st.message();
  EXPECT_NE(st.message().find("load: LibTorch: "), std::string::npos) << st.message();
  std::printf("[ torchscript ] truncated .pt: %s\n", st.message().c_str());
  // Missing.
  Artefact gone = a;
  gone.files = {a.dir + "/missing.pt"};
  EXPECT_EQ(rt->load(gone, m, RunOptions{}, st), nullptr);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
  // A wrong input shape is bad input too, once loaded.
  ASSERT_TRUE(rt->export_model(m, init_weights(m, 1), a.dir, ExportOptions{}, a).is_ok());
  auto r = rt->load(a, m, RunOptions{}, st);
  ASSERT_NE(r, nullptr) << st.message();
  Tensor logits;
  st = r->infer(Tensor(DType::F32, {2, 3, 28, 28}), logits);
  EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
}
