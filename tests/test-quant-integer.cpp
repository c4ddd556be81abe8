// The integer reference: known values of both arithmetics, a whole LeNet-5 and ResNet-20 against
// fp32, step agreement and SQNR, and single layers bit for bit against PyTorch's own quantized
// kernels (tests/oracle/torch_quant.py, engines QNNPACK and oneDNN).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "crossdl/npy.h"
#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"
#include "support.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using quant::Arithmetic;
using quant::QParams;
using quant::QuantModel;

QParams act(float scale, std::int32_t zp) {
  QParams p;
  p.dtype = "int8";
  p.scale = {scale};
  p.zero_point = {zp};
  return p;
}

QParams wparams(std::vector<float> scales) {
  QParams p;
  p.dtype = "int8";
  p.axis = scales.size() > 1 ? 0 : -1;
  p.zero_point.assign(scales.size(), 0);
  p.scale = std::move(scales);
  return p;
}

ir::Layer conv_layer(const std::string& name, std::int64_t out, std::int64_t k, std::int64_t stride,
                     std::int64_t pad) {
  ir::Layer l;
  l.name = name;
  l.op = ir::Op::Conv2d;
  l.out = out;
  l.kernel[0] = l.kernel[1] = k;
  l.stride[0] = l.stride[1] = stride;
  l.pad[0] = l.pad[1] = pad;
  return l;
}

ir::Layer simple(const std::string& name, ir::Op op) {
  ir::Layer l;
  l.name = name;
  l.op = op;
  return l;
}

// A QuantModel assembled by hand: a model of one computing layer (and its ReLU), or of pools.
QuantModel hand_model(const Shape& input, std::vector<ir::Layer> layers) {
  QuantModel q;
  q.options.scheme = quant::Scheme::Int8Static;
  q.model.name = "hand";
  q.model.input_shape = input;
  q.model.num_classes = 1;
  q.model.layers = std::move(layers);
  for (std::size_t i = 0; i < q.model.layers.size(); ++i) {
    const ir::Layer& l = q.model.layers[i];
    quant::QuantLayer ql{l.name, l.name, false};
    if (l.op == ir::Op::ReLU && i > 0 && q.model.layers[i - 1].op != ir::Op::MaxPool2d) {
      ql.output.clear();
      q.layers.back().output = l.name;
      q.layers.back().fused_relu = true;
    }
    q.layers.push_back(ql);
  }
  return q;
}

Tensor input_of(const QuantModel& q, std::vector<float> v) {
  Shape s = {static_cast<std::int64_t>(v.size()) / shape_numel(q.model.input_shape)};
  s.insert(s.end(), q.model.input_shape.begin(), q.model.input_shape.end());
  return Tensor::f32(s, std::move(v));
}

std::vector<int> ints(const quant::IntLayer& l) {
  return {l.q.begin(), l.q.end()};
}

TEST(QuantInteger, RequantizationRoundingOfEachSpec) {
  // acc x 0.5 on acc = 1, 3, -1, -3, 5: ONNX Runtime rounds half to even; TFLite's
  // SaturatingRoundingDoublingHighMul rounds these halves up (towards +inf).
  QuantModel q = hand_model({1, 1, 5}, {conv_layer("c", 1, 1, 1, 0)});
  q.activations["input"] = act(1.0f, 0);
  q.activations["c"] = act(1.0f, 0);
  q.weight_params["c.weight"] = wparams({0.5f});
  q.weight_q["c.weight"] = {1};
  q.bias_q["c.bias"] = {0};
  const Tensor x = input_of(q, {1, 3, -1, -3, 5});
  std::vector<quant::IntLayer> onnx, tfl;
  quant::integer_forward(q, x, Arithmetic::Onnx, &onnx);
  quant::integer_forward(q, x, Arithmetic::Tflite, &tfl);
  EXPECT_EQ(ints(onnx.back()), (std::vector<int>{0, 2, 0, -2, 2}));
  EXPECT_EQ(ints(tfl.back()), (std::vector<int>{1, 2, 0, -1, 3}));

  // The input quantization: ONNX's QuantizeLinear rounds half to even, TFLite's QUANTIZE half
  // away from zero; both saturate.
  QuantModel id = hand_model({1, 1, 4}, {simple("f", ir::Op::Flatten)});
  id.activations["input"] = act(0.5f, 1);
  const Tensor xi = input_of(id, {0.25f, -0.75f, 1000.0f, -1000.0f});
  std::vector<quant::IntLayer> a, b;
  const Tensor back = quant::integer_forward(id, xi, Arithmetic::Onnx, &a);
  quant::integer_forward(id, xi, Arithmetic::Tflite, &b);
  EXPECT_EQ(ints(a.back()), (std::vector<int>{1, -1, 127, -128}));
  EXPECT_EQ(ints(b.back()), (std::vector<int>{2, -1, 127, -128}));
  EXPECT_EQ(back.values<float>()[2], 63.0f);  // dequantized: 0.5 x (127 - 1)
}

