// crossdl: does a model still do the same thing across frameworks, runtimes and precisions?
//
// Exit codes: 0 success; 1 a failure or finding in the work itself; 2 bad usage or input.
#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "commands.h"
#include "crossdl/adapter.h"
#include "crossdl/npy.h"
#include "crossdl/onnx_io.h"
#include "crossdl/provenance.h"
#include "crossdl/report.h"
#include "crossdl/stage.h"
#include "crossdl/study.h"
#include "crossdl/train.h"
#include "crossdl/zoo.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    auto comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

namespace {

// A one-line progress display on stderr, redrawn in place on a terminal and silent elsewhere.
class ProgressLine {
 public:
  ProgressLine() : tty_(isatty(STDERR_FILENO) != 0) {}
  void show(const std::string& text) {
    if (!tty_) return;
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    std::fflush(stderr);
    shown_ = true;
  }
  void done() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }

 private:
  bool tty_;
  bool shown_ = false;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// ---- doctor ------------------------------------------------------------------------------------
// The first executable `name` on PATH, or "".
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string p = path != nullptr ? path : "";
  std::size_t start = 0;
  while (!p.empty() && start <= p.size()) {
    std::size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    const std::string cand = (end > start ? p.substr(start, end - start) : ".") + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0 && !fs::is_directory(cand)) return cand;
    start = end + 1;
  }
  return "";
}

// The platforms the web runtimes run on (docs/web-protocol.md): Node hosts the helper itself,
// the browsers are launched headless by it.
json web_platforms() {
  json out = json::array();
  const std::string node = on_path("node");
  out.push_back({{"platform", "node"},
                 {"executable", node},
                 {"present", !node.empty()},
                 {"install", node.empty() ? "apt-get install nodejs" : ""}});
  for (const auto& [platform, exe, pkg] : {std::tuple<const char*, const char*, const char*>{
                                               "chromium", "/usr/bin/chromium", "chromium"},
                                           {"firefox", "/usr/bin/firefox-esr", "firefox-esr"}}) {
    const bool present = ::access(exe, X_OK) == 0;
    out.push_back({{"platform", platform},
                   {"executable", exe},
                   {"present", present},
                   {"install", present ? "" : std::string("apt-get install ") + pkg}});
  }
  return out;
}

int cmd_doctor(bool as_json) {
  json rows = json::array();
  for (const auto& b : backends()) {
    std::string why;
    std::string version = b.probe ? b.probe(why) : "";
    const bool built_in = b.make_framework != nullptr || b.make_runtime != nullptr;
    const bool usable = built_in && !version.empty();
    // A framework built with a runtime side also runs exported artefacts in `crossdl compare`.
    const std::string kind = b.make_framework && b.make_runtime ? "framework+runtime" : b.kind;
    rows.push_back({{"name", b.name},
                    {"kind", kind},
                    {"library", b.library},
                    {"built_in", built_in},
                    {"usable", usable},
                    {"version", version},
                    {"why", usable ? "" : why},
                    {"variants", b.variants},
                    // Built in but unusable (no CUDA device, say): installing is not the remedy.
                    {"install", usable || built_in ? "" : b.install_hint}});
  }
  json datasets = json::array();
  for (const auto& name : dataset_names()) {
    const std::string root = dataset_default_root(name);
    datasets.push_back(
        {{"name", name}, {"root", root}, {"present", root.empty() || fs::exists(root)}});
  }
  const json platforms = web_platforms();
  json out = {{"backends", rows},
              {"web_platforms", platforms},
              {"datasets", datasets},
              {"provenance", machine_provenance()}};
  if (as_json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%-14s %-17s %-34s %-7s %-10s %s\n", "name", "kind", "library", "usable", "version",
              "note");
  for (const auto& r : rows) {
    std::string note = r["usable"].get<bool>() ? ""
                                               : r["why"].get<std::string>() +
                                                     (r["install"].get<std::string>().empty()
                                                          ? ""
                                                          : "; " + r["install"].get<std::string>());
    std::printf("%-14s %-17s %-34s %-7s %-10s %s\n", r["name"].get<std::string>().c_str(),
                r["kind"].get<std::string>().c_str(), r["library"].get<std::string>().c_str(),
                r["usable"].get<bool>() ? "yes" : "no", r["version"].get<std::string>().c_str(),
                note.c_str());
  }
  std::printf("\nweb runtimes (<name>:<backend>@<platform>, docs/web-protocol.md):\n");
  for (const auto& r : rows)
    if (!r["variants"].get<std::string>().empty())
      std::printf("  %-14s %s\n", r["name"].get<std::string>().c_str(),
                  r["variants"].get<std::string>().c_str());
  std::printf("web platforms:\n");
  for (const auto& p : platforms)
    std::printf("  %-14s %s %s%s\n", p["platform"].get<std::string>().c_str(),
                p["present"].get<bool>() ? "present" : "MISSING",
                p["executable"].get<std::string>().c_str(),
                p["install"].get<std::string>().empty()
                    ? ""
                    : ("; " + p["install"].get<std::string>()).c_str());
  std::printf("\ndatasets:\n");
  for (const auto& d : datasets)
    std::printf("  %-14s %s %s\n", d["name"].get<std::string>().c_str(),
                d["present"].get<bool>() ? "present" : "MISSING",
                d["root"].get<std::string>().c_str());
  return 0;
}

