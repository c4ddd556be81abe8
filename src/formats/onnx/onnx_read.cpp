// Reads an ONNX file back into an IR model and a weight set.
//
// Files written by onnx_write() come back exactly (same model, bit-identical weights in the same
// order with their declared layouts). Other files are read when they use the operators below in
// the forms crossdl's IR can express; anything else is refused with the file, the node and why.
//
// The reader walks the nodes in order and keeps, for every ONNX tensor, the IR tensor it carries
// and in what form (plain, time-major sequence, transposed image awaiting its reshape, an RNN
// state with its leading direction axis, or a shape computation), so that helper nodes fold into
// their layer. Exporters' habits are absorbed rather than refused: weights in Constant nodes,
// biases as separate Adds, Dropout/Identity and zero Pads, SAME padding that is symmetric, ceil
// mode where it equals floor mode, and zero initial RNN states sized from Shape/Expand chains.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "crossdl/onnx_io.h"
#include "crossdl/status.h"
#include "onnx_common.h"

namespace crossdl {

namespace {

using namespace onnx_detail;
static_assert(std::endian::native == std::endian::little,
              "ONNX raw_data is little-endian; this reader copies native bytes");

constexpr std::string_view kSupported =
    "Conv, Gemm, MatMul(+Add), Relu, Tanh, Sigmoid, MaxPool, AveragePool, GlobalAveragePool, "
    "BatchNormalization, Add, Flatten, Reshape, Softmax, LSTM, GRU, and as helpers of those "
    "Gather (embedding), Transpose, Squeeze, Identity, Dropout, Constant, Pad (of zeros), and "
    "Shape/Gather/Unsqueeze/Concat/Expand sizing a zero initial state";

enum class Form {
  Plain,      // batch-major, as the IR sees it
  TimeMajor,  // [T,N,F]
  ImageT,     // [H,N,C,W]: an image after ImageToSequence's transpose, before its reshape
  RnnState,   // [1,N,H]: an RNN's Y_h before the squeeze
  ShapeCalc,  // an int64 tensor computed from shapes (Shape, Gather, Unsqueeze, Concat): exporters
              // use it only to size zero initial states, so its value is never needed
};

struct Val {
  std::string ir;  // "input" or a layer name
  Form form = Form::Plain;
  int rank = 0;  // of the ONNX tensor
};

struct PendingWeight {
  std::size_t order;  // the initializer's position in the file
  std::size_t sub;    // several weights can come from one initializer (an RNN's B)
  std::string name;
  Tensor t;
};

class Reader {
 public:
  Reader(std::string path, const onnx::ModelProto& mp) : path_(std::move(path)), mp_(mp) {}

  OnnxModel run() {
    OnnxModel out;
    for (const auto& os : mp_.opset_import())
      if (os.domain().empty() || os.domain() == "ai.onnx") opset_ = static_cast<int>(os.version());
    out.opset = opset_;
    for (const auto& p : mp_.metadata_props()) out.metadata[p.key()] = p.value();

    const onnx::GraphProto& g = mp_.graph();
    for (int i = 0; i < g.initializer_size(); ++i) {
      consts_[g.initializer(i).name()] = &g.initializer(i);
      init_order_[g.initializer(i).name()] = static_cast<std::size_t>(i);
    }
    for (const auto& n : g.node())
      for (const std::string& in : n.input()) ++uses_[in];
    for (const auto& o : g.output()) ++uses_[o.name()];

    graph_input(g);
    for (const auto& n : g.node()) node(n);
    finish(g, out);
    return out;
  }

 private:
  std::string path_;
  const onnx::ModelProto& mp_;
  int opset_ = 0;
  ir::Model m_;
  std::map<std::string, const onnx::TensorProto*> consts_;
  std::map<std::string, std::size_t> init_order_;
  std::map<std::string, int> uses_;
  std::map<std::string, Val> vals_;
  std::map<std::string, std::size_t> layer_index_;
  std::vector<PendingWeight> weights_;
  std::set<std::string> matmul_dense_;   // Dense layers from a MatMul still waiting for a bias
  std::deque<onnx::TensorProto> owned_;  // Constant nodes in their value_* forms
  std::int64_t input_batch_ = 0;         // the input's batch size when it is fixed, else 0
  std::set<std::string> zeros_;          // Expand of an all-zero constant: a zero tensor

  [[noreturn]] void fail(const std::string& what) const { throw InputError(path_ + ": " + what); }
  [[noreturn]] void fail(const onnx::NodeProto& n, const std::string& what) const {
    // Many files (the ONNX backend tests among them) leave nodes unnamed: then its position and
    // first output identify it.
    std::string who = "node '" + n.name() + "'";
    if (n.name().empty()) {
      const auto& nodes = mp_.graph().node();
      const auto it = std::find_if(nodes.begin(), nodes.end(),
                                   [&](const onnx::NodeProto& o) { return &o == &n; });
      who = "node #" + std::to_string(it - nodes.begin()) +
            (n.output_size() > 0 ? " (output '" + n.output(0) + "')" : std::string());
    }
    fail(who + " (" + n.op_type() + "): " + what);
  }

  // ---- tensors
  // -----------------------------------------------------------------------------------

  static Shape dims(const onnx::TensorProto& t) { return Shape(t.dims().begin(), t.dims().end()); }

