// The torch runtime: exports a model as a TorchScript module (.pt) built from the IR without
// Python, and runs what torch::jit::load reads back. The module holds the weights as its own
// parameters and buffers and three methods compiled from source generated here:
//   forward(x)        the logits
//   layer_outputs(x)  every IR layer's output, in layer order
//   layer_names()     the IR layer names of those outputs; weight_names() the IR weight name ->
//                     module attribute map (attribute names are sanitised IR names)
// so the artefact is self-describing: a Python user can torch.jit.load it and call the same.
#include <torch/script.h>
#include <torch/version.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/runtime.h"
#include "torch_convert.h"

namespace crossdl {
namespace {

using torch_detail::activation_layout;
using torch_detail::from_torch;
using torch_detail::to_torch;

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

// A TorchScript string literal.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Doubles printed so that they read back as the same double.
std::string literal(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string ints(std::int64_t a, std::int64_t b) {
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on `"[" + std::to_string(a)`.
  std::string s = "[";
  s += std::to_string(a);
  s += ", ";
  s += std::to_string(b);
  s += "]";
  return s;
}

// The module attribute for each IR weight: its name with every character that cannot appear in
// a Python identifier replaced by '_', made unique, and kept clear of the module's own names.
std::map<std::string, std::string> attribute_names(const std::vector<ir::WeightSpec>& specs) {
  static const std::set<std::string> reserved = {
      "training", "forward", "layer_outputs", "layer_names", "weight_names", "x",
      "and",      "as",      "assert",        "break",       "class",        "continue",
      "def",      "del",     "elif",          "else",        "except",       "finally",
      "for",      "from",    "global",        "if",          "import",       "in",
      "is",       "lambda",  "not",           "or",          "pass",         "raise",
      "return",   "try",     "while",         "with",        "yield",        "None",
      "True",     "False",   "torch"};
  std::map<std::string, std::string> out;
  std::set<std::string> taken;
  for (const auto& spec : specs) {
    std::string n;
    for (char c : spec.name)
      n += (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_') ? c : '_';
    if (n.empty() || std::isdigit(static_cast<unsigned char>(n[0])) != 0) n = "w_" + n;
    if (reserved.count(n) != 0 || n.rfind("v_", 0) == 0) n += "_";
    std::string unique = n;
    for (int k = 2; taken.count(unique) != 0; ++k) unique = n + "_" + std::to_string(k);
    taken.insert(unique);
    out[spec.name] = unique;
  }
  return out;
}

struct Script {
  std::string source;
  std::map<std::string, std::string> attrs;  // IR weight name -> module attribute
};

// The TorchScript source of the model's methods. Layer i's output is the local v_<i>; the ops
// are the aten ones torch::nn's modules call, with the same arguments, so that the TorchScript
// module and the torch framework compute the same thing.
Script generate(const ir::Model& m) {
  Script s;
  s.attrs = attribute_names(ir::weight_specs(m));
  auto attr = [&](const ir::Layer& l, const char* param) {
    return "self." + s.attrs.at(l.name + "." + param);
  };
  std::map<std::string, std::string> var{{"input", "x"}};
  std::string body;
  std::string all;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& l = m.layers[i];
    const auto ins = ir::resolved_inputs(m, i);
    const std::string a = var.at(ins.at(0));
    const std::string v = "v_" + std::to_string(i);
    std::string e;
    switch (l.op) {
      case ir::Op::Conv2d:
        e = "torch.conv2d(" + a + ", " + attr(l, "weight") + ", " +
            (l.bias ? attr(l, "bias") : "None") + ", " + ints(l.stride[0], l.stride[1]) + ", " +
            ints(l.pad[0], l.pad[1]) + ", [1, 1], 1)";
        break;
      case ir::Op::Dense:
        e = "torch.linear(" + a + ", " + attr(l, "weight") + ", " +
            (l.bias ? attr(l, "bias") : "None") + ")";
        break;
      case ir::Op::ReLU:
        e = "torch.relu(" + a + ")";
        break;
      case ir::Op::Tanh:
        e = "torch.tanh(" + a + ")";
        break;
      case ir::Op::Sigmoid:
        e = "torch.sigmoid(" + a + ")";
        break;
      case ir::Op::MaxPool2d:
        e = "torch.max_pool2d(" + a + ", " + ints(l.kernel[0], l.kernel[1]) + ", " +
            ints(l.stride[0], l.stride[1]) + ", " + ints(l.pad[0], l.pad[1]) + ", [1, 1], False)";
        break;
      case ir::Op::AvgPool2d:
        e = "torch.avg_pool2d(" + a + ", " + ints(l.kernel[0], l.kernel[1]) + ", " +
            ints(l.stride[0], l.stride[1]) + ", " + ints(l.pad[0], l.pad[1]) + ", False, False)";
        break;
      case ir::Op::GlobalAvgPool:
        e = "torch.adaptive_avg_pool2d(" + a + ", [1, 1])";
        break;
      case ir::Op::BatchNorm2d:
        // Evaluation mode: the running statistics, never the batch's.
        e = "torch.batch_norm(" + a + ", " + attr(l, "weight") + ", " + attr(l, "bias") + ", " +
            attr(l, "running_mean") + ", " + attr(l, "running_var") + ", False, " +
            literal(static_cast<double>(l.momentum)) + ", " + literal(static_cast<double>(l.eps)) +
            ", False)";
        break;
      case ir::Op::Add:
        e = a + " + " + var.at(ins.at(1));
        break;
      case ir::Op::Flatten:
        e = "torch.flatten(" + a + ", 1)";
        break;
      case ir::Op::Softmax:
        e = "torch.softmax(" + a + ", -1)";
        break;
      case ir::Op::Embedding:
        e = "torch.embedding(" + attr(l, "weight") + ", " + a + ")";
        break;
      case ir::Op::ImageToSequence:
        e = a + ".permute([0, 2, 1, 3]).reshape([" + a + ".size(0), " + a + ".size(2), " + a +
            ".size(1) * " + a + ".size(3)])";
        break;
      case ir::Op::LSTM:
      case ir::Op::GRU: {
        const bool lstm = l.op == ir::Op::LSTM;
        std::string params = "[" + attr(l, "weight_ih") + ", " + attr(l, "weight_hh");
        if (l.bias) params += ", " + attr(l, "bias_ih") + ", " + attr(l, "bias_hh");
        params += "]";
        // Zero initial state, as torch::nn::LSTM/GRU use when given none; batch_first input,
        // one layer, no dropout, evaluation mode. The result is the last hidden state.
        body += "    " + v + "_h0 = torch.zeros([1, " + a + ".size(0), " + std::to_string(l.out) +
                "], dtype=" + a + ".dtype, device=" + a + ".device)\n";
        const std::string h0 = v + "_h0";
        const std::string state = lstm ? "[" + h0 + ", " + h0 + "]" : h0;
        body += "    " + v + "_r = torch." + (lstm ? "lstm" : "gru") + "(" + a + ", " + state +
                ", " + params + ", " + (l.bias ? "True" : "False") +
                ", 1, 0.0, False, False, True)\n";
        e = v + "_r[1].squeeze(0)";
        break;
      }
    }
    body += "    " + v + " = " + e + "\n";
    var[l.name] = v;
    all += (all.empty() ? "" : ", ") + v;
  }
  std::string names, weights;
  for (const auto& l : m.layers) names += (names.empty() ? "" : ", ") + quoted(l.name);
  for (const auto& [ir_name, attr_name] : s.attrs)
    weights += (weights.empty() ? "" : ", ") + quoted(ir_name) + ": " + quoted(attr_name);
  s.source = "def forward(self, x):\n" + body + "    return " + var.at(m.layers.back().name) +
             "\n\n" + "def layer_outputs(self, x):\n" + body + "    return [" + all + "]\n\n" +
             "def layer_names(self):\n    return [" + names + "]\n\n" +
             "def weight_names(self):\n    return {" + weights + "}\n";
  return s;
}

bool is_buffer(const ir::WeightSpec& spec) {
  return spec.param == "running_mean" || spec.param == "running_var";
}

torch::jit::Module build_module(const ir::Model& m, const WeightSet& w, const Script& s) {
  torch::jit::Module mod("CrossdlModel");
  for (const auto& spec : ir::weight_specs(m)) {
    at::Tensor t = to_torch(w.at(spec.name)).clone();
    if (is_buffer(spec))
      mod.register_buffer(s.attrs.at(spec.name), t);
    else
      mod.register_parameter(s.attrs.at(spec.name), t, /*is_buffer=*/false);
  }
  mod.define(s.source);
  mod.eval();
  return mod;
}

void check_input(const ir::Model& m, const Tensor& x) {
  Shape want{0};
  want.insert(want.end(), m.input_shape.begin(), m.input_shape.end());
  want[0] = x.rank() > 0 ? x.dim(0) : 0;
  if (x.dtype() != m.input_dtype || x.shape() != want || want[0] < 1)
    throw InputError("torchscript runtime: expected a " + std::string(dtype_name(m.input_dtype)) +
                     " batch [N," + shape_str(m.input_shape).substr(1) + ", got " +
                     std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()));
}

class ScriptRunner : public Runner {
 public:
  ScriptRunner(torch::jit::Module mod, const ir::Model& m, std::vector<std::string> names)
      : mod_(std::move(mod)), model_(m), names_(std::move(names)) {}

  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] {
      check_input(model_, x);
      // InferenceMode, not NoGradGuard: it also skips version counting and view tracking
      // (about 3% of a LeNet-5 call, bench/README.md); outputs are copied out.
      c10::InferenceMode inference;
      logits = from_torch(mod_.forward({to_torch(x)}).toTensor(), Layout::NC);
    });
  }
  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    return guarded("layer_outputs", [&] {
      check_input(model_, x);
      // As in infer().
      c10::InferenceMode inference;
      const auto list = mod_.get_method("layer_outputs")({to_torch(x)}).toTensorVector();
      if (list.size() != names_.size())
        throw std::runtime_error("layer_outputs returned " + std::to_string(list.size()) +
                                 " tensors for " + std::to_string(names_.size()) + " layers");
      std::vector<LayerOutput> result;
      for (std::size_t i = 0; i < list.size(); ++i)
        result.push_back({names_[i], from_torch(list[i], activation_layout(list[i].dim()))});
      out = std::move(result);
    });
  }

 private:
  torch::jit::Module mod_;
  ir::Model model_;
  std::vector<std::string> names_;
};

