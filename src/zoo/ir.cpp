// The IR: op names, structural and shape checks, weight specs, the weight set and crossdl's own
// initialiser and random stream.
#include "crossdl/ir.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

#include "crossdl/status.h"

namespace crossdl::ir {

namespace {

struct OpEntry {
  Op op;
  std::string_view name;
};
constexpr std::array<OpEntry, 16> kOps = {{
    {Op::Conv2d, "Conv2d"},
    {Op::Dense, "Dense"},
    {Op::ReLU, "ReLU"},
    {Op::Tanh, "Tanh"},
    {Op::Sigmoid, "Sigmoid"},
    {Op::MaxPool2d, "MaxPool2d"},
    {Op::AvgPool2d, "AvgPool2d"},
    {Op::GlobalAvgPool, "GlobalAvgPool"},
    {Op::BatchNorm2d, "BatchNorm2d"},
    {Op::Add, "Add"},
    {Op::Flatten, "Flatten"},
    {Op::Softmax, "Softmax"},
    {Op::Embedding, "Embedding"},
    {Op::ImageToSequence, "ImageToSequence"},
    {Op::LSTM, "LSTM"},
    {Op::GRU, "GRU"},
}};

std::string where(const Layer& l) {
  return "layer " + l.name + " (" + std::string(op_name(l.op)) + ")";
}

[[noreturn]] void fail(const Layer& l, const std::string& what) {
  throw InputError(where(l) + ": " + what);
}

bool positive2(const std::int64_t (&v)[2]) {
  return v[0] > 0 && v[1] > 0;
}

// Output size of a sliding window along one axis (floor mode), or <= 0 when the window does not
// fit.
std::int64_t window_out(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t p) {
  const std::int64_t span = in + 2 * p - k;
  if (span < 0) return 0;
  return span / s + 1;
}

std::string window_str(const Layer& l) {
  return "kernel " + std::to_string(l.kernel[0]) + "x" + std::to_string(l.kernel[1]) + ", stride " +
         std::to_string(l.stride[0]) + "x" + std::to_string(l.stride[1]) + ", pad " +
         std::to_string(l.pad[0]) + "x" + std::to_string(l.pad[1]);
}

void check_window(const Layer& l, bool pool) {
  if (!positive2(l.kernel)) fail(l, "kernel must be positive, got " + window_str(l));
  if (!positive2(l.stride)) fail(l, "stride must be positive, got " + window_str(l));
  if (l.pad[0] < 0 || l.pad[1] < 0) fail(l, "padding must not be negative, got " + window_str(l));
  // PyTorch and ONNX runtimes reject pooling windows that could lie wholly in the padding.
  if (pool && (2 * l.pad[0] > l.kernel[0] || 2 * l.pad[1] > l.kernel[1]))
    fail(l, "padding must be at most half the kernel, got " + window_str(l));
}

Shape window_shape(const Layer& l, const Shape& in, std::int64_t channels) {
  const std::int64_t h = window_out(in[1], l.kernel[0], l.stride[0], l.pad[0]);
  const std::int64_t w = window_out(in[2], l.kernel[1], l.stride[1], l.pad[1]);
  if (h <= 0 || w <= 0)
    fail(l, "input " + shape_str(in) + " is smaller than the window (" + window_str(l) + ")");
  return {channels, h, w};
}

void expect_rank(const Layer& l, const Shape& in, std::size_t rank, const std::string& what) {
  if (in.size() != rank) fail(l, "expects " + what + ", got " + shape_str(in));
}

// Shapes and dtypes of all layer outputs; the common core of validate() and infer_shapes().
std::vector<Shape> infer(const Model& m) {
  if (m.input_shape.empty()) throw InputError("model " + m.name + ": the input shape is empty");
  for (std::int64_t d : m.input_shape)
    if (d <= 0)
      throw InputError("model " + m.name + ": input shape " + shape_str(m.input_shape) +
                       " has a non-positive dimension");
  if (m.input_dtype != DType::F32 && m.input_dtype != DType::I64)
    throw InputError("model " + m.name + ": input dtype must be f32 or i64, got " +
                     std::string(dtype_name(m.input_dtype)));
  if (m.layers.empty()) throw InputError("model " + m.name + ": has no layers");

  std::map<std::string, std::size_t, std::less<>> index;  // layer name -> position
  std::vector<Shape> shapes;
  shapes.reserve(m.layers.size());
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const Layer& l = m.layers[i];
    if (l.name.empty())
      throw InputError("model " + m.name + ": layer " + std::to_string(i) + " (" +
                       std::string(op_name(l.op)) + ") has no name");
    if (l.name == "input") fail(l, "the name 'input' is reserved for the model input");
    if (index.count(l.name) != 0) fail(l, "the layer name is used twice");

    const std::vector<std::string> ins = resolved_inputs(m, i);
    const std::size_t arity = l.op == Op::Add ? 2 : 1;
    if (ins.size() != arity)
      fail(l, "takes " + std::to_string(arity) + " input(s), got " + std::to_string(ins.size()));
    std::vector<Shape> in_shapes;
    bool from_model_input = false;
    for (const std::string& name : ins) {
      if (name == "input") {
        in_shapes.push_back(m.input_shape);
        from_model_input = true;
        continue;
      }
      auto it = index.find(name);
      if (it == index.end()) fail(l, "input '" + name + "' is not an earlier layer or 'input'");
      in_shapes.push_back(shapes[it->second]);
    }
    // Only token ids are int64, and only an Embedding can consume them.
    const bool int_input = from_model_input && m.input_dtype == DType::I64;
    if (l.op == Op::Embedding && !int_input)
      fail(l, "expects the int64 token ids of the model input");
    if (l.op != Op::Embedding && int_input)
      fail(l, "cannot take int64 token ids; start the model with an Embedding");

    const Shape& in = in_shapes[0];
    Shape out;
    switch (l.op) {
      case Op::Conv2d:
        if (l.out <= 0) fail(l, "needs a positive number of output channels");
        check_window(l, false);
        expect_rank(l, in, 3, "an image input [C,H,W]");
        out = window_shape(l, in, l.out);
        break;
      case Op::MaxPool2d:
      case Op::AvgPool2d:
        check_window(l, true);
        expect_rank(l, in, 3, "an image input [C,H,W]");
        out = window_shape(l, in, in[0]);
        break;
      case Op::GlobalAvgPool:
        expect_rank(l, in, 3, "an image input [C,H,W]");
        out = {in[0], 1, 1};
        break;
      case Op::BatchNorm2d:
        expect_rank(l, in, 3, "an image input [C,H,W]");
        if (!(l.eps > 0.0f)) fail(l, "eps must be positive");
        if (!(l.momentum >= 0.0f && l.momentum <= 1.0f)) fail(l, "momentum must be in [0,1]");
        out = in;
        break;
      case Op::Dense:
        if (l.out <= 0) fail(l, "needs a positive number of units");
        if (in.size() != 1)
          fail(l, "expects a flat input, got " + shape_str(in) + "; add a Flatten");
        out = {l.out};
        break;
      case Op::ReLU:
      case Op::Tanh:
      case Op::Sigmoid:
      case Op::Softmax:
        out = in;
        break;
      case Op::Add:
        if (in_shapes[0] != in_shapes[1])
          fail(l, "inputs '" + ins[0] + "' " + shape_str(in_shapes[0]) + " and '" + ins[1] + "' " +
                      shape_str(in_shapes[1]) + " differ in shape");
        out = in;
        break;
      case Op::Flatten:
        out = {shape_numel(in)};
        break;
      case Op::Embedding:
        if (l.vocab <= 0 || l.out <= 0) fail(l, "needs a positive vocabulary and dimension");
        expect_rank(l, in, 1, "token ids [T]");
        out = {in[0], l.out};
        break;
      case Op::ImageToSequence:
        expect_rank(l, in, 3, "an image input [C,H,W]");
        out = {in[1], in[0] * in[2]};
        break;
      case Op::LSTM:
      case Op::GRU:
        if (l.out <= 0) fail(l, "needs a positive hidden size");
        expect_rank(l, in, 2, "a sequence [T,F]; add an ImageToSequence or an Embedding");
        out = {l.out};
        break;
    }
    index.emplace(l.name, i);
    shapes.push_back(std::move(out));
  }
  return shapes;
}

}  // namespace

