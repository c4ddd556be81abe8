// The TensorFlow Lite writer (see crossdl/tflite_io.h for the conventions of the files it writes).
#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "crossdl/quant.h"
#include "crossdl/tflite_io.h"
#include "tflite_subset_generated.h"

namespace crossdl {
namespace {

namespace fb = crossdl::tflite_fb;

// How a layer's output is laid out in the file, relative to the IR's layout of it.
struct Form {
  enum Kind { Plain, Nhwc, FlatHwc } kind = Plain;
  std::int64_t c = 0, h = 0, w = 0;  // Nhwc / FlatHwc: the feature map's IR [C,H,W]
};

std::string where(const ir::Layer& l) {
  return "layer " + l.name + " (" + std::string(ir::op_name(l.op)) + ")";
}

// How TFLite pads a window: VALID (none), SAME (TensorFlow's rule: the total padding that keeps
// ceil(in/stride) outputs, the smaller half before), or neither, which needs an explicit PAD.
enum class PadKind { Valid, Same, Explicit };

PadKind pad_kind(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t p) {
  if (p == 0) return PadKind::Valid;
  const std::int64_t torch_out = (in + 2 * p - k) / s + 1;
  const std::int64_t same_out = (in + s - 1) / s;
  const std::int64_t total = std::max<std::int64_t>((same_out - 1) * s + k - in, 0);
  // Padding after the last window that no window reads makes no difference, so only the
  // padding before the first window and the output size must agree.
  return torch_out == same_out && total / 2 == p ? PadKind::Same : PadKind::Explicit;
}

PadKind window_pad(const ir::Layer& l, const Shape& in) {
  const PadKind h = pad_kind(in[1], l.kernel[0], l.stride[0], l.pad[0]);
  const PadKind w = pad_kind(in[2], l.kernel[1], l.stride[1], l.pad[1]);
  if (h == w) return h;
  // One axis VALID and the other SAME cannot be said with one padding mode.
  return PadKind::Explicit;
}

// Output shape of every layer and of the input, by name.
struct Shapes {
  std::map<std::string, Shape> of;
  explicit Shapes(const ir::Model& m) {
    const std::vector<Shape> s = ir::infer_shapes(m);
    of["input"] = m.input_shape;
    for (std::size_t i = 0; i < m.layers.size(); ++i) of[m.layers[i].name] = s[i];
  }
};

// The file layout of every layer's output, or the reason the model cannot be written.
Capability forms_of(const ir::Model& m, std::map<std::string, Form>& forms) {
  try {
    ir::validate(m);
  } catch (const std::exception& e) {
    return Capability::no(e.what());
  }
  const bool tokens = m.input_dtype == DType::I64 && m.input_shape.size() == 1 &&
                      !m.layers.empty() && m.layers[0].op == ir::Op::Embedding;
  if (!tokens && (m.input_dtype != DType::F32 || m.input_shape.size() != 3))
    return Capability::no(
        "crossdl's TFLite writer takes float images [C,H,W] or int64 tokens [T] into an "
        "Embedding; model input is " +
        std::string(dtype_name(m.input_dtype)) + " " + shape_str(m.input_shape));
  const Shapes shapes(m);
  forms.clear();
  forms["input"] =
      tokens ? Form{} : Form{Form::Nhwc, m.input_shape[0], m.input_shape[1], m.input_shape[2]};
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& l = m.layers[i];
    const std::vector<std::string> ins = ir::resolved_inputs(m, i);
    const Form in = forms.at(ins.at(0));
    const Shape& in_shape = shapes.of.at(ins.at(0));
    const Shape& out_shape = shapes.of.at(l.name);
    Form f = in;
    switch (l.op) {
      case ir::Op::Conv2d:
      case ir::Op::MaxPool2d:
      case ir::Op::AvgPool2d:
      case ir::Op::GlobalAvgPool:
      case ir::Op::BatchNorm2d:
        if (in.kind != Form::Nhwc)
          return Capability::no(where(l) + ": reads a tensor that is not a feature map");
        if ((l.op == ir::Op::MaxPool2d || l.op == ir::Op::AvgPool2d) &&
            window_pad(l, in_shape) == PadKind::Explicit)
          return Capability::no(
              where(l) + ": padding " + std::to_string(l.pad[0]) + "x" + std::to_string(l.pad[1]) +
              " is not TFLite's SAME padding for this input, and an explicit PAD before a pool "
              "would pad with zeros, which a max pool reads and an average pool counts");
        f = {Form::Nhwc, out_shape[0], out_shape[1], out_shape[2]};
        break;
      case ir::Op::ReLU:
      case ir::Op::Tanh:
      case ir::Op::Sigmoid:
        break;
      case ir::Op::Add: {
        const Form& other = forms.at(ins.at(1));
        if (other.kind != in.kind || other.c != in.c || other.h != in.h || other.w != in.w)
          return Capability::no(where(l) + ": its two inputs are laid out differently in NHWC");
        break;
      }
      case ir::Op::Flatten:
        if (in.kind == Form::Nhwc && in.h * in.w > 1)
          f = {Form::FlatHwc, in.c, in.h, in.w};
        else if (in.kind == Form::Nhwc)
          f = {Form::Plain, 0, 0, 0};
        break;
      case ir::Op::Dense:
        f = {Form::Plain, 0, 0, 0};
        break;
      case ir::Op::Softmax:
        if (in.kind == Form::Nhwc)
          return Capability::no(where(l) +
                                ": a softmax over a feature map's last IR axis (W) is not a "
                                "softmax over NHWC's last axis (C)");
        break;
      case ir::Op::Embedding:
        if (ins.at(0) != "input" || !tokens)
          return Capability::no(where(l) + ": reads something other than the token input");
        break;
      case ir::Op::ImageToSequence:
        if (in.kind != Form::Nhwc)
          return Capability::no(where(l) + ": reads a tensor that is not a feature map");
        f = Form{};
        break;
      case ir::Op::LSTM:
      case ir::Op::GRU:
        if (in.kind != Form::Plain || in_shape.size() != 2)
          return Capability::no(where(l) + ": reads a tensor that is not a sequence [T,F]");
        break;
    }
    forms[l.name] = f;
  }
  return Capability::yes();
}

std::vector<int> file_shape(const Form& f, const Shape& ir_shape) {
  if (f.kind == Form::Nhwc)
    return {1, static_cast<int>(f.h), static_cast<int>(f.w), static_cast<int>(f.c)};
  std::vector<int> s{1};
  for (auto d : ir_shape) s.push_back(static_cast<int>(d));
  return s;
}

class Builder {
 public:
  int activation(const std::string& name, std::vector<int> shape,
                 fb::TensorType type = fb::TensorType_FLOAT32) {
    return add_tensor(name, std::move(shape), type, empty_buffer());
  }
  // An int8 activation with crossdl's per-tensor parameters.
  int activation_q(const std::string& name, std::vector<int> shape, const quant::QParams& p) {
    const int t = add_tensor(name, std::move(shape), fb::TensorType_INT8, empty_buffer());
    tensors_[static_cast<std::size_t>(t)].q = &p;
    return t;
  }
  // A constant with quantization parameters (int8 weights per axis, int32 biases).
  template <class V>
  int constant_q(const std::string& name, std::vector<int> shape, fb::TensorType type,
                 const std::vector<V>& v, const quant::QParams& p) {
    const int t =
        add_tensor(name, std::move(shape), type, data_buffer(v.data(), v.size() * sizeof(V)));
    tensors_[static_cast<std::size_t>(t)].q = &p;
    return t;
  }
  int constant_f16(const std::string& name, std::vector<int> shape,
                   const std::vector<std::uint16_t>& v) {
    return add_tensor(name, std::move(shape), fb::TensorType_FLOAT16,
                      data_buffer(v.data(), v.size() * sizeof(std::uint16_t)));
  }
  int constant_f32(const std::string& name, std::vector<int> shape, const std::vector<float>& v) {
    return add_tensor(name, std::move(shape), fb::TensorType_FLOAT32,
                      data_buffer(v.data(), v.size() * sizeof(float)));
  }
  int constant_i32(const std::string& name, std::vector<int> shape, const std::vector<int>& v) {
    return add_tensor(name, std::move(shape), fb::TensorType_INT32,
                      data_buffer(v.data(), v.size() * sizeof(int)));
  }
  void op(fb::BuiltinOperator code, std::vector<int> ins, std::vector<int> outs,
          fb::BuiltinOptions type = fb::BuiltinOptions_NONE,
          flatbuffers::Offset<void> options = 0) {
    auto it = opcode_.find(code);
    if (it == opcode_.end()) {
      it = opcode_.emplace(code, static_cast<std::uint32_t>(codes_.size())).first;
      codes_.push_back(code);
    }
    ops_.push_back(fb::CreateOperator(b_, it->second, b_.CreateVector(ins), b_.CreateVector(outs),
                                      type, options));
  }
  flatbuffers::FlatBufferBuilder& fbb() { return b_; }

