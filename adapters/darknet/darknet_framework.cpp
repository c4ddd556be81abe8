// The Darknet adapter: plans the IR as a Darknet .cfg with the core's darknet_plan (the cfg that
// darknet_write writes, parsed here with parse_network_cfg), moves the shared weight set in and out
// of Darknet's layer arrays, and drives forward/backward/update itself so that its SGD step equals
// PyTorch's (see README.md).
//
// Darknet reports some failures with exit() or assert(); everything the IR can say wrongly is
// checked by plan() before Darknet sees it, so that an unsupported model is a Capability::no.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/adapter_guard.h"
#include "crossdl/darknet_io.h"
#include "darknet_support.h"

namespace crossdl {
namespace {

using namespace darknet_detail;

// Batch of the networks a Runner builds for inference: larger inputs are run in chunks.
constexpr std::int64_t kRunnerBatch = 256;

using Plan = DarknetPlan;
using Unit = DarknetLayer;

Capability plan(const ir::Model& m, Plan& p) {
  return darknet_plan(m, p);
}

struct Hyper {
  double lr = 0.02, momentum = 0.9, decay = 0.0;
};

NetPtr build_net(const Plan& p, std::int64_t batch, const Hyper& hp) {
  DarknetNetOptions opt;
  opt.batch = batch;
  opt.learning_rate = hp.lr;
  opt.momentum = hp.momentum;
  opt.decay = hp.decay;
  const std::string cfg = darknet_cfg(p, opt);
  std::string path =
      (std::filesystem::temp_directory_path() / "crossdl-darknet-XXXXXX.cfg").string();
  const int fd = mkstemps(path.data(), 4);
  if (fd < 0) throw std::runtime_error("cannot create a temporary .cfg file in " + path);
  close(fd);
  {
    std::ofstream out(path);
    out << cfg;
    if (!out) {
      std::filesystem::remove(path);
      throw std::runtime_error("cannot write the temporary .cfg file " + path);
    }
  }
  network* net = nullptr;
  {
    QuietStdio quiet;
    net = parse_network_cfg(path.data());
  }
  std::filesystem::remove(path);
  if (net == nullptr) throw std::runtime_error("parse_network_cfg returned no network");
  NetPtr owned(net);
  // Exactly the layers planned, with the sizes the IR gives.
  if (net->n != static_cast<int>(p.layers.size()) || net->batch != batch ||
      net->inputs != p.c * p.h * p.w || net->layers[p.logits].outputs != p.classes)
    throw std::runtime_error("darknet built a network that differs from the plan (" +
                             std::to_string(net->n) + " layers, " +
                             std::to_string(p.layers.size()) + " planned)");
  net->learning_rate = static_cast<float>(hp.lr);
  net->momentum = static_cast<float>(hp.momentum);
  net->decay = static_cast<float>(hp.decay);
  return owned;
}

void copy_in(float* dst, std::int64_t count, const WeightSet& w, const std::string& name) {
  const Tensor& t = w.at(name);
  if (t.dtype() != DType::F32 || t.numel() != count)
    throw InputError("weight " + name + ": " + shape_str(t.shape()) + " has not the " +
                     std::to_string(count) + " floats the darknet layer holds");
  std::memcpy(dst, t.raw(), static_cast<std::size_t>(count) * sizeof(float));
}

Tensor copy_out(const float* src, const Shape& shape, Layout layout) {
  Tensor t(DType::F32, shape, layout);
  std::memcpy(t.raw(), src, t.nbytes());
  return t;
}

// The bias of a convolution followed by a BatchNorm, which Darknet's batch-normalised convolution
// does not hold (see DarknetLayer::conv_bias), kept beside the network. `offset` is PyTorch's
// running mean minus Darknet's rolling mean: the bias while it stays constant; under weight decay,
// which moves the bias, the running average of the biases the forward passes saw, at Darknet's
// fixed BN momentum. The imported running mean and the rolling mean made from it are kept too: a
// channel whose rolling mean and offset are untouched exports the imported value, so that an
// import/export round trip is bit-identical ((mean - b) + b is not always mean in float).
struct CancelledBias {
  std::vector<float> bias, velocity, offset, bias0, mean0, rolling0;
};
using ConvBiases = std::map<std::string, CancelledBias>;  // by IR conv name

ConvBiases conv_biases_of(network* net, const Plan& p, const WeightSet& w) {
  ConvBiases out;
  for (std::size_t i = 0; i < p.layers.size(); ++i) {
    const Unit& u = p.layers[i];
    if (u.kind != Unit::Conv || !u.conv_bias) continue;
    CancelledBias& c = out[u.conv];
    const auto b = w.at(u.conv + ".bias").values<float>();
    const auto m = w.at(u.bn + ".running_mean").values<float>();
    c.bias.assign(b.begin(), b.end());
    c.bias0 = c.bias;
    c.offset = c.bias;
    c.velocity.assign(b.size(), 0.0f);
    c.mean0.assign(m.begin(), m.end());
    const float* rolling = net->layers[i].rolling_mean;
    c.rolling0.assign(rolling, rolling + b.size());
  }
  return out;
}

void import_weights(network* net, const Plan& p, const WeightSet& w) {
  for (std::size_t i = 0; i < p.layers.size(); ++i) {
    layer& l = net->layers[i];
    const Unit& u = p.layers[i];
    if (u.kind == Unit::Conv) {
      copy_in(l.weights, static_cast<std::int64_t>(l.n) * l.c * l.size * l.size, w,
              u.conv + ".weight");
      if (u.bn.empty()) {
        copy_in(l.biases, l.n, w, u.conv + ".bias");
      } else {
        copy_in(l.scales, l.n, w, u.bn + ".weight");
        copy_in(l.biases, l.n, w, u.bn + ".bias");
        copy_in(l.rolling_mean, l.n, w, u.bn + ".running_mean");
        copy_in(l.rolling_variance, l.n, w, u.bn + ".running_var");
        if (u.conv_bias) {
          // PyTorch's running mean is that of conv(x) + b, Darknet's that of conv(x).
          std::vector<float> bias(static_cast<std::size_t>(l.n));
          copy_in(bias.data(), l.n, w, u.conv + ".bias");
          for (int c = 0; c < l.n; ++c) l.rolling_mean[c] -= bias[static_cast<std::size_t>(c)];
        }
      }
    } else if (u.kind == Unit::Connected) {
      copy_in(l.weights, static_cast<std::int64_t>(l.inputs) * l.outputs, w, u.dense + ".weight");
      copy_in(l.biases, l.outputs, w, u.dense + ".bias");
    }
  }
}

WeightSet export_weights_from(network* net, const Plan& p, const ir::Model& m,
                              const ConvBiases& biases) {
  std::map<std::string, Tensor> all;
  for (std::size_t i = 0; i < p.layers.size(); ++i) {
    const layer& l = net->layers[i];
    const Unit& u = p.layers[i];
    const std::int64_t n = u.kind == Unit::Conv ? l.n : l.outputs;
    if (u.kind == Unit::Conv) {
      all[u.conv + ".weight"] = copy_out(l.weights, {n, l.c, l.size, l.size}, Layout::OIHW);
      if (u.bn.empty()) {
        all[u.conv + ".bias"] = copy_out(l.biases, {n}, Layout::Any);
      } else {
        all[u.bn + ".weight"] = copy_out(l.scales, {n}, Layout::Any);
        all[u.bn + ".bias"] = copy_out(l.biases, {n}, Layout::Any);
        Tensor mean = copy_out(l.rolling_mean, {n}, Layout::Any);
        if (u.conv_bias) {
          const CancelledBias& cb = biases.at(u.conv);
          auto mv = mean.values<float>();
          for (std::size_t c = 0; c < mv.size(); ++c)
            mv[c] = mv[c] == cb.rolling0[c] && cb.offset[c] == cb.bias0[c] ? cb.mean0[c]
                                                                           : mv[c] + cb.offset[c];
          Tensor bias(DType::F32, {n}, Layout::Any);
          std::copy(cb.bias.begin(), cb.bias.end(), bias.values<float>().begin());
          all[u.conv + ".bias"] = std::move(bias);
        }
        all[u.bn + ".running_mean"] = std::move(mean);
        all[u.bn + ".running_var"] = copy_out(l.rolling_variance, {n}, Layout::Any);
      }
    } else if (u.kind == Unit::Connected) {
      all[u.dense + ".weight"] = copy_out(l.weights, {n, l.inputs}, Layout::OI);
      all[u.dense + ".bias"] = copy_out(l.biases, {n}, Layout::Any);
    }
  }
  WeightSet out;
  for (const auto& spec : ir::weight_specs(m)) {
    auto it = all.find(spec.name);
    if (it == all.end()) throw std::runtime_error("darknet holds no tensor for " + spec.name);
    Tensor t = std::move(it->second);
    if (t.shape() != spec.shape)
      throw std::runtime_error("darknet tensor for " + spec.name + " has shape " +
                               shape_str(t.shape()) + ", expected " + shape_str(spec.shape));
    t.set_layout(spec.layout);
    out.set(spec.name, std::move(t));
  }
  return out;
}

// Checks that x is a float image batch the plan takes; returns the number of examples.
std::int64_t check_images(const Plan& p, const Tensor& x) {
  if (x.dtype() != DType::F32 || x.rank() != 4 || x.dim(1) != p.c || x.dim(2) != p.h ||
      x.dim(3) != p.w)
    throw InputError("darknet adapter: expected an f32 batch [N," + std::to_string(p.c) + "," +
                     std::to_string(p.h) + "," + std::to_string(p.w) + "], got " +
                     shape_str(x.shape()));
  return x.dim(0);
}

std::span<const std::int64_t> check_labels(const Plan& p, const Tensor& labels, std::int64_t n) {
  if (labels.dtype() != DType::I64 || labels.rank() != 1 || labels.dim(0) != n)
    throw InputError("darknet adapter: expected i64 labels [" + std::to_string(n) + "], got " +
                     shape_str(labels.shape()));
  auto y = labels.values<std::int64_t>();
  for (std::int64_t v : y)
    if (v < 0 || v >= p.classes)
      throw InputError("darknet adapter: label " + std::to_string(v) + " is not a class of " +
                       std::to_string(p.classes));
  return y;
}

// Loads rows [begin, begin+count) of x into the network input (zero padding up to the batch)
// and, when labels are given, their one-hot truth.
void load_rows(network* net, const Tensor& x, std::int64_t begin, std::int64_t count,
               std::span<const std::int64_t> labels) {
  const std::size_t per = static_cast<std::size_t>(net->inputs);
  const std::size_t rows = static_cast<std::size_t>(net->batch);
  const auto xv = x.values<float>();
  std::fill(net->input, net->input + per * rows, 0.0f);
  std::memcpy(net->input, xv.data() + static_cast<std::size_t>(begin) * per,
              static_cast<std::size_t>(count) * per * sizeof(float));
  const std::size_t truths = static_cast<std::size_t>(net->truths);
  std::fill(net->truth, net->truth + truths * rows, 0.0f);
  if (!labels.empty())
    for (std::int64_t r = 0; r < count; ++r)
      net->truth[static_cast<std::size_t>(r) * truths +
                 static_cast<std::size_t>(labels[static_cast<std::size_t>(begin + r)])] = 1.0f;
}

// Sum over rows [0,count) of the cross-entropy of the logits, in double (log-sum-exp).
double ce_sum(const float* logits, std::int64_t classes, std::int64_t count,
              std::span<const std::int64_t> labels, std::int64_t begin) {
  double sum = 0;
  for (std::int64_t r = 0; r < count; ++r) {
    const float* z = logits + r * classes;
    double mx = z[0];
    for (std::int64_t c = 1; c < classes; ++c) mx = std::max(mx, static_cast<double>(z[c]));
    double s = 0;
    for (std::int64_t c = 0; c < classes; ++c) s += std::exp(static_cast<double>(z[c]) - mx);
    sum += mx + std::log(s) - z[labels[static_cast<std::size_t>(begin + r)]];
  }
  return sum;
}

// Evaluation-mode logits of x, in chunks of the network's batch.
Tensor logits_of(network* net, const Plan& p, const Tensor& x) {
  const std::int64_t n = check_images(p, x);
  Tensor out(DType::F32, {n, p.classes}, Layout::NC);
  auto ov = out.values<float>();
  net->train = 0;
  for (std::int64_t begin = 0; begin < n; begin += net->batch) {
    const std::int64_t count = std::min<std::int64_t>(net->batch, n - begin);
    load_rows(net, x, begin, count, {});
    forward_network(net);
    std::memcpy(ov.data() + begin * p.classes, net->layers[p.logits].output,
                static_cast<std::size_t>(count * p.classes) * sizeof(float));
  }
  return out;
}

template <class Fn>
Status guarded(const char* what, Fn&& fn) {
  return guarded_call(what, "darknet", std::forward<Fn>(fn));
}

class DarknetRunner : public Runner {
 public:
  DarknetRunner(const ir::Model& m, const Plan& p, const WeightSet& w) : plan_(p), weights_(w) {
    w.check_against(m);
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] {
      const std::int64_t n = check_images(plan_, x);
      logits = logits_of(net_for(std::min(n, kRunnerBatch)), plan_, x);
    });
  }
  Status input_gradient(const Tensor& x, const Tensor& labels, Tensor& grad,
                        double& loss) override {
    if (plan_.has_bn)
      return Status::unsupported(
          "darknet's batch-normalisation backward exists only in training mode (batch "
          "statistics); an evaluation-mode input gradient cannot be taken");
    return guarded("input_gradient", [&] {
      const std::int64_t n = check_images(plan_, x);
      const auto y = check_labels(plan_, labels, n);
      network* net = net_for(std::min(n, kRunnerBatch));
      grad = Tensor(DType::F32, x.shape(), x.layout());
      auto gv = grad.values<float>();
      const std::size_t per = static_cast<std::size_t>(net->inputs);
      std::vector<float> delta(per * static_cast<std::size_t>(net->batch));
      double sum = 0;
      for (std::int64_t begin = 0; begin < n; begin += net->batch) {
        const std::int64_t count = std::min<std::int64_t>(net->batch, n - begin);
        load_rows(net, x, begin, count, y);
        std::fill(delta.begin(), delta.end(), 0.0f);
        net->delta = delta.data();
        net->train = 1;  // no layer here behaves differently in training (no BN, no dropout)
        forward_network(net);
        backward_network(net);
        net->delta = nullptr;
        net->train = 0;
        sum += ce_sum(net->layers[plan_.logits].output, plan_.classes, count, y, begin);
        // Darknet's delta is -d(sum of CE)/dx; the mean over the n examples is wanted.
        const float scale = -1.0f / static_cast<float>(n);
        for (std::size_t k = 0; k < static_cast<std::size_t>(count) * per; ++k)
          gv[static_cast<std::size_t>(begin) * per + k] = delta[k] * scale;
      }
      loss = sum / static_cast<double>(n);
    });
  }

