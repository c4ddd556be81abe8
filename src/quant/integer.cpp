// The integer reference: an int8-static model run with the exact integer arithmetic of ONNX
// Runtime's CPU kernels or of TFLite's reference kernels, on crossdl's scales and zero points.
//
// Onnx (what ONNX Runtime's MLAS computes on x86):
//  - QuantizeLinear: nearbyint(x / scale) + zero point, saturated.
//  - QLinearConv / QLinearMatMul: float(acc) * (in_scale * w_scale / out_scale), the multiplier
//    computed in float in that order; nearbyint (half to even); plus the zero point; saturated.
//  - QLinearAdd: MLAS's fixed-point kernel: each input's scale ratio to the output as a 22-bit
//    integer multiplier with a shared shift of 21 minus the larger ratio's exponent, the products
//    summed in int32 and shifted right rounding half away from zero, then the zero point added
//    with 16-bit saturation.
//  - QLinearGlobalAveragePool: (sum - zp_in * HW) in int32 times in_scale / (out_scale * HW) in
//    float, rounded half to even, plus the zero point.
//  - QLinearAveragePool: each value dequantized to float, averaged over the valid cells, and
//    quantized like QuantizeLinear.
// Tflite (tensorflow/lite/kernels/internal/reference/integer_ops):
//  - QUANTIZE: round(x / scale) half away from zero + zero point.
//  - CONV_2D / FULLY_CONNECTED: the multiplier in_scale * w_scale / out_scale in double, as a Q31
//    significand and a shift (QuantizeMultiplier), applied with SaturatingRoundingDoublingHighMul
//    and RoundingDivideByPOT.
//  - ADD: both inputs shifted left by 20 and scaled by in_scale / (2 * max in_scale), summed,
//    then scaled by 2 * max in_scale / (2^20 * out_scale).
//  - AVERAGE_POOL_2D (also the global pool): the sum of the int8 values divided by the count,
//    rounding half away from zero.
// Both: MaxPool is the max of the int8 values, Flatten is a reshape, a fused ReLU clamps at the
// output zero point, an unfused ReLU is max(q, zero point).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "quant_internal.h"

