// The dlib adapter. dlib networks are compile-time types, so crossdl instantiates one type per zoo
// model it can express (LeNet-1 and LeNet-5 on 1x28x28 images with 10 classes) and checks that the
// IR it is given is exactly that model. dlib computes the forward pass, the loss and every
// gradient; the optimiser update is crossdl's own code, written to PyTorch's formulas, so that
// "the same optimiser settings" mean the same update in every framework.
//
// dlib's headers stay inside this file: every network type is instantiated here once.
#include <dlib/dnn.h>
#include <dlib/revision.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/adapter_guard.h"
#include "crossdl/zoo.h"

namespace crossdl {
namespace {

// ---- the network types ---------------------------------------------------------------------

// con_ with explicit padding: dlib's con<> pads "same" by default, PyTorch's Conv2d does not.
template <long Filters, long K, int Pad, typename Sub>
using conv = dlib::add_layer<dlib::con_<Filters, K, K, 1, 1, Pad, Pad>, Sub>;
// max_pool_ pads "same" by default for stride 1; spelled out as 0 for PyTorch's floor mode.
template <typename Sub>
using pool2 = dlib::add_layer<dlib::max_pool_<2, 2, 2, 2, 0, 0>, Sub>;
using Input = dlib::input<dlib::matrix<float>>;

constexpr long kClasses = 10;

using Lenet1Net = dlib::loss_multiclass_log<
    dlib::fc<kClasses, pool2<dlib::relu<conv<12, 5, 0, pool2<dlib::relu<conv<4, 5, 0, Input>>>>>>>>;

using Lenet5Net = dlib::loss_multiclass_log<dlib::fc<
    kClasses,
    dlib::relu<dlib::fc<
        84, dlib::relu<dlib::fc<120, pool2<dlib::relu<conv<
                                         16, 5, 0, pool2<dlib::relu<conv<6, 5, 2, Input>>>>>>>>>>>>;

const Shape kImage = {1, 28, 28};

// The zoo models crossdl has a dlib type for, as the IR they must match exactly.
std::vector<ir::Model> compiled_models() {
  const zoo::InputSpec spec{kImage, DType::F32, kClasses, 0};
  return {zoo::build("lenet1", spec), zoo::build("lenet5", spec)};
}

// ---- parameters ------------------------------------------------------------------------------

// One parametric dlib layer, tied to its IR layer.
struct Slot {
  const ir::Layer* layer = nullptr;  // Conv2d or Dense
  std::int64_t in = 0;               // Dense: input features; Conv2d: weight numel
  dlib::tensor* params = nullptr;
  const dlib::tensor* grad = nullptr;
};

// Visits dlib's layers (output first) and records every layer that has parameters.
struct CollectParams {
  std::vector<Slot>* out;
  template <class T, class U, class E>
  void operator()(std::size_t, dlib::add_layer<T, U, E>& l) const {
    dlib::tensor& p = l.layer_details().get_layer_params();
    if (p.size() == 0) return;
    Slot s;
    s.params = &p;
    s.grad = &l.get_parameter_gradient();
    out->push_back(s);
  }
  template <class L>
  void operator()(std::size_t, L&) const {}  // the loss and input layers
};

dlib::resizable_tensor to_dlib(const Tensor& x, const Shape& sample) {
  if (x.dtype() != DType::F32 || x.rank() != 4 ||
      Shape(x.shape().begin() + 1, x.shape().end()) != sample)
    throw InputError("dlib adapter: expected an f32 NCHW batch [B," + shape_str(sample).substr(1) +
                     ", got " + std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()));
  dlib::resizable_tensor t(x.dim(0), x.dim(1), x.dim(2), x.dim(3));
  std::memcpy(t.host(), x.raw(), x.nbytes());
  return t;
}

std::vector<unsigned long> to_labels(const Tensor& y, std::int64_t batch) {
  if (y.dtype() != DType::I64 || y.shape() != Shape{batch})
    throw InputError("dlib adapter: expected i64 labels [" + std::to_string(batch) + "], got " +
                     std::string(dtype_name(y.dtype())) + " " + shape_str(y.shape()));
  std::vector<unsigned long> out;
  out.reserve(static_cast<std::size_t>(batch));
  for (std::int64_t v : y.values<std::int64_t>()) {
    if (v < 0 || v >= kClasses)
      throw InputError("dlib adapter: label " + std::to_string(v) + " is outside [0," +
                       std::to_string(kClasses) + ")");
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

// What the Runner and the Trainer need from a network, whatever its compile-time type.
class Net {
 public:
  virtual ~Net() = default;
  virtual void import_weights(const WeightSet& w) = 0;
  virtual WeightSet export_weights() const = 0;
  virtual Tensor logits(const Tensor& x) = 0;
  virtual Tensor input_gradient(const Tensor& x, const Tensor& y, double& loss) = 0;
  // Fills the parameter gradients of the mean cross-entropy; returns that loss.
  virtual double gradients(const Tensor& x, const Tensor& y) = 0;
  virtual std::vector<Slot>& slots() = 0;
};

template <class NetType>
class NetOf : public Net {
 public:
  explicit NetOf(const ir::Model& m) : model_(m), net_(std::make_unique<NetType>()) {
    // dlib allocates the parameters on the first forward pass, and its input layer must have
    // converted one sample (to_tensor sets the sample expansion factor) before forward(tensor).
    dlib::matrix<float> blank(kImage[1], kImage[2]);
    blank = 0;
    dlib::resizable_tensor dummy;
    net_->to_tensor(&blank, &blank + 1, dummy);
    net_->forward(dummy);
    std::vector<Slot> found;
    dlib::visit_layers(*net_, CollectParams{&found});
    std::vector<const ir::Layer*> param_layers;
    for (const ir::Layer& l : model_.layers)
      if (l.op == ir::Op::Conv2d || l.op == ir::Op::Dense) param_layers.push_back(&l);
    if (found.size() != param_layers.size())
      throw std::logic_error("dlib adapter: the dlib type has " + std::to_string(found.size()) +
                             " parametric layers, the IR " + std::to_string(param_layers.size()));
    // dlib lists layers from the output back to the input.
    slots_.assign(found.rbegin(), found.rend());
    const auto shapes = ir::infer_shapes(model_);
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      s.layer = param_layers[i];
      std::int64_t want = 0;
      if (s.layer->op == ir::Op::Dense) {
        s.in = static_cast<std::int64_t>(s.params->num_samples()) - 1;
        want = (s.in + 1) * s.layer->out;
      } else {
        const ir::WeightSpec ws = spec_of(s.layer->name + ".weight");
        s.in = shape_numel(ws.shape);
        want = s.in + s.layer->out;
      }
      if (static_cast<std::int64_t>(s.params->size()) != want)
        throw std::logic_error("dlib adapter: layer " + s.layer->name + " has " +
                               std::to_string(s.params->size()) + " parameters in dlib, expected " +
                               std::to_string(want));
    }
  }

  void import_weights(const WeightSet& w) override {
    w.check_against(model_);
    for (Slot& s : slots_) {
      const auto wt = w.at(s.layer->name + ".weight").values<float>();
      const auto b = w.at(s.layer->name + ".bias").values<float>();
      float* p = s.params->host();
      if (s.layer->op == ir::Op::Conv2d) {
        // dlib's filters are OIHW like PyTorch's, followed by the biases.
        std::copy(wt.begin(), wt.end(), p);
        std::copy(b.begin(), b.end(), p + wt.size());
      } else {
        // dlib's fc: row-major (in+1) x out, bias in the last row; PyTorch's weight is [out,in].
        const std::int64_t out = s.layer->out;
        for (std::int64_t o = 0; o < out; ++o)
          for (std::int64_t i = 0; i < s.in; ++i) p[i * out + o] = wt[o * s.in + i];
        std::copy(b.begin(), b.end(), p + s.in * out);
      }
    }
  }

  WeightSet export_weights() const override {
    WeightSet w;
    for (const Slot& s : slots_) {
      const ir::WeightSpec wspec = spec_of(s.layer->name + ".weight");
      const ir::WeightSpec bspec = spec_of(s.layer->name + ".bias");
      Tensor wt(DType::F32, wspec.shape, wspec.layout);
      Tensor b(DType::F32, bspec.shape, bspec.layout);
      auto wv = wt.values<float>();
      auto bv = b.values<float>();
      const float* p = s.params->host();
      if (s.layer->op == ir::Op::Conv2d) {
        std::copy(p, p + wv.size(), wv.begin());
        std::copy(p + wv.size(), p + wv.size() + bv.size(), bv.begin());
      } else {
        const std::int64_t out = s.layer->out;
        for (std::int64_t o = 0; o < out; ++o)
          for (std::int64_t i = 0; i < s.in; ++i) wv[o * s.in + i] = p[i * out + o];
        std::copy(p + s.in * out, p + (s.in + 1) * out, bv.begin());
      }
      w.set(wspec.name, std::move(wt));
      w.set(bspec.name, std::move(b));
    }
    return w;
  }

  Tensor logits(const Tensor& x) override {
    const dlib::resizable_tensor xt = to_dlib(x, kImage);
    const dlib::tensor& out = net_->forward(xt);
    return from_dlib(out, {x.dim(0), kClasses}, Layout::NC);
  }

  Tensor input_gradient(const Tensor& x, const Tensor& y, double& loss) override {
    const dlib::resizable_tensor xt = to_dlib(x, kImage);
    const std::vector<unsigned long> labels = to_labels(y, x.dim(0));
    loss = net_->compute_loss(xt, labels.begin());
    net_->back_propagate_error(xt);
    return from_dlib(net_->get_final_data_gradient(), x.shape(), x.layout());
  }

  double gradients(const Tensor& x, const Tensor& y) override {
    const dlib::resizable_tensor xt = to_dlib(x, kImage);
    const std::vector<unsigned long> labels = to_labels(y, x.dim(0));
    return net_->compute_parameter_gradients(xt, labels.begin());
  }

  std::vector<Slot>& slots() override { return slots_; }

 private:
  ir::WeightSpec spec_of(const std::string& name) const {
    for (const ir::WeightSpec& s : ir::weight_specs(model_))
      if (s.name == name) return s;
    throw std::logic_error("dlib adapter: no weight " + name);
  }

  ir::Model model_;
  std::unique_ptr<NetType> net_;
  std::vector<Slot> slots_;
};

std::unique_ptr<Net> make_net(const ir::Model& m) {
  const std::vector<ir::Model> known = compiled_models();
  if (m == known[0]) return std::make_unique<NetOf<Lenet1Net>>(m);
  if (m == known[1]) return std::make_unique<NetOf<Lenet5Net>>(m);
  throw std::logic_error("dlib adapter: no dlib type for model " + m.name);
}

// ---- the optimisers, to PyTorch's formulas
// -------------------------------------------------------

class Optimizer {
 public:
  explicit Optimizer(const TrainConfig& c) : cfg_(c) {
    if (c.optimizer != "sgd" && c.optimizer != "adam")
      throw InputError("optimizer '" + c.optimizer + "' is not known (sgd, adam)");
  }

  void step(std::vector<Slot>& slots, double lr) {
    if (state1_.empty()) {
      for (const Slot& s : slots) {
        state1_.emplace_back(s.params->size(), 0.0f);
        if (cfg_.optimizer == "adam") state2_.emplace_back(s.params->size(), 0.0f);
      }
    }
    ++t_;
    for (std::size_t k = 0; k < slots.size(); ++k) {
      Slot& s = slots[k];
      if (s.grad->size() != s.params->size())
        throw std::logic_error("dlib adapter: layer " + s.layer->name + " has no gradient");
      float* w = s.params->host();
      const float* g = s.grad->host();
      const std::size_t n = s.params->size();
      if (cfg_.optimizer == "sgd")
        sgd(w, g, state1_[k].data(), n, lr);
      else
        adam(w, g, state1_[k].data(), state2_[k].data(), n, lr);
    }
  }

 private:
  // torch.optim.SGD (dampening 0, no Nesterov): d = g + wd*w; buf = momentum*buf + d (buf = d at
  // the first step, the same as from a zero buffer); w -= lr*buf.
  void sgd(float* w, const float* g, float* buf, std::size_t n, double lr) const {
    const auto wd = static_cast<float>(cfg_.weight_decay);
    const auto mom = static_cast<float>(cfg_.momentum);
    const auto a = static_cast<float>(-lr);
    for (std::size_t i = 0; i < n; ++i) {
      float d = g[i];
      if (wd != 0.0f) d += wd * w[i];
      buf[i] = t_ == 1 || mom == 0.0f ? d : mom * buf[i] + d;
      w[i] += a * buf[i];
    }
  }

  // torch.optim.Adam (amsgrad off): d = g + wd*w; m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d*d;
  // w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
  void adam(float* w, const float* g, float* m, float* v, std::size_t n, double lr) const {
    const auto wd = static_cast<float>(cfg_.weight_decay);
    const auto b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
    const auto step_size = static_cast<float>(lr / bc1);
    const auto bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const auto eps = static_cast<float>(cfg_.adam_eps);
    for (std::size_t i = 0; i < n; ++i) {
      float d = g[i];
      if (wd != 0.0f) d += wd * w[i];
      m[i] = b1 * m[i] + (1.0f - b1) * d;
      v[i] = b2 * v[i] + (1.0f - b2) * d * d;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      w[i] -= step_size * (m[i] / denom);
    }
  }

  TrainConfig cfg_;
  std::int64_t t_ = 0;
  std::vector<std::vector<float>> state1_;  // SGD momentum buffer / Adam first moment
  std::vector<std::vector<float>> state2_;  // Adam second moment
};

// ---- the interface -----------------------------------------------------------------------------

// Runs `fn`, turning any library exception (dlib::error is a std::exception) into a failed Status.
template <class Fn>
Status guarded(const char* what, Fn&& fn) {
  return guarded_call(what, "dlib", std::forward<Fn>(fn));
}

class DlibRunner : public Runner {
 public:
  DlibRunner(const ir::Model& m, const WeightSet& w) : net_(make_net(m)) {
    net_->import_weights(w);
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] { logits = net_->logits(x); });
  }
  Status input_gradient(const Tensor& x, const Tensor& labels, Tensor& grad,
                        double& loss) override {
    return guarded("input_gradient", [&] { grad = net_->input_gradient(x, labels, loss); });
  }

