// Writes a model and its weights as a standard ONNX file (IR version 8, opset 13 or 17).
//
// Each IR layer becomes one main node named like the layer whose output tensor also carries the
// layer's name; helper nodes are named "<layer>/<what>". Weights are initializers named like the
// weight set, except recurrent layers, whose PyTorch tensors are regrouped into ONNX's
// "<layer>.W", "<layer>.R" and "<layer>.B" (gate blocks permuted, values untouched).
//
// Sequences: ONNX's LSTM/GRU take [T,N,F]. ImageToSequence writes that time-major form directly
// (Transpose 2,0,1,3 + Reshape 0,0,-1); an embedding's [N,T,E] output gets a Transpose 1,0,2 in
// front of the recurrent node. Any other consumer of a time-major tensor gets it back batch-major.
//
// BatchNormalization: ONNX's momentum is 1 - PyTorch's (running = m*running + (1-m)*batch); the
// exact PyTorch value also goes into the node's doc_string so that reading it back is bit-exact.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <unistd.h>
#include <bit>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "crossdl/onnx_io.h"
#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "onnx_common.h"

#ifndef CROSSDL_VERSION
#define CROSSDL_VERSION "unknown"
#endif

namespace crossdl {

namespace {

using namespace onnx_detail;
static_assert(std::endian::native == std::endian::little,
              "ONNX raw_data is little-endian; this writer copies native bytes");

struct Value {
  std::string name;  // ONNX tensor
  bool time_major = false;
};

class Writer {
 public:
  Writer(const ir::Model& m, const WeightSet& w, const OnnxWriteOptions& opt, onnx::ModelProto& mp)
      : m_(m), w_(w), opt_(opt), mp_(mp), g_(*mp.mutable_graph()), q_(opt.quant) {}

  void run() {
    header();
    initializers();
    io();
    for (std::size_t i = 0; i < m_.layers.size(); ++i) layer(i);
    const std::string& last = m_.layers.back().name;
    if (last != "logits") node("Identity", last + "/output", {values_.at(last).name}, {"logits"});
    if (opt_.layer_outputs) layer_outputs();
  }

 private:
  const ir::Model& m_;
  const WeightSet& w_;
  const OnnxWriteOptions& opt_;
  onnx::ModelProto& mp_;
  onnx::GraphProto& g_;
  std::map<std::string, Value> values_;  // IR tensor ("input" or a layer) -> ONNX tensor
  std::set<std::string> names_;          // every ONNX tensor name, to catch clashes
  const quant::QuantModel* q_;           // null for fp32

  void claim(const std::string& name) {
    if (!names_.insert(name).second)
      throw InputError("model " + m_.name + ": the ONNX name '" + name +
                       "' would be used twice (a layer name clashes with a weight or helper name)");
  }

  void header() {
    mp_.set_ir_version(8);
    mp_.set_producer_name("crossdl");
    mp_.set_producer_version(CROSSDL_VERSION);
    auto* os = mp_.add_opset_import();
    os->set_domain("");
    os->set_version(opt_.opset);
    g_.set_name(m_.name);
    auto meta = [&](const std::string& k, const std::string& v) {
      auto* p = mp_.add_metadata_props();
      p->set_key(k);
      p->set_value(v);
    };
    meta(std::string(kModelKey), m_.name);
    meta(std::string(kFormatKey), std::string(kFormatVersion));
    for (const auto& [k, v] : opt_.metadata) {
      if (k == kModelKey || k == kFormatKey)
        throw InputError("onnx_write: metadata key '" + k + "' is reserved for crossdl");
      meta(k, v);
    }
  }

  static void set_dims(onnx::TensorProto& t, const Shape& s) {
    for (std::int64_t d : s) t.add_dims(d);
  }

  void add_float_init(const std::string& name, const Shape& shape, const float* data,
                      std::size_t n) {
    claim(name);
    auto* t = g_.add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    set_dims(*t, shape);
    t->set_raw_data(reinterpret_cast<const char*>(data), n * sizeof(float));
  }

