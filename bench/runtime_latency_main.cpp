// The runtime latency-overhead benchmark: for each deployment runtime built into this crossdl,
// crossdl's batch-1 inference (Runtime::export_model into a temporary folder, Runtime::load,
// Runner::infer) against a minimal loop over the same library's own API on *the same artefact
// file*, same model, same weights (init_weights(seed)) and the same input, in one process.
//
//   crossdl_runtime_bench [--runtimes torch,opencv,...] [--model lenet5,resnet20] [--blocks 10]
//                         [--runs 200] [--block-seconds 0.5] [--seed 1] [--keep DIR] [--json]
//                         [--json-file F] [--breakdown]
//
// The two sides run in alternating blocks (which side goes first alternates too), after a
// warm-up of both; every call is timed on its own. Per runtime it reports each side's median
// latency, the ratio crossdl / direct of the medians with the spread of the per-block ratios
// (min-max), whether the target (<= 1.05) is met, the load times, and the largest logit
// difference between the two sides (they must compute the same thing for the comparison to mean
// anything). One thread everywhere: RunOptions.threads = 1 on crossdl's side, each library's own
// thread setting at 1 on the direct side.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "crossdl/dataset.h"
#include "crossdl/provenance.h"
#include "crossdl/runtime.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"
#include "runtime_latency.h"

namespace crossdl::bench {

std::string artefact_file(const Artefact& a, const std::string& suffix) {
  for (const std::string& f : a.files)
    if (f.ends_with(suffix)) return f;
  throw std::runtime_error("artefact in " + a.dir + ": no " + suffix + " file");
}

namespace {

// Wall-clock time of a call is the latency; on this shared machine it also counts the time the
// thread waited for a core, so the calling thread's CPU time is recorded alongside: every library
// here runs a 1-thread inference on the calling thread, so its CPU time is the work done.
double thread_cpu_us() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) * 1e-3;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

double median_cpu_us(const std::function<void()>& fn, int calls) {
  std::vector<double> t;
  for (int i = 0; i < calls; ++i) {
    const double a = thread_cpu_us();
    fn();
    t.push_back(thread_cpu_us() - a);
  }
  return median(std::move(t));
}

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<std::string> runtimes;  // empty: every runtime built in
  std::vector<std::string> models = {"lenet5", "resnet20"};
  int blocks = 10;
  int runs = 200;              // per side per block, at most
  double block_seconds = 0.5;  // per side per block, at most (slow runtimes get fewer runs)
  std::uint64_t seed = 1;
  bool json = false;
  bool breakdown = false;  // time the pieces of crossdl's infer where the direct side has them
  std::string keep;        // export into this folder and keep the files (for reproductions)
  std::string json_file;   // also write the JSON document here (with the table on stdout)
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "crossdl_runtime_bench: " << why
            << "\nusage: crossdl_runtime_bench [--runtimes a,b] [--model lenet5,resnet20] "
               "[--blocks N] [--runs N] [--block-seconds S] [--seed S] [--keep DIR] [--json] "
               "[--json-file F] [--breakdown]\n";
  std::exit(2);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" || a == "--breakdown") {
      (a == "--json" ? o.json : o.breakdown) = true;
      continue;
    }
    if (i + 1 >= argc) usage("missing value after " + a);
    const std::string v = argv[++i];
    try {
      if (a == "--runtimes")
        o.runtimes = split_list(v);
      else if (a == "--model" || a == "--models")
        o.models = split_list(v);
      else if (a == "--blocks")
        o.blocks = std::stoi(v);
      else if (a == "--runs")
        o.runs = std::stoi(v);
      else if (a == "--block-seconds")
        o.block_seconds = std::stod(v);
      else if (a == "--seed")
        o.seed = std::stoull(v);
      else if (a == "--keep")
        o.keep = v;
      else if (a == "--json-file")
        o.json_file = v;
      else
        usage("unknown option " + a);
    } catch (const std::logic_error&) {
      usage("bad value '" + v + "' for " + a);
    }
  }
  if (o.blocks < 1 || o.runs < 1 || o.block_seconds <= 0)
    usage("blocks, runs, seconds must be > 0");
  if (o.models.empty()) usage("--model needs at least one model");
  return o;
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

