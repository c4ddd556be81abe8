// crossdl's TFLite writer, checked without any TFLite runtime: the file is decoded with
// `flatc --json` against crossdl's schema subset, and its structure and weight layouts compared
// with the IR. (tests/test-app-tflite.cpp and test-app-armnn.cpp run the files.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/ir.h"
#include "crossdl/tflite_io.h"
#include "crossdl/zoo.h"
#include "support.h"

using namespace crossdl;

namespace {

const zoo::InputSpec kMnistLike{{1, 28, 28}, DType::F32, 10, 0};

#ifdef CROSSDL_HAVE_TFLITE_WRITER

// The file as flatc decodes it, or a null json when flatc is not usable (*why says why).
nlohmann::json decode(const std::string& file, const std::string& dir, std::string* why) {
  if (!std::filesystem::exists(CROSSDL_FLATC)) {
    *why = std::string("flatc not found at ") + CROSSDL_FLATC;
    return {};
  }
  const std::string cmd = std::string(CROSSDL_FLATC) + " --json --raw-binary --strict-json --defaults-json -o '" +
                          dir + "' '" + CROSSDL_TFLITE_SCHEMA + "' -- '" + file + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "flatc could not decode the file: " << cmd;
    *why = "flatc failed";
    return nlohmann::json();
  }
  const std::string json = dir + "/" + std::filesystem::path(file).stem().string() + ".json";
  std::ifstream in(json);
  return nlohmann::json::parse(in);
}