  // Recurrent tensors regrouped as ONNX wants them: W [1,G*H,F], R [1,G*H,H], B [1,2*G*H].
  void recurrent_inits(const ir::Layer& l) {
    const bool lstm = l.op == ir::Op::LSTM;
    const std::span<const int> order =
        lstm ? std::span<const int>(kLstmOnnxFromTorch) : std::span<const int>(kGruOnnxFromTorch);
    const std::int64_t h = l.out;
    const std::int64_t gh = static_cast<std::int64_t>(order.size()) * h;
    const Tensor& wih = w_.at(l.name + ".weight_ih");
    const Tensor& whh = w_.at(l.name + ".weight_hh");
    const std::int64_t f = wih.dim(1);
    auto W = permute_gates(wih.values<float>(), order, h, f, true);
    auto R = permute_gates(whh.values<float>(), order, h, h, true);
    auto B = permute_gates(w_.at(l.name + ".bias_ih").values<float>(), order, h, 1, true);
    auto Bh = permute_gates(w_.at(l.name + ".bias_hh").values<float>(), order, h, 1, true);
    B.insert(B.end(), Bh.begin(), Bh.end());
    add_float_init(l.name + ".W", {1, gh, f}, W.data(), W.size());
    add_float_init(l.name + ".R", {1, gh, h}, R.data(), R.size());
    add_float_init(l.name + ".B", {1, 2 * gh}, B.data(), B.size());
  }

  // Initializers in the weight set's order, so that the reader restores that order.
  void initializers() {
    w_.check_against(m_);
    const std::vector<ir::WeightSpec> specs = ir::weight_specs(m_);
    std::map<std::string, const ir::WeightSpec*> by_name;
    for (const ir::WeightSpec& s : specs) by_name[s.name] = &s;
    std::set<std::string> recurrent_done;
    for (const std::string& name : w_.names()) {
      auto it = by_name.find(name);
      if (it == by_name.end())
        throw InputError("onnx_write: weight '" + name + "' is not used by model " + m_.name);
      const ir::WeightSpec& s = *it->second;
      const Tensor& t = w_.at(name);
      if (t.layout() != Layout::Any && t.layout() != s.layout)
        throw InputError("onnx_write: weight '" + name + "' is declared " +
                         std::string(layout_name(t.layout())) + ", the file stores " +
                         std::string(layout_name(s.layout)) + "; convert it first");
      const ir::Layer& l = *m_.find(s.layer);
      if (l.op == ir::Op::LSTM || l.op == ir::Op::GRU) {
        if (recurrent_done.insert(l.name).second) recurrent_inits(l);
        continue;
      }
      if (q_ != nullptr && quantized_weight(name, s, t)) continue;
      add_float_init(name, t.shape(), t.values<float>().data(),
                     static_cast<std::size_t>(t.numel()));
    }
  }