  std::vector<std::uint8_t> finish(const std::string& name, const std::vector<int>& inputs,
                                   const std::vector<int>& outputs) {
    std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
    for (const auto& t : tensors_) {
      flatbuffers::Offset<fb::QuantizationParameters> q = 0;
      if (t.q != nullptr) {
        std::vector<std::int64_t> zp(t.q->zero_point.begin(), t.q->zero_point.end());
        q = fb::CreateQuantizationParameters(b_, 0, 0, b_.CreateVector(t.q->scale),
                                             b_.CreateVector(zp), t.q->axis < 0 ? 0 : t.q->axis);
      }
      tensors.push_back(fb::CreateTensor(b_, b_.CreateVector(t.shape), t.type, t.buffer,
                                         b_.CreateString(t.name), q));
    }
    auto graph =
        fb::CreateSubGraph(b_, b_.CreateVector(tensors), b_.CreateVector(inputs),
                           b_.CreateVector(outputs), b_.CreateVector(ops_), b_.CreateString(name));
    std::vector<flatbuffers::Offset<fb::OperatorCode>> codes;
    for (auto c : codes_)
      // Every code crossdl emits is below 127, so the deprecated int8 field holds it exactly.
      codes.push_back(fb::CreateOperatorCode(b_, static_cast<std::int8_t>(c), 0, 1, c));
    auto model = fb::CreateModel(b_, 3, b_.CreateVector(codes), b_.CreateVector(&graph, 1),
                                 b_.CreateString("crossdl"), b_.CreateVector(buffers_));
    fb::FinishModelBuffer(b_, model);
    return {b_.GetBufferPointer(), b_.GetBufferPointer() + b_.GetSize()};
  }

 private:
  struct T {
    std::string name;
    std::vector<int> shape;
    fb::TensorType type;
    std::uint32_t buffer;
    const quant::QParams* q = nullptr;
  };
  std::uint32_t empty_buffer() {
    // Buffer 0 is the format's shared empty buffer; every activation gets its own empty one as
    // TensorFlow's converter writes them.
    if (buffers_.empty()) buffers_.push_back(fb::CreateBuffer(b_));
    buffers_.push_back(fb::CreateBuffer(b_));
    return static_cast<std::uint32_t>(buffers_.size() - 1);
  }
  std::uint32_t data_buffer(const void* p, std::size_t n) {
    if (buffers_.empty()) buffers_.push_back(fb::CreateBuffer(b_));
    b_.ForceVectorAlignment(n, 1, 16);
    auto v = b_.CreateVector(static_cast<const std::uint8_t*>(p), n);
    buffers_.push_back(fb::CreateBuffer(b_, v));
    return static_cast<std::uint32_t>(buffers_.size() - 1);
  }
  int add_tensor(const std::string& name, std::vector<int> shape, fb::TensorType type,
                 std::uint32_t buffer) {
    tensors_.push_back({name, std::move(shape), type, buffer, nullptr});
    return static_cast<int>(tensors_.size() - 1);
  }

