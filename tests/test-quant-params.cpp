// Quantization parameters: calibration ranges, affine int8 parameters, weight and bias
// quantization for every scheme, fusion and pass-through, the JSON, and half / bfloat16 rounding.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"
#include "support.h"

namespace crossdl {
namespace {

using quant::Calibration;
using quant::QuantOptions;
using quant::Scheme;

QuantOptions with(Calibration c) {
  QuantOptions o;
  o.calibrate = c;
  return o;
}

TEST(QuantParams, MinMaxIsTheObservedRange) {
  const std::vector<float> v = {0.5f, -2.25f, 3.0f, 1.0f};
  const auto r = quant::calibrate_range(v, with(Calibration::MinMax));
  EXPECT_EQ(r.first, -2.25f);
  EXPECT_EQ(r.second, 3.0f);
  EXPECT_FALSE(
      test::error_of([] { quant::calibrate_range({}, with(Calibration::MinMax)); }).empty());
  EXPECT_FALSE(test::error_of([] {
                 quant::calibrate_range({1.0f, NAN}, with(Calibration::MinMax));
               }).empty());
}

TEST(QuantParams, PercentileOfAKnownDistribution) {
  // 100,000 values evenly spread over [-1, 1]: the 99th percentile of |x| is 0.99.
  std::vector<float> v;
  for (int i = 0; i < 100000; ++i)
    v.push_back(-1.0f + 2.0f * (static_cast<float>(i) + 0.5f) / 1e5f);
  QuantOptions o = with(Calibration::Percentile);
  o.percentile = 99.0;
  auto r = quant::calibrate_range(v, o);
  EXPECT_NEAR(r.second, 0.99, 1.0 / 2048 + 1e-6);
  EXPECT_EQ(r.first, -r.second);  // symmetric: negative values were seen

  // Non-negative values (a ReLU output) keep [0, t].
  for (float& x : v) x = std::fabs(x);
  r = quant::calibrate_range(v, o);
  EXPECT_EQ(r.first, 0.0f);
  EXPECT_NEAR(r.second, 0.99, 1.0 / 2048 + 1e-6);
  o.percentile = 100;
  EXPECT_NEAR(quant::calibrate_range(v, o).second, 1.0f, 1e-4);
}

TEST(QuantParams, EntropyClipsAHeavyTailDeterministically) {
  // Normal values with a few far outliers: TensorRT's KL threshold lies well below the maximum.
  Rng rng(3);
  std::vector<float> v;
  for (int i = 0; i < 200000; ++i) v.push_back(static_cast<float>(rng.normal()));
  for (int i = 0; i < 20; ++i) v.push_back(static_cast<float>(40.0 + i));
  const auto r = quant::calibrate_range(v, with(Calibration::Entropy));
  EXPECT_LT(r.second, 0.5f * 59.0f);
  EXPECT_GT(r.second, 2.0f);  // it keeps the bulk of the normal distribution
  EXPECT_EQ(r.first, -r.second);
  const auto again = quant::calibrate_range(v, with(Calibration::Entropy));
  EXPECT_EQ(std::bit_cast<std::uint32_t>(again.second), std::bit_cast<std::uint32_t>(r.second));
}

TEST(QuantParams, AffineInt8MakesZeroExact) {
  for (auto [lo, hi] : std::vector<std::pair<float, float>>{
           {-1.0f, 3.0f}, {0.0f, 6.0f}, {-0.37f, 0.91f}, {0.5f, 2.0f}, {-4.0f, -1.0f}}) {
    const quant::QParams p = quant::affine_int8(lo, hi);
    SCOPED_TRACE(std::to_string(lo) + ".." + std::to_string(hi));
    EXPECT_EQ(p.dtype, "int8");
    EXPECT_EQ(p.axis, -1);
    ASSERT_EQ(p.scale.size(), 1u);
    EXPECT_LE(p.rmin, 0.0f);
    EXPECT_GE(p.rmax, 0.0f);
    const std::int32_t zp = p.zero_point[0];
    EXPECT_GE(zp, -128);
    EXPECT_LE(zp, 127);
    // 0.0 quantizes to the zero point and dequantizes back to exactly 0.
    EXPECT_EQ(std::nearbyint(0.0f / p.scale[0]) + static_cast<float>(zp), static_cast<float>(zp));
    EXPECT_EQ(p.scale[0] * static_cast<float>(zp - zp), 0.0f);
    EXPECT_NEAR(p.scale[0], (p.rmax - p.rmin) / 255.0f, 1e-7);
  }
  EXPECT_EQ(quant::affine_int8(0.0f, 6.0f).zero_point[0], -128);
  EXPECT_EQ(quant::affine_int8(-6.0f, 0.0f).zero_point[0], 127);
  EXPECT_EQ(quant::affine_int8(0.0f, 0.0f).scale[0], 1.0f);
  EXPECT_EQ(quant::affine_int8(-1.0f, 3.0f).zero_point[0], -64);  // round(-128 + 63.75)
}

TEST(QuantParams, StaticLenetPointsWeightsAndBias) {
  const ir::Model m = zoo::build("lenet5", test::image_spec(1, 28));
  const WeightSet w = init_weights(m, 4);
  const Tensor cal = test::random_input(m, 100, 5);
  const quant::QuantModel q = quant::quantize(m, w, cal, QuantOptions{});

  // Every conv/dense followed by its ReLU is fused; the logits are a point of their own.
  const quant::QuantLayer* c1 = q.find("conv1");
  ASSERT_NE(c1, nullptr);
  EXPECT_TRUE(c1->fused_relu);
  EXPECT_EQ(c1->output, "relu1");
  EXPECT_TRUE(q.find("relu1")->output.empty());
  EXPECT_FALSE(q.find("fc3")->fused_relu);
  EXPECT_EQ(q.find("fc3")->output, "fc3");
  std::vector<std::string> keys;
  for (const auto& [k, v] : q.activations) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"fc3", "input", "relu1", "relu2", "relu3", "relu4"}));
  // A ReLU output's range starts at 0: zero point -128.
  EXPECT_EQ(q.activations.at("relu1").zero_point[0], -128);
  // Pass-through layers keep their input's parameters.
  EXPECT_EQ(&q.output_params("pool1"), &q.activations.at("relu1"));
  EXPECT_EQ(&q.output_params("flatten"), &q.activations.at("relu2"));
  EXPECT_EQ(&q.output_params("conv1"), &q.activations.at("relu1"));
  EXPECT_FALSE(test::error_of([&] { q.output_params("nope"); }).empty());

  // Per-channel symmetric weights: each channel's largest |w| maps to 127.
  const quant::QParams& wp = q.weight_params.at("conv1.weight");
  ASSERT_EQ(wp.scale.size(), 6u);
  EXPECT_EQ(wp.axis, 0);
  const auto wf = w.at("conv1.weight").values<float>();
  const std::vector<std::int8_t>& wq = q.weight_q.at("conv1.weight");
  for (std::size_t c = 0; c < 6; ++c) {
    float mx = 0;
    int qmx = 0;
    for (std::size_t j = 0; j < 25; ++j) {
      mx = std::max(mx, std::fabs(wf[c * 25 + j]));
      qmx = std::max(qmx, std::abs(static_cast<int>(wq[c * 25 + j])));
      EXPECT_LE(std::fabs(wf[c * 25 + j] - wq[c * 25 + j] * wp.scale[c]), wp.scale[c] / 2 * 1.0001);
    }
    EXPECT_FLOAT_EQ(wp.scale[c], mx / 127.0f);
    EXPECT_EQ(qmx, 127);
  }
  // Bias int32 with scale input scale x weight scale.
  const quant::QParams& bp = q.bias_params.at("conv1.bias");
  EXPECT_EQ(bp.dtype, "int32");
  EXPECT_FLOAT_EQ(bp.scale[2], q.activations.at("input").scale[0] * wp.scale[2]);
  const float b2 = w.at("conv1.bias").values<float>()[2];
  EXPECT_EQ(q.bias_q.at("conv1.bias")[2],
            static_cast<std::int32_t>(std::nearbyint(b2 / bp.scale[2])));
  // fc1 reads pool2's (= relu2's) parameters.
  EXPECT_FLOAT_EQ(q.bias_params.at("fc1.bias").scale[0],
                  q.activations.at("relu2").scale[0] * q.weight_params.at("fc1.weight").scale[0]);

  // Calibration record: method, size, observed and kept ranges.
  EXPECT_EQ(q.calibration.at("method"), "minmax");
  EXPECT_EQ(q.calibration.at("size"), 100);
  const auto& in = q.calibration.at("tensors").at("input");
  EXPECT_EQ(in.at("observed"), in.at("kept"));

  // Deterministic: quantizing again gives the identical JSON.
  const quant::QuantModel again = quant::quantize(m, w, cal, QuantOptions{});
  EXPECT_EQ(q.to_json().dump(), again.to_json().dump());
  const nlohmann::json j = q.to_json();
  EXPECT_EQ(j.at("scheme"), "int8-static");
  EXPECT_EQ(j.at("weights").at("conv1.weight").at("scale").size(), 6u);
  EXPECT_EQ(j.at("activations").at("relu1").at("zero_point")[0], -128);

  // Per tensor: one scale.
  QuantOptions pt;
  pt.per_channel = false;
  const quant::QuantModel qt = quant::quantize(m, w, cal, pt);
  EXPECT_EQ(qt.weight_params.at("conv1.weight").scale.size(), 1u);
  EXPECT_EQ(qt.weight_params.at("conv1.weight").axis, -1);
}

