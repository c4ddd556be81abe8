// The type-independent half of the dlib networks: how dlib layers are tied to IR layers, how
// weights move between the weight set and dlib's parameter tensors, and the BatchNorm running
// statistics kept the PyTorch way.
#include "dlib_net.h"

#include <dlib/revision.h>

#include <algorithm>

#include "crossdl/status.h"
#include "crossdl/zoo.h"

namespace crossdl::dlibx {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Conv:
      return "con_";
    case Kind::BatchNorm:
      return "bn_con";
    case Kind::Affine:
      return "affine_";
    case Kind::ReLU:
      return "relu_";
    case Kind::MaxPool:
      return "max_pool_";
    case Kind::AvgPool:
      return "avg_pool_";
    case Kind::Add:
      return "add_prev_";
    case Kind::Dense:
      return "fc_";
    case Kind::None:
      break;
  }
  return "?";
}

bool kind_matches(Kind k, ir::Op op) {
  switch (op) {
    case ir::Op::Conv2d:
      return k == Kind::Conv;
    case ir::Op::BatchNorm2d:
      return k == Kind::BatchNorm || k == Kind::Affine;
    case ir::Op::ReLU:
      return k == Kind::ReLU;
    case ir::Op::MaxPool2d:
      return k == Kind::MaxPool;
    case ir::Op::GlobalAvgPool:
      return k == Kind::AvgPool;
    case ir::Op::Add:
      return k == Kind::Add;
    case ir::Op::Dense:
      return k == Kind::Dense;
    default:
      return false;
  }
}

bool has_type(const std::string& name) {
  return name == "lenet1" || name == "lenet5" || name == "resnet20" || name == "vgg16";
}

std::string version() {
  return std::to_string(DLIB_MAJOR_VERSION) + "." + std::to_string(DLIB_MINOR_VERSION) + "." +
         std::to_string(DLIB_PATCH_VERSION);
}

Capability supports(const ir::Model& m) {
  for (const ir::Layer& l : m.layers) {
    if (l.op == ir::Op::LSTM) return Capability::no("dlib has no recurrent layer (LSTM)");
    if (l.op == ir::Op::GRU) return Capability::no("dlib has no recurrent layer (GRU)");
  }
  const std::string types =
      "dlib networks are compile-time types; crossdl has dlib types for the zoo's lenet1, lenet5, "
      "resnet20 and vgg16 only";
  if (!has_type(m.name)) return Capability::no(types + " (" + m.name + " is not among them)");
  if (m.input_dtype != DType::F32 || m.input_shape.size() != 3)
    return Capability::no(types + " on f32 images [C,H,W] (got " + m.name + " on " +
                          std::string(dtype_name(m.input_dtype)) + " " + shape_str(m.input_shape) +
                          ")");
  try {
    if (m == zoo::build(m.name, {m.input_shape, DType::F32, m.num_classes, 0}))
      return Capability::yes();
  } catch (const std::exception& e) {
    return Capability::no(types + " (" + m.name + " on " + shape_str(m.input_shape) + ": " +
                          e.what() + ")");
  }
  return Capability::no(types + " (this " + m.name + " on " + shape_str(m.input_shape) +
                        " differs from the zoo's: an imported or edited model)");
}

std::unique_ptr<Net> make_net(const ir::Model& m, Mode mode) {
  if (m.name == "lenet1" || m.name == "lenet5") return make_lenet(m, mode);
  if (m.name == "resnet20") return make_resnet(m, mode);
  if (m.name == "vgg16") return make_vgg(m, mode);
  throw std::logic_error("dlib adapter: no dlib type for model " + m.name);
}

std::unique_ptr<Net> read_net(std::istream& in, const ir::Model& m) {
  if (m.name == "lenet1" || m.name == "lenet5") return read_lenet(in, m);
  if (m.name == "resnet20") return read_resnet(in, m);
  if (m.name == "vgg16") return read_vgg(in, m);
  throw std::logic_error("dlib adapter: no dlib type for model " + m.name);
}

// ---- tensors -----------------------------------------------------------------------------------

dlib::resizable_tensor to_dlib(const Tensor& x, const Shape& sample) {
  if (x.dtype() != DType::F32 || x.rank() != 4 ||
      Shape(x.shape().begin() + 1, x.shape().end()) != sample || x.dim(0) < 1)
    throw InputError("dlib adapter: expected an f32 NCHW batch [B," + shape_str(sample).substr(1) +
                     ", got " + std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()));
  dlib::resizable_tensor t(x.dim(0), x.dim(1), x.dim(2), x.dim(3));
  std::memcpy(t.host(), x.raw(), x.nbytes());
  return t;
}