TEST(QuantInteger, AveragePoolRoundingOfEachSpec) {
  // Global average of {2, 2, 3, 3} = 2.5: TFLite's AVERAGE_POOL_2D rounds half away from zero (3),
  // ONNX Runtime's QLinearGlobalAveragePool half to even (2); -2.5 gives -3 and -2.
  QuantModel q = hand_model(
      {2, 2, 2}, {simple("gap", ir::Op::GlobalAvgPool), simple("flat", ir::Op::Flatten)});
  q.activations["input"] = act(1.0f, 0);
  const Tensor x = input_of(q, {2, 2, 3, 3, -2, -2, -3, -3});
  std::vector<quant::IntLayer> onnx, tfl;
  quant::integer_forward(q, x, Arithmetic::Onnx, &onnx);
  quant::integer_forward(q, x, Arithmetic::Tflite, &tfl);
  EXPECT_EQ(ints(onnx.back()), (std::vector<int>{2, -2}));
  EXPECT_EQ(ints(tfl.back()), (std::vector<int>{3, -3}));
  EXPECT_EQ(onnx[0].params, &q.activations.at("input"));  // the pool keeps its input's

  // Max pool and an unfused ReLU are exact in both.
  QuantModel mp = hand_model({1, 2, 2}, {simple("relu", ir::Op::ReLU), [] {
                                           ir::Layer l = simple("pool", ir::Op::MaxPool2d);
                                           l.kernel[0] = l.kernel[1] = 2;
                                           l.stride[0] = l.stride[1] = 2;
                                           return l;
                                         }()});
  mp.activations["input"] = act(1.0f, 4);
  for (Arithmetic a : {Arithmetic::Onnx, Arithmetic::Tflite}) {
    std::vector<quant::IntLayer> l;
    quant::integer_forward(mp, input_of(mp, {-9, -7, -8, -6}), a, &l);
    EXPECT_EQ(ints(l[0]), (std::vector<int>{4, 4, 4, 4}));  // max(q, zero point)
    EXPECT_EQ(ints(l[1]), (std::vector<int>{4}));
  }
}

TEST(QuantInteger, AddMatchesTheRealSumAwayFromTies) {
  ir::Layer add = simple("add", ir::Op::Add);
  add.inputs = {"r1", "r2"};
  ir::Layer r1 = simple("r1", ir::Op::MaxPool2d), r2 = simple("r2", ir::Op::MaxPool2d);
  for (ir::Layer* l : {&r1, &r2}) {
    l->kernel[0] = l->kernel[1] = 1;
    l->inputs = {"input"};
  }
  QuantModel q = hand_model({1, 16, 16}, {r1, r2, add});
  // Both branches read the same input here; the Add's two inputs are given different
  // parameters by routing through hand-set points.
  q.activations["input"] = act(0.0731f, -7);
  q.activations["add"] = act(0.1093f, 5);
  Rng rng(1);
  std::vector<float> v(256);
  for (float& f : v) f = static_cast<float>(rng.uniform(-9.0, 9.0));
  const Tensor x = input_of(q, v);
  for (Arithmetic a : {Arithmetic::Onnx, Arithmetic::Tflite}) {
    std::vector<quant::IntLayer> l;
    quant::integer_forward(q, x, a, &l);
    int checked = 0;
    for (std::size_t i = 0; i < 256; ++i) {
      const double real = 2.0 * static_cast<double>(0.0731f) * (l[0].q[i] + 7);
      const double want = real / static_cast<double>(0.1093f) + 5;
      if (std::fabs(want - std::floor(want) - 0.5) < 1e-3) continue;
      const double sat = std::clamp(std::nearbyint(want), -128.0, 127.0);
      EXPECT_EQ(l[2].q[i], sat) << quant::arithmetic_name(a) << " at " << i;
      ++checked;
    }
    EXPECT_GT(checked, 200);
  }
}