  flatbuffers::FlatBufferBuilder b_{1 << 16};
  std::vector<T> tensors_;
  std::vector<flatbuffers::Offset<fb::Buffer>> buffers_;
  std::vector<flatbuffers::Offset<fb::Operator>> ops_;
  std::map<fb::BuiltinOperator, std::uint32_t> opcode_;
  std::vector<fb::BuiltinOperator> codes_;
};

// Conv OIHW -> OHWI.
// Conv OIHW -> OHWI, for float values or crossdl's int8 ones (same shape as w).
template <class V>
std::vector<V> ohwi_of(const Tensor& w, std::span<const V> src) {
  const std::int64_t o = w.dim(0), i = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  std::vector<V> out(src.size());
  for (std::int64_t a = 0; a < o; ++a)
    for (std::int64_t b = 0; b < i; ++b)
      for (std::int64_t y = 0; y < kh; ++y)
        for (std::int64_t x = 0; x < kw; ++x)
          out[((a * kh + y) * kw + x) * i + b] = src[((a * i + b) * kh + y) * kw + x];
  return out;
}
std::vector<float> ohwi(const Tensor& w) {
  return ohwi_of<float>(w, w.values<float>());
}

// A dense layer's [out, C*H*W] columns in the IR's CHW order, reordered to the HWC order in
// which the file's Flatten (a RESHAPE of NHWC) lists the features.
template <class V>
std::vector<V> columns_hwc(std::span<const V> src, std::int64_t out, std::int64_t c, std::int64_t h,
                           std::int64_t w) {
  const std::int64_t cols = c * h * w;
  std::vector<V> dst(src.size());
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t k = 0; k < c; ++k)
      for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t z = 0; z < w; ++z)
          dst[o * cols + (y * w + z) * c + k] = src[o * cols + (k * h + y) * w + z];
  return dst;
}

std::vector<float> values_of(const Tensor& t) {
  const auto v = t.values<float>();
  return {v.begin(), v.end()};
}

// Slices gate `g` (rows g*H .. g*H+H-1) out of a PyTorch recurrent weight [G*H, K] or bias [G*H].
std::vector<float> gate_rows(const Tensor& t, std::int64_t g, std::int64_t h) {
  const std::int64_t cols = t.rank() == 2 ? t.dim(1) : 1;
  const auto v = t.values<float>();
  return {v.begin() + g * h * cols, v.begin() + (g + 1) * h * cols};
}

