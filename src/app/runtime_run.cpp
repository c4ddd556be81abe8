// One runtime on one model, in this process: export → load → accuracy pass → latency → layers.
// `crossdl compare` runs this in a child process per runtime, so that a runtime that crashes or
// hangs is an outcome and not the end of the comparison.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>

#include "crossdl/compare.h"
#include "crossdl/npy.h"
#include "crossdl/onnx_io.h"
#include "crossdl/provenance.h"
#include "crossdl/quantize.h"
#include "crossdl/runtime.h"
#include "crossdl/train.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {

json RuntimeJob::to_json() const {
  return {{"runtime", runtime},
          {"model_path", model_path},
          {"dataset", dataset},
          {"test_limit", data.test_limit},
          {"data_root", data.root},
          {"out_dir", out_dir},
          {"threads", threads},
          {"opset", opset},
          {"batch", batch},
          {"latency_runs", latency_runs},
          {"layers", layers},
          {"layer_examples", layer_examples},
          {"inputs_path", inputs_path},
          {"labels_path", labels_path},
          {"precision", precision},
          {"quant", quant}};
}

RuntimeJob RuntimeJob::from_json(const json& j) {
  using Set = void (*)(RuntimeJob&, const json&);
  // One setter per key, so that a new key is one line and an unknown one is named.
  static const std::map<std::string, Set> setters = {
      {"runtime", [](RuntimeJob& r, const json& v) { r.runtime = v.get<std::string>(); }},
      {"model_path", [](RuntimeJob& r, const json& v) { r.model_path = v.get<std::string>(); }},
      {"dataset", [](RuntimeJob& r, const json& v) { r.dataset = v.get<std::string>(); }},
      {"test_limit",
       [](RuntimeJob& r, const json& v) { r.data.test_limit = v.get<std::int64_t>(); }},
      {"data_root", [](RuntimeJob& r, const json& v) { r.data.root = v.get<std::string>(); }},
      {"out_dir", [](RuntimeJob& r, const json& v) { r.out_dir = v.get<std::string>(); }},
      {"threads", [](RuntimeJob& r, const json& v) { r.threads = v.get<int>(); }},
      {"opset", [](RuntimeJob& r, const json& v) { r.opset = v.get<int>(); }},
      {"batch", [](RuntimeJob& r, const json& v) { r.batch = v.get<std::int64_t>(); }},
      {"latency_runs",
       [](RuntimeJob& r, const json& v) { r.latency_runs = v.get<std::int64_t>(); }},
      {"layers", [](RuntimeJob& r, const json& v) { r.layers = v.get<bool>(); }},
      {"layer_examples",
       [](RuntimeJob& r, const json& v) { r.layer_examples = v.get<std::int64_t>(); }},
      {"inputs_path", [](RuntimeJob& r, const json& v) { r.inputs_path = v.get<std::string>(); }},
      {"labels_path", [](RuntimeJob& r, const json& v) { r.labels_path = v.get<std::string>(); }},
      {"precision", [](RuntimeJob& r, const json& v) { r.precision = v.get<std::string>(); }},
      {"quant", [](RuntimeJob& r, const json& v) { r.quant = v; }},
  };
  RuntimeJob r;
  if (!j.is_object()) throw InputError("runtime job: expected a JSON object");
  for (const auto& [k, v] : j.items()) {
    auto it = setters.find(k);
    if (it == setters.end()) throw InputError("runtime job: unknown key '" + k + "'");
    try {
      it->second(r, v);
    } catch (const json::exception& e) {
      throw InputError("runtime job: bad value for '" + k + "': " + e.what());
    }
  }
  if (r.runtime.empty() || r.model_path.empty() || r.out_dir.empty())
    throw InputError("runtime job: runtime, model_path and out_dir are required");
  if (r.batch < 1 || r.threads < 1 || r.latency_runs < 0 || r.layer_examples < 1)
    throw InputError("runtime job: batch, threads and layer_examples must be >= 1");
  if (r.inputs_path.empty() != r.labels_path.empty())
    throw InputError("runtime job: inputs_path and labels_path go together");
  return r;
}

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string status_name(const Status& s) {
  return s.code() == Status::Code::Unsupported ? "skipped" : "failed";
}

// A layer name as a file name: layer names may hold '/' or '.'.
std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return out;
}

