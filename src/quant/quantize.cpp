// Building a QuantModel: BatchNorm folding, the quantization points and their fusion, the
// calibration of activation ranges, weight and bias quantization for every scheme, and the
// dequantized weights a runtime that dequantizes at load computes with.
//
// Choices the specs leave open, fixed here:
//  - A weight channel (or tensor) that is all zero gets scale 1: every value is 0 whatever the
//    scale, and a scale of 0 would make the bias scale 0 and the requantization divide by it.
//  - A ReLU that is not fused (its input is read by another layer too, or is not a Conv/Dense/Add)
//    keeps its input's parameters, like the pools: max(q, zero point) is then exact.
//  - A Conv2d or Dense without a float bias still gets an int32 bias of zeros, so that every
//    writer can emit the same QLinearConv / CONV_2D inputs.
//  - Int8 schemes fold BatchNorm first; the weight-only and reduced-precision schemes keep the
//    model as it is (no runtime folds for them, and folding would change the float weights).
//  - W8/W16 compute the TF.js converter's range, zero point nudge and q = round((w - min) / scale)
//    in double; the converter does it in NumPy, where only exact ties could round otherwise.
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "quant_internal.h"

namespace crossdl::quant {

namespace {

constexpr std::int64_t kCalibrationChunk = 64;

bool passes_through(ir::Op op) {
  return op == ir::Op::MaxPool2d || op == ir::Op::AvgPool2d || op == ir::Op::GlobalAvgPool ||
         op == ir::Op::Flatten || op == ir::Op::ReLU;
}

bool computes(ir::Op op) {
  return op == ir::Op::Conv2d || op == ir::Op::Dense || op == ir::Op::Add;
}

std::vector<QuantLayer> plan(const ir::Model& m) {
  const std::map<std::string, int> readers = detail::consumer_counts(m);
  std::vector<QuantLayer> out;
  std::set<std::string> fused_relus;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& l = m.layers[i];
    QuantLayer q{l.name, l.name, false};
    if (fused_relus.count(l.name) != 0) {
      q.output.clear();
    } else if (computes(l.op) && readers.count(l.name) != 0 && readers.at(l.name) == 1) {
      for (std::size_t j = i + 1; j < m.layers.size(); ++j) {
        const std::vector<std::string> ins = ir::resolved_inputs(m, j);
        if (std::find(ins.begin(), ins.end(), l.name) == ins.end()) continue;
        if (m.layers[j].op == ir::Op::ReLU) {
          q.output = m.layers[j].name;
          q.fused_relu = true;
          fused_relus.insert(m.layers[j].name);
        }
        break;
      }
    }
    out.push_back(std::move(q));
  }
  return out;
}

void refuse_for_static(const ir::Model& m) {
  for (const ir::Layer& l : m.layers) switch (l.op) {
      case ir::Op::LSTM:
      case ir::Op::GRU:
      case ir::Op::Embedding:
      case ir::Op::ImageToSequence:
      case ir::Op::Tanh:
      case ir::Op::Sigmoid:
      case ir::Op::Softmax:
        throw InputError("quantize: layer " + l.name + " (" + std::string(ir::op_name(l.op)) +
                         ") cannot be quantized int8-static: int8-static covers the image ops "
                         "(Conv2d, Dense, ReLU, pools, Add, Flatten, folded BatchNorm2d); "
                         "use int8-dynamic for recurrent models");
      default:
        break;
    }
}

// Symmetric int8 weights [-127, 127], zero point 0, per output channel (axis 0) or per tensor.
void quantize_weight(const std::string& name, const Tensor& t, bool per_channel, QuantModel& q) {
  const auto v = t.values<float>();
  const std::int64_t rows = per_channel ? t.dim(0) : 1;
  const std::int64_t per = t.numel() / rows;
  QParams p;
  p.dtype = "int8";
  p.axis = per_channel ? 0 : -1;
  std::vector<std::int8_t> out(v.size());
  float lo = 0, hi = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    float mx = 0;
    for (std::int64_t j = 0; j < per; ++j) {
      const float x = v[r * per + j];
      if (!std::isfinite(x))
        throw InputError("quantize: weight " + name + " has a non-finite value at " +
                         std::to_string(r * per + j));
      mx = std::max(mx, std::fabs(x));
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    const float scale = mx > 0 ? mx / 127.0f : 1.0f;
    p.scale.push_back(scale);
    p.zero_point.push_back(0);
    for (std::int64_t j = 0; j < per; ++j) {
      const float qv = std::nearbyint(v[r * per + j] / scale);
      out[r * per + j] = static_cast<std::int8_t>(std::clamp(qv, -127.0f, 127.0f));
    }
  }
  p.rmin = lo;
  p.rmax = hi;
  q.weight_params[name] = std::move(p);
  q.weight_q[name] = std::move(out);
}

// TF.js converter's affine weight-only quantization (quantize_weights).
void quantize_weight_only(const std::string& name, const Tensor& t, int bits, QuantModel& q) {
  const auto v = t.values<float>();
  const double qmax = bits == 8 ? 255.0 : 65535.0;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (float x : v) {
    lo = std::min(lo, static_cast<double>(x));
    hi = std::max(hi, static_cast<double>(x));
  }
  QParams p;
  p.dtype = bits == 8 ? "uint8" : "uint16";
  std::vector<std::uint16_t> out(v.size(), 0);
  double scale = 1.0, nmin = lo, nmax = hi;
  if (v.empty()) {
    nmin = nmax = 0;
  } else if (lo != hi) {
    scale = (hi - lo) / qmax;
    if (lo <= 0 && 0 <= hi) {
      const double zp = std::nearbyint((0 - lo) / scale);
      nmin = -zp * scale;
      nmax = qmax * scale + nmin;
    }
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double c = std::clamp(static_cast<double>(v[i]), nmin, nmax);
      out[i] =
          static_cast<std::uint16_t>(std::clamp(std::nearbyint((c - nmin) / scale), 0.0, qmax));
    }
  }
  p.scale = {static_cast<float>(scale)};
  p.zero_point = {0};
  p.rmin = static_cast<float>(nmin);
  p.rmax = static_cast<float>(nmax);
  q.weight_only_params[name] = std::move(p);
  q.weight_only_q[name] = std::move(out);
}