// ---- train -------------------------------------------------------------------------------------
struct TrainArgs {
  std::string model, dataset = "fashion-mnist", frameworks = "torch", out, optimizer = "sgd",
                     schedule = "constant", data_root;
  int epochs = 1, threads = 1, step_size = 1;
  std::uint64_t seed = 1;
  std::int64_t batch_size = 64, train_limit = 0, test_limit = 0;
  double lr = 0.02, momentum = 0.9, weight_decay = 0.0, gamma = 0.1;
  double timeout_s = 3600;  // per framework, when several run in child processes
  bool nondeterministic = false, as_json = false;
};

json train_params(const TrainArgs& a, const std::string& framework) {
  json p = {{"model", a.model},
            {"dataset", a.dataset},
            {"framework", framework},
            {"optimizer", a.optimizer},
            {"schedule", a.schedule},
            {"epochs", a.epochs},
            {"threads", a.threads},
            {"step_size", a.step_size},
            {"seed", a.seed},
            {"batch_size", a.batch_size},
            {"train_limit", a.train_limit},
            {"test_limit", a.test_limit},
            {"lr", a.lr},
            {"momentum", a.momentum},
            {"weight_decay", a.weight_decay},
            {"gamma", a.gamma},
            {"deterministic", !a.nondeterministic}};
  if (!a.data_root.empty()) p["data_root"] = a.data_root;
  return p;
}

TrainProgress progress_for(ProgressLine& line, const std::string& label) {
  TrainProgress p;
  p.on_batch = [&line, label](int epoch, int epochs, std::int64_t batch, std::int64_t batches,
                              double loss, double sps) {
    line.show(label + " | epoch " + std::to_string(epoch) + "/" + std::to_string(epochs) +
              " batch " + std::to_string(batch) + "/" + std::to_string(batches) + " loss " +
              fmt("%.4f", loss) + " " + fmt("%.0f", sps) + " samples/s");
  };
  return p;
}

json with_library_version(json m) {
  if (m.contains("framework_info")) {
    m["provenance"]["libraries"][m["framework_info"]["library"].get<std::string>()] =
        m["framework_info"]["version"];
  }
  return m;
}

// One framework in this process: the simple, debuggable path for a single framework.
json train_here(const TrainArgs& a, const std::string& f, const std::string& out,
                ProgressLine& line) {
  TrainRequest req = train_request_from_json(train_params(a, f));
  req.out_dir = out;
  json m = train_run(req, progress_for(line, "train " + a.model + " " + f));
  line.done();
  m["provenance"] = machine_provenance();
  return with_library_version(std::move(m));
}

