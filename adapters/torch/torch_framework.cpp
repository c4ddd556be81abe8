// The LibTorch adapter: builds a torch::nn module graph from the IR, imports and exports the
// shared weight set, trains with torch::optim, and computes input gradients.
//
// Two frameworks come from this file: `torch` (CPU) always, and `torch-cuda` (the same code on
// cuda:0) when CMake found a CUDA-enabled LibTorch and defines CROSSDL_TORCH_CUDA=1.
//
// LibTorch headers stay inside this file: one translation unit with <torch/torch.h> costs ~15 s.
#include <torch/torch.h>
#include <torch/version.h>

#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/adapter_guard.h"
#include "torch_convert.h"

#if CROSSDL_TORCH_CUDA
#include <dlfcn.h>
#endif

namespace crossdl {
namespace {

// Module names may not contain '.', the IR's layer names do ("stage2.block0.conv1").
std::string module_name(const std::string& layer) {
  std::string n = layer;
  for (char& c : n)
    if (c == '.' || c == '/') c = '_';
  return n;
}

using torch_detail::activation_layout;
using torch_detail::from_torch;
using torch_detail::to_torch;

// A network that follows the IR layer by layer. Parametric layers are registered submodules
// named after the layer; parameters keep PyTorch's own names (weight, bias, weight_ih_l0, ...).
class IrNet : public torch::nn::Module {
 public:
  // `cuda`: the net will run on a CUDA device (see GlobalAvgPool in forward()).
  IrNet(const ir::Model& m, bool cuda) : model_(m), cuda_(cuda) {
    const auto shapes = ir::infer_shapes(m);
    for (std::size_t i = 0; i < m.layers.size(); ++i) {
      const ir::Layer& l = m.layers[i];
      inputs_.push_back(ir::resolved_inputs(m, i));
      for (const auto& src : inputs_.back()) last_use_[src] = i;
      const Shape in_shape = input_shape_of(m, shapes, i);
      const std::string name = module_name(l.name);
      switch (l.op) {
        case ir::Op::Conv2d: {
          auto opts = torch::nn::Conv2dOptions(in_shape.at(0), l.out, {l.kernel[0], l.kernel[1]})
                          .stride({l.stride[0], l.stride[1]})
                          .padding({l.pad[0], l.pad[1]})
                          .bias(l.bias);
          conv_.emplace(l.name, register_module(name, torch::nn::Conv2d(opts)));
          break;
        }
        case ir::Op::Dense:
          dense_.emplace(
              l.name, register_module(
                          name, torch::nn::Linear(
                                    torch::nn::LinearOptions(in_shape.at(0), l.out).bias(l.bias))));
          break;
        case ir::Op::BatchNorm2d:
          bn_.emplace(l.name, register_module(name, torch::nn::BatchNorm2d(
                                                        torch::nn::BatchNormOptions(in_shape.at(0))
                                                            .eps(l.eps)
                                                            .momentum(l.momentum))));
          break;
        case ir::Op::Embedding:
          emb_.emplace(
              l.name, register_module(
                          name, torch::nn::Embedding(torch::nn::EmbeddingOptions(l.vocab, l.out))));
          break;
        case ir::Op::LSTM:
          lstm_.emplace(
              l.name,
              register_module(
                  name, torch::nn::LSTM(
                            torch::nn::LSTMOptions(in_shape.at(1), l.out).batch_first(true))));
          break;
        case ir::Op::GRU:
          gru_.emplace(
              l.name,
              register_module(
                  name,
                  torch::nn::GRU(torch::nn::GRUOptions(in_shape.at(1), l.out).batch_first(true))));
          break;
        default:
          break;
      }
    }
  }

