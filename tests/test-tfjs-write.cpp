// The TF.js layers-model writer without TF.js: the Keras topology it writes, the layouts of the
// weights in weights.bin, what it refuses, and the checks and conversions a runner relies on.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/tfjs_io.h"
#include "crossdl/zoo.h"
#include "support.h"

using namespace crossdl;
using nlohmann::json;

namespace {

const zoo::InputSpec kMnistLike{{1, 28, 28}, DType::F32, 10, 0};

struct Written {
  TfjsFiles files;
  json model;
  std::map<std::string, std::vector<float>> weights;  // manifest name -> values
  std::map<std::string, json> layers;                 // Keras name -> layer entry
  std::vector<std::string> classes;                   // class_name of each layer, in order
};

Written write(const ir::Model& m, const WeightSet& w, const std::string& tag,
              bool layer_outputs = false) {
  Written out;
  TfjsWriteOptions o;
  o.layer_outputs = layer_outputs;
  out.files = tfjs_write(test::scratch_dir(tag), m, w, o);
  std::ifstream in(out.files.model_json);
  out.model = json::parse(in);
  const std::vector<std::byte> bin = test::read_bytes(out.files.weights_bin);
  std::size_t at = 0;
  for (const json& spec : out.model["weightsManifest"][0]["weights"]) {
    std::size_t n = 1;
    for (const json& d : spec["shape"]) n *= d.get<std::size_t>();
    std::vector<float> v(n);
    EXPECT_LE(at + n * 4, bin.size());
    if (at + n * 4 <= bin.size()) std::memcpy(v.data(), bin.data() + at, n * 4);
    at += n * 4;
    out.weights[spec["name"].get<std::string>()] = std::move(v);
  }
  EXPECT_EQ(at, bin.size()) << "weights.bin holds exactly the listed tensors";
  for (const json& l : out.model["modelTopology"]["config"]["layers"]) {
    out.layers[l["name"].get<std::string>()] = l;
    out.classes.push_back(l["class_name"].get<std::string>());
  }
  return out;
}

TEST(TfjsWrite, LeNet5TopologyAndLayouts) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  const WeightSet w = init_weights(m, 1);
  const Written f = write(m, w, "tfjs-w-lenet5");
  EXPECT_EQ(f.model["format"], "layers-model");
  EXPECT_EQ(f.model["modelTopology"]["class_name"], "Model");
  EXPECT_EQ(f.model["weightsManifest"][0]["paths"], json::array({"weights.bin"}));
  EXPECT_EQ(f.classes,
            (std::vector<std::string>{"InputLayer", "Conv2D", "Activation", "MaxPooling2D",
                                      "Conv2D", "Activation", "MaxPooling2D", "Flatten", "Dense",
                                      "Activation", "Dense", "Activation", "Dense"}));
  EXPECT_EQ(f.layers.at("input")["config"]["batch_input_shape"], json::parse("[null,28,28,1]"));
  // conv1 is 5x5 with padding 2: exactly what 'same' does at stride 1.
  EXPECT_EQ(f.layers.at("conv1")["config"]["padding"], "same");
  EXPECT_EQ(f.layers.at("conv2")["config"]["padding"], "valid");
  EXPECT_EQ(f.model["modelTopology"]["config"]["output_layers"], json::parse("[[\"fc3\",0,0]]"));
  EXPECT_EQ(f.files.outputs, std::vector<std::string>{"fc3"});