std::vector<unsigned long> to_labels(const Tensor& y, std::int64_t batch, std::int64_t classes) {
  if (y.dtype() != DType::I64 || y.shape() != Shape{batch})
    throw InputError("dlib adapter: expected i64 labels [" + std::to_string(batch) + "], got " +
                     std::string(dtype_name(y.dtype())) + " " + shape_str(y.shape()));
  std::vector<unsigned long> out;
  out.reserve(static_cast<std::size_t>(batch));
  for (std::int64_t v : y.values<std::int64_t>()) {
    if (v < 0 || v >= classes)
      throw InputError("dlib adapter: label " + std::to_string(v) + " is outside [0," +
                       std::to_string(classes) + ")");
    out.push_back(static_cast<unsigned long>(v));
  }
  return out;
}

Tensor from_dlib(const dlib::tensor& t, Shape shape, Layout layout) {
  Tensor out(DType::F32, std::move(shape), layout);
  if (static_cast<std::size_t>(out.numel()) != t.size())
    throw std::logic_error("dlib adapter: tensor of " + std::to_string(t.size()) +
                           " values does not fit " + shape_str(out.shape()));
  std::memcpy(out.raw(), t.host(), out.nbytes());
  return out;
}

// ---- the layer map -----------------------------------------------------------------------------

void NetBase::bind(std::vector<Entry> found) {
  entries_.assign(std::make_move_iterator(found.rbegin()), std::make_move_iterator(found.rend()));
  shapes_ = ir::infer_shapes(model_);
  entry_of_.assign(model_.layers.size(), -1);
  std::size_t next = 0;
  for (std::size_t i = 0; i < model_.layers.size(); ++i) {
    const ir::Layer& l = model_.layers[i];
    // dlib's fc_ reads its input as k,nr,nc planes: the Flatten has no dlib layer of its own.
    if (l.op == ir::Op::Flatten) continue;
    if (next >= entries_.size())
      throw std::logic_error("dlib adapter: the dlib type of " + model_.name +
                             " ends before IR layer " + l.name);
    Entry& e = entries_[next];
    if (!kind_matches(e.kind, l.op))
      throw std::logic_error("dlib adapter: IR layer " + l.name + " (" +
                             std::string(ir::op_name(l.op)) + ") meets dlib layer " +
                             kind_name(e.kind) + " at position " + std::to_string(next));
    e.layer = &l;
    entry_of_[i] = static_cast<int>(next++);
  }
  if (next != entries_.size())
    throw std::logic_error("dlib adapter: the dlib type of " + model_.name + " has " +
                           std::to_string(entries_.size() - next) + " layers more than the IR");
  slots_.clear();
  for (Entry& e : entries_)
    if (e.kind == Kind::Conv || e.kind == Kind::Dense || e.kind == Kind::BatchNorm)
      slots_.push_back({e.layer, e.params, e.grad});
  running_mean_.assign(model_.layers.size(), {});
  running_var_.assign(model_.layers.size(), {});
  for (std::size_t i = 0; i < model_.layers.size(); ++i)
    if (entry_of_[i] >= 0 && entries_[entry_of_[i]].kind == Kind::BatchNorm) {
      const auto c = static_cast<std::size_t>(shapes_[i][0]);
      running_mean_[i].assign(c, 0.0f);
      running_var_[i].assign(c, 1.0f);
    }
}

namespace {

std::int64_t numel_of(const ir::Model& m, const std::string& weight) {
  for (const ir::WeightSpec& s : ir::weight_specs(m))
    if (s.name == weight) return shape_numel(s.shape);
  throw std::logic_error("dlib adapter: no weight " + weight);
}

}  // namespace

void NetBase::check_params(bool from_file) const {
  auto fail = [&](const std::string& what) {
    const std::string msg = "dlib adapter: " + what;
    if (from_file) throw InputError(msg);
    throw std::logic_error(msg);
  };
  // Conv and dense first: a mismatched affine_ is only looked at once they fit.
  for (int pass = 0; pass < 2; ++pass)
    for (std::size_t i = 0; i < model_.layers.size(); ++i) {
      if (entry_of_[i] < 0) continue;
      const ir::Layer& l = model_.layers[i];
      const Entry& e = entries_[entry_of_[i]];
      if ((e.kind == Kind::Affine) != (pass == 1)) continue;
      std::int64_t want = 0;
      std::int64_t have = static_cast<std::int64_t>(e.params->size());
      switch (e.kind) {
        case Kind::Conv:
          want = numel_of(model_, l.name + ".weight") + (l.bias ? l.out : 0);
          break;
        case Kind::Dense:
          want = numel_of(model_, l.name + ".weight") + l.out;
          break;
        case Kind::BatchNorm:
          want = 2 * shapes_[i][0];
          break;
        case Kind::Affine:
          if (e.affine->get_mode() != dlib::CONV_MODE)
            fail("layer " + l.name + " is a per-value affine_ in dlib, the IR needs per-channel");
          want = shapes_[i][0];
          have = static_cast<std::int64_t>(e.affine->get_gamma().size());
          break;
        default:
          break;
      }
      if (have != want)
        fail("layer " + l.name + " has " + std::to_string(have) + " parameters in dlib, " +
             model_.name + " on " + shape_str(model_.input_shape) + " needs " +
             std::to_string(want));
    }
}