struct Observed {
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
  std::vector<std::int64_t> hist;
};

void calibrate_static(QuantModel& q, const Tensor& calibration) {
  const ir::Model& m = q.model;
  const QuantOptions& opt = q.options;
  const std::int64_t n = detail::check_batch(m, calibration, "quantize (calibration batch)");
  if (n <= 0) throw InputError("quantize: the calibration batch is empty");
  if (opt.calibrate != Calibration::MinMax && opt.histogram_bins < 1)
    throw InputError("quantize: histogram_bins must be positive, got " +
                     std::to_string(opt.histogram_bins));
  if (opt.calibrate == Calibration::Percentile && !(opt.percentile > 0 && opt.percentile <= 100))
    throw InputError("quantize: the percentile must be in (0, 100], got " +
                     std::to_string(opt.percentile));

  // Quantization points: the input and every layer that produces a new quantized tensor.
  std::vector<int> point_of(m.layers.size(), -1);  // layer index -> point index
  std::vector<std::string> names = {"input"};
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const QuantLayer& ql = q.layers[i];
    if (computes(m.layers[i].op)) names.push_back(ql.output);
  }
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    for (std::size_t p = 1; p < names.size(); ++p)
      if (m.layers[i].name == names[p]) point_of[i] = static_cast<int>(p);
  std::vector<Observed> obs(names.size());

  auto observe = [&](int p, const Tensor& t, bool histogram) {
    const auto v = t.values<float>();
    Observed& o = obs[static_cast<std::size_t>(p)];
    if (!histogram) {
      for (float x : v) {
        if (!std::isfinite(x))
          throw InputError("quantize: calibration gives a non-finite value at '" +
                           names[static_cast<std::size_t>(p)] + "'");
        o.lo = std::min(o.lo, x);
        o.hi = std::max(o.hi, x);
      }
      return;
    }
    const float max_abs = std::max(std::fabs(o.lo), std::fabs(o.hi));
    detail::add_to_histogram(o.hist, max_abs, v.data(), v.size());
  };
  const int passes = opt.calibrate == Calibration::MinMax ? 1 : 2;
  for (int pass = 0; pass < passes; ++pass) {
    const bool histogram = pass == 1;
    if (histogram)
      for (Observed& o : obs) o.hist.assign(static_cast<std::size_t>(opt.histogram_bins), 0);
    for (std::int64_t b = 0; b < n; b += kCalibrationChunk) {
      const Tensor chunk = calibration.slice_rows(b, std::min(n, b + kCalibrationChunk));
      observe(0, chunk, histogram);
      detail::forward(m, q.weights, chunk, [&](std::size_t i, const Tensor& t) {
        if (point_of[i] >= 0) observe(point_of[i], t, histogram);
      });
    }
  }

  nlohmann::json tensors = nlohmann::json::object();
  for (std::size_t p = 0; p < names.size(); ++p) {
    const Observed& o = obs[p];
    std::pair<float, float> kept = {o.lo, o.hi};
    if (opt.calibrate != Calibration::MinMax)
      kept = detail::range_from_histogram(o.hist, std::max(std::fabs(o.lo), std::fabs(o.hi)), o.lo,
                                          o.hi, opt);
    q.activations[names[p]] = affine_int8(kept.first, kept.second);
    tensors[names[p]] = {{"observed", {o.lo, o.hi}}, {"kept", {kept.first, kept.second}}};
  }
  q.calibration = {
      {"method", std::string(calibration_name(opt.calibrate))}, {"size", n}, {"tensors", tensors}};
  if (opt.calibrate == Calibration::Percentile) q.calibration["percentile"] = opt.percentile;
  if (opt.calibrate != Calibration::MinMax) q.calibration["histogram_bins"] = opt.histogram_bins;
}

