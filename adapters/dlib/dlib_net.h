// The dlib adapter's internals, shared by its translation units: a dlib network of any
// compile-time type behind one interface (Net), tied to the IR layer by layer.
//
// dlib's network types are long nested templates and compile slowly, so each zoo family is
// instantiated in its own file (dlib_lenet.cpp, dlib_resnet.cpp, dlib_vgg.cpp); this header holds
// what they share. It includes dlib's headers and is private to adapters/dlib.
#pragma once

#include <dlib/dnn.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <istream>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/adapter_guard.h"
#include "crossdl/ir.h"

namespace crossdl::dlibx {

// A Train net computes gradients with batch statistics in its BatchNorm layers (dlib's bn_con); an
// Eval net replaces each of them by the affine map PyTorch's evaluation mode computes from the
// running statistics (dlib's affine_ in CONV_MODE). Models without BatchNorm use one type for both.
enum class Mode { Train, Eval };

// One parametric layer for the optimiser.
struct Slot {
  const ir::Layer* layer = nullptr;
  dlib::tensor* params = nullptr;
  const dlib::tensor* grad = nullptr;
};

// What Runner, Trainer and the runtime need from a network, whatever its compile-time type.
class Net {
 public:
  virtual ~Net() = default;
  virtual void import_weights(const WeightSet& w) = 0;
  // Train nets only: the weights and the running statistics tracked the PyTorch way.
  virtual WeightSet export_weights() const = 0;
  virtual Tensor logits(const Tensor& x) = 0;
  virtual std::vector<LayerOutput> layer_outputs(const Tensor& x) = 0;
  virtual Tensor input_gradient(const Tensor& x, const Tensor& y, double& loss) = 0;
  // Train nets only: parameter gradients of the mean cross-entropy (returned) and one update of
  // the BatchNorm running statistics from this batch.
  virtual double train_gradients(const Tensor& x, const Tensor& y) = 0;
  virtual std::vector<Slot>& slots() = 0;
  // dlib::serialize of the whole network (the runtime's artefact).
  virtual void save(std::ostream& out) = 0;
};

// "19.24.0"
std::string version();
// Whether there is a dlib type for `m`: a zoo model equal to zoo::build(name, its input, its
// classes), else the reason.
Capability supports(const ir::Model& m);

// Runs `fn`, turning any library exception (dlib::error is a std::exception) into a failed Status.
template <class Fn>
Status guarded(const char* what, Fn&& fn) {
  return guarded_call(what, "dlib", std::forward<Fn>(fn));
}

// The zoo models with a dlib type: lenet1, lenet5, resnet20, vgg16 (any image input shape and
// class count: every dlib layer sizes itself from its input at the first forward pass).
bool has_type(const std::string& model_name);
// A fresh network for `m` (which must equal its zoo model); weights still to import.
std::unique_ptr<Net> make_net(const ir::Model& m, Mode mode);
// An Eval network read with dlib::deserialize; dlib::serialization_error when `in` does not hold
// one of `m`'s type, InputError when its tensors do not fit `m`.
std::unique_ptr<Net> read_net(std::istream& in, const ir::Model& m);

// Per family, defined in the file that instantiates its types.
std::unique_ptr<Net> make_lenet(const ir::Model& m, Mode mode);
std::unique_ptr<Net> read_lenet(std::istream& in, const ir::Model& m);
std::unique_ptr<Net> make_resnet(const ir::Model& m, Mode mode);
std::unique_ptr<Net> read_resnet(std::istream& in, const ir::Model& m);
std::unique_ptr<Net> make_vgg(const ir::Model& m, Mode mode);
std::unique_ptr<Net> read_vgg(std::istream& in, const ir::Model& m);

// ---- layer kinds -------------------------------------------------------------------------------

enum class Kind { None, Conv, BatchNorm, Affine, ReLU, MaxPool, AvgPool, Add, Dense };

template <class T>
struct kind_of : std::integral_constant<Kind, Kind::None> {};
template <long N, long R, long C, int SY, int SX, int PY, int PX>
struct kind_of<dlib::con_<N, R, C, SY, SX, PY, PX>> : std::integral_constant<Kind, Kind::Conv> {};
template <>
struct kind_of<dlib::bn_<dlib::CONV_MODE>> : std::integral_constant<Kind, Kind::BatchNorm> {};
template <>
struct kind_of<dlib::affine_> : std::integral_constant<Kind, Kind::Affine> {};
template <>
struct kind_of<dlib::relu_> : std::integral_constant<Kind, Kind::ReLU> {};
template <long R, long C, int SY, int SX, int PY, int PX>
struct kind_of<dlib::max_pool_<R, C, SY, SX, PY, PX>>
    : std::integral_constant<Kind, Kind::MaxPool> {};
template <long R, long C, int SY, int SX, int PY, int PX>
struct kind_of<dlib::avg_pool_<R, C, SY, SX, PY, PX>>
    : std::integral_constant<Kind, Kind::AvgPool> {};
template <template <typename> class Tag>
struct kind_of<dlib::add_prev_<Tag>> : std::integral_constant<Kind, Kind::Add> {};
template <unsigned long N, dlib::fc_bias_mode B>
struct kind_of<dlib::fc_<N, B>> : std::integral_constant<Kind, Kind::Dense> {};

// A con_'s geometry, to check it against the IR layer it is bound to.
template <class T>
struct con_geometry;
template <long N, long R, long C, int SY, int SX, int PY, int PX>
struct con_geometry<dlib::con_<N, R, C, SY, SX, PY, PX>> {
  static constexpr long kernel[2] = {R, C};
  static constexpr long stride[2] = {SY, SX};
  static constexpr long pad[2] = {PY, PX};
};

const char* kind_name(Kind k);
bool kind_matches(Kind k, ir::Op op);

// One dlib computational layer (tags and skips are not: they only route tensors), with accessors
// bound to the layer object inside the network.
struct Entry {
  Kind kind = Kind::None;
  const ir::Layer* layer = nullptr;
  // nullptr when an in-place layer (relu_, affine_) on top computes in this layer's buffer: dlib
  // then refuses get_output() (a dlib::error, not a fatal_error), since the value is gone.
  std::function<const dlib::tensor*()> output;
  std::function<const dlib::tensor&()> input;  // BatchNorm only: what it normalises
  dlib::tensor* params = nullptr;
  const dlib::tensor* grad = nullptr;
  dlib::affine_* affine = nullptr;
  // Before the first forward pass: makes the layer what the IR layer says (no conv bias,
  // PyTorch's BatchNorm eps, per-channel affine, the dense width). Throws on a mismatch.
  std::function<void(const ir::Layer&)> configure;
};

struct Collect {
  std::vector<Entry>* out;

