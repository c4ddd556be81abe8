// The plain LibTorch C++ training loop the torch adapter is measured against: a hand-written
// LeNet-5 module, torch::optim::SGD, the whole training set as one float tensor and index_select
// per minibatch (the C++ counterpart of bench/pytorch_lenet5_train.py).
#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <chrono>
#include <cstring>

#include "adapter_overhead.h"

namespace crossdl::bench {
namespace {

struct LeNet5 : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(1, 6, 5).padding(2)};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(6, 16, 5)};
  torch::nn::Linear fc1{400, 120}, fc2{120, 84}, fc3{84, 10};

  LeNet5() {
    register_module("conv1", conv1);
    register_module("conv2", conv2);
    register_module("fc1", fc1);
    register_module("fc2", fc2);
    register_module("fc3", fc3);
  }

  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2);
    x = torch::flatten(x, 1);
    return fc3->forward(torch::relu(fc2->forward(torch::relu(fc1->forward(x)))));
  }
};

// Copies crossdl's initial weights in (the names are the zoo's: conv1.weight, fc3.bias, ...).
void load_init(LeNet5& net, const WeightSet& w) {
  torch::NoGradGuard no_grad;
  for (auto& p : net.named_parameters()) {
    const Tensor& t = w.at(p.key());
    if (t.numel() != p.value().numel())
      throw std::runtime_error("weight " + p.key() + " has the wrong size");
    std::memcpy(p.value().data_ptr<float>(), t.raw(), t.nbytes());
  }
}

torch::Tensor floats(const std::vector<float>& v, std::int64_t rows) {
  const std::int64_t side = 28;
  return torch::from_blob(const_cast<float*>(v.data()), {rows, 1, side, side}, torch::kFloat32)
      .clone();
}

torch::Tensor longs(const std::vector<std::int64_t>& v) {
  return torch::from_blob(const_cast<std::int64_t*>(v.data()),
                          {static_cast<std::int64_t>(v.size())}, torch::kInt64)
      .clone();
}

}  // namespace

RunResult run_native_torch(const BenchData& d) {
  // The same run options the adapter applies (crossdl's --threads 1, deterministic).
  torch::set_num_threads(1);
  at::globalContext().setDeterministicAlgorithms(true, false);
  auto net = std::make_shared<LeNet5>();
  load_init(*net, d.init);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(d.lr).momentum(d.momentum));

  const torch::Tensor xs = floats(d.train_x, d.n);
  const torch::Tensor ys = longs(d.train_y);
  const torch::Tensor perm = longs(d.order);

  const auto t0 = std::chrono::steady_clock::now();
  net->train();
  double loss_sum = 0;
  for (std::int64_t b = 0; b < d.batches; ++b) {
    const torch::Tensor idx = perm.slice(0, b * d.batch, (b + 1) * d.batch);
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(xs.index_select(0, idx)),
                                                              ys.index_select(0, idx));
    loss.backward();
    opt.step();
    loss_sum += loss.item<double>();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  RunResult r;
  r.seconds = seconds;
  r.train_loss = loss_sum / static_cast<double>(d.batches);
  net->eval();
  torch::NoGradGuard no_grad;
  const std::int64_t test = static_cast<std::int64_t>(d.test_y.size());
  const torch::Tensor logits = net->forward(floats(d.test_x, test)).contiguous();
  r.test_accuracy = accuracy_of(logits.data_ptr<float>(), test, d.classes, d.test_y.data());
  r.baseline = "LibTorch C++ nn::Module + optim::SGD, index_select batches";
  return r;
}

}  // namespace crossdl::bench