class TorchScriptRuntime : public Runtime {
 public:
  FrameworkInfo info() const override {
    return {"torch", "LibTorch (TorchScript)", TORCH_VERSION, "cpu"};
  }
  Capability supports(const ir::Model& m) const override {
    try {
      ir::validate(m);
    } catch (const std::exception& e) {
      return Capability::no(e.what());
    }
    return Capability::yes();
  }

  // layer_outputs is always in the module: it is a separate method, so it cannot change what
  // forward computes.
  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions&, Artefact& out) override {
    return guarded("export", [&] {
      ir::validate(m);
      w.check_against(m);
      const Script s = generate(m);
      torch::jit::Module mod = build_module(m, w, s);
      export_dir_create(dir);
      const std::string path = (std::filesystem::path(dir) / (m.name + ".pt")).string();
      mod.save(path);
      Artefact a = artefact_of("torchscript", dir, {path}, "");
      // The rule, and the names it does not explain; weight_names() in the module has them all.
      std::string odd;
      for (const auto& [ir_name, attr_name] : s.attrs) {
        std::string plain = ir_name;
        std::replace(plain.begin(), plain.end(), '.', '_');
        if (plain != attr_name) odd += ", " + ir_name + "->" + attr_name;
      }
      a.conversions =
          "weights as module parameters (BatchNorm running stats as buffers) in the IR's own "
          "layouts (OIHW, [out,in], PyTorch gate order), named as in the IR with '.' as '_' "
          "(the full map: the module's weight_names())" +
          odd;
      out = std::move(a);
    });
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    std::unique_ptr<Runner> r;
    status = guarded("load", [&] {
      if (a.format != "torchscript")
        throw InputError("torch runtime: artefact format '" + a.format + "' is not torchscript");
      if (a.files.size() != 1)
        throw InputError("torchscript artefact in " + a.dir + ": expected one .pt file, found " +
                         std::to_string(a.files.size()));
      const std::string& path = a.files[0];
      if (!std::filesystem::is_regular_file(path)) throw InputError(path + ": no such file");
      at::set_num_threads(opt.threads);
      at::globalContext().setDeterministicAlgorithms(opt.deterministic, /*warn_only=*/false);
      torch::jit::Module mod = torch::jit::load(path);
      mod.eval();
      // The module must be the one written for m: its layers, by name and in order.
      std::vector<std::string> names;
      if (!mod.find_method("layer_names") || !mod.find_method("layer_outputs"))
        throw InputError(path +
                         ": a TorchScript module without crossdl's layer_names/"
                         "layer_outputs methods (not written by crossdl)");
      for (const auto& n : mod.get_method("layer_names")({}).toListRef())
        names.push_back(n.toStringRef());
      std::vector<std::string> want;
      for (const auto& l : m.layers) want.push_back(l.name);
      if (names != want)
        throw InputError(path + ": written for a model with " + std::to_string(names.size()) +
                         " layers (first " + (names.empty() ? "none" : names.front()) + "), not " +
                         m.name + " (" + std::to_string(want.size()) + " layers)");
      r = std::make_unique<ScriptRunner>(std::move(mod), m, std::move(names));
    });
    return status.is_ok() ? std::move(r) : nullptr;
  }
};

}  // namespace

std::unique_ptr<Runtime> make_torch_runtime(const std::string& variant) {
  require_no_variant("torch", variant);
  return std::make_unique<TorchScriptRuntime>();
}

}  // namespace crossdl