TEST(QuantParams, PercentileAndEntropyNarrowTheRanges) {
  const ir::Model m = zoo::build("lenet5", test::image_spec(1, 28));
  const WeightSet w = init_weights(m, 4);
  const Tensor cal = test::random_input(m, 64, 5);
  const quant::QuantModel mm = quant::quantize(m, w, cal, with(Calibration::MinMax));
  for (Calibration c : {Calibration::Percentile, Calibration::Entropy}) {
    const quant::QuantModel q = quant::quantize(m, w, cal, with(c));
    SCOPED_TRACE(std::string(quant::calibration_name(c)));
    // Percentile 99.99 always drops the largest |x|; on this Gaussian input the KL search may
    // keep the whole range.
    if (c == Calibration::Percentile) {
      EXPECT_LT(q.activations.at("input").rmax, mm.activations.at("input").rmax);
    } else {
      EXPECT_LE(q.activations.at("input").rmax, mm.activations.at("input").rmax);
    }
    EXPECT_EQ(q.activations.at("relu1").rmin, 0.0f);
    EXPECT_LE(q.activations.at("relu1").rmax, mm.activations.at("relu1").rmax);
    EXPECT_EQ(q.to_json().dump(), quant::quantize(m, w, cal, with(c)).to_json().dump());
  }
}

