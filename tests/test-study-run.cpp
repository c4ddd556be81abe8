// study_run end to end with /bin/sh cells: recording, refusing to overwrite, resuming after the
// runner was SIGKILLed, and SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "crossdl/store.h"
#include "crossdl/study.h"
#include "support.h"

using namespace crossdl;

namespace {

Study six_cells() {
  return study_parse(
      "name: six\ntimeout_s: 30\ndefaults: {epochs: 1}\nstages:\n  - stage: train\n"
      "    axes: {model: [m1, m2], dataset: [d], framework: [f], seed: [1, 2, 3]}\n",
      "six.yaml");
}

// Each cell sleeps, then appends its id to LOG, then reports ok with one epoch.
StudyRunOptions sh_options(const std::string& out, const std::string& log, double sleep_s) {
  StudyRunOptions o;
  o.out_dir = out;
  o.json = true;  // keep the test output quiet (stderr is not a TTY under ctest)
  o.command = [log, sleep_s](const CellSpec& spec, const std::string& spec_file,
                             const std::string& cell_dir) {
    std::string script = "sleep " + std::to_string(sleep_s) + "; echo " + spec.id + " >> " + log +
                         "; echo '{\"event\":\"epoch\",\"epoch\":1,\"train_loss\":0.5,"
                         "\"test_accuracy\":0.8,\"seconds\":0.3}'; echo "
                         "'{\"event\":\"result\",\"status\":\"ok\",\"metrics\":{\"test_accuracy\":"
                         "0.8}}'; test -f " +
                         spec_file + " && test -d " + cell_dir;
    return std::vector<std::string>{"/bin/sh", "-c", script};
  };
  return o;
}

std::map<std::string, int> count_lines(const std::string& path) {
  std::map<std::string, int> n;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) ++n[line];
  return n;
}

}  // namespace

TEST(StudyRun, RecordsEveryCellAndWritesTheReport) {
  std::string dir = test::scratch_dir("run");
  nlohmann::json summary;
  int rc = study_run(six_cells(), sh_options(dir + "/out", dir + "/log", 0), &summary);
  EXPECT_EQ(rc, 0) << summary.dump(2);
  EXPECT_EQ(summary["cells"], 6);
  EXPECT_EQ(summary["ran"], 6);
  EXPECT_EQ(summary["by_status"]["ok"], 6);
  Store store(dir + "/out", false);
  auto cells = store.cells();
  ASSERT_EQ(cells.size(), 6u);
  for (const auto& c : cells) {
    EXPECT_EQ(c.status, "ok");
    EXPECT_EQ(c.epochs.size(), 1u);
    EXPECT_TRUE(c.provenance.contains("crossdl_version"));  // filled in by the parent
    EXPECT_TRUE(std::filesystem::exists(dir + "/out/cells/" + c.id + "/spec.json"));
  }
  EXPECT_EQ(store.epochs().size(), 6u);
  EXPECT_TRUE(std::filesystem::exists(dir + "/out/report.md"));
  EXPECT_EQ(store.meta("name").value_or(""), "six");
  EXPECT_EQ(store.meta("source").value_or(""), "six.yaml");

  // Never overwrite what the user has.
  try {
    study_run(six_cells(), sh_options(dir + "/out", dir + "/log", 0), nullptr);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              dir +
                  "/out already holds a study (6 of 6 cells done); pass --resume to continue "
                  "it or choose another --out");
  }
  // Resuming a finished study runs nothing.
  auto opt = sh_options(dir + "/out", dir + "/log", 0);
  opt.resume = true;
  EXPECT_EQ(study_run(six_cells(), opt, &summary), 0);
  EXPECT_EQ(summary["ran"], 0);
  EXPECT_EQ(summary["skipped_done"], 6);
  for (const auto& [id, n] : count_lines(dir + "/log")) EXPECT_EQ(n, 1) << id;
}