 private:
  std::unique_ptr<Net> net_;
};

class DlibTrainer : public Trainer {
 public:
  DlibTrainer(const ir::Model& m, const WeightSet& init, const TrainConfig& cfg)
      : net_(make_net(m)), opt_(cfg) {
    net_->import_weights(init);
  }
  Status step(const Tensor& x, const Tensor& labels, double lr, double& loss) override {
    return guarded("train step", [&] {
      loss = net_->gradients(x, labels);
      opt_.step(net_->slots(), lr);
    });
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] { logits = net_->logits(x); });
  }
  Status export_weights(WeightSet& out) override {
    return guarded("export weights", [&] { out = net_->export_weights(); });
  }

 private:
  std::unique_ptr<Net> net_;
  Optimizer opt_;
};

std::string version_string() {
  return std::to_string(DLIB_MAJOR_VERSION) + "." + std::to_string(DLIB_MINOR_VERSION) + "." +
         std::to_string(DLIB_PATCH_VERSION);
}

class DlibFramework : public Framework {
 public:
  FrameworkInfo info() const override { return {"dlib", "dlib", version_string(), "cpu"}; }

  Capability supports(const ir::Model& m) const override {
    for (const ir::Layer& l : m.layers) {
      if (l.op == ir::Op::LSTM) return Capability::no("dlib has no recurrent layer (LSTM)");
      if (l.op == ir::Op::GRU) return Capability::no("dlib has no recurrent layer (GRU)");
    }
    try {
      for (const ir::Model& known : compiled_models())
        if (m == known) return Capability::yes();
    } catch (const std::exception& e) {
      return Capability::no(std::string("dlib adapter: ") + e.what());
    }
    std::string why =
        "dlib networks are compile-time types; crossdl builds lenet1/lenet5 for 1x28x28 inputs "
        "with 10 classes only";
    if (m.name == "lenet1" || m.name == "lenet5")
      why += " (got " + m.name + " on " + shape_str(m.input_shape) + " with " +
             std::to_string(m.num_classes) + " classes)";
    else
      why += " (" + m.name + " is not among them)";
    return Capability::no(why);
  }

  std::unique_ptr<Runner> load(const ir::Model& m, const WeightSet& w, const RunOptions&,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    std::unique_ptr<Runner> r;
    status = guarded("load", [&] { r = std::make_unique<DlibRunner>(m, w); });
    return status.is_ok() ? std::move(r) : nullptr;
  }

  std::unique_ptr<Trainer> trainer(const ir::Model& m, const WeightSet& init,
                                   const TrainConfig& cfg, Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    std::unique_ptr<Trainer> t;
    status = guarded("trainer", [&] { t = std::make_unique<DlibTrainer>(m, init, cfg); });
    return status.is_ok() ? std::move(t) : nullptr;
  }
};

}  // namespace

std::unique_ptr<Framework> make_dlib_framework() {
  return std::make_unique<DlibFramework>();
}

std::string probe_dlib(std::string& why) {
  why.clear();
  return version_string();
}

}  // namespace crossdl