  template <class T, class U, class E>
  void operator()(std::size_t, dlib::add_layer<T, U, E>& l) const {
    constexpr Kind k = kind_of<T>::value;
    static_assert(k != Kind::None, "a dlib layer type the adapter does not map to the IR");
    Entry e;
    e.kind = k;
    e.output = [&l]() -> const dlib::tensor* {
      try {
        return &l.get_output();
      } catch (const dlib::error&) {
        return nullptr;
      }
    };
    e.params = &l.layer_details().get_layer_params();
    e.grad = &l.get_parameter_gradient();
    if constexpr (k == Kind::Conv) {
      e.configure = [&l](const ir::Layer& ir) {
        using G = con_geometry<T>;
        for (int a = 0; a < 2; ++a)
          if (G::kernel[a] != ir.kernel[a] || G::stride[a] != ir.stride[a] ||
              G::pad[a] != ir.pad[a])
            throw std::logic_error("dlib adapter: " + ir.name +
                                   ": the dlib con_ differs from the IR in kernel, stride or "
                                   "padding");
        if (l.layer_details().num_filters() != ir.out)
          throw std::logic_error("dlib adapter: " + ir.name + " has " + std::to_string(ir.out) +
                                 " filters in the IR, " +
                                 std::to_string(l.layer_details().num_filters()) + " in dlib");
        // dlib 19.24 can drop the bias, so a bias-free conv has no parameter to keep at 0.
        if (!ir.bias) l.layer_details().disable_bias();
      };
    } else if constexpr (k == Kind::BatchNorm) {
      e.input = [&l]() -> const dlib::tensor& { return l.subnet().get_output(); };
      // dlib's default eps is 1e-4, PyTorch's 1e-5: the IR's eps is set explicitly. The window
      // only drives dlib's own running averages, which the adapter does not use.
      e.configure = [&l](const ir::Layer& ir) {
        l.layer_details() = dlib::bn_<dlib::CONV_MODE>(100, static_cast<double>(ir.eps));
      };
    } else if constexpr (k == Kind::Affine) {
      e.affine = &l.layer_details();
      // A default affine_ is FC_MODE (one scale per value); BatchNorm2d is one per channel.
      e.configure = [&l](const ir::Layer&) { l.layer_details() = dlib::affine_(dlib::CONV_MODE); };
    } else if constexpr (k == Kind::Dense) {
      e.configure = [&l](const ir::Layer& ir) {
        if (!ir.bias) throw std::logic_error("dlib adapter: " + ir.name + " has no bias");
        l.layer_details().set_num_outputs(ir.out);
      };
    } else {
      e.configure = [](const ir::Layer&) {};
    }
    out->push_back(std::move(e));
  }
  template <class L>
  void operator()(std::size_t, L&) const {}  // input, loss, tag and skip layers
};

// ---- tensors -----------------------------------------------------------------------------------

dlib::resizable_tensor to_dlib(const Tensor& x, const Shape& sample);
std::vector<unsigned long> to_labels(const Tensor& y, std::int64_t batch, std::int64_t classes);
Tensor from_dlib(const dlib::tensor& t, Shape shape, Layout layout);

// ---- the shared, type-independent part of a network ---------------------------------------------

// The layer map and the weight conversions; NetOf adds the dlib network itself.
class NetBase : public Net {
 public:
  std::vector<Slot>& slots() override { return slots_; }
  void import_weights(const WeightSet& w) override;
  WeightSet export_weights() const override;
  std::vector<LayerOutput> layer_outputs(const Tensor& x) override;