  Tensor to_float(const onnx::NodeProto& n, const onnx::TensorProto& t, Layout layout) const {
    if (t.data_location() == onnx::TensorProto::EXTERNAL)
      fail(n, "tensor '" + t.name() + "' uses external data, which is not supported");
    if (t.data_type() != onnx::TensorProto::FLOAT)
      fail(n, "weight '" + t.name() + "' must be float32");
    Tensor out(DType::F32, dims(t), layout);
    const std::size_t count = static_cast<std::size_t>(out.numel());
    if (t.has_raw_data()) {
      if (t.raw_data().size() != count * sizeof(float))
        fail(n, "weight '" + t.name() + "' holds " + std::to_string(t.raw_data().size()) +
                    " bytes, its shape " + shape_str(out.shape()) + " needs " +
                    std::to_string(count * sizeof(float)));
      std::memcpy(out.raw(), t.raw_data().data(), t.raw_data().size());
    } else {
      if (static_cast<std::size_t>(t.float_data_size()) != count)
        fail(n, "weight '" + t.name() + "' holds " + std::to_string(t.float_data_size()) +
                    " values, its shape " + shape_str(out.shape()) + " needs " +
                    std::to_string(count));
      std::copy(t.float_data().begin(), t.float_data().end(), out.values<float>().begin());
    }
    return out;
  }

  std::vector<std::int64_t> to_ints(const onnx::NodeProto& n, const onnx::TensorProto& t) const {
    if (t.data_type() != onnx::TensorProto::INT64) fail(n, "'" + t.name() + "' must be int64");
    if (t.has_raw_data()) {
      std::vector<std::int64_t> v(t.raw_data().size() / sizeof(std::int64_t));
      std::memcpy(v.data(), t.raw_data().data(), v.size() * sizeof(std::int64_t));
      return v;
    }
    return {t.int64_data().begin(), t.int64_data().end()};
  }

  const onnx::TensorProto& constant(const onnx::NodeProto& n, int i, const char* role) const {
    if (i >= n.input_size() || n.input(i).empty()) fail(n, std::string("has no ") + role);
    auto it = consts_.find(n.input(i));
    if (it == consts_.end())
      fail(n, std::string(role) + " '" + n.input(i) + "' must be an initializer or a constant");
    return *it->second;
  }
  bool has_input(const onnx::NodeProto& n, int i) const {
    return i < n.input_size() && !n.input(i).empty();
  }

  // Records a weight tensor, kept in the order of the initializer it came from.
  void weight(const onnx::NodeProto& n, int input, const std::string& name, Tensor t,
              std::size_t sub = 0) {
    auto it = init_order_.find(n.input(input));
    const std::size_t order = it == init_order_.end() ? SIZE_MAX : it->second;
    weights_.push_back({order, sub, name, std::move(t)});
  }

  const Val& value(const onnx::NodeProto& n, int i) const {
    if (i >= n.input_size() || n.input(i).empty())
      fail(n, "input " + std::to_string(i) + " is missing");
    auto it = vals_.find(n.input(i));
    if (it == vals_.end()) {
      if (consts_.count(n.input(i)) != 0)
        fail(n, "input '" + n.input(i) + "' is a constant where a computed tensor is expected");
      fail(n, "input '" + n.input(i) + "' is not produced by an earlier node");
    }
    return it->second;
  }
  const Val& plain(const onnx::NodeProto& n, int i) const {
    const Val& v = value(n, i);
    if (v.form != Form::Plain)
      fail(n, "input '" + n.input(i) + "' is an intermediate form this reader cannot use here");
    return v;
  }

  // ---- attributes
  // --------------------------------------------------------------------------------