  // conv1/kernel is HWIO: [kh][kw][in][out] holds OIHW [out][in][kh][kw].
  const auto oihw = w.at("conv1.weight").values<float>();
  const std::vector<float>& hwio = f.weights.at("conv1/kernel");
  for (std::int64_t o = 0; o < 6; ++o)
    for (std::int64_t y = 0; y < 5; ++y)
      for (std::int64_t x = 0; x < 5; ++x)
        ASSERT_EQ(hwio[static_cast<std::size_t>((y * 5 + x) * 6 + o)],
                  oihw[static_cast<std::size_t>((o * 5 + y) * 5 + x)]);
  // fc1 reads conv2's 16x5x5 map flattened by Keras in HWC order: kernel row (h*5+w)*16+c is the
  // IR's column (c*5+h)*5+w, and the kernel is [in,out].
  const auto fc1 = w.at("fc1.weight").values<float>();  // [120, 400]
  const std::vector<float>& k = f.weights.at("fc1/kernel");
  ASSERT_EQ(k.size(), 400u * 120u);
  for (std::int64_t c : {0, 7, 15})
    for (std::int64_t h : {0, 3})
      for (std::int64_t x : {1, 4})
        for (std::int64_t o : {0, 119})
          EXPECT_EQ(k[static_cast<std::size_t>(((h * 5 + x) * 16 + c) * 120 + o)],
                    fc1[static_cast<std::size_t>(o * 400 + (c * 5 + h) * 5 + x)]);
  // fc2 reads a Dense output: a plain transpose.
  const auto fc2 = w.at("fc2.weight").values<float>();  // [84, 120]
  EXPECT_EQ(f.weights.at("fc2/kernel")[5 * 84 + 3], fc2[3 * 120 + 5]);
  EXPECT_NE(f.files.conversions.find("CHW->HWC"), std::string::npos) << f.files.conversions;
}

TEST(TfjsWrite, ResNet20PaddingBatchNormAndAdd) {
  const ir::Model m = zoo::build("resnet20", kMnistLike);
  WeightSet w = init_weights(m, 2);
  w.at("bn1.running_var").values<float>()[3] = 2.5f;
  const Written f = write(m, w, "tfjs-w-resnet20");
  // 3x3 stride 1 padding 1 is 'same'; at stride 2 on 28 rows 'same' pads 0 before and 1 after, so
  // the IR's symmetric padding needs a ZeroPadding2D.
  EXPECT_EQ(f.layers.at("stage1.block0.conv1")["config"]["padding"], "same");
  const json& pad = f.layers.at("stage2.block0.conv1_pad");
  EXPECT_EQ(pad["class_name"], "ZeroPadding2D");
  EXPECT_EQ(pad["config"]["padding"], json::parse("[[1,1],[1,1]]"));
  EXPECT_EQ(f.layers.at("stage2.block0.conv1")["config"]["padding"], "valid");
  EXPECT_EQ(f.layers.at("stage2.block0.conv1")["inbound_nodes"][0][0][0],
            "stage2.block0.conv1_pad");
  // The shortcut's 1x1 stride-2 conv has no padding.
  EXPECT_EQ(f.layers.at("stage2.block0.shortcut.conv")["config"]["padding"], "valid");
  const json& add = f.layers.at("stage1.block0.add");
  EXPECT_EQ(add["class_name"], "Add");
  ASSERT_EQ(add["inbound_nodes"][0].size(), 2u);
  EXPECT_EQ(add["inbound_nodes"][0][0][0], "stage1.block0.bn2");
  EXPECT_EQ(add["inbound_nodes"][0][1][0], "relu1");
  const json& bn = f.layers.at("bn1")["config"];
  EXPECT_EQ(bn["axis"], -1);
  EXPECT_EQ(bn["epsilon"].get<double>(), static_cast<double>(1e-5f));
  EXPECT_EQ(f.weights.at("bn1/moving_variance")[3], 2.5f);
  EXPECT_EQ(f.weights.at("bn1/gamma").size(), 16u);
  EXPECT_EQ(f.layers.at("pool_gap")["class_name"], "GlobalAveragePooling2D");
  EXPECT_EQ(f.layers.at("pool")["config"]["target_shape"], json::parse("[1,1,64]"));
}