void quantize_biases(QuantModel& q) {
  for (std::size_t i = 0; i < q.model.layers.size(); ++i) {
    const ir::Layer& l = q.model.layers[i];
    if (l.op != ir::Op::Conv2d && l.op != ir::Op::Dense) continue;
    const QParams& in = q.output_params(ir::resolved_inputs(q.model, i)[0]);
    const QParams& wp = q.weight_params.at(l.name + ".weight");
    QParams bp;
    bp.dtype = "int32";
    bp.axis = wp.axis;
    std::vector<std::int32_t> out(static_cast<std::size_t>(l.out), 0);
    const float* b = l.bias ? q.weights.at(l.name + ".bias").values<float>().data() : nullptr;
    for (float ws : wp.scale) {
      bp.scale.push_back(in.scale[0] * ws);
      bp.zero_point.push_back(0);
    }
    for (std::int64_t c = 0; c < l.out; ++c) {
      if (b == nullptr) continue;
      const double s = bp.scale[wp.axis == 0 ? static_cast<std::size_t>(c) : 0];
      const double v = std::nearbyint(static_cast<double>(b[c]) / s);
      out[static_cast<std::size_t>(c)] = static_cast<std::int32_t>(
          std::clamp(v, static_cast<double>(std::numeric_limits<std::int32_t>::min()),
                     static_cast<double>(std::numeric_limits<std::int32_t>::max())));
      bp.rmin = std::min(bp.rmin, b[c]);
      bp.rmax = std::max(bp.rmax, b[c]);
    }
    q.bias_params[l.name + ".bias"] = std::move(bp);
    q.bias_q[l.name + ".bias"] = std::move(out);
  }
}

}  // namespace