namespace crossdl::quant {

namespace {

using detail::shape_of;

std::int32_t sat(std::int64_t v, std::int32_t lo = -128, std::int32_t hi = 127) {
  return static_cast<std::int32_t>(std::clamp<std::int64_t>(v, lo, hi));
}

// ---- TFLite's fixed-point helpers (common.h / quantization_util.cc)

void quantize_multiplier(double m, std::int32_t& qm, int& shift) {
  if (m == 0.0) {
    qm = 0;
    shift = 0;
    return;
  }
  const double q = std::frexp(m, &shift);
  auto fixed = static_cast<std::int64_t>(std::round(q * static_cast<double>(1ll << 31)));
  if (fixed == (1ll << 31)) {
    fixed /= 2;
    ++shift;
  }
  if (shift < -31) {
    shift = 0;
    fixed = 0;
  }
  if (shift > 30) {
    shift = 30;
    fixed = (1ll << 31) - 1;
  }
  qm = static_cast<std::int32_t>(fixed);
}

std::int32_t srdhm(std::int32_t a, std::int32_t b) {
  if (a == b && a == std::numeric_limits<std::int32_t>::min())
    return std::numeric_limits<std::int32_t>::max();
  const std::int64_t ab = static_cast<std::int64_t>(a) * b;
  const std::int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
  return static_cast<std::int32_t>((ab + nudge) / (1ll << 31));
}

std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) {
  const std::int64_t mask = (1ll << exponent) - 1;
  const std::int64_t remainder = x & mask;
  const std::int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<std::int32_t>((x >> exponent) + (remainder > threshold ? 1 : 0));
}

std::int32_t multiply_by_quantized_multiplier(std::int32_t x, std::int32_t qm, int shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  // TFLite multiplies in int32; the wrap-around is kept (defined here through uint32).
  const auto shifted = static_cast<std::int32_t>(static_cast<std::uint32_t>(x) << left);
  return rounding_divide_by_pot(srdhm(shifted, qm), right);
}

// ---- ONNX Runtime's requantization (MlasRequantizeOutput)

std::int32_t mlas_requantize(std::int32_t acc, float scale, std::int32_t zp) {
  float v = static_cast<float>(acc) * scale;
  v = std::min(std::max(v, static_cast<float>(-128 - zp)), static_cast<float>(127 - zp));
  return static_cast<std::int32_t>(std::nearbyint(v)) + zp;
}

std::int16_t sat16(std::int64_t v) {
  return static_cast<std::int16_t>(std::clamp<std::int64_t>(v, -32768, 32767));
}

// MLAS's QLinearAdd (x86 kernels); outside the ratio range they support, its portable float
// formula.
struct OnnxAdd {
  float sa, sb, sc;
  std::int32_t za, zb, zc;
  bool fixed = false;
  std::int32_t ma = 0, mb = 0, shift = 0;
  OnnxAdd(const QParams& a, const QParams& b, const QParams& c)
      : sa(a.scale[0]),
        sb(b.scale[0]),
        sc(c.scale[0]),
        za(a.zero_point[0]),
        zb(b.zero_point[0]),
        zc(c.zero_point[0]) {
    const float ra = sa / sc, rb = sb / sc;
    const float lo = 0x1.0p-14f, hi = 256.0f;
    if (!(ra >= lo && ra < hi && rb >= lo && rb < hi)) return;
    const int exponent =
        static_cast<int>(std::bit_cast<std::uint32_t>(std::max(ra, rb)) >> 23) - 127;
    shift = 21 - exponent;
    if (shift > 31 || shift < 13) return;
    const float mult = std::bit_cast<float>(static_cast<std::uint32_t>(21 - exponent + 127) << 23);
    ma = static_cast<std::int32_t>(std::lrint(ra * mult));
    mb = static_cast<std::int32_t>(std::lrint(rb * mult));
    fixed = true;
  }
  std::int32_t operator()(std::int32_t a, std::int32_t b) const {
    if (!fixed) {
      float v = (sa * static_cast<float>(a - za) + sb * static_cast<float>(b - zb)) / sc;
      v = std::min(std::max(v, static_cast<float>(-128 - zc)), static_cast<float>(127 - zc));
      return static_cast<std::int32_t>(std::nearbyint(v + static_cast<float>(zc)));
    }
    // int32 arithmetic with the SIMD kernel's wrap-around.
    const auto wrap = [](std::int64_t v) { return static_cast<std::int32_t>(v); };
    const std::int32_t zconst =
        wrap(-(static_cast<std::int64_t>(ma) * za + static_cast<std::int64_t>(mb) * zb));
    const std::int32_t acc =
        wrap(static_cast<std::int64_t>(zconst) + static_cast<std::int64_t>(a) * ma +
             static_cast<std::int64_t>(b) * mb);
    const std::int32_t mask = static_cast<std::int32_t>((1ll << shift) - 1);
    const std::int32_t threshold = mask >> 1;
    const std::int32_t rem = (acc & mask) + (acc < 0 ? -1 : 0);
    const std::int32_t r = (acc >> shift) + (rem > threshold ? 1 : 0);
    return sat(sat16(static_cast<std::int64_t>(sat16(r)) + zc));
  }
};

struct TfliteAdd {
  std::int32_t za, zb, zc;
  std::int32_t m1, m2, mo;
  int s1, s2, so;
  static constexpr int kLeftShift = 20;
  TfliteAdd(const QParams& a, const QParams& b, const QParams& c)
      : za(a.zero_point[0]), zb(b.zero_point[0]), zc(c.zero_point[0]) {
    const double twice_max = 2 * static_cast<double>(std::max(a.scale[0], b.scale[0]));
    quantize_multiplier(static_cast<double>(a.scale[0]) / twice_max, m1, s1);
    quantize_multiplier(static_cast<double>(b.scale[0]) / twice_max, m2, s2);
    quantize_multiplier(
        twice_max / (static_cast<double>(1 << kLeftShift) * static_cast<double>(c.scale[0])), mo,
        so);
  }
  std::int32_t operator()(std::int32_t a, std::int32_t b) const {
    const std::int32_t x = (a - za) * (1 << kLeftShift), y = (b - zb) * (1 << kLeftShift);
    const std::int32_t sum =
        multiply_by_quantized_multiplier(x, m1, s1) + multiply_by_quantized_multiplier(y, m2, s2);
    return multiply_by_quantized_multiplier(sum, mo, so) + zc;
  }
};

// Rounding division of TFLite's average pools: half away from zero.
std::int32_t tflite_average(std::int32_t sum, std::int32_t count) {
  return sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

// A quantized batch: values [N, ...shape] and their parameters.
struct QValue {
  std::vector<std::int8_t> q;
  const QParams* p = nullptr;
};

// Per-output-channel requantization of an int32 accumulator.
struct Requant {
  Arithmetic a;
  std::vector<float> onnx_scale;
  std::vector<std::int32_t> mult;
  std::vector<int> shift;
  std::int32_t zp = 0, low = -128;
  Requant(Arithmetic ar, const QParams& in, const QParams& w, const QParams& out, bool relu)
      : a(ar), zp(out.zero_point[0]), low(relu ? std::max(-128, out.zero_point[0]) : -128) {
    for (float ws : w.scale) {
      onnx_scale.push_back(in.scale[0] * ws / out.scale[0]);
      std::int32_t m = 0;
      int s = 0;
      quantize_multiplier(static_cast<double>(in.scale[0]) * static_cast<double>(ws) /
                              static_cast<double>(out.scale[0]),
                          m, s);
      mult.push_back(m);
      shift.push_back(s);
    }
  }
  std::int8_t operator()(std::int32_t acc, std::size_t c) const {
    if (onnx_scale.size() == 1) c = 0;
    std::int32_t v = a == Arithmetic::Onnx
                         ? mlas_requantize(acc, onnx_scale[c], zp)
                         : multiply_by_quantized_multiplier(acc, mult[c], shift[c]) + zp;
    return static_cast<std::int8_t>(sat(v, low, 127));
  }
};

}  // namespace

std::string_view arithmetic_name(Arithmetic a) {
  return a == Arithmetic::Onnx ? "onnx" : "tflite";
}

Tensor integer_forward(const QuantModel& q, const Tensor& x, Arithmetic a,
                       std::vector<IntLayer>* layers) {
  if (q.options.scheme != Scheme::Int8Static)
    throw InputError("integer_forward: the model is quantized " +
                     std::string(scheme_name(q.options.scheme)) +
                     "; the integer reference runs int8-static models");
  const ir::Model& m = q.model;
  const std::vector<Shape> shapes = ir::infer_shapes(m);
  const std::int64_t n = detail::check_batch(m, x, "integer_forward");
  if (layers != nullptr) layers->clear();

  std::map<std::string, QValue> values;
  {
    const QParams& p = q.output_params("input");
    QValue in;
    in.p = &p;
    const auto xv = x.values<float>();
    in.q.resize(xv.size());
    const float s = p.scale[0];
    const std::int32_t zp = p.zero_point[0];
    for (std::size_t i = 0; i < xv.size(); ++i) {
      const float r = a == Arithmetic::Onnx ? std::nearbyint(xv[i] / s) : std::round(xv[i] / s);
      in.q[i] =
          static_cast<std::int8_t>(sat(static_cast<std::int64_t>(std::clamp(r, -1e9f, 1e9f)) + zp));
    }
    values["input"] = std::move(in);
  }

  std::string last;
  for (std::size_t li = 0; li < m.layers.size(); ++li) {
    const ir::Layer& l = m.layers[li];
    const QuantLayer& ql = q.layers[li];
    if (ql.output.empty()) continue;  // a fused ReLU: computed by the layer before
    const std::vector<std::string> ins = ir::resolved_inputs(m, li);
    const QValue& xin = values.at(ins[0]);
    const Shape& is = shape_of(m, shapes, ins[0]);
    const Shape& os = shapes[li];
    const std::int64_t in_per = shape_numel(is), out_per = shape_numel(os);
    QValue out;
    out.q.resize(static_cast<std::size_t>(n * out_per));
    switch (l.op) {
      case ir::Op::Conv2d:
      case ir::Op::Dense: {
        const QParams& op = q.output_params(l.name);
        out.p = &op;
        const QParams& wp = q.weight_params.at(l.name + ".weight");
        const std::vector<std::int8_t>& wq = q.weight_q.at(l.name + ".weight");
        const std::vector<std::int32_t>& bq = q.bias_q.at(l.name + ".bias");
        const Requant rq(a, *xin.p, wp, op, ql.fused_relu);
        const std::int32_t zx = xin.p->zero_point[0];
        if (l.op == ir::Op::Dense) {
          std::vector<std::int32_t> xs(static_cast<std::size_t>(in_per));
          for (std::int64_t b = 0; b < n; ++b) {
            for (std::int64_t i = 0; i < in_per; ++i) xs[i] = xin.q[b * in_per + i] - zx;
            for (std::int64_t o = 0; o < l.out; ++o) {
              std::int32_t acc = bq[o];
              const std::int8_t* wr = wq.data() + o * in_per;
              for (std::int64_t i = 0; i < in_per; ++i) acc += wr[i] * xs[i];
              out.q[b * out_per + o] = rq(acc, static_cast<std::size_t>(o));
            }
          }
          break;
        }
        const std::int64_t c = is[0], h = is[1], wd = is[2], ho = os[1], wo = os[2];
        const std::int64_t kh = l.kernel[0], kw = l.kernel[1], k = c * kh * kw, p = ho * wo;
        std::vector<std::int32_t> col(static_cast<std::size_t>(k * p)), acc(p);
        for (std::int64_t b = 0; b < n; ++b) {
          const std::int8_t* xb = xin.q.data() + b * in_per;
          // Padding is the input zero point, i.e. 0 once the zero point is subtracted.
          for (std::int64_t ci = 0; ci < c; ++ci)
            for (std::int64_t i = 0; i < kh; ++i)
              for (std::int64_t j = 0; j < kw; ++j) {
                std::int32_t* row = col.data() + ((ci * kh + i) * kw + j) * p;
                for (std::int64_t oy = 0; oy < ho; ++oy) {
                  const std::int64_t iy = oy * l.stride[0] - l.pad[0] + i;
                  for (std::int64_t ox = 0; ox < wo; ++ox) {
                    const std::int64_t ix = ox * l.stride[1] - l.pad[1] + j;
                    row[oy * wo + ox] = iy >= 0 && iy < h && ix >= 0 && ix < wd
                                            ? xb[(ci * h + iy) * wd + ix] - zx
                                            : 0;
                  }
                }
              }
          for (std::int64_t oc = 0; oc < l.out; ++oc) {
            std::fill(acc.begin(), acc.end(), bq[oc]);
            const std::int8_t* wr = wq.data() + oc * k;
            for (std::int64_t kk = 0; kk < k; ++kk) {
              const std::int32_t wv = wr[kk];
              const std::int32_t* cr = col.data() + kk * p;
              for (std::int64_t t = 0; t < p; ++t) acc[t] += wv * cr[t];
            }
            std::int8_t* yo = out.q.data() + b * out_per + oc * p;
            for (std::int64_t t = 0; t < p; ++t) yo[t] = rq(acc[t], static_cast<std::size_t>(oc));
          }
        }
        break;
      }
      case ir::Op::Add: {
        const QParams& op = q.output_params(l.name);
        out.p = &op;
        const QValue& yin = values.at(ins[1]);
        const std::int32_t low = ql.fused_relu ? std::max(-128, op.zero_point[0]) : -128;
        const OnnxAdd onnx(*xin.p, *yin.p, op);
        const TfliteAdd tfl(*xin.p, *yin.p, op);
        for (std::size_t i = 0; i < out.q.size(); ++i) {
          const std::int32_t v =
              a == Arithmetic::Onnx ? onnx(xin.q[i], yin.q[i]) : tfl(xin.q[i], yin.q[i]);
          out.q[i] = static_cast<std::int8_t>(sat(v, low, 127));
        }
        break;
      }
      case ir::Op::MaxPool2d:
      case ir::Op::AvgPool2d: {
        out.p = xin.p;
        const bool max = l.op == ir::Op::MaxPool2d;
        const std::int64_t c = is[0], h = is[1], wd = is[2], ho = os[1], wo = os[2];
        const float s = xin.p->scale[0];
        const std::int32_t zp = xin.p->zero_point[0];
        for (std::int64_t bc = 0; bc < n * c; ++bc) {
          const std::int8_t* xc = xin.q.data() + bc * h * wd;
          std::int8_t* yc = out.q.data() + bc * ho * wo;
          for (std::int64_t oy = 0; oy < ho; ++oy)
            for (std::int64_t ox = 0; ox < wo; ++ox) {
              std::int32_t best = -128, sum = 0, count = 0;
              float fsum = 0.0f;
              for (std::int64_t i = 0; i < l.kernel[0]; ++i) {
                const std::int64_t iy = oy * l.stride[0] - l.pad[0] + i;
                if (iy < 0 || iy >= h) continue;
                for (std::int64_t j = 0; j < l.kernel[1]; ++j) {
                  const std::int64_t ix = ox * l.stride[1] - l.pad[1] + j;
                  if (ix < 0 || ix >= wd) continue;
                  const std::int32_t v = xc[iy * wd + ix];
                  best = std::max(best, v);
                  sum += v;
                  fsum += s * static_cast<float>(v - zp);
                  ++count;
                }
              }
              std::int32_t v = best;
              if (!max && a == Arithmetic::Tflite) v = tflite_average(sum, count);
              if (!max && a == Arithmetic::Onnx)
                v = static_cast<std::int32_t>(
                        std::nearbyint(fsum / static_cast<float>(count) / s)) +
                    zp;
              yc[oy * wo + ox] = static_cast<std::int8_t>(sat(v));
            }
        }
        break;
      }
      case ir::Op::GlobalAvgPool: {
        out.p = xin.p;
        const std::int64_t hw = is[1] * is[2];
        const std::int32_t zp = xin.p->zero_point[0];
        // The output keeps the input's parameters, so the scale ratio is 1 / HW.
        const float scale = xin.p->scale[0] / (xin.p->scale[0] * static_cast<float>(hw));
        for (std::int64_t bc = 0; bc < n * is[0]; ++bc) {
          std::int32_t sum = 0;
          for (std::int64_t k = 0; k < hw; ++k) sum += xin.q[bc * hw + k];
          const std::int32_t v =
              a == Arithmetic::Onnx
                  ? mlas_requantize(sum - zp * static_cast<std::int32_t>(hw), scale, zp)
                  : tflite_average(sum, static_cast<std::int32_t>(hw));
          out.q[bc] = static_cast<std::int8_t>(sat(v));
        }
        break;
      }
      case ir::Op::Flatten:
        out.p = xin.p;
        out.q = xin.q;
        break;
      case ir::Op::ReLU: {
        out.p = xin.p;
        const auto zp = static_cast<std::int8_t>(sat(xin.p->zero_point[0]));
        for (std::size_t i = 0; i < out.q.size(); ++i) out.q[i] = std::max(xin.q[i], zp);
        break;
      }
      default:
        throw InputError("integer_forward: layer " + l.name + " (" +
                         std::string(ir::op_name(l.op)) + ") has no int8 kernel");
    }
    if (layers != nullptr) {
      IntLayer il;
      il.layer = ql.output;
      il.shape = os;
      il.shape.insert(il.shape.begin(), n);  // the batch's, as the header says
      il.q = out.q;
      il.params = out.p;
      layers->push_back(std::move(il));
    }
    last = ql.output;
    values[ql.output] = std::move(out);
  }

  const QValue& y = values.at(last);
  Shape full = {n};
  full.insert(full.end(), shapes.back().begin(), shapes.back().end());
  Tensor logits(DType::F32, full);
  auto lv = logits.values<float>();
  for (std::size_t i = 0; i < lv.size(); ++i)
    lv[i] = y.p->scale[0] * static_cast<float>(y.q[i] - y.p->zero_point[0]);
  return logits;
}

nlohmann::json StepAgreement::to_json() const {
  return {{"count", count},
          {"equal", equal},
          {"off_by_one", off_by_one},
          {"off_by_more", off_by_more},
          {"max_steps", max_steps}};
}

StepAgreement step_agreement(const IntLayer& ref, const Tensor& got) {
  if (ref.params == nullptr)
    throw InputError("step_agreement: layer " + ref.layer + " has no quantization parameters");
  if (got.dtype() != DType::F32 || static_cast<std::size_t>(got.numel()) != ref.q.size())
    throw InputError("step_agreement: layer " + ref.layer + ": the runtime's output " +
                     std::string(dtype_name(got.dtype())) + " " + shape_str(got.shape()) +
                     " does not have the reference's " + std::to_string(ref.q.size()) +
                     " f32 values");
  StepAgreement s;
  const double scale = ref.params->scale[0];
  const double zp = ref.params->zero_point[0];
  const auto g = got.values<float>();
  for (std::size_t i = 0; i < g.size(); ++i) {
    ++s.count;
    const double steps = std::fabs(std::nearbyint(g[i] / scale) + zp - ref.q[i]);
    const auto k = std::isfinite(steps) ? static_cast<std::int64_t>(std::min(steps, 1e18))
                                        : std::numeric_limits<std::int64_t>::max();
    if (k == 0)
      ++s.equal;
    else if (k == 1)
      ++s.off_by_one;
    else
      ++s.off_by_more;
    s.max_steps = std::max(s.max_steps, k);
  }
  return s;
}

double sqnr_db(const Tensor& ref, const Tensor& got) {
  if (ref.dtype() != DType::F32 || got.dtype() != DType::F32 || ref.numel() != got.numel())
    throw InputError("sqnr_db: tensors " + shape_str(ref.shape()) + " and " +
                     shape_str(got.shape()) + " are not two f32 tensors of the same size");
  const auto r = ref.values<float>();
  const auto g = got.values<float>();
  double signal = 0, noise = 0;
  for (std::size_t i = 0; i < r.size(); ++i) {
    signal += static_cast<double>(r[i]) * r[i];
    const double d = static_cast<double>(r[i]) - g[i];
    noise += d * d;
  }
  if (noise == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

}  // namespace crossdl::quant
