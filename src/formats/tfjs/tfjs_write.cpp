// The TF.js layers-model writer and the checks and conversions a runner needs around it (see
// crossdl/tfjs_io.h for the conventions of the files it writes).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/tfjs_io.h"

#ifndef CROSSDL_VERSION
#define CROSSDL_VERSION "unknown"
#endif

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// How the Keras tensor that holds a layer's output relates to the IR's layout of that output.
struct Form {
  enum Kind { Plain, Nhwc, FlatHwc } kind = Plain;
  std::int64_t c = 0, h = 0, w = 0;  // Nhwc / FlatHwc: the feature map's IR [C,H,W]
  bool operator==(const Form&) const = default;
};

std::string where(const ir::Layer& l) {
  return "layer " + l.name + " (" + std::string(ir::op_name(l.op)) + ")";
}

// Whether Keras' 'same' padding reads exactly the windows that symmetric padding p does: the same
// number of outputs and the same padding before the first window (what 'same' adds after the last
// window, no window needs).
bool same_equivalent(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t p) {
  const std::int64_t ir_out = (in + 2 * p - k) / s + 1;
  const std::int64_t same_out = (in + s - 1) / s;
  const std::int64_t total = std::max<std::int64_t>((same_out - 1) * s + k - in, 0);
  return ir_out == same_out && total / 2 == p;
}

enum class Padding { Valid, Same, ZeroPad };

Padding window_padding(const ir::Layer& l, const Shape& in) {
  if (l.pad[0] == 0 && l.pad[1] == 0) return Padding::Valid;
  if (same_equivalent(in[1], l.kernel[0], l.stride[0], l.pad[0]) &&
      same_equivalent(in[2], l.kernel[1], l.stride[1], l.pad[1]))
    return Padding::Same;
  return Padding::ZeroPad;
}

// Every layer's output form and shape, or an InputError naming the layer that cannot be written.
struct Plan {
  std::vector<Shape> shapes;                 // IR output shapes, by layer index
  std::map<std::string, Form> forms;         // by layer name, and "input"
  std::map<std::string, Shape> shape_of;     // by layer name, and "input"
  std::map<std::string, std::size_t> index;  // layer name -> position
};

