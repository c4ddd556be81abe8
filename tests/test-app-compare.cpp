// `crossdl compare` and the study's migrate stage, end to end through the CLI: every built runtime
// runs the same weights in its own process and agrees with LibTorch within the default tolerance;
// bad input exits 2 naming what is wrong; a migrate cell finds its training cell.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "app_support.h"
#include "crossdl/onnx_io.h"
#include "crossdl/runtime.h"
#include "crossdl/zoo.h"
#include "support.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {
namespace {

using test::adapter_built;
using test::runtime_built;

// LeNet-1 with crossdl's seed-3 initial weights, as an ONNX file.
std::string lenet1_file(const std::string& dir) {
  const ir::Model m = zoo::build("lenet1", {{1, 28, 28}, DType::F32, 10, 0});
  const std::string path = dir + "/lenet1.onnx";
  onnx_write(path, m, init_weights(m, 3));
  return path;
}

TEST(Compare, EveryBuiltRuntimeAgreesWithTorchOnLenet1) {
  std::string why;
  if (!runtime_built("torch", &why)) GTEST_SKIP() << why;
  const std::string dir = test::scratch_dir("compare-all");
  std::string list = "torch";
  for (const std::string& r : runtime_names())
    if (r != "torch") list += "," + r;
  const auto run =
      test::run_cli("compare --model " + lenet1_file(dir) + " --runtimes " + list +
                    " --limit 48 --latency-runs 5 --layers --json --out " + dir + "/work");
  const json doc = json::parse(run.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << run.out;
  ASSERT_EQ(doc["runtimes"].size(), runtime_names().size());
  int compared = 0;
  for (const auto& r : doc["runtimes"]) {
    const std::string name = r["runtime"];
    SCOPED_TRACE(name + ": " + r.value("message", ""));
    if (r["status"] == "skipped") continue;
    ASSERT_EQ(r["status"], "ok");
    EXPECT_EQ(r["test_size"], 48);
    EXPECT_GT(r["latency_ms"]["p50"].get<double>(), 0.0);
    EXPECT_GT(r["artefact"]["bytes"].get<double>(), 1000.0);
    if (name == "torch") continue;
    ++compared;
    EXPECT_TRUE(r["logits_diff"]["within"].get<bool>()) << r["logits_diff"].dump();
    EXPECT_EQ(r["disagreement"], 0);
    EXPECT_EQ(r["logits_diff"]["nan"], 0);
    if (r.contains("layer_diffs")) {
      EXPECT_TRUE(r["first_divergent_layer"].is_null()) << r["layer_diffs"].dump();
      EXPECT_GE(r["layer_diffs"].size(), 3u);
    }
  }
  if (compared == 0) GTEST_SKIP() << "no runtime besides torch is built into this crossdl";
  // The outputs stay in --out for a second look.
  EXPECT_TRUE(fs::exists(dir + "/work/torch/logits.npy"));
  EXPECT_EQ(run.rc, 0);
}

TEST(Compare, BadInputExitsTwoNamingIt) {
  const std::string dir = test::scratch_dir("compare-bad");
  const std::string model = lenet1_file(dir);
  const std::string err = dir + "/err.txt";
  auto r = test::run_cli("compare --model " + model + " --runtimes torch,nosuchrt", err);
  EXPECT_EQ(r.rc, 2);
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("nosuchrt"), std::string::npos) << text;

  r = test::run_cli("compare --model " + dir + "/missing.onnx --runtimes torch", err);
  EXPECT_EQ(r.rc, 2);

  test::write_text(dir + "/trunc.onnx", "\x08\x07\x12");
  r = test::run_cli("compare --model " + dir + "/trunc.onnx --runtimes torch", err);
  EXPECT_EQ(r.rc, 2);
  std::ifstream in2(err);
  text.assign((std::istreambuf_iterator<char>(in2)), {});
  EXPECT_NE(text.find("trunc.onnx"), std::string::npos) << text;

  r = test::run_cli("compare --model " + model + " --runtimes torch --opset 11", err);
  EXPECT_EQ(r.rc, 2);
}

TEST(Compare, MigrateCellsTakeTheStudysTrainedModel) {
  std::string why;
  if (!adapter_built("torch", &why)) GTEST_SKIP() << why;
  const std::string dir = test::scratch_dir("migrate-study");
  std::string runtimes = "torch";  // and one more runtime when this build has one
  int per_seed = 1;
  for (const char* r : {"ort", "tflite", "opencv"})
    if (runtime_built(r)) {
      runtimes += std::string(", ") + r;
      per_seed = 2;
      break;
    }
  test::write_text(dir + "/s.yaml", R"(name: migrate-test
defaults: {epochs: 1, batch_size: 32}
stages:
  - stage: train
    axes: {model: [lenet1], dataset: [fashion-mnist], framework: [torch], seed: [1]}
    params: {train_limit: 512, test_limit: 100}
  - stage: migrate
    axes:
      model: [lenet1]
      dataset: [fashion-mnist]
      framework: [torch]
      runtime: [)" + runtimes + R"(]
      seed: [1]
    params: {train_limit: 512, test_limit: 100, latency_runs: 3}
  - stage: train
    axes: {model: [lstm], dataset: [fashion-mnist], framework: [dlib], seed: [1]}
    params: {train_limit: 512, test_limit: 100}
  - stage: migrate
    axes: {model: [lstm], dataset: [fashion-mnist], framework: [dlib], runtime: [torch], seed: [1]}
    params: {train_limit: 512, test_limit: 100, latency_runs: 3}
)");
  const auto r = test::run_cli("study run " + dir + "/s.yaml --out " + dir + "/out --json");
  const json s = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(s.is_discarded()) << r.out;
  // dlib cannot train an LSTM (a skip, or a failure when dlib is not built): the migrate cell of
  // that model is a skip naming its train cell, not a failure of its own.
  EXPECT_EQ(s["by_status"].value("ok", 0), 1 + per_seed);
  EXPECT_EQ(s["by_status"].value("skipped", 0), 2);
  EXPECT_EQ(r.rc, 0);
  std::ifstream in(dir + "/out/report.md");
  const std::string md((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(md.find("## Migration"), std::string::npos);
  EXPECT_NE(md.find("| lenet1 | fashion-mnist | torch |"), std::string::npos) << md;
  EXPECT_NE(md.find("its model cell"), std::string::npos) << md;

  // A migrate cell whose model the study never trains is a planning error: exit 2, naming it.
  test::write_text(dir + "/untrained.yaml", R"(name: u
stages:
  - stage: train
    axes: {model: [lenet1], dataset: [fashion-mnist], framework: [torch], seed: [1]}
  - stage: migrate
    axes: {model: [lenet1], dataset: [fashion-mnist], framework: [torch], runtime: [torch], seed: [2]}
)");
  const std::string uerr = dir + "/uerr.txt";
  EXPECT_EQ(test::run_cli("study run " + dir + "/untrained.yaml --out " + dir + "/out3", uerr).rc,
            2);
  std::ifstream ue(uerr);
  const std::string ut((std::istreambuf_iterator<char>(ue)), {});
  EXPECT_NE(ut.find("needs a train cell of lenet1"), std::string::npos) << ut;

  // A typo in a runtime name stops the study before anything runs.
  test::write_text(dir + "/typo.yaml", R"(name: t
stages:
  - stage: migrate
    axes: {model: [lenet1], dataset: [fashion-mnist], framework: [torch], runtime: [onxruntime]}
)");
  const std::string err = dir + "/err.txt";
  EXPECT_EQ(test::run_cli("study run " + dir + "/typo.yaml --out " + dir + "/out2", err).rc, 2);
  std::ifstream e(err);
  const std::string et((std::istreambuf_iterator<char>(e)), {});
  EXPECT_NE(et.find("onxruntime"), std::string::npos) << et;
}

}  // namespace
}  // namespace crossdl