 protected:
  NetBase(const ir::Model& m, Mode mode) : model_(m), mode_(mode) {}
  // Ties `found` (dlib's visit order: output first) to the IR layers, in order, by kind.
  void bind(std::vector<Entry> found);
  // Every parameter tensor against the weight set's shapes; throws InputError (a loaded file) or
  // logic_error (a fresh net) naming the layer.
  void check_params(bool from_file) const;
  // Every mapped layer's output shape after a forward pass of batch `n` against the IR's.
  void check_outputs(std::int64_t n) const;
  void update_running_stats();
  virtual const dlib::tensor& forward(const Tensor& x) = 0;

  ir::Model model_;
  Mode mode_;
  std::vector<Entry> entries_;  // input to output
  std::vector<int> entry_of_;   // per IR layer: index into entries_, -1 for Flatten
  std::vector<Shape> shapes_;   // IR output shapes
  std::vector<Slot> slots_;
  // Train nets: BatchNorm running statistics per IR layer index, updated as torch.nn.BatchNorm2d.
  std::vector<std::vector<float>> running_mean_, running_var_;
};

template <class NetType>
class NetOf final : public NetBase {
 public:
  // A fresh network: configure every layer from the IR, then allocate the parameters with one
  // forward pass of a blank sample (dlib's layers size themselves then).
  NetOf(const ir::Model& m, Mode mode) : NetBase(m, mode), net_(std::make_unique<NetType>()) {
    collect_and_bind();
    for (std::size_t i = 0; i < model_.layers.size(); ++i)
      if (entry_of_[i] >= 0) entries_[entry_of_[i]].configure(model_.layers[i]);
    set_expansion_factor();
    Shape one = model_.input_shape;
    one.insert(one.begin(), 1);
    net_->forward(to_dlib(Tensor(DType::F32, one, Layout::NCHW), model_.input_shape));
    check_params(false);
    check_outputs(1);
    net_->clean();  // drop the blank sample's buffers
  }

