// The IR: op names, shape inference, validation errors, weight specs, the weight set, the RNG and
// the initialiser.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "crossdl/ir.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"
#include "support.h"

namespace crossdl {
namespace {

using ir::Layer;
using ir::Model;
using ir::Op;

Layer make(const std::string& name, Op op, std::int64_t out = 0) {
  Layer l;
  l.name = name;
  l.op = op;
  l.out = out;
  return l;
}

Layer conv(const std::string& name, std::int64_t out, std::int64_t k, std::int64_t pad = 0) {
  Layer l = make(name, Op::Conv2d, out);
  l.kernel[0] = l.kernel[1] = k;
  l.pad[0] = l.pad[1] = pad;
  return l;
}

Layer pool(const std::string& name, std::int64_t k) {
  Layer l = make(name, Op::MaxPool2d);
  l.kernel[0] = l.kernel[1] = k;
  l.stride[0] = l.stride[1] = k;
  return l;
}

Model small_cnn() {
  Model m;
  m.name = "small";
  m.input_shape = {1, 28, 28};
  m.num_classes = 10;
  m.layers = {conv("conv1", 6, 5, 2),    make("relu1", Op::ReLU), pool("pool1", 2),
              conv("conv2", 16, 5),      pool("pool2", 2),        make("flatten", Op::Flatten),
              make("fc1", Op::Dense, 10)};
  return m;
}

using test::error_of;

TEST(IrOps, NamesRoundTrip) {
  for (int i = 0; i <= static_cast<int>(Op::GRU); ++i) {
    const Op op = static_cast<Op>(i);
    Op back = Op::ReLU;
    ASSERT_TRUE(ir::op_from_name(ir::op_name(op), back)) << ir::op_name(op);
    EXPECT_EQ(back, op);
  }
  Op out;
  EXPECT_FALSE(ir::op_from_name("Conv3d", out));
  EXPECT_EQ(ir::op_name(Op::ImageToSequence), "ImageToSequence");
}

TEST(IrShapes, SmallCnn) {
  const Model m = small_cnn();
  ir::validate(m);
  const auto shapes = ir::infer_shapes(m);
  ASSERT_EQ(shapes.size(), 7u);
  EXPECT_EQ(shapes[0], (Shape{6, 28, 28}));
  EXPECT_EQ(shapes[2], (Shape{6, 14, 14}));
  EXPECT_EQ(shapes[3], (Shape{16, 10, 10}));
  EXPECT_EQ(shapes[4], (Shape{16, 5, 5}));
  EXPECT_EQ(shapes[5], (Shape{400}));
  EXPECT_EQ(shapes[6], (Shape{10}));
  EXPECT_NE(m.find("pool2"), nullptr);
  EXPECT_EQ(m.find("nope"), nullptr);
  EXPECT_EQ(ir::resolved_inputs(m, 0), std::vector<std::string>{"input"});
  EXPECT_EQ(ir::resolved_inputs(m, 3), std::vector<std::string>{"pool1"});
}

TEST(IrShapes, FloorModeStridesAndSequences) {
  Model m;
  m.name = "t";
  m.input_shape = {3, 7, 9};
  m.num_classes = 4;
  Layer c = conv("c", 8, 3, 1);
  c.stride[0] = 2;
  c.stride[1] = 3;  // h: (7+2-3)/2+1 = 4, w: (9+2-3)/3+1 = 3
  Layer p = make("p", Op::AvgPool2d);
  p.kernel[0] = p.kernel[1] = 3;
  p.stride[0] = p.stride[1] = 2;
  p.pad[0] = p.pad[1] = 1;  // h: (4+2-3)/2+1 = 2, w: (3+2-3)/2+1 = 2
  m.layers = {c,
              p,
              make("g", Op::GlobalAvgPool),
              make("seq", Op::ImageToSequence),
              make("rnn", Op::GRU, 5),
              make("fc", Op::Dense, 4),
              make("sm", Op::Softmax)};
  const auto s = ir::infer_shapes(m);
  EXPECT_EQ(s[0], (Shape{8, 4, 3}));
  EXPECT_EQ(s[1], (Shape{8, 2, 2}));
  EXPECT_EQ(s[2], (Shape{8, 1, 1}));
  EXPECT_EQ(s[3], (Shape{1, 8}));
  EXPECT_EQ(s[4], (Shape{5}));
  EXPECT_EQ(s[6], (Shape{4}));
  ir::validate(m);
}

TEST(IrValidate, DenseOnImageNamesLayerAndFix) {
  Model m = small_cnn();
  m.layers.erase(m.layers.begin() + 5);  // drop the Flatten
  const std::string msg = error_of([&] { ir::validate(m); });
  EXPECT_NE(msg.find("layer fc1 (Dense): expects a flat input, got [16,5,5]; add a Flatten"),
            std::string::npos)
      << msg;
}

TEST(IrValidate, StructuralErrors) {
  Model m = small_cnn();
  m.layers[3].inputs = {"ghost"};
  EXPECT_NE(error_of([&] { ir::validate(m); }).find("layer conv2 (Conv2d): input 'ghost'"),
            std::string::npos);

  m = small_cnn();
  m.layers[2].name = "relu1";
  EXPECT_NE(error_of([&] { ir::validate(m); }).find("layer relu1 (MaxPool2d)"), std::string::npos);

  m = small_cnn();
  Layer add = make("add", Op::Add);
  add.inputs = {"pool1", "pool2"};
  m.layers.insert(m.layers.begin() + 5, add);
  const std::string msg = error_of([&] { ir::validate(m); });
  EXPECT_NE(msg.find("layer add (Add)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("differ in shape"), std::string::npos) << msg;

  m = small_cnn();
  m.layers.back().out = 7;  // logits do not match num_classes
  EXPECT_NE(error_of([&] { ir::validate(m); }).find("layer fc1 (Dense)"), std::string::npos);

  m = small_cnn();
  m.input_shape = {1, 6, 6};  // conv2 cannot fit
  EXPECT_NE(error_of([&] { ir::validate(m); }).find("layer conv2 (Conv2d)"), std::string::npos);

  m = small_cnn();
  m.layers.insert(m.layers.begin() + 5, make("lstm", Op::LSTM, 8));
  EXPECT_NE(error_of([&] { ir::validate(m); }).find("layer lstm (LSTM): expects a sequence"),
            std::string::npos);

  m = small_cnn();
  m.input_dtype = DType::I64;
  EXPECT_NE(error_of([&] { ir::validate(m); }).find("layer conv1 (Conv2d)"), std::string::npos);

  m = small_cnn();
  m.layers[0].name = "input";
  EXPECT_NE(error_of([&] { ir::validate(m); }).find("reserved"), std::string::npos);
}

TEST(IrWeights, SpecsFollowTheDocumentedLayouts) {
  Model m;
  m.name = "mix";
  m.input_shape = {3, 8, 8};
  m.num_classes = 2;
  Layer c = conv("c", 4, 3, 1);
  c.bias = false;
  m.layers = {c, make("bn", Op::BatchNorm2d), make("seq", Op::ImageToSequence),
              make("lstm", Op::LSTM, 6), make("fc", Op::Dense, 2)};
  const auto specs = ir::weight_specs(m);
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"c.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                      "bn.running_var", "lstm.weight_ih", "lstm.weight_hh",
                                      "lstm.bias_ih", "lstm.bias_hh", "fc.weight", "fc.bias"}));
  EXPECT_EQ(specs[0].shape, (Shape{4, 3, 3, 3}));
  EXPECT_EQ(specs[0].layout, Layout::OIHW);
  EXPECT_EQ(specs[0].fan_in, 27);
  EXPECT_EQ(specs[1].shape, (Shape{4}));
  EXPECT_EQ(specs[5].shape, (Shape{24, 32}));  // 4H x (C*W)
  EXPECT_EQ(specs[5].layout, Layout::GatesIFGO);
  EXPECT_EQ(specs[6].shape, (Shape{24, 6}));
  EXPECT_EQ(specs[5].fan_in, 6);
  EXPECT_EQ(specs[9].shape, (Shape{2, 6}));
  EXPECT_EQ(specs[9].layout, Layout::OI);

