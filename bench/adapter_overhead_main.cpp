// One run of the adapter-overhead benchmark, in its own process (the driver,
// bench/train_adapters_vs_native.py, alternates the sides and takes medians).
//
//   crossdl_train_bench --framework torch|dlib|darknet --side crossdl|native|native-manual
//                       [--train-size N] [--seed S]
//
// side crossdl: crossdl's own training pipeline, train_run(), i.e. what `crossdl train --model
//   lenet5 --dataset fashion-mnist --framework F --epochs 1 --threads 1` does; "seconds" is
//   train_run's training-loop time (evaluation excluded).
// side native: the loop a user of the library writes by hand, on the same data (crossdl's loader
//   and normalisation), the same initial weights (init_weights) and the same minibatch order
//   (epoch_order); the data is prepared before the clock starts.
// side native-manual (dlib only): dlib computing the gradients and a hand-written SGD update,
//   the same split of work as the crossdl adapter.
// Prints one JSON line on stdout (the last line).
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <string>

#include <nlohmann/json.hpp>

#include "adapter_overhead.h"
#include "crossdl/provenance.h"
#include "crossdl/status.h"
#include "crossdl/train.h"
#include "crossdl/zoo.h"

namespace crossdl::bench {

double accuracy_of(const float* logits, std::int64_t rows, std::int64_t classes,
                   const std::int64_t* labels) {
  std::int64_t correct = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * classes;
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < classes; ++c)
      if (row[c] > row[best]) best = c;
    correct += best == labels[r];
  }
  return rows ? static_cast<double>(correct) / static_cast<double>(rows) : 0.0;
}

namespace {

struct Options {
  std::string framework, side;
  std::int64_t train_size = 0;  // 0: the framework's default
  std::uint64_t seed = 1;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "crossdl_train_bench: " << why
            << "\nusage: crossdl_train_bench --framework torch|dlib|darknet "
               "--side crossdl|native|native-manual [--train-size N] [--seed S]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage("missing value after " + a);
    const std::string v = argv[++i];
    if (a == "--framework")
      o.framework = v;
    else if (a == "--side")
      o.side = v;
    else if (a == "--train-size")
      o.train_size = std::stoll(v);
    else if (a == "--seed")
      o.seed = std::stoull(v);
    else
      usage("unknown option " + a);
  }
  if (o.framework != "torch" && o.framework != "dlib" && o.framework != "darknet")
    usage("--framework must be torch, dlib or darknet");
  if (o.side != "crossdl" && o.side != "native" &&
      !(o.side == "native-manual" && o.framework == "dlib"))
    usage("--side must be crossdl or native (or native-manual for dlib)");
  if (o.train_size == 0) o.train_size = o.framework == "torch" ? 60000 : 10000;
  if (o.train_size < 64) usage("--train-size must be at least one minibatch (64)");
  return o;
}

TrainRequest request(const Options& o) {
  TrainRequest r;
  r.model = "lenet5";
  r.dataset = "fashion-mnist";
  r.framework = o.framework;
  r.data.train_limit = o.train_size;
  r.data.seed = o.seed;
  r.config.optimizer = "sgd";
  r.config.lr = 0.02;
  r.config.momentum = 0.9;
  r.config.batch_size = 64;
  r.config.epochs = 1;
  r.config.seed = o.seed;
  r.config.run.threads = 1;
  r.config.run.deterministic = true;
  return r;
}

nlohmann::json run_crossdl(const Options& o) {
  nlohmann::json m = train_run(request(o), TrainProgress{});
  if (m.value("status", "") != "ok")
    throw std::runtime_error("crossdl train_run: " + m.value("status", std::string("?")) + ": " +
                             m.value("message", std::string()));
  return {{"seconds", m["seconds"]},
          {"train_loss", m["train_loss"]},
          {"test_accuracy", m["test_accuracy"]},
          {"initial_weights_sha256", m["initial_weights_sha256"]},
          {"train_size", m["train_size"]},
          {"baseline", "crossdl train_run (" + o.framework + " adapter)"}};
}

BenchData prepare(const Options& o) {
  const TrainRequest req = request(o);
  BenchData d;
  d.ds = load_dataset(req.dataset, req.data);
  d.model = zoo::build(req.model, zoo::input_spec(d.ds));
  d.init = init_weights(d.model, req.config.seed);
  d.n = d.ds.train.size();
  d.classes = d.ds.num_classes;
  d.batch = req.config.batch_size;
  d.batches = d.n / d.batch;
  d.lr = req.config.lr;
  d.momentum = req.config.momentum;
  d.order = epoch_order(d.n, req.config.seed, 0);
  auto whole = [&](const Split& s, std::vector<float>& x, std::vector<std::int64_t>& y) {
    std::vector<std::int64_t> all(static_cast<std::size_t>(s.size()));
    std::iota(all.begin(), all.end(), 0);
    const Tensor t = make_batch(d.ds, s, all);  // crossdl's normalisation, bit for bit
    const auto v = t.values<float>();
    x.assign(v.begin(), v.end());
    const auto l = s.y.values<std::int64_t>();
    y.assign(l.begin(), l.end());
  };
  whole(d.ds.train, d.train_x, d.train_y);
  whole(d.ds.test, d.test_x, d.test_y);
  d.sample = static_cast<std::int64_t>(d.train_x.size()) / d.n;
  return d;
}

nlohmann::json run_native(const Options& o) {
  const BenchData d = prepare(o);
  RunResult r;
  if (o.framework == "torch") {
#if CROSSDL_BENCH_TORCH
    r = run_native_torch(d);
#else
    throw std::runtime_error("this benchmark was built without LibTorch");
#endif
  } else if (o.framework == "dlib") {
#if CROSSDL_BENCH_DLIB
    r = run_native_dlib(d, o.side == "native-manual");
#else
    throw std::runtime_error("this benchmark was built without dlib");
#endif
  } else {
#if CROSSDL_BENCH_DARKNET
    r = run_native_darknet(d);
#else
    throw std::runtime_error("this benchmark was built without Darknet");
#endif
  }
  nlohmann::json j = {{"seconds", r.seconds},
                      {"train_loss", nullptr},
                      {"test_accuracy", r.test_accuracy},
                      {"initial_weights_sha256", d.init.sha256()},
                      {"train_size", d.n},
                      {"baseline", r.baseline}};
  if (r.train_loss >= 0) j["train_loss"] = r.train_loss;
  return j;
}

}  // namespace
}  // namespace crossdl::bench

int main(int argc, char** argv) {
  using namespace crossdl::bench;
  const Options o = parse(argc, argv);
  try {
    nlohmann::json j = o.side == "crossdl" ? run_crossdl(o) : run_native(o);
    j["framework"] = o.framework;
    j["side"] = o.side;
    j["peak_rss_mb"] = crossdl::peak_rss_mb();
    std::cout << j.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "crossdl_train_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