TEST(TfjsWrite, LstmGatesAndBias) {
  const ir::Model m = zoo::build("lstm", kMnistLike);
  const WeightSet w = init_weights(m, 3);
  const Written f = write(m, w, "tfjs-w-lstm");
  EXPECT_EQ(f.layers.at("to_seq_permute")["config"]["dims"], json::parse("[1,3,2]"));
  EXPECT_EQ(f.layers.at("to_seq")["config"]["target_shape"], json::parse("[28,28]"));
  const json& cfg = f.layers.at("lstm")["config"];
  EXPECT_EQ(cfg["recurrent_activation"], "sigmoid");
  EXPECT_EQ(cfg["return_sequences"], false);
  // kernel [I,4H] = weight_ih^T with the gate blocks kept in order (i,f,g,o = Keras i,f,c,o).
  const auto wih = w.at("lstm.weight_ih").values<float>();  // [512, 28]
  const auto whh = w.at("lstm.weight_hh").values<float>();  // [512, 128]
  for (std::int64_t g : {0, 130, 300, 511}) {
    EXPECT_EQ(f.weights.at("lstm/kernel")[static_cast<std::size_t>(9 * 512 + g)],
              wih[static_cast<std::size_t>(g * 28 + 9)]);
    EXPECT_EQ(f.weights.at("lstm/recurrent_kernel")[static_cast<std::size_t>(100 * 512 + g)],
              whh[static_cast<std::size_t>(g * 128 + 100)]);
    EXPECT_EQ(f.weights.at("lstm/bias")[static_cast<std::size_t>(g)],
              w.at("lstm.bias_ih").values<float>()[static_cast<std::size_t>(g)] +
                  w.at("lstm.bias_hh").values<float>()[static_cast<std::size_t>(g)]);
  }
}

TEST(TfjsWrite, LayerOutputsListEveryLayerInOrder) {
  const ir::Model m = zoo::build("lenet1", kMnistLike);
  const Written f = write(m, init_weights(m, 1), "tfjs-w-outputs", true);
  const json& outs = f.model["modelTopology"]["config"]["output_layers"];
  ASSERT_EQ(outs.size(), m.layers.size());
  for (std::size_t i = 0; i < m.layers.size(); ++i) EXPECT_EQ(outs[i][0], m.layers[i].name);
  EXPECT_EQ(f.files.outputs.back(), m.layers.back().name);
}

TEST(TfjsWrite, GruAndForeignNamesAndPaddedPools) {
  for (const zoo::InputSpec& in : {kMnistLike, zoo::InputSpec{{8}, DType::I64, 2, 20}}) {
    const ir::Model m = zoo::build("gru", in);
    const Capability c = tfjs_expressible(m);
    EXPECT_FALSE(c.ok);
    EXPECT_NE(c.why.find("layer gru (GRU)"), std::string::npos) << c.why;
    const std::string err =
        test::error_of([&] { tfjs_write(test::scratch_dir("tfjs-w-gru"), m, init_weights(m, 1)); });
    EXPECT_NE(err.find("gru"), std::string::npos) << err;
  }
  // A max pool with padding that 'same' does not reproduce is refused (zeros would enter a max).
  ir::Model m = zoo::build("lenet1", kMnistLike);
  for (ir::Layer& l : m.layers)
    if (l.op == ir::Op::MaxPool2d) {
      l.kernel[0] = l.kernel[1] = 3;
      l.pad[0] = l.pad[1] = 1;
      l.stride[0] = l.stride[1] = 3;
    }
  const Capability c = tfjs_expressible(m);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.why.find("MaxPool2d"), std::string::npos) << c.why;
  // Characters Keras names cannot hold are replaced, keeping names unique.
  ir::Model odd = zoo::build("lenet1", kMnistLike);
  odd.layers[0].name = "conv/1";
  odd.layers[1].inputs = {"conv/1"};
  odd.layers[2].name = "conv_1";
  odd.layers[3].inputs = {"conv_1"};
  const auto names = tfjs_layer_names(odd);
  EXPECT_EQ(names.at("conv/1"), "conv_1");
  EXPECT_EQ(names.at("conv_1"), "conv_1_2");
}

