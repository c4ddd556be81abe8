// onnx_read() on files written by other tools: the forms exporters use (named like PyTorch's
// "/conv1/Conv", weights in Constant nodes, biases as separate Adds, SAME padding, Dropout), and a
// clear refusal naming the file, the node and why for every form crossdl's IR cannot express.
#include <gtest/gtest.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <fstream>
#include <numeric>

#include "crossdl/onnx_io.h"
#include "crossdl/status.h"
#include "support.h"

namespace crossdl {
namespace {

// A graph under construction: input "x" of shape [N, dims...], output "y".
class GraphBuilder {
 public:
  GraphBuilder(std::vector<std::int64_t> in, std::vector<std::int64_t> out, int opset = 13) {
    mp_.set_ir_version(8);
    mp_.add_opset_import()->set_version(opset);
    g_ = mp_.mutable_graph();
    g_->set_name("main_graph");
    io(g_->add_input(), "x", in);
    io(g_->add_output(), "y", out);
  }

  onnx::NodeProto& node(const std::string& op, const std::string& name, std::vector<std::string> in,
                        std::vector<std::string> out) {
    auto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (auto& i : in) n->add_input(i);
    for (auto& o : out) n->add_output(o);
    return *n;
  }
  // A float tensor with values 0.01 * (k % 97) - 0.4: distinct enough to catch a transposition.
  static onnx::TensorProto tensor(const std::string& name, std::vector<std::int64_t> dims,
                                  float scale = 0.01f) {
    onnx::TensorProto t;
    t.set_name(name);
    t.set_data_type(onnx::TensorProto::FLOAT);
    std::int64_t count = 1;
    for (auto d : dims) {
      t.add_dims(d);
      count *= d;
    }
    for (std::int64_t k = 0; k < count; ++k)
      t.add_float_data(scale * static_cast<float>(k % 97) - 0.4f);
    return t;
  }
  void init(const std::string& name, std::vector<std::int64_t> dims, float scale = 0.01f) {
    *g_->add_initializer() = tensor(name, std::move(dims), scale);
  }
  void init_ints(const std::string& name, std::vector<std::int64_t> v) {
    auto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<std::int64_t>(v.size()));
    for (auto x : v) t->add_int64_data(x);
  }
  // A Constant node carrying the tensor (the way torch.onnx.export often writes weights).
  void constant(const std::string& name, std::vector<std::int64_t> dims) {
    auto& n = node("Constant", name + "_const", {}, {name});
    auto* a = n.add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    *a->mutable_t() = tensor(name, std::move(dims));
  }
  static void attr(onnx::NodeProto& n, const std::string& name, std::int64_t v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, std::vector<std::int64_t> v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, float v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, const std::string& v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  }

  // Saves the model (after the ONNX checker accepts it) and returns its path.
  std::string save(const std::string& tag) {
    onnx::checker::check_model(mp_);
    const std::string path = test::scratch_dir(tag) + "/" + tag + ".onnx";
    std::ofstream out(path, std::ios::binary);
    EXPECT_TRUE(mp_.SerializeToOstream(&out));
    return path;
  }
  onnx::ModelProto& proto() { return mp_; }

