// crossdl's own fp32 forward pass of an IR model (evaluation mode): the reference that
// calibration and the per-layer SQNR are computed against. Convolutions go through im2col and a
// row-by-row GEMM whose inner loop runs over output pixels, so that the compiler vectorises it;
// every sum is accumulated in float, in the order of the IR's weight layout.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "quant_internal.h"

namespace crossdl::quant {

namespace detail {

std::map<std::string, int> consumer_counts(const ir::Model& m) {
  std::map<std::string, int> n;
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    for (const std::string& in : ir::resolved_inputs(m, i)) ++n[in];
  return n;
}

const Shape& shape_of(const ir::Model& m, const std::vector<Shape>& shapes,
                      const std::string& name) {
  if (name == "input") return m.input_shape;
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    if (m.layers[i].name == name) return shapes[i];
  throw InputError("model " + m.name + ": no layer named '" + name + "'");
}

std::int64_t check_batch(const ir::Model& m, const Tensor& x, const char* who) {
  Shape want = {0};
  want.insert(want.end(), m.input_shape.begin(), m.input_shape.end());
  bool ok = x.rank() == want.size() && x.rank() >= 2 && x.dtype() == m.input_dtype;
  for (std::size_t i = 1; ok && i < want.size(); ++i) ok = x.dim(i) == want[i];
  if (!ok) {
    want[0] = x.rank() > 0 ? x.dim(0) : 0;
    throw InputError(std::string(who) + ": model " + m.name + " takes " +
                     std::string(dtype_name(m.input_dtype)) + " " + shape_str(want) + ", got " +
                     std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()));
  }
  return x.dim(0);
}

}  // namespace detail

namespace {

using detail::shape_of;

const float* weight(const WeightSet& w, const ir::Layer& l, const char* param) {
  return w.at(l.name + "." + param).values<float>().data();
}

// out [N, O, Ho, Wo] from x [N, C, H, W] and OIHW weights.
void conv2d(const ir::Layer& l, const Shape& in, const Shape& out, const float* x, const float* wt,
            const float* bias, std::int64_t n, float* y) {
  const std::int64_t c = in[0], h = in[1], wd = in[2];
  const std::int64_t o = out[0], ho = out[1], wo = out[2];
  const std::int64_t kh = l.kernel[0], kw = l.kernel[1];
  const std::int64_t k = c * kh * kw, p = ho * wo;
  std::vector<float> col(static_cast<std::size_t>(k * p));
  for (std::int64_t b = 0; b < n; ++b) {
    const float* xb = x + b * c * h * wd;
    // im2col: row (ci, i, j), column (oy, ox); zero outside the image (the padding).
    for (std::int64_t ci = 0; ci < c; ++ci)
      for (std::int64_t i = 0; i < kh; ++i)
        for (std::int64_t j = 0; j < kw; ++j) {
          float* row = col.data() + ((ci * kh + i) * kw + j) * p;
          for (std::int64_t oy = 0; oy < ho; ++oy) {
            const std::int64_t iy = oy * l.stride[0] - l.pad[0] + i;
            float* r = row + oy * wo;
            if (iy < 0 || iy >= h) {
              std::fill(r, r + wo, 0.0f);
              continue;
            }
            const float* src = xb + (ci * h + iy) * wd;
            for (std::int64_t ox = 0; ox < wo; ++ox) {
              const std::int64_t ix = ox * l.stride[1] - l.pad[1] + j;
              r[ox] = ix >= 0 && ix < wd ? src[ix] : 0.0f;
            }
          }
        }
    float* yb = y + b * o * p;
    for (std::int64_t oc = 0; oc < o; ++oc) {
      float* yr = yb + oc * p;
      std::fill(yr, yr + p, 0.0f);
      const float* wr = wt + oc * k;
      for (std::int64_t kk = 0; kk < k; ++kk) {
        const float wv = wr[kk];
        const float* cr = col.data() + kk * p;
        for (std::int64_t q = 0; q < p; ++q) yr[q] += wv * cr[q];
      }
      if (bias != nullptr)
        for (std::int64_t q = 0; q < p; ++q) yr[q] += bias[oc];
    }
  }
}

void dense(std::int64_t in, std::int64_t out, const float* x, const float* wt, const float* bias,
           std::int64_t n, float* y) {
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t o = 0; o < out; ++o) {
      const float* wr = wt + o * in;
      const float* xr = x + b * in;
      float acc = 0.0f;
      for (std::int64_t i = 0; i < in; ++i) acc += wr[i] * xr[i];
      y[b * out + o] = acc + (bias != nullptr ? bias[o] : 0.0f);
    }
}