using DirectFactory =
    std::function<std::unique_ptr<DirectRunner>(const Artefact&, const ir::Model&)>;

// The direct side for a runtime, or null where the benchmark has none (not built in, or not a
// native library: ort and tfjs are driven through a Node helper process).
DirectFactory direct_for(const std::string& runtime) {
#if CROSSDL_BENCH_RT_TORCH
  if (runtime == "torch") return direct_torch;
#endif
#if CROSSDL_BENCH_RT_OPENCV
  if (runtime == "opencv" || runtime == "opencv-darknet") return direct_opencv;
#endif
#if CROSSDL_BENCH_RT_TFLITE
  if (runtime == "tflite") return direct_tflite;
#endif
#if CROSSDL_BENCH_RT_ARMNN
  if (runtime == "armnn") return direct_armnn;
#endif
#if CROSSDL_BENCH_RT_DARKNET
  if (runtime == "darknet") return direct_darknet;
#endif
#if CROSSDL_BENCH_RT_DLIB
  if (runtime == "dlib") return direct_dlib;
#endif
  (void)runtime;
  return nullptr;
}

std::string no_direct_reason(const std::string& runtime) {
  if (runtime == "ort" || runtime == "tfjs")
    return "not a native runtime (" +
           std::string(runtime == "ort" ? "ONNX Runtime" : "TensorFlow.js") +
           " through a Node helper process): crossdl side only, informative";
  return "this benchmark has no direct loop for " + runtime + " (library not built in)";
}

// The fixed input: the first Fashion-MNIST test image, normalised as every framework sees it.
Tensor fixed_input(std::string& what) {
  try {
    DataOptions d;
    d.train_limit = 1;
    d.test_limit = 1;
    const Dataset ds = load_dataset("fashion-mnist", d);
    const std::int64_t first = 0;
    what = "fashion-mnist test image 0 (make_batch)";
    return make_batch(ds, ds.test, std::span<const std::int64_t>(&first, 1));
  } catch (const std::exception& e) {
    // Without the data the latency is the same; the values only have to be fixed.
    Tensor x(DType::F32, {1, 1, 28, 28}, Layout::NCHW);
    auto v = x.values<float>();
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
    what = std::string("a fixed sine pattern (Fashion-MNIST not loadable: ") + e.what() + ")";
    return x;
  }
}

struct Call {
  double wall_us = 0, cpu_us = 0;
};

struct Series {
  std::vector<double> all;                 // every timed call
  std::vector<std::vector<double>> block;  // per block
};

struct Side {
  Series wall, cpu;
  double load_ms = 0;
};

nlohmann::json series_json(const Series& s) {
  std::vector<double> block_medians;
  for (const auto& b : s.block) block_medians.push_back(median(b));
  return {{"median_us", median(s.all)}, {"block_median_us", block_medians}};
}

nlohmann::json side_json(const Side& s) {
  return {{"wall", series_json(s.wall)},
          {"cpu", series_json(s.cpu)},
          {"calls", s.wall.all.size()},
          {"load_ms", s.load_ms}};
}

// crossdl / direct of the medians of all calls, and the spread of the per-block ratios.
nlohmann::json ratio_json(const Series& c, const Series& d) {
  std::vector<double> ratios;
  for (std::size_t b = 0; b < c.block.size(); ++b)
    ratios.push_back(median(c.block[b]) / median(d.block[b]));
  const double ratio = median(c.all) / median(d.all);
  return {{"ratio", ratio},
          {"block_min", *std::min_element(ratios.begin(), ratios.end())},
          {"block_max", *std::max_element(ratios.begin(), ratios.end())},
          {"block_median", median(ratios)},
          {"target_met", ratio <= 1.05}};
}