QuantModel quantize(const ir::Model& m, const WeightSet& w, const Tensor& calibration,
                    const QuantOptions& opt) {
  ir::validate(m);
  w.check_against(m);
  QuantModel q;
  q.options = opt;
  switch (opt.scheme) {
    case Scheme::Int8Static:
      refuse_for_static(m);
      detail::fold_batchnorm_impl(m, w, q.model, q.weights, q.folded, true);
      break;
    case Scheme::Int8Dynamic:
      detail::fold_batchnorm_impl(m, w, q.model, q.weights, q.folded, false);
      break;
    default:
      q.model = m;
      q.weights = w;
      break;
  }
  q.layers = plan(q.model);

  switch (opt.scheme) {
    case Scheme::FP16:
    case Scheme::BF16:
      break;
    case Scheme::W8:
    case Scheme::W16:
      for (const std::string& name : q.weights.names())
        if (q.weights.at(name).dtype() == DType::F32)
          quantize_weight_only(name, q.weights.at(name), opt.scheme == Scheme::W8 ? 8 : 16, q);
      break;
    case Scheme::Int8Dynamic:
      for (const ir::Layer& l : q.model.layers) {
        if (l.op == ir::Op::Conv2d || l.op == ir::Op::Dense)
          quantize_weight(l.name + ".weight", q.weights.at(l.name + ".weight"), opt.per_channel, q);
        if (l.op == ir::Op::LSTM || l.op == ir::Op::GRU)
          for (const char* p : {".weight_ih", ".weight_hh"})
            quantize_weight(l.name + p, q.weights.at(l.name + p), opt.per_channel, q);
      }
      break;
    case Scheme::Int8Static:
      calibrate_static(q, calibration);
      for (const ir::Layer& l : q.model.layers)
        if (l.op == ir::Op::Conv2d || l.op == ir::Op::Dense)
          quantize_weight(l.name + ".weight", q.weights.at(l.name + ".weight"), opt.per_channel, q);
      quantize_biases(q);
      break;
  }
  return q;
}

const QuantLayer* QuantModel::find(const std::string& layer) const {
  for (const QuantLayer& l : layers)
    if (l.layer == layer) return &l;
  return nullptr;
}

bool quant_output(const QuantModel& q, const ir::Model& m, const std::string& name) {
  if (name == "input" || q.activations.count(name) != 0) return true;
  const ir::Layer* l = m.find(name);
  return l != nullptr && q.find(name) != nullptr && passes_through(l->op);
}

QuantModel quant_prefix(const QuantModel& q, const std::string& layer) {
  if (!quant_output(q, q.model, layer) || layer == "input")
    throw InputError("quant_prefix: '" + layer + "' is not a quantized output of " + q.model.name);
  QuantModel p = q;
  p.model.layers.clear();
  p.layers.clear();
  std::size_t k = 0;
  while (q.model.layers[k].name != layer) ++k;
  p.model.layers.assign(q.model.layers.begin(), q.model.layers.begin() + static_cast<long>(k) + 1);
  for (const QuantLayer& ql : q.layers) {
    if (p.model.find(ql.layer) == nullptr) continue;
    QuantLayer kept = ql;
    // A layer whose fused ReLU was cut off keeps its own output (it has no quantized output
    // then; a quant_output layer never ends in such a layer).
    if (!kept.output.empty() && p.model.find(kept.output) == nullptr) kept.output = kept.layer;
    p.layers.push_back(kept);
  }
  ir::Layer flat;
  flat.name = "capture/flatten";
  flat.op = ir::Op::Flatten;
  p.model.layers.push_back(flat);
  p.layers.push_back({flat.name, flat.name, false});
  const std::vector<Shape> shapes = ir::infer_shapes(p.model);
  p.model.num_classes = shape_numel(shapes.back());
  p.weights = WeightSet();
  for (const auto& name : q.weights.names()) {
    const std::string owner = name.substr(0, name.rfind('.'));
    if (p.model.find(owner) != nullptr) p.weights.set(name, q.weights.at(name));
  }
  return p;
}