 private:
  network* net_for(std::int64_t batch) {
    if (!net_ || net_->batch != batch) {
      net_.reset();
      net_ = build_net(plan_, batch, Hyper{});
      import_weights(net_.get(), plan_, weights_);
    }
    return net_.get();
  }

  Plan plan_;
  WeightSet weights_;
  NetPtr net_;
};

class DarknetTrainer : public Trainer {
 public:
  DarknetTrainer(const ir::Model& m, const Plan& p, const WeightSet& init, const TrainConfig& cfg)
      : model_(m), plan_(p), cfg_(cfg) {
    if (cfg.optimizer != "sgd")
      throw std::invalid_argument(
          "the darknet adapter trains with sgd only (its adam update "
          "is not aligned with PyTorch's), not '" +
          cfg.optimizer + "'");
    if (cfg.batch_size < 1) throw InputError("batch_size must be at least 1");
    init.check_against(m);
    net_ = build_net(plan_, cfg.batch_size, Hyper{cfg.lr, cfg.momentum, cfg.weight_decay});
    import_weights(net_.get(), plan_, init);
    conv_biases_ = conv_biases_of(net_.get(), plan_, init);
  }

  Status step(const Tensor& x, const Tensor& labels, double lr, double& loss) override {
    return guarded("train step", [&] {
      network* net = net_.get();
      const std::int64_t n = check_images(plan_, x);
      if (n != net->batch)
        throw std::runtime_error("darknet fixes the batch at parse time (" +
                                 std::to_string(net->batch) + "); got a minibatch of " +
                                 std::to_string(n) + " (drop_last must be on)");
      const auto y = check_labels(plan_, labels, n);
      load_rows(net, x, 0, n, y);
      *net->seen += static_cast<std::size_t>(net->batch);
      net->train = 1;
      net->learning_rate = static_cast<float>(lr);
      forward_network(net);
      backward_network(net);
      loss =
          ce_sum(net->layers[plan_.logits].output, plan_.classes, n, y, 0) / static_cast<double>(n);
      // Darknet decays only the weights; PyTorch's weight_decay also decays biases and BN
      // scales. Added here in darknet's units (updates hold -batch * gradient).
      if (cfg_.weight_decay != 0.0) {
        const float k = static_cast<float>(-cfg_.weight_decay * static_cast<double>(n));
        for (int i = 0; i < net->n; ++i) {
          layer& l = net->layers[i];
          const int count = l.type == CONVOLUTIONAL ? l.n : l.outputs;
          if (l.type != CONVOLUTIONAL && l.type != CONNECTED) continue;
          for (int c = 0; c < count; ++c) l.bias_updates[c] += k * l.biases[c];
          if (l.batch_normalize)
            for (int c = 0; c < count; ++c) l.scale_updates[c] += k * l.scales[c];
        }
      }
      update_network(net);
      // The cancelled conv biases have a zero gradient, so only PyTorch's weight decay moves
      // them: its SGD step with g = 0, v <- momentum*v + decay*b, b <- b - lr*v. This step's
      // forward saw the bias before the update, as PyTorch's running mean did (Darknet's rolling
      // mean moves by 0.01 of the batch mean per step, forward_batchnorm_layer).
      if (cfg_.weight_decay != 0.0)
        for (auto& [name, cb] : conv_biases_)
          for (std::size_t c = 0; c < cb.bias.size(); ++c) {
            cb.offset[c] = 0.99f * cb.offset[c] + 0.01f * cb.bias[c];
            cb.velocity[c] = static_cast<float>(cfg_.momentum) * cb.velocity[c] +
                             static_cast<float>(cfg_.weight_decay) * cb.bias[c];
            cb.bias[c] -= static_cast<float>(lr) * cb.velocity[c];
          }
      net->train = 0;
    });
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] { logits = logits_of(net_.get(), plan_, x); });
  }
  Status export_weights(WeightSet& out) override {
    return guarded("export weights",
                   [&] { out = export_weights_from(net_.get(), plan_, model_, conv_biases_); });
  }

 private:
  ir::Model model_;
  Plan plan_;
  TrainConfig cfg_;
  NetPtr net_;
  ConvBiases conv_biases_;
};