std::string_view op_name(Op op) {
  for (const OpEntry& e : kOps)
    if (e.op == op) return e.name;
  return "?";
}

bool op_from_name(std::string_view name, Op& out) {
  for (const OpEntry& e : kOps)
    if (e.name == name) {
      out = e.op;
      return true;
    }
  return false;
}

const Layer* Model::find(std::string_view layer) const {
  for (const Layer& l : layers)
    if (l.name == layer) return &l;
  return nullptr;
}

std::vector<std::string> resolved_inputs(const Model& m, std::size_t layer_index) {
  const Layer& l = m.layers.at(layer_index);
  if (!l.inputs.empty()) return l.inputs;
  if (layer_index == 0) return {"input"};
  return {m.layers[layer_index - 1].name};
}

std::vector<Shape> infer_shapes(const Model& m) {
  return infer(m);
}

void validate(const Model& m) {
  const std::vector<Shape> shapes = infer(m);
  const Layer& last = m.layers.back();
  if (m.num_classes <= 0) throw InputError("model " + m.name + ": num_classes must be positive");
  if (shapes.back() != Shape{m.num_classes})
    fail(last, "the last layer must give the logits [" + std::to_string(m.num_classes) + "], got " +
                   shape_str(shapes.back()));
}

std::vector<WeightSpec> weight_specs(const Model& m) {
  const std::vector<Shape> shapes = infer(m);
  std::map<std::string, std::size_t, std::less<>> index;
  std::vector<WeightSpec> specs;
  auto add = [&](const Layer& l, const char* param, Shape shape, Layout layout,
                 std::int64_t fan_in) {
    specs.push_back({l.name + "." + param, l.name, param, std::move(shape), layout, fan_in});
  };
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const Layer& l = m.layers[i];
    Shape in = m.input_shape;
    const std::string first = resolved_inputs(m, i)[0];
    if (first != "input") in = shapes[index.at(first)];
    index.emplace(l.name, i);
    switch (l.op) {
      case Op::Conv2d: {
        const std::int64_t fan_in = in[0] * l.kernel[0] * l.kernel[1];
        add(l, "weight", {l.out, in[0], l.kernel[0], l.kernel[1]}, Layout::OIHW, fan_in);
        if (l.bias) add(l, "bias", {l.out}, Layout::Any, fan_in);
        break;
      }
      case Op::Dense:
        add(l, "weight", {l.out, in[0]}, Layout::OI, in[0]);
        if (l.bias) add(l, "bias", {l.out}, Layout::Any, in[0]);
        break;
      case Op::BatchNorm2d:
        for (const char* p : {"weight", "bias", "running_mean", "running_var"})
          add(l, p, {in[0]}, Layout::Any, 0);
        break;
      case Op::Embedding:
        add(l, "weight", {l.vocab, l.out}, Layout::Any, 0);
        break;
      case Op::LSTM:
      case Op::GRU: {
        const std::int64_t gates = (l.op == Op::LSTM ? 4 : 3) * l.out;
        const Layout g = l.op == Op::LSTM ? Layout::GatesIFGO : Layout::GatesRZN;
        add(l, "weight_ih", {gates, in[1]}, g, l.out);
        add(l, "weight_hh", {gates, l.out}, g, l.out);
        add(l, "bias_ih", {gates}, g, l.out);
        add(l, "bias_hh", {gates}, g, l.out);
        break;
      }
      default:
        break;
    }
  }
  return specs;
}

}  // namespace crossdl::ir

