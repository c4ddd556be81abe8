// Helpers shared by the tests that run real frameworks (tests/test-app-*.cpp).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/dataset.h"
#include "crossdl/ir.h"

namespace crossdl::test {

// Whether the named adapter is compiled into this crossdl; when not, *why says so (for GTEST_SKIP).
inline bool adapter_built(const std::string& name, std::string* why = nullptr) {
  const BackendEntry* e = find_backend(name);
  if (e != nullptr && e->make_framework) return true;
  if (why != nullptr)
    *why = "the " + name + " adapter is not built into this crossdl" +
           (e != nullptr ? " (" + e->install_hint + ")" : "");
  return false;
}

// Whether the named runtime (crossdl/runtime.h) is compiled into this crossdl; *why as above.
inline bool runtime_built(const std::string& name, std::string* why = nullptr) {
  const BackendEntry* e = find_backend(name);
  if (e != nullptr && e->make_runtime) return true;
  if (why != nullptr)
    *why = "the " + name + " runtime is not built into this crossdl" +
           (e != nullptr ? " (" + e->install_hint + ")" : "");
  return false;
}

struct CliRun {
  int rc = -1;
  std::string out;  // stdout
};

// Runs the crossdl binary (CROSSDL_BINARY) with a shell-quoted argument string; stderr goes to
// err_file.
inline CliRun run_cli(const std::string& args, const std::string& err_file = "/dev/null") {
  const std::string cmd = std::string(CROSSDL_BINARY) + " " + args + " 2>" + err_file;
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// The first `train` / `test` examples of the installed Fashion-MNIST.
inline Dataset fashion_subset(std::int64_t train, std::int64_t test) {
  DataOptions o;
  o.train_limit = train;
  o.test_limit = test;
  return load_dataset("fashion-mnist", o);
}

// The logits the torch framework gives for x on (m, w), the reference of the runtime tests; a
// failure is a test failure and leaves the tensor empty.
inline Tensor torch_logits(const ir::Model& m, const WeightSet& w, const Tensor& x) {
  Status st;
  auto r = make_framework("torch")->load(m, w, RunOptions{}, st);
  EXPECT_TRUE(st.is_ok()) << st.message();
  Tensor y;
  if (r) {
    st = r->infer(x, y);
    EXPECT_TRUE(st.is_ok()) << st.message();
  }
  return y;
}

inline std::vector<std::int64_t> first_n(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Largest absolute difference of two F32 tensors (infinity, and a test failure, on a shape
// mismatch).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  const auto x = a.values<float>(), y = b.values<float>();
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(x[i]) - static_cast<double>(y[i])));
  return m;
}

inline double max_abs_diff(const WeightSet& a, const WeightSet& b) {
  EXPECT_EQ(a.names(), b.names());
  double m = 0;
  for (const auto& n : a.names()) m = std::max(m, max_abs_diff(a.at(n), b.at(n)));
  return m;
}

// The model made of m's layers up to and including layer k, ending in a Flatten when that layer's
// output has more than one axis, with the weights it uses: its logits are layer k's output
// flattened in the IR's order, so a framework that only gives logits gives a per-layer reference.
inline ir::Model prefix_model(const ir::Model& m, const WeightSet& w, std::size_t k,
                              WeightSet& wk) {
  ir::Model p = m;
  p.layers.assign(m.layers.begin(), m.layers.begin() + static_cast<std::ptrdiff_t>(k) + 1);
  const Shape s = ir::infer_shapes(p).back();
  if (s.size() > 1) {
    ir::Layer f;
    f.name = "prefix_flatten";
    f.op = ir::Op::Flatten;
    p.layers.push_back(f);
  }
  p.num_classes = shape_numel(s);
  wk = WeightSet();
  for (const ir::WeightSpec& spec : ir::weight_specs(p)) wk.set(spec.name, w.at(spec.name));
  return p;
}

}  // namespace crossdl::test