TEST(QuantInteger, Lenet5CloseToFloat) {
  const ir::Model m = zoo::build("lenet5", test::image_spec(1, 28));
  const WeightSet w = init_weights(m, 21);
  const quant::QuantModel q =
      quant::quantize(m, w, test::random_input(m, 256, 22), quant::QuantOptions{});
  const Tensor x = test::random_input(m, 64, 23);
  const Tensor ref = quant::reference_forward(m, w, x);
  for (Arithmetic a : {Arithmetic::Onnx, Arithmetic::Tflite}) {
    std::vector<quant::IntLayer> layers;
    const Tensor got = quant::integer_forward(q, x, a, &layers);
    SCOPED_TRACE(std::string(quant::arithmetic_name(a)));
    ASSERT_EQ(got.shape(), ref.shape());
    const double sqnr = quant::sqnr_db(ref, got);
    EXPECT_GT(sqnr, 20.0);
    int same = 0;
    for (std::int64_t i = 0; i < 64; ++i) {
      const float* r = ref.values<float>().data() + i * 10;
      const float* g = got.values<float>().data() + i * 10;
      same += std::max_element(r, r + 10) - r == std::max_element(g, g + 10) - g;
    }
    EXPECT_GE(same, 52) << "of 64, SQNR " << sqnr << " dB";
    std::cout << "[ lenet5 int8 ] " << quant::arithmetic_name(a) << ": SQNR " << sqnr
              << " dB, top-1 agreement " << same << "/64\n";
    // Quantized outputs in layer order, each with its parameters.
    std::vector<std::string> names;
    for (const quant::IntLayer& l : layers) names.push_back(l.layer);
    EXPECT_EQ(names, (std::vector<std::string>{"relu1", "pool1", "relu2", "pool2", "flatten",
                                               "relu3", "relu4", "fc3"}));
    EXPECT_EQ(layers[0].shape, (Shape{64, 6, 28, 28}));
    EXPECT_EQ(layers[0].params, &q.activations.at("relu1"));
    // The dequantized logits are exactly step_agreement's reference.
    const quant::StepAgreement s = quant::step_agreement(layers.back(), got);
    EXPECT_EQ(s.equal, s.count);
  }
}

TEST(QuantInteger, Resnet20BothArithmetics) {
  const ir::Model m = zoo::build("resnet20", test::image_spec(3, 32));
  WeightSet w = init_weights(m, 31);
  Rng rng(32);
  for (const ir::Layer& l : m.layers)
    if (l.op == ir::Op::BatchNorm2d) {
      for (float& v : w.at(l.name + ".running_mean").values<float>())
        v = static_cast<float>(rng.uniform(-0.2, 0.2));
      for (float& v : w.at(l.name + ".running_var").values<float>())
        v = static_cast<float>(rng.uniform(0.5, 1.5));
    }
  const quant::QuantModel q =
      quant::quantize(m, w, test::random_input(m, 32, 33), quant::QuantOptions{});
  const Tensor x = test::random_input(m, 4, 34);
  const Tensor ref = quant::reference_forward(m, w, x);
  std::vector<quant::IntLayer> lo, lt;
  const Tensor go = quant::integer_forward(q, x, Arithmetic::Onnx, &lo);
  const Tensor gt = quant::integer_forward(q, x, Arithmetic::Tflite, &lt);
  EXPECT_GT(quant::sqnr_db(ref, go), 10.0);
  EXPECT_GT(quant::sqnr_db(ref, gt), 10.0);
  std::cout << "[ resnet20 int8 ] SQNR onnx " << quant::sqnr_db(ref, go) << " dB, tflite "
            << quant::sqnr_db(ref, gt) << " dB\n";
  ASSERT_EQ(lo.size(), lt.size());
  // The first point (stem conv + ReLU) sees the same input: the two specs differ by at most one
  // step, and only on a few values.
  const quant::StepAgreement s0 = quant::step_agreement(lt[0], [&] {
    Tensor t(DType::F32, {4, 16, 32, 32});
    auto v = t.values<float>();
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = lo[0].params->scale[0] * static_cast<float>(lo[0].q[i] - lo[0].params->zero_point[0]);
    return t;
  }());
  EXPECT_EQ(s0.off_by_more, 0);
  EXPECT_GT(s0.equal, s0.count * 99 / 100);
}

