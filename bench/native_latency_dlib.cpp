// The direct dlib side of the runtime latency benchmark. The dlib runtime's network types live
// inside the adapter (anonymous namespaces in adapters/dlib/dlib_*.cpp), so a dlib user's program
// declares its own: the same layer structure is written out here, and dlib::deserialize reads the
// .dnn file crossdl wrote into it (deserialize checks every layer's kind, so a structural
// mismatch fails to load rather than computing something else). Per call the user's NCHW sample
// is copied into a dlib tensor kept from call to call (dlib's tensor layout is NCHW too),
// forward() runs, and the logits (the loss layer's input) are copied out.
#include <dlib/dnn.h>

#include <cstring>
#include <fstream>
#include <stdexcept>

#include "runtime_latency.h"

namespace crossdl::bench {
namespace {

template <long Filters, long K, int Stride, int Pad, typename Sub>
using conv = dlib::add_layer<dlib::con_<Filters, K, K, Stride, Stride, Pad, Pad>, Sub>;
template <typename Sub>
using pool2 = dlib::add_layer<dlib::max_pool_<2, 2, 2, 2, 0, 0>, Sub>;
// The width comes from the file: dlib serialises fc_'s output count.
template <typename Sub>
using dense = dlib::fc<10, Sub>;
template <typename Sub>
using affine = dlib::add_layer<dlib::affine_, Sub>;
using Input = dlib::input<dlib::matrix<float>>;

using Lenet1 = dlib::loss_multiclass_log<
    dense<pool2<dlib::relu<conv<12, 5, 1, 0, pool2<dlib::relu<conv<4, 5, 1, 0, Input>>>>>>>>;

// LeNet-5 as the zoo builds it for 28x28 inputs (first convolution padded by 2).
using Lenet5 = dlib::loss_multiclass_log<dense<dlib::relu<dense<dlib::relu<
    dense<pool2<dlib::relu<conv<16, 5, 1, 0, pool2<dlib::relu<conv<6, 5, 1, 2, Input>>>>>>>>>>>>;

// ResNet-20 in evaluation form (BatchNorm as a per-channel affine_), option-B shortcuts.
template <long N, typename Sub>
using block = dlib::relu<dlib::add_prev1<
    affine<conv<N, 3, 1, 1, dlib::relu<affine<conv<N, 3, 1, 1, dlib::tag1<Sub>>>>>>>>;
template <long N, typename Sub>
using block_down = dlib::relu<dlib::add_prev2<
    affine<conv<N, 1, 2, 0,
                dlib::skip1<dlib::tag2<affine<
                    conv<N, 3, 1, 1, dlib::relu<affine<conv<N, 3, 2, 1, dlib::tag1<Sub>>>>>>>>>>>>;
using Resnet20 = dlib::loss_multiclass_log<dense<dlib::avg_pool_everything<block<
    64,
    block<64,
          block_down<
              64,
              block<32,
                    block<32, block_down<32, block<16, block<16, block<16, dlib::relu<affine<conv<
                                                                               16, 3, 1, 1,
                                                                               Input>>>>>>>>>>>>>>>;

template <class NetType>
class DlibDirect : public DirectRunner {
 public:
  DlibDirect(const Artefact& a, const ir::Model& m) {
    std::ifstream in(artefact_file(a, ".dnn"), std::ios::binary);
    if (!in) throw std::runtime_error("cannot open the .dnn file");
    dlib::deserialize(net_, in);
    // to_tensor sizes the tensor and sets the input layer's sample expansion factor, which
    // forward(tensor) needs; after that only the values are replaced.
    dlib::matrix<float> blank(static_cast<long>(m.input_shape[1]),
                              static_cast<long>(m.input_shape[2]));
    blank = 0;
    net_.to_tensor(&blank, &blank + 1, x_);
    if (m.input_shape[0] != 1) x_.set_size(1, m.input_shape[0], m.input_shape[1], m.input_shape[2]);
    classes_ = static_cast<std::size_t>(m.num_classes);
  }
  void infer(const float* x, std::vector<float>& logits) override {
    std::memcpy(x_.host(), x, x_.size() * sizeof(float));
    const dlib::tensor& out = net_.forward(x_);
    if (out.size() != classes_) throw std::runtime_error("dlib: the output is not the logits");
    logits.assign(out.host(), out.host() + classes_);
  }
  std::string api() const override {
    return "dlib::deserialize into the bench's own net type; sample copied into a kept "
           "resizable_tensor; net.forward(tensor); logits copied out";
  }

 private:
  NetType net_;
  dlib::resizable_tensor x_;
  std::size_t classes_ = 0;
};

}  // namespace

std::unique_ptr<DirectRunner> direct_dlib(const Artefact& a, const ir::Model& m) {
  if (m.name == "lenet1") return std::make_unique<DlibDirect<Lenet1>>(a, m);
  if (m.name == "lenet5" && m.layers.at(0).pad[0] == 2)
    return std::make_unique<DlibDirect<Lenet5>>(a, m);
  if (m.name == "resnet20") return std::make_unique<DlibDirect<Resnet20>>(a, m);
  throw std::runtime_error("no dlib network type in the benchmark for " + m.name);
}

}  // namespace crossdl::bench