Plan make_plan(const ir::Model& m) {
  ir::validate(m);
  Plan p;
  p.shapes = ir::infer_shapes(m);
  const bool image = m.input_dtype == DType::F32 && m.input_shape.size() == 3;
  const bool tokens = m.input_dtype == DType::I64 && m.input_shape.size() == 1;
  if (!image && !tokens)
    throw InputError("model " + m.name + ": the TF.js writer takes float images [C,H,W] or int64 " +
                     "tokens [T]; the input is " + std::string(dtype_name(m.input_dtype)) + " " +
                     shape_str(m.input_shape));
  p.shape_of["input"] = m.input_shape;
  p.forms["input"] =
      image ? Form{Form::Nhwc, m.input_shape[0], m.input_shape[1], m.input_shape[2]} : Form{};
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& l = m.layers[i];
    const std::vector<std::string> ins = ir::resolved_inputs(m, i);
    const Form in = p.forms.at(ins[0]);
    const Shape& in_shape = p.shape_of.at(ins[0]);
    const Shape& out_shape = p.shapes[i];
    auto need_map = [&] {
      if (in.kind != Form::Nhwc)
        throw InputError(where(l) + ": expects a feature map held as NHWC in the TF.js model");
    };
    Form out;
    switch (l.op) {
      case ir::Op::Conv2d:
      case ir::Op::GlobalAvgPool:
      case ir::Op::BatchNorm2d:
        need_map();
        out = {Form::Nhwc, out_shape[0], out_shape[1], out_shape[2]};
        break;
      case ir::Op::MaxPool2d:
      case ir::Op::AvgPool2d:
        need_map();
        if (window_padding(l, in_shape) == Padding::ZeroPad)
          throw InputError(where(l) + ": padding [" + std::to_string(l.pad[0]) + "," +
                           std::to_string(l.pad[1]) +
                           "] is not what Keras 'same' pads, and a ZeroPadding2D would let the "
                           "padding zeros into the pooled values");
        out = {Form::Nhwc, out_shape[0], out_shape[1], out_shape[2]};
        break;
      case ir::Op::Dense:
        if (in.kind == Form::Nhwc) throw InputError(where(l) + ": needs a flat input");
        out = {};
        break;
      case ir::Op::ReLU:
      case ir::Op::Tanh:
      case ir::Op::Sigmoid:
        out = in;
        break;
      case ir::Op::Softmax:
        // Over a flat vector the order of the features does not matter; over a map, Keras' last
        // axis is C where the IR's is W.
        if (in.kind == Form::Nhwc)
          throw InputError(where(l) +
                           ": softmax over the IR's last axis (W) of a feature map is "
                           "not Keras' last axis (C) in NHWC");
        out = in;
        break;
      case ir::Op::Add: {
        const Form other = p.forms.at(ins[1]);
        if (!(other == in))
          throw InputError(where(l) + ": its inputs '" + ins[0] + "' and '" + ins[1] +
                           "' are laid out differently in the TF.js model");
        out = in;
        break;
      }
      case ir::Op::Flatten:
        out = in.kind == Form::Nhwc ? Form{Form::FlatHwc, in.c, in.h, in.w} : in;
        break;
      case ir::Op::Embedding:
        if (l.vocab > 2147483647)
          throw InputError(where(l) + ": vocabulary " + std::to_string(l.vocab) +
                           " does not fit TF.js' int32 token ids");
        out = {};
        break;
      case ir::Op::ImageToSequence:
        need_map();
        out = {};
        break;
      case ir::Op::LSTM:
        out = {};
        break;
      case ir::Op::GRU:
        throw InputError(where(l) +
                         ": PyTorch's GRU applies the reset gate after the recurrent product "
                         "(Keras reset_after=true), which TF.js 4.22's GRUCell refuses; its "
                         "reset_after=false cell computes something else");
    }
    p.forms[l.name] = out;
    p.shape_of[l.name] = out_shape;
    p.index[l.name] = i;
  }
  return p;
}

std::string sanitize(const std::string& name) {
  std::string s = name;
  for (char& ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
    if (!ok) ch = '_';
  }
  // TF.js joins layer and weight names with '/', so a name must not be empty or start with '/'.
  if (s.empty()) s = "layer";
  return s;
}

std::string unique_name(const std::string& base, std::set<std::string>& used) {
  std::string n = base;
  for (int k = 2; used.count(n) != 0; ++k) n = base + "_" + std::to_string(k);
  used.insert(n);
  return n;
}

json zeros() {
  return {{"class_name", "Zeros"}, {"config", json::object()}};
}

json node_of(const std::vector<std::string>& inputs) {
  json node = json::array();
  for (const std::string& n : inputs) node.push_back(json::array({n, 0, 0, json::object()}));
  return json::array({node});
}

struct WeightOut {
  std::string name;
  Shape shape;
  std::vector<float> data;
};

// Collects the Keras layers and weights of the model in order.
class Emitter {
 public:
  explicit Emitter(std::set<std::string> used) : used_(std::move(used)) {}

  // Adds a layer named `name` (already unique) reading `inputs`.
  void layer(const std::string& cls, const std::string& name, json config,
             const std::vector<std::string>& inputs) {
    config["name"] = name;
    config["trainable"] = true;
    layers_.push_back({{"class_name", cls},
                       {"name", name},
                       {"config", std::move(config)},
                       {"inbound_nodes", inputs.empty() ? json::array() : node_of(inputs)}});
  }
  // A helper layer's name, derived from the IR layer it serves.
  std::string helper_name(const std::string& base) { return unique_name(base, used_); }
  void weight(const std::string& layer, const char* param, Shape shape, std::vector<float> data) {
    weights_.push_back({layer + "/" + param, std::move(shape), std::move(data)});
  }
  json& layers() { return layers_; }
  const std::vector<WeightOut>& weights() const { return weights_; }

 private:
  std::set<std::string> used_;
  json layers_ = json::array();
  std::vector<WeightOut> weights_;
};

const Tensor& weight_of(const WeightSet& w, const ir::Layer& l, const char* param) {
  return w.at(l.name + "." + param);
}