  const onnx::AttributeProto* attr(const onnx::NodeProto& n, const std::string& name) const {
    for (const auto& a : n.attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  std::int64_t attr_i(const onnx::NodeProto& n, const std::string& name, std::int64_t dflt) const {
    const auto* a = attr(n, name);
    return a ? a->i() : dflt;
  }
  float attr_f(const onnx::NodeProto& n, const std::string& name, float dflt) const {
    const auto* a = attr(n, name);
    return a ? a->f() : dflt;
  }
  std::vector<std::int64_t> attr_ints(const onnx::NodeProto& n, const std::string& name) const {
    const auto* a = attr(n, name);
    if (!a) return {};
    return {a->ints().begin(), a->ints().end()};
  }
  void require_attr(const onnx::NodeProto& n, const std::string& name, std::int64_t want) const {
    const std::int64_t got = attr_i(n, name, want);
    if (got != want)
      fail(n, "attribute " + name + "=" + std::to_string(got) + " is not supported (only " +
                  std::to_string(want) + ")");
  }
  void require_no_attr(const onnx::NodeProto& n, const std::string& name) const {
    if (attr(n, name)) fail(n, "attribute " + name + " is not supported");
  }
  void require_only_output(const onnx::NodeProto& n) const {
    for (int i = 1; i < n.output_size(); ++i)
      if (!n.output(i).empty() && uses_.count(n.output(i)) != 0)
        fail(n, "output " + std::to_string(i) + " ('" + n.output(i) +
                    "') is used, which is not supported");
  }

  // kernel, stride, symmetric pads of a 2-D window over an input of per-example shape `in` [C,H,W].
  void window(const onnx::NodeProto& n, ir::Layer& l, const Shape* weight_shape, const Shape& in) {
    const auto* ap = attr(n, "auto_pad");
    const std::string auto_pad = ap ? ap->s() : "NOTSET";
    if (auto_pad != "NOTSET" && auto_pad != "VALID" && auto_pad != "SAME_UPPER" &&
        auto_pad != "SAME_LOWER")
      fail(n, "auto_pad=" + auto_pad + " is not known");
    for (std::int64_t d : attr_ints(n, "dilations"))
      if (d != 1) fail(n, "dilations other than 1 are not supported");
    std::vector<std::int64_t> k = attr_ints(n, "kernel_shape");
    if (k.empty() && weight_shape && weight_shape->size() == 4)
      k = {(*weight_shape)[2], (*weight_shape)[3]};
    if (k.size() != 2) fail(n, "only 2-D windows are supported");
    std::vector<std::int64_t> s = attr_ints(n, "strides");
    if (s.empty()) s = {1, 1};
    std::vector<std::int64_t> p = attr_ints(n, "pads");
    if (p.empty() || auto_pad != "NOTSET") p = {0, 0, 0, 0};
    if (s.size() != 2 || p.size() != 4) fail(n, "strides/pads do not match a 2-D window");
    if (k[0] <= 0 || k[1] <= 0 || s[0] <= 0 || s[1] <= 0)
      fail(n, "kernel " + shape_str(k) + " and strides " + shape_str(s) + " must be positive");
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      // The padding that keeps ceil(in/stride) outputs; the IR has one pad per axis for both
      // sides, so an odd total (where SAME_UPPER and SAME_LOWER differ) cannot be expressed.
      for (std::size_t i = 0; i < 2; ++i) {
        if (s[i] <= 0) fail(n, "strides must be positive");
        const std::int64_t size = in.at(i + 1);
        const std::int64_t out = (size + s[i] - 1) / s[i];
        const std::int64_t total = std::max<std::int64_t>((out - 1) * s[i] + k[i] - size, 0);
        if (total % 2 != 0)
          fail(n, "auto_pad=" + auto_pad + " needs asymmetric padding here (" +
                      std::to_string(total) + " on axis " + std::to_string(i + 2) +
                      "), which crossdl's IR cannot express");
        p[i] = p[i + 2] = total / 2;
      }
    }
    if (p[0] != p[2] || p[1] != p[3])
      fail(n, "asymmetric padding " + shape_str(p) +
                  " is not supported (the IR pads both sides "
                  "of an axis alike)");
    for (int i = 0; i < 2; ++i) {
      l.kernel[i] = k[static_cast<std::size_t>(i)];
      l.stride[i] = s[static_cast<std::size_t>(i)];
      l.pad[i] = p[static_cast<std::size_t>(i)];
    }
  }

  // ---- layers
  // ------------------------------------------------------------------------------------

  // The node's name, or its output's when it has none, made usable as an IR layer name: exporters
  // write names like "/conv1/Conv" or "Conv_0" and may repeat them; crossdl's own names
  // ("stage2.block0.conv1") pass unchanged.
  std::string layer_name(const onnx::NodeProto& n) const {
    std::string raw = n.name();
    if (raw.empty())
      for (const std::string& o : n.output())
        if (!o.empty()) {
          raw = o;
          break;
        }
    std::string name;
    for (char c : raw) {
      const bool keep = std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.';
      if (keep)
        name += c;
      else if (!name.empty() && name.back() != '_')
        name += '_';
    }
    while (!name.empty() && (name.back() == '_' || name.back() == '.')) name.pop_back();
    while (!name.empty() && name.front() == '.') name.erase(0, 1);
    if (name.empty()) {
      name = n.op_type();
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    }
    if (name == "input") name = "input_layer";
    if (layer_index_.count(name) == 0) return name;
    for (int k = 2;; ++k) {
      const std::string candidate = name + "_" + std::to_string(k);
      if (layer_index_.count(candidate) == 0) return candidate;
    }
  }

  // The per-example shape (no batch axis) of a plain value, from the layers read so far.
  Shape shape_of(const onnx::NodeProto& n, const Val& v) const {
    if (v.ir == "input") return m_.input_shape;
    try {
      const std::vector<Shape> shapes = ir::infer_shapes(m_);
      return shapes.at(layer_index_.at(v.ir));
    } catch (const InputError& e) {
      fail(n, std::string("the layers before it are inconsistent: ") + e.what());
    }
  }

  // Constant in any of its forms; the scalar and list forms become owned tensors.
  void constant_node(const onnx::NodeProto& n) {
    if (n.attribute_size() != 1) fail(n, "needs exactly one value attribute");
    const onnx::AttributeProto& a = n.attribute(0);
    if (a.name() == "value") {
      consts_[n.output(0)] = &a.t();
      return;
    }
    onnx::TensorProto t;
    t.set_name(n.output(0));
    if (a.name() == "value_float" || a.name() == "value_floats") {
      t.set_data_type(onnx::TensorProto::FLOAT);
      if (a.name() == "value_float") {
        t.add_float_data(a.f());
      } else {
        t.add_dims(a.floats_size());
        for (float f : a.floats()) t.add_float_data(f);
      }
    } else if (a.name() == "value_int" || a.name() == "value_ints") {
      t.set_data_type(onnx::TensorProto::INT64);
      if (a.name() == "value_int") {
        t.add_int64_data(a.i());
      } else {
        t.add_dims(a.ints_size());
        for (std::int64_t i : a.ints()) t.add_int64_data(i);
      }
    } else {
      fail(n, "the " + a.name() + " form of Constant is not supported");
    }
    owned_.push_back(std::move(t));
    consts_[n.output(0)] = &owned_.back();
  }

  bool is_shape_calc(const onnx::NodeProto& n, int i) const {
    const auto it = vals_.find(n.input(i));
    return has_input(n, i) && it != vals_.end() && it->second.form == Form::ShapeCalc;
  }
  bool all_zero(const onnx::NodeProto& n, int i, const char* role) const {
    if (zeros_.count(n.input(i)) != 0) return true;
    if (consts_.count(n.input(i)) == 0) return false;
    const Tensor t = to_float(n, constant(n, i, role), Layout::Any);
    return std::all_of(t.values<float>().begin(), t.values<float>().end(),
                       [](float v) { return v == 0.0f; });
  }

  // Unsqueeze/Concat of shape values and int64 constants.
  void shape_calc(const onnx::NodeProto& n) {
    bool any = false;
    for (int i = 0; i < n.input_size(); ++i) {
      if (is_shape_calc(n, i)) {
        any = true;
      } else if (!has_input(n, i) || consts_.count(n.input(i)) == 0 ||
                 consts_.at(n.input(i))->data_type() != onnx::TensorProto::INT64) {
        any = false;
        break;
      }
    }
    if (!any)
      fail(n, "is only supported on shape values (sizing a zero initial state of an LSTM/GRU)");
    alias(n.output(0), {"", Form::ShapeCalc, 1});
  }

  // Expand of an all-zero constant: the zero initial state of a recurrent layer.
  void expand(const onnx::NodeProto& n) {
    if (consts_.count(n.input(0)) == 0 || !all_zero(n, 0, "data"))
      fail(n, "is only supported on an all-zero constant (a zero initial state of an LSTM/GRU)");
    if (!is_shape_calc(n, 1) && consts_.count(n.input(1)) == 0)
      fail(n, "its shape must be a constant or computed from shapes");
    zeros_.insert(n.output(0));
  }

  // A Pad that adds nothing (PyTorch writes one before an AvgPool2d with count_include_pad).
  void pad(const onnx::NodeProto& n) {
    std::vector<std::int64_t> pads =
        opset_ >= 11 && has_input(n, 1) ? to_ints(n, constant(n, 1, "pads")) : attr_ints(n, "pads");
    if (std::any_of(pads.begin(), pads.end(), [](std::int64_t p) { return p != 0; }))
      fail(n, "only a Pad of nothing (all pads 0) is supported, got " + shape_str(pads) +
                  "; the IR pads only inside Conv and pooling layers");
    alias(n.output(0), value(n, 0));
  }

  // Inference-time Dropout passes its input through; its mask is not available.
  void dropout(const onnx::NodeProto& n) {
    require_only_output(n);
    if (has_input(n, 2)) {
      const auto it = consts_.find(n.input(2));
      bool training = true;
      if (it != consts_.end() && it->second->data_type() == onnx::TensorProto::BOOL) {
        const onnx::TensorProto& t = *it->second;
        training = t.has_raw_data() ? (!t.raw_data().empty() && t.raw_data()[0] != 0)
                                    : (t.int32_data_size() > 0 && t.int32_data(0) != 0);
      }
      if (training) fail(n, "training_mode must be a constant false (inference)");
    }
    if (attr_i(n, "is_test", 1) == 0 && opset_ < 7)
      fail(n, "is_test=0 (training) is not supported");
    alias(n.output(0), value(n, 0));
  }

  // Adds a layer whose output is the node's first output.
  ir::Layer& layer(const onnx::NodeProto& n, ir::Op op, std::vector<std::string> inputs, int rank,
                   Form form = Form::Plain) {
    ir::Layer l;
    l.name = layer_name(n);
    l.op = op;
    l.inputs = std::move(inputs);
    layer_index_[l.name] = m_.layers.size();
    m_.layers.push_back(std::move(l));
    alias(n.output(0), {m_.layers.back().name, form, rank});
    return m_.layers.back();
  }

  void alias(const std::string& onnx_name, Val v) { vals_[onnx_name] = std::move(v); }

  void graph_input(const onnx::GraphProto& g) {
    const onnx::ValueInfoProto* in = nullptr;
    for (const auto& vi : g.input()) {
      if (consts_.count(vi.name()) != 0) continue;  // IR < 4 lists initializers as inputs
      if (in)
        fail("the graph has several inputs ('" + in->name() + "', '" + vi.name() +
             "'); only one is supported");
      in = &vi;
    }
    if (!in) fail("the graph has no input");
    const auto& tt = in->type().tensor_type();
    if (tt.elem_type() == onnx::TensorProto::FLOAT) {
      m_.input_dtype = DType::F32;
    } else if (tt.elem_type() == onnx::TensorProto::INT64) {
      m_.input_dtype = DType::I64;
    } else {
      fail("input '" + in->name() + "' must be float32 or int64");
    }
    const auto& dims = tt.shape().dim();
    if (!tt.has_shape() || dims.size() < 2)
      fail("input '" + in->name() + "' needs a shape [batch, ...] of rank 2 or more");
    for (int i = 1; i < dims.size(); ++i) {
      if (!dims[i].has_dim_value() || dims[i].dim_value() <= 0)
        fail("input '" + in->name() + "' dimension " + std::to_string(i) +
             " must be a fixed size (only the batch may vary)");
      m_.input_shape.push_back(dims[i].dim_value());
    }
    if (dims[0].has_dim_value()) input_batch_ = dims[0].dim_value();
    alias(in->name(), {"input", Form::Plain, dims.size()});
  }

  void node(const onnx::NodeProto& n) {
    const std::string& op = n.op_type();
    if (!n.domain().empty() && n.domain() != "ai.onnx")
      fail(n, "operator '" + n.domain() + ":" + op + "' is not in crossdl's supported set (" +
                  std::string(kSupported) + ")");
    // Recurrent nodes may leave their first output (the full sequence Y) unnamed.
    const bool rnn = op == "LSTM" || op == "GRU";
    if (n.output_size() == 0 || (n.output(0).empty() && !rnn)) fail(n, "has no output");

    if (op == "Constant") {
      constant_node(n);
    } else if (op == "Identity") {
      if (consts_.count(n.input(0)) != 0)
        consts_[n.output(0)] = consts_.at(n.input(0));
      else
        alias(n.output(0), value(n, 0));
    } else if (op == "Dropout") {
      dropout(n);
    } else if (op == "Conv") {
      conv(n);
    } else if (op == "Gemm") {
      gemm(n);
    } else if (op == "MatMul") {
      matmul(n);
    } else if (op == "Relu" || op == "Tanh" || op == "Sigmoid") {
      const Val& x = plain(n, 0);
      layer(n,
            op == "Relu"   ? ir::Op::ReLU
            : op == "Tanh" ? ir::Op::Tanh
                           : ir::Op::Sigmoid,
            {x.ir}, x.rank);
    } else if (op == "MaxPool" || op == "AveragePool") {
      pool(n, op == "MaxPool");
    } else if (op == "GlobalAveragePool") {
      const Val& x = plain(n, 0);
      if (x.rank != 4) fail(n, "only 2-D images [N,C,H,W] are supported");
      layer(n, ir::Op::GlobalAvgPool, {x.ir}, 4);
    } else if (op == "BatchNormalization") {
      batch_norm(n);
    } else if (op == "Add") {
      add(n);
    } else if (op == "Flatten") {
      const Val& x = plain(n, 0);
      const std::int64_t axis = attr_i(n, "axis", 1);
      if (axis != 1 && axis + x.rank != 1)
        fail(n, "only axis=1 (keep the batch, flatten the rest) is supported, got axis=" +
                    std::to_string(axis));
      layer(n, ir::Op::Flatten, {x.ir}, 2);
    } else if (op == "Reshape") {
      reshape(n);
    } else if (op == "Transpose") {
      transpose(n);
    } else if (op == "Softmax") {
      const Val& x = plain(n, 0);
      const std::int64_t axis = attr_i(n, "axis", opset_ >= 13 ? -1 : 1);
      // Before opset 13 Softmax normalises over all axes from `axis` on; from the last one that is
      // the same as over the last axis.
      if (axis != -1 && axis != x.rank - 1)
        fail(n, "only a softmax over the last axis is supported, got axis=" + std::to_string(axis) +
                    " of a rank-" + std::to_string(x.rank) + " tensor");
      layer(n, ir::Op::Softmax, {x.ir}, x.rank);
    } else if (op == "Gather" && is_shape_calc(n, 0)) {
      alias(n.output(0), {"", Form::ShapeCalc, 1});
    } else if (op == "Gather") {
      gather(n);
    } else if (op == "Shape") {
      value(n, 0);
      alias(n.output(0), {"", Form::ShapeCalc, 1});
    } else if (op == "Unsqueeze" || op == "Concat") {
      shape_calc(n);
    } else if (op == "Expand") {
      expand(n);
    } else if (op == "Pad") {
      pad(n);
    } else if (op == "LSTM" || op == "GRU") {
      recurrent(n, op == "LSTM");
    } else if (op == "Squeeze") {
      squeeze(n);
    } else {
      fail(n, "operator '" + op + "' is not in crossdl's supported set (" +
                  std::string(kSupported) + ")");
    }
  }

  void conv(const onnx::NodeProto& n) {
    const Val& x = plain(n, 0);
    if (x.rank != 4) fail(n, "only 2-D convolutions on [N,C,H,W] are supported");
    require_attr(n, "group", 1);
    const onnx::TensorProto& w = constant(n, 1, "weight");
    const Shape ws = dims(w);
    if (ws.size() != 4) fail(n, "the weight must be [O,I,kh,kw]");
    const Shape in = shape_of(n, x);
    if (ws[1] != in.at(0))
      fail(n, "the weight " + shape_str(ws) + " expects " + std::to_string(ws[1]) +
                  " input channels, the input has " + std::to_string(in.at(0)));
    ir::Layer probe;
    window(n, probe, &ws, in);
    ir::Layer& l = layer(n, ir::Op::Conv2d, {x.ir}, 4);
    l.out = ws[0];
    std::copy(probe.kernel, probe.kernel + 2, l.kernel);
    std::copy(probe.stride, probe.stride + 2, l.stride);
    std::copy(probe.pad, probe.pad + 2, l.pad);
    if (l.kernel[0] != ws[2] || l.kernel[1] != ws[3])
      fail(n, "kernel_shape does not match the weight " + shape_str(ws));
    l.bias = has_input(n, 2);
    const std::string name = l.name;
    weight(n, 1, name + ".weight", to_float(n, w, Layout::OIHW));
    if (has_input(n, 2))
      weight(n, 2, name + ".bias", to_float(n, constant(n, 2, "bias"), Layout::Any));
  }

  void gemm(const onnx::NodeProto& n) {
    const Val& x = plain(n, 0);
    if (x.rank != 2) fail(n, "expects a 2-D input [N,F]");
    require_attr(n, "transA", 0);
    if (attr_f(n, "alpha", 1.0f) != 1.0f || attr_f(n, "beta", 1.0f) != 1.0f)
      fail(n, "alpha and beta other than 1 are not supported");
    const bool trans_b = attr_i(n, "transB", 0) != 0;
    Tensor w = to_float(n, constant(n, 1, "weight"), Layout::OI);
    if (w.rank() != 2) fail(n, "the weight must be 2-D");
    if (!trans_b) w = transposed(w);
    ir::Layer& l = layer(n, ir::Op::Dense, {x.ir}, 2);
    l.out = w.dim(0);
    l.bias = has_input(n, 2);
    const std::string name = l.name;
    weight(n, 1, name + ".weight", std::move(w));
    if (l.bias) weight(n, 2, name + ".bias", bias_vector(n, 2, l.out));
  }

  // A bias broadcast along the batch: [K], [1,K], or one value for all K (made a [K] vector).
  Tensor bias_vector(const onnx::NodeProto& n, int input, std::int64_t k) const {
    Tensor b = to_float(n, constant(n, input, "bias"), Layout::Any);
    if (b.numel() == k && (b.rank() == 1 || (b.rank() == 2 && b.dim(0) == 1)))
      return b.rank() == 1 ? b : b.reshaped({k});
    if (b.numel() == 1) {
      Tensor full(DType::F32, {k});
      std::fill(full.values<float>().begin(), full.values<float>().end(), b.values<float>()[0]);
      return full;
    }
    fail(n, "the bias " + shape_str(b.shape()) + " must be [" + std::to_string(k) + "], [1," +
                std::to_string(k) + "] or a single value (a per-example bias is not supported)");
  }

  static Tensor transposed(const Tensor& w) {
    const std::int64_t r = w.dim(0), c = w.dim(1);
    Tensor t(DType::F32, {c, r}, Layout::OI);
    auto src = w.values<float>();
    auto dst = t.values<float>();
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t j = 0; j < c; ++j)
        dst[static_cast<std::size_t>(j * r + i)] = src[static_cast<std::size_t>(i * c + j)];
    return t;
  }