// The float values of a buffer as flatc prints it (an array of bytes).
std::vector<float> floats_of(const nlohmann::json& buffer) {
  std::vector<std::uint8_t> bytes;
  for (const auto& b : buffer.at("data")) bytes.push_back(b.get<std::uint8_t>());
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

const nlohmann::json& tensor_named(const nlohmann::json& graph, const std::string& name) {
  for (const auto& t : graph.at("tensors"))
    if (t.at("name") == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// The real schema's numbers of the operators the writer emits (BuiltinOperator).
const std::map<std::string, int> kOpNumbers = {
    {"ADD", 0},       {"AVERAGE_POOL_2D", 1}, {"CONV_2D", 3}, {"FULLY_CONNECTED", 9},
    {"LOGISTIC", 14}, {"MAX_POOL_2D", 17},    {"MUL", 18},    {"RELU", 19},
    {"RESHAPE", 22},  {"TANH", 28},           {"PAD", 34},    {"GATHER", 36},
    {"SUB", 41},      {"SPLIT", 49}};

TEST(TfliteWrite, Lenet5StructureAndWeightLayouts) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  const WeightSet w = init_weights(m, 7);
  const std::string dir = test::scratch_dir("tflite-lenet5");
  const TfliteFile f = tflite_write(dir + "/lenet5.tflite", m, w);
  EXPECT_EQ(f.outputs, std::vector<std::string>{"fc3"});
  EXPECT_EQ(f.bytes, std::filesystem::file_size(f.path));
  EXPECT_NE(f.conversions.find("CHW->HWC"), std::string::npos);

  std::string why;
  const nlohmann::json j = decode(f.path, dir, &why);
  if (j.is_null()) GTEST_SKIP() << why;
  EXPECT_EQ(j.at("version"), 3);
  // Arm NN 20.08 reads only the deprecated int8 code: both fields must agree.
  std::vector<std::string> codes;
  for (const auto& c : j.at("operator_codes")) {
    const std::string name = c.at("builtin_code");
    ASSERT_TRUE(kOpNumbers.count(name)) << name;
    EXPECT_EQ(c.at("deprecated_builtin_code").get<int>(), kOpNumbers.at(name)) << name;
    codes.push_back(name);
  }
  const auto& g = j.at("subgraphs").at(0);
  std::vector<std::string> ops;
  for (const auto& op : g.at("operators")) ops.push_back(codes.at(op.value("opcode_index", 0u)));
  // ReLUs are fused: conv+relu, pool, conv+relu, pool, flatten, three dense layers.
  EXPECT_EQ(ops,
            (std::vector<std::string>{"CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D", "RESHAPE",
                                      "FULLY_CONNECTED", "FULLY_CONNECTED", "FULLY_CONNECTED"}));
  const auto& conv1 = g.at("operators").at(0).at("builtin_options");
  EXPECT_EQ(conv1.at("padding"), "SAME");  // 5x5, pad 2, stride 1
  EXPECT_EQ(conv1.at("fused_activation_function"), "RELU");
  const auto& input = g.at("tensors").at(g.at("inputs").at(0).get<int>());
  EXPECT_EQ(input.at("shape"), (std::vector<int>{1, 28, 28, 1}));
  EXPECT_EQ(g.at("tensors").at(g.at("outputs").at(0).get<int>()).at("name"), "fc3");

  // conv1.weight OIHW [6,1,5,5] -> OHWI [6,5,5,1].
  const auto& wt = tensor_named(g, "conv1.weight");
  EXPECT_EQ(wt.at("shape"), (std::vector<int>{6, 5, 5, 1}));
  const std::vector<float> k = floats_of(j.at("buffers").at(wt.at("buffer").get<int>()));
  const auto src = w.at("conv1.weight").values<float>();
  ASSERT_EQ(k.size(), src.size());
  for (int o = 0; o < 6; ++o)
    for (int y = 0; y < 5; ++y)
      for (int x = 0; x < 5; ++x) EXPECT_EQ(k[(o * 5 + y) * 5 + x], src[(o * 5 + y) * 5 + x]);
  // conv2.weight [16,6,5,5]: file (o,y,x,i) holds IR (o,i,y,x).
  const std::vector<float> k2 =
      floats_of(j.at("buffers").at(tensor_named(g, "conv2.weight").at("buffer").get<int>()));
  const auto src2 = w.at("conv2.weight").values<float>();
  EXPECT_EQ(k2[((3 * 5 + 2) * 5 + 4) * 6 + 5], src2[((3 * 6 + 5) * 5 + 2) * 5 + 4]);
  // fc1 reads the 16x5x5 map flattened in HWC order: file column (y*5+x)*16+c is IR c*25+y*5+x.
  const std::vector<float> d =
      floats_of(j.at("buffers").at(tensor_named(g, "fc1.weight").at("buffer").get<int>()));
  const auto dsrc = w.at("fc1.weight").values<float>();
  ASSERT_EQ(d.size(), dsrc.size());
  for (int c : {0, 7, 15})
    for (int y : {0, 4})
      for (int x : {1, 3})
        EXPECT_EQ(d[17 * 400 + (y * 5 + x) * 16 + c], dsrc[17 * 400 + c * 25 + y * 5 + x]);
}

TEST(TfliteWrite, Resnet20FoldsBatchNormOrExposesEveryLayer) {
  const ir::Model m = zoo::build("resnet20", kMnistLike);
  const WeightSet w = init_weights(m, 3);
  const std::string dir = test::scratch_dir("tflite-resnet20");
  const TfliteFile folded = tflite_write(dir + "/folded.tflite", m, w);
  EXPECT_NE(folded.conversions.find("folded"), std::string::npos);
  const TfliteFile all = tflite_write(dir + "/all.tflite", m, w, {true});
  EXPECT_NE(all.conversions.find("MUL+ADD"), std::string::npos);
  // Every IR layer is a graph output, in layer order, the logits last.
  ASSERT_EQ(all.outputs.size(), m.layers.size());
  for (std::size_t i = 0; i < m.layers.size(); ++i) EXPECT_EQ(all.outputs[i], m.layers[i].name);

  std::string why;
  const nlohmann::json j = decode(all.path, dir, &why);
  if (j.is_null()) GTEST_SKIP() << why;
  const auto& g = j.at("subgraphs").at(0);
  EXPECT_EQ(g.at("outputs").size(), m.layers.size());
  std::map<std::string, int> count;
  std::vector<std::string> codes;
  for (const auto& c : j.at("operator_codes")) codes.push_back(c.at("builtin_code"));
  for (const auto& op : g.at("operators")) ++count[codes.at(op.value("opcode_index", 0u))];
  EXPECT_EQ(count["CONV_2D"], 21);  // 19 3x3 convs and 2 projections
  EXPECT_EQ(count["MUL"], 21);      // one per BatchNorm2d
  EXPECT_EQ(count["RELU"], 19);
  // The 3x3 stride-2 convs pad 1 before the first window; TFLite's SAME would pad 0 there.
  EXPECT_EQ(count["PAD"], 2);
  EXPECT_EQ(count["AVERAGE_POOL_2D"], 1);
}

TEST(TfliteWrite, LayoutHelpersRoundTrip) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  Tensor x(DType::F32, {2, 6, 28, 28});
  auto v = x.values<float>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  // conv1's output is [6,28,28]: NHWC values come back as the NCHW original.
  const Tensor nhwc = nchw_to_nhwc(x);
  EXPECT_EQ(nhwc.shape(), (Shape{2, 28, 28, 6}));
  const Tensor back =
      tflite_output_to_ir(tflite_output_layout(m, "conv1"), nhwc.values<float>().data(),
                          nhwc.values<float>().size(), 2);
  EXPECT_TRUE(back.values<float>().size() == v.size() &&
              std::equal(v.begin(), v.end(), back.values<float>().begin()));
  EXPECT_NE(test::error_of([&] {
              tflite_output_to_ir(tflite_output_layout(m, "conv1"), nhwc.values<float>().data(), 10,
                                  2);
            }).find("conv1"),
            std::string::npos);
}

TEST(TfliteWrite, SaysWhichLayerItCannotExpress) {
  // A softmax over a feature map's W axis has no NHWC counterpart.
  ir::Model m = zoo::build("lenet1", kMnistLike);
  for (auto& l : m.layers)
    if (l.name == "relu1") l.op = ir::Op::Softmax;
  const Capability c = tflite_expressible(m);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.why.find("relu1 (Softmax)"), std::string::npos) << c.why;
  const std::string dir = test::scratch_dir("tflite-unsupported");
  EXPECT_NE(
      test::error_of([&] { tflite_write(dir + "/m.tflite", m, init_weights(m, 1)); }).find("relu1"),
      std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir + "/m.tflite"));

  // A max pool padded by 1 on a 2x2 window is not TFLite's SAME padding.
  ir::Model p = zoo::build("lenet1", kMnistLike);
  for (auto& l : p.layers)
    if (l.name == "pool1") l.pad[0] = l.pad[1] = 1;
  const Capability cp = tflite_expressible(p);
  EXPECT_FALSE(cp.ok);
  EXPECT_NE(cp.why.find("pool1"), std::string::npos) << cp.why;
}