  // Runs the graph; when `all` is given it receives every layer's output in layer order.
  torch::Tensor forward(const torch::Tensor& x, std::vector<torch::Tensor>* all = nullptr) {
    std::map<std::string, torch::Tensor, std::less<>> out;
    out["input"] = x;
    torch::Tensor last = x;
    for (std::size_t i = 0; i < model_.layers.size(); ++i) {
      const ir::Layer& l = model_.layers[i];
      const torch::Tensor a = out.at(inputs_[i].at(0));
      torch::Tensor y;
      switch (l.op) {
        case ir::Op::Conv2d:
          y = conv_.at(l.name)->forward(a);
          break;
        case ir::Op::Dense:
          y = dense_.at(l.name)->forward(a);
          break;
        case ir::Op::BatchNorm2d:
          y = bn_.at(l.name)->forward(a);
          break;
        case ir::Op::Embedding:
          y = emb_.at(l.name)->forward(a);
          break;
        case ir::Op::ReLU:
          y = torch::relu(a);
          break;
        case ir::Op::Tanh:
          y = torch::tanh(a);
          break;
        case ir::Op::Sigmoid:
          y = torch::sigmoid(a);
          break;
        case ir::Op::MaxPool2d:
          y = torch::max_pool2d(a, {l.kernel[0], l.kernel[1]}, {l.stride[0], l.stride[1]},
                                {l.pad[0], l.pad[1]});
          break;
        case ir::Op::AvgPool2d:
          y = torch::avg_pool2d(a, {l.kernel[0], l.kernel[1]}, {l.stride[0], l.stride[1]},
                                {l.pad[0], l.pad[1]}, /*ceil_mode=*/false,
                                /*count_include_pad=*/false);
          break;
        case ir::Op::GlobalAvgPool:
          // adaptive_avg_pool2d's CUDA backward has no deterministic implementation (it throws
          // under setDeterministicAlgorithms): on CUDA the same average is a mean over H and W.
          y = cuda_ ? a.mean({2, 3}, /*keepdim=*/true) : torch::adaptive_avg_pool2d(a, {1, 1});
          break;
        case ir::Op::Add:
          y = a + out.at(inputs_[i].at(1));
          break;
        case ir::Op::Flatten:
          y = torch::flatten(a, 1);
          break;
        case ir::Op::Softmax:
          y = torch::softmax(a, -1);
          break;
        case ir::Op::ImageToSequence:
          y = a.permute({0, 2, 1, 3}).reshape({a.size(0), a.size(2), a.size(1) * a.size(3)});
          break;
        case ir::Op::LSTM: {
          auto r = lstm_.at(l.name)->forward(a);
          y = std::get<0>(std::get<1>(r)).squeeze(0);
          break;
        }
        case ir::Op::GRU: {
          auto r = gru_.at(l.name)->forward(a);
          y = std::get<1>(r).squeeze(0);
          break;
        }
      }
      // Outputs no later layer reads are dropped at once: in evaluation passes over large
      // batches they would otherwise dominate peak memory (ResNet-20: ~1 GB at batch 1000).
      for (const auto& src : inputs_[i])
        if (last_use_.at(src) == i) out.erase(src);
      out[l.name] = y;
      if (all != nullptr) all->push_back(y);
      last = y;
    }
    return last;
  }

  // The torch tensor that holds an IR weight ("conv1.weight" -> conv1's weight parameter).
  torch::Tensor tensor_for(const ir::WeightSpec& spec) {
    std::shared_ptr<torch::nn::Module> mod = named_children()[module_name(spec.layer)];
    std::string pname = spec.param;
    if (const ir::Layer* l = model_.find(spec.layer);
        l != nullptr && (l->op == ir::Op::LSTM || l->op == ir::Op::GRU))
      pname += "_l0";  // weight_ih -> weight_ih_l0
    for (auto& p : mod->named_parameters(false))
      if (p.key() == pname) return p.value();
    for (auto& b : mod->named_buffers(false))
      if (b.key() == pname) return b.value();
    throw std::logic_error("torch adapter: no tensor " + pname + " in layer " + spec.layer);
  }