  void matmul(const onnx::NodeProto& n) {
    const Val& x = plain(n, 0);
    if (x.rank != 2) fail(n, "expects a 2-D input [N,F]");
    Tensor w = to_float(n, constant(n, 1, "weight"), Layout::OI);
    if (w.rank() != 2) fail(n, "the weight must be 2-D");
    ir::Layer& l = layer(n, ir::Op::Dense, {x.ir}, 2);
    l.out = w.dim(1);
    l.bias = false;
    matmul_dense_.insert(l.name);
    weight(n, 1, l.name + ".weight", transposed(w));
  }

  void add(const onnx::NodeProto& n) {
    // A constant added to a bias-less Dense (MatMul + Add) or Conv is that layer's bias.
    for (int c = 0; c < 2; ++c) {
      if (n.input_size() != 2 || consts_.count(n.input(c)) == 0) continue;
      if (consts_.count(n.input(1 - c)) != 0) fail(n, "adds two constants");
      const Val& x = plain(n, 1 - c);
      const std::string why =
          "adds a constant " + shape_str(dims(*consts_.at(n.input(c)))) +
          "; only a per-channel bias right after a Conv, Gemm or MatMul without one can be folded";
      const auto li = layer_index_.find(x.ir);
      if (li == layer_index_.end() || uses_[n.input(1 - c)] != 1) fail(n, why);
      ir::Layer& l = m_.layers[li->second];
      if (l.bias || (l.op != ir::Op::Dense && l.op != ir::Op::Conv2d)) fail(n, why);
      Tensor b = to_float(n, constant(n, c, "bias"), Layout::Any);
      Shape s = b.shape();
      while (s.size() > 1 && s.front() == 1) s.erase(s.begin());
      // Broadcasting aligns trailing axes: a Conv's per-channel bias is [O,1,1] ([O] would run
      // along W), a Dense's is [K].
      const bool fits = l.op == ir::Op::Dense ? s == Shape{l.out} : s == Shape{l.out, 1, 1};
      if (!fits) fail(n, why);
      l.bias = true;
      matmul_dense_.erase(x.ir);
      weight(n, c, l.name + ".bias", b.reshaped({l.out}));
      alias(n.output(0), x);
      return;
    }
    const Val& a = plain(n, 0);
    const Val& b = plain(n, 1);
    if (a.rank != b.rank) fail(n, "broadcasting Add is not supported");
    layer(n, ir::Op::Add, {a.ir, b.ir}, a.rank);
  }