// Rows of a tensor [N, ...] by index.
Tensor gather_rows(const Tensor& t, std::span<const std::int64_t> idx) {
  Shape shape = t.shape();
  shape[0] = static_cast<std::int64_t>(idx.size());
  Tensor out(t.dtype(), shape, t.layout());
  const std::size_t row = t.nbytes() / static_cast<std::size_t>(t.dim(0));
  for (std::size_t i = 0; i < idx.size(); ++i)
    std::memcpy(out.raw() + i * row, t.raw() + static_cast<std::size_t>(idx[i]) * row, row);
  return out;
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> read_layer_outputs(const std::string& dir,
                                                               const json& result) {
  std::vector<std::pair<std::string, Tensor>> out;
  if (!result.contains("layers") || !result["layers"].is_array()) return out;
  for (const auto& l : result["layers"])
    out.emplace_back(l.at("layer").get<std::string>(),
                     npy_read((fs::path(dir) / l.at("file").get<std::string>()).string()));
  return out;
}

namespace {

// Each quantized output of q, captured by running the graph cut after it (quant::quant_prefix).
Status capture_prefixes(Runtime& rt, const quant::QuantModel& q, const ExportOptions& eo,
                        const RunOptions& ro, const Tensor& x, const std::string& out_dir,
                        std::vector<LayerOutput>& outs) {
  const std::vector<Shape> shapes = ir::infer_shapes(q.model);
  for (std::size_t i = 0; i < q.model.layers.size(); ++i) {
    const ir::Layer& l = q.model.layers[i];
    if (!quant::quant_output(q, q.model, l.name)) continue;
    const quant::QuantModel p = quant::quant_prefix(q, l.name);
    ExportOptions pe = eo;
    pe.quant = &p;
    pe.layer_outputs = false;
    Artefact a;
    const std::string dir =
        (fs::path(out_dir) / "artefact-prefixes" / (std::to_string(i) + "_" + file_safe(l.name)))
            .string();
    if (Status s = rt.export_model(p.model, p.weights, dir, pe, a); !s.is_ok())
      return s.prefixed("prefix " + l.name);
    Status s;
    std::unique_ptr<Runner> runner = rt.load(a, p.model, ro, s);
    if (!s.is_ok() || !runner)
      return s.is_ok() ? Status::failed("prefix " + l.name + ": no runner")
                       : s.prefixed("prefix " + l.name);
    Tensor flat;
    if (Status si = runner->infer(x, flat); !si.is_ok()) return si.prefixed("prefix " + l.name);
    Shape shape = shapes[i];
    shape.insert(shape.begin(), x.dim(0));
    outs.push_back({l.name, flat.reshaped(shape)});
  }
  return Status::ok();
}

}  // namespace

void job_inputs(const RuntimeJob& job, const Dataset& ds, JobInputs& in) {
  if (job.inputs_path.empty()) {
    in.eval = eval_inputs_of(ds, ds.test);
    in.source = job.dataset + " test split";
    return;
  }
  Tensor x = npy_read(job.inputs_path), y = npy_read(job.labels_path);
  Shape want = ds.sample_shape();
  want.insert(want.begin(), x.rank() > 0 ? x.dim(0) : 0);
  if (x.dtype() != ds.sample_dtype() || x.shape() != want)
    throw InputError(job.inputs_path + ": inputs are " + std::string(dtype_name(x.dtype())) + " " +
                     shape_str(x.shape()) + ", the model takes " +
                     std::string(dtype_name(ds.sample_dtype())) + " " + shape_str(want));
  if (y.dtype() != DType::I64 || y.shape() != Shape{x.dim(0)})
    throw InputError(job.labels_path + ": labels must be I64 [" + std::to_string(x.dim(0)) +
                     "], got " + std::string(dtype_name(y.dtype())) + " " + shape_str(y.shape()));
  for (std::int64_t v : y.values<std::int64_t>())
    if (v < 0 || v >= ds.num_classes)
      throw InputError(job.labels_path + ": label " + std::to_string(v) + " outside [0, " +
                       std::to_string(ds.num_classes) + ")");
  const std::int64_t n =
      job.data.test_limit > 0 ? std::min(job.data.test_limit, x.dim(0)) : x.dim(0);
  in.x = x.slice_rows(0, n);
  in.eval.n = n;
  in.eval.num_classes = ds.num_classes;
  in.eval.labels = y.slice_rows(0, n);
  const Tensor* xs = &in.x;
  in.eval.batch = [xs](std::span<const std::int64_t> idx) { return gather_rows(*xs, idx); };
  in.source = job.inputs_path;
}

json runtime_run(const RuntimeJob& job) {
  OnnxModel om = onnx_read(job.model_path);
  Dataset ds = [&] {
    DataOptions d = job.data;
    d.train_limit = 1;  // only the test split is used
    return load_dataset(job.dataset, d);
  }();
  JobInputs inputs;
  job_inputs(job, ds, inputs);
  const EvalInputs& in = inputs.eval;
  if (om.model.input_shape != ds.sample_shape())
    throw InputError(job.model_path + ": model input " + shape_str(om.model.input_shape) +
                     " does not match " + job.dataset + " samples " + shape_str(ds.sample_shape()));
  if (om.model.num_classes != ds.num_classes)
    throw InputError(job.model_path + ": model has " + std::to_string(om.model.num_classes) +
                     " classes, " + job.dataset + " has " + std::to_string(ds.num_classes));
  fs::create_directories(job.out_dir);

  // A runtime crossdl knows but this binary lacks is a skip with the remedy; an unknown name is
  // the user's typo (InputError from make_runtime).
  if (const BackendEntry* e = find_backend(job.runtime); e != nullptr && !e->make_runtime) {
    json r = {{"runtime", job.runtime},
              {"status", "skipped"},
              {"message", "runtime not built into this crossdl (" + e->install_hint + ")"}};
    std::ofstream(fs::path(job.out_dir) / "result.json") << r.dump(2) << "\n";
    return r;
  }
  std::unique_ptr<Runtime> rt = make_runtime(job.runtime);  // InputError for an unknown name
  const FrameworkInfo info = rt->info();
  json r = {{"runtime", job.runtime},
            {"library", info.library},
            {"version", info.version},
            {"device", info.device},
            {"threads", job.threads},
            {"model", job.model_path},
            {"weights_sha256", om.weights.sha256()},
            {"test_size", in.n},
            {"inputs", inputs.source}};
  auto finish = [&](const std::string& status, const std::string& message) {
    r["status"] = status;
    r["message"] = message;
    r["peak_rss_mb"] = peak_rss_mb();
    std::ofstream(fs::path(job.out_dir) / "result.json") << r.dump(2) << "\n";
    return r;
  };

  if (Capability c = rt->supports(om.model); !c.ok) return finish("skipped", c.why);

  // Reduced precision: crossdl's quantization of the model (deterministic: every runtime's child
  // computes the same parameters from the same calibration set, and records their hash), written
  // by the runtime in its own format. A runtime without it, or a model the scheme cannot express,
  // is a skip with the reason.
  std::optional<quant::QuantModel> q;
  const ir::Model* model = &om.model;
  const WeightSet* weights = &om.weights;
  r["precision"] = job.precision;
  if (job.precision != "fp32") {
    json qo = job.quant.is_object() ? job.quant : json::object();
    qo["scheme"] = job.precision;
    const quant::QuantOptions qopt = quant_options_from_json(qo);  // bad options: InputError
    if (Capability c = rt->supports_precision(qopt); !c.ok) return finish("skipped", c.why);
    try {
      q = quantize_trained(om, job.dataset, job.data, qopt);
    } catch (const InputError& e) {
      return finish("skipped", std::string("quantize: ") + e.what());
    }
    r["quant_params_sha256"] = sha256_hex(std::string_view(q->to_json().dump()));
    r["calibration"] = q->calibration;
    model = &q->model;
    weights = &q->weights;
  }

  RunOptions ro;
  ro.threads = job.threads;
  // The process's peak RSS is mostly the libraries crossdl links and the dataset; what the
  // runtime itself holds shows as the growth of the resident set over export, load and the run.
  const double rss_before = current_rss_mb();
  ExportOptions eo;
  eo.onnx_opset = job.opset;
  eo.quant = q ? &*q : nullptr;
  Artefact art;
  auto t0 = std::chrono::steady_clock::now();
  Status st =
      rt->export_model(*model, *weights, (fs::path(job.out_dir) / "artefact").string(), eo, art);
  r["export_ms"] = ms_since(t0);
  r["artefact"] = {{"format", art.format},
                   {"bytes", art.bytes},
                   {"files", art.files},
                   {"conversions", art.conversions}};
  if (!st.is_ok()) return finish(status_name(st), "export: " + st.message());

  t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Runner> runner = rt->load(art, *model, ro, st);
  r["load_ms"] = ms_since(t0);
  if (!st.is_ok() || runner == nullptr)
    return finish(status_name(st), "load: " + (st.is_ok() ? "no runner" : st.message()));
  // A runtime may know more once loaded (a web runtime: the browser and what its backend runs on).
  const FrameworkInfo loaded = rt->info();
  r["library"] = loaded.library;
  r["version"] = loaded.version;
  r["device"] = loaded.device;

  const std::int64_t n = in.n;
  // The first inference after load, batch 1: lazy initialisation (kernels compiled, shaders
  // built, memory planned) shows here and not in the steady-state latency. Timed where the
  // runtime runs, like the latency below (in the page for a browser runtime).
  if (n > 0) {
    const std::int64_t idx[1] = {0};
    std::vector<double> first;
    Status s = runner->timed_runs(in.batch(idx), 0, first);
    if (!s.is_ok()) return finish(status_name(s), "infer (first, batch 1): " + s.message());
    if (first.size() == 1) r["first_infer_ms"] = first[0];
  }

  // The accuracy pass, in batches.
  Status infer_status;
  EvalResult ev = evaluate_inputs(in, job.batch, [&](const Tensor& x, Tensor& logits) {
    Status s = runner->infer(x, logits);
    if (!s.is_ok()) infer_status = s;
    return s;
  });
  if (!infer_status.is_ok())
    return finish(status_name(infer_status), "infer: " + infer_status.message());
  r["accuracy"] = ev.accuracy;
  r["rss_growth_mb"] = current_rss_mb() - rss_before;
  r["eval_seconds"] = ev.seconds;
  npy_write((fs::path(job.out_dir) / "logits.npy").string(), ev.logits);
  r["logits"] = "logits.npy";

  // Latency: single examples, after three untimed runs (first-run allocation and lazy init),
  // timed where the runtime runs (Runner::timed_runs: in the page for a browser).
  std::vector<double> lat;
  if (job.latency_runs > 0 && n > 0) {
    std::vector<std::int64_t> idx(static_cast<std::size_t>(job.latency_runs));
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<std::int64_t>(i) % n;
    const Tensor xs = in.batch(idx);
    Status s = runner->timed_runs(xs, 3, lat);
    if (!s.is_ok()) return finish(status_name(s), "infer (batch 1, timed): " + s.message());
    if (lat.size() != idx.size())
      return finish("failed", "timed runs: " + std::to_string(lat.size()) + " times for " +
                                  std::to_string(idx.size()) + " samples");
  }
  r["latency_ms"] = {{"p50", percentile(lat, 0.5)},
                     {"p95", percentile(lat, 0.95)},
                     {"runs", lat.size()},
                     {"batch", 1}};
  // What only the runtime can see (a browser's memory, what its backend ran on).
  if (const json fj = facts_json(runner->facts()); !fj.empty()) r["facts"] = fj;
  runner.reset();

  if (job.layers) {
    std::vector<std::int64_t> idx(static_cast<std::size_t>(std::min(job.layer_examples, n)));
    std::iota(idx.begin(), idx.end(), 0);
    std::vector<LayerOutput> outs;
    Status ls;
    if (q && q->options.scheme == quant::Scheme::Int8Static) {
      // int8: one artefact per quantized output, the graph cut after it, so that the runtime
      // fuses each as it fuses the whole graph (extra outputs change ONNX Runtime's fusion).
      ls = capture_prefixes(*rt, *q, eo, ro, in.batch(idx), job.out_dir, outs);
      r["layers_method"] =
          "one artefact per quantized output (the graph cut after it), run on the same inputs";
    } else {
      // A second artefact with every layer exposed: extra outputs can change what a runtime
      // fuses, so the timed artefact above stays plain.
      ExportOptions le = eo;
      le.layer_outputs = true;
      Artefact la;
      ls = rt->export_model(*model, *weights, (fs::path(job.out_dir) / "artefact-layers").string(),
                            le, la);
      std::unique_ptr<Runner> lr;
      if (ls.is_ok()) lr = rt->load(la, *model, ro, ls);
      if (ls.is_ok() && lr) ls = lr->layer_outputs(in.batch(idx), outs);
      r["layers_method"] = "one artefact with every layer output exposed";
    }
    if (!ls.is_ok()) {
      r["layers_status"] = status_name(ls);
      r["layers_message"] = ls.message();
    } else {
      fs::create_directories(fs::path(job.out_dir) / "layers");
      json list = json::array();
      for (std::size_t i = 0; i < outs.size(); ++i) {
        const std::string f =
            "layers/" + std::to_string(i) + "_" + file_safe(outs[i].layer) + ".npy";
        npy_write((fs::path(job.out_dir) / f).string(), outs[i].value);
        list.push_back({{"layer", outs[i].layer}, {"file", f}});
      }
      r["layers_status"] = "ok";
      r["layers"] = list;
      r["layer_examples"] = std::min(job.layer_examples, n);
    }
  }
  return finish("ok", "");
}

}  // namespace crossdl