TEST(StudyRun, FindingsMakeTheExitCodeOneAndCanBeRerun) {
  std::string dir = test::scratch_dir("findings");
  StudyRunOptions o;
  o.out_dir = dir;
  o.json = true;
  o.command = [](const CellSpec& spec, const std::string&, const std::string&) {
    std::string s = spec.value("seed") == 2 ? "kill -SEGV $$"
                                            : "echo '{\"event\":\"result\",\"status\":\"ok\"}'";
    return std::vector<std::string>{"/bin/sh", "-c", s};
  };
  nlohmann::json summary;
  EXPECT_EQ(study_run(six_cells(), o, &summary), 1);
  EXPECT_EQ(summary["by_status"]["crashed"], 2);
  ASSERT_EQ(summary["findings"].size(), 2u);
  std::string id = summary["findings"][0]["id"];
  EXPECT_EQ(summary["findings"][0]["reproduce"], "crossdl study cell " + dir + " --id " + id);

  auto spec = store_find_cell(dir, id);
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->value("seed"), 2);
  EXPECT_FALSE(store_find_cell(dir, "0000000000000000").has_value());

  // `study cell` with a fixed cell replaces the row.
  o.command = [](const CellSpec&, const std::string&, const std::string&) {
    return std::vector<std::string>{"/bin/sh", "-c",
                                    "echo '{\"event\":\"result\",\"status\":\"ok\"}'"};
  };
  EXPECT_EQ(study_run_cell(id, o, &summary), 0);
  EXPECT_EQ(Store(dir, false).find_cell(id)->status, "ok");
  EXPECT_THROW(study_run_cell("nope", o, nullptr), InputError);
}

TEST(StudyRun, ResumesAfterTheRunnerIsKilled) {
  std::string dir = test::scratch_dir("resume");
  const std::string out = dir + "/out", log = dir + "/log";
  pid_t runner = fork();
  ASSERT_GE(runner, 0);
  if (runner == 0) {
    int rc = 99;
    try {
      rc = study_run(six_cells(), sh_options(out, log, 0.3), nullptr);
    } catch (...) {
    }
    _exit(rc);
  }
  // Kill the runner once a few cells are stored, midway through the next.
  for (int i = 0; i < 200; ++i) {
    ::usleep(20 * 1000);
    if (Store::exists_in(out)) {
      try {
        if (Store(out, false).done_ids().size() >= 2) break;
      } catch (const std::exception&) {
      }
    }
  }
  ::usleep(150 * 1000);
  kill(runner, SIGKILL);
  int status = 0;
  waitpid(runner, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));

  std::set<std::string> done_before = Store(out, false).done_ids();
  ASSERT_GE(done_before.size(), 2u);
  ASSERT_LT(done_before.size(), 6u) << "the runner finished before it was killed";

  auto opt = sh_options(out, log, 0.3);
  opt.resume = true;
  nlohmann::json summary;
  ASSERT_EQ(study_run(six_cells(), opt, &summary), 0) << summary.dump(2);
  EXPECT_EQ(summary["skipped_done"], done_before.size());
  ::usleep(500 * 1000);  // the orphaned cell of the killed runner may still be finishing

  Store store(out, false);
  auto cells = store.cells();
  ASSERT_EQ(cells.size(), 6u);
  auto n = count_lines(log);
  for (const auto& c : cells) {
    EXPECT_EQ(c.status, "ok");
    EXPECT_EQ(c.epochs.size(), 1u);
    // A finished cell is never run again; the one running at kill time may have run twice.
    if (done_before.count(c.id))
      EXPECT_EQ(n[c.id], 1) << c.id;
    else
      EXPECT_GE(n[c.id], 1) << c.id;
  }
  int total = 0;
  for (const auto& [id, k] : n) total += k;
  EXPECT_LE(total, 7);
}

TEST(StudyRun, SigtermKillsTheCellAndExits143) {
  std::string dir = test::scratch_dir("sigterm");
  const std::string out = dir + "/out", log = dir + "/log";
  pid_t runner = fork();
  ASSERT_GE(runner, 0);
  if (runner == 0) {
    int rc = 99;
    try {
      rc = study_run(six_cells(), sh_options(out, log, 0.3), nullptr);
    } catch (...) {
    }
    _exit(rc);
  }
  for (int i = 0; i < 200; ++i) {
    ::usleep(20 * 1000);
    if (Store::exists_in(out)) {
      try {
        if (!Store(out, false).done_ids().empty()) break;
      } catch (const std::exception&) {
      }
    }
  }
  kill(runner, SIGTERM);
  int status = 0;
  waitpid(runner, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 143);
  Store store(out, false);
  auto done = store.done_ids();
  EXPECT_GE(done.size(), 1u);
  EXPECT_LT(done.size(), 6u);
  for (const auto& c : store.cells()) EXPECT_EQ(c.status, "ok");  // the killed cell is not stored
}