struct Row {
  std::string runtime, model;
  std::string status = "ok";  // ok | skipped | failed
  std::string why;
  nlohmann::json j;
};

// One runtime on one model. Every failure becomes a row with its reason.
Row bench_one(const std::string& name, const ir::Model& model, const WeightSet& w, const Tensor& x,
              const Options& o, const fs::path& tmp) {
  Row row{name, model.name, "ok", "", {}};
  auto fail = [&](const std::string& status, const std::string& why) {
    row.status = status;
    row.why = why;
    return row;
  };
  std::unique_ptr<Runtime> rt;
  try {
    rt = make_runtime(name);
  } catch (const std::exception& e) {
    return fail("skipped", e.what());
  }
  if (Capability c = rt->supports(model); !c.ok) return fail("skipped", c.why);
  const FrameworkInfo info = rt->info();
  row.j["library"] = info.library + " " + info.version;

  const fs::path dir = tmp / (name + "-" + model.name);
  Artefact art;
  ExportOptions eo;  // no extra layer outputs: what a deployment runs
  auto t0 = Clock::now();
  if (Status s = rt->export_model(model, w, dir.string(), eo, art); !s.is_ok())
    return fail("failed", "export: " + s.message());
  row.j["export_ms"] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  row.j["artefact"] = {{"format", art.format}, {"bytes", art.bytes}};

  RunOptions ro;
  ro.threads = 1;
  Side cx, dx;
  Status st;
  t0 = Clock::now();
  std::unique_ptr<Runner> runner = rt->load(art, model, ro, st);
  cx.load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!st.is_ok() || !runner) return fail("failed", "crossdl load: " + st.message());

  std::unique_ptr<DirectRunner> direct;
  if (DirectFactory make = direct_for(name)) {
    try {
      t0 = Clock::now();
      direct = make(art, model);
      dx.load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      row.j["direct_api"] = direct->api();
    } catch (const std::exception& e) {
      return fail("failed", std::string("direct load: ") + e.what());
    }
  } else {
    row.j["direct_api"] = nullptr;
    row.j["note"] = no_direct_reason(name);
  }

  // The two sides must agree before their times are compared.
  Tensor logits;
  if (Status s = runner->infer(x, logits); !s.is_ok())
    return fail("failed", "crossdl infer: " + s.message());
  const float* xp = x.values<float>().data();
  std::vector<float> dlogits;
  if (direct) {
    try {
      direct->infer(xp, dlogits);
    } catch (const std::exception& e) {
      return fail("failed", std::string("direct infer: ") + e.what());
    }
    const auto cl = logits.values<float>();
    if (cl.size() != dlogits.size())
      return fail("failed", "the sides give " + std::to_string(cl.size()) + " and " +
                                std::to_string(dlogits.size()) + " logits");
    double diff = 0;
    for (std::size_t i = 0; i < cl.size(); ++i)
      diff = std::max(diff, std::fabs(static_cast<double>(cl[i]) - dlogits[i]));
    const auto top = [](auto&& v) {
      return std::distance(v.begin(), std::max_element(v.begin(), v.end()));
    };
    row.j["max_abs_logit_diff"] = diff;
    row.j["same_top1"] = top(cl) == top(dlogits);
  }

  // Timed calls; a failing call ends the row (its time would not be an inference).
  std::string call_error;
  auto crossdl_call = [&]() -> Call {
    const double c0 = thread_cpu_us();
    const auto a = Clock::now();
    const Status s = runner->infer(x, logits);
    const auto b = Clock::now();
    const double c1 = thread_cpu_us();
    if (!s.is_ok()) throw std::runtime_error("crossdl infer: " + s.message());
    return {std::chrono::duration<double, std::micro>(b - a).count(), c1 - c0};
  };
  auto direct_call = [&]() -> Call {
    const double c0 = thread_cpu_us();
    const auto a = Clock::now();
    direct->infer(xp, dlogits);
    const auto b = Clock::now();
    return {std::chrono::duration<double, std::micro>(b - a).count(), thread_cpu_us() - c0};
  };
  try {
    // Warm-up: both sides alternately for at least 5 calls each and half a block's time; its
    // timings size the blocks.
    std::vector<double> warm;
    const auto wstart = Clock::now();
    for (int i = 0; i < 5 || std::chrono::duration<double>(Clock::now() - wstart).count() <
                                 o.block_seconds / 2;
         ++i) {
      warm.push_back(crossdl_call().wall_us);
      if (direct) warm.push_back(direct_call().wall_us);
      if (i >= 1000) break;
    }
    const double est_us = std::max(median(warm), 1.0);
    const int runs = std::clamp(static_cast<int>(o.block_seconds * 1e6 / est_us), 3, o.runs);
    row.j["runs_per_block"] = runs;
    row.j["blocks"] = o.blocks;
    for (int b = 0; b < o.blocks; ++b) {
      auto run_side = [&](Side& s, bool is_crossdl) {
        std::vector<double> wall, cpu;
        for (int r = 0; r < runs; ++r) {
          const Call c = is_crossdl ? crossdl_call() : direct_call();
          wall.push_back(c.wall_us);
          cpu.push_back(c.cpu_us);
        }
        s.wall.all.insert(s.wall.all.end(), wall.begin(), wall.end());
        s.cpu.all.insert(s.cpu.all.end(), cpu.begin(), cpu.end());
        s.wall.block.push_back(std::move(wall));
        s.cpu.block.push_back(std::move(cpu));
      };
      const bool crossdl_first = b % 2 == 0 || !direct;
      run_side(crossdl_first ? cx : dx, crossdl_first);
      if (direct) run_side(crossdl_first ? dx : cx, !crossdl_first);
    }
  } catch (const std::exception& e) {
    return fail("failed", e.what());
  }

  row.j["crossdl"] = side_json(cx);
  if (!direct) return row;
  row.j["direct"] = side_json(dx);
  row.j["wall"] = ratio_json(cx.wall, dx.wall);
  row.j["cpu"] = ratio_json(cx.cpu, dx.cpu);
  if (o.breakdown) {
    try {
      nlohmann::json b = nlohmann::json::array();
      for (const auto& [what, us] : direct->breakdown(model, xp))
        b.push_back({{"what", what}, {"cpu_us", us}});
      if (!b.empty()) row.j["breakdown"] = b;
    } catch (const std::exception& e) {
      row.j["breakdown_error"] = e.what();
    }
  }
  return row;
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

