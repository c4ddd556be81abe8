// Users' own ONNX files: `crossdl onnx-conformance` on a slice of the ONNX backend test suite
// (Debian libonnx-testdata), and models exported by PyTorch's torch.onnx.export read by crossdl
// and run by the torch framework against PyTorch's own outputs.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "app_support.h"
#include "crossdl/npy.h"
#include "crossdl/onnx_io.h"
#include "support.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kSuite = "/usr/share/libonnx-testdata/data";

bool suite_ready(std::string& why) {
  if (!fs::is_directory(kSuite)) {
    why = std::string(kSuite) + " missing (apt-get install libonnx-testdata)";
    return false;
  }
  return test::adapter_built("torch", &why);
}

json run_conformance(const std::string& filter, int& rc) {
  const test::CliRun r = test::run_cli("onnx-conformance --json --filter '" + filter + "'",
                                       test::scratch_dir("conformance-err") + "/stderr.txt");
  rc = r.rc;
  return json::parse(r.out, nullptr, false);
}

const json* find_test(const json& doc, const std::string& name) {
  for (const auto& t : doc["tests"])
    if (t["test"] == name) return &t;
  return nullptr;
}

TEST(OnnxConformance, ClassifiesASliceOfTheBackendSuite) {
  std::string why;
  if (!suite_ready(why)) GTEST_SKIP() << why;
  int rc = -1;
  const json doc = run_conformance(
      "^node/test_(relu|tanh|basic_conv_with_padding|conv_with_strides_padding|gemm_default_no_"
      "bias|gemm_transposeB|gemm_alpha|maxpool_2d_precomputed_pads|averagepool_2d_pads_count_"
      "include_pad|"
      "softmax_axis_2|softmax_axis_0|globalaveragepool|batchnorm_example|erf|conv_with_autopad_"
      "same)$",
      rc);
  ASSERT_FALSE(doc.is_discarded());
  EXPECT_EQ(rc, 0);
  ASSERT_EQ(doc["tests"].size(), 15u) << doc.dump(1);

  // Single operators that crossdl's IR expresses, run by LibTorch within rtol 1e-3, atol 1e-7.
  for (const char* name : {"node/test_relu", "node/test_tanh", "node/test_basic_conv_with_padding",
                           "node/test_conv_with_strides_padding", "node/test_gemm_default_no_bias",
                           "node/test_gemm_transposeB", "node/test_maxpool_2d_precomputed_pads",
                           "node/test_softmax_axis_2", "node/test_globalaveragepool",
                           "node/test_batchnorm_example", "node/test_conv_with_autopad_same"}) {
    const json* t = find_test(doc, name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ((*t)["status"], "passed") << t->dump(1);
    EXPECT_EQ((*t)["outside_tolerance"], 0) << name;
  }
  // Forms the IR cannot express: refused by the reader, saying why.
  const json* alpha = find_test(doc, "node/test_gemm_alpha");
  ASSERT_NE(alpha, nullptr);
  EXPECT_EQ((*alpha)["status"], "reader_refused");
  EXPECT_NE((*alpha)["reason"].get<std::string>().find("alpha and beta other than 1"),
            std::string::npos);
  const json* axis0 = find_test(doc, "node/test_softmax_axis_0");
  ASSERT_NE(axis0, nullptr);
  EXPECT_EQ((*axis0)["status"], "reader_refused");
  EXPECT_NE((*axis0)["reason"].get<std::string>().find("last axis"), std::string::npos);
  const json* pad = find_test(doc, "node/test_averagepool_2d_pads_count_include_pad");
  ASSERT_NE(pad, nullptr);
  EXPECT_EQ((*pad)["status"], "reader_refused");
  EXPECT_NE((*pad)["reason"].get<std::string>().find("count_include_pad=1"), std::string::npos);
  // An operator outside the set is out of scope, counted under its name.
  const json* erf = find_test(doc, "node/test_erf");
  ASSERT_NE(erf, nullptr);
  EXPECT_EQ((*erf)["status"], "out_of_scope");
  EXPECT_EQ(doc["out_of_scope_by_operator"]["Erf"], 1);

  const json& s = doc["summary"];
  EXPECT_EQ(s["tests"], 15);
  EXPECT_EQ(s["out_of_scope"], 1);
  EXPECT_EQ(s["in_scope"], 14);
  EXPECT_EQ(s["passed"], 11);
  EXPECT_EQ(s["reader_refused"], 3);
  EXPECT_DOUBLE_EQ(s["pass_rate"].get<double>(), 11.0 / 14.0);
  EXPECT_EQ(doc["tolerance"]["rtol"], 1e-3);
}

TEST(OnnxConformance, TorchScriptRuntimeAsExecutor) {
  std::string why;
  if (!suite_ready(why)) GTEST_SKIP() << why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  // The IR exported to TorchScript and loaded back, instead of run by the framework directly.
  const std::string filter =
      "^(node/test_(conv_with_strides_padding|batchnorm_epsilon|softmax_axis_2)|"
      "pytorch-converted/test_(Conv2d_no_bias|MaxPool2d|Linear))$";
  const test::CliRun r =
      test::run_cli("onnx-conformance --runtime torch --json --filter '" + filter + "'");
  EXPECT_EQ(r.rc, 0);
  const json doc = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc["executor"].get<std::string>().rfind("torch runtime (", 0), 0u) << doc["executor"];
  EXPECT_EQ(doc["summary"]["tests"], 6);
  EXPECT_EQ(doc["summary"]["passed"], 6) << doc.dump(1);
}

