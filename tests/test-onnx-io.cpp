// The ONNX interchange file: exact round trips of every zoo model at opsets 13 and 17, files the
// ONNX checker accepts, and clear errors for files that are not what they should be.
#include <gtest/gtest.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "crossdl/onnx_io.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"
#include "support.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string model;
  zoo::InputSpec in;
  std::string tag;
};

zoo::InputSpec spec(Shape shape, DType dtype, std::int64_t classes, std::int64_t vocab) {
  zoo::InputSpec in;
  in.sample_shape = std::move(shape);
  in.dtype = dtype;
  in.num_classes = classes;
  in.vocab_size = vocab;
  return in;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const auto& name : zoo::model_names()) {
    cases.emplace_back(Case{name, spec({1, 28, 28}, DType::F32, 10, 0), "fashion"});
    cases.emplace_back(Case{name, spec({3, 32, 32}, DType::F32, 10, 0), "cifar"});
    if (name == "lstm" || name == "gru")
      cases.emplace_back(Case{name, spec({200}, DType::I64, 2, 10002), "imdb"});
  }
  return cases;
}

using test::error_of;

onnx::ModelProto load_proto(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  onnx::ModelProto mp;
  EXPECT_TRUE(mp.ParseFromIstream(&in));
  return mp;
}

void save_proto(const std::string& path, const onnx::ModelProto& mp) {
  std::ofstream out(path, std::ios::binary);
  ASSERT_TRUE(mp.SerializeToOstream(&out));
}

bool python_has_onnx() {
  static const bool has = std::system("/usr/bin/python3 -c 'import onnx' >/dev/null 2>&1") == 0;
  return has;
}

TEST(OnnxRoundTrip, EveryZooModelIsBitExactAtOpsets13And17) {
  const std::string dir = test::scratch_dir("zoo");
  std::uint64_t seed = 100;
  for (const Case& c : all_cases()) {
    const ir::Model m = zoo::build(c.model, c.in);
    const WeightSet w = init_weights(m, ++seed);
    for (int opset : {13, 17}) {
      SCOPED_TRACE(c.model + "/" + c.tag + "/opset" + std::to_string(opset));
      const std::string path =
          dir + "/" + c.model + "-" + c.tag + "-" + std::to_string(opset) + ".onnx";
      OnnxWriteOptions opt;
      opt.opset = opset;
      opt.metadata = {{"run", "test"}, {"seed", std::to_string(seed)}};
      onnx_write(path, m, w, opt);
      const OnnxModel back = onnx_read(path);
      EXPECT_TRUE(back.model == m);
      EXPECT_TRUE(back.weights.identical(w));
      EXPECT_EQ(back.weights.sha256(), w.sha256());
      EXPECT_EQ(back.opset, opset);
      EXPECT_EQ(back.metadata.at("crossdl.model"), c.model);
      EXPECT_EQ(back.metadata.at("crossdl.format_version"), "1");
      EXPECT_EQ(back.metadata.at("seed"), std::to_string(seed));
      onnx::checker::check_model(load_proto(path));  // also by path, as the library offers it
      onnx::checker::check_model(path);
    }
  }
  // No temporary files left behind.
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().extension(), ".onnx") << e.path();
}