void NetBase::check_outputs(std::int64_t n) const {
  for (std::size_t i = 0; i < model_.layers.size(); ++i) {
    if (entry_of_[i] < 0) continue;
    const dlib::tensor* out = entries_[entry_of_[i]].output();
    if (out == nullptr) continue;  // computed in place by the next layer: same shape
    const dlib::tensor& t = *out;
    const Shape& s = shapes_[i];
    const Shape got = {t.num_samples(), t.k(), t.nr(), t.nc()};
    const Shape want = s.size() == 3 ? Shape{n, s[0], s[1], s[2]} : Shape{n, s[0], 1, 1};
    if (got != want)
      throw std::logic_error("dlib adapter: layer " + model_.layers[i].name + " gives " +
                             shape_str(got) + " in dlib, the IR " + shape_str(want));
  }
}

// ---- weights -----------------------------------------------------------------------------------

void NetBase::import_weights(const WeightSet& w) {
  w.check_against(model_);
  for (std::size_t i = 0; i < model_.layers.size(); ++i) {
    if (entry_of_[i] < 0) continue;
    const ir::Layer& l = model_.layers[i];
    Entry& e = entries_[entry_of_[i]];
    auto get = [&](const char* p) { return w.at(l.name + "." + p).values<float>(); };
    float* p = e.params->host();
    switch (e.kind) {
      case Kind::Conv: {
        // dlib's filters are OIHW like PyTorch's, followed by the biases when there are any.
        const auto wt = get("weight");
        std::copy(wt.begin(), wt.end(), p);
        if (l.bias) {
          const auto b = get("bias");
          std::copy(b.begin(), b.end(), p + wt.size());
        }
        break;
      }
      case Kind::Dense: {
        // dlib's fc: row-major (in+1) x out, bias in the last row; PyTorch's weight is [out,in].
        const auto wt = get("weight");
        const auto b = get("bias");
        const std::int64_t out = l.out;
        const auto in = static_cast<std::int64_t>(wt.size()) / out;
        for (std::int64_t o = 0; o < out; ++o)
          for (std::int64_t k = 0; k < in; ++k) p[k * out + o] = wt[o * in + k];
        std::copy(b.begin(), b.end(), p + in * out);
        break;
      }
      case Kind::BatchNorm: {
        // bn_'s parameters: gamma for every channel, then beta.
        const auto g = get("weight"), b = get("bias");
        std::copy(g.begin(), g.end(), p);
        std::copy(b.begin(), b.end(), p + g.size());
        const auto rm = get("running_mean"), rv = get("running_var");
        running_mean_[i].assign(rm.begin(), rm.end());
        running_var_[i].assign(rv.begin(), rv.end());
        break;
      }
      case Kind::Affine: {
        // PyTorch's evaluation-mode BatchNorm on CPU folds to x*alpha + beta with
        // alpha = weight/sqrt(var+eps), beta = bias - mean*alpha, computed in float: the same here.
        const auto g = get("weight"), b = get("bias");
        const auto rm = get("running_mean"), rv = get("running_var");
        auto ga = e.affine->get_gamma();
        auto be = e.affine->get_beta();
        float* gp = ga.host();
        float* bp = be.host();
        for (std::size_t c = 0; c < g.size(); ++c) {
          const float invstd = 1.0f / std::sqrt(rv[c] + l.eps);
          gp[c] = g[c] * invstd;
          bp[c] = b[c] - rm[c] * gp[c];
        }
        break;
      }
      default:
        break;
    }
  }
}