  m.layers[3].op = Op::GRU;
  EXPECT_EQ(ir::weight_specs(m)[5].shape, (Shape{18, 32}));
  EXPECT_EQ(ir::weight_specs(m)[5].layout, Layout::GatesRZN);
}

TEST(IrWeightSet, OrderLookupAndFingerprint) {
  WeightSet w;
  w.set("b", Tensor::f32({2}, {1, 2}));
  w.set("a", Tensor::f32({1, 3}, {3, 4, 5}));
  w.set("b", Tensor::f32({2}, {6, 7}));  // replacing keeps the position
  EXPECT_EQ(w.names(), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(w.size(), 2u);
  EXPECT_EQ(w.parameter_count(), 5);
  EXPECT_EQ(w.at("b").values<float>()[0], 6.0f);
  EXPECT_TRUE(w.contains("a"));
  EXPECT_THROW(w.at("zzz"), InputError);

  WeightSet same;
  same.set("b", Tensor::f32({2}, {6, 7}));
  same.set("a", Tensor::f32({1, 3}, {3, 4, 5}));
  EXPECT_TRUE(w.identical(same));
  EXPECT_EQ(w.sha256(), same.sha256());
  EXPECT_EQ(w.sha256().size(), 64u);

  WeightSet reordered;
  reordered.set("a", Tensor::f32({1, 3}, {3, 4, 5}));
  reordered.set("b", Tensor::f32({2}, {6, 7}));
  EXPECT_FALSE(w.identical(reordered));
  EXPECT_NE(w.sha256(), reordered.sha256());

  WeightSet reshaped = same;
  reshaped.set("a", Tensor::f32({3}, {3, 4, 5}));
  EXPECT_NE(w.sha256(), reshaped.sha256());

  WeightSet flipped = same;
  auto bits = std::bit_cast<std::uint32_t>(flipped.at("a").values<float>()[2]) ^ 1u;
  flipped.at("a").values<float>()[2] = std::bit_cast<float>(bits);
  EXPECT_FALSE(w.identical(flipped));
  EXPECT_NE(w.sha256(), flipped.sha256());

  WeightSet relabelled = same;
  relabelled.at("a").set_layout(Layout::OI);
  EXPECT_FALSE(w.identical(relabelled));
}

TEST(IrWeightSet, CheckAgainstModel) {
  const Model m = small_cnn();
  WeightSet w = init_weights(m, 1);
  w.check_against(m);
  WeightSet missing;
  for (const auto& n : w.names())
    if (n != "conv2.bias") missing.set(n, w.at(n));
  EXPECT_NE(error_of([&] { missing.check_against(m); }).find("conv2.bias"), std::string::npos);
  WeightSet wrong = w;
  wrong.set("fc1.weight", Tensor(DType::F32, {10, 399}));
  EXPECT_NE(error_of([&] { wrong.check_against(m); }).find("fc1.weight"), std::string::npos);
}

TEST(IrRng, SplitMixSeedingAndXoshiro) {
  // SplitMix64 from 0 gives 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, ... (its reference output);
  // xoshiro256**'s first result is rotl(s1 * 5, 7) * 9.
  Rng r(0);
  const std::uint64_t s1 = 0x6e789e6aa1b965f4ull;
  EXPECT_EQ(r.next_u64(), std::rotl(s1 * 5, 7) * 9);
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    EXPECT_NE(x, c.next_u64());
  }
}

TEST(IrRng, Distributions) {
  Rng r(7);
  double sum = 0, sum2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    const double v = r.uniform(-2.0, 3.0);
    ASSERT_GE(v, -2.0);
    ASSERT_LT(v, 3.0);
    const double z = r.normal();
    ASSERT_TRUE(std::isfinite(z));
    sum += z;
    sum2 += z * z;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.02);
  EXPECT_NEAR(sum2 / n, 1.0, 0.02);

  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 30000; ++i) ++counts[r.below(3)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
  EXPECT_EQ(r.below(1), 0u);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(r.below((1ull << 63) + 1), (1ull << 63) + 1);
  EXPECT_THROW(r.below(0), std::invalid_argument);
}