namespace crossdl {

// ---- WeightSet
// -----------------------------------------------------------------------------------

void WeightSet::set(const std::string& name, Tensor t) {
  auto it = index_.find(name);
  if (it == index_.end()) {
    names_.push_back(name);
    index_.emplace(name, std::move(t));
  } else {
    it->second = std::move(t);
  }
}

const Tensor& WeightSet::at(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw InputError("weight set: no tensor named '" + name + "'");
  return it->second;
}

Tensor& WeightSet::at(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) throw InputError("weight set: no tensor named '" + name + "'");
  return it->second;
}

std::int64_t WeightSet::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : index_) n += t.numel();
  return n;
}

namespace {
void put_u64(std::vector<std::byte>& buf, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) buf.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xff));
}
void put_str(std::vector<std::byte>& buf, std::string_view s) {
  put_u64(buf, s.size());
  for (char c : s) buf.push_back(static_cast<std::byte>(c));
}
}  // namespace

std::string WeightSet::sha256() const {
  // Length-prefixed fields, so that no two different sets serialise to the same stream.
  std::size_t total = 0;
  for (const auto& [name, t] : index_) total += name.size() + t.nbytes() + 64 + 8 * t.rank();
  std::vector<std::byte> buf;
  buf.reserve(total);
  put_u64(buf, names_.size());
  for (const std::string& name : names_) {
    const Tensor& t = index_.at(name);
    put_str(buf, name);
    put_str(buf, dtype_name(t.dtype()));
    put_u64(buf, t.rank());
    for (std::int64_t d : t.shape()) put_u64(buf, static_cast<std::uint64_t>(d));
    put_u64(buf, t.nbytes());
    buf.insert(buf.end(), t.raw(), t.raw() + t.nbytes());
  }
  return sha256_hex(std::span<const std::byte>(buf));
}