TEST(OnnxConformance, TableAndBadArguments) {
  std::string why;
  if (!suite_ready(why)) GTEST_SKIP() << why;
  const test::CliRun table = test::run_cli("onnx-conformance --filter '^node/test_relu$'");
  EXPECT_EQ(table.rc, 0);
  EXPECT_NE(table.out.find("node/test_relu"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("pass rate 1/1 = 100.0 %"), std::string::npos) << table.out;
  EXPECT_EQ(test::run_cli("onnx-conformance --filter '^no such test$'").rc, 2);
  EXPECT_EQ(test::run_cli("onnx-conformance --suite /nonexistent").rc, 2);

  // `crossdl compare` on a file with an operator outside the set: bad input naming it and its
  // node (unnamed there: its position and output).
  const std::string err = test::scratch_dir("compare-erf") + "/stderr.txt";
  const test::CliRun erf = test::run_cli(
      "compare --runtimes torch --model " + std::string(kSuite) + "/node/test_erf/model.onnx", err);
  EXPECT_EQ(erf.rc, 2);
  const auto bytes = test::read_bytes(err);
  const std::string msg(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  EXPECT_NE(msg.find("test_erf/model.onnx: node #0 (output 'y') (Erf): operator 'Erf' is not in "
                     "crossdl's supported set (Conv, Gemm"),
            std::string::npos)
      << msg;
}

// PyTorch exports a model; crossdl reads the file and the torch framework runs it.
bool python_torch(std::string& why) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    why = "no /usr/bin/python3 with torch (apt-get install python3-torch)";
    return false;
  }
  return test::adapter_built("torch", &why);
}

Tensor crossdl_logits(const std::string& onnx_path, const Tensor& x, OnnxModel& om) {
  om = onnx_read(onnx_path);
  auto fw = make_framework("torch");
  Status st;
  auto runner = fw->load(om.model, om.weights, RunOptions{}, st);
  EXPECT_TRUE(st.is_ok()) << st.message();
  Tensor logits;
  if (runner) {
    const Status run = runner->infer(x, logits);
    EXPECT_TRUE(run.is_ok()) << run.message();
  }
  return logits;
}

