// `crossdl compare` and its child side `crossdl __runtime`.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "crossdl/compare.h"
#include "crossdl/provenance.h"
#include "crossdl/quantize.h"
#include "crossdl/runtime.h"
#include "crossdl/study.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {
namespace {

struct CompareArgs {
  std::string model, dataset = "fashion-mnist", reference = "torch", runtimes, out, json_out;
  std::int64_t limit = 1000, latency_runs = 50;
  int threads = 1, opset = 13;
  bool layers = false, as_json = false;
  double atol = Tolerance{}.atol, rtol = Tolerance{}.rtol, timeout_s = 600;
  std::string inputs, labels, precision = "fp32";
  QuantArgs quant;
  std::string job_file;  // __runtime
};

std::string fmt(const char* f, double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

double num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
}

// Reduced precisions: against fp32 (what the quantization costs) and against crossdl's own
// reference on the same parameters (what the runtime gets wrong), in quantization steps for int8.
void print_precision_table(const json& doc, int w) {
  bool any = false;
  for (const auto& r : doc["runtimes"]) any = any || r.value("precision", "fp32") != "fp32";
  if (!any) return;
  std::printf(
      "\nreduced precision (Δacc and disagree: against the fp32 %s; ref: crossdl's own "
      "reference on the same scales)\n",
      doc.value("reference", "").c_str());
  std::printf("%-*s %-12s %-8s %-8s %-8s %-8s %-8s %-9s %-22s %-8s %s\n", w, "runtime", "precision",
              "status", "accuracy", "Δacc", "disagree", "≠ ref", "max|Δref|", "logit steps =/1/>1",
              "p50 ms", "size KB");
  std::vector<std::string> notes;
  for (const auto& r : doc["runtimes"]) {
    const std::string p = r.value("precision", "fp32");
    if (p == "fp32") continue;
    const std::string name = r.value("runtime", "");
    const json st = r.value("logits_steps", json::object());
    std::string steps = "-";
    if (!st.empty())
      steps = std::to_string(st.value("equal", 0LL)) + "/" +
              std::to_string(st.value("off_by_one", 0LL)) + "/" +
              std::to_string(st.value("off_by_more", 0LL));
    std::printf(
        "%-*s %-12s %-8s %-8s %-8s %-8s %-8s %-9s %-22s %-8s %s\n", w, name.c_str(), p.c_str(),
        r.value("status", "").c_str(), fmt("%.4f", num(r, "accuracy")).c_str(),
        fmt("%+.4f", num(r, "accuracy_delta")).c_str(),
        r.contains("disagreement") ? std::to_string(r["disagreement"].get<long long>()).c_str()
                                   : "-",
        r.contains("reference_disagreement")
            ? std::to_string(r["reference_disagreement"].get<long long>()).c_str()
            : "-",
        fmt("%.2g", num(r.value("reference_diff", json::object()), "max_abs")).c_str(),
        steps.c_str(), fmt("%.3f", num(r.value("latency_ms", json::object()), "p50")).c_str(),
        fmt("%.1f", num(r.value("artefact", json::object()), "bytes") / 1024.0).c_str());
    if (r.value("status", "") != "ok")
      notes.push_back(name + " " + p + " " + r.value("status", "") + ": " + r.value("message", ""));
    if (r.contains("layer_steps")) {
      std::string line;
      for (const auto& l : r["layer_steps"])
        line += (line.empty() ? "" : ", ") + l.value("layer", "") + " " +
                std::to_string(l.value("off_by_more", 0LL)) + ">1" +
                (l.contains("sqnr_db") ? " " + fmt("%.1f", num(l, "sqnr_db")) + " dB" : "");
      const json first = r.value("first_layer_off_by_more_than_one_step", json());
      notes.push_back(name + " " + p +
                      " layers (outputs off by more than one step; SQNR vs fp32): " + line +
                      "; first off by more than one step: " +
                      (first.is_string() ? first.get<std::string>() : std::string("none")));
    }
  }
  for (const auto& n : notes) std::printf("  %s\n", n.c_str());
}

void print_table(const json& doc) {
  std::printf(
      "%s on %s (%lld test examples), reference %s, tolerance atol %g rtol %g, %d thread(s)\n",
      doc.value("model", "").c_str(), doc.value("dataset", "").c_str(), doc.value("test_size", 0LL),
      doc.value("reference", "").c_str(), doc["tolerance"].value("atol", 0.0),
      doc["tolerance"].value("rtol", 0.0), doc.value("threads", 1));
  // Web runtime names are long ("tflite-web:wasm@chromium"): the first column fits the longest.
  int w = 15;
  for (const auto& r : doc["runtimes"])
    w = std::max(w, static_cast<int>(r.value("runtime", "").size()));
  std::printf("%-*s %-8s %-8s %-8s %-9s %-9s %-9s %-7s %-7s %-8s %-8s %-8s %-7s %-8s %s\n", w,
              "runtime", "status", "accuracy", "Δacc", "disagree", "max|Δ|", "mean|Δ|", "NaN/Inf",
              "in tol", "load ms", "1st ms", "p50 ms", "p95 ms", "RSS +MB", "size KB");
  std::vector<std::string> notes;
  std::vector<std::string> facts;
  for (const auto& r : doc["runtimes"]) {
    if (r.value("precision", "fp32") != "fp32") continue;  // their own table below
    const std::string name = r.value("runtime", "");
    const std::string status = r.value("status", "");
    const bool is_ref = name == doc.value("reference", "");
    const json d = r.value("logits_diff", json::object());
    const json lat = r.value("latency_ms", json::object());
    const json art = r.value("artefact", json::object());
    std::string nonfinite = "-", intol = is_ref ? "ref" : "-";
    if (!d.empty()) {
      nonfinite = std::to_string(d.value("nan", 0LL)) + "/" + std::to_string(d.value("inf", 0LL));
      intol = d.value("within", false) ? "yes" : "NO";
    }
    std::printf("%-*s %-8s %-8s %-8s %-9s %-9s %-9s %-7s %-7s %-8s %-8s %-8s %-7s %-8s %s\n", w,
                name.c_str(), status.c_str(), fmt("%.4f", num(r, "accuracy")).c_str(),
                is_ref ? "-" : fmt("%+.4f", num(r, "accuracy_delta")).c_str(),
                r.contains("disagreement")
                    ? std::to_string(r["disagreement"].get<long long>()).c_str()
                    : "-",
                fmt("%.2g", num(d, "max_abs")).c_str(), fmt("%.2g", num(d, "mean_abs")).c_str(),
                nonfinite.c_str(), intol.c_str(), fmt("%.0f", num(r, "load_ms")).c_str(),
                fmt("%.1f", num(r, "first_infer_ms")).c_str(), fmt("%.3f", num(lat, "p50")).c_str(),
                fmt("%.3f", num(lat, "p95")).c_str(), fmt("%.1f", num(r, "rss_growth_mb")).c_str(),
                fmt("%.1f", num(art, "bytes") / 1024.0).c_str());
    if (status != "ok") notes.push_back(name + " " + status + ": " + r.value("message", ""));
    // Web runtimes: what they ran on and the browser's memory (RSS +MB above is crossdl's own).
    if (r.contains("facts") && r["facts"].is_object()) {
      const json& f = r["facts"];
      std::string line = name + ": " + r.value("device", "");
      if (f.contains("browser") && f["browser"].is_string())
        line += " in " + f["browser"].get<std::string>();
      if (f.contains("pss_mb") && f["pss_mb"].is_number())
        line += "; " + std::string(f.value("platform", "") == "node" ? "helper" : "browser") +
                " PSS " + fmt("%.1f", num(f, "pss_mb")) + " MB, peak " +
                fmt("%.1f", num(f, "peak_pss_mb")) + " MB";
      if (f.contains("js_heap_mb") && f["js_heap_mb"].is_number())
        line += ", JS heap " + fmt("%.1f", num(f, "js_heap_mb")) + " MB";
      if (f.contains("timer_resolution_ms") && f["timer_resolution_ms"].is_number())
        line += "; timer " + fmt("%.3g", num(f, "timer_resolution_ms")) + " ms";
      facts.push_back(line);
    }
    if (r.contains("layer_diffs")) {
      std::string grow;
      for (const auto& l : r["layer_diffs"])
        grow += (grow.empty() ? "" : " → ") + l.value("layer", "") + " " +
                fmt("%.1e", num(l, "max_abs"));
      const json first = r.value("first_divergent_layer", json());
      notes.push_back(name + " layers (max|Δ|): " + grow + "; first beyond tolerance: " +
                      (first.is_string() ? first.get<std::string>() : std::string("none")));
    } else if (r.contains("layers_message")) {
      notes.push_back(name + " layers: " + r.value("layers_status", "") + ": " +
                      r.value("layers_message", ""));
    }
  }
  for (const auto& n : notes) std::printf("  %s\n", n.c_str());
  print_precision_table(doc, w);
  if (!facts.empty()) {
    std::printf(
        "web runtimes (device; memory of the browser's process tree, or of the Node helper):\n");
    for (const auto& f : facts) std::printf("  %s\n", f.c_str());
  }
  if (doc.contains("reference_message"))
    std::printf("  %s\n", doc["reference_message"].get<std::string>().c_str());
}

// 0 when every runtime that ran agrees within tolerance and none failed; 1 otherwise.
int exit_code(const json& doc) {
  if (doc.contains("reference_message")) return kExitFinding;
  for (const auto& r : doc["runtimes"]) {
    const std::string s = r.value("status", "");
    if (s != "ok" && s != "skipped") return kExitFinding;
    if (r.contains("logits_diff") && !r["logits_diff"].value("within", true)) return kExitFinding;
    // Reduced precision: a runtime that leaves crossdl's reference (more than one int8 step, or
    // the float schemes' tolerance) is a finding; the cost of quantization itself is not.
    if (!r.value("within_one_step", true) || !r.value("within_tolerance", true))
      return kExitFinding;
  }
  return 0;
}

}  // namespace

