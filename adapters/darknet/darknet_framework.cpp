// The Darknet adapter: translates the IR into a Darknet .cfg (parsed at runtime with
// parse_network_cfg), moves the shared weight set in and out of Darknet's layer arrays, and drives
// forward/backward/update itself so that its SGD step equals PyTorch's (see README.md).
//
// Darknet reports some failures with exit() or assert(); everything the IR can say wrongly is
// checked by plan() before Darknet sees it, so that an unsupported model is a Capability::no.
extern "C" {
#include <darknet.h>
}

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

namespace crossdl {
namespace {

constexpr const char* kFallbackVersion = "2018-09-14 snapshot";
// Batch of the networks a Runner builds for inference: larger inputs are run in chunks.
constexpr std::int64_t kRunnerBatch = 256;

// One Darknet layer and the IR layers it stands for.
struct Unit {
  enum Kind { Conv, Connected, Maxpool, Avgpool, Shortcut, Route, Activation, Softmax } kind;
  std::string conv;   // Conv: the IR Conv2d
  std::string bn;     // Conv: the IR BatchNorm2d folded into it (empty if none)
  std::string dense;  // Connected: the IR Dense
};

// A model as Darknet layers: the cfg body (without [net]) and what each layer holds.
struct Plan {
  std::string body;
  std::vector<Unit> units;
  int logits = -1;  // index of the [connected] layer whose output is the logits
  bool has_bn = false;
  std::int64_t c = 0, h = 0, w = 0, classes = 0;
};

const char* activation_key(ir::Op op) {
  switch (op) {
    case ir::Op::ReLU:
      return "relu";
    case ir::Op::Tanh:
      return "tanh";
    case ir::Op::Sigmoid:
      return "logistic";
    default:
      return nullptr;
  }
}

std::string layer_where(const ir::Layer& l) {
  return "layer " + l.name + " (" + std::string(ir::op_name(l.op)) + ")";
}

std::string recurrent_why(const ir::Layer& l) {
  return layer_where(l) +
         ": darknet's [lstm]/[gru] layers are built from its own [connected] sub-layers with "
         "their own gate formulas and bias layout, not shown equivalent to PyTorch's, and they "
         "read a sequence as time_steps consecutive slices of the [net] batch rather than one "
         "[N,T,F] example";
}

// Builds the Darknet form of `m`, or says which layer Darknet cannot express and why.
Capability plan(const ir::Model& m, Plan& p) {
  std::vector<Shape> shapes;
  try {
    ir::validate(m);
    shapes = ir::infer_shapes(m);
  } catch (const std::exception& e) {
    return Capability::no(e.what());
  }
  if (m.input_dtype != DType::F32 || m.input_shape.size() != 3)
    return Capability::no(
        "darknet's classifier networks take float images [C,H,W]; model input is " +
        shape_str(m.input_shape));
  p = Plan{};
  p.c = m.input_shape[0];
  p.h = m.input_shape[1];
  p.w = m.input_shape[2];
  p.classes = m.num_classes;

  const std::size_t n = m.layers.size();
  std::map<std::string, int> readers;
  std::vector<std::vector<std::string>> ins(n);
  for (std::size_t i = 0; i < n; ++i) {
    ins[i] = ir::resolved_inputs(m, i);
    for (const auto& s : ins[i]) ++readers[s];
  }
  std::map<std::string, int> produced;  // IR output -> Darknet layer index (-1: network input)
  produced["input"] = -1;
  int last = -1;  // Darknet layer whose output is current (-1: the network input)
  std::string cfg;
  auto emit = [&](Unit u, const std::string& text) {
    cfg += text + "\n";
    p.units.push_back(std::move(u));
    last = static_cast<int>(p.units.size()) - 1;
    return last;
  };
  // Makes the output of IR tensor `name` current, with a [route] if it is not.
  auto bring = [&](const ir::Layer& l, const std::string& name, std::string& why) {
    const int src = produced.at(name);
    if (src == last) return true;
    if (src < 0) {
      why = layer_where(l) + ": reads the model input after other layers; darknet's [route] " +
            "cannot refer to the network input";
      return false;
    }
    const int here = static_cast<int>(p.units.size());
    emit({Unit::Route, {}, {}, {}}, "[route]\nlayers=" + std::to_string(src - here) + "\n");
    return true;
  };
  // The activation that follows layer i and can be folded into it (i is advanced past it).
  auto fold_activation = [&](std::size_t& i) -> std::string {
    if (i + 1 >= n) return "linear";
    const ir::Layer& next = m.layers[i + 1];
    const char* key = activation_key(next.op);
    if (key == nullptr || ins[i + 1].at(0) != m.layers[i].name || readers[m.layers[i].name] != 1)
      return "linear";
    ++i;
    return key;
  };
  auto square = [](const ir::Layer& l) {
    return l.kernel[0] == l.kernel[1] && l.stride[0] == l.stride[1] && l.pad[0] == l.pad[1];
  };

  // Recurrent layers are named first: they are the reason, not the reshape before them.
  for (const ir::Layer& l : m.layers)
    if (l.op == ir::Op::LSTM || l.op == ir::Op::GRU) return Capability::no(recurrent_why(l));
  std::string why;
  for (std::size_t i = 0; i < n; ++i) {
    const ir::Layer& l = m.layers[i];
    const std::size_t first = i;
    switch (l.op) {
      case ir::Op::Conv2d: {
        if (!square(l))
          return Capability::no(layer_where(l) +
                                ": darknet convolutions have one size, stride and padding for "
                                "both axes");
        if (!bring(l, ins[i][0], why)) return Capability::no(why);
        std::string bn;
        if (i + 1 < n && m.layers[i + 1].op == ir::Op::BatchNorm2d && ins[i + 1][0] == l.name &&
            readers[l.name] == 1) {
          if (l.bias)
            return Capability::no(layer_where(l) + ": has a bias and is followed by " +
                                  m.layers[i + 1].name +
                                  " (BatchNorm2d); darknet's batch-normalised convolution has no "
                                  "convolution bias");
          ++i;
          bn = m.layers[i].name;
          p.has_bn = true;
        } else if (!l.bias) {
          return Capability::no(layer_where(l) +
                                ": has no bias and no following BatchNorm2d; darknet "
                                "convolutions without batch_normalize always add a bias");
        }
        // Darknet bug: a 1x1 convolution skips im2col and reads its input as is, so it ignores
        // stride and padding. A strided 1x1 convolution becomes a 1x1 [maxpool] (which only
        // subsamples) and a stride-1 one.
        std::int64_t stride = l.stride[0];
        if (l.kernel[0] == 1 && l.pad[0] != 0)
          return Capability::no(layer_where(l) +
                                ": darknet's 1x1 convolution ignores padding (it skips im2col)");
        if (l.kernel[0] == 1 && stride > 1) {
          emit({Unit::Maxpool, {}, {}, {}},
               "[maxpool]\nsize=1\nstride=" + std::to_string(stride) + "\npadding=0\n");
          stride = 1;
        }
        const std::string act = fold_activation(i);
        emit({Unit::Conv, l.name, bn, {}},
             "[convolutional]\nfilters=" + std::to_string(l.out) +
                 "\nsize=" + std::to_string(l.kernel[0]) + "\nstride=" + std::to_string(stride) +
                 "\npad=0\npadding=" + std::to_string(l.pad[0]) +
                 "\nbatch_normalize=" + (bn.empty() ? "0" : "1") + "\nactivation=" + act + "\n");
        break;
      }
      case ir::Op::Dense: {
        if (!l.bias)
          return Capability::no(layer_where(l) + ": darknet [connected] layers always add a bias");
        if (!bring(l, ins[i][0], why)) return Capability::no(why);
        const std::string act = fold_activation(i);
        emit({Unit::Connected, {}, {}, l.name},
             "[connected]\noutput=" + std::to_string(l.out) + "\nactivation=" + act + "\n");
        break;
      }
      case ir::Op::MaxPool2d:
        if (!square(l))
          return Capability::no(
              layer_where(l) +
              ": darknet [maxpool] has one size, stride and padding for both axes");
        if (!bring(l, ins[i][0], why)) return Capability::no(why);
        // Darknet pads `padding` in total (padding/2 before), output (w+padding-size)/stride+1.
        emit({Unit::Maxpool, {}, {}, {}}, "[maxpool]\nsize=" + std::to_string(l.kernel[0]) +
                                              "\nstride=" + std::to_string(l.stride[0]) +
                                              "\npadding=" + std::to_string(2 * l.pad[0]) + "\n");
        break;
      case ir::Op::GlobalAvgPool:
        if (!bring(l, ins[i][0], why)) return Capability::no(why);
        emit({Unit::Avgpool, {}, {}, {}}, "[avgpool]\n");
        break;
      case ir::Op::Flatten:
        // Darknet keeps activations as [c][h][w] per example: a flatten in CHW order is free.
        produced[l.name] = produced.at(ins[i][0]);
        continue;
      case ir::Op::Add: {
        int a = produced.at(ins[i][0]), b = produced.at(ins[i][1]);
        if (a < 0 || b < 0)
          return Capability::no(layer_where(l) +
                                ": adds the model input; darknet's [shortcut] reads only layers");
        if (b == last) std::swap(a, b);
        if (a != last && !bring(l, ins[i][0], why)) return Capability::no(why);
        const int here = static_cast<int>(p.units.size());
        const std::string act = fold_activation(i);
        emit({Unit::Shortcut, {}, {}, {}},
             "[shortcut]\nfrom=" + std::to_string(b - here) + "\nactivation=" + act + "\n");
        break;
      }
      case ir::Op::ReLU:
      case ir::Op::Tanh:
      case ir::Op::Sigmoid:
        if (!bring(l, ins[i][0], why)) return Capability::no(why);
        emit({Unit::Activation, {}, {}, {}},
             std::string("[activation]\nactivation=") + activation_key(l.op) + "\n");
        break;
      case ir::Op::BatchNorm2d:
        return Capability::no(layer_where(l) +
                              ": darknet folds batch normalisation into the convolution before "
                              "it; this one does not directly follow a bias-free Conv2d read only "
                              "by it");
      case ir::Op::AvgPool2d:
        return Capability::no(layer_where(l) +
                              ": darknet's [avgpool] is global average pooling only");
      case ir::Op::Softmax:
        return Capability::no(
            layer_where(l) + ": a softmax inside the model; darknet's [softmax] is its loss layer");
      case ir::Op::Embedding:
        return Capability::no(layer_where(l) + ": darknet has no embedding layer");
      case ir::Op::ImageToSequence:
        return Capability::no(layer_where(l) + ": darknet has no rows-to-time-steps reshape");
      case ir::Op::LSTM:
      case ir::Op::GRU:
        return Capability::no(recurrent_why(l));
    }
    for (std::size_t k = first; k <= i; ++k) produced[m.layers[k].name] = last;
  }
  const ir::Layer& tail = m.layers.back();
  if (tail.op != ir::Op::Dense || produced.at(tail.name) != last)
    return Capability::no(layer_where(tail) +
                          ": the darknet adapter needs the logits from a final Dense layer, "
                          "followed by darknet's softmax/cross-entropy layer");
  p.logits = last;
  emit({Unit::Softmax, {}, {}, {}}, "[softmax]\ngroups=1\n");
  p.body = std::move(cfg);
  return Capability::yes();
}

// Darknet prints its layer table while parsing, to stderr, and some messages to stdout: stdout
// carries the study's JSON lines, so both go to a scratch file for the duration.
class QuietStdio {
 public:
  QuietStdio() {
    std::fflush(stdout);
    std::fflush(stderr);
    sink_ = std::tmpfile();
    if (sink_ == nullptr) return;
    out_ = dup(1);
    err_ = dup(2);
    dup2(fileno(sink_), 1);
    dup2(fileno(sink_), 2);
  }
  ~QuietStdio() {
    std::fflush(stdout);
    std::fflush(stderr);
    if (out_ >= 0) dup2(out_, 1), close(out_);
    if (err_ >= 0) dup2(err_, 2), close(err_);
    if (sink_ != nullptr) std::fclose(sink_);
  }
  QuietStdio(const QuietStdio&) = delete;
  QuietStdio& operator=(const QuietStdio&) = delete;

