// The report's migration section, read from the migrate cells' stored metrics.
#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "report_internal.h"

namespace crossdl::report_detail {
namespace {

using nlohmann::json;

std::string axis(const CellRecord& c, const char* key) {
  if (c.axes.contains(key) && c.axes[key].is_string()) return c.axes[key].get<std::string>();
  auto it = c.params.find(key);
  return it != c.params.end() && it->is_string() ? it->get<std::string>() : std::string();
}

double num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
}

bool diverged(const CellRecord& c) {
  return c.status == "ok" && c.metrics.contains("within_tolerance") &&
         !c.metrics["within_tolerance"].get<bool>();
}

// One matrix cell: what happened, in a few characters.
std::string matrix_text(const CellRecord& c) {
  if (c.status == "skipped") return "skip";
  if (c.status != "ok") return c.status;
  const json& m = c.metrics;
  std::string t = fmt(num(m, "accuracy_delta") * 100, "%+.1f") + " pp, " +
                  fmt(num(m, "disagreement_rate") * 100, "%.1f") + "%";
  if (diverged(c)) t += " ✗";
  return t;
}

std::string first_layer(const CellRecord& c) {
  const json f = c.metrics.value("first_divergent_layer", json());
  if (f.is_string()) return f.get<std::string>();
  if (c.metrics.contains("layer_diffs")) return "none (logits only)";
  return "";
}

}  // namespace

