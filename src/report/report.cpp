// report_write: DIR/study.sqlite → report.md, results.csv, results.json. Reads the store only.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "crossdl/provenance.h"
#include "crossdl/report.h"
#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "crossdl/store.h"
#include "report_internal.h"

namespace crossdl {

std::string report_detail::axis(const CellRecord& c, const char* key) {
  if (c.axes.contains(key) && c.axes[key].is_string()) return c.axes[key].get<std::string>();
  auto it = c.params.find(key);
  return it != c.params.end() && it->is_string() ? it->get<std::string>() : std::string();
}

double report_detail::num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
}

report_detail::CellKey report_detail::by_axis(const char* name) {
  return [name](const CellRecord& c) { return axis(c, name); };
}

ReportTable report_detail::cell_matrix(const std::vector<CellRecord>& cells,
                                       const std::vector<CellKey>& row_keys,
                                       const std::vector<std::string>& headers,
                                       const char* column_axis, const CellKey& text) {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> keys;
  std::map<std::vector<std::string>, std::map<std::string, const CellRecord*>> grid;
  for (const auto& c : cells) {
    const std::string col = axis(c, column_axis);
    if (std::find(columns.begin(), columns.end(), col) == columns.end()) columns.push_back(col);
    std::vector<std::string> key;
    for (const auto& k : row_keys) key.push_back(k(c));
    if (!grid.count(key)) keys.push_back(key);
    grid[key][col] = &c;
  }
  ReportTable t;
  t.columns = headers;
  t.columns.insert(t.columns.end(), columns.begin(), columns.end());
  t.key_columns = t.columns;
  for (const auto& key : keys) {
    std::vector<std::string> row = key;
    for (const auto& col : columns) {
      auto it = grid[key].find(col);
      row.push_back(it == grid[key].end() ? "" : text(*it->second));
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

std::string report_detail::fmt(double v, const char* f) {
  if (std::isnan(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool is_finding(const std::string& s) {
  return s == "failed" || s == "crashed" || s == "timeout";
}

using report_detail::fmt;

// A value as a table cell: strings bare, integers plain, other numbers with %g.
std::string cell_text(const json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer() || v.is_number_unsigned() || v.is_boolean()) return v.dump();
  if (v.is_number_float()) return fmt(v.get<double>(), "%.6g");
  return v.dump();
}

// The cell's own measurement first, then what it was asked to do.
json lookup(const CellRecord& c, const std::string& key) {
  auto it = c.metrics.find(key);
  if (it != c.metrics.end() && !it->is_null()) return *it;
  if (c.axes.contains(key)) return json::parse(c.axes[key].dump());
  auto p = c.params.find(key);
  return p == c.params.end() ? json() : *p;
}

double number(const json& v) {
  return v.is_number() ? v.get<double>() : std::nan("");
}

void flatten(const json& j, const std::string& prefix, std::map<std::string, json>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
  } else {
    out[prefix] = j;
  }
}

std::string dump_safe(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

std::string provenance_section(const std::vector<CellRecord>& cells) {
  // Each key with its distinct values in first-seen order; most keys have exactly one.
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> values;
  for (const auto& c : cells) {
    std::map<std::string, json> flat;
    flatten(c.provenance, "", flat);
    for (const auto& [k, v] : flat) {
      if (!values.count(k)) order.push_back(k);
      auto& vs = values[k];
      std::string t = cell_text(v);
      if (std::find(vs.begin(), vs.end(), t) == vs.end()) vs.push_back(t);
    }
  }
  static const std::vector<std::string> first = {
      "crossdl_version", "crossdl_commit", "compiler", "build_type", "hostname", "os", "cpu",
      "logical_cpus",    "memory_mb"};
  std::vector<std::string> keys;
  for (const auto& k : first)
    if (values.count(k)) keys.push_back(k);
  std::vector<std::string> rest;
  for (const auto& k : order)
    if (std::find(first.begin(), first.end(), k) == first.end()) rest.push_back(k);
  std::sort(rest.begin(), rest.end());
  keys.insert(keys.end(), rest.begin(), rest.end());

  std::string out = "## Provenance\n\n";
  if (keys.empty()) return out + "No cell recorded provenance.\n\n";
  for (const auto& k : keys) {
    const auto& vs = values[k];
    std::string shown;
    for (std::size_t i = 0; i < vs.size(); ++i) shown += (i ? "; " : "") + vs[i];
    out += "- " + k + (k == "memory_mb" ? " (MB)" : "") + ": " + shown +
           (vs.size() > 1 ? " (differs between cells)" : "") + "\n";
  }
  return out + "\n";
}

// A browser trainer's memory is the browser's (Trainer::facts), not the cell's own resident set.
double browser_peak_pss(const CellRecord& c) {
  const json f = c.metrics.value("facts", json::object());
  return f.is_object() ? number(f.value("peak_pss_mb", json())) : std::nan("");
}

ReportTable training_table(const std::vector<CellRecord>& train) {
  ReportTable t;
  t.title = "Training";
  t.columns = {"model",         "dataset",        "framework",      "seed",
               "status",        "epochs",         "threads",        "train size",
               "test size",     "test accuracy",  "train time (s)", "wall time (s)",
               "peak RSS (MB)", "weights SHA-256"};
  t.key_columns = {"model", "dataset", "framework", "seed", "test accuracy"};
  const bool browsers = std::any_of(train.begin(), train.end(), [](const CellRecord& c) {
    return !std::isnan(browser_peak_pss(c));
  });
  if (browsers) t.columns.push_back("browser peak PSS (MB)");
  for (const auto& c : train) {
    double rss = number(lookup(c, "peak_rss_mb"));
    if (std::isnan(rss)) rss = c.child_peak_rss_mb;
    std::string sha = cell_text(lookup(c, "weights_sha256")).substr(0, 12);
    t.rows.push_back({cell_text(lookup(c, "model")), cell_text(lookup(c, "dataset")),
                      cell_text(lookup(c, "framework")), cell_text(lookup(c, "seed")), c.status,
                      cell_text(lookup(c, "epochs")), cell_text(lookup(c, "threads")),
                      cell_text(lookup(c, "train_size")), cell_text(lookup(c, "test_size")),
                      fmt(number(c.metrics.value("test_accuracy", json())), "%.4f"),
                      fmt(number(c.metrics.value("seconds", json())), "%.1f"),
                      fmt(c.elapsed_s, "%.1f"), fmt(rss, "%.1f"), sha});
    if (browsers) t.rows.back().push_back(fmt(browser_peak_pss(c), "%.0f"));
  }
  return t;
}

// Repeated runs (replicate > 0) measure reproducibility; the statistics over seeds and between
// frameworks use each configuration once.
bool is_primary(const CellRecord& c) {
  const json r = lookup(c, "replicate");
  return !r.is_number() || r.get<double>() == 0;
}

ReportTable seeds_table(const std::vector<CellRecord>& train) {
  ReportTable t;
  t.title = "Across seeds";
  t.columns = {"model",
               "dataset",
               "framework",
               "train size",
               "threads",
               "n seeds",
               "mean test accuracy",
               "95% CI (±)",
               "95% CI",
               "mean train time (s)",
               "mean peak RSS (MB)"};
  t.key_columns = {"model", "dataset", "framework", "n seeds", "mean test accuracy", "95% CI (±)"};
  std::vector<std::string> order;
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> groups;
  std::map<std::string, std::vector<std::string>> names;
  std::map<std::string, std::vector<double>> rss_of;
  for (const auto& c : train) {
    double acc = number(c.metrics.value("test_accuracy", json()));
    if (c.status != "ok" || std::isnan(acc) || !is_primary(c)) continue;
    std::vector<std::string> k = {cell_text(lookup(c, "model")), cell_text(lookup(c, "dataset")),
                                  cell_text(lookup(c, "framework")),
                                  cell_text(c.metrics.value("train_size", json())),
                                  cell_text(lookup(c, "threads"))};
    // Seeds are pooled only across otherwise identical configurations.
    json cfg = c.params;
    for (const auto& [name, value] : c.axes.items())
      if (name != "seed") cfg[name] = value;
    std::string key = cfg.dump();
    if (!groups.count(key)) {
      order.push_back(key);
      names[key] = k;
    }
    groups[key].first.push_back(acc);
    double s = number(c.metrics.value("seconds", json()));
    if (!std::isnan(s)) groups[key].second.push_back(s);
    double rss = number(c.metrics.value("peak_rss_mb", json()));
    if (!std::isnan(rss)) rss_of[key].push_back(rss);
  }
  for (const auto& key : order) {
    const auto& [accs, secs] = groups[key];
    MeanCi ci = mean_ci95(accs);
    MeanCi st = mean_ci95(secs);
    bool have_ci = !std::isnan(ci.half_width);
    const auto& rss = rss_of[key];
    t.rows.push_back({names[key][0], names[key][1], names[key][2], names[key][3], names[key][4],
                      std::to_string(ci.n), fmt(ci.mean, "%.4f"),
                      have_ci ? fmt(ci.half_width, "%.4f") : "n/a",
                      have_ci ? "[" + fmt(ci.mean - ci.half_width, "%.4f") + ", " +
                                    fmt(ci.mean + ci.half_width, "%.4f") + "]"
                              : "n/a",
                      secs.empty() ? "" : fmt(st.mean, "%.1f"),
                      rss.empty() ? "" : fmt(mean_ci95(rss).mean, "%.0f")});
  }
  return t;
}

// Cells that differ only in their framework form a comparison group: same model, dataset, seed
// and training parameters, hence the same initial weights and minibatches.
std::string comparison_key(const CellRecord& c) {
  json k = c.params;
  for (const auto& [name, value] : c.axes.items())
    if (name != "framework") k[name] = value;
  return k.dump();
}

std::vector<std::int64_t> int_list(const json& j) {
  std::vector<std::int64_t> out;
  if (!j.is_array()) return out;
  out.reserve(j.size());
  for (const auto& v : j) out.push_back(v.is_number_integer() ? v.get<std::int64_t>() : -1);
  return out;
}

// One pair of cells that differ only in their framework, and how their predictions relate.
struct FrameworkPair {
  std::string model, dataset, train_size, threads, seed, a, b;
  double accuracy_a = 0, accuracy_b = 0;
  PairAgreement agreement;
};

std::vector<FrameworkPair> framework_pairs(const std::vector<CellRecord>& train,
                                           const Store& store) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<const CellRecord*>> groups;
  for (const auto& c : train) {
    if (c.status != "ok" || !is_primary(c)) continue;
    const std::string k = comparison_key(c);
    if (!groups.count(k)) order.push_back(k);
    groups[k].push_back(&c);
  }
  std::vector<FrameworkPair> out;
  for (const auto& k : order) {
    const auto& g = groups[k];
    if (g.size() < 2) continue;
    std::vector<json> outs;
    for (const auto* c : g) outs.push_back(store.outputs(c->id));
    for (std::size_t i = 0; i < g.size(); ++i) {
      for (std::size_t j = i + 1; j < g.size(); ++j) {
        const auto a = int_list(outs[i].value("test_predictions", json()));
        const auto b = int_list(outs[j].value("test_predictions", json()));
        const auto y = int_list(outs[i].value("test_labels", json()));
        if (a.empty() || a.size() != b.size() || a.size() != y.size()) continue;
        out.push_back({cell_text(lookup(*g[i], "model")), cell_text(lookup(*g[i], "dataset")),
                       cell_text(g[i]->metrics.value("train_size", json())),
                       cell_text(lookup(*g[i], "threads")), cell_text(lookup(*g[i], "seed")),
                       cell_text(lookup(*g[i], "framework")), cell_text(lookup(*g[j], "framework")),
                       number(g[i]->metrics.value("test_accuracy", json())),
                       number(g[j]->metrics.value("test_accuracy", json())),
                       compare_predictions(a, b, y)});
      }
    }
  }
  return out;
}

ReportTable agreement_table(const std::vector<FrameworkPair>& pairs) {
  ReportTable t;
  t.title = "Cross-framework agreement";
  t.columns = {"model",        "dataset",     "train size",       "threads",
               "seed",         "framework A", "framework B",      "test examples",
               "accuracy A",   "accuracy B",  "disagreement (%)", "only A right",
               "only B right", "McNemar p",   "difference"};
  t.key_columns = {"model",     "framework A", "framework B", "disagreement (%)",
                   "McNemar p", "difference"};
  for (const auto& pr : pairs) {
    const PairAgreement& p = pr.agreement;
    std::string verdict = "not significant";
    if (p.mcnemar_p < 0.05)
      verdict = (p.only_a_correct > p.only_b_correct ? pr.a : pr.b) + " better (p < 0.05)";
    t.rows.push_back({pr.model, pr.dataset, pr.train_size, pr.threads, pr.seed, pr.a, pr.b,
                      std::to_string(p.n), fmt(pr.accuracy_a, "%.4f"), fmt(pr.accuracy_b, "%.4f"),
                      fmt(100.0 * p.disagreement, "%.2f"), std::to_string(p.only_a_correct),
                      std::to_string(p.only_b_correct), fmt(p.mcnemar_p, "%.3g"), verdict});
  }
  return t;
}

// Reproducibility as a measured fact: runs that differ only in `replicate` must give the same
// weights to be called deterministic; runs that differ only in `threads` show what the thread
// count changes.
ReportTable reproducibility_table(const std::vector<CellRecord>& train) {
  ReportTable t;
  t.title = "Reproducibility";
  t.columns = {"model",
               "dataset",
               "framework",
               "seed",
               "threads",
               "runs",
               "identical weights",
               "test accuracy",
               "same weights as the fewest threads"};
  t.key_columns = {"framework", "threads", "runs", "identical weights"};
  struct Group {
    std::vector<std::string> names;
    std::map<int, std::vector<const CellRecord*>> by_threads;
  };
  std::vector<std::string> order;
  std::map<std::string, Group> groups;
  for (const auto& c : train) {
    if (c.status != "ok") continue;
    json k = c.params;
    for (const auto& [name, value] : c.axes.items()) k[name] = value;
    k.erase("replicate");
    k.erase("threads");
    const std::string key = k.dump();
    if (!groups.count(key)) {
      order.push_back(key);
      groups[key].names = {cell_text(lookup(c, "model")), cell_text(lookup(c, "dataset")),
                           cell_text(lookup(c, "framework")), cell_text(lookup(c, "seed"))};
    }
    const json th = lookup(c, "threads");
    groups[key].by_threads[th.is_number_integer() ? th.get<int>() : 1].push_back(&c);
  }
  for (const auto& key : order) {
    const Group& g = groups[key];
    std::size_t runs = 0;
    for (const auto& [th, cells] : g.by_threads) runs += cells.size();
    if (runs < 2) continue;  // nothing to compare
    const int base_threads = g.by_threads.begin()->first;
    const std::string base_sha =
        g.by_threads.begin()->second.front()->metrics.value("weights_sha256", std::string());
    for (const auto& [th, cells] : g.by_threads) {
      std::set<std::string> shas;
      double lo = 1, hi = 0;
      for (const auto* c : cells) {
        shas.insert(c->metrics.value("weights_sha256", std::string()));
        const double acc = number(c->metrics.value("test_accuracy", json()));
        lo = std::min(lo, acc), hi = std::max(hi, acc);
      }
      std::string identical = "n/a (1 run)";
      if (cells.size() > 1)
        identical = shas.size() == 1 ? "yes" : "no (" + std::to_string(shas.size()) + " distinct)";
      std::string same;
      if (th != base_threads)
        same = (shas.size() == 1 && *shas.begin() == base_sha ? "yes" : "no") +
               std::string(" (vs threads=") + std::to_string(base_threads) + ")";
      t.rows.push_back({g.names[0], g.names[1], g.names[2], g.names[3], std::to_string(th),
                        std::to_string(cells.size()), identical,
                        fmt(lo, "%.4f") + (hi > lo ? " - " + fmt(hi, "%.4f") : ""), same});
    }
  }
  return t;
}

// The framework-level question: over seeds, is one framework's accuracy different from another's
// under the same configuration? The paired difference per seed (same initial weights and
// minibatches) with its 95% Student-t interval; significant only when the interval excludes 0.
ReportTable agreement_summary_table(const std::vector<FrameworkPair>& pairs) {
  ReportTable t;
  t.title = "Cross-framework agreement over seeds";
  t.columns = {"model",
               "dataset",
               "train size",
               "threads",
               "framework A",
               "framework B",
               "n seeds",
               "mean disagreement (%)",
               "mean accuracy A - B",
               "95% CI of A - B",
               "seeds with McNemar p < 0.05",
               "difference"};
  t.key_columns = {"model",   "framework A",         "framework B",
                   "n seeds", "mean accuracy A - B", "difference"};
  std::vector<std::string> order;
  struct Acc {
    const FrameworkPair* first = nullptr;
    std::vector<double> diff, dis;
    int significant = 0;
  };
  std::map<std::string, Acc> groups;
  for (const auto& pr : pairs) {
    const std::string key = pr.model + "\x1f" + pr.dataset + "\x1f" + pr.train_size + "\x1f" +
                            pr.threads + "\x1f" + pr.a + "\x1f" + pr.b;
    Acc& a = groups[key];
    if (a.first == nullptr) {
      order.push_back(key);
      a.first = &pr;
    }
    a.diff.push_back(pr.accuracy_a - pr.accuracy_b);
    a.dis.push_back(100.0 * pr.agreement.disagreement);
    a.significant += pr.agreement.mcnemar_p < 0.05;
  }
  for (const auto& key : order) {
    const Acc& a = groups[key];
    if (a.diff.size() < 2) continue;  // one seed: the per-seed table says all there is
    const FrameworkPair& f = *a.first;
    const MeanCi d = mean_ci95(a.diff);
    const double lo = d.mean - d.half_width, hi = d.mean + d.half_width;
    std::string verdict = "not significant";
    if (lo > 0) verdict = f.a + " more accurate (95% CI excludes 0)";
    if (hi < 0) verdict = f.b + " more accurate (95% CI excludes 0)";
    t.rows.push_back({f.model, f.dataset, f.train_size, f.threads, f.a, f.b,
                      std::to_string(a.diff.size()), fmt(mean_ci95(a.dis).mean, "%.2f"),
                      fmt(d.mean, "%+.4f"), "[" + fmt(lo, "%+.4f") + ", " + fmt(hi, "%+.4f") + "]",
                      std::to_string(a.significant) + " of " + std::to_string(a.diff.size()),
                      verdict});
  }
  return t;
}

ReportTable epochs_table(const std::vector<CellRecord>& cells) {
  ReportTable t;
  t.title = "Per epoch";
  t.columns = {"model",      "dataset",       "framework", "seed",          "epoch",
               "train loss", "test accuracy", "time (s)",  "peak RSS (MB)", "samples/s"};
  t.key_columns = {"model", "dataset", "framework", "seed", "epoch", "test accuracy"};
  for (const auto& c : cells)
    for (const auto& e : c.epochs)
      t.rows.push_back({cell_text(lookup(c, "model")), cell_text(lookup(c, "dataset")),
                        cell_text(lookup(c, "framework")), cell_text(lookup(c, "seed")),
                        std::to_string(e.epoch), fmt(e.train_loss, "%.4f"),
                        fmt(e.test_accuracy, "%.4f"), fmt(e.seconds, "%.1f"),
                        fmt(e.peak_rss_mb, "%.1f"), fmt(e.samples_per_s, "%.0f")});
  return t;
}

std::string label_of(const CellRecord& c) {
  return c.spec().label();
}

std::string trim_tail(const std::string& s, std::size_t max_lines, std::size_t max_chars) {
  std::string t = s;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (t.size() > max_chars) t = "…" + t.substr(t.size() - max_chars);
  std::size_t lines = 0, pos = t.size();
  while (pos > 0) {
    std::size_t nl = t.rfind('\n', pos - 1);
    if (nl == std::string::npos) break;
    if (++lines >= max_lines) {
      t = "…\n" + t.substr(nl + 1);
      break;
    }
    pos = nl;
  }
  // Keep the fence intact however odd the child's output is.
  for (std::size_t p = t.find("```"); p != std::string::npos; p = t.find("```", p + 3)) t[p] = '\'';
  return t;
}

// What a framework could not do is a result too: each skip with its reason.
std::string skipped_section(const std::vector<CellRecord>& cells) {
  std::string out;
  for (const auto& c : cells)
    if (c.status == "skipped")
      out += "- " + label_of(c) + ": " + trim_tail(c.message, 3, 400) + "\n";
  return out.empty() ? out : "## Skipped\n\n" + out + "\n";
}

std::string findings_section(const std::vector<CellRecord>& cells, const std::string& dir) {
  std::string out = "## Findings\n\n";
  std::size_t n = 0;
  for (const auto& c : cells) {
    if (!is_finding(c.status)) continue;
    ++n;
    out += "### " + c.status + ": " + label_of(c) + " (`" + c.id + "`)\n\n";
    out += "- status: " + c.status;
    if (c.signal) out += ", signal " + std::to_string(*c.signal) + " (" + c.signal_name + ")";
    if (c.exit_code) out += ", exit code " + std::to_string(*c.exit_code);
    out += ", after " + fmt(c.elapsed_s, "%.1f") + " s\n";
    if (!c.message.empty()) out += "- message: " + trim_tail(c.message, 5, 600) + "\n";
    out += "- reproduce: `crossdl study cell " + dir + " --id " + c.id + "`\n\n";
    std::string tail = trim_tail(c.stderr_tail, 20, 2000);
    if (!tail.empty()) out += "Last output:\n\n```\n" + tail + "\n```\n\n";
  }
  if (n == 0) out += "No cell failed, crashed or timed out.\n\n";
  std::string skipped;
  for (const auto& c : cells)
    if (c.status == "skipped")
      skipped += "- " + label_of(c) + " (`" + c.id + "`): " + trim_tail(c.message, 3, 300) + "\n";
  if (!skipped.empty())
    out += "Skipped cells (not findings; the reason each gave):\n\n" + skipped + "\n";
  return out;
}

}  // namespace

// The "train" stage's section: accuracy, time and memory per cell, means over seeds, the
// frameworks' agreement, reproducibility and the per-epoch table.
std::string report_training_section(const StageReportInput& in) {
  const std::vector<CellRecord>& train = in.cells;
  const Store& store = in.store;
  const ReportPrinter* md = &in.md;
  std::string r;
  r += "## Results\n\n";
  r += "Test accuracy on the test split (or its first `test_limit` examples); train time is "
       "measured inside the cell, wall time around the whole child process; peak RSS is the "
       "cell's own measurement, else the child's maximum resident set from wait4(); a "
       "framework that trains in a browser (`tfjs-train@...`) holds its memory there, so its "
       "browser peak PSS is the browser's whole process tree as its helper sampled it every "
       "100 ms.\n\n";
  r += md->table(training_table(train));
  r += "Mean test accuracy of the finished (ok) cells over seeds, with the two-sided 95% "
       "confidence interval of the mean (Student t, n-1 degrees of freedom; n/a for one "
       "seed).\n\n";
  r += md->table(seeds_table(train));
  const std::vector<FrameworkPair> pairs = framework_pairs(train, store);
  if (const ReportTable at = agreement_table(pairs); !at.rows.empty()) {
    r += "Pairs of cells that differ only in their framework (same model, data, seed, initial "
         "weights and minibatches): how often their top-1 test predictions differ, and "
         "McNemar's exact test on their correctness (two-sided; a difference is called "
         "significant only at p < 0.05).\n\n";
    r += md->table(at);
    if (const ReportTable sum = agreement_summary_table(pairs); !sum.rows.empty()) {
      r += "The framework-level comparison over seeds: the paired accuracy difference A - B "
           "per seed and its 95% Student-t interval. Single seeds often show McNemar p < 0.05 "
           "because tiny numeric differences compound over training into two different "
           "models; a framework is called more accurate only when the interval over seeds "
           "excludes 0.\n\n";
      r += md->table(sum);
    }
  }
  if (const ReportTable rt = reproducibility_table(train); !rt.rows.empty()) {
    r += "Runs repeated with an identical configuration (the `replicate` axis) and with "
         "another thread count: whether the trained weights are bit-identical (SHA-256 of the "
         "weight set).\n\n";
    r += md->table(rt);
  }
  r += md->table(epochs_table(train));
  return r;
}

std::string report_migration_section(const StageReportInput& in) {
  return report_detail::migration_section(in.cells, in.dir, in.md);
}

namespace {

void write_file(const fs::path& p, const std::string& text) {
  fs::path tmp = p;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw InputError(p.string() + ": cannot write");
  }
  fs::rename(tmp, p);
}

json record_json(const CellRecord& c) {
  json j = {
      {"id", c.id},
      {"seq", c.seq},
      {"stage", c.stage},
      {"axes", json::parse(c.axes.dump())},
      {"params", c.params},
      {"status", c.status},
      {"message", c.message},
      {"elapsed_s", std::isnan(c.elapsed_s) ? json() : json(c.elapsed_s)},
      {"child_peak_rss_mb", std::isnan(c.child_peak_rss_mb) ? json() : json(c.child_peak_rss_mb)},
      {"metrics", c.metrics},
      {"provenance", c.provenance},
      {"started_at", c.started_at},
      {"finished_at", c.finished_at}};
  j["signal"] = c.signal ? json(*c.signal) : json();
  j["signal_name"] = c.signal_name;
  j["exit_code"] = c.exit_code ? json(*c.exit_code) : json();
  j["stderr_tail"] = c.stderr_tail;
  return j;
}

json num_or_null(double v) {
  return std::isnan(v) ? json() : json(v);
}

}  // namespace

void report_write(const std::string& dir) {
  Store store(dir, false);
  const auto meta = store.meta_all();
  const std::vector<CellRecord> cells = store.cells();
  auto get = [&](const char* k) {
    auto it = meta.find(k);
    return it == meta.end() ? std::string() : it->second;
  };
  auto md = make_report_printer("markdown");

  // ---- report.md ----
  std::string r = "# crossdl study report: " + get("name") + "\n\n";
  if (!get("description").empty()) r += get("description") + "\n\n";
  r += "- study: " + get("source");
  if (!get("created_at").empty()) r += ", started " + get("created_at");
  if (!get("resumed_at").empty()) r += ", last resumed " + get("resumed_at");
  r += "\n";
  r += "- report written " + utc_now_iso8601() + " from " + store.path() + "\n\n";
  r += provenance_section(cells);

  std::size_t planned = cells.size();
  if (auto p = json::parse(get("planned_cells"), nullptr, false); p.is_array())
    planned = std::max(planned, p.size());
  std::map<std::string, std::size_t> by_status;
  double wall = 0;
  for (const auto& c : cells) {
    ++by_status[c.status];
    if (!std::isnan(c.elapsed_s)) wall += c.elapsed_s;
  }
  r += "## Summary\n\n";
  r += std::to_string(cells.size()) + " of " + std::to_string(planned) +
       " planned cells finished; total cell wall time " + fmt(wall, "%.1f") +
       " s (each cell in its own process, one at a time).\n\n";
  ReportTable st;
  st.columns = {"status", "cells"};
  st.key_columns = st.columns;
  for (const auto& [s, n] : by_status) st.rows.push_back({s, std::to_string(n)});
  r += md->table(st);

  // One section per stage kind, in the registry's order; a kind without a section of its own
  // (or one this binary does not know) is listed in a generic table.
  std::vector<std::string> kinds = registered_stages();
  for (const auto& c : cells)
    if (std::find(kinds.begin(), kinds.end(), c.stage) == kinds.end()) kinds.push_back(c.stage);
  std::vector<CellRecord> other;
  for (const auto& kind : kinds) {
    std::vector<CellRecord> of_kind;
    for (const auto& c : cells)
      if (c.stage == kind) of_kind.push_back(c);
    if (of_kind.empty()) continue;
    const StageKind* k = find_stage(kind);
    if (k != nullptr && k->report)
      r += k->report(StageReportInput{of_kind, cells, store, dir, *md});
    else
      other.insert(other.end(), of_kind.begin(), of_kind.end());
  }
  if (!other.empty()) {
    ReportTable ot;
    ot.title = "Other cells";
    ot.columns = {"stage", "cell", "status", "wall time (s)"};
    ot.key_columns = {"cell", "status"};
    for (const auto& c : other)
      ot.rows.push_back({c.stage, label_of(c), c.status, fmt(c.elapsed_s, "%.1f")});
    r += "## Other stages\n\n" + md->table(ot);
  }
  r += skipped_section(cells);
  r += findings_section(cells, dir);
  write_file(fs::path(dir) / "report.md", r);

  // ---- results.csv: one row per cell, axes bare, params as param.X, metric scalars as metric.X.
  std::vector<std::string> axis_cols;
  std::set<std::string> param_cols, metric_cols;
  for (const auto& c : cells) {
    for (const auto& [k, v] : c.axes.items())
      if (std::find(axis_cols.begin(), axis_cols.end(), k) == axis_cols.end())
        axis_cols.push_back(k);
    for (const auto& [k, v] : c.params.items()) param_cols.insert(k);
    for (const auto& [k, v] : c.metrics.items())
      if (v.is_primitive()) metric_cols.insert(k);
  }
  ReportTable csv;
  csv.columns = {"id", "seq", "stage"};
  csv.columns.insert(csv.columns.end(), axis_cols.begin(), axis_cols.end());
  for (const auto& k : param_cols) csv.columns.push_back("param." + k);
  for (const auto& k : metric_cols) csv.columns.push_back("metric." + k);
  for (const char* k :
       {"status", "elapsed_s", "child_peak_rss_mb", "signal_name", "exit_code", "message"})
    csv.columns.emplace_back(k);
  auto raw = [](const json& v) {
    return v.is_null() ? std::string() : v.is_string() ? v.get<std::string>() : v.dump();
  };
  for (const auto& c : cells) {
    std::vector<std::string> row = {c.id, std::to_string(c.seq), c.stage};
    for (const auto& k : axis_cols)
      row.push_back(c.axes.contains(k) ? raw(json::parse(c.axes[k].dump())) : "");
    for (const auto& k : param_cols) row.push_back(c.params.contains(k) ? raw(c.params[k]) : "");
    for (const auto& k : metric_cols)
      row.push_back(c.metrics.contains(k) && c.metrics[k].is_primitive() ? raw(c.metrics[k]) : "");
    row.push_back(c.status);
    row.push_back(raw(num_or_null(c.elapsed_s)));
    row.push_back(raw(num_or_null(c.child_peak_rss_mb)));
    row.push_back(c.signal_name);
    row.push_back(c.exit_code ? std::to_string(*c.exit_code) : "");
    row.push_back(c.message);
    csv.rows.push_back(std::move(row));
  }
  write_file(fs::path(dir) / "results.csv", make_report_printer("csv")->table(csv));

  // ---- results.json ----
  json j;
  json prov = json::array();
  std::set<std::string> seen;
  for (const auto& c : cells) {
    std::string d = dump_safe(c.provenance);
    if (seen.insert(d).second) prov.push_back(c.provenance);
  }
  j["provenance"] = prov;  // each distinct provenance once
  json study = json::object();
  for (const auto& [k, v] : meta) {
    auto parsed = json::parse(v, nullptr, false);
    study[k] =
        (k == "study_json" || k == "planned_cells") && !parsed.is_discarded() ? parsed : json(v);
  }
  j["study"] = study;
  j["cells"] = json::array();
  j["epochs"] = json::array();
  for (const auto& c : cells) {
    j["cells"].push_back(record_json(c));
    for (const auto& e : c.epochs)
      j["epochs"].push_back({{"cell_id", e.cell_id},
                             {"epoch", e.epoch},
                             {"train_loss", num_or_null(e.train_loss)},
                             {"test_accuracy", num_or_null(e.test_accuracy)},
                             {"seconds", num_or_null(e.seconds)},
                             {"peak_rss_mb", num_or_null(e.peak_rss_mb)},
                             {"samples_per_s", num_or_null(e.samples_per_s)}});
  }
  write_file(fs::path(dir) / "results.json", dump_safe(j, 2) + "\n");
}

}  // namespace crossdl