std::vector<float> to_vector(const Tensor& t) {
  const auto v = t.values<float>();
  return {v.begin(), v.end()};
}

// [rows, cols] -> [cols, rows]
std::vector<float> transposed(const Tensor& t) {
  const std::int64_t rows = t.dim(0), cols = t.dim(1);
  const auto src = t.values<float>();
  std::vector<float> out(src.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      out[static_cast<std::size_t>(c * rows + r)] = src[static_cast<std::size_t>(r * cols + c)];
  return out;
}

// IR index (CHW order) of feature r of a Keras Flatten over an NHWC map (HWC order).
std::int64_t chw_index(const Form& f, std::int64_t r) {
  const std::int64_t c = r % f.c;
  const std::int64_t hw = r / f.c;
  const std::int64_t y = hw / f.w, x = hw % f.w;
  return (c * f.h + y) * f.w + x;
}

void write_file(const std::string& path, const void* data, std::size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(path + ": cannot open for writing");
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  out.close();
  if (!out) throw InputError(path + ": write failed");
}

bool little_endian() {
  const std::uint32_t one = 1;
  unsigned char b = 0;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

}  // namespace

Capability tfjs_expressible(const ir::Model& m) {
  try {
    make_plan(m);
  } catch (const std::exception& e) {
    return Capability::no(e.what());
  }
  return Capability::yes();
}

std::map<std::string, std::string> tfjs_layer_names(const ir::Model& m) {
  std::set<std::string> used = {"input"};
  std::map<std::string, std::string> out;
  for (const ir::Layer& l : m.layers) out[l.name] = unique_name(sanitize(l.name), used);
  return out;
}

TfjsFiles tfjs_write(const std::string& dir, const ir::Model& m, const WeightSet& w,
                     const TfjsWriteOptions& opt) {
  const Plan plan = make_plan(m);
  w.check_against(m);
  const std::map<std::string, std::string> names = tfjs_layer_names(m);
  std::set<std::string> used = {"input"};
  for (const auto& [ir_name, k] : names) used.insert(k);
  Emitter e(used);
  auto keras = [&](const std::string& ir_name) {
    return ir_name == "input" ? std::string("input") : names.at(ir_name);
  };

  {
    json shape = json::array({nullptr});
    if (m.input_dtype == DType::F32) {
      shape.push_back(m.input_shape[1]);
      shape.push_back(m.input_shape[2]);
      shape.push_back(m.input_shape[0]);
    } else {
      shape.push_back(m.input_shape[0]);
    }
    e.layer("InputLayer", "input",
            {{"batch_input_shape", shape},
             {"dtype", m.input_dtype == DType::F32 ? "float32" : "int32"},
             {"sparse", false}},
            {});
  }

  bool permuted_dense = false, zero_padded = false, same_padded = false;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& l = m.layers[i];
    const std::vector<std::string> ins = ir::resolved_inputs(m, i);
    const std::string name = keras(l.name);
    std::string in = keras(ins[0]);
    const Form in_form = plan.forms.at(ins[0]);
    const Shape& in_shape = plan.shape_of.at(ins[0]);
    const Shape& out_shape = plan.shapes[i];
    switch (l.op) {
      case ir::Op::Conv2d: {
        const Padding pad = window_padding(l, in_shape);
        if (pad == Padding::ZeroPad) {
          const std::string p = e.helper_name(name + "_pad");
          e.layer("ZeroPadding2D", p,
                  {{"padding", {{l.pad[0], l.pad[0]}, {l.pad[1], l.pad[1]}}},
                   {"data_format", "channels_last"}},
                  {in});
          in = p;
          zero_padded = true;
        }
        same_padded = same_padded || pad == Padding::Same;
        e.layer("Conv2D", name,
                {{"filters", l.out},
                 {"kernel_size", {l.kernel[0], l.kernel[1]}},
                 {"strides", {l.stride[0], l.stride[1]}},
                 {"padding", pad == Padding::Same ? "same" : "valid"},
                 {"data_format", "channels_last"},
                 {"dilation_rate", {1, 1}},
                 {"activation", "linear"},
                 {"use_bias", l.bias},
                 // The weights file sets every value; zeros keep TF.js from drawing random ones
                 // at load time for nothing.
                 {"kernel_initializer", zeros()},
                 {"bias_initializer", zeros()}},
                {in});
        const Tensor& wt = weight_of(w, l, "weight");  // OIHW
        const std::int64_t O = wt.dim(0), I = wt.dim(1), kh = wt.dim(2), kw = wt.dim(3);
        const auto src = wt.values<float>();
        std::vector<float> hwio(src.size());
        for (std::int64_t o = 0; o < O; ++o)
          for (std::int64_t ci = 0; ci < I; ++ci)
            for (std::int64_t y = 0; y < kh; ++y)
              for (std::int64_t x = 0; x < kw; ++x)
                hwio[static_cast<std::size_t>(((y * kw + x) * I + ci) * O + o)] =
                    src[static_cast<std::size_t>(((o * I + ci) * kh + y) * kw + x)];
        e.weight(name, "kernel", {kh, kw, I, O}, std::move(hwio));
        if (l.bias) e.weight(name, "bias", {O}, to_vector(weight_of(w, l, "bias")));
        break;
      }
      case ir::Op::MaxPool2d:
      case ir::Op::AvgPool2d:
        e.layer(l.op == ir::Op::MaxPool2d ? "MaxPooling2D" : "AveragePooling2D", name,
                {{"pool_size", {l.kernel[0], l.kernel[1]}},
                 {"strides", {l.stride[0], l.stride[1]}},
                 {"padding", window_padding(l, in_shape) == Padding::Same ? "same" : "valid"},
                 {"data_format", "channels_last"}},
                {in});
        break;
      case ir::Op::GlobalAvgPool: {
        const std::string g = e.helper_name(name + "_gap");
        e.layer("GlobalAveragePooling2D", g, {{"data_format", "channels_last"}}, {in});
        e.layer("Reshape", name, {{"target_shape", {1, 1, out_shape[0]}}}, {g});
        break;
      }
      case ir::Op::BatchNorm2d:
        e.layer("BatchNormalization", name,
                {{"axis", -1},
                 {"momentum", 1.0 - static_cast<double>(l.momentum)},
                 {"epsilon", static_cast<double>(l.eps)},
                 {"center", true},
                 {"scale", true},
                 {"beta_initializer", zeros()},
                 {"gamma_initializer", zeros()},
                 {"moving_mean_initializer", zeros()},
                 {"moving_variance_initializer", zeros()}},
                {in});
        e.weight(name, "gamma", {in_shape[0]}, to_vector(weight_of(w, l, "weight")));
        e.weight(name, "beta", {in_shape[0]}, to_vector(weight_of(w, l, "bias")));
        e.weight(name, "moving_mean", {in_shape[0]}, to_vector(weight_of(w, l, "running_mean")));
        e.weight(name, "moving_variance", {in_shape[0]}, to_vector(weight_of(w, l, "running_var")));
        break;
      case ir::Op::Dense: {
        e.layer("Dense", name,
                {{"units", l.out},
                 {"activation", "linear"},
                 {"use_bias", l.bias},
                 {"kernel_initializer", zeros()},
                 {"bias_initializer", zeros()}},
                {in});
        const Tensor& wt = weight_of(w, l, "weight");  // [out, in]
        const std::int64_t out_n = wt.dim(0), in_n = wt.dim(1);
        const auto src = wt.values<float>();
        std::vector<float> kernel(src.size());
        const bool permute = in_form.kind == Form::FlatHwc;
        permuted_dense = permuted_dense || (permute && in_form.h * in_form.w > 1);
        for (std::int64_t r = 0; r < in_n; ++r) {
          const std::int64_t col = permute ? chw_index(in_form, r) : r;
          for (std::int64_t o = 0; o < out_n; ++o)
            kernel[static_cast<std::size_t>(r * out_n + o)] =
                src[static_cast<std::size_t>(o * in_n + col)];
        }
        e.weight(name, "kernel", {in_n, out_n}, std::move(kernel));
        if (l.bias) e.weight(name, "bias", {out_n}, to_vector(weight_of(w, l, "bias")));
        break;
      }
      case ir::Op::ReLU:
      case ir::Op::Tanh:
      case ir::Op::Sigmoid:
      case ir::Op::Softmax: {
        const char* act = l.op == ir::Op::ReLU      ? "relu"
                          : l.op == ir::Op::Tanh    ? "tanh"
                          : l.op == ir::Op::Sigmoid ? "sigmoid"
                                                    : "softmax";
        e.layer("Activation", name, {{"activation", act}}, {in});
        break;
      }
      case ir::Op::Add:
        e.layer("Add", name, json::object(), {in, keras(ins[1])});
        break;
      case ir::Op::Flatten:
        // TF.js' Flatten wants rank >= 3 with the batch axis; a flat input is reshaped to itself.
        if (in_shape.size() >= 2)
          e.layer("Flatten", name, json::object(), {in});
        else
          e.layer("Reshape", name, {{"target_shape", {out_shape[0]}}}, {in});
        break;
      case ir::Op::Embedding:
        e.layer("Embedding", name,
                {{"input_dim", l.vocab},
                 {"output_dim", l.out},
                 {"mask_zero", false},
                 {"input_length", in_shape[0]},
                 {"embeddings_initializer", zeros()}},
                {in});
        e.weight(name, "embeddings", {l.vocab, l.out}, to_vector(weight_of(w, l, "weight")));
        break;
      case ir::Op::ImageToSequence: {
        // NHWC [H,W,C] -> [H,C,W] -> [H, C*W]: each row's features channel-major, as the IR.
        const std::string p = e.helper_name(name + "_permute");
        e.layer("Permute", p, {{"dims", {1, 3, 2}}}, {in});
        e.layer("Reshape", name, {{"target_shape", {out_shape[0], out_shape[1]}}}, {p});
        break;
      }
      case ir::Op::LSTM: {
        e.layer("LSTM", name,
                {{"units", l.out},
                 {"activation", "tanh"},
                 {"recurrent_activation", "sigmoid"},
                 {"use_bias", true},
                 {"unit_forget_bias", false},
                 {"return_sequences", false},
                 {"return_state", false},
                 {"go_backwards", false},
                 {"stateful", false},
                 {"unroll", false},
                 {"kernel_initializer", zeros()},
                 {"recurrent_initializer", zeros()},
                 {"bias_initializer", zeros()}},
                {in});
        const Tensor& wih = weight_of(w, l, "weight_ih");
        const Tensor& whh = weight_of(w, l, "weight_hh");
        e.weight(name, "kernel", {wih.dim(1), wih.dim(0)}, transposed(wih));
        e.weight(name, "recurrent_kernel", {whh.dim(1), whh.dim(0)}, transposed(whh));
        std::vector<float> bias = to_vector(weight_of(w, l, "bias_ih"));
        const auto bhh = weight_of(w, l, "bias_hh").values<float>();
        for (std::size_t k = 0; k < bias.size(); ++k) bias[k] += bhh[k];
        const auto units4 = static_cast<std::int64_t>(bias.size());
        e.weight(name, "bias", {units4}, std::move(bias));
        break;
      }
      case ir::Op::GRU:
        throw InputError(where(l) + ": not expressible (tfjs_expressible says why)");
    }
  }

  TfjsFiles f;
  json outputs = json::array();
  if (opt.layer_outputs)
    for (const ir::Layer& l : m.layers) f.outputs.push_back(l.name);
  else
    f.outputs.push_back(m.layers.back().name);
  for (const std::string& o : f.outputs) outputs.push_back(json::array({keras(o), 0, 0}));

  json manifest = json::array();
  std::vector<float> blob;
  for (const WeightOut& wo : e.weights()) {
    manifest.push_back({{"name", wo.name}, {"shape", wo.shape}, {"dtype", "float32"}});
    blob.insert(blob.end(), wo.data.begin(), wo.data.end());
  }
  if (!little_endian())
    for (float& v : blob) {
      unsigned char b[4];
      std::memcpy(b, &v, 4);
      std::swap(b[0], b[3]);
      std::swap(b[1], b[2]);
      std::memcpy(&v, b, 4);
    }

  const json model = {
      {"format", "layers-model"},
      {"generatedBy", std::string("crossdl ") + CROSSDL_VERSION},
      {"convertedBy", std::string("crossdl ") + CROSSDL_VERSION + " tfjs_write (from its IR)"},
      {"modelTopology",
       {{"class_name", "Model"},
        {"config",
         {{"name", sanitize(m.name)},
          {"layers", std::move(e.layers())},
          {"input_layers", json::array({json::array({"input", 0, 0})})},
          {"output_layers", outputs}}}}},
      {"weightsManifest",
       json::array({{{"paths", json::array({"weights.bin"})}, {"weights", manifest}}})}};

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError(dir + ": cannot create the export folder: " + ec.message());
  f.model_json = (fs::path(dir) / "model.json").string();
  f.weights_bin = (fs::path(dir) / "weights.bin").string();
  const std::string text = model.dump(1);
  write_file(f.model_json, text.data(), text.size());
  write_file(f.weights_bin, blob.data(), blob.size() * sizeof(float));
  f.bytes = text.size() + blob.size() * sizeof(float);

  f.conversions = m.input_dtype == DType::F32 ? "input NCHW->NHWC (transposed by the runner)"
                                              : "token ids int64->int32 (narrowed by the runner)";
  bool conv = false, lstm = false, bn = false, gap = false, seq = false, dense = false;
  for (const ir::Layer& l : m.layers) {
    conv = conv || l.op == ir::Op::Conv2d;
    lstm = lstm || l.op == ir::Op::LSTM;
    bn = bn || l.op == ir::Op::BatchNorm2d;
    gap = gap || l.op == ir::Op::GlobalAvgPool;
    seq = seq || l.op == ir::Op::ImageToSequence;
    dense = dense || l.op == ir::Op::Dense;
  }
  if (conv) f.conversions += "; conv OIHW->HWIO";
  if (dense) f.conversions += "; dense [out,in]->[in,out]";
  if (permuted_dense) f.conversions += "; dense after flatten: rows CHW->HWC";
  if (same_padded) f.conversions += "; symmetric conv padding as 'same'";
  if (zero_padded) f.conversions += "; other conv padding as ZeroPadding2D";
  if (bn) f.conversions += "; BatchNorm gamma/beta/moving_mean/moving_variance, momentum 1-m";
  if (gap) f.conversions += "; global average pool + Reshape [1,1,C]";
  if (seq) f.conversions += "; image rows to sequence: Permute [1,3,2] + Reshape [H,C*W]";
  if (lstm)
    f.conversions +=
        "; LSTM kernels transposed (gates i,f,g,o = Keras i,f,c,o), bias = b_ih + b_hh";
  if (opt.layer_outputs) f.conversions += "; every layer output is a model output";
  return f;
}