 private:
  static Shape input_shape_of(const ir::Model& m, const std::vector<Shape>& shapes, std::size_t i) {
    const std::string src = ir::resolved_inputs(m, i).at(0);
    if (src == "input") return m.input_shape;
    for (std::size_t j = 0; j < m.layers.size(); ++j)
      if (m.layers[j].name == src) return shapes[j];
    throw std::logic_error("torch adapter: unknown input " + src);
  }

  ir::Model model_;
  bool cuda_ = false;
  std::vector<std::vector<std::string>> inputs_;
  std::map<std::string, std::size_t, std::less<>> last_use_;  // output name -> last reader
  template <class M>
  using ByName = std::map<std::string, M, std::less<>>;
  ByName<torch::nn::Conv2d> conv_;
  ByName<torch::nn::Linear> dense_;
  ByName<torch::nn::BatchNorm2d> bn_;
  ByName<torch::nn::Embedding> emb_;
  ByName<torch::nn::LSTM> lstm_;
  ByName<torch::nn::GRU> gru_;
};

void import_weights(IrNet& net, const ir::Model& m, const WeightSet& w) {
  torch::NoGradGuard no_grad;
  for (const auto& spec : ir::weight_specs(m)) {
    torch::Tensor dst = net.tensor_for(spec);
    torch::Tensor src = to_torch(w.at(spec.name));
    if (dst.sizes() != src.sizes())
      throw InputError("weight " + spec.name + ": shape " + shape_str(w.at(spec.name).shape()) +
                       " does not fit the torch layer");
    dst.copy_(src);
  }
}

void export_weights_from(IrNet& net, const ir::Model& m, WeightSet& out) {
  WeightSet w;
  for (const auto& spec : ir::weight_specs(m))
    w.set(spec.name, from_torch(net.tensor_for(spec), spec.layout));
  out = std::move(w);
}

void apply_run_options(const RunOptions& o, const torch::Device& device) {
  torch::set_num_threads(o.threads);
  at::globalContext().setDeterministicAlgorithms(o.deterministic, /*warn_only=*/false);
  if (device.is_cuda()) {
    // cuDNN: deterministic kernels and no autotuning (benchmark mode picks kernels by timing).
    // cuBLAS also needs CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA initialises: see
    // make_torch_cuda_framework().
    at::globalContext().setDeterministicCuDNN(o.deterministic);
    at::globalContext().setBenchmarkCuDNN(!o.deterministic);
  }
}

// A crossdl tensor as a torch tensor on `device`. On the CPU this is the zero-copy view itself.
torch::Tensor to_device(const Tensor& t, const torch::Device& device) {
  return to_torch(t).to(device);
}

// Runs `fn`, turning any library exception into a failed Status with its message (LibTorch's
// without the C++ backtrace it appends).
template <class Fn>
Status guarded(const char* what, Fn&& fn) {
  return guarded_call(what, "LibTorch", [&] {
    try {
      fn();
    } catch (const c10::Error& e) {
      throw std::runtime_error(e.what_without_backtrace());
    }
  });
}

Tensor logits_of(IrNet& net, const Tensor& x, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  net.eval();
  return from_torch(net.forward(to_device(x, device)), Layout::NC);
}

// Imports `w` into the (CPU) net, then moves the net to `device`.
void import_and_place(IrNet& net, const ir::Model& m, const WeightSet& w,
                      const torch::Device& device) {
  import_weights(net, m, w);
  if (!device.is_cpu()) net.to(device);
}

class TorchRunner : public Runner {
 public:
  TorchRunner(const ir::Model& m, const WeightSet& w, const RunOptions& o,
              const torch::Device& device)
      : device_(device), net_(std::make_shared<IrNet>(m, device.is_cuda())) {
    apply_run_options(o, device_);
    import_and_place(*net_, m, w, device_);
    net_->eval();
    for (const auto& l : m.layers) layers_.push_back(l.name);
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] { logits = logits_of(*net_, x, device_); });
  }
  Status input_gradient(const Tensor& x, const Tensor& labels, Tensor& grad,
                        double& loss) override {
    return guarded("input_gradient", [&] {
      net_->eval();
      torch::Tensor xt = to_device(x, device_).clone().set_requires_grad(true);
      torch::Tensor l =
          torch::nn::functional::cross_entropy(net_->forward(xt), to_device(labels, device_));
      l.backward();
      loss = l.item<double>();
      grad = from_torch(xt.grad(), x.layout());
      net_->zero_grad();
    });
  }
  // The IR's own layers, each output as computed: the reference other runtimes' layer outputs
  // are compared with.
  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    return guarded("layer_outputs", [&] {
      torch::NoGradGuard no_grad;
      net_->eval();
      std::vector<torch::Tensor> all;
      net_->forward(to_device(x, device_), &all);
      std::vector<LayerOutput> result;
      for (std::size_t i = 0; i < all.size(); ++i)
        result.push_back({layers_[i], from_torch(all[i], activation_layout(all[i].dim()))});
      out = std::move(result);
    });
  }

 private:
  torch::Device device_;
  std::shared_ptr<IrNet> net_;
  std::vector<std::string> layers_;
};