  void pool(const onnx::NodeProto& n, bool max) {
    const Val& x = plain(n, 0);
    if (x.rank != 4) fail(n, "only 2-D pooling on [N,C,H,W] is supported");
    require_only_output(n);  // storage_order only concerns the Indices output
    const Shape in = shape_of(n, x);
    ir::Layer l;
    window(n, l, nullptr, in);
    if (attr_i(n, "ceil_mode", 0) != 0) {
      // Ceil mode only differs when the last window would start past the end in floor mode.
      for (int i = 0; i < 2; ++i)
        if ((in.at(static_cast<std::size_t>(i) + 1) + 2 * l.pad[i] - l.kernel[i]) % l.stride[i] !=
            0)
          fail(n,
               "ceil_mode=1 gives another output size than floor mode here; the IR's pooling "
               "is floor mode only");
    }
    if (!max && attr_i(n, "count_include_pad", 0) != 0 && (l.pad[0] != 0 || l.pad[1] != 0))
      fail(n,
           "count_include_pad=1 with padding is not supported (the IR's AvgPool2d does not "
           "count padded cells)");
    if (2 * l.pad[0] > l.kernel[0] || 2 * l.pad[1] > l.kernel[1])
      fail(n,
           "pads larger than half the kernel are not supported (windows could lie wholly in "
           "the padding; PyTorch refuses them too)");
    ir::Layer& out = layer(n, max ? ir::Op::MaxPool2d : ir::Op::AvgPool2d, {x.ir}, 4);
    std::copy(l.kernel, l.kernel + 2, out.kernel);
    std::copy(l.stride, l.stride + 2, out.stride);
    std::copy(l.pad, l.pad + 2, out.pad);
  }

