// Scheme and calibration names, QParams, the calibration ranges (min/max, percentile, entropy)
// and the affine int8 parameters of a range.
//
// Percentile and entropy work on a histogram of |x| with QuantOptions::histogram_bins equal bins
// over [0, max|x|]. The kept range is symmetric, [-t, t], unless no value was negative (a ReLU
// output, an image normalised to [0, 1]): then it is [0, t], so that the zero point sits at -128
// and none of the 256 levels is spent on values that never occur.
//
// Entropy is TensorRT's calibration: for every candidate threshold (bin edge i from 128 to the
// number of bins) P is the histogram clipped at i (the values beyond added to the last bin), Q is
// P's first i bins merged into 128 levels and spread back over the bins that were non-empty; the
// threshold with the smallest KL(P || Q) is kept (ties: the smallest threshold).
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "quant_internal.h"

namespace crossdl::quant {

namespace {

struct SchemeEntry {
  Scheme s;
  std::string_view name;
};
constexpr std::array<SchemeEntry, 6> kSchemes = {{{Scheme::FP16, "fp16"},
                                                  {Scheme::BF16, "bf16"},
                                                  {Scheme::Int8Dynamic, "int8-dynamic"},
                                                  {Scheme::Int8Static, "int8-static"},
                                                  {Scheme::W8, "w8"},
                                                  {Scheme::W16, "w16"}}};

constexpr int kQuantizedBins = 128;

}  // namespace

std::string_view scheme_name(Scheme s) {
  for (const SchemeEntry& e : kSchemes)
    if (e.s == s) return e.name;
  return "?";
}

bool scheme_from_name(std::string_view name, Scheme& out) {
  for (const SchemeEntry& e : kSchemes)
    if (e.name == name) {
      out = e.s;
      return true;
    }
  return false;
}

std::vector<std::string> scheme_names() {
  std::vector<std::string> v;
  for (const SchemeEntry& e : kSchemes) v.emplace_back(e.name);
  return v;
}

std::string_view calibration_name(Calibration c) {
  switch (c) {
    case Calibration::MinMax:
      return "minmax";
    case Calibration::Percentile:
      return "percentile";
    case Calibration::Entropy:
      return "entropy";
  }
  return "?";
}

bool calibration_from_name(std::string_view name, Calibration& out) {
  for (Calibration c : {Calibration::MinMax, Calibration::Percentile, Calibration::Entropy})
    if (calibration_name(c) == name) {
      out = c;
      return true;
    }
  return false;
}

std::int32_t QParams::qmin() const {
  if (dtype == "int8") return -128;
  if (dtype == "int32") return std::numeric_limits<std::int32_t>::min();
  return 0;
}

std::int32_t QParams::qmax() const {
  if (dtype == "int8") return 127;
  if (dtype == "uint8") return 255;
  if (dtype == "uint16") return 65535;
  if (dtype == "int32") return std::numeric_limits<std::int32_t>::max();
  return 0;
}

nlohmann::json QParams::to_json() const {
  nlohmann::json j;
  j["dtype"] = dtype;
  j["scale"] = scale;
  j["zero_point"] = zero_point;
  j["axis"] = axis;
  j["range"] = {rmin, rmax};
  return j;
}

QParams affine_int8(float rmin, float rmax) {
  if (!std::isfinite(rmin) || !std::isfinite(rmax) || rmin > rmax)
    throw InputError("affine_int8: the range [" + std::to_string(rmin) + ", " +
                     std::to_string(rmax) + "] is not a finite interval");
  rmin = std::min(rmin, 0.0f);
  rmax = std::max(rmax, 0.0f);
  QParams p;
  p.dtype = "int8";
  p.rmin = rmin;
  p.rmax = rmax;
  float scale = (rmax - rmin) / 255.0f;
  if (!(scale > 0.0f) || !std::isfinite(scale)) scale = 1.0f;
  const float zp = std::nearbyint(-128.0f - rmin / scale);
  p.scale = {scale};
  p.zero_point = {static_cast<std::int32_t>(std::clamp(zp, -128.0f, 127.0f))};
  return p;
}

namespace detail {

void add_to_histogram(std::vector<std::int64_t>& hist, float max_abs, const float* v,
                      std::size_t n) {
  const auto bins = static_cast<std::int64_t>(hist.size());
  if (!(max_abs > 0.0f)) {
    hist[0] += static_cast<std::int64_t>(n);
    return;
  }
  const double per = static_cast<double>(bins) / max_abs;
  for (std::size_t i = 0; i < n; ++i) {
    const auto b = static_cast<std::int64_t>(std::fabs(static_cast<double>(v[i])) * per);
    ++hist[static_cast<std::size_t>(std::clamp<std::int64_t>(b, 0, bins - 1))];
  }
}

namespace {

float entropy_threshold(const std::vector<std::int64_t>& hist, float max_abs) {
  const int bins = static_cast<int>(hist.size());
  if (bins <= kQuantizedBins) return max_abs;
  std::vector<double> p, q;
  double best = std::numeric_limits<double>::infinity();
  int best_i = bins;
  std::int64_t beyond = 0;
  for (int b = kQuantizedBins; b < bins; ++b) beyond += hist[b];
  for (int i = kQuantizedBins; i <= bins; ++i) {
    if (i > kQuantizedBins) beyond -= hist[i - 1];
    p.assign(hist.begin(), hist.begin() + i);
    p[i - 1] += static_cast<double>(beyond);
    q.assign(i, 0.0);
    for (int j = 0; j < kQuantizedBins; ++j) {
      const int start = static_cast<int>(static_cast<std::int64_t>(j) * i / kQuantizedBins);
      const int end = static_cast<int>(static_cast<std::int64_t>(j + 1) * i / kQuantizedBins);
      double sum = 0;
      int nonzero = 0;
      for (int k = start; k < end; ++k) {
        sum += static_cast<double>(hist[k]);
        if (hist[k] != 0) ++nonzero;
      }
      for (int k = start; k < end; ++k)
        if (hist[k] != 0) q[k] = sum / nonzero;
    }
    double ps = 0, qs = 0;
    for (int k = 0; k < i; ++k) {
      ps += p[k];
      qs += q[k];
    }
    if (ps <= 0 || qs <= 0) continue;
    double kl = 0;
    for (int k = 0; k < i; ++k) {
      if (p[k] <= 0) continue;
      // A bin that only the clipped outliers fill has no mass in Q: a tiny floor keeps the
      // divergence finite but large, as TensorRT's smoothing does.
      const double qk = std::max(q[k] / qs, 1e-12);
      kl += (p[k] / ps) * std::log((p[k] / ps) / qk);
    }
    if (kl < best) {
      best = kl;
      best_i = i;
    }
  }
  return static_cast<float>(static_cast<double>(max_abs) * best_i / bins);
}

}  // namespace

std::pair<float, float> range_from_histogram(const std::vector<std::int64_t>& hist, float max_abs,
                                             float observed_min, float observed_max,
                                             const QuantOptions& opt) {
  float t = max_abs;
  if (opt.calibrate == Calibration::Percentile) {
    std::int64_t total = 0;
    for (std::int64_t c : hist) total += c;
    const double want = static_cast<double>(total) * opt.percentile / 100.0;
    std::int64_t cum = 0;
    for (std::size_t b = 0; b < hist.size(); ++b) {
      cum += hist[b];
      if (static_cast<double>(cum) >= want) {
        t = static_cast<float>(static_cast<double>(max_abs) * static_cast<double>(b + 1) /
                               static_cast<double>(hist.size()));
        break;
      }
    }
  } else {
    t = entropy_threshold(hist, max_abs);
  }
  t = std::min(t, max_abs);
  if (observed_min >= 0.0f) return {0.0f, std::min(t, observed_max)};
  return {-t, t};
}

}  // namespace detail

std::pair<float, float> calibrate_range(const std::vector<float>& values, const QuantOptions& opt) {
  if (values.empty()) throw InputError("calibrate_range: no values observed");
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (float v : values) {
    if (!std::isfinite(v))
      throw InputError("calibrate_range: a non-finite value (" + std::to_string(v) +
                       ") was observed");
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (opt.calibrate == Calibration::MinMax) return {lo, hi};
  if (opt.histogram_bins < 1)
    throw InputError("calibrate_range: histogram_bins must be positive, got " +
                     std::to_string(opt.histogram_bins));
  if (opt.calibrate == Calibration::Percentile && !(opt.percentile > 0 && opt.percentile <= 100))
    throw InputError("calibrate_range: the percentile must be in (0, 100], got " +
                     std::to_string(opt.percentile));
  const float max_abs = std::max(std::fabs(lo), std::fabs(hi));
  std::vector<std::int64_t> hist(static_cast<std::size_t>(opt.histogram_bins), 0);
  detail::add_to_histogram(hist, max_abs, values.data(), values.size());
  return detail::range_from_histogram(hist, max_abs, lo, hi, opt);
}

}  // namespace crossdl::quant
