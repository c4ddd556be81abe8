// Output differences, top-1 disagreement, the first diverging layer, percentiles.
#include <algorithm>
#include <cmath>
#include <map>

#include "crossdl/compare.h"
#include "crossdl/status.h"

namespace crossdl {

nlohmann::json OutputDiff::to_json() const {
  return {{"count", count},     {"max_abs", max_abs},   {"mean_abs", mean_abs},
          {"max_rel", max_rel}, {"mean_rel", mean_rel}, {"nan", nan},
          {"inf", inf},         {"outside", outside},   {"within", within()}};
}

OutputDiff diff_outputs(const Tensor& ref, const Tensor& got, const Tolerance& tol) {
  if (ref.shape() != got.shape() || ref.dtype() != DType::F32 || got.dtype() != DType::F32)
    throw InputError("cannot compare outputs: reference is " +
                     std::string(dtype_name(ref.dtype())) + " " + shape_str(ref.shape()) +
                     ", runtime gave " + std::string(dtype_name(got.dtype())) + " " +
                     shape_str(got.shape()));
  OutputDiff d;
  const auto r = ref.values<float>();
  const auto g = got.values<float>();
  d.count = static_cast<std::int64_t>(r.size());
  double sum_abs = 0, sum_rel = 0;
  std::int64_t n_rel = 0, n_abs = 0;
  for (std::size_t i = 0; i < r.size(); ++i) {
    const double a = r[i], b = g[i];
    if (std::isnan(b)) ++d.nan;
    if (std::isinf(b)) ++d.inf;
    if (tol.nan_equal && ((std::isnan(a) && std::isnan(b)) || (std::isinf(a) && a == b))) continue;
    if (!std::isfinite(b) || !std::isfinite(a)) {
      ++d.outside;
      continue;
    }
    const double e = std::fabs(b - a);
    sum_abs += e;
    ++n_abs;
    d.max_abs = std::max(d.max_abs, e);
    if (a != 0) {
      const double rel = e / std::fabs(a);
      d.max_rel = std::max(d.max_rel, rel);
      sum_rel += rel;
      ++n_rel;
    }
    if (e > tol.atol + tol.rtol * std::fabs(a)) ++d.outside;
  }
  d.mean_abs = n_abs ? sum_abs / static_cast<double>(n_abs) : 0;
  d.mean_rel = n_rel ? sum_rel / static_cast<double>(n_rel) : 0;
  return d;
}

std::vector<std::int64_t> argmax_rows(const Tensor& logits) {
  if (logits.dtype() != DType::F32 || logits.rank() != 2)
    throw InputError("expected F32 [N,classes] logits, got " +
                     std::string(dtype_name(logits.dtype())) + " " + shape_str(logits.shape()));
  const std::int64_t n = logits.dim(0), c = logits.dim(1);
  const auto v = logits.values<float>();
  std::vector<std::int64_t> out(static_cast<std::size_t>(n), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const float* row = v.data() + i * c;
    std::int64_t best = 0;
    for (std::int64_t j = 1; j < c; ++j)
      // NaN never wins: a comparison with NaN is false.
      if (row[j] > row[best] || (std::isnan(row[best]) && !std::isnan(row[j]))) best = j;
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

std::int64_t top1_disagreements(const Tensor& ref_logits, const Tensor& got_logits) {
  if (ref_logits.shape() != got_logits.shape())
    throw InputError("cannot compare predictions: reference logits " +
                     shape_str(ref_logits.shape()) + ", runtime logits " +
                     shape_str(got_logits.shape()));
  const auto a = argmax_rows(ref_logits), b = argmax_rows(got_logits);
  std::int64_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

std::vector<LayerDivergence> layer_divergence(
    const std::vector<std::pair<std::string, Tensor>>& ref,
    const std::vector<std::pair<std::string, Tensor>>& got, const Tolerance& tol, int& first) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : got) by_name[name] = &t;
  std::vector<LayerDivergence> out;
  first = -1;
  for (const auto& [name, t] : ref) {
    auto it = by_name.find(name);
    if (it == by_name.end()) continue;
    LayerDivergence l;
    l.layer = name;
    if (it->second->shape() != t.shape()) {
      // A layer the runtime gives in another shape is a divergence of its own, not a crash of
      // the comparison: everything in it counts as outside tolerance.
      l.diff.count = t.numel();
      l.diff.outside = t.numel();
      l.diff.max_abs = l.diff.max_rel = std::nan("");
    } else {
      l.diff = diff_outputs(t, *it->second, tol);
    }
    if (first < 0 && !l.diff.within()) first = static_cast<int>(out.size());
    out.push_back(std::move(l));
  }
  return out;
}

nlohmann::json layer_divergence_json(const std::vector<LayerDivergence>& layers, int first) {
  nlohmann::json lj = nlohmann::json::array();
  for (const auto& l : layers) {
    nlohmann::json e = l.diff.to_json();
    e["layer"] = l.layer;
    lj.push_back(e);
  }
  return {{"layer_diffs", lj},
          {"first_divergent_layer",
           first >= 0 ? nlohmann::json(layers[static_cast<std::size_t>(first)].layer)
                      : nlohmann::json(nullptr)}};
}

double percentile(std::vector<double> sample, double q) {
  if (sample.empty()) return std::nan("");
  std::sort(sample.begin(), sample.end());
  const double pos = q * static_cast<double>(sample.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, sample.size() - 1);
  return sample[lo] + (pos - static_cast<double>(lo)) * (sample[hi] - sample[lo]);
}

}  // namespace crossdl