void pool2d(const ir::Layer& l, const Shape& in, const Shape& out, const float* x, std::int64_t n,
            float* y, bool max) {
  const std::int64_t c = in[0], h = in[1], wd = in[2], ho = out[1], wo = out[2];
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t ch = 0; ch < c; ++ch) {
      const float* xc = x + (b * c + ch) * h * wd;
      float* yc = y + (b * c + ch) * ho * wo;
      for (std::int64_t oy = 0; oy < ho; ++oy)
        for (std::int64_t ox = 0; ox < wo; ++ox) {
          float acc = max ? -std::numeric_limits<float>::infinity() : 0.0f;
          std::int64_t count = 0;
          for (std::int64_t i = 0; i < l.kernel[0]; ++i) {
            const std::int64_t iy = oy * l.stride[0] - l.pad[0] + i;
            if (iy < 0 || iy >= h) continue;
            for (std::int64_t j = 0; j < l.kernel[1]; ++j) {
              const std::int64_t ix = ox * l.stride[1] - l.pad[1] + j;
              if (ix < 0 || ix >= wd) continue;
              const float v = xc[iy * wd + ix];
              acc = max ? std::max(acc, v) : acc + v;
              ++count;
            }
          }
          // Padding is not counted (count_include_pad=0, as the ONNX writer declares).
          yc[oy * wo + ox] = max ? acc : acc / static_cast<float>(count);
        }
    }
}

float sigmoid(float v) {
  return 1.0f / (1.0f + std::exp(-v));
}

// PyTorch's LSTM (gates i, f, g, o) and GRU (r, z, n; the reset gate applied after the hidden
// matmul), zero initial state; returns the last hidden state.
void recurrent(const ir::Layer& l, const WeightSet& w, const Shape& in, const float* x,
               std::int64_t n, float* y) {
  const bool lstm = l.op == ir::Op::LSTM;
  const std::int64_t t_len = in[0], f = in[1], hs = l.out, g = (lstm ? 4 : 3) * hs;
  const float* wih = weight(w, l, "weight_ih");
  const float* whh = weight(w, l, "weight_hh");
  const float* bih = weight(w, l, "bias_ih");
  const float* bhh = weight(w, l, "bias_hh");
  std::vector<float> h(static_cast<std::size_t>(hs)), c(static_cast<std::size_t>(hs));
  std::vector<float> gi(static_cast<std::size_t>(g)), gh(static_cast<std::size_t>(g));
  for (std::int64_t b = 0; b < n; ++b) {
    std::fill(h.begin(), h.end(), 0.0f);
    std::fill(c.begin(), c.end(), 0.0f);
    for (std::int64_t t = 0; t < t_len; ++t) {
      const float* xt = x + (b * t_len + t) * f;
      dense(f, g, xt, wih, bih, 1, gi.data());
      dense(hs, g, h.data(), whh, bhh, 1, gh.data());
      for (std::int64_t k = 0; k < hs; ++k) {
        if (lstm) {
          const float ig = sigmoid(gi[k] + gh[k]);
          const float fg = sigmoid(gi[hs + k] + gh[hs + k]);
          const float cg = std::tanh(gi[2 * hs + k] + gh[2 * hs + k]);
          const float og = sigmoid(gi[3 * hs + k] + gh[3 * hs + k]);
          c[k] = fg * c[k] + ig * cg;
          h[k] = og * std::tanh(c[k]);
        } else {
          const float r = sigmoid(gi[k] + gh[k]);
          const float z = sigmoid(gi[hs + k] + gh[hs + k]);
          const float nn = std::tanh(gi[2 * hs + k] + r * gh[2 * hs + k]);
          h[k] = (1.0f - z) * nn + z * h[k];
        }
      }
    }
    std::copy(h.begin(), h.end(), y + b * hs);
  }
}

Tensor batch_tensor(std::int64_t n, const Shape& s) {
  Shape full = {n};
  full.insert(full.end(), s.begin(), s.end());
  return Tensor(DType::F32, full);
}

}  // namespace

