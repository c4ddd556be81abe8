// The study's "migrate" stage: a model trained by a "train" cell of the same study, written in
// another runtime's format and run there. The reference is the training framework's own test
// logits (the train cell's test_logits.npy), so a row says "trained in A, runs in B: this much
// changed". When the logits leave tolerance, both runtimes capture every layer's output on the
// first examples and the cell records the first layer where they part.
#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>

#include "crossdl/adapter.h"
#include "crossdl/compare.h"
#include "crossdl/npy.h"
#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "stages.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {
namespace {

// Keys of a train cell that do not change the trained model.
const std::vector<std::string> kTrainRunKeys = {"test_limit", "replicate"};

void migrate_validate(const json& cfg) {
  for (const char* k : {"model", "dataset", "framework", "runtime"})
    if (!cfg.contains(k) || !cfg[k].is_string())
      throw InputError(std::string("migrate: '") + k + "' must be a string");
  for (const char* k : {"test_limit", "opset", "batch", "latency_runs"})
    if (cfg.contains(k) && !cfg[k].is_number_integer())
      throw InputError(std::string("migrate: '") + k + "' must be an integer");
  for (const char* k : {"atol", "rtol"})
    if (cfg.contains(k) && (!cfg[k].is_number() || cfg[k].get<double>() < 0))
      throw InputError(std::string("migrate: '") + k + "' must be a number >= 0");
  if (cfg.contains("opset") && cfg["opset"] != 13 && cfg["opset"] != 17)
    throw InputError("migrate: 'opset' must be 13 or 17");
  if (find_backend(cfg["runtime"].get<std::string>()) == nullptr) {
    std::string known;
    for (const auto& b : backends()) known += (known.empty() ? "" : ", ") + b.name;
    throw InputError("migrate: unknown runtime '" + cfg["runtime"].get<std::string>() +
                     "' (known: " + known + ")");
  }
}

// The cell runs after its train cell ended ok (the runner records a skip naming it otherwise);
// the planner handed over that cell's folder.
json migrate_run(const json& cfg, const std::string& cell_dir, const fs::path& src_dir) {
  migrate_validate(cfg);
  json r = {{"trained_in", cfg["framework"]}, {"runtime", cfg["runtime"]}};
  r["source_cell"] = src_dir.filename().string();
  const Tensor ref_all = npy_read((src_dir / "test_logits.npy").string());

  RuntimeJob job;
  job.runtime = cfg["runtime"].get<std::string>();
  job.model_path = (src_dir / "model.onnx").string();
  job.dataset = cfg["dataset"].get<std::string>();
  job.data.test_limit =
      std::min<std::int64_t>(cfg.value("test_limit", ref_all.dim(0)), ref_all.dim(0));
  job.out_dir = cell_dir;
  job.threads = cfg.value("threads", 1);
  job.opset = cfg.value("opset", 13);
  job.batch = cfg.value("batch", 64);
  job.latency_runs = cfg.value("latency_runs", 20);
  const Tolerance tol{cfg.value("atol", Tolerance{}.atol), cfg.value("rtol", Tolerance{}.rtol)};
  json run = runtime_run(job);
  for (const auto& [k, v] : run.items()) r[k] = v;
  r["trained_in"] = cfg["framework"];
  r["tolerance"] = {{"atol", tol.atol}, {"rtol", tol.rtol}};
  if (run["status"] != "ok") return r;

  const Tensor got = npy_read((fs::path(cell_dir) / "logits.npy").string());
  const Tensor ref = ref_all.slice_rows(0, got.dim(0));
  const OutputDiff d = diff_outputs(ref, got, tol);
  r["logits_diff"] = d.to_json();
  r["within_tolerance"] = d.within();
  const std::int64_t dis = top1_disagreements(ref, got);
  r["disagreement"] = dis;
  r["disagreement_rate"] = static_cast<double>(dis) / static_cast<double>(got.dim(0));
  // The training framework's accuracy on the same examples.
  const Tensor labels = [&] {
    DataOptions o;
    o.train_limit = 1;
    o.test_limit = got.dim(0);
    return load_dataset(job.dataset, o).test.y;
  }();
  std::int64_t correct = 0;
  const auto pred = argmax_rows(ref);
  const auto y = labels.values<std::int64_t>();
  for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == y[i];
  r["reference_accuracy"] = static_cast<double>(correct) / static_cast<double>(got.dim(0));
  r["accuracy_delta"] = r.value("accuracy", 0.0) - r["reference_accuracy"].get<double>();

  if (!d.within() && cfg.value("layers", true)) {
    // Where do they part? Both sides capture their layer outputs on the same first examples.
    RuntimeJob a = job, b = job;
    a.runtime = cfg["framework"].get<std::string>();
    a.out_dir = (fs::path(cell_dir) / "layers-reference").string();
    b.out_dir = (fs::path(cell_dir) / "layers-runtime").string();
    for (RuntimeJob* j : {&a, &b}) {
      j->layers = true;
      j->latency_runs = 0;
      j->data.test_limit = j->layer_examples;
    }
    json ra = runtime_run(a), rb = runtime_run(b);
    if (ra.value("layers_status", "") == "ok" && rb.value("layers_status", "") == "ok") {
      int first = -1;
      const auto lv = layer_divergence(read_layer_outputs(a.out_dir, ra),
                                       read_layer_outputs(b.out_dir, rb), tol, first);
      const json walk = layer_divergence_json(lv, first);  // named: items() would dangle
      for (const auto& [k, v] : walk.items()) r[k] = v;
    } else {
      r["layers_message"] = "layer outputs: " + a.runtime + " " +
                            ra.value("layers_status", ra.value("status", "")) + " " +
                            ra.value("layers_message", ra.value("message", "")) + "; " + b.runtime +
                            " " + rb.value("layers_status", rb.value("status", "")) + " " +
                            rb.value("layers_message", rb.value("message", ""));
    }
  }
  return r;
}

}  // namespace

StageKind migrate_stage() {
  StageKind k;
  k.name = "migrate";
  k.required_axes = {"model", "dataset", "framework", "runtime"};
  k.depends_on = [](const CellSpec& c, const std::vector<CellSpec>& plan) {
    return std::vector<std::pair<std::string, std::string>>{
        {"model", find_source_cell(c, plan, "train", kTrainRunKeys)}};
  };
  k.validate = [](const CellSpec& c) { migrate_validate(c.config()); };
  k.run = [](const StageContext& ctx) {
    json m = migrate_run(ctx.spec.config(), ctx.cell_dir, ctx.input("model"));
    StageResult r;
    r.status = m["status"].get<std::string>();
    r.message = m.value("message", "");
    if (m.contains("library")) r.libraries[m["library"].get<std::string>()] = m["version"];
    r.metrics = std::move(m);
    return r;
  };
  k.report = report_migration_section;
  return k;
}

}  // namespace crossdl