  // A network read from `in`: its parameters must fit the IR before anything runs on it, since a
  // dlib assertion on a mismatched tensor is a fatal_error (and dlib aborts on the second one).
  NetOf(std::istream& in, const ir::Model& m)
      : NetBase(m, Mode::Eval), net_(std::make_unique<NetType>()) {
    dlib::deserialize(*net_, in);
    collect_and_bind();
    check_params(true);
    set_expansion_factor();
    Shape one = model_.input_shape;
    one.insert(one.begin(), 1);
    net_->forward(to_dlib(Tensor(DType::F32, one, Layout::NCHW), model_.input_shape));
    check_outputs(1);
    net_->clean();
  }

  Tensor logits(const Tensor& x) override {
    const dlib::tensor& out = forward(x);
    return from_dlib(out, {x.dim(0), model_.num_classes}, Layout::NC);
  }

  Tensor input_gradient(const Tensor& x, const Tensor& y, double& loss) override {
    const dlib::resizable_tensor xt = to_dlib(x, model_.input_shape);
    const auto labels = to_labels(y, x.dim(0), model_.num_classes);
    loss = net_->compute_loss(xt, labels.begin());
    net_->back_propagate_error(xt);
    return from_dlib(net_->get_final_data_gradient(), x.shape(), x.layout());
  }

  double train_gradients(const Tensor& x, const Tensor& y) override {
    if (mode_ != Mode::Train) throw std::logic_error("dlib adapter: not a training network");
    const dlib::resizable_tensor xt = to_dlib(x, model_.input_shape);
    // dlib's bn_ switches to its inference formula for a batch of one, silently; PyTorch trains
    // on batch statistics. Refused rather than computed differently.
    if (!running_mean_.empty() && xt.num_samples() < 2)
      throw InputError("dlib adapter: " + model_.name +
                       " has BatchNorm layers and cannot train on a batch of 1 (dlib's bn_ "
                       "would use running statistics instead of batch statistics)");
    const auto labels = to_labels(y, x.dim(0), model_.num_classes);
    // compute_loss runs the forward pass and the loss gradient; the BatchNorm inputs are read
    // between that and back-propagation (which may reuse buffers in place).
    const double loss = net_->compute_loss(xt, labels.begin());
    update_running_stats();
    net_->back_propagate_error(xt);
    return loss;
  }

  void save(std::ostream& out) override {
    net_->clean();
    dlib::serialize(*net_, out);
  }

 private:
  void collect_and_bind() {
    std::vector<Entry> found;
    dlib::visit_layers(*net_, Collect{&found});
    bind(std::move(found));
  }
  // forward(tensor) needs the input layer's sample expansion factor, which only to_tensor sets.
  void set_expansion_factor() {
    dlib::matrix<float> blank(1, 1);
    blank = 0;
    dlib::resizable_tensor dummy;
    net_->to_tensor(&blank, &blank + 1, dummy);
  }
  const dlib::tensor& forward(const Tensor& x) override {
    xt_ = to_dlib(x, model_.input_shape);
    return net_->forward(xt_);
  }

  std::unique_ptr<NetType> net_;
  dlib::resizable_tensor xt_;
};

}  // namespace crossdl::dlibx

// ---- building blocks of the network types ------------------------------------------------------

namespace crossdl::dlibx {

// con_ with explicit stride and padding: dlib's con<> pads "same" by default, PyTorch's Conv2d
// does not. Whether it has a bias is set from the IR (Entry::configure).
template <long Filters, long K, int Stride, int Pad, typename Sub>
using conv = dlib::add_layer<dlib::con_<Filters, K, K, Stride, Stride, Pad, Pad>, Sub>;
// max_pool_ pads "same" by default for stride 1; spelled out as 0 for PyTorch's floor mode.
template <typename Sub>
using pool2 = dlib::add_layer<dlib::max_pool_<2, 2, 2, 2, 0, 0>, Sub>;
// The width of every fc_ is set from the IR before its first forward pass (fc_::set_num_outputs),
// so the class count is not part of the type; 10 is only dlib's initial value.
template <typename Sub>
using dense = dlib::fc<10, Sub>;
// The BatchNorm of a Mode::Eval network: PyTorch's evaluation-mode BatchNorm as x*alpha + beta.
template <typename Sub>
using affine_con = dlib::add_layer<dlib::affine_, Sub>;
// Any input shape: forward(tensor) takes the batch as it is; the input layer only has to exist.
using Input = dlib::input<dlib::matrix<float>>;

}  // namespace crossdl::dlibx