TEST(OnnxRoundTrip, NonDefaultFieldsSurvive) {
  ir::Model m;
  m.name = "odd";
  m.input_shape = {2, 9, 11};
  m.num_classes = 3;
  ir::Layer c;
  c.name = "c";
  c.op = ir::Op::Conv2d;
  c.out = 5;
  c.kernel[0] = 3;
  c.kernel[1] = 2;
  c.stride[0] = 2;
  c.pad[1] = 1;
  ir::Layer bn;
  bn.name = "bn";
  bn.op = ir::Op::BatchNorm2d;
  bn.eps = 1e-3f;
  bn.momentum = 0.01f;
  ir::Layer ap;
  ap.name = "avg";
  ap.op = ir::Op::AvgPool2d;
  ap.kernel[0] = ap.kernel[1] = 3;
  ap.stride[0] = ap.stride[1] = 1;
  ap.pad[0] = ap.pad[1] = 1;
  ir::Layer t;
  t.name = "t";
  t.op = ir::Op::Tanh;
  ir::Layer s;
  s.name = "s";
  s.op = ir::Op::Sigmoid;
  s.inputs = {"bn"};
  ir::Layer add;
  add.name = "sum";
  add.op = ir::Op::Add;
  add.inputs = {"t", "s"};
  ir::Layer seq;
  seq.name = "seq";
  seq.op = ir::Op::ImageToSequence;
  ir::Layer fl;  // a non-recurrent consumer of the time-major sequence
  fl.name = "flat";
  fl.op = ir::Op::Flatten;
  ir::Layer fc;
  fc.name = "fc";
  fc.op = ir::Op::Dense;
  fc.out = 3;
  fc.bias = false;
  ir::Layer sm;
  sm.name = "sm";
  sm.op = ir::Op::Softmax;
  m.layers = {c, bn, ap, t, s, add, seq, fl, fc, sm};
  ir::validate(m);
  const WeightSet w = init_weights(m, 5);
  const std::string path = test::scratch_dir("odd") + "/odd.onnx";
  onnx_write(path, m, w);
  const OnnxModel back = onnx_read(path);
  EXPECT_TRUE(back.model == m);
  EXPECT_EQ(back.model.layers[1].momentum, 0.01f);
  EXPECT_TRUE(back.weights.identical(w));
}

TEST(OnnxWrite, FileStructure) {
  const ir::Model m = zoo::build("lstm", {{1, 28, 28}, DType::F32, 10, 0});
  const WeightSet w = init_weights(m, 1);
  const std::string path = test::scratch_dir("structure") + "/lstm.onnx";
  onnx_write(path, m, w, {17, {}});
  const onnx::ModelProto mp = load_proto(path);
  EXPECT_EQ(mp.ir_version(), 8);
  EXPECT_EQ(mp.opset_import(0).version(), 17);
  const auto& g = mp.graph();
  ASSERT_EQ(g.input_size(), 1);
  EXPECT_EQ(g.input(0).name(), "input");
  const auto& in = g.input(0).type().tensor_type();
  EXPECT_EQ(in.elem_type(), onnx::TensorProto::FLOAT);
  EXPECT_EQ(in.shape().dim(0).dim_param(), "batch");
  EXPECT_EQ(in.shape().dim(2).dim_value(), 28);
  ASSERT_EQ(g.output_size(), 1);
  EXPECT_EQ(g.output(0).name(), "logits");
  EXPECT_EQ(g.output(0).type().tensor_type().shape().dim(1).dim_value(), 10);
  std::vector<std::string> inits;
  for (const auto& t : g.initializer()) inits.push_back(t.name());
  EXPECT_EQ(inits,
            (std::vector<std::string>{"lstm.W", "lstm.R", "lstm.B", "fc.weight", "fc.bias"}));
  bool saw_lstm = false;
  for (const auto& n : g.node())
    if (n.op_type() == "LSTM") {
      saw_lstm = true;
      EXPECT_EQ(n.name(), "lstm");
    } else if (n.op_type() == "Squeeze") {
      EXPECT_EQ(n.output(0), "lstm");
    }
  EXPECT_TRUE(saw_lstm);
  // Gate blocks: ONNX i,o,f,c from PyTorch i,f,g,o; block o (PyTorch 3) is ONNX block 1.
  const auto& W = g.initializer(0);
  const float* onnx_w = reinterpret_cast<const float*>(W.raw_data().data());
  const auto torch_w = w.at("lstm.weight_ih").values<float>();
  const std::size_t block = 128 * 28;
  EXPECT_EQ(onnx_w[1 * block + 5], torch_w[3 * block + 5]);
  EXPECT_EQ(onnx_w[2 * block + 7], torch_w[1 * block + 7]);
  EXPECT_EQ(onnx_w[3 * block], torch_w[2 * block]);
}