class TorchTrainer : public Trainer {
 public:
  TorchTrainer(const ir::Model& m, const WeightSet& init, const TrainConfig& cfg,
               const torch::Device& device)
      : model_(m), device_(device), net_(std::make_shared<IrNet>(m, device.is_cuda())) {
    apply_run_options(cfg.run, device_);
    torch::manual_seed(cfg.seed);  // seeds the CUDA generators too
    // Before the optimiser is made, so that it holds the parameters on the device.
    import_and_place(*net_, m, init, device_);
    if (cfg.optimizer == "sgd") {
      optim_ = std::make_unique<torch::optim::SGD>(
          net_->parameters(),
          torch::optim::SGDOptions(cfg.lr).momentum(cfg.momentum).weight_decay(cfg.weight_decay));
    } else if (cfg.optimizer == "adam") {
      optim_ = std::make_unique<torch::optim::Adam>(net_->parameters(),
                                                    torch::optim::AdamOptions(cfg.lr)
                                                        .betas({cfg.beta1, cfg.beta2})
                                                        .eps(cfg.adam_eps)
                                                        .weight_decay(cfg.weight_decay));
    } else {
      throw InputError("optimizer '" + cfg.optimizer + "' is not known (sgd, adam)");
    }
  }

  Status step(const Tensor& x, const Tensor& labels, double lr, double& loss) override {
    return guarded("train step", [&] {
      net_->train();
      for (auto& group : optim_->param_groups()) group.options().set_lr(lr);
      optim_->zero_grad();
      torch::Tensor l = torch::nn::functional::cross_entropy(net_->forward(to_device(x, device_)),
                                                             to_device(labels, device_));
      l.backward();
      optim_->step();
      loss = l.item<double>();
    });
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] { logits = logits_of(*net_, x, device_); });
  }
  Status export_weights(WeightSet& out) override {
    return guarded("export weights", [&] { export_weights_from(*net_, model_, out); });
  }

 private:
  ir::Model model_;
  torch::Device device_;
  std::shared_ptr<IrNet> net_;
  std::unique_ptr<torch::optim::Optimizer> optim_;
};

