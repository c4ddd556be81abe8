// The process-isolated executor: every way a cell can end, with /bin/sh scripts as cells.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>

#include "crossdl/study.h"
#include "support.h"

using namespace crossdl;

namespace {

CellOutcome run_sh(const std::string& script, double timeout_s,
                   std::vector<nlohmann::json>* events = nullptr) {
  CellObserver obs;
  if (events != nullptr) obs.on_event = [events](const nlohmann::json& e) { events->push_back(e); };
  return cell_execute("c", {"/bin/sh", "-c", script}, timeout_s, obs);
}

}  // namespace

TEST(Executor, ResultEventGivesStatusMetricsAndEpochs) {
  std::vector<nlohmann::json> events;
  CellOutcome o = run_sh(
      R"(echo '{"event":"progress","epoch":1,"epochs":2,"batch":5,"batches":10,"loss":0.9}'
echo 'some library chatter'
echo '{"event":"epoch","epoch":1,"train_loss":0.61,"test_accuracy":0.84,"seconds":9.8,"peak_rss_mb":310.2,"samples_per_s":6100}'
echo '{"event":"epoch","epoch":2,"train_loss":0.41,"test_accuracy":0.87,"seconds":9.5}'
echo warning on stderr >&2
printf '{"event":"result","status":"ok","message":"fine","metrics":{"test_accuracy":0.87},"provenance":{"library":"x"}}')",
      10, &events);
  EXPECT_EQ(o.status, "ok") << o.message << o.stderr_tail;
  EXPECT_EQ(o.message, "fine");
  EXPECT_EQ(o.metrics["test_accuracy"], 0.87);
  EXPECT_EQ(o.provenance["library"], "x");
  ASSERT_EQ(o.epochs.size(), 2u);
  EXPECT_EQ(o.epochs[0].epoch, 1);
  EXPECT_DOUBLE_EQ(o.epochs[0].test_accuracy, 0.84);
  EXPECT_DOUBLE_EQ(o.epochs[0].peak_rss_mb, 310.2);
  EXPECT_TRUE(std::isnan(o.epochs[1].peak_rss_mb));
  ASSERT_EQ(events.size(), 3u);  // progress + 2 epochs; the result is not an observer event
  EXPECT_EQ(events[0]["event"], "progress");
  EXPECT_NE(o.stderr_tail.find("some library chatter"), std::string::npos);
  EXPECT_NE(o.stderr_tail.find("warning on stderr"), std::string::npos);
  EXPECT_EQ(o.exit_code.value_or(-1), 0);
  EXPECT_FALSE(o.signal.has_value());
  EXPECT_GT(o.elapsed_s, 0);
  EXPECT_GT(o.child_peak_rss_mb, 0);
  EXPECT_FALSE(o.started_at.empty());
  EXPECT_FALSE(o.finished_at.empty());
}

TEST(Executor, SkippedAndFailedResultsAreKept) {
  CellOutcome s = run_sh(R"(echo '{"event":"result","status":"skipped","message":"no LSTM"}')", 10);
  EXPECT_EQ(s.status, "skipped");
  EXPECT_EQ(s.message, "no LSTM");
  CellOutcome f =
      run_sh(R"(echo '{"event":"result","status":"failed","message":"nan loss"}'; exit 1)", 10);
  EXPECT_EQ(f.status, "failed");
  EXPECT_EQ(f.message, "nan loss");
}

TEST(Executor, CrashBySignalIsRecorded) {
  CellOutcome o = run_sh("echo 'about to fault' >&2; kill -SEGV $$", 10);
  EXPECT_EQ(o.status, "crashed");
  ASSERT_TRUE(o.signal.has_value());
  EXPECT_EQ(*o.signal, SIGSEGV);
  EXPECT_EQ(o.signal_name, "SIGSEGV");
  EXPECT_EQ(o.message, "killed by signal 11 (SIGSEGV)");
  EXPECT_NE(o.stderr_tail.find("about to fault"), std::string::npos);
  CellOutcome a = run_sh("kill -ABRT $$", 10);
  EXPECT_EQ(a.status, "crashed");
  EXPECT_EQ(a.signal_name, "SIGABRT");
}

TEST(Executor, TimeoutKillsTheWholeGroup) {
  std::string dir = test::scratch_dir("timeout");
  // The grandchild would touch the file after 2 s if the group survived the kill.
  CellOutcome o = run_sh("(sleep 2; touch " + dir + "/survivor) & sleep 30", 1.0);
  EXPECT_EQ(o.status, "timeout");
  EXPECT_GE(o.elapsed_s, 1.0);
  EXPECT_LT(o.elapsed_s, 5.0);
  EXPECT_NE(o.message.find("timed out after"), std::string::npos) << o.message;
  ::sleep(2);
  EXPECT_FALSE(std::filesystem::exists(dir + "/survivor"));
}

TEST(Executor, ExitWithoutResultIsAFailure) {
  CellOutcome o = run_sh("echo 'cannot open dataset' >&2; exit 3", 10);
  EXPECT_EQ(o.status, "failed");
  EXPECT_EQ(o.exit_code.value_or(-1), 3);
  EXPECT_EQ(o.message, "exited with code 3 without a result");
  EXPECT_NE(o.stderr_tail.find("cannot open dataset"), std::string::npos);
}

TEST(Executor, OkWithNonZeroExitIsAFailure) {
  CellOutcome o = run_sh(R"(echo '{"event":"result","status":"ok"}'; exit 2)", 10);
  EXPECT_EQ(o.status, "failed");
  EXPECT_EQ(o.exit_code.value_or(-1), 2);
}

TEST(Executor, BackgroundProcessHoldingThePipeDoesNotHang) {
  CellOutcome o = run_sh(R"(sleep 30 & echo '{"event":"result","status":"ok"}')", 20);
  EXPECT_EQ(o.status, "ok");
  EXPECT_LT(o.elapsed_s, 5.0);
}

TEST(Executor, MissingProgramIsAFailureNotAThrow) {
  CellOutcome o = cell_execute("c", {"/nonexistent/crossdl"}, 5, {});
  EXPECT_EQ(o.status, "failed");
  EXPECT_EQ(o.exit_code.value_or(-1), 127);
  EXPECT_NE(o.stderr_tail.find("cannot execute /nonexistent/crossdl"), std::string::npos);
}

TEST(Executor, StderrTailIsBoundedAndLogKeepsEverything) {
  std::string dir = test::scratch_dir("tail");
  CellOutcome o = cell_execute(
      "c", {"/bin/sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i >&2; i=$((i+1)); done"},
      10, {}, dir + "/output.log");
  EXPECT_LE(o.stderr_tail.size(), 4096u);
  EXPECT_NE(o.stderr_tail.find("line 1999"), std::string::npos);
  auto log = test::read_bytes(dir + "/output.log");
  std::string text(reinterpret_cast<const char*>(log.data()), log.size());
  EXPECT_NE(text.find("line 0\n"), std::string::npos);
  EXPECT_NE(text.find("line 1999\n"), std::string::npos);
}