TEST(OnnxWrite, RejectsBadRequests) {
  const ir::Model m = zoo::build("lenet1", {{1, 28, 28}, DType::F32, 10, 0});
  const WeightSet w = init_weights(m, 1);
  const std::string dir = test::scratch_dir("bad");
  EXPECT_NE(error_of([&] {
              onnx_write(dir + "/a.onnx", m, w, {11, {}});
            }).find("opset 11"),
            std::string::npos);
  WeightSet missing;
  for (const auto& n : w.names())
    if (n != "fc1.bias") missing.set(n, w.at(n));
  EXPECT_NE(error_of([&] { onnx_write(dir + "/b.onnx", m, missing); }).find("fc1.bias"),
            std::string::npos);
  WeightSet extra = w;
  extra.set("stray.weight", Tensor::f32({1}, {0}));
  EXPECT_NE(error_of([&] { onnx_write(dir + "/c.onnx", m, extra); }).find("stray.weight"),
            std::string::npos);
  WeightSet relabelled = w;
  relabelled.at("conv1.weight").set_layout(Layout::HWIO);
  EXPECT_NE(error_of([&] { onnx_write(dir + "/d.onnx", m, relabelled); }).find("HWIO"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              onnx_write(dir + "/e.onnx", m, w, {13, {{"crossdl.model", "x"}}});
            }).find("reserved"),
            std::string::npos);
  EXPECT_NE(error_of([&] { onnx_write(dir + "/no/such/dir/f.onnx", m, w); }).find("f.onnx"),
            std::string::npos);
  for (const char* f : {"a.onnx", "b.onnx", "c.onnx", "d.onnx", "e.onnx"})
    EXPECT_FALSE(fs::exists(dir + "/" + f)) << f;
}

TEST(OnnxRead, BrokenFilesNameTheFile) {
  const ir::Model m = zoo::build("lenet5", {{1, 28, 28}, DType::F32, 10, 0});
  const std::string dir = test::scratch_dir("broken");
  const std::string good = dir + "/good.onnx";
  onnx_write(good, m, init_weights(m, 1));
  const auto bytes = test::read_bytes(good);

  const std::string missing = dir + "/missing.onnx";
  EXPECT_NE(error_of([&] { onnx_read(missing); }).find(missing), std::string::npos);

  const std::string garbage = dir + "/garbage.onnx";
  test::write_text(garbage, "this is not an ONNX model, just some text\n");
  EXPECT_NE(error_of([&] { onnx_read(garbage); }).find(garbage), std::string::npos);

  const std::string empty = dir + "/empty.onnx";
  test::write_text(empty, "");
  EXPECT_NE(error_of([&] { onnx_read(empty); }).find(empty), std::string::npos);

  for (std::size_t cut : {bytes.size() / 2, bytes.size() - 3, std::size_t{40}}) {
    const std::string truncated = dir + "/truncated-" + std::to_string(cut) + ".onnx";
    test::write_bytes(truncated, std::vector<std::byte>(bytes.begin(), bytes.begin() + cut));
    EXPECT_NE(error_of([&] { onnx_read(truncated); }).find(truncated), std::string::npos) << cut;
  }
}

// A minimal hand-built graph: input [batch, 4] -> nodes -> logits [batch, classes].
onnx::ModelProto tiny_graph(std::int64_t classes) {
  onnx::ModelProto mp;
  mp.set_ir_version(8);
  mp.add_opset_import()->set_version(13);
  auto* g = mp.mutable_graph();
  g->set_name("handmade");
  auto io = [](onnx::ValueInfoProto* v, const std::string& name, std::int64_t d) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    tt->mutable_shape()->add_dim()->set_dim_value(d);
  };
  io(g->add_input(), "x", 4);
  io(g->add_output(), "y", classes);
  return mp;
}

TEST(OnnxRead, UnsupportedOperatorNamesFileNodeAndOp) {
  onnx::ModelProto mp = tiny_graph(4);
  auto* n = mp.mutable_graph()->add_node();
  n->set_op_type("Erf");
  n->set_name("erf1");
  n->add_input("x");
  n->add_output("y");
  onnx::checker::check_model(mp);  // a valid model, just not one crossdl can express
  const std::string path = test::scratch_dir("erf") + "/erf.onnx";
  save_proto(path, mp);
  const std::string msg = error_of([&] { onnx_read(path); });
  EXPECT_NE(msg.find(path +
                     ": node 'erf1' (Erf): operator 'Erf' is not in crossdl's supported set ("),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("Conv"), std::string::npos);
}

