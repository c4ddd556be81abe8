// `crossdl compare`: run, then compare. Each runtime (the reference first) runs in its own child
// process (`crossdl __runtime --job FILE`) that writes its logits and layer outputs to files; the
// parent then compares every runtime's files with the reference's.
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <vector>

#include "crossdl/compare.h"
#include "crossdl/npy.h"
#include "crossdl/onnx_io.h"
#include "crossdl/procfs.h"
#include "crossdl/provenance.h"
#include "crossdl/quantize.h"
#include "crossdl/runtime.h"
#include "crossdl/status.h"
#include "crossdl/study.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {
namespace {

// A temporary folder that goes away with the comparison unless the user named one.
struct WorkDir {
  fs::path path;
  bool owned = false;
  explicit WorkDir(const std::string& requested) {
    if (!requested.empty()) {
      path = requested;
      fs::create_directories(path);
      return;
    }
    std::string tmpl = (fs::temp_directory_path() / "crossdl-compare-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr)
      throw InputError("cannot create a temporary folder under " +
                       fs::temp_directory_path().string());
    path = tmpl;
    owned = true;
  }
  ~WorkDir() {
    std::error_code ec;
    if (owned) fs::remove_all(path, ec);
  }
};

// Process groups a runtime child started outside its own (a Node helper, a browser: see
// node::record_child_group) are listed in `file`; once the child has ended, however it ended
// (a timeout or a crash kills only its own group), whatever is left of them is killed.
void kill_child_groups(const fs::path& file) {
  struct Group {
    long long pgid = 0, ticks = 0;
    std::string kind;  // "helper" or "browser"
  };
  std::vector<Group> groups;
  {
    std::ifstream in(file);
    Group g;
    while (in >> g.pgid >> g.ticks >> g.kind)
      if (g.pgid > 1 && g.ticks >= 0) groups.push_back(g);
  }
  std::error_code ec;
  fs::remove(file, ec);
  // Only a group whose leader still runs with the recorded start time is ours: once the leader
  // is gone its id may lead another group (pid_max is small), which must not be touched.
  auto ours = [](const Group& g) { return process_start_ticks(g.pgid) == g.ticks; };
  // A helper whose crossdl died gets SIGTERM (PR_SET_PDEATHSIG) and closes its browser and
  // removes the profile itself: give it a few seconds before killing what is left.
  auto helper_running = [&] {
    return std::any_of(groups.begin(), groups.end(),
                       [&](const Group& g) { return g.kind == "helper" && ours(g); });
  };
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  while (helper_running() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (const Group& g : groups) {
    if (!ours(g)) continue;
    // A helper killed before it reported its browser: the browser is still its child.
    for (long long c : child_process_groups(g.pgid)) ::kill(static_cast<pid_t>(-c), SIGKILL);
    ::kill(static_cast<pid_t>(-g.pgid), SIGKILL);
  }
}

}  // namespace

json compare_run(const CompareOptions& opt) {
  std::string model_path = opt.model_path;
  if (fs::is_directory(model_path)) model_path = (fs::path(model_path) / "model.onnx").string();
  if (!fs::exists(model_path))
    throw InputError(opt.model_path +
                     ": no such model (expected an .onnx file or a folder with "
                     "model.onnx, as `crossdl train --out` writes)");
  // Read once here: a bad file or an unsupported operator is the user's input, exit 2, before
  // any runtime starts.
  const OnnxModel om = onnx_read(model_path);
  if (opt.runtimes.empty()) throw InputError("--runtimes: name at least one runtime");
  std::vector<std::string> order = {opt.reference};
  for (const auto& r : opt.runtimes)
    if (r != opt.reference) order.push_back(r);
  for (const auto& r : order) (void)make_runtime(r);  // a typo or an unbuilt runtime: exit 2
  const std::vector<std::string> precisions =
      opt.precisions.empty() ? std::vector<std::string>{"fp32"} : opt.precisions;
  for (const auto& p : precisions) {
    if (p == "fp32") continue;
    json qo = opt.quant;
    qo["scheme"] = p;
    (void)quant_options_from_json(qo);  // an unknown scheme or a bad option: exit 2
  }
  if (!opt.inputs_path.empty() || !opt.labels_path.empty()) {
    if (opt.inputs_path.empty() || opt.labels_path.empty())
      throw InputError("--inputs and --labels go together");
    // Checked here, so that a wrong file stops the comparison before any runtime starts.
    RuntimeJob probe;
    probe.dataset = opt.dataset;
    probe.inputs_path = fs::absolute(opt.inputs_path).string();
    probe.labels_path = fs::absolute(opt.labels_path).string();
    DataOptions d = opt.data;
    d.train_limit = 1;
    d.test_limit = 1;
    const Dataset ds = load_dataset(opt.dataset, d);
    JobInputs in;
    job_inputs(probe, ds, in);
  }

  WorkDir work(opt.out_dir);
  json doc = {{"model", model_path},
              {"model_name", om.model.name},
              {"weights_sha256", om.weights.sha256()},
              {"dataset", opt.dataset},
              {"reference", opt.reference},
              {"tolerance", {{"atol", opt.tol.atol}, {"rtol", opt.tol.rtol}}},
              {"threads", opt.threads},
              {"opset", opt.opset},
              {"layers", opt.layers},
              {"provenance", machine_provenance()}};

  json ref_result;
  Tensor ref_logits;
  std::vector<std::pair<std::string, Tensor>> ref_layers;
  json rows = json::array();
  // The reference runs in fp32 first; then every runtime in every precision asked for.
  std::vector<std::pair<std::string, std::string>> jobs = {{opt.reference, "fp32"}};
  for (const auto& p : precisions)
    for (const auto& name : order)
      if (!(name == opt.reference && p == "fp32")) jobs.emplace_back(name, p);
  std::map<std::string, PrecisionReference> refs;  // by precision
  for (const auto& [name, precision] : jobs) {
    if (precision != "fp32" && !refs.count(precision)) {
      // crossdl's own reference for this precision, computed once here on the same inputs.
      DataOptions d = opt.data;
      d.train_limit = 1;
      const Dataset ds = load_dataset(opt.dataset, d);
      RuntimeJob probe;
      probe.dataset = opt.dataset;
      probe.data = opt.data;
      if (!opt.inputs_path.empty()) {
        probe.inputs_path = fs::absolute(opt.inputs_path).string();
        probe.labels_path = fs::absolute(opt.labels_path).string();
      }
      JobInputs in;
      job_inputs(probe, ds, in);
      PrecisionReference pr =
          precision_reference(om, precision, opt.quant, opt.dataset, opt.data, in.eval, opt.layers);
      doc["precision_references"][precision] = pr.summary;
      refs.emplace(precision, std::move(pr));
    }
    RuntimeJob job;
    job.runtime = name;
    job.precision = precision;
    job.quant = opt.quant;
    job.model_path = fs::absolute(model_path).string();
    job.dataset = opt.dataset;
    job.data = opt.data;
    job.out_dir = (work.path / (precision == "fp32" ? name : name + "@" + precision)).string();
    job.threads = opt.threads;
    job.opset = opt.opset;
    job.layers = opt.layers;
    job.latency_runs = opt.latency_runs;
    if (!opt.inputs_path.empty()) {
      job.inputs_path = fs::absolute(opt.inputs_path).string();
      job.labels_path = fs::absolute(opt.labels_path).string();
    }
    fs::create_directories(job.out_dir);
    const std::string job_file = (fs::path(job.out_dir) / "job.json").string();
    std::ofstream(job_file) << job.to_json().dump(2) << "\n";

    std::vector<std::string> argv = opt.self_command;
    argv.insert(argv.end(), {"__runtime", "--job", job_file});
    const fs::path groups = fs::path(job.out_dir) / "child-groups.txt";
    std::error_code ec;
    fs::remove(groups, ec);
    ::setenv("CROSSDL_CHILD_GROUPS_FILE", groups.c_str(), 1);
    CellOutcome o = cell_execute(name + " " + precision, argv, opt.timeout_s, {},
                                 (fs::path(job.out_dir) / "log.txt").string());
    ::unsetenv("CROSSDL_CHILD_GROUPS_FILE");
    kill_child_groups(groups);
    json row = o.metrics.is_object() ? o.metrics : json::object();
    row["runtime"] = name;
    row["precision"] = precision;
    row["status"] = o.status;
    row["message"] = o.message;
    row["elapsed_s"] = o.elapsed_s;
    row["peak_rss_mb"] = o.child_peak_rss_mb;  // the child's whole peak, dataset included
    if (o.signal) row["signal"] = o.signal_name;
    if (o.status == "crashed" || o.status == "timeout" || o.status == "failed")
      row["stderr_tail"] = o.stderr_tail;
    row["reproduce"] = "crossdl __runtime --job " + job_file;

    if (o.status == "ok") {
      const fs::path dir = job.out_dir;
      Tensor logits = npy_read((dir / "logits.npy").string());
      std::vector<std::pair<std::string, Tensor>> layers = read_layer_outputs(dir.string(), row);
      if (precision != "fp32") {
        const PrecisionReference& pr = refs.at(precision);
        if (ref_logits.empty() || pr.q.model.layers.empty()) {
          row["reference_message"] = "no fp32 reference or no crossdl reference to compare with";
        } else if (row.value("quant_params_sha256", "") !=
                   doc["precision_references"][precision].value("quant_params_sha256", "")) {
          // The child quantized on its own; the same inputs must give the same parameters.
          row["status"] = "failed";
          row["message"] =
              "the runtime's quantization parameters differ from crossdl's reference "
              "computation (calibration is not deterministic)";
        } else {
          compare_precision(row, logits, ref_logits, ref_result.value("accuracy", 0.0), pr, layers,
                            opt.tol);
        }
      } else if (name == opt.reference) {
        ref_result = row;
        ref_logits = std::move(logits);
        ref_layers = std::move(layers);
      } else if (!ref_logits.empty()) {
        const OutputDiff d = diff_outputs(ref_logits, logits, opt.tol);
        row["logits_diff"] = d.to_json();
        const std::int64_t dis = top1_disagreements(ref_logits, logits);
        row["disagreement"] = dis;
        row["disagreement_rate"] = static_cast<double>(dis) /
                                   static_cast<double>(std::max<std::int64_t>(1, logits.dim(0)));
        row["accuracy_delta"] = row.value("accuracy", 0.0) - ref_result.value("accuracy", 0.0);
        if (opt.layers && !layers.empty() && !ref_layers.empty()) {
          int first = -1;
          const auto lv = layer_divergence(ref_layers, layers, opt.tol, first);
          const json walk = layer_divergence_json(lv, first);  // named: items() would dangle
          for (const auto& [k, v] : walk.items()) row[k] = v;
        }
      }
    }
    // Outputs are files in the work folder; the document keeps the figures only.
    row.erase("layers");
    if (opt.on_line) {
      std::string line = name + (precision == "fp32" ? "" : " " + precision) + ": " + o.status;
      if (o.status == "ok") {
        char buf[160];
        std::snprintf(buf, sizeof buf, " accuracy %.4f", row.value("accuracy", 0.0));
        line += buf;
        if (row.contains("logits_steps")) {
          std::snprintf(
              buf, sizeof buf,
              ", %.1f%% of logits equal the integer reference, %lld off by more than one step",
              100.0 * static_cast<double>(row["logits_steps"].value("equal", 0LL)) /
                  std::max(1.0, row["logits_steps"].value("count", 1.0)),
              row["logits_steps"].value("off_by_more", 0LL));
          line += buf;
        }
        if (row.contains("logits_diff")) {
          std::snprintf(buf, sizeof buf, ", max |diff| %.3g, %lld disagree",
                        row["logits_diff"].value("max_abs", 0.0), row.value("disagreement", 0LL));
          line += buf;
        }
      } else if (!o.message.empty()) {
        line += ": " + o.message;
      }
      opt.on_line(line);
    }
    rows.push_back(std::move(row));
  }
  doc["test_size"] = ref_result.value("test_size", opt.data.test_limit);
  doc["runtimes"] = rows;
  doc["work_dir"] = work.owned ? json(nullptr) : json(work.path.string());
  if (ref_logits.empty())
    doc["reference_message"] =
        "the reference runtime '" + opt.reference + "' did not run, so nothing was compared";
  return doc;
}

}  // namespace crossdl