  void batch_norm(const onnx::NodeProto& n) {
    const Val& x = plain(n, 0);
    if (x.rank != 4) fail(n, "only [N,C,H,W] inputs are supported");
    require_attr(n, "training_mode", 0);
    require_only_output(n);
    ir::Layer& l = layer(n, ir::Op::BatchNorm2d, {x.ir}, 4);
    l.eps = attr_f(n, "epsilon", 1e-5f);
    l.momentum = 1.0f - attr_f(n, "momentum", 0.9f);
    const std::string& doc = n.doc_string();
    if (doc.rfind(kMomentumTag, 0) == 0) {
      float m = 0;
      auto r = std::from_chars(doc.data() + kMomentumTag.size(), doc.data() + doc.size(), m);
      if (r.ec == std::errc()) l.momentum = m;
    }
    const std::string name = l.name;
    const char* params[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; ++i)
      weight(n, i + 1, name + "." + params[i],
             to_float(n, constant(n, i + 1, params[i]), Layout::Any));
  }

  void reshape(const onnx::NodeProto& n) {
    const Val& x = value(n, 0);
    const std::vector<std::int64_t> shape = to_ints(n, constant(n, 1, "shape"));
    if (x.form == Form::ImageT && shape == std::vector<std::int64_t>{0, 0, -1}) {
      layer(n, ir::Op::ImageToSequence, {x.ir}, 3, Form::TimeMajor);
    } else if (x.form == Form::Plain && flattens(n, x, shape)) {
      layer(n, ir::Op::Flatten, {x.ir}, 2);
    } else {
      fail(n,
           "only Reshape to [0,-1], [N,-1], [-1,F] (flatten, keeping the batch) or, after "
           "Transpose 2,0,1,3, to [0,0,-1] (image rows to a sequence) is supported, got " +
               shape_str(shape));
    }
  }