std::string migration_section(const std::vector<CellRecord>& migrate, const std::string& dir,
                              const ReportPrinter& md) {
  if (migrate.empty()) return "";
  std::string r = "## Migration: the same weights in other runtimes\n\n";
  r += "Each model trained above (seed 1) is written in a runtime's own format by crossdl's "
       "exporters and run there; the reference is the training framework's own test logits on "
       "the same examples. A cell reads *accuracy change in percentage points, top-1 "
       "disagreement with the training framework*; ✗ marks logits beyond tolerance "
       "(|Δ| > atol + rtol·|ref|); `skip` is a model the runtime or the training framework "
       "cannot express (reasons below).\n\n";

  // The matrix: rows are (model, dataset, trained in), columns the runtimes in plan order.
  std::vector<std::string> runtimes;
  std::vector<std::string> row_keys;
  std::map<std::string, std::map<std::string, const CellRecord*>> grid;
  for (const auto& c : migrate) {
    const std::string rt = axis(c, "runtime");
    if (std::find(runtimes.begin(), runtimes.end(), rt) == runtimes.end()) runtimes.push_back(rt);
    const std::string key = axis(c, "model") + "\t" + axis(c, "dataset") + "\t" + axis(c, "framework");
    if (!grid.count(key)) row_keys.push_back(key);
    grid[key][rt] = &c;
  }
  ReportTable mt;
  mt.columns = {"model", "dataset", "trained in"};
  for (const auto& rt : runtimes) mt.columns.push_back(rt);
  mt.key_columns = mt.columns;
  for (const auto& key : row_keys) {
    std::vector<std::string> row;
    std::size_t a = 0;
    for (int i = 0; i < 3; ++i) {
      const std::size_t b = key.find('\t', a);
      row.push_back(key.substr(a, b == std::string::npos ? std::string::npos : b - a));
      a = b + 1;
    }
    for (const auto& rt : runtimes) {
      auto it = grid[key].find(rt);
      row.push_back(it == grid[key].end() ? "" : matrix_text(*it->second));
    }
    mt.rows.push_back(row);
  }
  r += md.table(mt);

  ReportTable dt;
  dt.title = "Per runtime";
  dt.columns = {"model",   "trained in", "runtime",  "status",  "test n",  "accuracy",
                "Δacc",    "disagree",   "max |Δ|",  "mean |Δ|", "max rel", "NaN/Inf",
                "in tol",  "first diverging layer", "load (ms)", "p50 (ms)", "p95 (ms)",
                "artefact (KB)", "format", "RSS growth (MB)"};
  dt.key_columns = {"model", "trained in", "runtime", "status"};
  for (const auto& c : migrate) {
    if (c.status == "skipped") continue;
    const json& m = c.metrics;
    const json d = m.value("logits_diff", json::object());
    const json lat = m.value("latency_ms", json::object());
    const json art = m.value("artefact", json::object());
    dt.rows.push_back(
        {axis(c, "model"), axis(c, "framework"), axis(c, "runtime"), c.status,
         fmt(num(m, "test_size"), "%.0f"), fmt(num(m, "accuracy"), "%.4f"),
         fmt(num(m, "accuracy_delta"), "%+.4f"),
         m.contains("disagreement") ? std::to_string(m["disagreement"].get<long long>()) : "",
         fmt(num(d, "max_abs"), "%.2g"), fmt(num(d, "mean_abs"), "%.2g"),
         fmt(num(d, "max_rel"), "%.2g"),
         d.empty() ? "" : std::to_string(d.value("nan", 0LL)) + "/" + std::to_string(d.value("inf", 0LL)),
         d.empty() ? "" : (d.value("within", false) ? "yes" : "no"), first_layer(c),
         fmt(num(m, "load_ms"), "%.0f"), fmt(num(lat, "p50"), "%.3f"), fmt(num(lat, "p95"), "%.3f"),
         fmt(num(art, "bytes") / 1024.0, "%.1f"), art.value("format", ""),
         fmt(num(m, "rss_growth_mb"), "%.1f")});
  }
  if (!dt.rows.empty()) {
    r += "Latency is one example per call (p50/p95 over the timed runs, after 3 untimed ones), "
         "with the thread count stated in the provenance; RSS growth is how much the cell's resident "
         "set grew over export, load and the accuracy pass (the runtime's own memory; the process's "
         "peak, libraries and dataset included, is in results.json); test n is the number of test "
         "examples run.\n\n";
    r += md.table(dt);
  }

  std::string findings;
  for (const auto& c : migrate) {
    if (!diverged(c)) continue;
    const json& m = c.metrics;
    const json d = m.value("logits_diff", json::object());
    findings += "### Divergence: " + axis(c, "model") + " trained in " + axis(c, "framework") +
                ", run in " + axis(c, "runtime") + " (`" + c.id + "`)\n\n";
    findings += "- logits: max |Δ| " + fmt(num(d, "max_abs"), "%.3g") + ", mean |Δ| " +
                fmt(num(d, "mean_abs"), "%.3g") + ", " + std::to_string(d.value("outside", 0LL)) +
                " of " + std::to_string(d.value("count", 0LL)) + " values beyond tolerance; " +
                std::to_string(m.value("disagreement", 0LL)) + " of " +
                fmt(num(m, "test_size"), "%.0f") + " top-1 predictions differ\n";
    if (m.contains("layer_diffs")) {
      std::string grow;
      for (const auto& l : m["layer_diffs"])
        grow += (grow.empty() ? "" : " → ") + l.value("layer", "") + " " +
                fmt(num(l, "max_abs"), "%.1e");
      findings += "- first layer beyond tolerance: " + first_layer(c) + "\n";
      findings += "- max |Δ| layer by layer: " + grow + "\n";
    } else if (m.contains("layers_message")) {
      findings += "- " + m["layers_message"].get<std::string>() + "\n";
    }
    if (m.contains("artefact") && m["artefact"].contains("conversions"))
      findings += "- exporter conversions: " + m["artefact"].value("conversions", "") + "\n";
    findings += "- reproduce: `crossdl study cell " + dir + " --id " + c.id + "`\n\n";
  }
  r += findings.empty() ? "Every runtime that ran agrees with the training framework within "
                          "tolerance.\n\n"
                        : "### Outputs beyond tolerance\n\n" + findings;
  return r;
}

}  // namespace crossdl::report_detail