  // ---- reduced precision (OnnxWriteOptions::quant) ----------------------------------------
  template <class T>
  void add_init(const std::string& name, int elem, const Shape& shape, const std::vector<T>& v) {
    claim(name);
    auto* t = g_.add_initializer();
    t->set_name(name);
    t->set_data_type(elem);
    set_dims(*t, shape);
    t->set_raw_data(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }

  // DequantizeLinear of an initializer with crossdl's parameters: scale and zero point are
  // scalars per tensor, vectors along `axis` per channel.
  void dequantize_init(const std::string& out, const std::string& qname, const quant::QParams& p,
                       int zp_elem) {
    const bool per_channel = p.axis >= 0 && p.scale.size() > 1;
    const Shape ps = per_channel ? Shape{static_cast<std::int64_t>(p.scale.size())} : Shape{};
    add_init(out + "/scale", onnx::TensorProto::FLOAT, ps, p.scale);
    if (zp_elem == onnx::TensorProto::INT32) {
      add_init(out + "/zero_point", zp_elem, ps, p.zero_point);
    } else {
      std::vector<std::int8_t> zp(p.zero_point.begin(), p.zero_point.end());
      add_init(out + "/zero_point", zp_elem, ps, zp);
    }
    onnx::NodeProto& n = node("DequantizeLinear", out + "/dequantize",
                              {qname, out + "/scale", out + "/zero_point"}, {out});
    if (per_channel) attr(n, "axis", static_cast<std::int64_t>(p.axis));
  }

  // Writes a weight the scheme stores in reduced precision, followed by the node that gives the
  // float tensor under its usual name (so the layer's node reads it as before). False when the
  // scheme keeps this weight in float.
  bool quantized_weight(const std::string& name, const ir::WeightSpec& s, const Tensor& t) {
    using quant::Scheme;
    const Scheme scheme = q_->options.scheme;
    if (scheme == Scheme::FP16 || scheme == Scheme::BF16) {
      const bool half = scheme == Scheme::FP16;
      std::vector<std::uint16_t> bits;
      for (float v : t.values<float>())
        bits.push_back(half ? quant::fp16_bits(v) : quant::bf16_bits(v));
      const std::string stored = name + (half ? "/fp16" : "/bf16");
      add_init(stored, half ? onnx::TensorProto::FLOAT16 : onnx::TensorProto::BFLOAT16, t.shape(),
               bits);
      attr(node("Cast", name + "/cast", {stored}, {name}), "to",
           static_cast<std::int64_t>(onnx::TensorProto::FLOAT));
      return true;
    }
    if (auto w = q_->weight_q.find(name); w != q_->weight_q.end()) {
      add_init(name + "/quantized", onnx::TensorProto::INT8, t.shape(), w->second);
      dequantize_init(name, name + "/quantized", q_->weight_params.at(name),
                      onnx::TensorProto::INT8);
      return true;
    }
    if (auto b = q_->bias_q.find(name); b != q_->bias_q.end()) {
      add_init(name + "/quantized", onnx::TensorProto::INT32, t.shape(), b->second);
      dequantize_init(name, name + "/quantized", q_->bias_params.at(name),
                      onnx::TensorProto::INT32);
      return true;
    }
    (void)s;
    return false;
  }

  // Whether layer `name`'s output is followed by QuantizeLinear/DequantizeLinear: the quantized
  // outputs and the layers that pass their input's parameters through.
  bool activation_quantized(const std::string& name) const {
    return q_ != nullptr && q_->options.scheme == quant::Scheme::Int8Static &&
           quant_output(*q_, m_, name);
  }

  // value (float) -> QuantizeLinear -> DequantizeLinear with the parameters of `name`'s output;
  // returns the dequantized tensor the next node reads.
  std::string quantize_dequantize(const std::string& name, const std::string& value) {
    const quant::QParams& p = q_->output_params(name);
    const std::string base = name == "input" ? std::string("input") : name;
    add_init(base + "/scale", onnx::TensorProto::FLOAT, {}, std::vector<float>{p.scale.at(0)});
    add_init(base + "/zero_point", onnx::TensorProto::INT8, {},
             std::vector<std::int8_t>{static_cast<std::int8_t>(p.zero_point.at(0))});
    node("QuantizeLinear", base + "/quantize", {value, base + "/scale", base + "/zero_point"},
         {base + "/q"});
    node("DequantizeLinear", base + "/dequantize",
         {base + "/q", base + "/scale", base + "/zero_point"}, {base + "/dq"});
    return base + "/dq";
  }

  static void tensor_type(onnx::ValueInfoProto& vi, int elem, const Shape& sample) {
    auto* tt = vi.mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    auto* shape = tt->mutable_shape();
    shape->add_dim()->set_dim_param("batch");
    for (std::int64_t d : sample) shape->add_dim()->set_dim_value(d);
  }

  // Extra graph outputs declared with the shapes the IR infers, so that strict shape inference
  // checks them against the nodes. A time-major tensor is declared as it is, [T,batch,F]: a
  // Transpose added here would be a node that the timing runs (without these outputs) lack.
  void layer_outputs() {
    const std::vector<Shape> shapes = ir::infer_shapes(m_);
    for (std::size_t i = 0; i < m_.layers.size(); ++i) {
      const ir::Layer& l = m_.layers[i];
      if (l.name == "logits") continue;  // already the first graph output
      if (q_ != nullptr && q_->options.scheme == quant::Scheme::Int8Static) {
        // Only the quantized outputs are exposed, each through a DequantizeLinear of its own: a
        // graph output read by the next node too would stop ONNX Runtime from fusing that node
        // into its integer kernel, and the capture would measure another computation.
        if (!activation_quantized(l.name)) continue;
        node("DequantizeLinear", l.name + "/expose",
             {l.name + "/q", l.name + "/scale", l.name + "/zero_point"}, {l.name});
        auto* o = g_.add_output();
        o->set_name(l.name);
        tensor_type(*o, onnx::TensorProto::FLOAT, shapes[i]);
        continue;
      }
      const Value& v = values_.at(l.name);
      auto* o = g_.add_output();
      o->set_name(v.name);
      if (!v.time_major) {
        tensor_type(*o, onnx::TensorProto::FLOAT, shapes[i]);
        continue;
      }
      auto* tt = o->mutable_type()->mutable_tensor_type();
      tt->set_elem_type(onnx::TensorProto::FLOAT);
      auto* shape = tt->mutable_shape();
      shape->add_dim()->set_dim_value(shapes[i].at(0));
      shape->add_dim()->set_dim_param("batch");
      for (std::size_t d = 1; d < shapes[i].size(); ++d)
        shape->add_dim()->set_dim_value(shapes[i][d]);
    }
  }

  void io() {
    claim("input");  // "logits" is claimed by the node that produces it
    auto* in = g_.add_input();
    in->set_name("input");
    tensor_type(*in,
                m_.input_dtype == DType::I64 ? onnx::TensorProto::INT64 : onnx::TensorProto::FLOAT,
                m_.input_shape);
    auto* out = g_.add_output();
    out->set_name("logits");
    tensor_type(*out, onnx::TensorProto::FLOAT, {m_.num_classes});
    values_["input"] = {"input", false};
    if (activation_quantized("input"))
      values_["input"] = {quantize_dequantize("input", "input"), false};
  }

  onnx::NodeProto& node(const std::string& op, const std::string& name,
                        const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs) {
    auto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const std::string& i : inputs) n->add_input(i);
    for (const std::string& o : outputs) {
      if (!o.empty()) claim(o);
      n->add_output(o);
    }
    return *n;
  }

