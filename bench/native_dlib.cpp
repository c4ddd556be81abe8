// The plain dlib training loops the dlib adapter is measured against, on the same LeNet-5 type:
//  - "native": dlib's own trainer, dnn_trainer<net, sgd>::train_one_step on minibatches of
//    matrix<float> samples (the loop of dlib's examples). dlib's sgd with weight decay 0,
//    v = m·v - lr·g; w += v, is PyTorch's SGD at a constant learning rate, so the two compute
//    the same updates (up to float rounding).
//  - "native-manual": compute_parameter_gradients on a resizable_tensor + a hand-written
//    PyTorch-formula SGD update, the split of work the adapter uses (so the difference is
//    only crossdl's pipeline and the adapter's glue).
#include <dlib/dnn.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>

#include "adapter_overhead.h"

namespace crossdl::bench {
namespace {

using Clock = std::chrono::steady_clock;

// LeNet-5 as PyTorch defines it: 5x5 convolutions (the first padded by 2), 2x2 max pooling,
// three fully connected layers.
template <long Filters, long Pad, typename Sub>
using conv5 = dlib::add_layer<dlib::con_<Filters, 5, 5, 1, 1, Pad, Pad>, Sub>;
template <typename Sub>
using pool2 = dlib::max_pool<2, 2, 2, 2, Sub>;
using Features = pool2<
    dlib::relu<conv5<16, 0, pool2<dlib::relu<conv5<6, 2, dlib::input<dlib::matrix<float>>>>>>>>;
using Net = dlib::loss_multiclass_log<
    dlib::fc<10, dlib::relu<dlib::fc<84, dlib::relu<dlib::fc<120, Features>>>>>>;

struct Param {
  dlib::tensor* values;
  const dlib::tensor* grad;
};

// The parametric layers from the input up: conv1, conv2, fc1, fc2, fc3.
std::vector<Param> params_of(Net& net) {
  std::vector<Param> p;
  dlib::visit_layers(net, [&](std::size_t, auto& l) {
    if constexpr (requires { l.get_parameter_gradient(); }) {
      dlib::tensor& t = l.layer_details().get_layer_params();
      if (t.size() != 0) p.push_back({&t, &l.get_parameter_gradient()});
    }
  });
  if (p.size() != 5) throw std::runtime_error("expected 5 parametric dlib layers");
  std::reverse(p.begin(), p.end());  // dlib visits from the output down
  return p;
}

// dlib allocates parameters on the first forward pass; then crossdl's initial weights go in.
// Conv: OIHW filters then biases (the weight set's order). fc: (in+1) x out, bias last row.
void load_init(Net& net, const BenchData& d) {
  dlib::matrix<float> blank(28, 28);
  blank = 0;
  dlib::resizable_tensor t;
  net.to_tensor(&blank, &blank + 1, t);
  net.forward(t);
  const char* names[] = {"conv1", "conv2", "fc1", "fc2", "fc3"};
  const std::vector<Param> params = params_of(net);
  for (std::size_t k = 0; k < params.size(); ++k) {
    dlib::tensor* p = params[k].values;
    const auto w = d.init.at(std::string(names[k]) + ".weight").values<float>();
    const auto b = d.init.at(std::string(names[k]) + ".bias").values<float>();
    float* dst = p->host();
    if (p->size() != w.size() + b.size())
      throw std::runtime_error(std::string(names[k]) + ": dlib holds a different parameter count");
    if (k < 2) {
      std::copy(w.begin(), w.end(), dst);
      std::copy(b.begin(), b.end(), dst + w.size());
    } else {
      const std::size_t out = b.size(), in = w.size() / out;
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) dst[i * out + o] = w[o * in + i];
      std::copy(b.begin(), b.end(), dst + in * out);
    }
  }
}

double test_accuracy(Net& net, const BenchData& d) {
  const std::int64_t test = static_cast<std::int64_t>(d.test_y.size()), chunk = 1000;
  std::vector<float> logits(static_cast<std::size_t>(test * d.classes));
  for (std::int64_t b = 0; b < test; b += chunk) {
    const std::int64_t rows = std::min(chunk, test - b);
    dlib::resizable_tensor x(rows, 1, 28, 28);
    std::memcpy(x.host(), d.test_x.data() + b * d.sample,
                static_cast<std::size_t>(rows * d.sample) * sizeof(float));
    const dlib::tensor& out = net.forward(x);
    std::memcpy(logits.data() + b * d.classes, out.host(), out.size() * sizeof(float));
  }
  return accuracy_of(logits.data(), test, d.classes, d.test_y.data());
}

RunResult with_dnn_trainer(Net& net, const BenchData& d) {
  // The dataset as dlib's examples hold it: one matrix per image.
  std::vector<dlib::matrix<float>> images(static_cast<std::size_t>(d.n));
  std::vector<unsigned long> labels(static_cast<std::size_t>(d.n));
  for (std::int64_t i = 0; i < d.n; ++i) {
    dlib::matrix<float>& m = images[static_cast<std::size_t>(i)];
    m.set_size(28, 28);
    std::memcpy(&m(0, 0), d.train_x.data() + i * d.sample,
                static_cast<std::size_t>(d.sample) * sizeof(float));
    labels[static_cast<std::size_t>(i)] = static_cast<unsigned long>(d.train_y[i]);
  }
  dlib::dnn_trainer<Net, dlib::sgd> trainer(net, dlib::sgd(0.0f, static_cast<float>(d.momentum)));
  trainer.set_learning_rate(d.lr);
  // No automatic learning-rate shrinking: crossdl's schedule here is constant.
  trainer.set_iterations_without_progress_threshold(std::numeric_limits<unsigned long>::max());

  std::vector<dlib::matrix<float>> xb;
  std::vector<unsigned long> yb;
  const auto t0 = Clock::now();
  for (std::int64_t b = 0; b < d.batches; ++b) {
    xb.clear();
    yb.clear();
    for (std::int64_t i = b * d.batch; i < (b + 1) * d.batch; ++i) {
      const auto k = static_cast<std::size_t>(d.order[static_cast<std::size_t>(i)]);
      xb.push_back(images[k]);
      yb.push_back(labels[k]);
    }
    trainer.train_one_step(xb, yb);
  }
  trainer.get_net();  // waits until dlib's training thread has done every step
  RunResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.train_loss = trainer.get_average_loss();  // a plain running mean of every step's loss
  r.baseline = "dlib dnn_trainer<net, sgd>::train_one_step, vector<matrix<float>> batches";
  return r;
}

RunResult with_manual_sgd(Net& net, const BenchData& d) {
  const std::vector<Param> params = params_of(net);
  std::vector<std::vector<float>> velocity;
  for (const Param& p : params) velocity.emplace_back(p.values->size(), 0.0f);

  dlib::resizable_tensor x(d.batch, 1, 28, 28);
  std::vector<unsigned long> y(static_cast<std::size_t>(d.batch));
  const auto lr = static_cast<float>(d.lr), mom = static_cast<float>(d.momentum);
  double loss_sum = 0;
  const auto t0 = Clock::now();
  for (std::int64_t b = 0; b < d.batches; ++b) {
    float* dst = x.host();
    for (std::int64_t i = 0; i < d.batch; ++i) {
      const std::int64_t k = d.order[static_cast<std::size_t>(b * d.batch + i)];
      std::memcpy(dst + i * d.sample, d.train_x.data() + k * d.sample,
                  static_cast<std::size_t>(d.sample) * sizeof(float));
      y[static_cast<std::size_t>(i)] = static_cast<unsigned long>(d.train_y[k]);
    }
    loss_sum += net.compute_parameter_gradients(x, y.begin());
    for (std::size_t k = 0; k < params.size(); ++k) {
      float* w = params[k].values->host();
      const float* g = params[k].grad->host();
      float* v = velocity[k].data();
      for (std::size_t i = 0; i < params[k].values->size(); ++i) {
        v[i] = b == 0 ? g[i] : mom * v[i] + g[i];
        w[i] -= lr * v[i];
      }
    }
  }
  RunResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.train_loss = loss_sum / static_cast<double>(d.batches);
  r.baseline = "dlib compute_parameter_gradients + hand-written SGD (the adapter's split)";
  return r;
}

}  // namespace

RunResult run_native_dlib(const BenchData& d, bool manual) {
  Net net;
  load_init(net, d);
  RunResult r = manual ? with_manual_sgd(net, d) : with_dnn_trainer(net, d);
  r.test_accuracy = test_accuracy(net, d);
  return r;
}

}  // namespace crossdl::bench