void add_compare_commands(CLI::App& app, CommandSet& set) {
  static CompareArgs a;
  auto* c = app.add_subcommand(
      "compare", "Run the same weights in several runtimes and compare their outputs");
  c->add_option("--model", a.model,
                "An .onnx file, or a folder with model.onnx (crossdl train --out)")
      ->required();
  c->add_option("--runtimes", a.runtimes,
                "Comma-separated runtimes (crossdl doctor lists them), e.g. torch,opencv,ort")
      ->required();
  c->add_option("--reference", a.reference, "The runtime the others are compared with")
      ->capture_default_str();
  c->add_option("--dataset", a.dataset)->capture_default_str();
  c->add_option("--limit", a.limit, "Test examples to run (0: all)")->capture_default_str();
  c->add_flag("--layers", a.layers,
              "Capture every layer's output and find the first diverging one");
  c->add_option("--atol", a.atol, "Absolute tolerance")->capture_default_str();
  c->add_option("--rtol", a.rtol, "Relative tolerance (of the reference value)")
      ->capture_default_str();
  c->add_option("--threads", a.threads, "Threads per runtime")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--opset", a.opset, "ONNX opset of the exported file (13 or 17)")
      ->capture_default_str()
      ->check(CLI::IsMember({13, 17}));
  c->add_option("--latency-runs", a.latency_runs, "Timed single-example inferences per runtime")
      ->capture_default_str();
  c->add_option("--timeout", a.timeout_s, "Seconds per runtime before it is killed")
      ->capture_default_str();
  c->add_option("--out", a.out, "Keep artefacts, logits and layer outputs in this folder");
  c->add_option("--inputs", a.inputs,
                "Run on these inputs instead of the test split: a .npy [N, ...] of model inputs "
                "(normalised as crossdl feeds them), with --labels");
  c->add_option("--labels", a.labels, "A .npy int64 [N] of the --inputs' labels");
  c->add_option("--precision", a.precision,
                "Comma-separated precisions: fp32 and/or crossdl's quantization schemes (fp16, "
                "bf16, int8-static, int8-dynamic, w8, w16)")
      ->capture_default_str();
  add_quant_options(*c, a.quant);
  c->add_flag("--json", a.as_json, "Print the result document as JSON");
  set.compare = c;

  auto* r = app.add_subcommand("__runtime", "(internal) run one runtime for compare");
  r->group("");
  r->add_option("--job", a.job_file)->required();
  set.runtime_job = r;

  set.run_compare = [] {
    if (a.atol < 0 || a.rtol < 0) throw InputError("--atol and --rtol must be >= 0");
    if (a.limit < 0) throw InputError("--limit must be >= 0");
    CompareOptions o;
    o.model_path = a.model;
    o.runtimes = split_list(a.runtimes);
    o.reference = a.reference;
    o.dataset = a.dataset;
    o.data.test_limit = a.limit;
    o.layers = a.layers;
    o.tol = {a.atol, a.rtol};
    o.threads = a.threads;
    o.opset = a.opset;
    o.latency_runs = a.latency_runs;
    o.out_dir = a.out;
    o.precisions = split_list(a.precision);
    o.quant = a.quant.to_json();
    o.inputs_path = a.inputs;
    o.labels_path = a.labels;
    o.timeout_s = a.timeout_s;
    o.self_command = {fs::canonical("/proc/self/exe").string()};
    if (!a.as_json)
      o.on_line = [](const std::string& l) { std::fprintf(stderr, "%s\n", l.c_str()); };
    json doc = compare_run(o);
    if (a.as_json)
      std::cout << doc.dump(2) << "\n";
    else
      print_table(doc);
    return exit_code(doc);
  };

  set.run_runtime_job = [] {
    json ev = {{"event", "result"}};
    int rc = 0;
    try {
      std::ifstream in(a.job_file);
      if (!in) throw InputError(a.job_file + ": cannot open the runtime job");
      json j = json::parse(in, nullptr, false);
      if (j.is_discarded()) throw InputError(a.job_file + ": not JSON");
      json r = runtime_run(RuntimeJob::from_json(j));
      ev["status"] = r["status"];
      ev["message"] = r["message"];
      ev["metrics"] = r;
      if (r["status"] == "failed") rc = kExitFinding;
    } catch (const InputError& e) {
      ev["status"] = "failed";
      ev["message"] = std::string("bad input: ") + e.what();
      rc = kExitUsage;
    }
    emit_event(ev);
    return rc;
  };
}

}  // namespace crossdl