const QParams& QuantModel::output_params(const std::string& name) const {
  std::string at = name;
  auto f = folded.find(at);
  if (f != folded.end()) at = f->second;
  for (std::size_t guard = 0; guard <= model.layers.size() + 1; ++guard) {
    auto a = activations.find(at);
    if (a != activations.end()) return a->second;
    if (at == "input") break;
    const QuantLayer* ql = find(at);
    if (ql == nullptr) break;
    if (!ql->output.empty() && ql->output != at) {
      at = ql->output;
      continue;
    }
    std::size_t i = 0;
    while (model.layers[i].name != at) ++i;
    if (!passes_through(model.layers[i].op)) break;
    at = ir::resolved_inputs(model, i)[0];
  }
  throw InputError("quantized model " + model.name + ": layer '" + name +
                   "' has no activation parameters (" + std::string(scheme_name(options.scheme)) +
                   ")");
}

nlohmann::json QuantModel::to_json() const {
  nlohmann::json j;
  j["model"] = model.name;
  j["scheme"] = std::string(scheme_name(options.scheme));
  j["options"] = {{"per_channel", options.per_channel},
                  {"calibrate", std::string(calibration_name(options.calibrate))},
                  {"percentile", options.percentile},
                  {"histogram_bins", options.histogram_bins},
                  {"calibration_size", options.calibration_size},
                  {"calibration_seed", options.calibration_seed}};
  j["folded"] = folded;
  nlohmann::json ls = nlohmann::json::array();
  for (const QuantLayer& l : layers)
    ls.push_back({{"layer", l.layer}, {"output", l.output}, {"fused_relu", l.fused_relu}});
  j["layers"] = ls;
  auto params = [](const std::map<std::string, QParams>& m) {
    nlohmann::json o = nlohmann::json::object();
    for (const auto& [k, v] : m) o[k] = v.to_json();
    return o;
  };
  j["activations"] = params(activations);
  j["weights"] = params(weight_params);
  j["biases"] = params(bias_params);
  j["weight_only"] = params(weight_only_params);
  j["calibration"] = calibration;
  return j;
}

WeightSet dequantized_weights(const QuantModel& q) {
  WeightSet out;
  for (const std::string& name : q.weights.names()) {
    Tensor t = q.weights.at(name);
    if (t.dtype() != DType::F32) {
      out.set(name, std::move(t));
      continue;
    }
    auto v = t.values<float>();
    switch (q.options.scheme) {
      case Scheme::FP16:
        for (float& x : v) x = round_to_fp16(x);
        break;
      case Scheme::BF16:
        for (float& x : v) x = round_to_bf16(x);
        break;
      case Scheme::W8:
      case Scheme::W16: {
        auto p = q.weight_only_params.find(name);
        if (p == q.weight_only_params.end()) break;
        const std::vector<std::uint16_t>& qv = q.weight_only_q.at(name);
        // TF.js decodes v * scale + min in JavaScript doubles into a Float32Array.
        const double scale = p->second.scale[0], mn = p->second.rmin;
        for (std::size_t i = 0; i < v.size(); ++i)
          v[i] = static_cast<float>(static_cast<double>(qv[i]) * scale + mn);
        break;
      }
      case Scheme::Int8Dynamic:
      case Scheme::Int8Static: {
        auto p = q.weight_params.find(name);
        if (p == q.weight_params.end()) break;
        const std::vector<std::int8_t>& qv = q.weight_q.at(name);
        const std::size_t per = v.size() / p->second.scale.size();
        for (std::size_t i = 0; i < v.size(); ++i)
          v[i] = static_cast<float>(qv[i]) * p->second.scale[i / per];
        break;
      }
    }
    out.set(name, std::move(t));
  }
  return out;
}

}  // namespace crossdl::quant
