// Reports from a store with synthetic rows.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "crossdl/report.h"
#include "crossdl/status.h"
#include "crossdl/store.h"
#include "support.h"

using namespace crossdl;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void add_train_cell(Store& store, int seq, const std::string& model, int seed, double acc,
                    const std::string& status = "ok") {
  CellSpec spec;
  spec.stage = "train";
  spec.axes = {
      {"model", model}, {"dataset", "fashion-mnist"}, {"framework", "torch"}, {"seed", seed}};
  spec.params = {{"epochs", 1}, {"threads", 1}};
  spec.id = cell_id(spec.stage, spec.axes, spec.params);
  spec.seq = seq;
  CellOutcome o;
  o.status = status;
  o.elapsed_s = 10 + seq;
  o.child_peak_rss_mb = 300;
  if (status == "ok") {
    o.metrics = {{"framework", "torch"},
                 {"model", model},
                 {"dataset", "fashion-mnist"},
                 {"seed", seed},
                 {"epochs", 1},
                 {"train_size", 60000},
                 {"test_size", 10000},
                 {"test_accuracy", acc},
                 {"train_loss", 0.5},
                 {"seconds", 9.0},
                 {"peak_rss_mb", 310.5},
                 {"threads", 1},
                 {"weights_sha256", "0123456789abcdef0123"}};
    o.epochs = {{"", 1, 0.5, acc, 9.0, 310.5, 6000}};
  } else {
    o.signal = 11;
    o.signal_name = "SIGSEGV";
    o.message = "killed by signal 11 (SIGSEGV)";
    o.stderr_tail = "Segmentation fault in conv2d\n";
  }
  o.provenance = {
      {"crossdl_version", "0.1.0"}, {"cpu", "Test CPU"}, {"libraries", {{"sqlite", "3.40.1"}}}};
  store.write_cell(cell_record(spec, o));
}

}  // namespace

TEST(Report, StudentTQuantilesMatchTheTable) {
  // Standard two-sided 95% t table.
  EXPECT_NEAR(student_t975(1), 12.706, 1e-3);
  EXPECT_NEAR(student_t975(2), 4.303, 1e-3);
  EXPECT_NEAR(student_t975(4), 2.776, 1e-3);
  EXPECT_NEAR(student_t975(10), 2.228, 1e-3);
  EXPECT_NEAR(student_t975(30), 2.042, 1e-3);
  EXPECT_NEAR(student_t975(1000), 1.962, 1e-3);
}

TEST(Report, MeanCiOfAKnownSample) {
  MeanCi ci = mean_ci95({0.80, 0.82, 0.84});
  EXPECT_EQ(ci.n, 3u);
  EXPECT_NEAR(ci.mean, 0.82, 1e-12);
  EXPECT_NEAR(ci.half_width, 4.302653 * 0.02 / std::sqrt(3.0), 1e-6);
  EXPECT_NEAR(ci.half_width, 0.0497, 1e-4);
  EXPECT_TRUE(std::isnan(mean_ci95({0.9}).half_width));
}