 private:
  std::FILE* sink_ = nullptr;
  int out_ = -1, err_ = -1;
};

struct NetDeleter {
  void operator()(network* n) const {
    if (n != nullptr) free_network(n);
  }
};
using NetPtr = std::unique_ptr<network, NetDeleter>;

struct Hyper {
  double lr = 0.02, momentum = 0.9, decay = 0.0;
};

NetPtr build_net(const Plan& p, std::int64_t batch, const Hyper& hp) {
  std::string cfg =
      "[net]\nbatch=" + std::to_string(batch) + "\nsubdivisions=1\nwidth=" + std::to_string(p.w) +
      "\nheight=" + std::to_string(p.h) + "\nchannels=" + std::to_string(p.c) +
      "\nlearning_rate=" + std::to_string(hp.lr) + "\nmomentum=" + std::to_string(hp.momentum) +
      "\ndecay=" + std::to_string(hp.decay) + "\npolicy=constant\nmax_batches=0\n\n" + p.body;
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
  if (net->n != static_cast<int>(p.units.size()) || net->batch != batch ||
      net->inputs != p.c * p.h * p.w || net->layers[p.logits].outputs != p.classes)
    throw std::runtime_error("darknet built a network that differs from the plan (" +
                             std::to_string(net->n) + " layers, " + std::to_string(p.units.size()) +
                             " planned)");
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

void import_weights(network* net, const Plan& p, const WeightSet& w) {
  for (std::size_t i = 0; i < p.units.size(); ++i) {
    layer& l = net->layers[i];
    const Unit& u = p.units[i];
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
      }
    } else if (u.kind == Unit::Connected) {
      copy_in(l.weights, static_cast<std::int64_t>(l.inputs) * l.outputs, w, u.dense + ".weight");
      copy_in(l.biases, l.outputs, w, u.dense + ".bias");
    }
  }
}

WeightSet export_weights_from(network* net, const Plan& p, const ir::Model& m) {
  std::map<std::string, Tensor> all;
  for (std::size_t i = 0; i < p.units.size(); ++i) {
    const layer& l = net->layers[i];
    const Unit& u = p.units[i];
    const std::int64_t n = u.kind == Unit::Conv ? l.n : l.outputs;
    if (u.kind == Unit::Conv) {
      all[u.conv + ".weight"] = copy_out(l.weights, {n, l.c, l.size, l.size}, Layout::OIHW);
      if (u.bn.empty()) {
        all[u.conv + ".bias"] = copy_out(l.biases, {n}, Layout::Any);
      } else {
        all[u.bn + ".weight"] = copy_out(l.scales, {n}, Layout::Any);
        all[u.bn + ".bias"] = copy_out(l.biases, {n}, Layout::Any);
        all[u.bn + ".running_mean"] = copy_out(l.rolling_mean, {n}, Layout::Any);
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
      net->train = 0;
    });
  }
  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] { logits = logits_of(net_.get(), plan_, x); });
  }
  Status export_weights(WeightSet& out) override {
    return guarded("export weights", [&] { out = export_weights_from(net_.get(), plan_, model_); });
  }

 private:
  ir::Model model_;
  Plan plan_;
  TrainConfig cfg_;
  NetPtr net_;
};

std::string package_version() {
  static const std::string version = [] {
    std::string v;
    if (std::FILE* f = popen("dpkg-query -W -f='${Version}' darknet 2>/dev/null", "r")) {
      char buf[256];
      while (std::fgets(buf, sizeof buf, f) != nullptr) v += buf;
      pclose(f);
    }
    while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
    return v.empty() ? std::string(kFallbackVersion) : v;
  }();
  return version;
}

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

std::unique_ptr<Framework> make_darknet_framework() {
  return std::make_unique<DarknetFramework>();
}

std::string probe_darknet(std::string& why) {
  why.clear();
  return package_version();
}

}  // namespace crossdl