// One framework in a child process (a study cell of its own), so that a crash, an exit() or a
// hang inside its library is a recorded outcome and the other frameworks still run.
json train_isolated(const TrainArgs& a, const std::string& f, const std::string& out,
                    ProgressLine& line) {
  fs::create_directories(out);
  json params = train_params(a, f);
  CellSpec spec;
  spec.stage = "train";
  for (const char* axis : {"model", "dataset", "framework"}) {
    spec.axes.emplace_back(axis, params[axis]);
    params.erase(axis);
  }
  spec.params = params;
  spec.timeout_s = a.timeout_s;
  spec.id = cell_id(spec.stage, spec.axes, spec.params);
  const std::string spec_file = (fs::path(out) / "spec.json").string();
  cell_spec_write(spec_file, spec);
  CellObserver obs;
  obs.on_event = [&](const json& ev) {
    if (ev.value("event", "") != "progress") return;
    line.show("train " + a.model + " " + f + " | epoch " + std::to_string(ev.value("epoch", 0)) +
              "/" + std::to_string(ev.value("epochs", 0)) + " batch " +
              std::to_string(ev.value("batch", 0)) + "/" + std::to_string(ev.value("batches", 0)) +
              " loss " + fmt("%.4f", ev.value("loss", 0.0)) + " " +
              fmt("%.0f", ev.value("samples_per_s", 0.0)) + " samples/s");
  };
  const CellOutcome o = cell_execute(
      spec.id,
      {fs::canonical("/proc/self/exe").string(), "__cell", "--spec", spec_file, "--out", out},
      a.timeout_s, obs, (fs::path(out) / "output.log").string());
  line.done();
  json m = o.metrics.is_object() ? o.metrics : json::object();
  m["framework"] = f;
  m["model"] = a.model;
  m["dataset"] = a.dataset;
  m["status"] = o.status;
  std::string message = o.message;
  if (o.status == "crashed") message = "killed by " + o.signal_name + ": " + o.stderr_tail;
  if (o.status == "timeout") message = "no result after " + fmt("%.0f", a.timeout_s) + " s";
  if (o.status == "failed" && message.empty()) message = o.stderr_tail;
  if (!message.empty()) m["message"] = message;
  m["process_seconds"] = o.elapsed_s;
  m["outputs"] = o.outputs;
  m["provenance"] = o.provenance;
  return m;
}

json pairwise(const json& runs) {
  json pairs = json::array();
  for (std::size_t i = 0; i < runs.size(); ++i) {
    for (std::size_t j = i + 1; j < runs.size(); ++j) {
      const json &a = runs[i], &b = runs[j];
      if (a["status"] != "ok" || b["status"] != "ok" || !a.contains("outputs") ||
          !b.contains("outputs"))
        continue;
      const auto pa = a["outputs"]["test_predictions"].get<std::vector<std::int64_t>>();
      const auto pb = b["outputs"]["test_predictions"].get<std::vector<std::int64_t>>();
      const auto y = a["outputs"]["test_labels"].get<std::vector<std::int64_t>>();
      const PairAgreement p = compare_predictions(pa, pb, y);
      pairs.push_back({{"a", a["framework"]},
                       {"b", b["framework"]},
                       {"n", p.n},
                       {"disagreement", p.disagreement},
                       {"only_a_correct", p.only_a_correct},
                       {"only_b_correct", p.only_b_correct},
                       {"mcnemar_p", p.mcnemar_p},
                       {"significant", p.mcnemar_p < 0.05}});
    }
  }
  return pairs;
}