void print_table(const std::vector<Row>& rows, std::ostream& out) {
  out << "| runtime | model | crossdl / direct median wall (us) | ratio wall [block min-max] | "
         "crossdl / direct median CPU (us) | ratio CPU [block min-max] | <= 1.05 (wall, CPU) | "
         "load crossdl / direct (ms) | max abs logit diff, top-1 |\n"
      << "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  auto ratio = [](const nlohmann::json& r) {
    return fixed(r["ratio"].get<double>(), 3) + " [" + fixed(r["block_min"].get<double>(), 3) +
           "-" + fixed(r["block_max"].get<double>(), 3) + "]";
  };
  auto us = [](const nlohmann::json& side, const char* clock) {
    return fixed(side[clock]["median_us"].get<double>(), 1);
  };
  for (const Row& r : rows) {
    out << "| " << r.runtime << " | " << r.model << " | ";
    if (r.status != "ok") {
      out << r.status << ": " << r.why << " | | | | | | |\n";
      continue;
    }
    const auto& j = r.j;
    const auto& c = j["crossdl"];
    if (!j.contains("direct")) {
      out << us(c, "wall") << " / n/a | n/a | " << us(c, "cpu")
          << " (this process only) / n/a | n/a | n/a | " << fixed(c["load_ms"].get<double>(), 1)
          << " / n/a | " << j.value("note", std::string()) << " |\n";
      continue;
    }
    const auto& d = j["direct"];
    out << us(c, "wall") << " / " << us(d, "wall") << " | " << ratio(j["wall"]) << " | "
        << us(c, "cpu") << " / " << us(d, "cpu") << " | " << ratio(j["cpu"]) << " | "
        << (j["wall"]["target_met"].get<bool>() ? "yes" : "**no**") << ", "
        << (j["cpu"]["target_met"].get<bool>() ? "yes" : "**no**") << " | "
        << fixed(c["load_ms"].get<double>(), 1) << " / " << fixed(d["load_ms"].get<double>(), 1)
        << " | " << j["max_abs_logit_diff"].get<double>() << ", "
        << (j["same_top1"].get<bool>() ? "same" : "DIFFERENT") << " |\n";
  }
}

}  // namespace
}  // namespace crossdl::bench