 private:
  static void io(onnx::ValueInfoProto* v, const std::string& name,
                 const std::vector<std::int64_t>& dims) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    for (auto d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
  }
  onnx::ModelProto mp_;
  onnx::GraphProto* g_ = nullptr;
};

using test::error_of;

// A small CNN in the shape torch.onnx.export gives it.
GraphBuilder exporter_cnn() {
  GraphBuilder b({1, 8, 8}, {5});
  b.constant("conv1.weight", {4, 1, 3, 3});
  auto& conv = b.node("Conv", "/conv1/Conv", {"x", "conv1.weight"}, {"/conv1/Conv_output_0"});
  GraphBuilder::attr(conv, "auto_pad", std::string("SAME_UPPER"));
  GraphBuilder::attr(conv, "kernel_shape", std::vector<std::int64_t>{3, 3});
  b.init("conv1.bias", {1, 4, 1, 1});
  b.node("Add", "/conv1/Add", {"/conv1/Conv_output_0", "conv1.bias"}, {"c1"});
  b.node("Relu", "/relu/Relu", {"c1"}, {"r1"});
  auto& pool = b.node("MaxPool", "/pool/MaxPool", {"r1"}, {"p1"});
  GraphBuilder::attr(pool, "kernel_shape", std::vector<std::int64_t>{2, 2});
  GraphBuilder::attr(pool, "strides", std::vector<std::int64_t>{2, 2});
  GraphBuilder::attr(pool, "ceil_mode", std::int64_t{1});  // 8x8 by 2x2/2: same as floor
  b.node("Dropout", "/drop/Dropout", {"p1"}, {"d1"});
  b.init_ints("shape", {-1, 64});
  b.node("Reshape", "/Reshape", {"d1", "shape"}, {"f1"});
  b.init("fc.weight", {5, 64});
  b.init("fc.bias", {1, 5});
  auto& gemm = b.node("Gemm", "/fc/Gemm", {"f1", "fc.weight", "fc.bias"}, {"logits"});
  GraphBuilder::attr(gemm, "transB", std::int64_t{1});
  auto& sm = b.node("Softmax", "/Softmax", {"logits"}, {"y"});
  GraphBuilder::attr(sm, "axis", std::int64_t{1});
  return b;
}

TEST(OnnxImport, ExporterFormsBecomeTheIr) {
  GraphBuilder b = exporter_cnn();
  const OnnxModel r = onnx_read(b.save("cnn"));
  const ir::Model& m = r.model;
  EXPECT_EQ(m.name, "cnn");  // an exporter's stock graph name gives way to the file name
  EXPECT_EQ(m.input_shape, (Shape{1, 8, 8}));
  EXPECT_EQ(m.num_classes, 5);
  std::vector<std::string> names;
  std::vector<ir::Op> ops;
  for (const auto& l : m.layers) {
    names.push_back(l.name);
    ops.push_back(l.op);
  }
  // Add folded into the conv as its bias, Dropout skipped, Reshape [-1,64] read as a Flatten.
  EXPECT_EQ(names, (std::vector<std::string>{"conv1_Conv", "relu_Relu", "pool_MaxPool", "Reshape",
                                             "fc_Gemm", "Softmax"}));
  EXPECT_EQ(ops, (std::vector<ir::Op>{ir::Op::Conv2d, ir::Op::ReLU, ir::Op::MaxPool2d,
                                      ir::Op::Flatten, ir::Op::Dense, ir::Op::Softmax}));
  const ir::Layer& conv = m.layers[0];
  EXPECT_EQ(conv.pad[0], 1);  // SAME_UPPER with a 3x3 kernel, stride 1
  EXPECT_EQ(conv.pad[1], 1);
  EXPECT_TRUE(conv.bias);
  EXPECT_EQ(r.weights.at("conv1_Conv.bias").shape(), Shape{4});
  EXPECT_EQ(r.weights.at("conv1_Conv.bias").values<float>()[3],
            GraphBuilder::tensor("b", {4}).float_data(3));
  EXPECT_EQ(r.weights.at("conv1_Conv.weight").shape(), (Shape{4, 1, 3, 3}));
  EXPECT_EQ(r.weights.at("conv1_Conv.weight").layout(), Layout::OIHW);
  // transB=1: the file's [out,in] matrix is already the IR's layout.
  const Tensor& fc = r.weights.at("fc_Gemm.weight");
  EXPECT_EQ(fc.shape(), (Shape{5, 64}));
  EXPECT_EQ(fc.values<float>()[65], GraphBuilder::tensor("w", {5, 64}).float_data(65));
  EXPECT_EQ(r.weights.at("fc_Gemm.bias").shape(), Shape{5});
  ir::validate(m);
}

TEST(OnnxImport, UnnamedAndRepeatedNodeNamesBecomeUniqueLayerNames) {
  GraphBuilder b({6}, {6});
  b.node("Relu", "", {"x"}, {"input"});  // output named like the reserved model input
  b.node("Tanh", "act", {"input"}, {"t"});
  b.node("Sigmoid", "act", {"t"}, {"y"});
  const OnnxModel r = onnx_read(b.save("names"));
  ASSERT_EQ(r.model.layers.size(), 3u);
  EXPECT_EQ(r.model.layers[0].name, "input_layer");
  EXPECT_EQ(r.model.layers[1].name, "act");
  EXPECT_EQ(r.model.layers[2].name, "act_2");
}

TEST(OnnxImport, MatMulAddFlattenAndScalarGemmBias) {
  GraphBuilder b({2, 3, 3}, {4});
  auto& f = b.node("Flatten", "flat", {"x"}, {"f"});
  GraphBuilder::attr(f, "axis", std::int64_t{-3});  // same as axis=1 on a rank-4 input
  b.init("W", {18, 7});
  b.node("MatMul", "mm", {"f", "W"}, {"h"});
  b.init("c", {7});
  b.node("Add", "mm_add", {"c", "h"}, {"h2"});  // the constant first: still the bias
  b.init("W2", {7, 4});
  b.init("s", {});  // one value for every output
  b.node("Gemm", "out", {"h2", "W2", "s"}, {"y"});
  const OnnxModel r = onnx_read(b.save("mm"));
  ASSERT_EQ(r.model.layers.size(), 3u);
  EXPECT_EQ(r.model.layers[1].op, ir::Op::Dense);
  EXPECT_TRUE(r.model.layers[1].bias);
  EXPECT_EQ(r.weights.at("mm.weight").shape(), (Shape{7, 18}));
  // transB=0: [in,out] in the file, transposed to [out,in].
  EXPECT_EQ(r.weights.at("mm.weight").values<float>()[1],
            GraphBuilder::tensor("w", {18, 7}).float_data(7));
  const auto bias = r.weights.at("out.bias").values<float>();
  ASSERT_EQ(bias.size(), 4u);
  for (float v : bias) EXPECT_EQ(v, -0.4f);
}

TEST(OnnxImport, RecurrentExportWithZeroInitialStates) {
  // batch_first LSTM as PyTorch writes it: Transpose to time-major, LSTM with explicit zero
  // initial states, Y_h squeezed, then a Gemm.
  const std::int64_t t = 5, f = 3, h = 4;
  GraphBuilder b({t, f}, {2});
  auto& tr = b.node("Transpose", "/Transpose", {"x"}, {"xt"});
  GraphBuilder::attr(tr, "perm", std::vector<std::int64_t>{1, 0, 2});
  b.init("W", {1, 4 * h, f});
  b.init("R", {1, 4 * h, h});
  b.init("B", {1, 8 * h});
  b.init("h0", {1, 1, h});
  for (int i = 0; i < h; ++i)
    b.proto().mutable_graph()->mutable_initializer(3)->set_float_data(i, 0);
  auto& lstm = b.node("LSTM", "/lstm/LSTM", {"xt", "W", "R", "B", "", "h0", "h0"}, {"", "yh", ""});
  GraphBuilder::attr(lstm, "hidden_size", h);
  b.init_ints("axes", {0});
  b.node("Squeeze", "/Squeeze", {"yh", "axes"}, {"last"});
  b.init("fc", {2, h});
  auto& g = b.node("Gemm", "/fc/Gemm", {"last", "fc"}, {"y"});
  GraphBuilder::attr(g, "transB", std::int64_t{1});
  const OnnxModel r = onnx_read(b.save("lstm"));
  ASSERT_EQ(r.model.layers.size(), 2u);
  EXPECT_EQ(r.model.layers[0].op, ir::Op::LSTM);
  EXPECT_EQ(r.model.layers[0].out, h);
  EXPECT_EQ(r.model.layers[1].op, ir::Op::Dense);

  // A non-zero initial state is refused, naming the node.
  auto* h0 = b.proto().mutable_graph()->mutable_initializer(3);
  h0->set_float_data(1, 0.5f);
  const std::string path = b.save("lstm_h0");
  const std::string msg = error_of([&] { onnx_read(path); });
  EXPECT_NE(msg.find(path + ": node '/lstm/LSTM' (LSTM): a non-zero initial_h"), std::string::npos)
      << msg;
}

// Each refusal is an InputError "FILE: node 'NAME' (Op): why" with the reason given.
struct Refusal {
  std::string tag, node, op, why;
};

void expect_refusal(GraphBuilder& b, const Refusal& want) {
  const std::string path = b.save(want.tag);
  const std::string msg = error_of([&] { onnx_read(path); });
  EXPECT_NE(msg.find(path + ": node '" + want.node + "' (" + want.op + "): "), std::string::npos)
      << msg;
  EXPECT_NE(msg.find(want.why), std::string::npos) << msg;
}

TEST(OnnxImport, RefusalsNameFileNodeAndReason) {
  {
    GraphBuilder b({4}, {4});
    b.node("Erf", "e", {"x"}, {"y"});
    expect_refusal(b, {"erf", "e", "Erf",
                       "operator 'Erf' is not in crossdl's supported set (Conv, Gemm, MatMul"});
  }
  {
    GraphBuilder b({4}, {3});
    b.init("W", {4, 3});
    auto& g = b.node("Gemm", "g", {"x", "W"}, {"y"});
    GraphBuilder::attr(g, "alpha", 2.0f);
    expect_refusal(b, {"alpha", "g", "Gemm", "alpha and beta other than 1"});
  }
  {
    GraphBuilder b({4}, {3});
    b.init("W", {4, 3});
    b.init("C", {2, 3});
    b.node("Gemm", "g", {"x", "W", "C"}, {"y"});
    expect_refusal(b, {"gemm_bias", "g", "Gemm", "a per-example bias is not supported"});
  }
  {
    GraphBuilder b({2, 4, 4}, {32});
    b.init("W", {2, 1, 3, 3});
    auto& c = b.node("Conv", "c", {"x", "W"}, {"c"});
    GraphBuilder::attr(c, "group", std::int64_t{2});
    GraphBuilder::attr(c, "pads", std::vector<std::int64_t>{1, 1, 1, 1});
    b.node("Flatten", "f", {"c"}, {"y"});
    expect_refusal(b, {"group", "c", "Conv", "attribute group=2 is not supported"});
  }
  {
    // 4 wide, kernel 2, stride 1: SAME needs one cell of padding, on one side only.
    GraphBuilder b({1, 4, 4}, {16});
    b.init("W", {1, 1, 2, 2});
    auto& c = b.node("Conv", "c", {"x", "W"}, {"c"});
    GraphBuilder::attr(c, "auto_pad", std::string("SAME_LOWER"));
    b.node("Flatten", "f", {"c"}, {"y"});
    expect_refusal(b, {"same_odd", "c", "Conv", "needs asymmetric padding here"});
  }
  {
    GraphBuilder b({1, 5, 5}, {9});
    auto& p = b.node("AveragePool", "p", {"x"}, {"p"});
    GraphBuilder::attr(p, "kernel_shape", std::vector<std::int64_t>{3, 3});
    GraphBuilder::attr(p, "strides", std::vector<std::int64_t>{2, 2});
    GraphBuilder::attr(p, "pads", std::vector<std::int64_t>{1, 1, 1, 1});
    GraphBuilder::attr(p, "count_include_pad", std::int64_t{1});
    b.node("Flatten", "f", {"p"}, {"y"});
    expect_refusal(b, {"count_pad", "p", "AveragePool", "count_include_pad=1"});
  }
  {
    GraphBuilder b({1, 4, 4}, {4});
    auto& p = b.node("MaxPool", "p", {"x"}, {"p"});
    GraphBuilder::attr(p, "kernel_shape", std::vector<std::int64_t>{3, 3});
    GraphBuilder::attr(p, "strides", std::vector<std::int64_t>{2, 2});
    GraphBuilder::attr(p, "ceil_mode", std::int64_t{1});
    b.node("Flatten", "f", {"p"}, {"y"});
    expect_refusal(b, {"ceil", "p", "MaxPool", "ceil_mode=1 gives another output size"});
  }
  {
    GraphBuilder b({1, 4, 4}, {16});
    auto& p = b.node("MaxPool", "p", {"x"}, {"p"});
    GraphBuilder::attr(p, "kernel_shape", std::vector<std::int64_t>{2, 2});
    GraphBuilder::attr(p, "pads", std::vector<std::int64_t>{2, 2, 2, 2});
    GraphBuilder::attr(p, "strides", std::vector<std::int64_t>{2, 2});
    b.node("Flatten", "f", {"p"}, {"y"});
    expect_refusal(b, {"half", "p", "MaxPool", "pads larger than half the kernel"});
  }
  {
    GraphBuilder b({4}, {4});
    b.init("k", {4});
    b.node("Add", "a", {"x", "k"}, {"y"});
    expect_refusal(b, {"add_const", "a", "Add", "only a per-channel bias right after a Conv"});
  }
  {
    GraphBuilder b({2, 3}, {6});
    b.init_ints("shape", {2, -1, 3});
    b.node("Reshape", "r", {"x", "shape"}, {"y"});
    expect_refusal(b, {"reshape", "r", "Reshape", "got [2,-1,3]"});
  }
  {
    GraphBuilder b({4}, {4});
    auto* t = b.proto().mutable_graph()->add_initializer();
    t->set_name("train");
    t->set_data_type(onnx::TensorProto::BOOL);
    t->add_int32_data(1);
    b.init("ratio", {});
    b.proto().mutable_graph()->mutable_initializer(1)->set_float_data(0, 0.5f);
    b.node("Dropout", "d", {"x", "ratio", "train"}, {"y"});
    expect_refusal(b, {"dropout", "d", "Dropout", "training_mode must be a constant false"});
  }
}

TEST(OnnxImport, SoftmaxBeforeOpset13OverItsLastAxis) {
  // Opset 11 normalises over all axes from `axis` on: from the last one, that is the last axis.
  GraphBuilder b({3, 4}, {12}, 11);
  auto& sm = b.node("Softmax", "sm", {"x"}, {"s"});
  GraphBuilder::attr(sm, "axis", std::int64_t{2});
  b.node("Flatten", "f", {"s"}, {"y"});
  const OnnxModel r = onnx_read(b.save("softmax11"));
  EXPECT_EQ(r.model.layers[0].op, ir::Op::Softmax);

  GraphBuilder c({3, 4}, {12}, 11);
  c.node("Softmax", "sm", {"x"}, {"s"});  // default axis 1: over [3,4] jointly
  c.node("Flatten", "f", {"s"}, {"y"});
  expect_refusal(c, {"softmax11_axis1", "sm", "Softmax", "got axis=1 of a rank-3 tensor"});
}

}  // namespace
}  // namespace crossdl