Tensor detail::forward(const ir::Model& m, const WeightSet& w, const Tensor& x,
                       const std::function<void(std::size_t, const Tensor&)>& on_layer) {
  const std::vector<Shape> shapes = ir::infer_shapes(m);
  w.check_against(m);
  const std::int64_t n = detail::check_batch(m, x, "reference_forward");

  // Outputs are freed after their last reader.
  std::map<std::string, int> readers = detail::consumer_counts(m);
  std::map<std::string, Tensor> values;
  Tensor last;
  for (std::size_t li = 0; li < m.layers.size(); ++li) {
    const ir::Layer& l = m.layers[li];
    const std::vector<std::string> ins = ir::resolved_inputs(m, li);
    const Shape& in_shape = shape_of(m, shapes, ins[0]);
    const Tensor& xin = ins[0] == "input" ? x : values.at(ins[0]);
    Tensor y = batch_tensor(n, shapes[li]);
    float* yv = y.values<float>().data();
    const std::int64_t count = y.numel();
    const float* xp = xin.dtype() == DType::F32 ? xin.values<float>().data() : nullptr;
    auto xf = [xp]() { return xp; };
    switch (l.op) {
      case ir::Op::Conv2d:
        conv2d(l, in_shape, shapes[li], xf(), weight(w, l, "weight"),
               l.bias ? weight(w, l, "bias") : nullptr, n, yv);
        break;
      case ir::Op::Dense:
        dense(in_shape[0], l.out, xf(), weight(w, l, "weight"),
              l.bias ? weight(w, l, "bias") : nullptr, n, yv);
        break;
      case ir::Op::ReLU:
        for (std::int64_t i = 0; i < count; ++i) yv[i] = std::max(xf()[i], 0.0f);
        break;
      case ir::Op::Tanh:
        for (std::int64_t i = 0; i < count; ++i) yv[i] = std::tanh(xf()[i]);
        break;
      case ir::Op::Sigmoid:
        for (std::int64_t i = 0; i < count; ++i) yv[i] = sigmoid(xf()[i]);
        break;
      case ir::Op::MaxPool2d:
      case ir::Op::AvgPool2d:
        pool2d(l, in_shape, shapes[li], xf(), n, yv, l.op == ir::Op::MaxPool2d);
        break;
      case ir::Op::GlobalAvgPool: {
        const std::int64_t hw = in_shape[1] * in_shape[2];
        for (std::int64_t i = 0; i < n * in_shape[0]; ++i) {
          float acc = 0.0f;
          for (std::int64_t k = 0; k < hw; ++k) acc += xf()[i * hw + k];
          yv[i] = acc / static_cast<float>(hw);
        }
        break;
      }
      case ir::Op::BatchNorm2d: {
        const std::int64_t c = in_shape[0], hw = in_shape[1] * in_shape[2];
        const float* g = weight(w, l, "weight");
        const float* bt = weight(w, l, "bias");
        const float* mean = weight(w, l, "running_mean");
        const float* var = weight(w, l, "running_var");
        for (std::int64_t b = 0; b < n; ++b)
          for (std::int64_t ch = 0; ch < c; ++ch) {
            // PyTorch's CPU kernel in evaluation mode: y = x * alpha + beta.
            const float inv = 1.0f / std::sqrt(var[ch] + l.eps);
            const float alpha = g[ch] * inv, beta = bt[ch] - mean[ch] * alpha;
            const float* xs = xf() + (b * c + ch) * hw;
            float* ys = yv + (b * c + ch) * hw;
            for (std::int64_t k = 0; k < hw; ++k) ys[k] = xs[k] * alpha + beta;
          }
        break;
      }
      case ir::Op::Add: {
        const float* a = xf();
        const Tensor& other = ins[1] == "input" ? x : values.at(ins[1]);
        const float* b = other.values<float>().data();
        for (std::int64_t i = 0; i < count; ++i) yv[i] = a[i] + b[i];
        break;
      }
      case ir::Op::Flatten:
        std::copy(xf(), xf() + count, yv);
        break;
      case ir::Op::Softmax: {
        const std::int64_t d = shapes[li].back(), rows = count / d;
        for (std::int64_t r = 0; r < rows; ++r) {
          const float* xs = xf() + r * d;
          float* ys = yv + r * d;
          const float mx = *std::max_element(xs, xs + d);
          float sum = 0.0f;
          for (std::int64_t k = 0; k < d; ++k) sum += ys[k] = std::exp(xs[k] - mx);
          for (std::int64_t k = 0; k < d; ++k) ys[k] /= sum;
        }
        break;
      }
      case ir::Op::Embedding: {
        const auto ids = xin.values<std::int64_t>();
        const float* table = weight(w, l, "weight");
        for (std::size_t i = 0; i < ids.size(); ++i) {
          if (ids[i] < 0 || ids[i] >= l.vocab)
            throw InputError("reference_forward: layer " + l.name + " (Embedding): token " +
                             std::to_string(ids[i]) + " at position " + std::to_string(i) +
                             " is outside the vocabulary [0," + std::to_string(l.vocab) + ")");
          std::copy(table + ids[i] * l.out, table + (ids[i] + 1) * l.out,
                    yv + static_cast<std::int64_t>(i) * l.out);
        }
        break;
      }
      case ir::Op::ImageToSequence: {
        // [C,H,W] -> [H, C*W]: row h is a time step whose features are ordered c*W + w.
        const std::int64_t c = in_shape[0], h = in_shape[1], wd = in_shape[2];
        for (std::int64_t b = 0; b < n; ++b)
          for (std::int64_t ch = 0; ch < c; ++ch)
            for (std::int64_t r = 0; r < h; ++r)
              std::copy(xf() + ((b * c + ch) * h + r) * wd, xf() + ((b * c + ch) * h + r + 1) * wd,
                        yv + (b * h + r) * c * wd + ch * wd);
        break;
      }
      case ir::Op::LSTM:
      case ir::Op::GRU:
        recurrent(l, w, in_shape, xf(), n, yv);
        break;
    }
    if (on_layer) on_layer(li, y);
    for (const std::string& in : ins)
      if (in != "input" && --readers[in] == 0) values.erase(in);
    if (li + 1 == m.layers.size())
      last = std::move(y);
    else
      values[l.name] = std::move(y);
  }
  return last;
}

Tensor reference_forward(const ir::Model& m, const WeightSet& w, const Tensor& x,
                         std::vector<NamedTensor>* layers) {
  if (layers == nullptr) return detail::forward(m, w, x, {});
  layers->clear();
  return detail::forward(m, w, x, [&](std::size_t i, const Tensor& t) {
    layers->push_back({m.layers[i].name, t});
  });
}

}  // namespace crossdl::quant