void tfjs_verify_files(const std::string& model_json) {
  std::ifstream in(model_json, std::ios::binary);
  if (!in) throw InputError(model_json + ": cannot open the TF.js model file");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw InputError(input_where(model_json, static_cast<long long>(e.byte),
                                 "not valid JSON (" + std::string(e.what()) + ")"));
  }
  auto bad = [&](const std::string& what) { throw InputError(model_json + ": " + what); };
  if (!j.is_object()) bad("not a JSON object");
  if (j.value("format", std::string()) != "layers-model")
    bad("\"format\" is " + (j.contains("format") ? j["format"].dump() : std::string("missing")) +
        ", expected \"layers-model\"");
  if (!j.contains("modelTopology") || !j["modelTopology"].is_object())
    bad("no modelTopology object");
  const json& topo = j["modelTopology"];
  if (!topo.contains("config") || !topo["config"].is_object() ||
      !topo["config"].contains("layers") || !topo["config"]["layers"].is_array())
    bad("modelTopology has no config.layers list");
  if (!j.contains("weightsManifest") || !j["weightsManifest"].is_array())
    bad("no weightsManifest list");
  const fs::path dir = fs::path(model_json).parent_path();
  std::size_t g = 0;
  for (const json& group : j["weightsManifest"]) {
    const std::string at = "weightsManifest[" + std::to_string(g++) + "]";
    if (!group.is_object() || !group.contains("paths") || !group["paths"].is_array() ||
        !group.contains("weights") || !group["weights"].is_array())
      bad(at + " lacks its paths and weights lists");
    std::uint64_t need = 0;
    for (const json& wt : group["weights"]) {
      if (!wt.is_object() || !wt.contains("name") || !wt["name"].is_string() ||
          !wt.contains("shape") || !wt["shape"].is_array())
        bad(at + ": a weight entry lacks its name or shape: " + wt.dump().substr(0, 120));
      const std::string name = wt["name"].get<std::string>();
      if (wt.value("dtype", std::string()) != "float32")
        bad(at + ": weight " + name + " has dtype " +
            (wt.contains("dtype") ? wt["dtype"].dump() : std::string("missing")) +
            "; crossdl writes float32 only");
      std::uint64_t n = 1;
      for (const json& d : wt["shape"]) {
        if (!d.is_number_integer() || d.get<long long>() < 0)
          bad(at + ": weight " + name + " has a bad shape " + wt["shape"].dump());
        n *= d.get<std::uint64_t>();
      }
      need += n * 4;
    }
    std::uint64_t have = 0;
    for (const json& p : group["paths"]) {
      if (!p.is_string()) bad(at + ": a path is not a string");
      const fs::path file = dir / p.get<std::string>();
      std::error_code ec;
      const std::uint64_t size = fs::file_size(file, ec);
      if (ec)
        throw InputError(file.string() + ": the weights file model.json names: " + ec.message());
      have += size;
    }
    if (have != need)
      bad(at + ": its weight files hold " + std::to_string(have) + " bytes, the listed float32 " +
          "weights need " + std::to_string(need) + " (truncated or not this model's weights?)");
  }
}