// Stage kinds that depend on one another: the planner resolves the inputs, a cell whose input
// did not end ok is a skip naming it (no process started), a missing input is a planning error,
// and re-running an input invalidates what used it.
TEST(StudyRun, DependenciesAreResolvedSkippedAndInvalidated) {
  register_stage("dep-make", {"model"});
  StageKind use;
  use.name = "dep-use";
  use.required_axes = {"model"};
  use.depends_on = [](const CellSpec& c, const std::vector<CellSpec>& plan) {
    return std::vector<std::pair<std::string, std::string>>{
        {"model", find_source_cell(c, plan, "dep-make", {})}};
  };
  register_stage(use);
  const std::string yaml =
      "name: deps\ntimeout_s: 30\nstages:\n"
      "  - stage: dep-make\n    axes: {model: [good, bad]}\n"
      "  - stage: dep-use\n    axes: {model: [good, bad], variant: [x, y]}\n";
  const Study s = study_parse(yaml, "deps.yaml");
  const std::vector<CellSpec> plan = study_plan(s);
  ASSERT_EQ(plan.size(), 6u);
  EXPECT_TRUE(plan[0].inputs.empty());
  ASSERT_EQ(plan[2].inputs.size(), 1u);
  EXPECT_EQ(plan[2].inputs[0].first, "model");
  EXPECT_EQ(plan[2].inputs[0].second, plan[0].id);  // use good x -> make good
  EXPECT_EQ(plan[4].inputs[0].second, plan[1].id);  // use bad x -> make bad

  const std::string dir = test::scratch_dir("deps");
  const std::string log = dir + "/log";
  StudyRunOptions o;
  o.out_dir = dir + "/out";
  o.json = true;
  // "make bad" fails; every other cell appends its label to the log and succeeds.
  o.command = [log](const CellSpec& spec, const std::string&, const std::string&) {
    const bool bad = spec.stage == "dep-make" && spec.value("model") == "bad";
    const std::string status = bad ? "failed" : "ok";
    return std::vector<std::string>{"/bin/sh", "-c",
                                    "echo '" + spec.label() + "' >> " + log +
                                        "; echo '{\"event\":\"result\",\"status\":\"" + status +
                                        "\",\"metrics\":{}}'"};
  };
  nlohmann::json summary;
  EXPECT_EQ(study_run(s, o, &summary), 1) << summary.dump(2);  // one failure
  EXPECT_EQ(summary["by_status"]["ok"], 3);
  EXPECT_EQ(summary["by_status"]["skipped"], 2);
  const auto ran = count_lines(log);
  EXPECT_EQ(ran.size(), 4u);  // the two dependants of "make bad" never started
  EXPECT_EQ(ran.count("dep-use bad x"), 0u);
  Store store(o.out_dir, false);
  const auto skipped = store.find_cell(plan[4].id);  // use bad x
  ASSERT_TRUE(skipped.has_value());
  EXPECT_EQ(skipped->status, "skipped");
  EXPECT_NE(skipped->message.find("its model cell " + plan[1].id +
                                  " (dep-make bad) ended "
                                  "'failed'"),
            std::string::npos)
      << skipped->message;
  ASSERT_EQ(store.find_cell(plan[2].id)->inputs.size(), 1u);

  // Re-running "make bad" invalidates its two dependants: they leave the store, and a resume
  // runs them with the new result.
  StudyRunOptions again = o;
  again.resume = true;
  nlohmann::json cell_summary;
  study_run_cell(plan[1].id, again, &cell_summary);
  EXPECT_EQ(cell_summary["invalidated"].size(), 2u) << cell_summary.dump(2);
  EXPECT_FALSE(Store(o.out_dir, false).find_cell(plan[4].id).has_value());
  EXPECT_TRUE(Store(o.out_dir, false).find_cell(plan[2].id).has_value());  // "good" kept

  // An input the study does not plan is a planning error naming the cell.
  const Study missing = study_parse(
      "name: m\nstages:\n  - stage: dep-make\n    axes: {model: [good]}\n"
      "  - stage: dep-use\n    axes: {model: [other]}\n",
      "m.yaml");
  const std::string err = test::error_of([&] { study_plan(missing); });
  EXPECT_NE(err.find("m.yaml:5:5: cell 'dep-use other' needs a dep-make cell"), std::string::npos)
      << err;
}
