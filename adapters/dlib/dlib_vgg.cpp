// dlib types for VGG-16, CIFAR form (src/zoo/vgg.cpp): conv + BatchNorm + ReLU thirteen times, four
// 2x2 max pools, a global average pool and a 512-wide classifier. Training and evaluation types
// differ only in bn_con / affine_con.
#include "dlib_net.h"

namespace crossdl::dlibx {
namespace {

template <template <typename> class BN, long N, typename Sub>
using cbr = dlib::relu<BN<conv<N, 3, 1, 1, Sub>>>;

template <template <typename> class BN, typename Sub>
using features = cbr<
    BN, 512,
    cbr<BN, 512,
        cbr<BN, 512,
            pool2<cbr<
                BN, 512,
                cbr<BN, 512,
                    cbr<BN, 512,
                        pool2<cbr<BN, 256,
                                  cbr<BN, 256,
                                      cbr<BN, 256,
                                          pool2<cbr<BN, 128,
                                                    cbr<BN, 128,
                                                        pool2<cbr<BN, 64,
                                                                  cbr<BN, 64, Sub>>>>>>>>>>>>>>>>>;

template <template <typename> class BN>
using Vgg16 = dlib::loss_multiclass_log<
    dense<dlib::relu<dense<dlib::avg_pool_everything<features<BN, Input>>>>>>;

using TrainNet = Vgg16<dlib::bn_con>;
using EvalNet = Vgg16<affine_con>;

}  // namespace

std::unique_ptr<Net> make_vgg(const ir::Model& m, Mode mode) {
  if (mode == Mode::Train) return std::make_unique<NetOf<TrainNet>>(m, mode);
  return std::make_unique<NetOf<EvalNet>>(m, mode);
}

std::unique_ptr<Net> read_vgg(std::istream& in, const ir::Model& m) {
  return std::make_unique<NetOf<EvalNet>>(in, m);
}

}  // namespace crossdl::dlibx