  // Whether a Reshape to `shape` keeps the batch axis and flattens the rest: [0,-1]; [B,-1] with
  // B the graph's fixed batch (or 1, as batch-1 exports write it); [-1,F] or [0,F] with F all the
  // per-example elements.
  bool flattens(const onnx::NodeProto& n, const Val& x, const std::vector<std::int64_t>& shape) {
    if (shape.size() != 2 || opset_allowzero(n)) return false;
    const std::int64_t features = shape_numel(shape_of(n, x));
    if (shape[1] == -1)
      return shape[0] == 0 || (shape[0] == 1 && input_batch_ <= 1) ||
             (shape[0] > 0 && shape[0] == input_batch_);
    return (shape[0] == -1 || shape[0] == 0) && shape[1] == features;
  }
  // allowzero=1 makes a 0 in the shape literal, not "copy this axis".
  bool opset_allowzero(const onnx::NodeProto& n) const { return attr_i(n, "allowzero", 0) != 0; }

  void transpose(const onnx::NodeProto& n) {
    const Val& x = value(n, 0);
    const std::vector<std::int64_t> perm = attr_ints(n, "perm");
    if (x.form == Form::Plain && x.rank == 4 && perm == std::vector<std::int64_t>{2, 0, 1, 3}) {
      alias(n.output(0), {x.ir, Form::ImageT, 4});
    } else if (x.rank == 3 && (x.form == Form::Plain || x.form == Form::TimeMajor) &&
               perm == std::vector<std::int64_t>{1, 0, 2}) {
      alias(n.output(0), {x.ir, x.form == Form::Plain ? Form::TimeMajor : Form::Plain, 3});
    } else {
      fail(n,
           "only Transpose 1,0,2 of a sequence or 2,0,1,3 of an image (followed by a Reshape) "
           "is supported");
    }
  }

  void gather(const onnx::NodeProto& n) {
    require_attr(n, "axis", 0);
    const onnx::TensorProto& w = constant(n, 0, "embedding table");
    const Val& ids = plain(n, 1);
    if (ids.ir != "input" || m_.input_dtype != DType::I64)
      fail(n, "only a Gather of the int64 model input from a table (an embedding) is supported");
    Tensor t = to_float(n, w, Layout::Any);
    if (t.rank() != 2) fail(n, "the embedding table must be 2-D");
    ir::Layer& l = layer(n, ir::Op::Embedding, {ids.ir}, ids.rank + 1);
    l.vocab = t.dim(0);
    l.out = t.dim(1);
    weight(n, 0, l.name + ".weight", std::move(t));
  }

  void recurrent(const onnx::NodeProto& n, bool lstm) {
    const Val& x = value(n, 0);
    if (x.form == Form::Plain && x.ir == "input")
      fail(n,
           "reads the graph input as a time-major sequence [T,N,F], but crossdl's model input "
           "is batch-first [N,...]; a batch-first model (PyTorch batch_first=True) writes a "
           "Transpose 1,0,2 before the " +
               n.op_type());
    if (x.form != Form::TimeMajor || x.rank != 3)
      fail(n, "expects a time-major sequence [T,N,F] from ImageToSequence or a Transpose 1,0,2");
    if (has_input(n, 4)) fail(n, "sequence lengths are not supported");
    // Exporters (PyTorch among them) pass zero initial states and peepholes explicitly.
    for (int i = 5; i < n.input_size(); ++i) {
      if (!has_input(n, i)) continue;
      const char* role = i == 5 ? "initial_h" : i == 6 ? "initial_c" : "P";
      if (consts_.count(n.input(i)) == 0 && zeros_.count(n.input(i)) == 0)
        fail(n, std::string(role) + " must be a constant (all zeros)");
      if (!all_zero(n, i, role))
        fail(n, std::string("a non-zero ") + role +
                    " is not supported (the IR's recurrent layers start from zero states and "
                    "have no peepholes)");
    }
    const auto* dir = attr(n, "direction");
    if (dir && dir->s() != "forward") fail(n, "only forward direction is supported");
    require_attr(n, "layout", 0);
    require_no_attr(n, "clip");
    if (lstm) require_attr(n, "input_forget", 0);
    if (!lstm) require_attr(n, "linear_before_reset", 1);
    if (const auto* acts = attr(n, "activations")) {
      const std::vector<std::string> want =
          lstm ? std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"}
               : std::vector<std::string>{"Sigmoid", "Tanh"};
      if (std::vector<std::string>(acts->strings().begin(), acts->strings().end()) != want)
        fail(n, "only the default activations are supported");
    }
    if (n.output_size() < 2 || n.output(1).empty()) fail(n, "its Y_h output must be used");
    if (!n.output(0).empty() && uses_.count(n.output(0)) != 0)
      fail(n, "the full output sequence Y is used; only the last state Y_h is supported");
    if (n.output_size() > 2 && !n.output(2).empty() && uses_.count(n.output(2)) != 0)
      fail(n, "the cell state Y_c is used; only Y_h is supported");

    const std::span<const int> order =
        lstm ? std::span<const int>(kLstmOnnxFromTorch) : std::span<const int>(kGruOnnxFromTorch);
    const std::int64_t g = static_cast<std::int64_t>(order.size());
    const Tensor W = to_float(n, constant(n, 1, "W"), Layout::Any);
    const Tensor R = to_float(n, constant(n, 2, "R"), Layout::Any);
    if (W.rank() != 3 || W.dim(0) != 1 || W.dim(1) % g != 0)
      fail(n, "W must be [1," + std::to_string(g) + "*hidden,features]");
    const std::int64_t h = W.dim(1) / g, f = W.dim(2);
    if (attr_i(n, "hidden_size", h) != h) fail(n, "hidden_size does not match W");
    if (R.shape() != Shape{1, g * h, h}) fail(n, "R must be " + shape_str({1, g * h, h}));

    const std::vector<std::string> ins = {x.ir};
    ir::Layer l;
    l.name = layer_name(n);
    l.op = lstm ? ir::Op::LSTM : ir::Op::GRU;
    l.inputs = ins;
    l.out = h;
    layer_index_[l.name] = m_.layers.size();
    m_.layers.push_back(l);
    alias(n.output(1), {l.name, Form::RnnState, 3});

    const Layout gates = lstm ? Layout::GatesIFGO : Layout::GatesRZN;
    auto torch = [&](std::span<const float> src, Shape shape, std::int64_t cols) {
      Tensor t(DType::F32, std::move(shape), gates);
      auto v = permute_gates(src, order, h, cols, false);
      std::copy(v.begin(), v.end(), t.values<float>().begin());
      return t;
    };
    weight(n, 1, l.name + ".weight_ih", torch(W.values<float>(), {g * h, f}, f));
    weight(n, 2, l.name + ".weight_hh", torch(R.values<float>(), {g * h, h}, h));
    std::vector<float> B(static_cast<std::size_t>(2 * g * h), 0.0f);
    if (has_input(n, 3)) {
      const Tensor bt = to_float(n, constant(n, 3, "B"), Layout::Any);
      if (bt.shape() != Shape{1, 2 * g * h}) fail(n, "B must be " + shape_str({1, 2 * g * h}));
      std::copy(bt.values<float>().begin(), bt.values<float>().end(), B.begin());
    }
    const std::span<const float> bs(B);
    const std::size_t half = static_cast<std::size_t>(g * h);
    const int b_input = has_input(n, 3) ? 3 : 1;  // an absent B sorts with W
    weight(n, b_input, l.name + ".bias_ih", torch(bs.subspan(0, half), {g * h}, 1), 1);
    weight(n, b_input, l.name + ".bias_hh", torch(bs.subspan(half), {g * h}, 1), 2);
  }