TEST(QuantInteger, StepAgreementAndSqnr) {
  QParams p = act(0.5f, -3);
  quant::IntLayer ref;
  ref.layer = "x";
  ref.shape = {4};
  ref.q = {-3, 0, 10, 127};
  ref.params = &p;
  // Dequantized: 0, 1.5, 6.5, 65; got is off by 0, 1, 3 and 0.4 steps.
  const Tensor got = Tensor::f32({1, 4}, {0.0f, 2.0f, 5.0f, 65.2f});
  const quant::StepAgreement s = quant::step_agreement(ref, got);
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(s.equal, 2);
  EXPECT_EQ(s.off_by_one, 1);
  EXPECT_EQ(s.off_by_more, 1);
  EXPECT_EQ(s.max_steps, 3);
  EXPECT_EQ(s.to_json().at("off_by_more"), 1);
  EXPECT_FALSE(test::error_of([&] {
                 quant::step_agreement(ref, Tensor::f32({3}, {1, 2, 3}));
               }).empty());

  const Tensor a = Tensor::f32({2}, {3.0f, 4.0f});
  EXPECT_TRUE(std::isinf(quant::sqnr_db(a, a)));
  EXPECT_NEAR(quant::sqnr_db(a, Tensor::f32({2}, {3.0f, 3.0f})), 10 * std::log10(25.0), 1e-9);
  EXPECT_FALSE(test::error_of([&] { quant::sqnr_db(a, Tensor::f32({1}, {1})); }).empty());
}

TEST(QuantInteger, RefusesOtherSchemes) {
  const ir::Model m = zoo::build("lenet1", test::image_spec(1, 28));
  quant::QuantOptions o;
  o.scheme = quant::Scheme::FP16;
  const quant::QuantModel q = quant::quantize(m, init_weights(m, 1), Tensor(), o);
  const std::string msg = test::error_of(
      [&] { quant::integer_forward(q, test::random_input(m, 1, 1), Arithmetic::Onnx); });
  EXPECT_NE(msg.find("fp16"), std::string::npos) << msg;
}

// ---- PyTorch's quantized kernels -------------------------------------------------------------

struct OracleCase {
  std::string name;
  bool conv;
  bool relu;
  bool per_channel;
  std::int64_t stride;
};

// One random quantized layer: int8 input, weights and int32 bias with scales that spread the
// output over the whole int8 range (a few values saturate).
QuantModel random_layer(const OracleCase& c, std::uint64_t seed, Tensor& x) {
  Rng rng(seed);
  const std::int64_t out = c.conv ? 8 : 12;
  std::vector<ir::Layer> layers;
  ir::Layer l = c.conv ? conv_layer(c.name, out, 3, c.stride, 1) : simple(c.name, ir::Op::Dense);
  l.out = out;
  layers.push_back(l);
  if (c.relu) layers.push_back(simple(c.name + "_relu", ir::Op::ReLU));
  QuantModel q = hand_model(c.conv ? Shape{3, 11, 11} : Shape{40}, layers);
  const std::int64_t k = c.conv ? 27 : 40;
  q.activations["input"] = act(0.0437f, -5);
  q.activations[c.relu ? c.name + "_relu" : c.name] =
      act(static_cast<float>(c.conv ? 0.161 : 0.137), c.relu ? -20 : 3);
  std::vector<float> scales;
  for (std::int64_t o = 0; o < (c.per_channel ? out : 1); ++o)
    scales.push_back(static_cast<float>(rng.uniform(0.003, 0.009)));
  q.weight_params[c.name + ".weight"] = wparams(scales);
  std::vector<std::int8_t>& wq = q.weight_q[c.name + ".weight"];
  for (std::int64_t i = 0; i < out * k; ++i)
    wq.push_back(static_cast<std::int8_t>(static_cast<int>(rng.below(255)) - 127));
  std::vector<std::int32_t>& bq = q.bias_q[c.name + ".bias"];
  for (std::int64_t o = 0; o < out; ++o)
    bq.push_back(static_cast<std::int32_t>(rng.below(8001)) - 4000);
  const std::int64_t n = 4;
  Shape s = {n};
  s.insert(s.end(), q.model.input_shape.begin(), q.model.input_shape.end());
  x = Tensor(DType::F32, s);
  const QParams& in = q.activations.at("input");
  for (float& v : x.values<float>())
    v = in.scale[0] * static_cast<float>(static_cast<int>(rng.below(256)) - 128 - in.zero_point[0]);
  return q;
}

