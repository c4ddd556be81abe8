// Darknet's cfg and .weights files, written from the IR without libdarknet.
//
// The .weights layout follows darknet's parser.c (load_weights_upto): three int32 (major, minor,
// revision), then `seen` as a 64-bit size_t because major*10+minor >= 2, then, for every layer in
// cfg order, its float32 arrays: [convolutional] biases, [scales, rolling_mean, rolling_variance
// when batch_normalize], weights (OIHW); [connected] biases, weights ([out][in]). Layers without
// parameters contribute nothing. Darknet reads the file in native byte order: little-endian here.
// A conv bias cancelled by the BatchNorm after it is not written: it is subtracted from the
// running mean instead (DarknetLayer::conv_bias).
#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "crossdl/darknet_io.h"

namespace crossdl {

namespace {

static_assert(std::endian::native == std::endian::little,
              "the .weights file is written in the byte order darknet reads on x86 (little)");

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

}  // namespace

Capability darknet_plan(const ir::Model& m, DarknetPlan& p) {
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
  p = DarknetPlan{};
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
  auto note = [&](const std::string& text) {
    p.conversions += (p.conversions.empty() ? "" : "; ") + text;
  };
  auto emit = [&](DarknetLayer u, const std::string& text) {
    cfg += text + "\n";
    p.layers.push_back(std::move(u));
    last = static_cast<int>(p.layers.size()) - 1;
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
    const int here = static_cast<int>(p.layers.size());
    emit({DarknetLayer::Route, {}, {}, {}, {}, false},
         "[route]\nlayers=" + std::to_string(src - here) + "\n");
    return true;
  };
  // The activation that follows layer i and can be folded into it (i is advanced past it).
  auto fold_activation = [&](std::size_t& i) -> std::string {
    if (i + 1 >= n) return "linear";
    const ir::Layer& next = m.layers[i + 1];
    const char* key = activation_key(next.op);
    if (key == nullptr || ins[i + 1].at(0) != m.layers[i].name || readers[m.layers[i].name] != 1)
      return "linear";
    note(next.name + " folded into the darknet layer of " + m.layers[i].name);
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
        bool conv_bias = false;
        if (i + 1 < n && m.layers[i + 1].op == ir::Op::BatchNorm2d && ins[i + 1][0] == l.name &&
            readers[l.name] == 1) {
          conv_bias = l.bias;
          ++i;
          bn = m.layers[i].name;
          p.has_bn = true;
          note(bn + " folded into " + l.name +
               " (batch_normalize=1; darknet divides by "
               "sqrt(var)+1e-6, not sqrt(var+eps))");
          if (conv_bias)
            note(l.name + ".bias cancelled by " + bn +
                 " (darknet's batch-normalised convolution has no bias): rolling_mean = " + bn +
                 ".running_mean - " + l.name + ".bias");
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
          emit({DarknetLayer::Maxpool, {}, {}, {}, {}, false},
               "[maxpool]\nsize=1\nstride=" + std::to_string(stride) + "\npadding=0\n");
          note(l.name + ": 1x1 stride-" + std::to_string(stride) +
               " convolution as a 1x1 [maxpool] with the stride and a stride-1 convolution "
               "(darknet ignores the stride of 1x1 convolutions)");
          stride = 1;
        }
        const std::string act = fold_activation(i);
        emit({DarknetLayer::Conv, l.name, bn, {}, {}, conv_bias},
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
        emit({DarknetLayer::Connected, {}, {}, l.name, {}},
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
        emit({DarknetLayer::Maxpool, {}, {}, {}, {}, false},
             "[maxpool]\nsize=" + std::to_string(l.kernel[0]) + "\nstride=" +
                 std::to_string(l.stride[0]) + "\npadding=" + std::to_string(2 * l.pad[0]) + "\n");
        break;
      case ir::Op::GlobalAvgPool:
        if (!bring(l, ins[i][0], why)) return Capability::no(why);
        emit({DarknetLayer::Avgpool, {}, {}, {}, {}, false}, "[avgpool]\n");
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
        const int here = static_cast<int>(p.layers.size());
        const std::string act = fold_activation(i);
        emit({DarknetLayer::Shortcut, {}, {}, {}, {}, false},
             "[shortcut]\nfrom=" + std::to_string(b - here) + "\nactivation=" + act + "\n");
        break;
      }
      case ir::Op::ReLU:
      case ir::Op::Tanh:
      case ir::Op::Sigmoid:
        if (!bring(l, ins[i][0], why)) return Capability::no(why);
        emit({DarknetLayer::Activation, {}, {}, {}, {}, false},
             std::string("[activation]\nactivation=") + activation_key(l.op) + "\n");
        break;
      case ir::Op::BatchNorm2d:
        return Capability::no(layer_where(l) +
                              ": darknet folds batch normalisation into the convolution before "
                              "it; this one does not directly follow a Conv2d read only "
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
    p.layers[static_cast<std::size_t>(last)].ir_name = m.layers[i].name;
  }
  const ir::Layer& tail = m.layers.back();
  if (tail.op != ir::Op::Dense || produced.at(tail.name) != last)
    return Capability::no(layer_where(tail) +
                          ": the darknet adapter needs the logits from a final Dense layer, "
                          "followed by darknet's softmax/cross-entropy layer");
  p.logits = last;
  emit({DarknetLayer::Softmax, {}, {}, {}, {}, false}, "[softmax]\ngroups=1\n");
  note(
      "flatten is free (darknet keeps [c][h][w] per example); a final [softmax] is darknet's "
      "loss layer, the logits are the output of the last [connected]");
  p.body = std::move(cfg);
  return Capability::yes();
}

std::string darknet_cfg(const DarknetPlan& p, const DarknetNetOptions& net) {
  return "[net]\nbatch=" + std::to_string(net.batch) +
         "\nsubdivisions=1\nwidth=" + std::to_string(p.w) + "\nheight=" + std::to_string(p.h) +
         "\nchannels=" + std::to_string(p.c) +
         "\nlearning_rate=" + std::to_string(net.learning_rate) +
         "\nmomentum=" + std::to_string(net.momentum) + "\ndecay=" + std::to_string(net.decay) +
         "\npolicy=constant\nmax_batches=0\n\n" + p.body;
}

Capability darknet_expressible(const ir::Model& m) {
  DarknetPlan p;
  return darknet_plan(m, p);
}

std::int64_t darknet_weights_floats(const ir::Model& m) {
  std::int64_t floats = 0;
  for (const ir::WeightSpec& s : ir::weight_specs(m)) floats += shape_numel(s.shape);
  DarknetPlan p;
  if (!darknet_plan(m, p).ok) return floats;
  for (const DarknetLayer& u : p.layers)
    if (u.kind == DarknetLayer::Conv && u.conv_bias) {
      const auto it = std::find_if(m.layers.begin(), m.layers.end(),
                                   [&](const ir::Layer& l) { return l.name == u.conv; });
      floats -= it->out;
    }
  return floats;
}

namespace {

class WeightsFile {
 public:
  explicit WeightsFile(const std::string& path) : path_(path), out_(path, std::ios::binary) {
    if (!out_) throw InputError(path + ": cannot be created");
  }
  template <class T>
  void put(T v) {
    out_.write(reinterpret_cast<const char*>(&v), sizeof v);
  }
  // Writes a whole weight tensor, checking it holds `count` floats.
  void put(const WeightSet& w, const std::string& name, std::int64_t count) {
    const Tensor& t = checked(w, name, count);
    out_.write(reinterpret_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
  }
  // Writes a - b elementwise (both `count` floats), in float as Darknet computes.
  void put_difference(const WeightSet& w, const std::string& a, const std::string& b,
                      std::int64_t count) {
    const auto av = checked(w, a, count).values<float>();
    const auto bv = checked(w, b, count).values<float>();
    for (std::size_t k = 0; k < av.size(); ++k) put<float>(av[k] - bv[k]);
  }
  void close() {
    out_.close();
    if (!out_) throw InputError(path_ + ": write failed");
  }

 private:
  static const Tensor& checked(const WeightSet& w, const std::string& name, std::int64_t count) {
    const Tensor& t = w.at(name);
    if (t.dtype() != DType::F32 || t.numel() != count)
      throw InputError("weight " + name + ": " + shape_str(t.shape()) + " is not the " +
                       std::to_string(count) + " floats the darknet layer holds");
    return t;
  }
  std::string path_;
  std::ofstream out_;
};

}  // namespace

DarknetFiles darknet_write(const ir::Model& m, const WeightSet& w, const std::string& dir,
                           std::int64_t batch) {
  DarknetPlan p;
  if (Capability c = darknet_plan(m, p); !c.ok)
    throw InputError("darknet cannot express " + m.name + ": " + c.why);
  if (batch < 1)
    throw InputError("darknet [net] batch must be at least 1, not " + std::to_string(batch));
  w.check_against(m);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError(dir + ": cannot create the directory: " + ec.message());
  const std::string stem = (std::filesystem::path(dir) / m.name).string();
  DarknetFiles files;
  files.cfg = stem + ".cfg";
  files.weights = stem + ".weights";
  {
    std::ofstream cfg(files.cfg, std::ios::binary);
    DarknetNetOptions net;
    net.batch = batch;
    cfg << darknet_cfg(p, net);
    cfg.close();
    if (!cfg) throw InputError(files.cfg + ": cannot be written");
  }
  WeightsFile out(files.weights);
  out.put<std::int32_t>(0);   // major
  out.put<std::int32_t>(2);   // minor: with major 0, `seen` is a 64-bit size_t
  out.put<std::int32_t>(0);   // revision
  out.put<std::uint64_t>(0);  // seen: images trained on, only read by darknet's training loop
  for (const DarknetLayer& u : p.layers) {
    if (u.kind == DarknetLayer::Conv) {
      const Tensor& k = w.at(u.conv + ".weight");
      const std::int64_t o = k.dim(0);
      if (u.bn.empty()) {
        out.put(w, u.conv + ".bias", o);
      } else {
        // Darknet's batch-normalised convolution has no bias of its own: its "biases" are BN's
        // shift, added after the normalisation and scale.
        out.put(w, u.bn + ".bias", o);
        out.put(w, u.bn + ".weight", o);
        if (u.conv_bias) {
          out.put_difference(w, u.bn + ".running_mean", u.conv + ".bias", o);
        } else {
          out.put(w, u.bn + ".running_mean", o);
        }
        out.put(w, u.bn + ".running_var", o);
      }
      out.put(w, u.conv + ".weight", k.numel());
    } else if (u.kind == DarknetLayer::Connected) {
      const Tensor& k = w.at(u.dense + ".weight");
      out.put(w, u.dense + ".bias", k.dim(0));
      out.put(w, u.dense + ".weight", k.numel());
    }
  }
  out.close();
  for (const DarknetLayer& u : p.layers) files.layer_ir_names.push_back(u.ir_name);
  files.conversions =
      "conv weights OIHW and connected weights [out][in] as in the IR; " + p.conversions;
  return files;
}

}  // namespace crossdl