TEST(TfjsWrite, OutputsConvertBackToIrLayout) {
  const ir::Model m = zoo::build("lenet5", kMnistLike);
  // conv1's output [N,28,28,6] NHWC -> [N,6,28,28].
  std::vector<float> nhwc(2 * 28 * 28 * 6);
  for (std::size_t i = 0; i < nhwc.size(); ++i) nhwc[i] = static_cast<float>(i);
  const Tensor t = tfjs_output_to_ir(m, "conv1", nhwc.data(), nhwc.size(), 2);
  EXPECT_EQ(t.shape(), (Shape{2, 6, 28, 28}));
  EXPECT_EQ(t.values<float>()[((1 * 6 + 4) * 28 + 3) * 28 + 7],
            nhwc[((1 * 28 + 3) * 28 + 7) * 6 + 4]);
  // flatten's output is HWC-ordered in TF.js: back to CHW.
  std::vector<float> flat(400);
  for (std::size_t i = 0; i < flat.size(); ++i) flat[i] = static_cast<float>(i);
  const Tensor f = tfjs_output_to_ir(m, "flatten", flat.data(), flat.size(), 1);
  EXPECT_EQ(f.shape(), (Shape{1, 400}));
  EXPECT_EQ(f.values<float>()[(9 * 5 + 2) * 5 + 3], flat[(2 * 5 + 3) * 16 + 9]);
  // Dense outputs are as they are.
  std::vector<float> fc(10, 1.5f);
  EXPECT_EQ(tfjs_output_to_ir(m, "fc3", fc.data(), fc.size(), 1).values<float>()[9], 1.5f);
  const std::string err = test::error_of([&] { tfjs_output_to_ir(m, "fc3", fc.data(), 9, 1); });
  EXPECT_NE(err.find("fc3"), std::string::npos) << err;
  // The input goes the other way.
  Tensor x(DType::F32, {1, 1, 28, 28});
  x.values<float>()[5 * 28 + 6] = 3.0f;
  EXPECT_EQ(tfjs_input(m, x).shape(), (Shape{1, 28, 28, 1}));
  EXPECT_EQ(tfjs_input(m, x).values<float>()[5 * 28 + 6], 3.0f);
  const std::string bad = test::error_of([&] {
    tfjs_input(m, Tensor(DType::F32, {2, 3, 28, 28}));
  });
  EXPECT_NE(bad.find("[2,3,28,28]"), std::string::npos) << bad;
}

TEST(TfjsWrite, VerifyNamesTheFileAndTheProblem) {
  const ir::Model m = zoo::build("lenet1", kMnistLike);
  const TfjsFiles f = tfjs_write(test::scratch_dir("tfjs-w-verify"), m, init_weights(m, 1));
  tfjs_verify_files(f.model_json);
  const std::vector<std::byte> bin = test::read_bytes(f.weights_bin);
  test::write_bytes(f.weights_bin, {bin.begin(), bin.end() - 8});
  std::string err = test::error_of([&] { tfjs_verify_files(f.model_json); });
  EXPECT_NE(err.find(f.model_json), std::string::npos) << err;
  EXPECT_NE(err.find("need " + std::to_string(bin.size())), std::string::npos) << err;
  std::filesystem::remove(f.weights_bin);
  err = test::error_of([&] { tfjs_verify_files(f.model_json); });
  EXPECT_NE(err.find("weights.bin"), std::string::npos) << err;
  test::write_text(f.model_json, "{\"format\": \"layers-model\", ");
  err = test::error_of([&] { tfjs_verify_files(f.model_json); });
  EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;
  EXPECT_NE(err.find(f.model_json), std::string::npos) << err;
}

}  // namespace