TEST(OnnxRead, CheckerFailureIsInputError) {
  onnx::ModelProto mp = tiny_graph(4);
  auto* n = mp.mutable_graph()->add_node();
  n->set_op_type("Relu");
  n->set_name("r");
  n->add_input("nowhere");  // undefined input
  n->add_output("y");
  const std::string path = test::scratch_dir("checker") + "/bad.onnx";
  save_proto(path, mp);
  const std::string msg = error_of([&] { onnx_read(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("checker"), std::string::npos) << msg;
}

TEST(OnnxRead, GenericMatMulAddSoftmax) {
  onnx::ModelProto mp = tiny_graph(3);
  auto* g = mp.mutable_graph();
  auto init = [&](const std::string& name, std::vector<std::int64_t> dims, std::vector<float> v) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) t->add_dims(d);
    for (float x : v) t->add_float_data(x);
  };
  init("B", {4, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  init("c", {3}, {0.5f, -0.5f, 0.25f});
  auto node = [&](const std::string& op, const std::string& name, std::vector<std::string> in,
                  const std::string& out) {
    auto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (auto& i : in) n->add_input(i);
    n->add_output(out);
  };
  node("MatMul", "dense", {"x", "B"}, "mm");
  node("Add", "dense/add", {"mm", "c"}, "z");
  node("Softmax", "prob", {"z"}, "y");
  const std::string path = test::scratch_dir("generic") + "/generic.onnx";
  save_proto(path, mp);
  const OnnxModel r = onnx_read(path);
  EXPECT_EQ(r.model.name, "handmade");
  EXPECT_EQ(r.model.input_shape, Shape{4});
  EXPECT_EQ(r.model.num_classes, 3);
  ASSERT_EQ(r.model.layers.size(), 2u);
  EXPECT_EQ(r.model.layers[0].op, ir::Op::Dense);
  EXPECT_TRUE(r.model.layers[0].bias);
  EXPECT_EQ(r.model.layers[1].op, ir::Op::Softmax);
  EXPECT_EQ(r.weights.names(), (std::vector<std::string>{"dense.weight", "dense.bias"}));
  const auto w = r.weights.at("dense.weight");
  EXPECT_EQ(w.shape(), (Shape{3, 4}));
  EXPECT_EQ(w.layout(), Layout::OI);
  EXPECT_EQ(w.values<float>()[1], 4.0f);  // [out=0][in=1] = B[1][0]

  // With an exporter's stock graph name and no metadata the model is named after the file (the
  // checker insists on a non-empty graph name).
  mp.mutable_graph()->set_name("main_graph");
  const std::string stem = test::scratch_dir("generic2") + "/my_net.onnx";
  save_proto(stem, mp);
  EXPECT_EQ(onnx_read(stem).model.name, "my_net");
}

TEST(OnnxOracle, PythonCheckerFullCheck) {
  if (!python_has_onnx()) GTEST_SKIP() << "/usr/bin/python3 has no onnx module";
  const std::string dir = test::scratch_dir("oracle");
  std::string files;
  for (const Case& c : all_cases()) {
    if (c.model == "vgg16" && c.tag == "fashion") continue;  // the cifar one covers it
    const ir::Model m = zoo::build(c.model, c.in);
    const WeightSet w = init_weights(m, 9);
    for (int opset : {13, 17}) {
      const std::string p =
          dir + "/" + c.model + "-" + c.tag + "-" + std::to_string(opset) + ".onnx";
      onnx_write(p, m, w, {opset, {}});
      files += " '" + p + "'";
    }
  }
  const std::string cmd =
      "/usr/bin/python3 -c \"import sys, onnx\n"
      "for p in sys.argv[1:]:\n"
      "    onnx.checker.check_model(onnx.load(p), full_check=True)\n"
      "    m = onnx.shape_inference.infer_shapes(onnx.load(p), strict_mode=True)\n"
      "    d = m.graph.output[0].type.tensor_type.shape.dim\n"
      "    assert d[0].dim_param == 'batch' and d[1].dim_value > 0, p\n\"" +
      files;
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

}  // namespace
}  // namespace crossdl