int cmd_train(const TrainArgs& a) {
  const auto frameworks = split_list(a.frameworks);
  if (frameworks.empty()) throw InputError("--framework: no framework named");
  for (std::size_t i = 0; i < frameworks.size(); ++i) {
    (void)make_framework(frameworks[i]);  // a typo or a missing adapter: exit 2
    for (std::size_t j = 0; j < i; ++j)
      if (frameworks[i] == frameworks[j])
        throw InputError("--framework: " + frameworks[i] + " is named twice");
  }
  (void)train_request_from_json(train_params(a, frameworks[0]));  // bad values: exit 2 now
  const bool isolated = frameworks.size() > 1;
  std::string out = a.out, scratch;
  if (isolated && out.empty()) {
    // The children need a place for their artefacts; without --out they are not kept.
    std::string tmpl = (fs::temp_directory_path() / "crossdl-train-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw InputError("cannot create a temporary folder");
    out = scratch = tmpl;
  }
  json runs = json::array();
  int rc = 0;
  ProgressLine line;
  for (const auto& f : frameworks) {
    json m = isolated ? train_isolated(a, f, (fs::path(out) / f).string(), line)
                      : train_here(a, f, out, line);
    if (m["status"] != "ok" && m["status"] != "skipped") rc = kExitFinding;
    runs.push_back(std::move(m));
  }
  const json pairs = pairwise(runs);
  for (auto& m : runs) m.erase("outputs");
  if (!scratch.empty()) {
    fs::remove_all(scratch);
    for (auto& m : runs) m["artefact"] = nullptr;
  }
  if (a.as_json) {
    std::cout << (runs.size() == 1 ? runs[0] : json{{"runs", runs}, {"pairs", pairs}}).dump(2)
              << "\n";
    return rc;
  }
  std::printf("%-9s %-9s %-14s %-8s %-9s %-10s %-10s %-13s %s\n", "framework", "model", "dataset",
              "status", "test acc", "time (s)", "RSS (MB)", "weights", "artefact / message");
  for (const auto& m : runs) {
    const bool ok = m["status"] == "ok";
    std::printf("%-9s %-9s %-14s %-8s %-9s %-10s %-10s %-13s %s\n",
                m["framework"].get<std::string>().c_str(), m["model"].get<std::string>().c_str(),
                m["dataset"].get<std::string>().c_str(), m["status"].get<std::string>().c_str(),
                ok ? fmt("%.4f", m["test_accuracy"].get<double>()).c_str() : "-",
                ok ? fmt("%.2f", m["seconds"].get<double>()).c_str() : "-",
                ok ? fmt("%.0f", m["peak_rss_mb"].get<double>()).c_str() : "-",
                ok ? m["weights_sha256"].get<std::string>().substr(0, 12).c_str() : "-",
                ok && m["artefact"].is_string() ? m["artefact"].get<std::string>().c_str()
                                                : m.value("message", "").substr(0, 300).c_str());
  }
  const json& first = runs[0];
  std::printf(
      "(%lld train / %lld test examples, seed %llu, batch %lld, %d thread(s); every "
      "framework started from initial weights %s)\n",
      first.value("train_size", 0LL), first.value("test_size", 0LL),
      static_cast<unsigned long long>(a.seed), static_cast<long long>(a.batch_size), a.threads,
      first.value("initial_weights_sha256", std::string("?")).substr(0, 12).c_str());
  if (!pairs.empty()) {
    std::printf("\n%-9s %-9s %-16s %-12s %-12s %-10s %s\n", "A", "B", "disagreement",
                "only A right", "only B right", "McNemar p", "difference");
    for (const auto& p : pairs) {
      const bool a_better =
          p["only_a_correct"].get<long long>() > p["only_b_correct"].get<long long>();
      std::printf(
          "%-9s %-9s %-16s %-12lld %-12lld %-10s %s\n", p["a"].get<std::string>().c_str(),
          p["b"].get<std::string>().c_str(),
          (fmt("%.2f", 100.0 * p["disagreement"].get<double>()) + " %").c_str(),
          p["only_a_correct"].get<long long>(), p["only_b_correct"].get<long long>(),
          fmt("%.3g", p["mcnemar_p"].get<double>()).c_str(),
          p["significant"].get<bool>()
              ? ((a_better ? p["a"] : p["b"]).get<std::string>() + " better (p < 0.05)").c_str()
              : "not significant");
    }
  }
  return rc;
}

// ---- eval --------------------------------------------------------------------------------------
int cmd_eval(const std::string& model_file, const std::string& dataset,
             const std::string& framework, std::int64_t test_limit, int threads,
             const std::string& out, bool as_json) {
  OnnxModel om = onnx_read(model_file);
  DataOptions dopt;
  dopt.test_limit = test_limit;
  dopt.train_limit = 1;  // evaluation reads the test split only
  Dataset ds = load_dataset(dataset, dopt);
  if (om.model.input_shape != ds.sample_shape())
    throw InputError(model_file + ": model input " + shape_str(om.model.input_shape) +
                     " does not match " + dataset + " samples " + shape_str(ds.sample_shape()));
  if (om.model.num_classes != ds.num_classes)
    throw InputError(model_file + ": model has " + std::to_string(om.model.num_classes) +
                     " classes, " + dataset + " has " + std::to_string(ds.num_classes));
  auto fw = make_framework(framework);
  json m = {{"framework", framework},
            {"model", model_file},
            {"dataset", dataset},
            {"test_size", ds.test.size()},
            {"threads", threads},
            {"weights_sha256", om.weights.sha256()},
            {"provenance", machine_provenance()}};
  const Capability cap = fw->supports(om.model);
  int rc = 0;
  if (!cap.ok) {
    m["status"] = "skipped";
    m["message"] = cap.why;
  } else {
    Status st;
    RunOptions ro;
    ro.threads = threads;
    auto runner = fw->load(om.model, om.weights, ro, st);
    if (!st.is_ok()) {
      m["status"] = "failed";
      m["message"] = st.message();
      rc = kExitFinding;
    } else {
      EvalResult r = evaluate_split(ds, ds.test, 1000, [&](const Tensor& x, Tensor& logits) {
        return runner->infer(x, logits);
      });
      m["status"] = "ok";
      m["test_accuracy"] = r.accuracy;
      m["seconds"] = r.seconds;
      m["peak_rss_mb"] = peak_rss_mb();
      if (!out.empty()) {
        fs::create_directories(out);
        npy_write((fs::path(out) / "test_logits.npy").string(), r.logits);
        npy_write((fs::path(out) / "test_predictions.npy").string(), r.predictions);
      }
    }
  }
  if (as_json) {
    std::cout << m.dump(2) << "\n";
  } else if (m["status"] == "ok") {
    std::printf("%s on %s (%lld test examples): accuracy %.4f in %.2f s, peak RSS %.0f MB\n",
                framework.c_str(), dataset.c_str(), static_cast<long long>(ds.test.size()),
                m["test_accuracy"].get<double>(), m["seconds"].get<double>(),
                m["peak_rss_mb"].get<double>());
  } else {
    std::printf("%s: %s: %s\n", framework.c_str(), m["status"].get<std::string>().c_str(),
                m["message"].get<std::string>().c_str());
  }
  return rc;
}

// ---- study cells (the child side) -------------------------------------------------------------
void print_study_summary(const json& s) {
  std::string by_status;
  const json counts = s.value("by_status", json::object());
  for (const auto& [status, n] : counts.items())
    by_status +=
        (by_status.empty() ? "" : ", ") + std::to_string(n.get<long long>()) + " " + status;
  std::printf("study %s: %lld cells (%s); %lld run now, %lld already done; %.1f s\n",
              s.value("study", "").c_str(), s.value("cells", 0LL), by_status.c_str(),
              s.value("ran", 0LL), s.value("skipped_done", 0LL), s.value("wall_s", 0.0));
  const json findings = s.value("findings", json::array());
  for (const auto& f : findings)
    std::printf("  finding: %s %s: %s\n", f.value("status", "").c_str(),
                f.value("label", "").c_str(), f.value("message", "").substr(0, 200).c_str());
  if (s.contains("report") && s["report"].is_string())
    std::printf("report: %s\n", s["report"].get<std::string>().c_str());
}

// A misspelt parameter or a bad value stops the study before anything runs, naming the cell.
void validate_cells(const Study& s) {
  for (const CellSpec& c : study_plan(s)) {
    try {
      const StageKind* k = find_stage(c.stage);
      if (k != nullptr && k->validate) k->validate(c);
    } catch (const InputError& e) {
      throw InputError(s.source + ": cell '" + c.label() + "': " + e.what());
    }
  }
}

// The child side of a study cell: its stage kind runs it, and the result goes to the parent as
// the last event.
int cmd_cell(const std::string& spec_file, const std::string& out_dir) {
  const CellSpec spec = cell_spec_read(spec_file);
  json result = {{"event", "result"}};
  result["provenance"] = machine_provenance();
  int rc = 0;
  try {
    const StageKind* k = find_stage(spec.stage);
    if (k == nullptr || !k->run)
      throw InputError("cell stage '" + spec.stage + "' is not known to this crossdl");
    StageContext ctx{spec, out_dir, {}};
    // Cells live side by side in STUDY/cells/: an input's folder is its id's.
    for (const auto& [role, id] : spec.inputs)
      ctx.inputs.emplace_back(role, (fs::path(out_dir).parent_path() / id).string());
    StageResult r = k->run(ctx);
    result["status"] = r.status;
    result["message"] = r.message;
    result["metrics"] = std::move(r.metrics);
    if (!r.outputs.empty()) result["outputs"] = std::move(r.outputs);
    for (const auto& [lib, version] : r.libraries.items())
      result["provenance"]["libraries"][lib] = version;
    if (r.status == "failed") rc = kExitFinding;
  } catch (const InputError& e) {
    result["status"] = "failed";
    result["message"] = std::string("bad input: ") + e.what();
    rc = kExitUsage;
  }
  emit_event(result);
  return rc;
}

}  // namespace
}  // namespace crossdl