TEST(QuantParams, ResnetFusesAddAndFoldsBatchNorm) {
  const ir::Model m = zoo::build("resnet20", test::image_spec(3, 32));
  const WeightSet w = init_weights(m, 4);
  const quant::QuantModel q = quant::quantize(m, w, test::random_input(m, 8, 5), QuantOptions{});
  EXPECT_EQ(q.folded.size(), 21u);
  EXPECT_EQ(q.find("stage1.block0.add")->output, "stage1.block0.relu2");
  EXPECT_TRUE(q.find("stage1.block0.add")->fused_relu);
  // conv2 is followed by the Add, not by a ReLU: its own point.
  EXPECT_EQ(q.find("stage1.block0.conv2")->output, "stage1.block0.conv2");
  EXPECT_EQ(q.activations.count("stage1.block0.conv2"), 1u);
  // A folded BatchNorm's parameters are its convolution's.
  EXPECT_EQ(&q.output_params("stage1.block0.bn2"), &q.activations.at("stage1.block0.conv2"));
  EXPECT_EQ(&q.output_params("flatten"), &q.activations.at("stage3.block2.relu2"));
  EXPECT_EQ(q.bias_q.at("conv1.bias").size(), 16u);
}

TEST(QuantParams, StaticRefusesRecurrentModels) {
  zoo::InputSpec text;
  text.sample_shape = {10};
  text.dtype = DType::I64;
  text.vocab_size = 30;
  text.num_classes = 2;
  for (const char* name : {"lstm", "gru"}) {
    const ir::Model m = zoo::build(name, test::image_spec(1, 28));
    const WeightSet w = init_weights(m, 1);
    const std::string msg =
        test::error_of([&] { quant::quantize(m, w, test::random_input(m, 4, 1), QuantOptions{}); });
    EXPECT_NE(msg.find("to_seq (ImageToSequence)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("int8-static covers the image ops"), std::string::npos) << msg;
    EXPECT_NE(msg.find("int8-dynamic"), std::string::npos) << msg;
  }
  const ir::Model t = zoo::build("lstm", text);
  const std::string msg = test::error_of([&] {
    quant::quantize(t, init_weights(t, 1), Tensor(DType::I64, {2, 10}), QuantOptions{});
  });
  EXPECT_NE(msg.find("embed (Embedding)"), std::string::npos) << msg;

  // Int8Dynamic takes the recurrent weights.
  QuantOptions dyn;
  dyn.scheme = Scheme::Int8Dynamic;
  const ir::Model m = zoo::build("gru", test::image_spec(1, 28));
  const quant::QuantModel q = quant::quantize(m, init_weights(m, 1), Tensor(), dyn);
  EXPECT_EQ(q.weight_params.count("gru.weight_ih"), 1u);
  EXPECT_EQ(q.weight_params.count("gru.weight_hh"), 1u);
  EXPECT_EQ(q.weight_params.count("fc.weight"), 1u);
  EXPECT_EQ(q.weight_params.at("gru.weight_ih").scale.size(), 3u * 128u);
  EXPECT_TRUE(q.activations.empty());
  EXPECT_TRUE(q.bias_q.empty());
}

TEST(QuantParams, WeightOnlyFollowsTheTfjsConverter) {
  const ir::Model m = zoo::build("lenet1", test::image_spec(1, 28));
  const WeightSet w = init_weights(m, 8);
  for (Scheme s : {Scheme::W8, Scheme::W16}) {
    QuantOptions o;
    o.scheme = s;
    const quant::QuantModel q = quant::quantize(m, w, Tensor(), o);
    SCOPED_TRACE(std::string(quant::scheme_name(s)));
    const double qmax = s == Scheme::W8 ? 255 : 65535;
    EXPECT_EQ(q.weight_only_params.size(), w.size());  // every float tensor, biases included
    const WeightSet dq = quant::dequantized_weights(q);
    for (const std::string& name : w.names()) {
      const quant::QParams& p = q.weight_only_params.at(name);
      EXPECT_EQ(p.dtype, s == Scheme::W8 ? "uint8" : "uint16");
      const auto v = w.at(name).values<float>();
      const float lo = *std::min_element(v.begin(), v.end());
      const float hi = *std::max_element(v.begin(), v.end());
      EXPECT_NEAR(p.scale[0], (static_cast<double>(hi) - lo) / qmax, 1e-9);
      // The range is nudged so that 0.0 is a code: -min / scale is an integer; the error is at
      // most one step (half a step of rounding, up to half a step moved by the nudge).
      // (Only when 0 lies in the range; the stored float scale and min carry ~1e-7 relative.)
      const double zp = -static_cast<double>(p.rmin) / p.scale[0];
      if (lo <= 0 && hi >= 0) {
        EXPECT_NEAR(zp, std::nearbyint(zp), 2e-7 * std::fabs(zp) + 1e-4);
      }
      if (lo > 0) {
        EXPECT_EQ(p.rmin, lo);
      }
      const auto d = dq.at(name).values<float>();
      for (std::size_t i = 0; i < v.size(); ++i)
        ASSERT_LE(std::fabs(d[i] - v[i]), p.scale[0] * 1.0 + 1e-6) << name << "[" << i << "]";
    }
  }
}

TEST(QuantParams, Int8DequantizedWeights) {
  const ir::Model m = zoo::build("lenet5", test::image_spec(1, 28));
  const WeightSet w = init_weights(m, 4);
  const quant::QuantModel q = quant::quantize(m, w, test::random_input(m, 16, 1), QuantOptions{});
  const WeightSet d = quant::dequantized_weights(q);
  EXPECT_EQ(d.names(), q.weights.names());
  EXPECT_TRUE(d.at("fc1.bias").identical(q.weights.at("fc1.bias")));  // biases stay float
  const auto dv = d.at("fc2.weight").values<float>();
  const std::vector<std::int8_t>& qv = q.weight_q.at("fc2.weight");
  const std::vector<float>& sc = q.weight_params.at("fc2.weight").scale;
  EXPECT_EQ(dv[120 * 5 + 3], qv[120 * 5 + 3] * sc[5]);
}

TEST(QuantHalf, Fp16KnownValues) {
  EXPECT_EQ(quant::fp16_bits(1.0f), 0x3c00);
  EXPECT_EQ(quant::fp16_bits(-2.0f), 0xc000);
  EXPECT_EQ(quant::fp16_bits(1.0f / 3.0f), 0x3555);
  EXPECT_EQ(quant::round_to_fp16(1.0f / 3.0f), 0.333251953125f);
  EXPECT_EQ(quant::fp16_bits(65504.0f), 0x7bff);
  EXPECT_EQ(quant::fp16_bits(65519.0f), 0x7bff);  // below the halfway point to 2^16
  EXPECT_EQ(quant::fp16_bits(65520.0f), 0x7c00);  // halfway ties to the even 2^16: infinity
  EXPECT_TRUE(std::isinf(quant::round_to_fp16(1e6f)));
  EXPECT_EQ(quant::fp16_bits(-INFINITY), 0xfc00);
  EXPECT_TRUE(std::isnan(quant::round_to_fp16(NAN)));
  // Subnormals: 2^-24 is the smallest, half of it ties to even (0), 1.5 x 2^-24 to 2 x 2^-24.
  EXPECT_EQ(quant::fp16_bits(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(quant::fp16_bits(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(quant::fp16_bits(std::ldexp(3.0f, -25)), 0x0002);
  EXPECT_EQ(quant::fp16_bits(std::ldexp(1.0f, -14)), 0x0400);     // smallest normal
  EXPECT_EQ(quant::fp16_bits(std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into the normals
  EXPECT_EQ(quant::round_to_fp16(std::ldexp(5.0f, -24)), std::ldexp(5.0f, -24));
  // Ties to even among normals: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(quant::fp16_bits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(quant::fp16_bits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(quant::fp16_bits(-0.0f), 0x8000);
}

TEST(QuantHalf, Bf16KnownValues) {
  EXPECT_EQ(quant::bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(quant::bf16_bits(1.0f / 3.0f), 0x3eab);
  EXPECT_EQ(quant::round_to_bf16(1.0f / 3.0f), 0.333984375f);
  EXPECT_EQ(quant::round_to_bf16(65504.0f), 65536.0f);
  // Ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(quant::bf16_bits(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(quant::bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isinf(quant::round_to_bf16(std::numeric_limits<float>::max())));
  EXPECT_TRUE(std::isnan(quant::round_to_bf16(NAN)));
  EXPECT_EQ(quant::round_to_bf16(std::ldexp(1.0f, -133)), std::ldexp(1.0f, -133));  // subnormal
}

TEST(QuantParams, Names) {
  for (const std::string& n : quant::scheme_names()) {
    Scheme s;
    ASSERT_TRUE(quant::scheme_from_name(n, s));
    EXPECT_EQ(quant::scheme_name(s), n);
  }
  EXPECT_EQ(quant::scheme_names().size(), 6u);
  Scheme s;
  EXPECT_FALSE(quant::scheme_from_name("int4", s));
  Calibration c;
  EXPECT_TRUE(quant::calibration_from_name("entropy", c));
  EXPECT_EQ(c, Calibration::Entropy);
  EXPECT_FALSE(quant::calibration_from_name("mse", c));
}

}  // namespace
}  // namespace crossdl