// An LSTM or GRU layer unrolled over its T time steps into primitive ops, writing the last hidden
// state into tensor `y`. TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM would keep its state in variable
// tensors that persist across Invoke calls and do not follow a resized batch; GRU has no builtin.
void recurrent(Builder& b, const ir::Layer& l, int x, const Shape& in_shape, const WeightSet& w,
               int y) {
  auto& fbb = b.fbb();
  const bool lstm = l.op == ir::Op::LSTM;
  const int steps = static_cast<int>(in_shape[0]), feat = static_cast<int>(in_shape[1]);
  const int hid = static_cast<int>(l.out);
  const int gates = lstm ? 4 : 3;
  const Tensor& wih = w.at(l.name + ".weight_ih");
  const Tensor& whh = w.at(l.name + ".weight_hh");
  const Tensor& bih = w.at(l.name + ".bias_ih");
  const Tensor& bhh = w.at(l.name + ".bias_hh");
  const std::string p = l.name + "/";
  const std::vector<float> zeros(static_cast<std::size_t>(hid), 0.0f);
  const int zero_bias = b.constant_f32(p + "zero_bias", {hid}, zeros);
  const int zero_state = b.constant_f32(p + "zero_state", {1, hid}, zeros);
  std::vector<int> wi(gates), wh(gates), bi(gates), bh(gates);
  for (int g = 0; g < gates; ++g) {
    wi[g] = b.constant_f32(p + "w_i" + std::to_string(g), {hid, feat}, gate_rows(wih, g, hid));
    wh[g] = b.constant_f32(p + "w_h" + std::to_string(g), {hid, hid}, gate_rows(whh, g, hid));
    std::vector<float> bsum = gate_rows(bih, g, hid);
    const std::vector<float> bh_g = gate_rows(bhh, g, hid);
    // GRU's new-gate hidden bias sits inside r * (W_hn h + b_hn): it cannot be summed in.
    const bool separate = !lstm && g == 2;
    if (!separate)
      for (int k = 0; k < hid; ++k) bsum[k] += bh_g[k];
    bi[g] = b.constant_f32(p + "b_i" + std::to_string(g), {hid}, bsum);
    bh[g] = separate ? b.constant_f32(p + "b_hn", {hid}, bh_g) : zero_bias;
  }
  // The sequence [N,T,F] split into T steps [N,1,F], each reshaped to [N,F].
  std::vector<int> parts(steps);
  for (int t = 0; t < steps; ++t)
    parts[t] = b.activation(p + "x" + std::to_string(t), {1, 1, feat});
  const int axis = b.constant_i32(p + "split_axis", {}, {1});
  b.op(fb::BuiltinOperator_SPLIT, {axis, x}, parts, fb::BuiltinOptions_SplitOptions,
       fb::CreateSplitOptions(fbb, steps).Union());
  const int flat = b.constant_i32(p + "step_shape", {2}, {-1, feat});

  int h = zero_state, c = zero_state;
  for (int t = 0; t < steps; ++t) {
    const std::string q = p + "t" + std::to_string(t) + "/";
    auto tensor = [&](const std::string& name) { return b.activation(q + name, {1, hid}); };
    auto fc = [&](int in, int weights, int bias, const std::string& name) {
      const int out = tensor(name);
      b.op(fb::BuiltinOperator_FULLY_CONNECTED, {in, weights, bias}, {out},
           fb::BuiltinOptions_FullyConnectedOptions, fb::CreateFullyConnectedOptions(fbb).Union());
      return out;
    };
    auto binary = [&](fb::BuiltinOperator op, int a, int bb, const std::string& name,
                      int out = -1) {
      if (out < 0) out = tensor(name);
      if (op == fb::BuiltinOperator_ADD)
        b.op(op, {a, bb}, {out}, fb::BuiltinOptions_AddOptions, fb::CreateAddOptions(fbb).Union());
      else if (op == fb::BuiltinOperator_MUL)
        b.op(op, {a, bb}, {out}, fb::BuiltinOptions_MulOptions, fb::CreateMulOptions(fbb).Union());
      else
        b.op(op, {a, bb}, {out}, fb::BuiltinOptions_SubOptions, fb::CreateSubOptions(fbb).Union());
      return out;
    };
    auto unary = [&](fb::BuiltinOperator op, int a, const std::string& name) {
      const int out = tensor(name);
      b.op(op, {a}, {out});
      return out;
    };
    const bool last = t + 1 == steps;
    const int xt = b.activation(q + "x", {1, feat});
    b.op(fb::BuiltinOperator_RESHAPE, {parts[t], flat}, {xt}, fb::BuiltinOptions_ReshapeOptions,
         fb::CreateReshapeOptions(fbb, fbb.CreateVector(std::vector<int>{-1, feat})).Union());
    if (lstm) {
      int act[4];
      const fb::BuiltinOperator fn[4] = {fb::BuiltinOperator_LOGISTIC, fb::BuiltinOperator_LOGISTIC,
                                         fb::BuiltinOperator_TANH, fb::BuiltinOperator_LOGISTIC};
      const char* names[4] = {"i", "f", "g", "o"};
      for (int g = 0; g < 4; ++g) {
        const int sum =
            binary(fb::BuiltinOperator_ADD, fc(xt, wi[g], bi[g], names[g] + std::string("x")),
                   fc(h, wh[g], bh[g], names[g] + std::string("h")), names[g] + std::string("s"));
        act[g] = unary(fn[g], sum, names[g]);
      }
      c = binary(fb::BuiltinOperator_ADD, binary(fb::BuiltinOperator_MUL, act[1], c, "fc"),
                 binary(fb::BuiltinOperator_MUL, act[0], act[2], "ig"), "c");
      h = binary(fb::BuiltinOperator_MUL, act[3], unary(fb::BuiltinOperator_TANH, c, "tanh_c"), "h",
                 last ? y : -1);
    } else {
      auto gate = [&](int g, const char* name) {
        return unary(fb::BuiltinOperator_LOGISTIC,
                     binary(fb::BuiltinOperator_ADD, fc(xt, wi[g], bi[g], name + std::string("x")),
                            fc(h, wh[g], bh[g], name + std::string("h")), name + std::string("s")),
                     name);
      };
      const int r = gate(0, "r"), z = gate(1, "z");
      const int hn = binary(fb::BuiltinOperator_MUL, r, fc(h, wh[2], bh[2], "nh"), "rnh");
      const int n =
          unary(fb::BuiltinOperator_TANH,
                binary(fb::BuiltinOperator_ADD, fc(xt, wi[2], bi[2], "nx"), hn, "ns"), "n");
      // h' = (1 - z) * n + z * h = n + z * (h - n)
      h = binary(
          fb::BuiltinOperator_ADD, n,
          binary(fb::BuiltinOperator_MUL, z, binary(fb::BuiltinOperator_SUB, h, n, "hn"), "zhn"),
          "h", last ? y : -1);
    }
  }
}

}  // namespace

void tflite_verify_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(f)),
                                std::istreambuf_iterator<char>());
  if (bytes.size() < 8)
    throw InputError(input_where(path, static_cast<long long>(bytes.size()),
                                 "truncated TFLite file (shorter than 8 bytes)"));
  if (!fb::ModelBufferHasIdentifier(bytes.data()))
    throw InputError(input_where(path, 4, "not a TFLite file (file identifier is not TFL3)"));
  flatbuffers::Verifier v(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  if (!fb::VerifyModelBuffer(v))
    throw InputError(path + ": damaged TFLite file (" + std::to_string(bytes.size()) +
                     " bytes): its flatbuffer tables point outside the file or are malformed");
}

Capability tflite_expressible(const ir::Model& m) {
  std::map<std::string, Form> forms;
  return forms_of(m, forms);
}

Tensor nchw_to_nhwc(const Tensor& x) {
  if (x.dtype() != DType::F32 || x.rank() != 4)
    throw InputError("input batch: expected F32 [N,C,H,W], got " +
                     std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()));
  const std::int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor out(DType::F32, {n, h, w, c}, Layout::NHWC);
  const auto src = x.values<float>();
  auto dst = out.values<float>();
  for (std::int64_t a = 0; a < n; ++a)
    for (std::int64_t k = 0; k < c; ++k)
      for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t z = 0; z < w; ++z)
          dst[((a * h + y) * w + z) * c + k] = src[((a * c + k) * h + y) * w + z];
  return out;
}

Tensor tflite_input(const ir::Model& m, const Tensor& x) {
  Shape want{x.rank() > 0 ? x.dim(0) : 0};
  want.insert(want.end(), m.input_shape.begin(), m.input_shape.end());
  if (x.dtype() != m.input_dtype || x.shape() != want || x.dim(0) < 1)
    throw InputError("input batch " + std::string(dtype_name(x.dtype())) + " " +
                     shape_str(x.shape()) + " does not fit model " + m.name + " (expects " +
                     std::string(dtype_name(m.input_dtype)) + " [N," +
                     shape_str(m.input_shape).substr(1));
  return m.input_dtype == DType::I64 ? x : nchw_to_nhwc(x);
}

