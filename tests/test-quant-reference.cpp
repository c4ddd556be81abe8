// crossdl's fp32 reference forward pass against plain PyTorch (tests/oracle/torch_quant.py), and
// BatchNorm folding against the unfolded model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "crossdl/npy.h"
#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"
#include "support.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;

// Running statistics and affine parameters far from the initial (0, 1, 1, 0), so that a wrong
// formula or a swapped tensor shows.
void perturb_batchnorm(const ir::Model& m, WeightSet& w, std::uint64_t seed) {
  Rng rng(seed);
  for (const ir::Layer& l : m.layers) {
    if (l.op != ir::Op::BatchNorm2d) continue;
    auto fill = [&](const char* p, double lo, double hi) {
      for (float& v : w.at(l.name + "." + p).values<float>())
        v = static_cast<float>(rng.uniform(lo, hi));
    };
    fill("weight", 0.5, 1.5);
    fill("bias", -0.3, 0.3);
    fill("running_mean", -0.5, 0.5);
    fill("running_var", 0.5, 2.0);
  }
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const auto x = a.values<float>();
  const auto y = b.values<float>();
  double scale = 0, diff = 0;
  for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(x[i])));
    diff = std::max(diff, std::fabs(static_cast<double>(x[i]) - y[i]));
  }
  return diff / std::max(scale, 1e-30);
}

// The model as crossdl resolved it (every input named) and its weights as .npy, for the oracle.
void write_for_oracle(const std::string& dir, const ir::Model& m, const WeightSet& w,
                      const Tensor& x) {
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& l = m.layers[i];
    layers.push_back({{"name", l.name},
                      {"op", std::string(ir::op_name(l.op))},
                      {"inputs", ir::resolved_inputs(m, i)},
                      {"kernel", {l.kernel[0], l.kernel[1]}},
                      {"stride", {l.stride[0], l.stride[1]}},
                      {"pad", {l.pad[0], l.pad[1]}},
                      {"bias", l.bias},
                      {"eps", l.eps},
                      {"out", l.out}});
  }
  test::write_text(dir + "/model.json", nlohmann::json{{"layers", layers}}.dump());
  fs::create_directories(dir + "/w");
  for (const std::string& name : w.names()) npy_write(dir + "/w/" + name + ".npy", w.at(name));
  npy_write(dir + "/x.npy", x);
}

Tensor torch_forward(const std::string& dir) {
  const std::string cmd = "/usr/bin/python3 " + test::source_path("tests/oracle/torch_quant.py") +
                          " forward '" + dir + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return npy_read(dir + "/out.npy");
}

struct OracleCase {
  const char* model;
  zoo::InputSpec in;
  std::int64_t batch;
};

TEST(QuantReference, MatchesPyTorchOnEveryZooFamily) {
  std::string why;
  if (!test::python_torch_available(why)) GTEST_SKIP() << why;
  zoo::InputSpec text;
  text.sample_shape = {12};
  text.dtype = DType::I64;
  text.vocab_size = 50;
  text.num_classes = 2;
  const OracleCase cases[] = {
      {"lenet5", test::image_spec(1, 28), 4},   {"lenet1", test::image_spec(1, 28), 3},
      {"resnet20", test::image_spec(3, 32), 2}, {"lstm", test::image_spec(1, 28), 3},
      {"gru", test::image_spec(1, 28), 3},      {"lstm", text, 3}};
  int k = 0;
  for (const OracleCase& c : cases) {
    SCOPED_TRACE(c.model);
    const ir::Model m = zoo::build(c.model, c.in);
    WeightSet w = init_weights(m, 11);
    perturb_batchnorm(m, w, 12);
    const Tensor x = test::random_input(m, c.batch, 13);
    const std::string dir = test::scratch_dir(std::string(c.model) + std::to_string(k++));
    write_for_oracle(dir, m, w, x);
    const Tensor ours = quant::reference_forward(m, w, x);
    const Tensor theirs = torch_forward(dir);
    EXPECT_EQ(ours.shape(), (Shape{c.batch, c.in.num_classes}));
    EXPECT_LT(max_rel_diff(theirs, ours), 1e-5);
  }
}

TEST(QuantReference, LayerOutputsAndErrors) {
  const ir::Model m = zoo::build("lenet5", test::image_spec(1, 28));
  const WeightSet w = init_weights(m, 1);
  const Tensor x = test::random_input(m, 2, 2);
  std::vector<quant::NamedTensor> layers;
  const Tensor y = quant::reference_forward(m, w, x, &layers);
  ASSERT_EQ(layers.size(), m.layers.size());
  EXPECT_EQ(layers[0].layer, "conv1");
  EXPECT_EQ(layers[0].value.shape(), (Shape{2, 6, 28, 28}));
  EXPECT_TRUE(layers.back().value.identical(y));
  for (float v : layers[1].value.values<float>()) EXPECT_GE(v, 0.0f);  // relu1

  const std::string msg = test::error_of([&] {
    quant::reference_forward(m, w, Tensor(DType::F32, {2, 1, 27, 28}));
  });
  EXPECT_NE(msg.find("[2,1,28,28]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2,1,27,28]"), std::string::npos) << msg;
}

TEST(QuantFold, FoldedResnetEqualsUnfolded) {
  const ir::Model m = zoo::build("resnet20", test::image_spec(3, 32));
  WeightSet w = init_weights(m, 5);
  perturb_batchnorm(m, w, 6);
  ir::Model fm;
  WeightSet fw;
  std::map<std::string, std::string> folded;
  quant::fold_batchnorm(m, w, fm, fw, folded);
  EXPECT_EQ(folded.size(), 21u);  // 19 conv+BN pairs on the main path, 2 on the shortcuts
  EXPECT_EQ(folded.at("stage1.block0.bn1"), "stage1.block0.conv1");
  EXPECT_EQ(folded.at("stage2.block0.shortcut.bn"), "stage2.block0.shortcut.conv");
  for (const ir::Layer& l : fm.layers) EXPECT_NE(l.op, ir::Op::BatchNorm2d) << l.name;
  EXPECT_TRUE(fm.find("conv1")->bias);
  EXPECT_TRUE(fw.contains("conv1.bias"));
  EXPECT_NO_THROW(fw.check_against(fm));
  // The Add of the first downsampling block now reads the two convolutions directly.
  EXPECT_EQ(fm.find("stage2.block0.add")->inputs,
            (std::vector<std::string>{"stage2.block0.conv2", "stage2.block0.shortcut.conv"}));

  const Tensor x = test::random_input(m, 3, 7);
  EXPECT_LT(max_rel_diff(quant::reference_forward(m, w, x), quant::reference_forward(fm, fw, x)),
            1e-5);
}

TEST(QuantFold, RefusesABatchNormWithoutItsConvolution) {
  ir::Model m;
  m.name = "bn-first";
  m.input_shape = {2, 4, 4};
  m.num_classes = 32;
  ir::Layer bn;
  bn.name = "bn";
  bn.op = ir::Op::BatchNorm2d;
  ir::Layer flat;
  flat.name = "flat";
  flat.op = ir::Op::Flatten;
  m.layers = {bn, flat};
  const WeightSet w = init_weights(m, 1);
  ir::Model fm;
  WeightSet fw;
  std::map<std::string, std::string> folded;
  const std::string msg = test::error_of([&] { quant::fold_batchnorm(m, w, fm, fw, folded); });
  EXPECT_NE(msg.find("layer bn (BatchNorm2d)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace crossdl