// LSTM and GRU are unrolled over time: the graph holds one SPLIT and, per step, the gate ops.
TEST(TfliteWrite, RecurrentLayersAreUnrolled) {
  for (const char* name : {"lstm", "gru"}) {
    SCOPED_TRACE(name);
    const ir::Model m = zoo::build(name, kMnistLike);
    const std::string dir = test::scratch_dir(std::string("tflite-") + name);
    const TfliteFile f = tflite_write(dir + "/" + name + ".tflite", m, init_weights(m, 1));
    EXPECT_NE(f.conversions.find("unrolled"), std::string::npos) << f.conversions;
    std::string why;
    const nlohmann::json j = decode(f.path, dir, &why);
    if (j.is_null()) GTEST_SKIP() << why;
    std::vector<std::string> codes;
    for (const auto& c : j.at("operator_codes")) codes.push_back(c.at("builtin_code"));
    std::map<std::string, int> count;
    for (const auto& op : j.at("subgraphs").at(0).at("operators"))
      ++count[codes.at(op.value("opcode_index", 0u))];
    EXPECT_EQ(count["SPLIT"], 1);
    // 28 row steps; per step 2 FULLY_CONNECTED per gate (4 LSTM gates, 3 GRU), plus fc.
    EXPECT_EQ(count["FULLY_CONNECTED"], 28 * 2 * (std::string(name) == "lstm" ? 4 : 3) + 1);
  }
}

#else

TEST(TfliteWrite, NotBuilt) {
  GTEST_SKIP() << "crossdl's TFLite writer is not built (apt-get install flatbuffers-compiler "
                  "libflatbuffers-dev)";
}

#endif

}  // namespace