bool WeightSet::identical(const WeightSet& other) const {
  if (names_ != other.names_) return false;
  for (const std::string& name : names_)
    if (!index_.at(name).identical(other.index_.at(name))) return false;
  return true;
}

void WeightSet::check_against(const ir::Model& m) const {
  for (const ir::WeightSpec& s : ir::weight_specs(m)) {
    auto it = index_.find(s.name);
    if (it == index_.end())
      throw InputError("weight set: model " + m.name + " needs '" + s.name + "' " +
                       shape_str(s.shape) + ", which is missing");
    if (it->second.shape() != s.shape)
      throw InputError("weight set: '" + s.name + "' has shape " + shape_str(it->second.shape()) +
                       ", model " + m.name + " needs " + shape_str(s.shape));
    if (it->second.dtype() != DType::F32)
      throw InputError("weight set: '" + s.name + "' is " +
                       std::string(dtype_name(it->second.dtype())) + ", expected f32");
  }
}

// ---- initialisation
// ------------------------------------------------------------------------------

WeightSet init_weights(const ir::Model& m, std::uint64_t seed) {
  ir::validate(m);
  Rng rng(seed);
  WeightSet ws;
  for (const ir::WeightSpec& s : ir::weight_specs(m)) {
    Tensor t(DType::F32, s.shape, s.layout);
    auto v = t.values<float>();
    const ir::Layer& l = *m.find(s.layer);
    auto fill_uniform = [&](double bound) {
      for (float& x : v) x = static_cast<float>(rng.uniform(-bound, bound));
    };
    switch (l.op) {
      case ir::Op::BatchNorm2d:
        // The constructor zero-fills: only the scale and the variance start at one.
        if (s.param == "weight" || s.param == "running_var") std::fill(v.begin(), v.end(), 1.0f);
        break;
      case ir::Op::Embedding:
        // PyTorch's nn.Embedding draws N(0,1) for every row; without padding_idx row 0 (the
        // padding id) is an ordinary row, so it is drawn like the others.
        for (float& x : v) x = static_cast<float>(rng.normal());
        break;
      default:
        // kaiming_uniform(a=sqrt(5)) gives bound sqrt(6/((1+5)*fan_in)) = 1/sqrt(fan_in), the
        // same bound PyTorch uses for biases and for every recurrent tensor (fan_in = hidden).
        fill_uniform(1.0 / std::sqrt(static_cast<double>(s.fan_in)));
        break;
    }
    ws.set(s.name, std::move(t));
  }
  return ws;
}

// ---- Rng
// -----------------------------------------------------------------------------------------

Rng::Rng(std::uint64_t seed) {
  std::uint64_t x = seed;
  for (std::uint64_t& s : s_) {
    x += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s = z ^ (z >> 31);
  }
}

std::uint64_t Rng::next_u64() {
  const std::uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = std::rotl(s_[3], 45);
  return result;
}

double Rng::uniform() {
  return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

double Rng::uniform(double lo, double hi) {
  const double r = lo + (hi - lo) * uniform();
  // Rounding can land exactly on hi; keep the interval half-open as documented.
  return r < hi ? r : std::nextafter(hi, lo);
}

double Rng::normal() {
  // One value per call (the sine half is dropped) keeps the state to the four words.
  const double u1 = 1.0 - uniform();  // (0, 1]: log() stays finite
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * 3.14159265358979323846 * u2);
}

std::uint64_t Rng::below(std::uint64_t n) {
  if (n == 0) throw std::invalid_argument("Rng::below(0): empty range");
  // Reject the lowest (2^64 mod n) values so that every residue is equally likely.
  const std::uint64_t threshold = (0 - n) % n;
  for (;;) {
    const std::uint64_t r = next_u64();
    if (r >= threshold) return r % n;
  }
}

}  // namespace crossdl
