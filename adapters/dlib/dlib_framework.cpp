// The dlib adapter. dlib networks are compile-time types, so crossdl instantiates one type per zoo
// model it can express (LeNet-1, LeNet-5, ResNet-20, VGG-16; dlib_lenet.cpp, dlib_resnet.cpp,
// dlib_vgg.cpp) and checks that the IR it is given is exactly that model. dlib computes the
// forward pass, the loss and every gradient; the optimiser update and the BatchNorm running
// statistics are crossdl's own code, written to PyTorch's formulas, so that "the same optimiser
// settings" mean the same update in every framework.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/adapter_guard.h"
#include "dlib_net.h"

namespace crossdl {
namespace {

using dlibx::Mode;
using dlibx::Net;
using dlibx::Slot;

// ---- the optimisers, to PyTorch's formulas ---------------------------------------------------

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

class DlibRunner : public Runner {
 public:
  DlibRunner(const ir::Model& m, const WeightSet& w) : net_(dlibx::make_net(m, Mode::Eval)) {
    net_->import_weights(w);
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return dlibx::guarded("infer", [&] { logits = net_->logits(x); });
  }
  Status input_gradient(const Tensor& x, const Tensor& labels, Tensor& grad,
                        double& loss) override {
    return dlibx::guarded("input_gradient", [&] { grad = net_->input_gradient(x, labels, loss); });
  }
  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    return dlibx::guarded("layer_outputs", [&] { out = net_->layer_outputs(x); });
  }

 private:
  std::unique_ptr<Net> net_;
};

// Trains a Mode::Train network (batch statistics); evaluates a Mode::Eval copy built from the
// current weights and running statistics, as PyTorch's model.eval() does.
class DlibTrainer : public Trainer {
 public:
  DlibTrainer(const ir::Model& m, const WeightSet& init, const TrainConfig& cfg)
      : model_(m), net_(dlibx::make_net(m, Mode::Train)), opt_(cfg) {
    net_->import_weights(init);
  }
  Status step(const Tensor& x, const Tensor& labels, double lr, double& loss) override {
    return dlibx::guarded("train step", [&] {
      loss = net_->train_gradients(x, labels);
      opt_.step(net_->slots(), lr);
    });
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return dlibx::guarded("infer", [&] {
      if (!eval_) eval_ = dlibx::make_net(model_, Mode::Eval);
      eval_->import_weights(net_->export_weights());
      logits = eval_->logits(x);
    });
  }
  Status export_weights(WeightSet& out) override {
    return dlibx::guarded("export weights", [&] { out = net_->export_weights(); });
  }

 private:
  ir::Model model_;
  std::unique_ptr<Net> net_;
  std::unique_ptr<Net> eval_;
  Optimizer opt_;
};

class DlibFramework : public Framework {
 public:
  FrameworkInfo info() const override { return {"dlib", "dlib", dlibx::version(), "cpu"}; }

  Capability supports(const ir::Model& m) const override { return dlibx::supports(m); }

  std::unique_ptr<Runner> load(const ir::Model& m, const WeightSet& w, const RunOptions&,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    std::unique_ptr<Runner> r;
    status = dlibx::guarded("load", [&] { r = std::make_unique<DlibRunner>(m, w); });
    return status.is_ok() ? std::move(r) : nullptr;
  }

  std::unique_ptr<Trainer> trainer(const ir::Model& m, const WeightSet& init,
                                   const TrainConfig& cfg, Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    std::unique_ptr<Trainer> t;
    status = dlibx::guarded("trainer", [&] { t = std::make_unique<DlibTrainer>(m, init, cfg); });
    return status.is_ok() ? std::move(t) : nullptr;
  }
};

}  // namespace

std::unique_ptr<Framework> make_dlib_framework(const std::string& variant) {
  require_no_variant("dlib", variant);
  return std::make_unique<DlibFramework>();
}

std::string probe_dlib(std::string& why) {
  why.clear();
  return dlibx::version();
}

}  // namespace crossdl