  void squeeze(const onnx::NodeProto& n) {
    const Val& x = value(n, 0);
    std::vector<std::int64_t> axes =
        opset_ >= 13 && has_input(n, 1) ? to_ints(n, constant(n, 1, "axes")) : attr_ints(n, "axes");
    if (x.form != Form::RnnState || axes != std::vector<std::int64_t>{0})
      fail(n, "only a Squeeze of axis 0 of an LSTM/GRU state Y_h is supported");
    alias(n.output(0), {x.ir, Form::Plain, 2});
  }

  // ---- the whole model
  // ---------------------------------------------------------------------------

  // Names exporters give every graph (PyTorch, tf2onnx...): the file name says more.
  static bool generic_graph_name(const std::string& name) {
    return name == "torch_jit" || name == "torch-jit-export" || name == "main_graph" ||
           name == "tf2onnx" || name == "graph";
  }

  void finish(const onnx::GraphProto& g, OnnxModel& out) {
    if (g.output_size() != 1) fail("the graph must have exactly one output (the logits)");
    const onnx::ValueInfoProto& o = g.output(0);
    auto it = vals_.find(o.name());
    if (it == vals_.end() || it->second.form != Form::Plain || it->second.ir == "input")
      fail("output '" + o.name() + "' is not produced by a supported layer");
    if (m_.layers.empty()) fail("the graph has no layers");
    if (it->second.ir != m_.layers.back().name)
      fail("output '" + o.name() + "' must come from the last layer");

    auto meta = out.metadata.find(std::string(kModelKey));
    if (meta != out.metadata.end() && !meta->second.empty()) {
      m_.name = meta->second;
    } else if (!g.name().empty() && !generic_graph_name(g.name())) {
      m_.name = g.name();
    } else {
      m_.name = std::filesystem::path(path_).stem().string();
    }

    // Canonical inputs: a single input that is just the previous layer is left implicit.
    for (std::size_t i = 0; i < m_.layers.size(); ++i) {
      ir::Layer& l = m_.layers[i];
      const std::string prev = i == 0 ? "input" : m_.layers[i - 1].name;
      if (l.inputs.size() == 1 && l.inputs[0] == prev) l.inputs.clear();
    }

    const auto& od = o.type().tensor_type().shape().dim();
    try {
      if (od.size() == 2 && od[1].has_dim_value()) {
        m_.num_classes = od[1].dim_value();
      } else {
        const Shape last = ir::infer_shapes(m_).back();
        if (last.size() == 1) m_.num_classes = last[0];
      }
      ir::validate(m_);
    } catch (const InputError& e) {
      fail(e.what());
    }

    std::stable_sort(weights_.begin(), weights_.end(), [](const auto& a, const auto& b) {
      return a.order != b.order ? a.order < b.order : a.sub < b.sub;
    });
    for (PendingWeight& w : weights_) {
      if (out.weights.contains(w.name)) fail("weight '" + w.name + "' is defined twice");
      out.weights.set(w.name, std::move(w.t));
    }
    try {
      out.weights.check_against(m_);
    } catch (const InputError& e) {
      fail(e.what());
    }
    out.model = std::move(m_);
  }
};

}  // namespace

OnnxModel onnx_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open the file: " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw InputError(path + ": read error");
  const std::string bytes = buf.str();

  onnx::ModelProto mp;
  if (bytes.empty()) throw InputError(path + ": the file is empty, not an ONNX model");
  if (!mp.ParseFromString(bytes))
    throw InputError(path + ": not an ONNX model (the protobuf does not parse; truncated or " +
                     "another format?)");
  if (!mp.has_graph()) throw InputError(path + ": not an ONNX model (no graph)");
  try {
    onnx::checker::check_model(mp);
  } catch (const std::exception& e) {
    throw InputError(path + ": fails the ONNX checker: " + e.what());
  }
  return Reader(path, mp).run();
}

}  // namespace crossdl