TfliteOutputLayout tflite_output_layout(const ir::Model& m, const std::string& layer) {
  std::map<std::string, Form> forms;
  if (Capability c = forms_of(m, forms); !c.ok) throw InputError(c.why);
  if (m.find(layer) == nullptr) throw InputError("model " + m.name + " has no layer " + layer);
  const Form& f = forms.at(layer);
  TfliteOutputLayout o;
  o.layer = layer;
  o.sample = Shapes(m).of.at(layer);
  o.kind = f.kind == Form::Nhwc      ? TfliteOutputLayout::Nhwc
           : f.kind == Form::FlatHwc ? TfliteOutputLayout::FlatHwc
                                     : TfliteOutputLayout::Plain;
  o.c = f.c;
  o.h = f.h;
  o.w = f.w;
  return o;
}

Tensor tflite_output_to_ir(const TfliteOutputLayout& o, const float* values, std::size_t count,
                           std::int64_t batch) {
  if (static_cast<std::int64_t>(count) != batch * shape_numel(o.sample))
    throw InputError("output " + o.layer + ": " + std::to_string(count) + " values, expected " +
                     std::to_string(batch) + " x " + shape_str(o.sample));
  Shape full{batch};
  full.insert(full.end(), o.sample.begin(), o.sample.end());
  Tensor out(DType::F32, full, o.kind == TfliteOutputLayout::Nhwc ? Layout::NCHW : Layout::Any);
  auto dst = out.values<float>();
  if (o.kind == TfliteOutputLayout::Plain) {
    std::copy(values, values + count, dst.begin());
    return out;
  }
  // Both NHWC maps and HWC-ordered flat features go back to CHW order per sample.
  const std::int64_t c = o.c, h = o.h, w = o.w, per = c * h * w;
  for (std::int64_t a = 0; a < batch; ++a)
    for (std::int64_t k = 0; k < c; ++k)
      for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t z = 0; z < w; ++z)
          dst[a * per + (k * h + y) * w + z] = values[a * per + (y * w + z) * c + k];
  if (o.kind == TfliteOutputLayout::FlatHwc) out.set_layout(Layout::NC);
  return out;
}

Capability tflite_supports_precision(const std::string& runtime, const quant::QuantOptions& q) {
  switch (q.scheme) {
    case quant::Scheme::Int8Static:
    case quant::Scheme::FP16:
      return Capability::yes();
    case quant::Scheme::BF16:
      return Capability::no(runtime + ": TFLite has no bfloat16 tensors");
    case quant::Scheme::Int8Dynamic:
      return Capability::no(runtime +
                            ": crossdl does not write TFLite's dynamic-range form yet (int8 "
                            "weights with float activations)");
    case quant::Scheme::W8:
    case quant::Scheme::W16:
      return Capability::no(runtime + ": affine uint8/uint16 weight-only storage is TF.js' format");
  }
  return Capability::no(runtime + ": unknown scheme");
}