WeightSet NetBase::export_weights() const {
  if (mode_ != Mode::Train)
    throw std::logic_error("dlib adapter: an evaluation network folds BatchNorm; no weight set");
  WeightSet w;
  for (const ir::WeightSpec& s : ir::weight_specs(model_)) {
    std::size_t i = 0;
    while (i < model_.layers.size() && model_.layers[i].name != s.layer) ++i;
    if (i == model_.layers.size() || entry_of_[i] < 0)
      throw std::logic_error("dlib adapter: weight " + s.name + " has no dlib layer");
    const ir::Layer& l = model_.layers[i];
    const Entry& e = entries_[entry_of_[i]];
    Tensor t(DType::F32, s.shape, s.layout);
    auto v = t.values<float>();
    const float* p = e.params->host();
    const std::size_t n = v.size();
    if (e.kind == Kind::Conv) {
      const auto wn = static_cast<std::size_t>(numel_of(model_, l.name + ".weight"));
      const float* src = s.param == "weight" ? p : p + wn;
      std::copy(src, src + n, v.begin());
    } else if (e.kind == Kind::Dense) {
      const std::int64_t out = l.out;
      const auto in = numel_of(model_, l.name + ".weight") / out;
      if (s.param == "weight") {
        for (std::int64_t o = 0; o < out; ++o)
          for (std::int64_t k = 0; k < in; ++k) v[o * in + k] = p[k * out + o];
      } else {
        std::copy(p + in * out, p + (in + 1) * out, v.begin());
      }
    } else if (e.kind == Kind::BatchNorm) {
      if (s.param == "weight")
        std::copy(p, p + n, v.begin());
      else if (s.param == "bias")
        std::copy(p + n, p + 2 * n, v.begin());
      else if (s.param == "running_mean")
        std::copy(running_mean_[i].begin(), running_mean_[i].end(), v.begin());
      else if (s.param == "running_var")
        std::copy(running_var_[i].begin(), running_var_[i].end(), v.begin());
      else
        throw std::logic_error("dlib adapter: BatchNorm weight " + s.name + " is not known");
    } else {
      throw std::logic_error("dlib adapter: weight " + s.name + " on a dlib " + kind_name(e.kind));
    }
    w.set(s.name, std::move(t));
  }
  return w;
}

void NetBase::update_running_stats() {
  for (std::size_t i = 0; i < model_.layers.size(); ++i) {
    if (running_mean_[i].empty()) continue;
    const dlib::tensor& t = entries_[entry_of_[i]].input();
    const long n = t.num_samples(), c = t.k(), hw = t.nr() * t.nc();
    const double count = static_cast<double>(n * hw);
    const double m = model_.layers[i].momentum;
    const float* x = t.host();
    for (long ch = 0; ch < c; ++ch) {
      double sum = 0;
      for (long s = 0; s < n; ++s) {
        const float* p = x + (s * c + ch) * hw;
        for (long j = 0; j < hw; ++j) sum += p[j];
      }
      const double mean = sum / count;
      double sq = 0;
      for (long s = 0; s < n; ++s) {
        const float* p = x + (s * c + ch) * hw;
        for (long j = 0; j < hw; ++j) sq += (p[j] - mean) * (p[j] - mean);
      }
      // torch.nn.BatchNorm2d: running = (1-momentum)*running + momentum*batch, with the
      // unbiased batch variance (the normalisation itself uses the biased one, as dlib's).
      const double var = count > 1 ? sq / (count - 1) : sq;
      float& rm = running_mean_[i][static_cast<std::size_t>(ch)];
      float& rv = running_var_[i][static_cast<std::size_t>(ch)];
      rm = static_cast<float>((1 - m) * rm + m * mean);
      rv = static_cast<float>((1 - m) * rv + m * var);
    }
  }
}

std::vector<LayerOutput> NetBase::layer_outputs(const Tensor& x) {
  forward(x);
  const std::int64_t n = x.dim(0);
  // dlib runs in-place layers (relu_, affine_) in their input's buffer and then refuses the input
  // layer's get_output(): such a layer is reported under the last name of the chain.
  std::vector<LayerOutput> out;
  for (std::size_t i = 0; i < model_.layers.size(); ++i) {
    const ir::Layer& l = model_.layers[i];
    int e = entry_of_[i];
    if (e < 0) {
      // Flatten: the same values as its input, which dlib's fc_ reads in (C,H,W) order.
      const std::string src = ir::resolved_inputs(model_, i).at(0);
      std::size_t p = 0;
      while (p < i && model_.layers[p].name != src) ++p;
      if (p == i || entry_of_[p] < 0) continue;
      e = entry_of_[p];
    }
    const dlib::tensor* value = entries_[e].output();
    if (value == nullptr) continue;
    Shape s = shapes_[i];
    s.insert(s.begin(), n);
    out.push_back({l.name, from_dlib(*value, s, s.size() == 4 ? Layout::NCHW : Layout::NC)});
  }
  return out;
}

}  // namespace crossdl::dlibx
