// The crossdl command line, end to end: exit codes, --json output, bad input, and a study that is
// killed with SIGKILL and resumed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "app_support.h"
#include "support.h"

namespace fs = std::filesystem;

namespace {

using crossdl::test::CliRun;
using crossdl::test::run_cli;

std::string slurp(const std::string& path) {
  auto b = crossdl::test::read_bytes(path);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// id -> finished_at of every cell in a study's store.
std::map<std::string, std::string> finished_cells(const std::string& db_path) {
  std::map<std::string, std::string> out;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return out;
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT id, finished_at FROM cells", -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW)
      out[reinterpret_cast<const char*>(sqlite3_column_text(st, 0))] =
          reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

}  // namespace

TEST(Cli, UsageErrorsExitWith2) {
  EXPECT_EQ(run_cli("").rc, 2);
  EXPECT_EQ(run_cli("train --model lenet5 --no-such-flag").rc, 2);
  EXPECT_EQ(run_cli("train --model nosuchnet --train-limit 10 --test-limit 10").rc, 2);
  EXPECT_EQ(run_cli("train --model lenet5 --framework tensorflow").rc, 2);
  EXPECT_EQ(run_cli("--help").rc, 0);
}

TEST(Cli, BadDataFileIsNamedAndExitsWith2) {
  const std::string dir = crossdl::test::scratch_dir("data");
  const std::string src = "/usr/share/datasets/fashion-mnist/";
  if (!fs::exists(src)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  for (const char* f :
       {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    fs::copy_file(src + f, dir + "/" + f);
  // A truncated training-image file.
  auto bytes = crossdl::test::read_bytes(src + "train-images-idx3-ubyte.gz");
  bytes.resize(bytes.size() / 3);
  crossdl::test::write_bytes(dir + "/train-images-idx3-ubyte.gz", bytes);
  const std::string err = dir + "/stderr.txt";
  CliRun r = run_cli("train --model lenet1 --data-root " + dir, err);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(slurp(err).find("train-images-idx3-ubyte.gz"), std::string::npos) << slurp(err);
}

TEST(Cli, CorruptModelFileExitsWith2) {
  const std::string dir = crossdl::test::scratch_dir("model");
  crossdl::test::write_text(dir + "/model.onnx", "this is not a protobuf");
  const std::string err = dir + "/stderr.txt";
  EXPECT_EQ(run_cli("eval --model " + dir + "/model.onnx --test-limit 10", err).rc, 2);
  EXPECT_NE(slurp(err).find("model.onnx"), std::string::npos) << slurp(err);
}

TEST(Cli, TrainJsonThenEvalGivesTheSameAccuracy) {
  const std::string dir = crossdl::test::scratch_dir("train");
  CliRun r = run_cli(
      "train --model lenet5 --dataset fashion-mnist --framework torch --epochs 1 "
      "--seed 1 --train-limit 512 --test-limit 300 --json --out " +
      dir);
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"framework", "model", "dataset", "test_accuracy", "seconds",
                          "peak_rss_mb", "weights_sha256", "artefact", "provenance"})
    EXPECT_TRUE(j.contains(key)) << key;
  ASSERT_TRUE(fs::exists(j["artefact"].get<std::string>()));
  EXPECT_TRUE(fs::exists(dir + "/test_logits.npy"));

  CliRun e = run_cli("eval --model " + j["artefact"].get<std::string>() +
                     " --dataset fashion-mnist --framework torch --test-limit 300 --json");
  ASSERT_EQ(e.rc, 0) << e.out;
  const auto ej = nlohmann::json::parse(e.out);
  EXPECT_DOUBLE_EQ(ej["test_accuracy"].get<double>(), j["test_accuracy"].get<double>());
  EXPECT_EQ(ej["weights_sha256"], j["weights_sha256"]);
}

TEST(Cli, DoctorListsEveryKnownBackend) {
  CliRun r = run_cli("doctor --json");
  ASSERT_EQ(r.rc, 0);
  const auto j = nlohmann::json::parse(r.out);
  std::map<std::string, bool> usable;
  for (const auto& b : j["backends"]) usable[b["name"]] = b["usable"];
  EXPECT_TRUE(usable.at("torch"));
  for (const char* n : {"dlib", "darknet", "opencv", "armnn", "tflite", "ort", "torch-cuda"})
    EXPECT_TRUE(usable.count(n)) << n;
}

// A study killed with SIGKILL halfway through completes after --resume, and the cells that had
// finished are not run again.
TEST(CliStudy, KilledWithSigkillResumesWithoutRedoingFinishedCells) {
  const std::string dir = crossdl::test::scratch_dir("study");
  const std::string out = dir + "/out";
  crossdl::test::write_text(dir + "/study.yaml", R"(name: resume-test
timeout_s: 300
defaults: {epochs: 1, batch_size: 32, train_limit: 256, test_limit: 64, threads: 1}
stages:
  - stage: train
    axes: {model: [lenet1], dataset: [synthetic], framework: [torch], seed: [1, 2, 3, 4, 5, 6]}
)");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string study = dir + "/study.yaml";
    freopen("/dev/null", "w", stdout);
    freopen((dir + "/first-run.log").c_str(), "w", stderr);
    execl(CROSSDL_BINARY, CROSSDL_BINARY, "study", "run", study.c_str(), "--out", out.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill the runner once two cells are in the store, i.e. halfway through.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  std::map<std::string, std::string> before;
  while (std::chrono::steady_clock::now() < deadline) {
    before = finished_cells(out + "/study.sqlite");
    if (before.size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  before = finished_cells(out + "/study.sqlite");
  ASSERT_GE(before.size(), 2u) << slurp(dir + "/first-run.log");
  ASSERT_LT(before.size(), 6u) << "the study finished before it could be killed";

  // Without --resume the folder is refused, and nothing in it is touched.
  EXPECT_EQ(run_cli("study run " + dir + "/study.yaml --out " + out).rc, 2);

  CliRun r = run_cli("study run " + dir + "/study.yaml --out " + out + " --resume --json",
                     dir + "/resume.log");
  ASSERT_EQ(r.rc, 0) << slurp(dir + "/resume.log");
  const auto after = finished_cells(out + "/study.sqlite");
  EXPECT_EQ(after.size(), 6u);
  for (const auto& [id, finished_at] : before) EXPECT_EQ(after.at(id), finished_at) << id;
  EXPECT_TRUE(fs::exists(out + "/report.md"));
  EXPECT_TRUE(fs::exists(out + "/results.csv"));

  CliRun again = run_cli("study run " + dir + "/study.yaml --out " + out + " --resume");
  EXPECT_EQ(again.rc, 0);
  EXPECT_NE(again.out.find("0 run now, 6 already done"), std::string::npos) << again.out;
}

TEST(CliStudy, MisspeltParameterStopsTheStudyBeforeAnythingRuns) {
  const std::string dir = crossdl::test::scratch_dir("study");
  crossdl::test::write_text(dir + "/study.yaml", R"(name: typo
defaults: {epochs: 1, learning_rate: 0.1}
stages:
  - stage: train
    axes: {model: [lenet1], dataset: [synthetic], framework: [torch]}
)");
  const std::string err = dir + "/stderr.txt";
  EXPECT_EQ(run_cli("study run " + dir + "/study.yaml --out " + dir + "/out", err).rc, 2);
  EXPECT_NE(slurp(err).find("learning_rate"), std::string::npos) << slurp(err);
  EXPECT_FALSE(fs::exists(dir + "/out/study.sqlite"));
}
