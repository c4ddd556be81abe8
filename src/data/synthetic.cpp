// A seeded synthetic dataset that is quick to make and actually learnable.
//
// Images (sample shape {C,H,W}): each class has a random prototype, a blocky pattern of 4x4-pixel
// cells with uniform random levels in 0..255; a sample is its class's prototype plus per-pixel
// noise (standard deviation about 48 levels), rounded and clamped to 0..255, as U8 NCHW.
// Text (sample shape {T}): tokens in [2, 50) (vocab_size 50, no padding or OOV ids used); each
// class has 8 favourite tokens, and every position is one of them with probability 0.3, otherwise
// uniform over [2, 50).
// Labels are uniform over the classes. Everything comes from one crossdl::Rng(seed) stream in a
// fixed order (prototypes, train, test) and uses only uniform() and below() (exact integer and
// dyadic arithmetic, no libm), so the bytes are identical on every platform.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/ir.h"
#include "crossdl/status.h"

namespace crossdl {

namespace {

constexpr std::int64_t kCell = 4;
constexpr std::int64_t kVocab = 50;
constexpr std::int64_t kFirstToken = 2;
constexpr int kFavourites = 8;
constexpr double kFavouriteProb = 0.3;

void make_images(Rng& rng, const std::vector<std::vector<std::uint8_t>>& protos, Split& s,
                 std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                 std::int64_t classes) {
  const std::int64_t plane = c * h * w;
  s.x = Tensor(DType::U8, {n, c, h, w}, Layout::NCHW);
  s.y = Tensor(DType::I64, {n});
  auto* x = reinterpret_cast<std::uint8_t*>(s.x.raw());
  auto y = s.y.values<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(classes)));
    y[i] = k;
    const auto& proto = protos[static_cast<std::size_t>(k)];
    for (std::int64_t p = 0; p < plane; ++p) {
      // Irwin-Hall: the sum of 4 uniforms minus 2 has stddev 1/sqrt(3); scaled to ~48 levels.
      const double z = rng.uniform() + rng.uniform() + rng.uniform() + rng.uniform() - 2.0;
      const double v = proto[static_cast<std::size_t>(p)] + z * 83.0;
      x[i * plane + p] = static_cast<std::uint8_t>(std::clamp(std::floor(v + 0.5), 0.0, 255.0));
    }
  }
}

void make_text(Rng& rng, const std::vector<std::vector<std::int64_t>>& favourites, Split& s,
               std::int64_t n, std::int64_t t, std::int64_t classes) {
  s.x = Tensor(DType::I64, {n, t});
  s.y = Tensor(DType::I64, {n});
  auto x = s.x.values<std::int64_t>();
  auto y = s.y.values<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(classes)));
    y[i] = k;
    const auto& fav = favourites[static_cast<std::size_t>(k)];
    for (std::int64_t j = 0; j < t; ++j) {
      std::int64_t tok;
      if (rng.uniform() < kFavouriteProb) {
        tok = fav[static_cast<std::size_t>(rng.below(fav.size()))];
      } else {
        tok = kFirstToken + static_cast<std::int64_t>(rng.below(kVocab - kFirstToken));
      }
      x[i * t + j] = tok;
    }
  }
}

}  // namespace

Dataset synthetic_make(std::uint64_t seed, std::int64_t n_train, std::int64_t n_test,
                       Shape sample_shape, std::int64_t num_classes) {
  if (n_train < 0 || n_test < 0) {
    throw InputError("synthetic: negative number of examples (train " + std::to_string(n_train) +
                     ", test " + std::to_string(n_test) + ")");
  }
  if (num_classes < 1) {
    throw InputError("synthetic: need at least 1 class (found " + std::to_string(num_classes) +
                     ")");
  }
  const bool image = sample_shape.size() == 3;
  const bool text = sample_shape.size() == 1;
  if ((!image && !text) || std::any_of(sample_shape.begin(), sample_shape.end(),
                                       [](std::int64_t d) { return d <= 0; })) {
    throw InputError(
        "synthetic: sample shape must be {C,H,W} (images) or {T} (tokens) with "
        "positive sizes (found " +
        shape_str(sample_shape) + ")");
  }
  Dataset ds;
  ds.name = "synthetic";
  ds.sources = {"synthetic(seed=" + std::to_string(seed) + ")"};
  ds.num_classes = num_classes;
  for (std::int64_t k = 0; k < num_classes; ++k) ds.class_names.push_back(std::to_string(k));
  Rng rng(seed);
  if (image) {
    const std::int64_t c = sample_shape[0], h = sample_shape[1], w = sample_shape[2];
    const std::int64_t ch = (h + kCell - 1) / kCell, cw = (w + kCell - 1) / kCell;
    std::vector<std::vector<std::uint8_t>> protos(static_cast<std::size_t>(num_classes));
    for (auto& p : protos) {
      p.resize(static_cast<std::size_t>(c * h * w));
      for (std::int64_t ci = 0; ci < c; ++ci) {
        std::vector<std::uint8_t> cells(static_cast<std::size_t>(ch * cw));
        for (auto& v : cells) v = static_cast<std::uint8_t>(rng.below(256));
        for (std::int64_t yy = 0; yy < h; ++yy)
          for (std::int64_t xx = 0; xx < w; ++xx)
            p[static_cast<std::size_t>((ci * h + yy) * w + xx)] =
                cells[static_cast<std::size_t>((yy / kCell) * cw + xx / kCell)];
      }
    }
    make_images(rng, protos, ds.train, n_train, c, h, w, num_classes);
    make_images(rng, protos, ds.test, n_test, c, h, w, num_classes);
    ds.mean.assign(static_cast<std::size_t>(c), 0.0f);
    ds.stddev.assign(static_cast<std::size_t>(c), 1.0f);
  } else {
    const std::int64_t t = sample_shape[0];
    std::vector<std::vector<std::int64_t>> favourites(static_cast<std::size_t>(num_classes));
    for (auto& f : favourites)
      for (int j = 0; j < kFavourites; ++j)
        f.push_back(kFirstToken + static_cast<std::int64_t>(rng.below(kVocab - kFirstToken)));
    make_text(rng, favourites, ds.train, n_train, t, num_classes);
    make_text(rng, favourites, ds.test, n_test, t, num_classes);
    ds.vocab_size = kVocab;
  }
  ds.full_train_size = n_train;
  ds.full_test_size = n_test;
  return ds;
}

}  // namespace crossdl
