// The TF.js weight reader against the writer: tfjs_write then tfjs_read_weights +
// tfjs_weights_to_ir gives back the same weight set for every zoo model TF.js can hold (the LSTM's
// two biases come back summed into bias_ih), and damaged or foreign weights are refused by name.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "crossdl/tfjs_io.h"
#include "crossdl/zoo.h"
#include "support.h"

using namespace crossdl;

namespace {

const zoo::InputSpec kMnistLike{{1, 28, 28}, DType::F32, 10, 0};
const zoo::InputSpec kCifarLike{{3, 32, 32}, DType::F32, 10, 0};
const zoo::InputSpec kTokens{{12}, DType::I64, 2, 50};

// init_weights with BatchNorm statistics that are not the identity, so that each of the four
// tensors has to land in its own place.
WeightSet weights_for(const ir::Model& m, std::uint64_t seed) {
  WeightSet w = init_weights(m, seed);
  Rng r(seed * 31 + 7);
  for (const ir::Layer& l : m.layers) {
    if (l.op != ir::Op::BatchNorm2d) continue;
    for (const char* p : {"weight", "bias", "running_mean", "running_var"})
      for (float& v : w.at(l.name + "." + p).values<float>())
        v = static_cast<float>(r.uniform(0.1, 2.0));
  }
  return w;
}

WeightSet round_trip(const ir::Model& m, const WeightSet& w, const std::string& tag) {
  const TfjsFiles f = tfjs_write(test::scratch_dir(tag), m, w);
  return tfjs_weights_to_ir(m, tfjs_read_weights(f.model_json));
}

void expect_identical(const WeightSet& a, const WeightSet& b) {
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& n : a.names()) {
    EXPECT_EQ(a.at(n).shape(), b.at(n).shape()) << n;
    EXPECT_EQ(a.at(n).layout(), b.at(n).layout()) << n;
    EXPECT_TRUE(a.at(n).identical(b.at(n))) << n << " differs after the round trip";
  }
}

TEST(TfjsRead, ImageModelsRoundTripBitExactly) {
  struct Case {
    const char* model;
    zoo::InputSpec in;
  };
  for (const Case& c : {Case{"lenet1", kMnistLike}, Case{"lenet5", kMnistLike},
                        Case{"resnet20", kMnistLike}, Case{"vgg16", kCifarLike}}) {
    SCOPED_TRACE(c.model);
    const ir::Model m = zoo::build(c.model, c.in);
    const WeightSet w = weights_for(m, 3);
    const WeightSet back = round_trip(m, w, std::string("tfjs-read-") + c.model);
    expect_identical(w, back);
    EXPECT_EQ(back.sha256(), w.sha256());
  }
}

// TF.js keeps one LSTM bias: it reads back as bias_ih = b_ih + b_hh (float32 sum, as written) and
// bias_hh = 0; every other tensor is bit-exact.
TEST(TfjsRead, LstmBiasesComeBackSummed) {
  for (const zoo::InputSpec& in : {kMnistLike, kTokens}) {
    const ir::Model m = zoo::build("lstm", in);
    const WeightSet w = weights_for(m, 5);
    const WeightSet back = round_trip(m, w, "tfjs-read-lstm");
    ASSERT_EQ(w.names(), back.names());
    const ir::Layer* lstm = nullptr;
    for (const ir::Layer& l : m.layers)
      if (l.op == ir::Op::LSTM) lstm = &l;
    ASSERT_NE(lstm, nullptr);
    const std::string bih = lstm->name + ".bias_ih", bhh = lstm->name + ".bias_hh";
    for (const std::string& n : w.names()) {
      if (n == bih || n == bhh) continue;
      EXPECT_TRUE(w.at(n).identical(back.at(n))) << n;
    }
    const auto a = w.at(bih).values<float>(), b = w.at(bhh).values<float>();
    const auto sum = back.at(bih).values<float>(), zero = back.at(bhh).values<float>();
    ASSERT_EQ(sum.size(), a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(sum[i], a[i] + b[i]) << i;
      EXPECT_EQ(zero[i], 0.0f) << i;
    }
  }
}

TEST(TfjsRead, DenseAfterFlattenIsPermutedBack) {
  // LeNet-5's fc1 reads a 16x5x5 map: its kernel rows are in HWC order in TF.js. Element
  // (o=3, c=1, y=2, x=1) of the IR weight is kernel row hwc = (2*5+1)*16+1.
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  const WeightSet w = weights_for(m, 9);
  const TfjsFiles f = tfjs_write(test::scratch_dir("tfjs-read-flat"), m, w);
  const TfjsWeights tw = tfjs_read_weights(f.model_json);
  const Tensor& kernel = tw.at("fc1/kernel");
  ASSERT_EQ(kernel.rank(), 2u);
  const std::int64_t out_n = kernel.dim(1), in_n = kernel.dim(0);
  ASSERT_EQ(in_n, 400);
  const std::int64_t chw = 1 * 25 + 2 * 5 + 1, hwc = (2 * 5 + 1) * 16 + 1;
  EXPECT_EQ(kernel.values<float>()[static_cast<std::size_t>(hwc * out_n + 3)],
            w.at("fc1.weight").values<float>()[static_cast<std::size_t>(3 * in_n + chw)]);
  expect_identical(w, tfjs_weights_to_ir(m, tw));
}

TEST(TfjsRead, RefusesMissingMisshapenAndGru) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  const WeightSet w = weights_for(m, 2);
  const TfjsFiles f = tfjs_write(test::scratch_dir("tfjs-read-bad"), m, w);
  TfjsWeights tw = tfjs_read_weights(f.model_json);

  TfjsWeights missing = tw;
  missing.erase("conv2/bias");
  try {
    tfjs_weights_to_ir(m, missing);
    ADD_FAILURE() << "a missing weight was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("conv2/bias"), std::string::npos) << e.what();
  }

  TfjsWeights bad = tw;
  bad.at("fc2/kernel") = Tensor(DType::F32, {7, 7});
  try {
    tfjs_weights_to_ir(m, bad);
    ADD_FAILURE() << "a misshapen weight was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("fc2/kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[7,7]"), std::string::npos) << e.what();
  }

  const ir::Model gru = zoo::build("gru", kMnistLike);
  EXPECT_THROW(tfjs_weights_to_ir(gru, {}), InputError);

  // A truncated weights file is told by the file check, naming the file.
  std::filesystem::resize_file(f.weights_bin, 100);
  try {
    tfjs_read_weights(f.model_json);
    ADD_FAILURE() << "a truncated weights.bin was read";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.json"), std::string::npos) << e.what();
  }
}

}  // namespace