int main(int argc, char** argv) {
  using namespace crossdl;
  CLI::App app{
      "crossdl: compare deep-learning frameworks, runtimes and precisions on the same "
      "model and weights"};
  app.set_version_flag("--version", std::string("crossdl ") +
                                        machine_provenance()["crossdl_version"].get<std::string>());
  app.require_subcommand(1);
  bool as_json = false;

  auto* doctor = app.add_subcommand("doctor", "Which frameworks and runtimes are usable here");
  doctor->add_flag("--json", as_json, "Machine-readable output");

  TrainArgs ta;
  auto* train = app.add_subcommand("train", "Train a zoo model in one or more frameworks");
  train
      ->add_option(
          "--model", ta.model,
          "Zoo model: " +
              [] {
                std::string s;
                for (const auto& n : zoo::model_names()) s += (s.empty() ? "" : ", ") + n;
                return s;
              }())
      ->required();
  train->add_option("--dataset", ta.dataset, "Dataset")->capture_default_str();
  train->add_option("--framework", ta.frameworks, "Framework(s), comma-separated")
      ->capture_default_str();
  train->add_option("--epochs", ta.epochs)->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--seed", ta.seed, "Seed of the initial weights and the minibatch order")
      ->capture_default_str();
  train->add_option("--out", ta.out, "Folder for model.onnx, metrics.json and the test logits");
  train->add_option("--batch-size", ta.batch_size)->capture_default_str();
  train->add_option("--optimizer", ta.optimizer)
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "adam"}));
  train->add_option("--lr", ta.lr)->capture_default_str();
  train->add_option("--momentum", ta.momentum)->capture_default_str();
  train->add_option("--weight-decay", ta.weight_decay)->capture_default_str();
  train->add_option("--schedule", ta.schedule)
      ->capture_default_str()
      ->check(CLI::IsMember({"constant", "step", "cosine"}));
  train->add_option("--step-size", ta.step_size, "Epochs between decays (step schedule)")
      ->capture_default_str();
  train->add_option("--gamma", ta.gamma, "Decay factor (step schedule)")->capture_default_str();
  train->add_option("--threads", ta.threads)->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--train-limit", ta.train_limit, "Use the first N training examples (0: all)")
      ->capture_default_str();
  train->add_option("--test-limit", ta.test_limit, "Use the first N test examples (0: all)")
      ->capture_default_str();
  train->add_option("--data-root", ta.data_root,
                    "Dataset folder (default: where setup installs it)");
  train->add_flag("--nondeterministic", ta.nondeterministic,
                  "Do not ask the framework for deterministic algorithms");
  train
      ->add_option("--timeout", ta.timeout_s,
                   "Seconds per framework when several run (each in its own process)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  train->add_flag("--json", ta.as_json, "Machine-readable output");

  std::string eval_model, eval_dataset = "fashion-mnist", eval_framework = "torch", eval_out;
  std::int64_t eval_limit = 0;
  int eval_threads = 1;
  auto* eval = app.add_subcommand("eval", "Evaluate an ONNX model written by crossdl");
  eval->add_option("--model", eval_model, "model.onnx")->required();
  eval->add_option("--dataset", eval_dataset)->capture_default_str();
  eval->add_option("--framework", eval_framework)->capture_default_str();
  eval->add_option("--test-limit", eval_limit)->capture_default_str();
  eval->add_option("--threads", eval_threads)->capture_default_str()->check(CLI::PositiveNumber);
  eval->add_option("--out", eval_out, "Folder for test_logits.npy and test_predictions.npy");
  eval->add_flag("--json", as_json, "Machine-readable output");

  auto* study = app.add_subcommand("study", "Run studies");
  study->require_subcommand(1);
  std::string study_file, study_out, study_preset_name = "quick", cell_dir, cell_id_arg;
  bool study_resume = false;
  auto* study_run_cmd =
      study->add_subcommand("run", "Run a study (the built-in default without a file)");
  study_run_cmd->add_option("study", study_file, "STUDY.yaml (see docs/study-format.md)");
  study_run_cmd->add_option("--out", study_out, "Output folder (store, artefacts, report)")
      ->required();
  study_run_cmd->add_option("--preset", study_preset_name, "Built-in study when no file is given")
      ->capture_default_str();
  study_run_cmd->add_flag("--resume", study_resume,
                          "Continue a study; finished cells are not redone");
  study_run_cmd->add_flag("--json", as_json, "Machine-readable summary");
  auto* study_cell = study->add_subcommand("cell", "Re-run one cell of a study in the foreground");
  study_cell->add_option("dir", cell_dir, "The study's --out folder")->required();
  study_cell->add_option("--id", cell_id_arg, "The cell id (from report.md)")->required();
  study_cell->add_flag("--json", as_json, "Machine-readable summary");

  std::string report_dir;
  auto* report = app.add_subcommand("report", "Write report.md, results.csv and results.json");
  report->add_option("dir", report_dir, "A study's --out folder")->required();
  report->add_flag("--json", as_json, "Print results.json's path as JSON");

  CommandSet more;
  add_compare_commands(app, more);
  add_conformance_command(app, more);
  add_quantize_command(app, more);

  std::string spec_file, cell_out;
  auto* cell = app.add_subcommand("__cell", "(internal) run one study cell");
  cell->group("");
  cell->add_option("--spec", spec_file)->required();
  cell->add_option("--out", cell_out)->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }

  try {
    register_builtin_stages();
    if (doctor->parsed()) return cmd_doctor(as_json);
    if (train->parsed()) return cmd_train(ta);
    if (eval->parsed())
      return cmd_eval(eval_model, eval_dataset, eval_framework, eval_limit, eval_threads, eval_out,
                      as_json);
    if (cell->parsed()) return cmd_cell(spec_file, cell_out);
    if (more.compare->parsed()) return more.run_compare();
    if (more.runtime_job->parsed()) return more.run_runtime_job();
    if (more.onnx_conformance.app->parsed()) return more.onnx_conformance.run();
    if (more.quantize.app->parsed()) return more.quantize.run();
    if (study_run_cmd->parsed()) {
      Study s = study_file.empty() ? study_preset(study_preset_name) : study_load(study_file);
      validate_cells(s);
      StudyRunOptions opt;
      opt.out_dir = study_out;
      opt.resume = study_resume;
      opt.json = as_json;
      opt.self_command_prefix = {fs::canonical("/proc/self/exe").string()};
      json summary;
      int rc = study_run(s, opt, &summary);
      if (as_json)
        std::cout << summary.dump(2) << "\n";
      else
        print_study_summary(summary);
      return rc;
    }
    if (study_cell->parsed()) {
      StudyRunOptions opt;
      opt.out_dir = cell_dir;
      opt.resume = true;
      opt.self_command_prefix = {fs::canonical("/proc/self/exe").string()};
      opt.json = as_json;
      json summary;
      const int rc = study_run_cell(cell_id_arg, opt, &summary);
      if (as_json) std::cout << summary.dump(2) << "\n";
      return rc;
    }
    if (report->parsed()) {
      report_write(report_dir);
      if (as_json)
        std::cout << json{{"report", (fs::path(report_dir) / "report.md").string()},
                          {"csv", (fs::path(report_dir) / "results.csv").string()},
                          {"json", (fs::path(report_dir) / "results.json").string()}}
                         .dump(2)
                  << "\n";
      else
        std::printf("wrote %s\n", (fs::path(report_dir) / "report.md").c_str());
      return 0;
    }
  } catch (const InputError& e) {
    std::fprintf(stderr, "crossdl: error: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    // Not the user's fault: report it as a failure of the work, never as a crash.
    std::fprintf(stderr, "crossdl: internal error: %s\n", e.what());
    return kExitFinding;
  }
  return kExitUsage;
}