bool cpu_has_vnni() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0)
      return line.find(" avx512_vnni") != std::string::npos ||
             line.find(" avx_vnni") != std::string::npos;
  return false;
}

// A Dense layer computed as oneDNN's AVX2 u8s8 kernel does: input as uint8 (q + 128), each pair
// of consecutive products summed with int16 saturation, the zero point compensated exactly, then
// requantized like the onnx arithmetic.
std::vector<std::int32_t> onednn_avx2_linear(const QuantModel& q, const Tensor& x) {
  const ir::Layer& l = q.model.layers[0];
  const QParams& in = q.activations.at("input");
  const QParams& wp = q.weight_params.at(l.name + ".weight");
  const QParams& op = q.output_params(l.name);
  const std::vector<std::int8_t>& w = q.weight_q.at(l.name + ".weight");
  const std::vector<std::int32_t>& b = q.bias_q.at(l.name + ".bias");
  const std::int64_t k = q.model.input_shape[0], n = x.dim(0);
  const std::int32_t zpu = in.zero_point[0] + 128;
  std::vector<std::int32_t> out;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t o = 0; o < l.out; ++o) {
      std::int64_t acc = b[o], wsum = 0;
      for (std::int64_t j = 0; j < k; j += 2) {
        std::int64_t pair = 0;
        for (std::int64_t t = j; t < std::min(k, j + 2); ++t) {
          const float r = std::nearbyint(x.values<float>()[i * k + t] / in.scale[0]);
          const std::int64_t u = static_cast<std::int64_t>(r) + zpu;
          pair += u * w[o * k + t];
          wsum += w[o * k + t];
        }
        acc += std::clamp<std::int64_t>(pair, -32768, 32767);
      }
      acc -= zpu * wsum;
      const float m = in.scale[0] * wp.scale[wp.scale.size() > 1 ? o : 0] / op.scale[0];
      std::int64_t v =
          static_cast<std::int64_t>(std::nearbyint(static_cast<float>(acc) * m)) + op.zero_point[0];
      if (q.layers[0].fused_relu) v = std::max<std::int64_t>(v, op.zero_point[0]);
      out.push_back(static_cast<std::int32_t>(std::clamp<std::int64_t>(v, -128, 127)));
    }
  return out;
}