#if CROSSDL_TORCH_CUDA
// The CUDA device's name from the driver API (libcuda.so.1, loaded by LibTorch's CUDA runtime):
// LibTorch's C++ API has no call for it without the CUDA toolkit's headers. "" when unavailable.
std::string cuda_device_name() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return "";
  using InitFn = int (*)(unsigned);
  using GetFn = int (*)(int*, int);
  using NameFn = int (*)(char*, int, int);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
  auto get = reinterpret_cast<GetFn>(dlsym(lib, "cuDeviceGet"));
  auto name = reinterpret_cast<NameFn>(dlsym(lib, "cuDeviceGetName"));
  std::string out;
  int dev = 0;
  char buf[256] = {};
  if (init != nullptr && get != nullptr && name != nullptr && init(0) == 0 && get(&dev, 0) == 0 &&
      name(buf, sizeof buf - 1, dev) == 0)
    out = buf;
  dlclose(lib);
  return out;
}

// cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it creates its first handle; with ":4096:8" its
// reductions are reproducible. A value the user set is kept. Returns the value in effect.
std::string ensure_cublas_workspace_config() {
  setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  const char* v = std::getenv("CUBLAS_WORKSPACE_CONFIG");
  return v != nullptr ? v : "";
}
#endif

// `torch` on the CPU; `torch-cuda` on cuda:0 (info_ names it and describes the device).
class TorchFramework : public Framework {
 public:
  TorchFramework() : info_{"torch", "LibTorch", TORCH_VERSION, "cpu"}, device_(torch::kCPU) {}
  TorchFramework(FrameworkInfo info, torch::Device device)
      : info_(std::move(info)), device_(device) {}

  FrameworkInfo info() const override { return info_; }
  Capability supports(const ir::Model&) const override { return Capability::yes(); }

  std::unique_ptr<Runner> load(const ir::Model& m, const WeightSet& w, const RunOptions& opt,
                               Status& status) override {
    std::unique_ptr<Runner> r;
    status = guarded("load", [&] {
      require_device();
      r = std::make_unique<TorchRunner>(m, w, opt, device_);
    });
    return status.is_ok() ? std::move(r) : nullptr;
  }
  std::unique_ptr<Trainer> trainer(const ir::Model& m, const WeightSet& init,
                                   const TrainConfig& cfg, Status& status) override {
    std::unique_ptr<Trainer> t;
    status = guarded("trainer", [&] {
      require_device();
      t = std::make_unique<TorchTrainer>(m, init, cfg, device_);
    });
    return status.is_ok() ? std::move(t) : nullptr;
  }

 private:
  void require_device() const {
    if (device_.is_cuda() && !torch::cuda::is_available())
      throw std::runtime_error("no CUDA device visible to LibTorch " TORCH_VERSION);
  }

  FrameworkInfo info_;
  torch::Device device_;
};

}  // namespace

std::unique_ptr<Framework> make_torch_framework(const std::string& variant) {
  require_no_variant("torch", variant);
  return std::make_unique<TorchFramework>();
}

std::string probe_torch(std::string& why) {
  why.clear();
  return TORCH_VERSION;
}

#if CROSSDL_TORCH_CUDA
// The environment variable must be in place before anything initialises CUDA; the device string
// records it (FrameworkInfo has no other place, and it decides whether GPU runs are reproducible).
std::unique_ptr<Framework> make_torch_cuda_framework(const std::string& variant) {
  require_no_variant("torch-cuda", variant);
  const std::string cublas = ensure_cublas_workspace_config();
  std::string device = "cuda:0";
  if (torch::cuda::is_available()) {
    const std::string name = cuda_device_name();
    if (!name.empty()) device += " " + name;
  }
  device += " (CUBLAS_WORKSPACE_CONFIG=" + cublas + ")";
  return std::make_unique<TorchFramework>(
      FrameworkInfo{"torch-cuda", "LibTorch", TORCH_VERSION, device},
      torch::Device(torch::kCUDA, 0));
}

std::string probe_torch_cuda(std::string& why) {
  ensure_cublas_workspace_config();  // probing initialises CUDA
  if (!torch::cuda::is_available()) {
    why = "no CUDA device visible";
    return "";
  }
  why.clear();
  return TORCH_VERSION;
}
#endif

}  // namespace crossdl
