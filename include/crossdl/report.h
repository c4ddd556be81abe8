// Reports read DIR/study.sqlite only, never the runners: report.md, results.csv, results.json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace crossdl {

// A table as the reporters see it: header cells carry their units ("time (s)").
struct ReportTable {
  std::string title;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> key_columns;  // never hidden, even when constant
};

// One printer per format, llama-bench style. Markdown hides columns whose value is the same on
// every row and states that value above the table; csv and json keep every column.
class ReportPrinter {
 public:
  virtual ~ReportPrinter() = default;
  virtual std::string table(const ReportTable& t) const = 0;
};
std::unique_ptr<ReportPrinter> make_report_printer(const std::string& format);  // markdown|csv|json

// Writes DIR/report.md, DIR/results.csv and DIR/results.json; InputError naming the store file
// when it is missing. Each stage kind's section comes from its registry entry (crossdl/stage.h).
void report_write(const std::string& dir);

// The built-in stages' sections, for their registry entries.
struct StageReportInput;
std::string report_training_section(const StageReportInput& in);
std::string report_migration_section(const StageReportInput& in);
std::string report_quantization_section(const StageReportInput& in);

// Mean and the half-width of its two-sided 95% Student t confidence interval (NaN when n < 2).
struct MeanCi {
  std::size_t n = 0;
  double mean = 0, half_width = 0;
};
MeanCi mean_ci95(const std::vector<double>& values);
// The 0.975 quantile of Student's t with df degrees of freedom (df >= 1).
double student_t975(int df);

// How two models' test predictions relate. McNemar's test asks whether the two are equally often
// right where they differ in correctness: only the discordant examples count (only_a_correct vs
// only_b_correct), with the exact two-sided binomial p-value (p = 1 when there are none).
struct PairAgreement {
  std::int64_t n = 0;               // examples compared
  std::int64_t disagree = 0;        // top-1 predictions differ
  std::int64_t only_a_correct = 0;  // a right, b wrong
  std::int64_t only_b_correct = 0;  // b right, a wrong
  double disagreement = 0;          // disagree / n
  double mcnemar_p = 1;
};
// Throws std::invalid_argument when the three do not have the same length.
PairAgreement compare_predictions(const std::vector<std::int64_t>& a,
                                  const std::vector<std::int64_t>& b,
                                  const std::vector<std::int64_t>& labels);
// Two-sided exact McNemar p-value from the discordant counts.
double mcnemar_exact_p(std::int64_t only_a_correct, std::int64_t only_b_correct);

}  // namespace crossdl
