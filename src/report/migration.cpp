// The report's migration section, read from the migrate cells' stored metrics.
#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "report_internal.h"

namespace crossdl::report_detail {
namespace {

using nlohmann::json;

// A web runtime is named <runtime>:<backend>@<platform> (docs/web-protocol.md); it gets its own
// table, with the browser's figures, instead of a column each in the matrix.
bool is_web(const std::string& runtime) {
  return runtime.find('@') != std::string::npos;
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

// A figure the runtime reported about itself (Runner::facts, stored under "facts").
double fact(const json& m, const char* key) {
  return m.contains("facts") ? num(m["facts"], key) : std::nan("");
}
std::string fact_text(const json& m, const char* key) {
  if (!m.contains("facts") || !m["facts"].contains(key) || !m["facts"][key].is_string()) return "";
  return m["facts"][key].get<std::string>();
}

// The web platforms: every <runtime>:<backend>@<platform> cell, skips included (a combination
// that does not exist here is a result too), with what the backend really ran on and the
// browser's own memory figures.
std::string web_section(const std::vector<CellRecord>& web, const ReportPrinter& md) {
  if (web.empty()) return "";
  std::string r = "## Web platforms: the same weights in browsers and Node\n\n";
  r += "Each model is run by a JavaScript runtime in real headless Chromium and Firefox ESR (pages "
       "served from 127.0.0.1 with cross-origin isolation) or in Node, named "
       "`runtime:backend@platform`. *device* is what the backend actually ran on (a WebGL or "
       "WebGPU backend on a software rasteriser says so). *launch* is starting the browser (or "
       "Node's libraries) and the page; load, first-inference and latency times are measured in "
       "the page with `performance.now()` (first: the first batch-1 inference after loading, "
       "shader compilation included); PSS is the browser's whole process "
       "tree (or Node's process) after the runs, peak PSS the largest the helper sampled every "
       "100 ms, JS heap what the browser reports (empty where it reports none).\n\n";
  ReportTable t;
  t.columns = {"model",      "trained in", "runtime",  "status",   "device",        "test n",
               "Δacc",       "disagree",   "max |Δ|",  "in tol",   "launch (ms)",   "load (ms)",
               "first (ms)", "p50 (ms)",   "p95 (ms)", "PSS (MB)", "peak PSS (MB)", "JS heap (MB)"};
  t.key_columns = {"model", "trained in", "runtime", "status"};
  // Why a combination did not run, once per runtime and reason (the reason rarely depends on the
  // model), with the models it concerns.
  std::vector<std::pair<std::string, std::string>> not_run;  // (runtime + reason, models)
  for (const auto& c : web) {
    const json& m = c.metrics;
    const json d = m.value("logits_diff", json::object());
    const json lat = m.value("latency_ms", json::object());
    t.rows.push_back(
        {axis(c, "model"), axis(c, "framework"), axis(c, "runtime"), c.status,
         fact_text(m, "device"), fmt(num(m, "test_size"), "%.0f"),
         fmt(num(m, "accuracy_delta") * 100, "%+.2f pp"),
         m.contains("disagreement") ? std::to_string(m["disagreement"].get<long long>()) : "",
         fmt(num(d, "max_abs"), "%.2g"), d.empty() ? "" : (d.value("within", false) ? "yes" : "no"),
         fmt(fact(m, "start_ms"), "%.0f"), fmt(fact(m, "model_load_ms"), "%.0f"),
         fmt(num(m, "first_infer_ms"), "%.1f"), fmt(num(lat, "p50"), "%.3f"),
         fmt(num(lat, "p95"), "%.3f"), fmt(fact(m, "pss_mb"), "%.0f"),
         fmt(fact(m, "peak_pss_mb"), "%.0f"), fmt(fact(m, "js_heap_mb"), "%.1f")});
    if (c.status == "ok" || c.message.empty()) continue;
    const std::string key = axis(c, "runtime") + ": " + c.status + ": " + c.message;
    auto it =
        std::find_if(not_run.begin(), not_run.end(), [&](const auto& e) { return e.first == key; });
    if (it == not_run.end())
      not_run.emplace_back(key, axis(c, "model"));
    else
      it->second += ", " + axis(c, "model");
  }
  r += md.table(t);
  if (!not_run.empty()) {
    r += "Combinations that did not run here, and why:\n\n";
    for (const auto& [why, models] : not_run) r += "- " + why + " (" + models + ")\n";
    r += "\n";
  }
  return r;
}

}  // namespace

std::string migration_section(const std::vector<CellRecord>& migrate, const std::string& dir,
                              const ReportPrinter& md) {
  if (migrate.empty()) return "";
  std::vector<CellRecord> web;
  std::vector<CellRecord> native;
  for (const auto& c : migrate) (is_web(axis(c, "runtime")) ? web : native).push_back(c);
  const std::string web_part = web_section(web, md);
  if (native.empty()) return web_part;
  std::string r = "## Migration: the same weights in other runtimes\n\n";
  r += "Each model trained above (seed 1) is written in a runtime's own format by crossdl's "
       "exporters and run there; the reference is the training framework's own test logits on "
       "the same examples. A cell reads *accuracy change in percentage points, top-1 "
       "disagreement with the training framework*; ✗ marks logits beyond tolerance "
       "(|Δ| > atol + rtol·|ref|); `skip` is a model the runtime or the training framework "
       "cannot express (reasons below).\n\n";

  // The matrix: rows are (model, dataset, trained in), columns the runtimes in plan order.
  const ReportTable mt =
      cell_matrix(native, {by_axis("model"), by_axis("dataset"), by_axis("framework")},
                  {"model", "dataset", "trained in"}, "runtime", matrix_text);
  r += md.table(mt);

  ReportTable dt;
  dt.title = "Per runtime";
  dt.columns = {"model",     "trained in",
                "runtime",   "status",
                "test n",    "accuracy",
                "Δacc",      "disagree",
                "max |Δ|",   "mean |Δ|",
                "max rel",   "NaN/Inf",
                "in tol",    "first diverging layer",
                "load (ms)", "p50 (ms)",
                "p95 (ms)",  "artefact (KB)",
                "format",    "RSS growth (MB)"};
  dt.key_columns = {"model", "trained in", "runtime", "status"};
  for (const auto& c : native) {
    if (c.status == "skipped") continue;
    const json& m = c.metrics;
    const json d = m.value("logits_diff", json::object());
    const json lat = m.value("latency_ms", json::object());
    const json art = m.value("artefact", json::object());
    dt.rows.push_back(
        {axis(c, "model"),
         axis(c, "framework"),
         axis(c, "runtime"),
         c.status,
         fmt(num(m, "test_size"), "%.0f"),
         fmt(num(m, "accuracy"), "%.4f"),
         fmt(num(m, "accuracy_delta"), "%+.4f"),
         m.contains("disagreement") ? std::to_string(m["disagreement"].get<long long>()) : "",
         fmt(num(d, "max_abs"), "%.2g"),
         fmt(num(d, "mean_abs"), "%.2g"),
         fmt(num(d, "max_rel"), "%.2g"),
         d.empty()
             ? ""
             : std::to_string(d.value("nan", 0LL)) + "/" + std::to_string(d.value("inf", 0LL)),
         d.empty() ? "" : (d.value("within", false) ? "yes" : "no"),
         first_layer(c),
         fmt(num(m, "load_ms"), "%.0f"),
         fmt(num(lat, "p50"), "%.3f"),
         fmt(num(lat, "p95"), "%.3f"),
         fmt(num(art, "bytes") / 1024.0, "%.1f"),
         art.value("format", ""),
         fmt(num(m, "rss_growth_mb"), "%.1f")});
  }
  if (!dt.rows.empty()) {
    r +=
        "Latency is one example per call (p50/p95 over the timed runs, after 3 untimed ones), "
        "with the thread count stated in the provenance; RSS growth is how much the cell's "
        "resident "
        "set grew over export, load and the accuracy pass (the runtime's own memory; the process's "
        "peak, libraries and dataset included, is in results.json); test n is the number of test "
        "examples run.\n\n";
    r += md.table(dt);
  }

  std::string findings;
  for (const auto& c : migrate) {  // web runtimes too: a divergence is a finding wherever it is
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
  return r + web_part;
}

}  // namespace crossdl::report_detail
