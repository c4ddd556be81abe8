// The study's "quantize" stage: a model trained by a train cell of the study, quantized by crossdl
// (crossdl/quant.h) in one scheme and run in one runtime, in that runtime's own format. Two
// references give the error an owner: the training framework's fp32 test logits (what the
// quantization costs) and crossdl's own reference on the same scales and zero points (what the
// runtime gets wrong, in int8 steps, layer by layer).
#include <algorithm>
#include <filesystem>

#include "crossdl/adapter.h"
#include "crossdl/compare.h"
#include "crossdl/npy.h"
#include "crossdl/quantize.h"
#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "stages.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {
namespace {

// Keys of a train cell that do not change the trained model.
const std::vector<std::string> kTrainRunKeys = {"test_limit", "replicate"};
// The cell's keys that are quantization options (quant_options_from_json's).
const std::vector<std::string> kQuantKeys = {"per_channel",      "calibrate",  "calibration",
                                             "calibration_seed", "percentile", "histogram_bins"};

json quant_options_of(const json& cfg) {
  json q = json::object();
  for (const auto& k : kQuantKeys)
    if (cfg.contains(k)) q[k] = cfg[k];
  return q;
}

void quantize_validate(const json& cfg) {
  for (const char* k : {"model", "dataset", "framework", "runtime", "scheme"})
    if (!cfg.contains(k) || !cfg[k].is_string())
      throw InputError(std::string("quantize: '") + k + "' must be a string");
  for (const char* k : {"test_limit", "latency_runs"})
    if (cfg.contains(k) && !cfg[k].is_number_integer())
      throw InputError(std::string("quantize: '") + k + "' must be an integer");
  if (cfg.contains("layers") && !cfg["layers"].is_boolean() && cfg["layers"] != "auto")
    throw InputError("quantize: 'layers' must be true, false or auto");
  json q = quant_options_of(cfg);
  q["scheme"] = cfg["scheme"];
  (void)quant_options_from_json(q);
  if (find_backend(cfg["runtime"].get<std::string>()) == nullptr)
    throw InputError("quantize: unknown runtime '" + cfg["runtime"].get<std::string>() + "'");
}

StageResult quantize_run(const StageContext& ctx) {
  const json cfg = ctx.spec.config();
  quantize_validate(cfg);
  const fs::path src = ctx.input("model");
  const std::string scheme = cfg["scheme"].get<std::string>();
  const OnnxModel om = onnx_read((src / "model.onnx").string());
  const Tensor fp32_all = npy_read((src / "test_logits.npy").string());

  RuntimeJob job;
  job.runtime = cfg["runtime"].get<std::string>();
  job.model_path = (src / "model.onnx").string();
  job.dataset = cfg["dataset"].get<std::string>();
  job.data.test_limit =
      std::min<std::int64_t>(cfg.value("test_limit", fp32_all.dim(0)), fp32_all.dim(0));
  job.out_dir = ctx.cell_dir;
  job.threads = cfg.value("threads", 1);
  job.latency_runs = cfg.value("latency_runs", 20);
  // Layers: "auto" (default) captures them when the logits leave crossdl's reference, true
  // always, false never. Each int8 layer is captured in a graph of its own (quant_prefix): one
  // load per layer, which costs minutes for ResNet-20 in a browser.
  const json layers_cfg = cfg.value("layers", json("auto"));
  job.layers = false;
  job.precision = scheme;
  job.quant = quant_options_of(cfg);
  json row = runtime_run(job);
  row["trained_in"] = cfg["framework"];
  row["source_cell"] = src.filename().string();
  StageResult r;
  r.status = row.value("status", "failed");
  r.message = row.value("message", "");
  if (row.contains("library")) r.libraries[row["library"].get<std::string>()] = row["version"];
  if (r.status == "ok") {
    DataOptions d;
    d.train_limit = 1;
    d.test_limit = job.data.test_limit;
    const Dataset ds = load_dataset(job.dataset, d);
    JobInputs in;
    job_inputs(job, ds, in);
    const PrecisionReference pr =
        precision_reference(om, scheme, job.quant, job.dataset, job.data, in.eval, true);
    const Tensor got = npy_read((fs::path(ctx.cell_dir) / "logits.npy").string());
    const Tensor fp32 = fp32_all.slice_rows(0, got.dim(0));
    std::int64_t correct = 0;
    const auto pred = argmax_rows(fp32);
    const auto y = in.eval.labels.values<std::int64_t>();
    for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == y[i];
    const double fp32_acc = static_cast<double>(correct) / static_cast<double>(got.dim(0));
    row["fp32_accuracy"] = fp32_acc;
    row["precision_reference"] = pr.summary;
    if (row.value("quant_params_sha256", "") != pr.summary.value("quant_params_sha256", "")) {
      r.status = "failed";
      r.message =
          "the runtime's quantization parameters differ from crossdl's reference "
          "computation (calibration is not deterministic)";
    } else {
      compare_precision(row, got, fp32, fp32_acc, pr, {}, Tolerance{});
      const bool off = !row.value("within_one_step", true) || !row.value("within_tolerance", true);
      if (scheme == "int8-static" &&
          (layers_cfg == json(true) || (layers_cfg == json("auto") && off))) {
        RuntimeJob lj = job;
        lj.layers = true;
        lj.latency_runs = 0;
        lj.data.test_limit = lj.layer_examples;
        lj.out_dir = (fs::path(ctx.cell_dir) / "layers").string();
        const json lr = runtime_run(lj);
        if (lr.value("layers_status", "") == "ok")
          compare_precision_layers(row, pr, read_layer_outputs(lj.out_dir, lr));
        else
          row["layers_message"] =
              "layer capture: " + lr.value("layers_status", lr.value("status", "")) + ": " +
              lr.value("layers_message", lr.value("message", ""));
        row["layers_method"] = lr.value("layers_method", "");
      }
    }
  }
  row.erase("layers");  // files in the cell folder; the row keeps the figures
  r.metrics = std::move(row);
  return r;
}

}  // namespace

StageKind quantize_stage() {
  StageKind k;
  k.name = "quantize";
  k.required_axes = {"model", "dataset", "framework", "scheme", "runtime"};
  k.depends_on = [](const CellSpec& c, const std::vector<CellSpec>& plan) {
    return std::vector<std::pair<std::string, std::string>>{
        {"model", find_source_cell(c, plan, "train", kTrainRunKeys)}};
  };
  k.validate = [](const CellSpec& c) { quantize_validate(c.config()); };
  k.run = quantize_run;
  k.report = report_quantization_section;
  return k;
}

}  // namespace crossdl
