// The report's quantization section, read from the quantize cells' stored metrics: the precision x
// runtime table (what each scheme costs against fp32, and whether each runtime computes what
// crossdl's own reference computes on the same scales), and the runtimes that leave it as
// findings, with their first layer and the command that reproduces each.
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "crossdl/stage.h"
#include "report_internal.h"

namespace crossdl {

using nlohmann::json;
using report_detail::axis;
using report_detail::fmt;
using report_detail::num;

namespace {

// A runtime that leaves crossdl's reference: more than one int8 step on some output, or the
// float schemes beyond tolerance.
bool off_reference(const CellRecord& c) {
  return c.status == "ok" &&
         (!c.metrics.value("within_one_step", true) || !c.metrics.value("within_tolerance", true));
}

// The scheme, and the weights' granularity where it is not the default.
std::string precision_of(const CellRecord& c) {
  const json cfg = c.spec().config();
  const std::string scheme = axis(c, "scheme");
  const bool int8 = scheme.rfind("int8", 0) == 0;
  return scheme + (int8 && !cfg.value("per_channel", true) ? " (per-tensor weights)" : "");
}

std::string steps_text(const json& st) {
  if (!st.is_object() || st.empty()) return "";
  const double n = std::max(1.0, num(st, "count"));
  return fmt(100.0 * num(st, "equal") / n, "%.1f") + "% / " +
         fmt(100.0 * num(st, "off_by_one") / n, "%.1f") + "% / " +
         std::to_string(st.value("off_by_more", 0LL));
}

}  // namespace

std::string report_quantization_section(const StageReportInput& in) {
  if (in.cells.empty()) return "";
  std::string r = "## Quantization: reduced precision in every runtime that has it\n\n";
  r += "Each model trained above is quantized once by crossdl (BatchNorm folded; int8 weights "
       "symmetric per output channel, activations asymmetric per tensor from a calibration set "
       "drawn from the training split, int32 biases) and written into each runtime's own format "
       "with the same scales and zero points. Two references: the training framework's fp32 "
       "logits (Δacc and disagreement: what the quantization costs) and crossdl's own reference "
       "on the same parameters (the exact integer arithmetic of the ONNX or TFLite spec for int8; "
       "the fp32 forward pass on the rounded weights for fp16/bf16): what the runtime gets wrong. "
       "For int8 the logits are counted in quantization steps: equal / off by one / off by more "
       "(count). ✗ marks a runtime that leaves its reference.\n\n";

  // The matrix: rows (model, trained in, scheme), columns the runtimes in plan order.
  const ReportTable mt = report_detail::cell_matrix(
      in.cells,
      {report_detail::by_axis("model"), report_detail::by_axis("framework"), precision_of},
      {"model", "trained in", "precision"}, "runtime", [](const CellRecord& c) -> std::string {
        if (c.status != "ok") return c.status == "skipped" ? "skip" : c.status;
        const json& m = c.metrics;
        return fmt(100.0 * num(m, "accuracy_delta"), "%+.2f") + " pp, " +
               std::to_string(m.value("disagreement", 0LL)) + " dis" +
               (off_reference(c) ? " ✗" : "");
      });
  r += "A cell reads *accuracy change against fp32 in percentage points, top-1 disagreements "
       "with fp32*.\n\n";
  r += in.md.table(mt);

  ReportTable dt;
  dt.title = "Per runtime and precision";
  dt.columns = {"model",
                "trained in",
                "precision",
                "runtime",
                "status",
                "test n",
                "accuracy",
                "fp32 accuracy",
                "Δacc",
                "dis. fp32",
                "dis. ref",
                "logit steps = / ±1 / >1",
                "first layer > 1 step",
                "load (ms)",
                "p50 (ms)",
                "p95 (ms)",
                "artefact (KB)",
                "RSS growth (MB)"};
  dt.key_columns = {"model", "precision", "runtime", "status"};
  std::vector<std::pair<std::string, std::string>> not_run;  // reason -> models
  for (const auto& c : in.cells) {
    if (c.status != "ok") {
      const std::string key =
          axis(c, "runtime") + " " + precision_of(c) + ": " + c.status + ": " + c.message;
      auto it = std::find_if(not_run.begin(), not_run.end(),
                             [&](const auto& e) { return e.first == key; });
      if (it == not_run.end())
        not_run.emplace_back(key, axis(c, "model"));
      else if (it->second.find(axis(c, "model")) == std::string::npos)
        it->second += ", " + axis(c, "model");
      continue;
    }
    const json& m = c.metrics;
    const json lat = m.value("latency_ms", json::object());
    const json first = m.value("first_layer_off_by_more_than_one_step", json());
    dt.rows.push_back(
        {axis(c, "model"), axis(c, "framework"), precision_of(c), axis(c, "runtime"), c.status,
         fmt(num(m, "test_size"), "%.0f"), fmt(num(m, "accuracy"), "%.4f"),
         fmt(num(m, "fp32_accuracy"), "%.4f"), fmt(num(m, "accuracy_delta"), "%+.4f"),
         m.contains("disagreement") ? std::to_string(m["disagreement"].get<long long>()) : "",
         m.contains("reference_disagreement")
             ? std::to_string(m["reference_disagreement"].get<long long>())
             : "",
         steps_text(m.value("logits_steps", json::object())),
         first.is_string() ? first.get<std::string>() : (m.contains("layer_steps") ? "none" : ""),
         fmt(num(m, "load_ms"), "%.0f"), fmt(num(lat, "p50"), "%.3f"), fmt(num(lat, "p95"), "%.3f"),
         fmt(num(m.value("artefact", json::object()), "bytes") / 1024.0, "%.1f"),
         fmt(num(m, "rss_growth_mb"), "%.1f")});
  }
  if (!dt.rows.empty()) r += in.md.table(dt);
  if (!not_run.empty()) {
    r += "Runtime and precision combinations that did not run, and why:\n\n";
    for (const auto& [why, models] : not_run) r += "- " + why + " (" + models + ")\n";
    r += "\n";
  }

  std::string findings;
  for (const auto& c : in.cells) {
    if (!off_reference(c)) continue;
    const json& m = c.metrics;
    findings += "### " + axis(c, "runtime") + " leaves crossdl's " + precision_of(c) +
                " reference: " + axis(c, "model") + " trained in " + axis(c, "framework") + " (`" +
                c.id + "`)\n\n";
    findings += "- reference: " + m.value("reference", std::string()) + "\n";
    if (m.contains("logits_steps"))
      findings +=
          "- logits in steps (equal / off by one / off by more): " + steps_text(m["logits_steps"]) +
          "\n";
    const json first = m.value("first_layer_off_by_more_than_one_step", json());
    if (first.is_string())
      findings += "- first layer off by more than one step: " + first.get<std::string>() + "\n";
    if (m.contains("layer_steps")) {
      std::string line;
      for (const auto& l : m["layer_steps"])
        line += (line.empty() ? "" : ", ") + l.value("layer", std::string()) + " " +
                std::to_string(l.value("off_by_more", 0LL)) + " (max " +
                std::to_string(l.value("max_steps", 0LL)) + " steps, SQNR " +
                fmt(num(l, "sqnr_db"), "%.1f") + " dB)";
      findings += "- outputs off by more than one step, layer by layer: " + line + "\n";
    }
    if (m.contains("reference_diff"))
      findings += "- logits against the reference: max |Δ| " +
                  fmt(num(m["reference_diff"], "max_abs"), "%.3g") + ", " +
                  std::to_string(m.value("reference_disagreement", 0LL)) +
                  " top-1 predictions differ\n";
    findings +=
        "- artefact: " + m.value("artefact", json::object()).value("conversions", "") + "\n";
    findings += "- reproduce: `crossdl study cell " + in.dir + " --id " + c.id + "`\n\n";
  }
  r += findings.empty() ? "Every quantized runtime that ran computes what crossdl's reference "
                          "computes on the same parameters (within one int8 step, or within "
                          "tolerance for the float schemes).\n\n"
                        : "### Runtimes that leave crossdl's reference\n\n" + findings;
  return r;
}

}  // namespace crossdl
