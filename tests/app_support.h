// Helpers shared by the tests that run real frameworks (tests/test-app-*.cpp).
#pragma once

#include <gtest/gtest.h>

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

// The first `train` / `test` examples of the installed Fashion-MNIST.
inline Dataset fashion_subset(std::int64_t train, std::int64_t test) {
  DataOptions o;
  o.train_limit = train;
  o.test_limit = test;
  return load_dataset("fashion-mnist", o);
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

}  // namespace crossdl::test
