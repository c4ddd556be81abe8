// `crossdl onnx-conformance`: crossdl's ONNX reader (and LibTorch running what it read) against
// the ONNX backend test suite (Debian libonnx-testdata).
//
// Every test is classified: out of scope (an operator outside the set of the migration issue),
// reader refused, executor refused or failed, outputs differ, or passed. The suite's tests are
// single operators with their weights often given as graph inputs and outputs of any rank, while
// crossdl's IR is a classifier with one input and logits [N,K]. So the harness, before reading,
// binds graph inputs 2..n to the test's own input values as initializers, and appends a
// Flatten(axis=1) to an output of rank > 2; the flattened output is compared element by element.
// The torch framework runs the IR by default; --runtime exports it to a runtime's own format and
// runs that, in this process (a runtime that aborts ends the run; `crossdl compare` isolates).
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "commands.h"
#include "crossdl/adapter.h"
#include "crossdl/compare.h"
#include "crossdl/onnx_io.h"
#include "crossdl/runtime.h"
#include "crossdl/status.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {
namespace {

constexpr const char* kDefaultSuite = "/usr/share/libonnx-testdata/data";
// The operator set of the migration issue, plus the nodes an inference graph may carry around
// it (Identity, Dropout, Constant), which the reader skips or folds.
const std::set<std::string> kScope = {"Conv",
                                      "Gemm",
                                      "MatMul",
                                      "Relu",
                                      "Tanh",
                                      "Sigmoid",
                                      "MaxPool",
                                      "AveragePool",
                                      "GlobalAveragePool",
                                      "BatchNormalization",
                                      "Add",
                                      "Flatten",
                                      "Reshape",
                                      "Softmax",
                                      "LSTM",
                                      "GRU",
                                      "Identity",
                                      "Dropout",
                                      "Constant"};
// The tolerance the ONNX backend tests use by default (numpy.testing.assert_allclose).
constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-7;

struct ConformanceArgs {
  std::string suite = kDefaultSuite, filter;
  std::string runtime;  // empty: the torch framework runs the IR directly
  int threads = 1;
  bool as_json = false;
};

struct TestCase {
  std::string name;  // "node/test_relu"
  fs::path dir;
};

std::vector<TestCase> find_tests(const fs::path& suite) {
  std::vector<TestCase> out;
  auto add_dir = [&](const fs::path& d, const std::string& name) {
    if (fs::exists(d / "model.onnx")) out.push_back({name, d});
  };
  add_dir(suite, suite.filename().string());
  for (const auto& e : fs::directory_iterator(suite)) {
    if (!e.is_directory()) continue;
    add_dir(e.path(), e.path().filename().string());
    for (const auto& t : fs::directory_iterator(e.path()))
      if (t.is_directory())
        add_dir(t.path(), e.path().filename().string() + "/" + t.path().filename().string());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

bool read_proto(const fs::path& p, google::protobuf::MessageLite& msg) {
  std::ifstream in(p, std::ios::binary);
  return in && msg.ParseFromIstream(&in);
}

// A TensorProto from the suite as a crossdl tensor (float32 or int64 only).
Tensor to_tensor(const onnx::TensorProto& t, const std::string& what) {
  Shape shape(t.dims().begin(), t.dims().end());
  if (t.data_type() == onnx::TensorProto::FLOAT) {
    Tensor out(DType::F32, shape);
    auto v = out.values<float>();
    if (t.has_raw_data()) {
      if (t.raw_data().size() != v.size() * sizeof(float))
        throw InputError(what + ": raw data does not match its shape");
      std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
    } else {
      if (static_cast<std::size_t>(t.float_data_size()) != v.size())
        throw InputError(what + ": float data does not match its shape");
      std::copy(t.float_data().begin(), t.float_data().end(), v.begin());
    }
    return out;
  }
  if (t.data_type() == onnx::TensorProto::INT64) {
    Tensor out(DType::I64, shape);
    auto v = out.values<std::int64_t>();
    if (t.has_raw_data()) {
      if (t.raw_data().size() != v.size() * sizeof(std::int64_t))
        throw InputError(what + ": raw data does not match its shape");
      std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
    } else {
      if (static_cast<std::size_t>(t.int64_data_size()) != v.size())
        throw InputError(what + ": int64 data does not match its shape");
      std::copy(t.int64_data().begin(), t.int64_data().end(), v.begin());
    }
    return out;
  }
  throw InputError(what + ": element type " + std::to_string(t.data_type()) +
                   " is neither float32 nor int64");
}

std::vector<fs::path> data_sets(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0)
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<onnx::TensorProto> read_tensors(const fs::path& set, const std::string& prefix) {
  std::vector<onnx::TensorProto> out;
  for (int i = 0;; ++i) {
    const fs::path p = set / (prefix + "_" + std::to_string(i) + ".pb");
    if (!fs::exists(p)) break;
    onnx::TensorProto t;
    if (!read_proto(p, t)) throw InputError(p.string() + ": not a TensorProto");
    out.push_back(std::move(t));
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

// The model as the harness gives it to the reader (see the file comment).
onnx::ModelProto adapted(const onnx::ModelProto& original,
                         const std::vector<onnx::TensorProto>& inputs) {
  onnx::ModelProto mp = original;
  onnx::GraphProto* g = mp.mutable_graph();
  std::set<std::string> inits;
  for (const auto& t : g->initializer()) inits.insert(t.name());
  int k = 0;
  for (const auto& vi : g->input()) {
    if (inits.count(vi.name()) != 0) continue;
    if (k > 0 && static_cast<std::size_t>(k) < inputs.size()) {
      onnx::TensorProto* t = g->add_initializer();
      *t = inputs[static_cast<std::size_t>(k)];
      t->set_name(vi.name());
    }
    ++k;
  }
  if (mp.ir_version() < 4) mp.set_ir_version(4);  // initializers that are not graph inputs
  if (g->output_size() == 1) {
    const auto& tt = g->output(0).type().tensor_type();
    if (tt.has_shape() && tt.shape().dim_size() > 2) {
      const std::string flat = "conformance_flat";
      onnx::NodeProto* n = g->add_node();
      n->set_op_type("Flatten");
      n->set_name("conformance_flatten");
      n->add_input(g->output(0).name());
      n->add_output(flat);
      onnx::ValueInfoProto out;
      out.set_name(flat);
      auto* ot = out.mutable_type()->mutable_tensor_type();
      ot->set_elem_type(tt.elem_type());
      *ot->mutable_shape()->add_dim() = tt.shape().dim(0);
      std::int64_t features = 1;
      for (int i = 1; i < tt.shape().dim_size(); ++i)
        features = tt.shape().dim(i).has_dim_value() && features > 0
                       ? features * tt.shape().dim(i).dim_value()
                       : 0;
      if (features > 0)
        ot->mutable_shape()->add_dim()->set_dim_value(features);
      else
        ot->mutable_shape()->add_dim()->set_dim_param("features");
      *g->mutable_output(0) = out;
    }
  }
  return mp;
}

// What runs the IR: the torch framework directly, or a runtime through its exported artefact.
struct Executor {
  std::unique_ptr<Framework> framework;
  std::unique_ptr<Runtime> runtime;

  FrameworkInfo info() const { return framework ? framework->info() : runtime->info(); }
  // A runner for (m, w), or null with r["reason"] set.
  std::unique_ptr<Runner> prepare(const OnnxModel& om, const fs::path& dir, const RunOptions& ro,
                                  json& r) {
    const Capability cap = framework ? framework->supports(om.model) : runtime->supports(om.model);
    if (!cap.ok) {
      r["reason"] = "executor refused: " + cap.why;
      return nullptr;
    }
    Status st;
    std::unique_ptr<Runner> runner;
    if (framework) {
      runner = framework->load(om.model, om.weights, ro, st);
    } else {
      Artefact art;
      st = runtime->export_model(om.model, om.weights, dir.string(), ExportOptions{}, art);
      if (!st.is_ok()) {
        r["reason"] = "export: " + st.message();
        return nullptr;
      }
      runner = runtime->load(art, om.model, ro, st);
    }
    if (!st.is_ok() || !runner) {
      r["reason"] = "load: " + st.message();
      return nullptr;
    }
    return runner;
  }
};

json run_test(const TestCase& tc, Executor& exec, const ConformanceArgs& a,
              const fs::path& scratch) {
  json r = {{"test", tc.name}};
  const fs::path model_path = tc.dir / "model.onnx";
  onnx::ModelProto mp;
  if (!read_proto(model_path, mp)) {
    r["status"] = "reader_refused";
    r["reason"] = model_path.string() + ": not an ONNX model (the protobuf does not parse)";
    return r;
  }
  std::set<std::string> ops, outside;
  for (const auto& n : mp.graph().node()) {
    const std::string op = n.domain().empty() || n.domain() == "ai.onnx"
                               ? n.op_type()
                               : n.domain() + ":" + n.op_type();
    ops.insert(op);
    if (kScope.count(op) == 0) outside.insert(op);
  }
  r["operators"] = ops;
  if (!outside.empty()) {
    r["status"] = "out_of_scope";
    r["outside"] = outside;
    return r;
  }

  const std::vector<fs::path> sets = data_sets(tc.dir);
  if (sets.empty()) {
    r["status"] = "runtime_failed";
    r["reason"] = "the test has no test_data_set_*";
    return r;
  }
  std::vector<onnx::TensorProto> inputs0 = read_tensors(sets[0], "input");

  // The reader sees the adapted model under a scratch name; its messages name the suite's file.
  const fs::path tmp = scratch / (replace_all(tc.name, "/", "__") + ".onnx");
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out || !adapted(mp, inputs0).SerializeToOstream(&out))
      throw std::runtime_error("cannot write " + tmp.string());
  }
  OnnxModel om;
  try {
    om = onnx_read(tmp.string());
  } catch (const InputError& e) {
    r["status"] = "reader_refused";
    r["reason"] = replace_all(e.what(), tmp.string(), model_path.string());
    return r;
  }
  fs::remove(tmp);
  r["layers"] = om.model.layers.size();

  RunOptions ro;
  ro.threads = a.threads;
  const fs::path artefact_dir = scratch / replace_all(tc.name, "/", "__");
  auto runner = exec.prepare(om, artefact_dir, ro, r);
  if (!runner) {
    r["status"] = "runtime_failed";
    return r;
  }
  Status st;
  OutputDiff worst;
  const Tolerance tol{kAtol, kRtol, /*nan_equal=*/true};
  for (const fs::path& set : sets) {
    const std::vector<onnx::TensorProto> ins = read_tensors(set, "input");
    const std::vector<onnx::TensorProto> outs = read_tensors(set, "output");
    if (ins.empty() || outs.size() != 1)
      throw InputError(set.string() + ": expected input_0.pb and exactly one output_0.pb");
    const Tensor x = to_tensor(ins[0], (set / "input_0.pb").string());
    Shape want_in = om.model.input_shape;
    want_in.insert(want_in.begin(), x.rank() > 0 ? x.dim(0) : 0);
    if (x.shape() != want_in) {
      r["status"] = "runtime_failed";
      r["reason"] = "the test input " + shape_str(x.shape()) + " does not match the model input " +
                    shape_str(want_in);
      return r;
    }
    Tensor want = to_tensor(outs[0], (set / "output_0.pb").string());
    if (want.dtype() != DType::F32) throw InputError("the expected output is not float32");
    const std::int64_t batch = x.dim(0);
    if (want.rank() == 0 || want.dim(0) != batch) {
      r["status"] = "runtime_failed";
      r["reason"] = "the expected output " + shape_str(want.shape()) + " has no batch axis of " +
                    std::to_string(batch);
      return r;
    }
    want = want.reshaped({batch, want.numel() / batch});
    Tensor got;
    st = runner->infer(x, got);
    if (!st.is_ok()) {
      r["status"] = "runtime_failed";
      r["reason"] = "infer: " + st.message();
      return r;
    }
    if (got.shape() != want.shape()) {
      r["status"] = "differs";
      r["reason"] =
          "output shape " + shape_str(got.shape()) + ", expected " + shape_str(want.shape());
      return r;
    }
    const OutputDiff d = diff_outputs(want, got, tol);
    worst.max_abs = std::max(worst.max_abs, d.max_abs);
    worst.max_rel = std::max(worst.max_rel, d.max_rel);
    worst.outside += d.outside;
    worst.count += d.count;
  }
  r["data_sets"] = sets.size();
  r["max_abs"] = worst.max_abs;
  r["max_rel"] = worst.max_rel;
  r["outside_tolerance"] = worst.outside;
  r["values"] = worst.count;
  r["status"] = worst.outside == 0 ? "passed" : "differs";
  if (worst.outside != 0)
    r["reason"] = std::to_string(worst.outside) + " of " + std::to_string(worst.count) +
                  " values outside tolerance";
  return r;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

int run_conformance(const ConformanceArgs& a) {
  const fs::path suite = a.suite;
  if (!fs::is_directory(suite))
    throw InputError(a.suite +
                     ": no such folder (apt-get install libonnx-testdata, or give --suite DIR)");
  std::regex re;
  try {
    re = std::regex(a.filter.empty() ? "." : a.filter);
  } catch (const std::regex_error& e) {
    throw InputError("--filter: not a regular expression: " + std::string(e.what()));
  }
  std::vector<TestCase> tests;
  for (TestCase& t : find_tests(suite))
    if (std::regex_search(t.name, re)) tests.push_back(std::move(t));
  if (tests.empty()) throw InputError(a.suite + ": no test (model.onnx) matches the filter");

  // Both throw InputError when not built.
  Executor exec;
  if (a.runtime.empty())
    exec.framework = make_framework("torch");
  else
    exec.runtime = make_runtime(a.runtime);
  const FrameworkInfo info = exec.info();
  std::string tmpl = (fs::temp_directory_path() / "crossdl-conformance-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) throw InputError("cannot create a temporary folder");
  const fs::path scratch = tmpl;

  json results = json::array();
  std::map<std::string, std::int64_t> by_status, by_operator;
  json by_suite = json::object();  // "node", "pytorch-converted", ...: counts per status
  for (const TestCase& t : tests) {
    const auto t0 = std::chrono::steady_clock::now();
    json r;
    try {
      r = run_test(t, exec, a, scratch);
    } catch (const std::exception& e) {
      // A damaged data file or a library surprise: this test's result, never the run's end.
      r = {{"test", t.name},
           {"status", "runtime_failed"},
           {"reason", std::string("harness: ") + e.what()}};
    }
    r["ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++by_status[r["status"].get<std::string>()];
    const std::string suite_name = t.name.substr(0, t.name.find('/'));
    if (!by_suite.contains(suite_name)) by_suite[suite_name] = json::object();
    json& counts = by_suite[suite_name];
    counts["tests"] = counts.value("tests", 0) + 1;
    counts[r["status"].get<std::string>()] = counts.value(r["status"].get<std::string>(), 0) + 1;
    if (r.contains("outside"))
      for (const auto& op : r["outside"]) ++by_operator[op.get<std::string>()];
    results.push_back(std::move(r));
  }
  std::error_code ec;
  fs::remove_all(scratch, ec);

  const std::int64_t total = static_cast<std::int64_t>(tests.size());
  const std::int64_t out_of_scope = by_status["out_of_scope"];
  const std::int64_t in_scope = total - out_of_scope;
  const std::int64_t passed = by_status["passed"];
  json summary = {{"tests", total},
                  {"out_of_scope", out_of_scope},
                  {"in_scope", in_scope},
                  {"passed", passed},
                  {"reader_refused", by_status["reader_refused"]},
                  {"runtime_failed", by_status["runtime_failed"]},
                  {"differs", by_status["differs"]},
                  {"pass_rate", in_scope > 0 ? static_cast<double>(passed) / in_scope : 0.0}};
  json doc = {{"suite", a.suite},
              {"filter", a.filter},
              {"executor", info.name + (exec.runtime ? " runtime" : " framework") + " (" +
                               info.library + " " + info.version + ", " + info.device + ", " +
                               std::to_string(a.threads) + " thread(s))"},
              {"tolerance", {{"rtol", kRtol}, {"atol", kAtol}}},
              {"scope", kScope},
              {"summary", summary},
              {"by_suite", by_suite},
              {"out_of_scope_by_operator", by_operator},
              {"tests", results}};
  if (a.as_json) {
    std::cout << doc.dump(2) << "\n";
    return 0;
  }
  std::printf("%-62s %-15s %-9s %s\n", "test", "status", "max|Δ|", "detail");
  for (const auto& r : results) {
    const std::string status = r["status"];
    if (status == "out_of_scope") continue;
    std::string detail = r.value("reason", "");
    if (detail.size() > 160) detail = detail.substr(0, 157) + "...";
    std::printf("%-62s %-15s %-9s %s\n", r["test"].get<std::string>().c_str(), status.c_str(),
                r.contains("max_abs") ? fmt("%.2g", r["max_abs"].get<double>()).c_str() : "-",
                detail.c_str());
  }
  std::string ops;
  std::vector<std::pair<std::int64_t, std::string>> sorted;
  for (const auto& [op, n] : by_operator) sorted.emplace_back(-n, op);
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [n, op] : sorted)
    ops += (ops.empty() ? "" : ", ") + op + " " + std::to_string(-n);
  std::printf(
      "\n%lld tests; %lld out of scope (operators outside the set: %s)\n"
      "%lld in scope: %lld passed, %lld reader refused, %lld executor refused/failed, %lld "
      "differ\npass rate %lld/%lld = %s %% (executor %s; tolerance rtol %g, atol %g)\n",
      static_cast<long long>(total), static_cast<long long>(out_of_scope),
      ops.empty() ? "none" : ops.c_str(), static_cast<long long>(in_scope),
      static_cast<long long>(passed), static_cast<long long>(by_status["reader_refused"]),
      static_cast<long long>(by_status["runtime_failed"]),
      static_cast<long long>(by_status["differs"]), static_cast<long long>(passed),
      static_cast<long long>(in_scope),
      fmt("%.1f", in_scope > 0 ? 100.0 * static_cast<double>(passed) / in_scope : 0.0).c_str(),
      doc["executor"].get<std::string>().c_str(), kRtol, kAtol);
  for (const auto& [name, c] : by_suite.items()) {
    const int in = c.value("tests", 0) - c.value("out_of_scope", 0);
    std::printf("  %-18s %4d tests, %4d in scope, %3d passed\n", name.c_str(), c.value("tests", 0),
                in, c.value("passed", 0));
  }
  return 0;
}

}  // namespace

void add_conformance_command(CLI::App& app, CommandSet& set) {
  static ConformanceArgs a;
  auto* c = app.add_subcommand(
      "onnx-conformance",
      "Run crossdl's ONNX reader (and LibTorch on what it read) against the ONNX backend tests");
  c->add_option("--suite", a.suite, "Folder of the backend tests (libonnx-testdata)")
      ->capture_default_str();
  c->add_option("--filter", a.filter, "Only tests whose name (e.g. node/test_relu) matches");
  c->add_option("--runtime", a.runtime,
                "Run what was read in this runtime (exported to its format, loaded in this "
                "process) instead of the torch framework")
      ->capture_default_str();
  c->add_option("--threads", a.threads, "Threads of the executor")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_flag("--json", a.as_json, "Print the result document as JSON");
  set.onnx_conformance = {c, [] { return run_conformance(a); }};
}

}  // namespace crossdl