class DarknetFramework : public Framework {
 public:
  FrameworkInfo info() const override { return {"darknet", "Darknet", package_version(), "cpu"}; }
  Capability supports(const ir::Model& m) const override {
    Plan p;
    return plan(m, p);
  }
  std::unique_ptr<Runner> load(const ir::Model& m, const WeightSet& w, const RunOptions&,
                               Status& status) override {
    Plan p;
    if (Capability c = plan(m, p); !c.ok) {
      status = Status::unsupported("darknet cannot express " + m.name + ": " + c.why);
      return nullptr;
    }
    std::unique_ptr<Runner> r;
    status = guarded("load", [&] { r = std::make_unique<DarknetRunner>(m, p, w); });
    return status.is_ok() ? std::move(r) : nullptr;
  }
  std::unique_ptr<Trainer> trainer(const ir::Model& m, const WeightSet& init,
                                   const TrainConfig& cfg, Status& status) override {
    Plan p;
    if (Capability c = plan(m, p); !c.ok) {
      status = Status::unsupported("darknet cannot express " + m.name + ": " + c.why);
      return nullptr;
    }
    if (cfg.optimizer != "sgd") {
      status = Status::unsupported("the darknet adapter trains with sgd only, not '" +
                                   cfg.optimizer + "'");
      return nullptr;
    }
    std::unique_ptr<Trainer> t;
    status = guarded("trainer", [&] { t = std::make_unique<DarknetTrainer>(m, p, init, cfg); });
    return status.is_ok() ? std::move(t) : nullptr;
  }
};

}  // namespace

std::unique_ptr<Framework> make_darknet_framework(const std::string& variant) {
  require_no_variant("darknet", variant);
  return std::make_unique<DarknetFramework>();
}

std::string probe_darknet(std::string& why) {
  why.clear();
  return package_version();
}

}  // namespace crossdl