TEST(Report, WritesMarkdownCsvAndJson) {
  std::string dir = test::scratch_dir("report");
  {
    Store store(dir, true);
    store.set_meta("name", "synthetic");
    store.set_meta("source", "preset:quick");
    add_train_cell(store, 0, "lenet1", 1, 0.80);
    add_train_cell(store, 1, "lenet1", 2, 0.82);
    add_train_cell(store, 2, "lenet1", 3, 0.84);
    add_train_cell(store, 3, "lenet5", 1, 0.88);
    add_train_cell(store, 4, "lenet5", 2, 0, "crashed");
  }
  report_write(dir);
  std::string md = slurp(dir + "/report.md");
  EXPECT_NE(md.find("# crossdl study report: synthetic"), std::string::npos);
  EXPECT_NE(md.find("## Provenance"), std::string::npos);
  EXPECT_NE(md.find("- cpu: Test CPU\n"), std::string::npos);  // shown once for 5 cells
  EXPECT_NE(md.find("- libraries.sqlite: 3.40.1\n"), std::string::npos);
  EXPECT_NE(md.find("5 of 5 planned cells finished"), std::string::npos);
  EXPECT_NE(md.find("### Training"), std::string::npos);
  EXPECT_NE(md.find("| model | dataset"), std::string::npos) << md;
  EXPECT_NE(md.find("wall time (s)"), std::string::npos);
  EXPECT_NE(md.find("peak RSS (MB)"), std::string::npos);
  EXPECT_NE(md.find("0123456789ab |"), std::string::npos);  // SHA-256 cut to 12 hex
  // framework is constant but a key column: kept. threads is constant: stated above.
  EXPECT_NE(md.find("threads: 1"), std::string::npos);
  EXPECT_NE(md.find("| torch |"), std::string::npos);
  EXPECT_NE(md.find("### Across seeds"), std::string::npos);
  EXPECT_NE(md.find("| lenet1 | fashion-mnist | torch | 3 | 0.8200 | 0.0497 | [0.7703, 0.8697] |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| lenet5 | fashion-mnist | torch | 1 | 0.8800 | n/a | n/a |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("### Per epoch"), std::string::npos);
  EXPECT_NE(md.find("## Findings"), std::string::npos);
  EXPECT_NE(md.find("### crashed: train lenet5 fashion-mnist torch seed=2"), std::string::npos);
  EXPECT_NE(md.find("signal 11 (SIGSEGV)"), std::string::npos);
  EXPECT_NE(md.find("Segmentation fault in conv2d"), std::string::npos);
  Store store(dir, false);
  std::string crashed_id = store.cells()[4].id;
  EXPECT_NE(md.find("`crossdl study cell " + dir + " --id " + crashed_id + "`"), std::string::npos);

  std::string csv = slurp(dir + "/results.csv");
  std::size_t lines = 0;
  for (char c : csv) lines += c == '\n';
  EXPECT_EQ(lines, 1u + 5u);
  EXPECT_EQ(csv.rfind("id,seq,stage,model,dataset,framework,seed,param.epochs,param.threads,", 0),
            0u)
      << csv.substr(0, 200);

  auto j = nlohmann::json::parse(slurp(dir + "/results.json"));
  EXPECT_EQ(j["cells"].size(), 5u);
  EXPECT_EQ(j["epochs"].size(), 4u);
  EXPECT_EQ(j["provenance"].size(), 1u);
  EXPECT_EQ(j["study"]["name"], "synthetic");
  EXPECT_EQ(j["cells"][4]["status"], "crashed");
  EXPECT_EQ(j["cells"][4]["signal"], 11);
}

TEST(Report, MissingStoreNamesTheFile) {
  std::string dir = test::scratch_dir("nostore");
  try {
    report_write(dir);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/study.sqlite"), std::string::npos);
  }
}

TEST(Report, PrintersShareOneTable) {
  ReportTable t;
  t.title = "T";
  t.columns = {"name", "value (s)", "same"};
  t.key_columns = {"name"};
  t.rows = {{"a", "1.0", "x"}, {"b, c", "2.0", "x"}};
  std::string md = make_report_printer("markdown")->table(t);
  EXPECT_NE(md.find("Same on every row — same: x."), std::string::npos) << md;
  EXPECT_NE(md.find("| name | value (s) |"), std::string::npos) << md;
  std::string csv = make_report_printer("csv")->table(t);
  EXPECT_EQ(csv, "name,value (s),same\na,1.0,x\n\"b, c\",2.0,x\n");
  auto j = nlohmann::json::parse(make_report_printer("json")->table(t));
  EXPECT_EQ(j["rows"][1]["name"], "b, c");
  EXPECT_THROW(make_report_printer("html"), InputError);
}

namespace {

// A train cell of `framework` whose test predictions are `preds` (labels 0,1,0,1,...).
void add_framework_cell(Store& store, int seq, const std::string& framework, int seed,
                        const std::vector<std::int64_t>& preds) {
  CellSpec spec;
  spec.stage = "train";
  spec.axes = {
      {"model", "lenet5"}, {"dataset", "fashion-mnist"}, {"framework", framework}, {"seed", seed}};
  spec.params = {{"epochs", 1}, {"threads", 1}};
  spec.id = cell_id(spec.stage, spec.axes, spec.params);
  spec.seq = seq;
  std::vector<std::int64_t> labels(preds.size());
  std::int64_t right = 0;
  for (std::size_t i = 0; i < preds.size(); ++i) {
    labels[i] = static_cast<std::int64_t>(i % 2);
    right += preds[i] == labels[i];
  }
  CellOutcome o;
  o.status = "ok";
  o.metrics = {{"framework", framework},
               {"train_size", 100},
               {"test_accuracy", double(right) / double(preds.size())},
               {"weights_sha256", framework + std::to_string(seed)}};
  o.outputs = {{"test_predictions", preds}, {"test_labels", labels}};
  store.write_cell(cell_record(spec, o));
}

}  // namespace

// Cells that differ only in their framework are paired from the stored per-example outputs.
TEST(Report, CrossFrameworkAgreementFromStoredPredictions) {
  const std::string dir = test::scratch_dir("agreement");
  {
    Store store(dir, true);
    store.set_meta("name", "agreement");
    // 20 examples; torch is right on all, dlib wrong on the first 10 (10 discordant pairs).
    std::vector<std::int64_t> right(20), half(20);
    for (int i = 0; i < 20; ++i) {
      right[i] = i % 2;
      half[i] = i < 10 ? 1 - i % 2 : i % 2;
    }
    for (int seed : {1, 2}) {
      add_framework_cell(store, 2 * seed, "torch", seed, right);
      add_framework_cell(store, 2 * seed + 1, "dlib", seed, half);
    }
  }
  report_write(dir);
  const std::string md = slurp(dir + "/report.md");
  ASSERT_NE(md.find("### Cross-framework agreement"), std::string::npos) << md;
  // disagreement 50.00 %, only torch right on 10, McNemar p = 2 / 2^10 (constant columns are
  // stated above the table, the rest per row).
  EXPECT_NE(md.find("only A right: 10; only B right: 0"), std::string::npos) << md;
  EXPECT_NE(md.find("| 50.00 | 0.00195 | torch better (p < 0.05) |"), std::string::npos) << md;
  // Over the two seeds the paired difference is exactly 0.5 both times: a zero-width interval.
  EXPECT_NE(md.find("[+0.5000, +0.5000]"), std::string::npos) << md;
  EXPECT_NE(md.find("torch more accurate (95% CI excludes 0)"), std::string::npos) << md;
}