  static void attr(onnx::NodeProto& n, const std::string& name, std::int64_t v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, float v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name,
                   const std::vector<std::int64_t>& v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (std::int64_t x : v) a->add_ints(x);
  }

  // A Constant node holding an int64 vector; returns its output.
  std::string constant(const std::string& name, const std::vector<std::int64_t>& v) {
    onnx::NodeProto& n = node("Constant", name, {}, {name});
    auto* a = n.add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    auto* t = a->mutable_t();
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<std::int64_t>(v.size()));
    for (std::int64_t x : v) t->add_int64_data(x);
    return name;
  }

  std::string transpose(const std::string& name, const std::string& in,
                        const std::vector<std::int64_t>& perm) {
    attr(node("Transpose", name, {in}, {name}), "perm", perm);
    return name;
  }

  // The ONNX tensor of an IR input, converted to the major order the consumer needs.
  std::string input_for(const std::string& ir_name, const std::string& consumer, bool time_major,
                        std::size_t k) {
    const Value& v = values_.at(ir_name);
    if (v.time_major == time_major) return v.name;
    const std::string helper = consumer + (time_major ? "/to_time_major" : "/to_batch_major") +
                               (k ? std::to_string(k) : "");
    return transpose(helper, v.name, {1, 0, 2});
  }

  void window(onnx::NodeProto& n, const ir::Layer& l) {
    attr(n, "kernel_shape", std::vector<std::int64_t>{l.kernel[0], l.kernel[1]});
    attr(n, "strides", std::vector<std::int64_t>{l.stride[0], l.stride[1]});
    attr(n, "pads", std::vector<std::int64_t>{l.pad[0], l.pad[1], l.pad[0], l.pad[1]});
  }

