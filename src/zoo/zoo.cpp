// The zoo's entry points and the small layer-assembly helper its builders share.
#include "crossdl/zoo.h"

#include "builders.h"
#include "crossdl/status.h"

namespace crossdl::zoo {

namespace detail {

Builder::Builder(std::string name, const InputSpec& in) {
  m_.name = std::move(name);
  m_.input_shape = in.sample_shape;
  m_.input_dtype = in.dtype;
  m_.num_classes = in.num_classes;
}

ir::Layer& Builder::add(ir::Layer l) {
  if (l.inputs.size() == 1 && l.inputs[0] == last_) l.inputs.clear();
  last_ = l.name;
  m_.layers.push_back(std::move(l));
  return m_.layers.back();
}

ir::Layer& Builder::conv(const std::string& name, std::int64_t out, std::int64_t k,
                         std::int64_t stride, std::int64_t pad, bool bias) {
  ir::Layer l;
  l.name = name;
  l.op = ir::Op::Conv2d;
  l.out = out;
  l.kernel[0] = l.kernel[1] = k;
  l.stride[0] = l.stride[1] = stride;
  l.pad[0] = l.pad[1] = pad;
  l.bias = bias;
  return add(std::move(l));
}

ir::Layer& Builder::dense(const std::string& name, std::int64_t out) {
  ir::Layer l;
  l.name = name;
  l.op = ir::Op::Dense;
  l.out = out;
  return add(std::move(l));
}

ir::Layer& Builder::simple(const std::string& name, ir::Op op) {
  ir::Layer l;
  l.name = name;
  l.op = op;
  return add(std::move(l));
}

ir::Layer& Builder::max_pool(const std::string& name, std::int64_t k, std::int64_t stride) {
  ir::Layer l;
  l.name = name;
  l.op = ir::Op::MaxPool2d;
  l.kernel[0] = l.kernel[1] = k;
  l.stride[0] = l.stride[1] = stride;
  return add(std::move(l));
}

ir::Model Builder::finish() {
  try {
    ir::validate(m_);
  } catch (const InputError& e) {
    throw InputError("model " + m_.name + " cannot take input " + shape_str(m_.input_shape) + ": " +
                     e.what());
  }
  return std::move(m_);
}

void require_image(const std::string& model, const InputSpec& in) {
  if (in.sample_shape.size() != 3 || in.dtype != DType::F32)
    throw InputError("model " + model + " needs float images [C,H,W], got " +
                     std::string(dtype_name(in.dtype)) + " " + shape_str(in.sample_shape));
}

}  // namespace detail

InputSpec input_spec(const Dataset& ds) {
  InputSpec in;
  in.sample_shape = ds.sample_shape();
  in.dtype = ds.sample_dtype();
  in.num_classes = ds.num_classes;
  in.vocab_size = ds.is_text() ? ds.vocab_size : 0;
  return in;
}

std::vector<std::string> model_names() {
  return {"lenet1", "lenet5", "resnet20", "vgg16", "lstm", "gru"};
}

ir::Model build(const std::string& name, const InputSpec& in) {
  if (in.num_classes <= 0)
    throw InputError("model " + name + ": num_classes must be positive, got " +
                     std::to_string(in.num_classes));
  if (name == "lenet1") return detail::build_lenet1(in);
  if (name == "lenet5") return detail::build_lenet5(in);
  if (name == "resnet20") return detail::build_resnet20(in);
  if (name == "vgg16") return detail::build_vgg16(in);
  if (name == "lstm") return detail::build_recurrent(name, ir::Op::LSTM, in);
  if (name == "gru") return detail::build_recurrent(name, ir::Op::GRU, in);
  std::string known;
  for (const std::string& n : model_names()) {
    if (!known.empty()) known += ", ";
    known += n;
  }
  throw InputError("unknown model '" + name + "'; known models: " + known);
}

}  // namespace crossdl::zoo