int main(int argc, char** argv) {
  using namespace crossdl;
  using namespace crossdl::bench;
  const Options o = parse(argc, argv);
  try {
    std::vector<std::string> names = o.runtimes.empty() ? runtime_names() : o.runtimes;
    std::string input_what;
    const Tensor x = fixed_input(input_what);
    const fs::path tmp =
        !o.keep.empty()
            ? fs::path(o.keep)
            : fs::temp_directory_path() / ("crossdl-runtime-bench-" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    const std::string load_start = loadavg();
    nlohmann::json rows_json = nlohmann::json::array();
    std::vector<Row> rows;
    for (const std::string& model_name : o.models) {
      const ir::Model model = zoo::build(model_name, {{1, 28, 28}, DType::F32, 10, 0});
      const WeightSet w = init_weights(model, o.seed);
      for (const std::string& name : names) {
        if (!o.json) std::cerr << "crossdl_runtime_bench: " << name << " / " << model_name << "\n";
        Row r = bench_one(name, model, w, x, o, tmp);
        if (!o.json && r.status != "ok") std::cerr << "  " << r.status << ": " << r.why << "\n";
        nlohmann::json j = r.j;
        j["runtime"] = r.runtime;
        j["model"] = r.model;
        j["status"] = r.status;
        if (!r.why.empty()) j["why"] = r.why;
        rows_json.push_back(j);
        rows.push_back(std::move(r));
      }
    }
    std::error_code ec;
    if (o.keep.empty()) fs::remove_all(tmp, ec);
    const std::string load_end = loadavg();
    const nlohmann::json doc = {{"benchmark", "crossdl_runtime_bench"},
                                {"when", utc_now_iso8601()},
                                {"machine", machine_provenance()},
                                {"loadavg_start", load_start},
                                {"loadavg_end", load_end},
                                {"threads", 1},
                                {"batch", 1},
                                {"seed", o.seed},
                                {"input", input_what},
                                {"target_ratio", 1.05},
                                {"results", rows_json}};
    if (!o.json_file.empty()) {
      std::ofstream f(o.json_file);
      f << doc.dump(1) << "\n";
      if (!f) throw std::runtime_error("cannot write " + o.json_file);
    }
    if (o.json) {
      std::cout << doc.dump() << std::endl;
    } else {
      std::cout << "input: " << input_what << "; batch 1; 1 thread; init_weights seed " << o.seed
                << "; " << o.blocks << " alternating blocks\n"
                << "load average (1/5/15 min): start " << load_start << ", end " << load_end
                << "\n\n";
      print_table(rows, std::cout);
      for (const Row& r : rows) {
        if (!r.j.contains("breakdown")) continue;
        std::cout << "\nwhere the time goes, " << r.runtime << " / " << r.model
                  << " (thread-CPU medians):\n";
        for (const auto& b : r.j["breakdown"])
          std::cout << "  " << fixed(b["cpu_us"].get<double>(), 2) << " us  "
                    << b["what"].get<std::string>() << "\n";
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "crossdl_runtime_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
