#include "crossdl/train.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "crossdl/npy.h"
#include "crossdl/onnx_io.h"
#include "crossdl/provenance.h"
#include "crossdl/zoo.h"

namespace crossdl {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void write_json(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
    if (!out) throw InputError(input_where(path, -1, "cannot write"));
  }
  std::filesystem::rename(tmp, path);
}

nlohmann::json framework_json(const FrameworkInfo& fi, const RunOptions& ro) {
  return {{"name", fi.name},     {"library", fi.library}, {"version", fi.version},
          {"device", fi.device}, {"threads", ro.threads}, {"deterministic", ro.deterministic}};
}

}  // namespace

nlohmann::json facts_json(const RunnerFacts& f) {
  nlohmann::json fj = nlohmann::json::object();
  for (const auto& [k, v] : f.numbers)
    fj[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
  for (const auto& [k, v] : f.text) fj[k] = v;
  return fj;
}

EvalResult evaluate_inputs(const EvalInputs& in, std::int64_t batch,
                           const std::function<Status(const Tensor&, Tensor&)>& infer) {
  const auto t0 = Clock::now();
  const std::int64_t n = in.n, classes = in.num_classes;
  EvalResult r;
  r.predictions = Tensor(DType::I64, {n});
  r.logits = Tensor(DType::F32, {n, classes}, Layout::NC);
  auto preds = r.predictions.values<std::int64_t>();
  auto logits = r.logits.values<float>();
  const auto labels = in.labels.values<std::int64_t>();
  std::vector<std::int64_t> idx;
  std::int64_t correct = 0;
  for (std::int64_t begin = 0; begin < n; begin += batch) {
    const std::int64_t end = std::min(n, begin + batch);
    idx.resize(static_cast<std::size_t>(end - begin));
    for (std::int64_t i = begin; i < end; ++i) idx[static_cast<std::size_t>(i - begin)] = i;
    Tensor out;
    Status st = infer(in.batch(idx), out);
    if (!st.is_ok()) throw std::runtime_error(st.message());
    if (out.shape() != Shape{end - begin, classes})
      throw std::runtime_error("framework returned logits of shape " + shape_str(out.shape()) +
                               ", expected " + shape_str({end - begin, classes}));
    const auto o = out.values<float>();
    std::copy(o.begin(), o.end(), logits.begin() + begin * classes);
    for (std::int64_t i = begin; i < end; ++i) {
      const float* row = &o[static_cast<std::size_t>((i - begin) * classes)];
      std::int64_t best = 0;
      for (std::int64_t c = 1; c < classes; ++c)
        if (row[c] > row[best]) best = c;  // a NaN row predicts class 0
      preds[static_cast<std::size_t>(i)] = best;
      correct += best == labels[static_cast<std::size_t>(i)];
    }
  }
  r.accuracy = n ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  r.seconds = since(t0);
  return r;
}

EvalInputs eval_inputs_of(const Dataset& ds, const Split& split) {
  EvalInputs in;
  in.n = split.size();
  in.num_classes = ds.num_classes;
  in.labels = split.y;
  in.batch = [&ds, &split](std::span<const std::int64_t> idx) {
    return make_batch(ds, split, idx);
  };
  return in;
}

EvalResult evaluate_split(const Dataset& ds, const Split& split, std::int64_t batch,
                          const std::function<Status(const Tensor&, Tensor&)>& infer) {
  return evaluate_inputs(eval_inputs_of(ds, split), batch, infer);
}

TrainRequest train_request_from_json(const nlohmann::json& p) {
  TrainRequest r;
  auto str = [&](const char* key, std::string& dst) {
    if (!p.contains(key)) return;
    if (!p[key].is_string() && !p[key].is_number())
      throw InputError(std::string("parameter ") + key + ": expected a string");
    dst = p[key].is_string() ? p[key].get<std::string>() : p[key].dump();
  };
  auto num = [&](const char* key, auto& dst) {
    if (!p.contains(key)) return;
    const auto& v = p[key];
    if (v.is_string()) {
      try {
        std::size_t used = 0;
        double d = std::stod(v.get<std::string>(), &used);
        if (used != v.get<std::string>().size()) throw std::invalid_argument("trailing");
        dst = static_cast<std::remove_reference_t<decltype(dst)>>(d);
        return;
      } catch (const std::exception&) {
        throw InputError(std::string("parameter ") + key + ": '" + v.get<std::string>() +
                         "' is not a number");
      }
    }
    if (!v.is_number()) throw InputError(std::string("parameter ") + key + ": expected a number");
    dst = v.get<std::remove_reference_t<decltype(dst)>>();
  };
  static const std::vector<std::string> known = {
      "model",        "dataset",    "framework", "optimizer",  "lr",       "momentum",
      "weight_decay", "beta1",      "beta2",     "adam_eps",   "schedule", "step_size",
      "gamma",        "batch_size", "epochs",    "seed",       "threads",  "deterministic",
      "train_limit",  "test_limit", "data_root", "vocab_size", "seq_len",  "eval_batch",
      "drop_last",    "replicate"};
  for (const auto& [key, value] : p.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      throw InputError("unknown training parameter '" + key + "'");
  str("model", r.model);
  str("dataset", r.dataset);
  str("framework", r.framework);
  str("optimizer", r.config.optimizer);
  str("schedule", r.config.schedule);
  str("data_root", r.data.root);
  num("lr", r.config.lr);
  num("momentum", r.config.momentum);
  num("weight_decay", r.config.weight_decay);
  num("beta1", r.config.beta1);
  num("beta2", r.config.beta2);
  num("adam_eps", r.config.adam_eps);
  num("step_size", r.config.step_size);
  num("gamma", r.config.gamma);
  num("batch_size", r.config.batch_size);
  num("epochs", r.config.epochs);
  num("seed", r.config.seed);
  num("threads", r.config.run.threads);
  num("train_limit", r.data.train_limit);
  num("test_limit", r.data.test_limit);
  num("vocab_size", r.data.vocab_size);
  num("seq_len", r.data.seq_len);
  num("eval_batch", r.eval_batch);
  if (p.contains("drop_last")) {
    if (!p["drop_last"].is_boolean())
      throw InputError("parameter drop_last: expected true or false");
    r.config.drop_last = p["drop_last"].get<bool>();
  }
  if (p.contains("deterministic")) {
    if (!p["deterministic"].is_boolean())
      throw InputError("parameter deterministic: expected true or false");
    r.config.run.deterministic = p["deterministic"].get<bool>();
  }
  num("replicate", r.replicate);
  r.data.seed = r.config.seed;
  if (r.config.optimizer != "sgd" && r.config.optimizer != "adam")
    throw InputError("parameter optimizer: '" + r.config.optimizer + "' is not one of sgd, adam");
  if (r.config.schedule != "constant" && r.config.schedule != "step" &&
      r.config.schedule != "cosine")
    throw InputError("parameter schedule: '" + r.config.schedule +
                     "' is not one of constant, step, cosine");
  if (r.config.batch_size < 1) throw InputError("parameter batch_size: must be at least 1");
  if (r.config.epochs < 1) throw InputError("parameter epochs: must be at least 1");
  if (r.config.run.threads < 1) throw InputError("parameter threads: must be at least 1");
  if (!(r.config.lr > 0)) throw InputError("parameter lr: must be positive");
  if (r.eval_batch < 1) throw InputError("parameter eval_batch: must be at least 1");
  return r;
}

nlohmann::json train_run(const TrainRequest& req, const TrainProgress& progress) {
  const auto t_start = Clock::now();
  const TrainConfig& cfg = req.config;
  Dataset ds = load_dataset(req.dataset, req.data);
  const ir::Model model = zoo::build(req.model, zoo::input_spec(ds));
  // A framework crossdl knows but this build lacks is a skip with its reason (a study's default
  // frameworks need not all be installed); an unknown name is the user's error.
  if (const BackendEntry* e = find_backend(req.framework); e != nullptr && !e->make_framework) {
    std::string why;
    if (e->probe) (void)e->probe(why);
    return {{"framework", req.framework},
            {"model", req.model},
            {"dataset", req.dataset},
            {"seed", cfg.seed},
            {"status", "skipped"},
            {"message", req.framework + " is not available: " + why + "; " + e->install_hint}};
  }
  std::unique_ptr<Framework> fw = make_framework(req.framework);
  const FrameworkInfo fi = fw->info();

  nlohmann::json m = {{"framework", req.framework},
                      {"model", req.model},
                      {"dataset", req.dataset},
                      {"seed", cfg.seed},
                      {"epochs", cfg.epochs},
                      {"batch_size", cfg.batch_size},
                      {"drop_last", cfg.drop_last},
                      {"optimizer", cfg.optimizer},
                      {"lr", cfg.lr},
                      {"momentum", cfg.momentum},
                      {"weight_decay", cfg.weight_decay},
                      {"schedule", cfg.schedule},
                      {"threads", cfg.run.threads},
                      {"replicate", req.replicate},
                      {"deterministic", cfg.run.deterministic},
                      {"train_size", ds.train.size()},
                      {"test_size", ds.test.size()},
                      {"full_train_size", ds.full_train_size},
                      {"full_test_size", ds.full_test_size},
                      {"framework_info", framework_json(fi, cfg.run)}};

  const Capability cap = fw->supports(model);
  if (!cap.ok) {
    m["status"] = "skipped";
    m["message"] = req.framework + " cannot express " + req.model + ": " + cap.why;
    return m;
  }
  auto fail = [&](const std::string& msg) {
    m["status"] = "failed";
    m["message"] = msg;
    return m;
  };

  const WeightSet init = init_weights(model, cfg.seed);
  m["initial_weights_sha256"] = init.sha256();
  Status st;
  std::unique_ptr<Trainer> trainer = fw->trainer(model, init, cfg, st);
  if (!st.is_ok()) {
    if (st.code() == Status::Code::BadInput) throw InputError(st.message());
    return fail(st.message());
  }

  const std::int64_t n = ds.train.size();
  if (n == 0) throw InputError("dataset " + req.dataset + " has no training examples");
  const std::int64_t batches =
      cfg.drop_last ? n / cfg.batch_size : (n + cfg.batch_size - 1) / cfg.batch_size;
  if (batches == 0)
    throw InputError("batch_size " + std::to_string(cfg.batch_size) + " is larger than the " +
                     std::to_string(n) + " training examples");
  nlohmann::json epochs = nlohmann::json::array();
  double train_seconds = 0;
  std::int64_t nonfinite_losses = 0;
  std::vector<std::int64_t> idx;
  for (int e = 0; e < cfg.epochs; ++e) {
    const auto order = epoch_order(n, cfg.seed, e);
    const double lr = scheduled_lr(cfg, e);
    const auto t_epoch = Clock::now();
    auto t_report = t_epoch;
    double loss_sum = 0;
    for (std::int64_t b = 0; b < batches; ++b) {
      const std::int64_t begin = b * cfg.batch_size, end = std::min(n, begin + cfg.batch_size);
      idx.assign(order.begin() + begin, order.begin() + end);
      double loss = 0;
      st = trainer->step(make_batch(ds, ds.train, idx), make_labels(ds.train, idx), lr, loss);
      if (!st.is_ok())
        return fail("epoch " + std::to_string(e + 1) + " batch " + std::to_string(b + 1) + ": " +
                    st.message());
      if (!std::isfinite(loss)) ++nonfinite_losses;
      loss_sum += loss;
      if (progress.on_batch && (since(t_report) > 0.5 || b + 1 == batches)) {
        t_report = Clock::now();
        progress.on_batch(e + 1, cfg.epochs, b + 1, batches, loss,
                          static_cast<double>(end) / since(t_epoch));
      }
    }
    TrainEpoch rec;
    rec.epoch = e + 1;
    rec.seconds = since(t_epoch);
    train_seconds += rec.seconds;
    rec.train_loss = loss_sum / static_cast<double>(batches);
    rec.samples_per_s = static_cast<double>(batches * cfg.batch_size) / rec.seconds;
    try {
      rec.test_accuracy =
          evaluate_split(ds, ds.test, req.eval_batch, [&](const Tensor& x, Tensor& out) {
            return trainer->infer(x, out);
          }).accuracy;
    } catch (const std::runtime_error& err) {
      return fail("evaluation after epoch " + std::to_string(e + 1) + ": " + err.what());
    }
    rec.peak_rss_mb = peak_rss_mb();
    if (progress.on_epoch) progress.on_epoch(rec);
    epochs.push_back({{"epoch", rec.epoch},
                      {"train_loss", rec.train_loss},
                      {"test_accuracy", rec.test_accuracy},
                      {"seconds", rec.seconds},
                      {"samples_per_s", rec.samples_per_s},
                      {"peak_rss_mb", rec.peak_rss_mb}});
  }

  WeightSet trained;
  st = trainer->export_weights(trained);
  if (!st.is_ok()) return fail(st.message());
  // What only the trainer can see (a browser's memory: crossdl's own peak RSS does not hold it).
  if (const nlohmann::json fj = facts_json(trainer->facts()); !fj.empty()) m["facts"] = fj;

  // Final evaluation through a fresh runner on the exported weights: it checks that the weight
  // set alone reproduces the trained model.
  std::unique_ptr<Runner> runner = fw->load(model, trained, cfg.run, st);
  if (!st.is_ok()) return fail("reloading the trained weights: " + st.message());
  EvalResult final_eval;
  try {
    final_eval = evaluate_split(ds, ds.test, req.eval_batch, [&](const Tensor& x, Tensor& out) {
      return runner->infer(x, out);
    });
  } catch (const std::runtime_error& err) {
    return fail(std::string("final evaluation: ") + err.what());
  }

  m["status"] = "ok";
  m["test_accuracy"] = final_eval.accuracy;
  m["train_loss"] = epochs.back()["train_loss"];
  m["seconds"] = train_seconds;
  m["eval_seconds"] = final_eval.seconds;
  m["peak_rss_mb"] = peak_rss_mb();
  m["weights_sha256"] = trained.sha256();
  m["parameters"] = trained.parameter_count();
  m["nonfinite_losses"] = nonfinite_losses;
  m["epoch_metrics"] = epochs;
  {
    const auto p = final_eval.predictions.values<std::int64_t>();
    const auto y = ds.test.y.values<std::int64_t>();
    m["outputs"] = {{"test_predictions", std::vector<std::int64_t>(p.begin(), p.end())},
                    {"test_labels", std::vector<std::int64_t>(y.begin(), y.end())}};
  }

  if (!req.out_dir.empty()) {
    std::filesystem::create_directories(req.out_dir);
    const std::string artefact = (std::filesystem::path(req.out_dir) / "model.onnx").string();
    OnnxWriteOptions wo;
    wo.metadata = {{"crossdl.framework", req.framework},
                   {"crossdl.dataset", req.dataset},
                   {"crossdl.seed", std::to_string(cfg.seed)},
                   {"crossdl.weights_sha256", trained.sha256()}};
    onnx_write(artefact, model, trained, wo);
    npy_write((std::filesystem::path(req.out_dir) / "test_logits.npy").string(), final_eval.logits);
    npy_write((std::filesystem::path(req.out_dir) / "test_predictions.npy").string(),
              final_eval.predictions);
    npy_write((std::filesystem::path(req.out_dir) / "test_labels.npy").string(), ds.test.y);
    m["artefact"] = std::filesystem::absolute(artefact).string();
    m["wall_seconds"] = since(t_start);
    nlohmann::json on_disk = m;
    on_disk.erase("outputs");  // they are in the .npy files beside it
    write_json((std::filesystem::path(req.out_dir) / "metrics.json").string(), on_disk);
  } else {
    m["artefact"] = nullptr;
    m["wall_seconds"] = since(t_start);
  }
  return m;
}

}  // namespace crossdl