TfliteFile tflite_write(const std::string& path, const ir::Model& m, const WeightSet& given,
                        const TfliteWriteOptions& opt) {
  std::map<std::string, Form> forms;
  if (Capability c = forms_of(m, forms); !c.ok) throw InputError(c.why);
  given.check_against(m);
  const Shapes shapes(m);
  const quant::QuantModel* q = opt.quant;
  const bool int8 = q != nullptr && q->options.scheme == quant::Scheme::Int8Static;
  const bool half = q != nullptr && q->options.scheme == quant::Scheme::FP16;
  // fp16: every weight as the fp16 model holds it (rounded), BatchNorm kept apart as MUL+ADD of
  // constants derived from the rounded parameters: folding it first would round other numbers
  // than crossdl's fp16 model (and every other runtime) holds.
  const WeightSet w = half ? quant::dequantized_weights(*q) : given;
  if (q != nullptr && !int8 && !half)
    throw InputError("tflite_write: crossdl writes int8-static and fp16 TFLite files, not " +
                     std::string(quant::scheme_name(q->options.scheme)));
  // int8 follows the quantized model's fusion (its ReLUs have no quantized output of their own),
  // whether or not layer outputs are exposed.
  const bool fuse = !opt.layer_outputs || int8;
  const std::size_t n = m.layers.size();

  std::map<std::string, int> readers;
  std::vector<std::vector<std::string>> ins(n);
  for (std::size_t i = 0; i < n; ++i) {
    ins[i] = ir::resolved_inputs(m, i);
    for (const auto& s : ins[i]) ++readers[s];
  }
  // Whether layer i+1 exists, has op `op`, and is the only reader of layer i's output.
  auto next_is = [&](std::size_t i, ir::Op op) {
    return i + 1 < n && m.layers[i + 1].op == op && ins[i + 1].at(0) == m.layers[i].name &&
           readers[m.layers[i].name] == 1;
  };

  Builder b;
  TfliteFile file;
  std::map<std::string, int> tensor_of;  // IR output -> tensor index
  bool folded_bn = false, bn_muladd = false, fused_relu = false, explicit_pad = false,
       permuted = false, sequence_note = false, unrolled = false;
  auto& fbb = b.fbb();
  const Form& in_form = forms.at("input");
  const int input =
      b.activation("input", file_shape(in_form, m.input_shape),
                   m.input_dtype == DType::I64 ? fb::TensorType_INT64 : fb::TensorType_FLOAT32);
  tensor_of["input"] = input;
  if (int8) {
    // Float in, float out: QUANTIZE after the input, DEQUANTIZE before each graph output.
    const int qin =
        b.activation_q("input/int8", file_shape(in_form, m.input_shape), q->output_params("input"));
    b.op(fb::BuiltinOperator_QUANTIZE, {input}, {qin});
    tensor_of["input"] = qin;
  }

  auto out_tensor = [&](const std::string& layer) {
    const std::vector<int> shape = file_shape(forms.at(layer), shapes.of.at(layer));
    const int t = int8 ? b.activation_q(layer + "/int8", shape, q->output_params(layer))
                       : b.activation(layer, shape);
    tensor_of[layer] = t;
    file.tensor_layer[t] = layer;
    return t;
  };
  // The activation to fuse after layer i (advancing i past a fused ReLU).
  auto fused_activation = [&](std::size_t& i) {
    const bool fused =
        int8 ? q->find(m.layers[i].name) != nullptr && q->find(m.layers[i].name)->fused_relu
             : fuse && next_is(i, ir::Op::ReLU);
    if (fused) {
      ++i;
      fused_relu = true;
      return fb::ActivationFunctionType_RELU;
    }
    return fb::ActivationFunctionType_NONE;
  };
  // A float weight: as is, or (fp16) stored in half precision with the DEQUANTIZE that gives
  // the float tensor once, before the first inference.
  auto weight_f32 = [&](const std::string& name, std::vector<int> shape,
                        const std::vector<float>& v) {
    if (!half) return b.constant_f32(name, std::move(shape), v);
    std::vector<std::uint16_t> bits;
    bits.reserve(v.size());
    for (float x : v) bits.push_back(quant::fp16_bits(x));
    const int h = b.constant_f16(name + "/fp16", shape, bits);
    const int f = b.activation(name, std::move(shape));
    b.op(fb::BuiltinOperator_DEQUANTIZE, {h}, {f});
    return f;
  };

  for (std::size_t i = 0; i < n; ++i) {
    const ir::Layer& l = m.layers[i];
    if (int8 && (l.op == ir::Op::Tanh || l.op == ir::Op::Sigmoid || l.op == ir::Op::Softmax ||
                 l.op == ir::Op::Embedding || l.op == ir::Op::LSTM || l.op == ir::Op::GRU ||
                 l.op == ir::Op::ImageToSequence || l.op == ir::Op::BatchNorm2d))
      throw InputError(where(l) + ": crossdl's int8 TFLite writer covers the image ops only");
    const int x = tensor_of.at(ins[i].at(0));
    const Shape& in_shape = shapes.of.at(ins[i].at(0));
    switch (l.op) {
      case ir::Op::Conv2d: {
        const Tensor& wt = w.at(l.name + ".weight");
        std::vector<float> kernel = ohwi(wt);
        std::vector<float> bias(static_cast<std::size_t>(l.out), 0.0f);
        if (l.bias) bias = values_of(w.at(l.name + ".bias"));
        if (fuse && !half && next_is(i, ir::Op::BatchNorm2d)) {
          // y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta, per output channel.
          const ir::Layer& bn = m.layers[++i];
          const auto g = w.at(bn.name + ".weight").values<float>();
          const auto be = w.at(bn.name + ".bias").values<float>();
          const auto mu = w.at(bn.name + ".running_mean").values<float>();
          const auto var = w.at(bn.name + ".running_var").values<float>();
          const std::size_t per = kernel.size() / static_cast<std::size_t>(l.out);
          for (std::size_t o = 0; o < static_cast<std::size_t>(l.out); ++o) {
            const float s = g[o] / std::sqrt(var[o] + bn.eps);
            for (std::size_t k = 0; k < per; ++k) kernel[o * per + k] *= s;
            bias[o] = (bias[o] - mu[o]) * s + be[o];
          }
          folded_bn = true;
        }
        int src = x;
        fb::Padding padding = fb::Padding_VALID;
        switch (window_pad(l, in_shape)) {
          case PadKind::Valid:
            break;
          case PadKind::Same:
            padding = fb::Padding_SAME;
            break;
          case PadKind::Explicit: {
            const int ph = static_cast<int>(l.pad[0]), pw = static_cast<int>(l.pad[1]);
            const int pads =
                b.constant_i32(l.name + "/paddings", {4, 2}, {0, 0, ph, ph, pw, pw, 0, 0});
            const std::vector<int> pshape = {1, static_cast<int>(in_shape[1]) + 2 * ph,
                                             static_cast<int>(in_shape[2]) + 2 * pw,
                                             static_cast<int>(in_shape[0])};
            // int8: PAD fills with the tensor's zero point, the quantized 0.0.
            src = int8 ? b.activation_q(l.name + "/padded", pshape, q->output_params(ins[i].at(0)))
                       : b.activation(l.name + "/padded", pshape);
            b.op(fb::BuiltinOperator_PAD, {x, pads}, {src}, fb::BuiltinOptions_PadOptions,
                 fb::CreatePadOptions(fbb).Union());
            explicit_pad = true;
            break;
          }
        }
        const std::vector<int> kshape = {static_cast<int>(wt.dim(0)), static_cast<int>(wt.dim(2)),
                                         static_cast<int>(wt.dim(3)), static_cast<int>(wt.dim(1))};
        int kt = 0, bt = 0;
        if (int8) {
          const std::string wn = l.name + ".weight", bn = l.name + ".bias";
          kt = b.constant_q(wn, kshape, fb::TensorType_INT8,
                            ohwi_of<std::int8_t>(wt, q->weight_q.at(wn)), q->weight_params.at(wn));
          bt = b.constant_q(bn, {static_cast<int>(l.out)}, fb::TensorType_INT32, q->bias_q.at(bn),
                            q->bias_params.at(bn));
        } else {
          kt = weight_f32(l.name + ".weight", kshape, kernel);
          bt = weight_f32(l.name + ".bias", {static_cast<int>(l.out)}, bias);
        }
        const auto act = fused_activation(i);
        const int y = out_tensor(m.layers[i].name);
        b.op(fb::BuiltinOperator_CONV_2D, {src, kt, bt}, {y}, fb::BuiltinOptions_Conv2DOptions,
             fb::CreateConv2DOptions(fbb, padding, static_cast<int>(l.stride[1]),
                                     static_cast<int>(l.stride[0]), act)
                 .Union());
        break;
      }
      case ir::Op::BatchNorm2d: {
        const auto g = w.at(l.name + ".weight").values<float>();
        const auto be = w.at(l.name + ".bias").values<float>();
        const auto mu = w.at(l.name + ".running_mean").values<float>();
        const auto var = w.at(l.name + ".running_var").values<float>();
        std::vector<float> scale(g.size()), shift(g.size());
        for (std::size_t c = 0; c < g.size(); ++c) {
          scale[c] = g[c] / std::sqrt(var[c] + l.eps);
          shift[c] = be[c] - mu[c] * scale[c];
        }
        bn_muladd = true;
        const int cc = static_cast<int>(g.size());
        const int st = b.constant_f32(l.name + "/scale", {1, 1, 1, cc}, scale);
        const int sh = b.constant_f32(l.name + "/shift", {1, 1, 1, cc}, shift);
        const int scaled =
            b.activation(l.name + "/scaled", file_shape(forms.at(l.name), shapes.of.at(l.name)));
        b.op(fb::BuiltinOperator_MUL, {x, st}, {scaled}, fb::BuiltinOptions_MulOptions,
             fb::CreateMulOptions(fbb).Union());
        const auto act = fused_activation(i);
        const int y = out_tensor(m.layers[i].name);
        b.op(fb::BuiltinOperator_ADD, {scaled, sh}, {y}, fb::BuiltinOptions_AddOptions,
             fb::CreateAddOptions(fbb, act).Union());
        break;
      }
      case ir::Op::ReLU:
        b.op(fb::BuiltinOperator_RELU, {x}, {out_tensor(l.name)});
        break;
      case ir::Op::Tanh:
        b.op(fb::BuiltinOperator_TANH, {x}, {out_tensor(l.name)});
        break;
      case ir::Op::Sigmoid:
        b.op(fb::BuiltinOperator_LOGISTIC, {x}, {out_tensor(l.name)});
        break;
      case ir::Op::MaxPool2d:
      case ir::Op::AvgPool2d: {
        const fb::Padding padding =
            window_pad(l, in_shape) == PadKind::Same ? fb::Padding_SAME : fb::Padding_VALID;
        const int y = out_tensor(l.name);
        b.op(l.op == ir::Op::MaxPool2d ? fb::BuiltinOperator_MAX_POOL_2D
                                       : fb::BuiltinOperator_AVERAGE_POOL_2D,
             {x}, {y}, fb::BuiltinOptions_Pool2DOptions,
             fb::CreatePool2DOptions(fbb, padding, static_cast<int>(l.stride[1]),
                                     static_cast<int>(l.stride[0]), static_cast<int>(l.kernel[1]),
                                     static_cast<int>(l.kernel[0]))
                 .Union());
        break;
      }
      case ir::Op::GlobalAvgPool: {
        const int y = out_tensor(l.name);
        b.op(fb::BuiltinOperator_AVERAGE_POOL_2D, {x}, {y}, fb::BuiltinOptions_Pool2DOptions,
             fb::CreatePool2DOptions(fbb, fb::Padding_VALID, 1, 1, static_cast<int>(in_shape[2]),
                                     static_cast<int>(in_shape[1]))
                 .Union());
        break;
      }
      case ir::Op::Add: {
        const int x2 = tensor_of.at(ins[i].at(1));
        const auto act = fused_activation(i);
        const int y = out_tensor(m.layers[i].name);
        b.op(fb::BuiltinOperator_ADD, {x, x2}, {y}, fb::BuiltinOptions_AddOptions,
             fb::CreateAddOptions(fbb, act).Union());
        break;
      }
      case ir::Op::Flatten: {
        const int f = static_cast<int>(shape_numel(in_shape));
        const int st = b.constant_i32(l.name + "/shape", {2}, {-1, f});
        const int y = out_tensor(l.name);
        b.op(fb::BuiltinOperator_RESHAPE, {x, st}, {y}, fb::BuiltinOptions_ReshapeOptions,
             fb::CreateReshapeOptions(fbb, fbb.CreateVector(std::vector<int>{-1, f})).Union());
        break;
      }
      case ir::Op::Dense: {
        const Tensor& wt = w.at(l.name + ".weight");
        std::vector<float> weights = values_of(wt);
        const Form& in = forms.at(ins[i].at(0));
        if (in.kind != Form::Plain && in.h * in.w > 1) {
          weights = columns_hwc<float>(wt.values<float>(), wt.dim(0), in.c, in.h, in.w);
          permuted = true;
        }
        std::vector<float> bias(static_cast<std::size_t>(l.out), 0.0f);
        if (l.bias) bias = values_of(w.at(l.name + ".bias"));
        const std::vector<int> wshape = {static_cast<int>(wt.dim(0)), static_cast<int>(wt.dim(1))};
        int wtn = 0, bt = 0;
        if (int8) {
          const std::string wn = l.name + ".weight", bn = l.name + ".bias";
          std::vector<std::int8_t> wq = q->weight_q.at(wn);
          if (in.kind != Form::Plain && in.h * in.w > 1)
            wq = columns_hwc<std::int8_t>(wq, wt.dim(0), in.c, in.h, in.w);
          wtn = b.constant_q(wn, wshape, fb::TensorType_INT8, wq, q->weight_params.at(wn));
          bt = b.constant_q(bn, {static_cast<int>(l.out)}, fb::TensorType_INT32, q->bias_q.at(bn),
                            q->bias_params.at(bn));
        } else {
          wtn = weight_f32(l.name + ".weight", wshape, weights);
          bt = weight_f32(l.name + ".bias", {static_cast<int>(l.out)}, bias);
        }
        const auto act = fused_activation(i);
        const int y = out_tensor(m.layers[i].name);
        b.op(fb::BuiltinOperator_FULLY_CONNECTED, {x, wtn, bt}, {y},
             fb::BuiltinOptions_FullyConnectedOptions,
             fb::CreateFullyConnectedOptions(fbb, act).Union());
        break;
      }
      case ir::Op::Embedding: {
        const Tensor& e = w.at(l.name + ".weight");
        const int et =
            weight_f32(l.name + ".weight", {static_cast<int>(e.dim(0)), static_cast<int>(e.dim(1))},
                       values_of(e));
        const int y = out_tensor(l.name);
        b.op(fb::BuiltinOperator_GATHER, {et, x}, {y}, fb::BuiltinOptions_GatherOptions,
             fb::CreateGatherOptions(fbb, 0).Union());
        break;
      }
      case ir::Op::ImageToSequence: {
        // IR [N,C,H,W] -> [N,H,C*W]: from NHWC, rows are already outermost; each row's features
        // must be listed channel by channel, so W and C swap first (nothing to swap for C=1).
        const int c = static_cast<int>(in_shape[0]), h = static_cast<int>(in_shape[1]),
                  wd = static_cast<int>(in_shape[2]);
        int src = x;
        if (c > 1) {
          const int perm = b.constant_i32(l.name + "/perm", {4}, {0, 1, 3, 2});
          src = b.activation(l.name + "/nhcw", {1, h, c, wd});
          b.op(fb::BuiltinOperator_TRANSPOSE, {x, perm}, {src}, fb::BuiltinOptions_TransposeOptions,
               fb::CreateTransposeOptions(fbb).Union());
        }
        const int st = b.constant_i32(l.name + "/shape", {3}, {-1, h, c * wd});
        const int y = out_tensor(l.name);
        b.op(fb::BuiltinOperator_RESHAPE, {src, st}, {y}, fb::BuiltinOptions_ReshapeOptions,
             fb::CreateReshapeOptions(fbb, fbb.CreateVector(std::vector<int>{-1, h, c * wd}))
                 .Union());
        sequence_note = true;
        break;
      }
      case ir::Op::LSTM:
      case ir::Op::GRU: {
        recurrent(b, l, x, in_shape, w, out_tensor(l.name));
        unrolled = true;
        break;
      }
      case ir::Op::Softmax: {
        const int y = out_tensor(l.name);
        b.op(fb::BuiltinOperator_SOFTMAX, {x}, {y}, fb::BuiltinOptions_SoftmaxOptions,
             fb::CreateSoftmaxOptions(fbb, 1.0f).Union());
        break;
      }
      default:
        throw InputError(where(l) + ": not expressible in TFLite by crossdl");
    }
  }

  std::vector<int> outputs;
  if (int8) {
    // Each graph output is the DEQUANTIZE of a quantized output, named after its layer; extra
    // DEQUANTIZE ops change nothing in the integer graph they read.
    std::vector<std::string> exposed;
    if (opt.layer_outputs)
      for (const auto& l : m.layers)
        if (quant::quant_output(*q, m, l.name)) exposed.push_back(l.name);
    const std::string last = m.layers.back().name;
    if (std::find(exposed.begin(), exposed.end(), last) == exposed.end()) exposed.push_back(last);
    file.tensor_layer.clear();
    for (const auto& name : exposed) {
      const int f = b.activation(name, file_shape(forms.at(name), shapes.of.at(name)));
      b.op(fb::BuiltinOperator_DEQUANTIZE, {tensor_of.at(name)}, {f});
      file.tensor_layer[f] = name;
      outputs.push_back(f);
      file.outputs.push_back(name);
    }
  } else if (opt.layer_outputs) {
    for (const auto& l : m.layers) {
      const int t = tensor_of.at(l.name);
      if (std::find(outputs.begin(), outputs.end(), t) == outputs.end()) {
        outputs.push_back(t);
        file.outputs.push_back(l.name);
      }
    }
  } else {
    outputs.push_back(tensor_of.at(m.layers.back().name));
    file.outputs.push_back(m.layers.back().name);
  }
  const std::vector<std::uint8_t> bytes = b.finish(m.name, {input}, outputs);

  std::error_code ec;
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw InputError(path + ": cannot open for writing");
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) throw InputError(path + ": write failed");
  file.path = path;
  file.bytes = bytes.size();

  std::string conv = m.input_dtype == DType::I64 ? "int64 token input as is"
                                                 : "input NCHW->NHWC (transposed by the runner)";
  for (const auto& l : m.layers)
    if (l.op == ir::Op::Conv2d) {
      conv += "; conv OIHW->OHWI";
      break;
    }
  if (permuted) conv += "; dense after flatten: inputs CHW->HWC";
  if (folded_bn) conv += "; BatchNorm2d folded into the preceding conv's weights and bias";
  if (bn_muladd)
    conv += "; BatchNorm2d as MUL+ADD (scale gamma/sqrt(var+eps), shift beta-mean*scale)";
  if (fused_relu) conv += "; ReLU fused into conv/dense/add";
  if (explicit_pad) conv += "; conv padding that is not SAME as an explicit PAD";
  for (const auto& l : m.layers)
    if (l.op == ir::Op::GlobalAvgPool) {
      conv += "; global average pool as AVERAGE_POOL_2D over HxW";
      break;
    }
  if (sequence_note)
    conv += "; image rows to sequence: NHWC -> [N,H,C*W] (channels before columns)";
  if (unrolled)
    conv +=
        "; LSTM/GRU unrolled over time into FULLY_CONNECTED/ADD/MUL/LOGISTIC/TANH per step and "
        "gate (PyTorch gate order kept; b_ih+b_hh summed into the input projection, GRU's b_hn "
        "kept inside r*(W_hn h + b_hn)); only the last hidden state is computed";
  if (opt.layer_outputs)
    conv += int8 ? "; every quantized output a graph output (DEQUANTIZE)"
                 : "; every layer output a graph output";
  if (int8)
    conv +=
        "; full-integer int8 (per-axis int8 weights, int32 biases, QUANTIZE at the float "
        "input, DEQUANTIZE at each float output)";
  if (half) conv += "; fp16 weights with DEQUANTIZE to float (computed in fp32)";
  file.conversions = conv;
  return file;
}

}  // namespace crossdl