TEST(QuantTorchOracle, SingleLayersBitExactAgainstPyTorchQuantizedKernels) {
  std::string why;
  if (!test::python_torch_available(why)) GTEST_SKIP() << why;
  const std::string dir = test::scratch_dir("qops");
  const std::vector<OracleCase> cases = {{"conv_pc", true, false, true, 1},
                                         {"conv_pt", true, false, false, 1},
                                         {"conv_relu", true, true, true, 2},
                                         {"linear_pc", false, false, true, 1},
                                         {"linear_relu_pt", false, true, false, 1}};
  nlohmann::json spec = nlohmann::json::array();
  std::vector<QuantModel> models;
  std::vector<Tensor> inputs;
  std::uint64_t seed = 100;
  for (const OracleCase& c : cases) {
    Tensor x;
    models.push_back(random_layer(c, seed++, x));
    const QuantModel& q = models.back();
    std::vector<quant::IntLayer> in_layers;
    // The int8 input crossdl computes, as uint8 (q + 128).
    QuantModel id = hand_model(q.model.input_shape, {simple("f", ir::Op::Flatten)});
    id.activations["input"] = q.activations.at("input");
    quant::integer_forward(id, x, Arithmetic::Onnx, &in_layers);
    Tensor xu(DType::U8, x.shape());
    for (std::size_t i = 0; i < in_layers[0].q.size(); ++i)
      xu.values<std::uint8_t>()[i] = static_cast<std::uint8_t>(in_layers[0].q[i] + 128);
    npy_write(dir + "/" + c.name + ".x.npy", xu);
    const std::vector<std::int8_t>& wq = q.weight_q.at(c.name + ".weight");
    Tensor wt(DType::I64, c.conv ? Shape{8, 3, 3, 3} : Shape{12, 40});
    std::copy(wq.begin(), wq.end(), wt.values<std::int64_t>().begin());
    npy_write(dir + "/" + c.name + ".w.npy", wt);
    const std::vector<std::int32_t>& bq = q.bias_q.at(c.name + ".bias");
    Tensor bt(DType::I64, {static_cast<std::int64_t>(bq.size())});
    std::copy(bq.begin(), bq.end(), bt.values<std::int64_t>().begin());
    npy_write(dir + "/" + c.name + ".b.npy", bt);
    const QParams& op = q.output_params(c.name);
    spec.push_back({{"name", c.name},
                    {"kind", c.conv ? "conv" : "linear"},
                    {"relu", c.relu},
                    {"stride", c.stride},
                    {"pad", 1},
                    {"in_scale", q.activations.at("input").scale[0]},
                    {"in_zp", q.activations.at("input").zero_point[0]},
                    {"w_scales", q.weight_params.at(c.name + ".weight").scale},
                    {"out_scale", op.scale[0]},
                    {"out_zp", op.zero_point[0]}});
    inputs.push_back(std::move(x));
  }
  test::write_text(dir + "/cases.json", spec.dump(1));
  const std::string cmd = "/usr/bin/python3 " + test::source_path("tests/oracle/torch_quant.py") +
                          " qops '" + dir + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream ej(dir + "/engines.json");
  const nlohmann::json engines = nlohmann::json::parse(ej).at("engines");
  ASSERT_TRUE(std::find(engines.begin(), engines.end(), "qnnpack") != engines.end());

  for (std::size_t k = 0; k < cases.size(); ++k) {
    const OracleCase& c = cases[k];
    std::vector<quant::IntLayer> lo, lt;
    quant::integer_forward(models[k], inputs[k], Arithmetic::Onnx, &lo);
    quant::integer_forward(models[k], inputs[k], Arithmetic::Tflite, &lt);
    for (const auto& e : engines) {
      const std::string engine = e.get<std::string>();
      const Tensor t = npy_read(dir + "/" + c.name + "." + engine + ".npy");
      const auto tv = t.values<std::uint8_t>();
      ASSERT_EQ(tv.size(), lo.back().q.size()) << c.name << " " << engine;
      std::int64_t diff_onnx = 0, diff_tflite = 0, saturated = 0;
      for (std::size_t i = 0; i < tv.size(); ++i) {
        const int theirs = static_cast<int>(tv[i]) - 128;
        diff_onnx += theirs != lo.back().q[i];
        diff_tflite += theirs != lt.back().q[i];
        saturated += theirs == 127 || theirs == -128;
      }
      std::cout << "[ torch " << engine << " ] " << c.name << ": " << tv.size()
                << " values, differ from onnx arithmetic in " << diff_onnx << ", from tflite in "
                << diff_tflite << " (" << saturated << " saturated)\n";
      RecordProperty(c.name + "." + engine + ".diff_onnx", static_cast<int>(diff_onnx));
      RecordProperty(c.name + "." + engine + ".diff_tflite", static_cast<int>(diff_tflite));
      if (engine == "qnnpack") {
        EXPECT_EQ(diff_onnx, 0) << c.name << ": QNNPACK vs onnx arithmetic";
      }
      // oneDNN on AVX2 without VNNI multiplies u8 x s8 with vpmaddubsw, which saturates each
      // pair's sum to int16: the exact arithmetic then differs by many steps. A linear layer's
      // pairs are consecutive inputs, so that saturation can be reproduced exactly here.
      if (engine == "onednn" && !c.conv && !cpu_has_vnni()) {
        const std::vector<std::int32_t> sat = onednn_avx2_linear(models[k], inputs[k]);
        std::int64_t diff_sat = 0;
        for (std::size_t i = 0; i < tv.size(); ++i)
          diff_sat += static_cast<int>(tv[i]) - 128 != sat[i];
        EXPECT_EQ(diff_sat, 0) << c.name << ": oneDNN vs int16-saturating pairs";
        EXPECT_GT(diff_onnx, 0) << c.name << ": oneDNN no longer saturates";
        std::cout << "[ torch onednn ] " << c.name << ": equals the int16-saturating pair sums in "
                  << tv.size() - diff_sat << " of " << tv.size() << " values\n";
      }
    }
  }
}

}  // namespace
}  // namespace crossdl