  void layer(std::size_t i) {
    const ir::Layer& l = m_.layers[i];
    const std::vector<std::string> ins = ir::resolved_inputs(m_, i);
    const bool recurrent = l.op == ir::Op::LSTM || l.op == ir::Op::GRU;
    std::vector<std::string> x;
    for (std::size_t k = 0; k < ins.size(); ++k)
      x.push_back(input_for(ins[k], l.name, recurrent, k));
    const std::string& n = l.name;
    // A quantized output: the node writes "<layer>/f", QuantizeLinear and DequantizeLinear follow.
    const bool qdq = activation_quantized(n);
    const std::string o = qdq ? n + "/f" : n;
    bool out_time_major = false;
    switch (l.op) {
      case ir::Op::Conv2d: {
        std::vector<std::string> in = {x[0], n + ".weight"};
        if (l.bias) in.push_back(n + ".bias");
        window(node("Conv", n, in, {o}), l);
        break;
      }
      case ir::Op::Dense: {
        std::vector<std::string> in = {x[0], n + ".weight"};
        if (l.bias) in.push_back(n + ".bias");
        attr(node("Gemm", n, in, {o}), "transB", std::int64_t{1});
        break;
      }
      case ir::Op::ReLU:
        node("Relu", n, x, {o});
        break;
      case ir::Op::Tanh:
        node("Tanh", n, x, {o});
        break;
      case ir::Op::Sigmoid:
        node("Sigmoid", n, x, {o});
        break;
      case ir::Op::MaxPool2d:
        window(node("MaxPool", n, x, {o}), l);
        break;
      case ir::Op::AvgPool2d: {
        onnx::NodeProto& p = node("AveragePool", n, x, {o});
        window(p, l);
        attr(p, "count_include_pad", std::int64_t{0});
        break;
      }
      case ir::Op::GlobalAvgPool:
        node("GlobalAveragePool", n, x, {o});
        break;
      case ir::Op::BatchNorm2d: {
        onnx::NodeProto& b =
            node("BatchNormalization", n,
                 {x[0], n + ".weight", n + ".bias", n + ".running_mean", n + ".running_var"}, {o});
        attr(b, "epsilon", l.eps);
        attr(b, "momentum", 1.0f - l.momentum);
        char buf[32];
        auto r = std::to_chars(buf, buf + sizeof buf, l.momentum);
        b.set_doc_string(std::string(kMomentumTag) + std::string(buf, r.ptr));
        break;
      }
      case ir::Op::Add:
        node("Add", n, x, {o});
        break;
      case ir::Op::Flatten:
        attr(node("Flatten", n, x, {o}), "axis", std::int64_t{1});
        break;
      case ir::Op::Softmax:
        attr(node("Softmax", n, x, {o}), "axis", std::int64_t{-1});
        break;
      case ir::Op::Embedding:
        attr(node("Gather", n, {n + ".weight", x[0]}, {o}), "axis", std::int64_t{0});
        break;
      case ir::Op::ImageToSequence: {
        const std::string t = transpose(n + "/transpose", x[0], {2, 0, 1, 3});
        node("Reshape", n, {t, constant(n + "/shape", {0, 0, -1})}, {o});
        out_time_major = true;
        break;
      }
      case ir::Op::LSTM:
      case ir::Op::GRU: {
        const std::string yh = n + "/Y_h";
        onnx::NodeProto& r = node(l.op == ir::Op::LSTM ? "LSTM" : "GRU", n,
                                  {x[0], n + ".W", n + ".R", n + ".B"}, {"", yh});
        attr(r, "hidden_size", l.out);
        if (l.op == ir::Op::GRU) attr(r, "linear_before_reset", std::int64_t{1});
        node("Squeeze", n + "/squeeze", {yh, constant(n + "/axes", {0})}, {o});
        break;
      }
    }
    values_[n] = {qdq ? quantize_dequantize(n, o) : n, out_time_major};
  }
};

void write_atomically(const std::string& path, const std::string& bytes) {
  namespace fs = std::filesystem;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError(path + ": cannot create " + tmp);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw InputError(path + ": write failed");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw InputError(path + ": cannot rename the temporary file into place: " + ec.message());
  }
}

}  // namespace

void onnx_write(const std::string& path, const ir::Model& m, const WeightSet& w,
                const OnnxWriteOptions& opt) {
  if (opt.opset != 13 && opt.opset != 17)
    throw InputError("onnx_write: opset " + std::to_string(opt.opset) +
                     " is not supported; use 13 or 17");
  ir::validate(m);
  onnx::ModelProto mp;
  Writer(m, w, opt, mp).run();

  // Anything the checker or strict shape inference rejects is a bug in this writer, not bad input.
  try {
    onnx::checker::check_model(mp);
  } catch (const std::exception& e) {
    throw std::logic_error("onnx_write: model " + m.name + " fails the ONNX checker: " + e.what());
  }
  try {
    onnx::ModelProto inferred = mp;
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1, false));
  } catch (const std::exception& e) {
    throw std::logic_error("onnx_write: model " + m.name +
                           " fails ONNX shape inference: " + e.what());
  }
  std::string bytes;
  if (!mp.SerializeToString(&bytes))
    throw std::logic_error("onnx_write: cannot serialise model " + m.name);
  write_atomically(path, bytes);
}

}  // namespace crossdl