Tensor tfjs_input(const ir::Model& m, const Tensor& x) {
  Shape want{-1};
  want.insert(want.end(), m.input_shape.begin(), m.input_shape.end());
  const bool fits = x.dtype() == m.input_dtype && x.rank() == want.size() && x.dim(0) >= 1 &&
                    std::equal(want.begin() + 1, want.end(), x.shape().begin() + 1);
  if (!fits)
    throw InputError("input " + std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()) +
                     ": model " + m.name + " takes " + std::string(dtype_name(m.input_dtype)) +
                     " [B," + shape_str(m.input_shape).substr(1));
  if (m.input_dtype != DType::F32) return x;
  const std::int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor out(DType::F32, {n, h, w, c}, Layout::NHWC);
  const auto src = x.values<float>();
  auto dst = out.values<float>();
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t ch = 0; ch < c; ++ch)
      for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t xx = 0; xx < w; ++xx)
          dst[static_cast<std::size_t>(((b * h + y) * w + xx) * c + ch)] =
              src[static_cast<std::size_t>(((b * c + ch) * h + y) * w + xx)];
  return out;
}

Tensor tfjs_output_to_ir(const ir::Model& m, const std::string& layer, const float* values,
                         std::size_t count, std::int64_t batch) {
  const Plan plan = make_plan(m);
  auto it = plan.index.find(layer);
  if (it == plan.index.end()) throw InputError("model " + m.name + " has no layer " + layer);
  const Shape& s = plan.shapes[it->second];
  const Form f = plan.forms.at(layer);
  const std::int64_t per = shape_numel(s);
  if (batch < 1 || static_cast<std::int64_t>(count) != batch * per)
    throw InputError("layer " + layer + ": " + std::to_string(count) + " values for " +
                     std::to_string(batch) + " samples of " + shape_str(s));
  Shape full{batch};
  full.insert(full.end(), s.begin(), s.end());
  const Layout layout = full.size() == 4   ? Layout::NCHW
                        : full.size() == 3 ? Layout::NTC
                        : full.size() == 2 ? Layout::NC
                                           : Layout::Any;
  Tensor out(DType::F32, full, layout);
  auto dst = out.values<float>();
  if (f.kind == Form::Plain) {
    std::copy(values, values + count, dst.begin());
    return out;
  }
  // NHWC maps and HWC-ordered flat features both go back to CHW order per sample.
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t r = 0; r < per; ++r)
      dst[static_cast<std::size_t>(b * per + chw_index(f, r))] =
          values[static_cast<std::size_t>(b * per + r)];
  return out;
}

}  // namespace crossdl