TEST(OnnxImportOracle, TorchOnnxExportCnnGivesPyTorchsLogits) {
  std::string why;
  if (!python_torch(why)) GTEST_SKIP() << why;
  const std::string dir = test::scratch_dir("torch-export-cnn");
  const Dataset ds = test::fashion_subset(1, 64);
  const auto idx = test::first_n(64);
  const Tensor x = make_batch(ds, ds.test, idx);
  npy_write(dir + "/x.npy", x);
  const std::string cmd = "/usr/bin/python3 " + test::source_path("tests/oracle/torch_export.py") +
                          " cnn " + dir + "/cnn.onnx " + dir + "/x.npy " + dir + "/logits.npy >" +
                          dir + "/python.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  OnnxModel om;
  const Tensor got = crossdl_logits(dir + "/cnn.onnx", x, om);
  // What the exporter wrote: BatchNorm folded into conv1, AvgPool2d as a zero Pad + AveragePool.
  std::vector<ir::Op> ops;
  for (const auto& l : om.model.layers) ops.push_back(l.op);
  EXPECT_EQ(ops,
            (std::vector<ir::Op>{ir::Op::Conv2d, ir::Op::ReLU, ir::Op::MaxPool2d, ir::Op::Conv2d,
                                 ir::Op::Tanh, ir::Op::AvgPool2d, ir::Op::Flatten, ir::Op::Dense,
                                 ir::Op::Sigmoid, ir::Op::Dense}));
  EXPECT_EQ(om.model.layers[0].name, "conv1_Conv");
  // The same file through `crossdl compare`: read, exported and run in a child process.
  const test::CliRun cmp = test::run_cli("compare --model " + dir +
                                         "/cnn.onnx --runtimes torch --limit 64 --latency-runs 2 "
                                         "--json");
  EXPECT_EQ(cmp.rc, 0);
  const json doc = json::parse(cmp.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << cmp.out;
  EXPECT_EQ(doc["test_size"], 64);
  EXPECT_EQ(doc["runtimes"][0]["status"], "ok") << doc.dump(1);
  const Tensor want = npy_read(dir + "/logits.npy");
  // Measured: 1.2e-7 (LibTorch 1.13.1 from C++ vs PyTorch 1.13.1 from Python, 1 thread).
  const double diff = test::max_abs_diff(got, want);
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", diff);
  RecordProperty("max_abs_diff", text);
  EXPECT_LT(diff, 1e-5);
}

// batch_first LSTM and GRU as PyTorch exports them (fixed batch): Transpose, the zero initial
// state sized through Shape/Gather/Unsqueeze/Concat/Expand, Y_h squeezed, Gemm.
class TorchRecurrentExport : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchRecurrentExport, GivesPyTorchsLogits) {
  const std::string kind = GetParam();
  std::string why;
  if (!python_torch(why)) GTEST_SKIP() << why;
  const std::string dir = test::scratch_dir("torch-export-" + kind);
  const Dataset ds = test::fashion_subset(1, 64);
  const Tensor images = make_batch(ds, ds.test, test::first_n(64));
  const Tensor rows = images.reshaped({64, 28, 28});  // 28 time steps of 28 pixels
  npy_write(dir + "/x.npy", rows);
  const std::string cmd = "/usr/bin/python3 " + test::source_path("tests/oracle/torch_export.py") +
                          " " + kind + " " + dir + "/" + kind + ".onnx " + dir + "/x.npy " + dir +
                          "/logits.npy >" + dir + "/python.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  OnnxModel om;
  const Tensor got = crossdl_logits(dir + "/" + kind + ".onnx", rows, om);
  ASSERT_EQ(om.model.layers.size(), 2u);
  EXPECT_EQ(om.model.layers[0].op, kind == "lstm" ? ir::Op::LSTM : ir::Op::GRU);
  EXPECT_EQ(om.model.input_shape, (Shape{28, 28}));
  const Tensor want = npy_read(dir + "/logits.npy");
  // Measured: 0 for both (bit-identical).
  const double diff = test::max_abs_diff(got, want);
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", diff);
  RecordProperty("max_abs_diff", text);
  EXPECT_LT(diff, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(OnnxImportOracle, TorchRecurrentExport, ::testing::Values("lstm", "gru"));

}  // namespace
}  // namespace crossdl