TEST(IrInit, DeterministicPerSeedAndBounded) {
  zoo::InputSpec text;
  text.sample_shape = {20};
  text.dtype = DType::I64;
  text.vocab_size = 5000;
  text.num_classes = 2;
  for (const Model& m : {zoo::build("lenet5", {{1, 28, 28}}), zoo::build("resnet20", {{3, 32, 32}}),
                         zoo::build("lstm", text)}) {
    SCOPED_TRACE(m.name);
    const WeightSet a = init_weights(m, 11), b = init_weights(m, 11), c = init_weights(m, 12);
    EXPECT_TRUE(a.identical(b));
    EXPECT_EQ(a.sha256(), b.sha256());
    EXPECT_NE(a.sha256(), c.sha256());
    a.check_against(m);
    for (const ir::WeightSpec& s : ir::weight_specs(m)) {
      const Tensor& t = a.at(s.name);
      EXPECT_EQ(t.layout(), s.layout) << s.name;
      const ir::Op op = m.find(s.layer)->op;
      auto v = t.values<float>();
      if (op == Op::BatchNorm2d) {
        const float want = s.param == "weight" || s.param == "running_var" ? 1.0f : 0.0f;
        for (float x : v) ASSERT_EQ(x, want) << s.name;
      } else if (op == Op::Embedding) {
        double sum = 0, sum2 = 0;
        for (float x : v) sum += x, sum2 += double(x) * x;
        EXPECT_NEAR(sum / v.size(), 0.0, 0.01);
        EXPECT_NEAR(sum2 / v.size(), 1.0, 0.01);
      } else {
        const float bound = static_cast<float>(1.0 / std::sqrt(double(s.fan_in)));
        float lo = 0, hi = 0;
        for (float x : v) {
          ASSERT_LE(std::fabs(x), bound) << s.name;
          lo = std::min(lo, x);
          hi = std::max(hi, x);
        }
        if (v.size() >= 100) {  // the draws fill the range
          EXPECT_LT(lo, -0.9f * bound) << s.name;
          EXPECT_GT(hi, 0.9f * bound) << s.name;
        }
      }
    }
  }
}

TEST(IrInit, RecurrentFanInIsHidden) {
  zoo::InputSpec img{{1, 28, 28}};
  const Model m = zoo::build("gru", img);
  const WeightSet w = init_weights(m, 3);
  const float bound = static_cast<float>(1.0 / std::sqrt(128.0));
  float hi = 0;
  for (const char* p : {"gru.weight_ih", "gru.weight_hh", "gru.bias_ih", "gru.bias_hh"})
    for (float x : w.at(p).values<float>()) hi = std::max(hi, std::fabs(x));
  EXPECT_LE(hi, bound);
  EXPECT_GT(hi, 0.99f * bound);
}

}  // namespace
}  // namespace crossdl
