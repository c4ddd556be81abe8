// dlib types for LeNet-1 and LeNet-5. Without BatchNorm, training and evaluation use one type.
#include "dlib_net.h"

namespace crossdl::dlibx {
namespace {

using Lenet1Net = dlib::loss_multiclass_log<
    dense<pool2<dlib::relu<conv<12, 5, 1, 0, pool2<dlib::relu<conv<4, 5, 1, 0, Input>>>>>>>>;

// The zoo pads LeNet-5's first conv by 2 on 28x28 inputs (to the 32x32 it was designed for) and
// not otherwise: one type per padding.
template <int Pad>
using Lenet5Net = dlib::loss_multiclass_log<dense<dlib::relu<dense<dlib::relu<
    dense<pool2<dlib::relu<conv<16, 5, 1, 0, pool2<dlib::relu<conv<6, 5, 1, Pad, Input>>>>>>>>>>>>;

}  // namespace

std::unique_ptr<Net> make_lenet(const ir::Model& m, Mode mode) {
  if (m.name == "lenet1") return std::make_unique<NetOf<Lenet1Net>>(m, mode);
  if (m.layers.at(0).pad[0] == 2) return std::make_unique<NetOf<Lenet5Net<2>>>(m, mode);
  return std::make_unique<NetOf<Lenet5Net<0>>>(m, mode);
}

std::unique_ptr<Net> read_lenet(std::istream& in, const ir::Model& m) {
  if (m.name == "lenet1") return std::make_unique<NetOf<Lenet1Net>>(in, m);
  if (m.layers.at(0).pad[0] == 2) return std::make_unique<NetOf<Lenet5Net<2>>>(in, m);
  return std::make_unique<NetOf<Lenet5Net<0>>>(in, m);
}

}  // namespace crossdl::dlibx
