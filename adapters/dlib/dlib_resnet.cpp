// dlib types for ResNet-20 (src/zoo/resnet.cpp): a training type with bn_con and an evaluation
// type with affine_con in its place, otherwise identical.
#include "dlib_net.h"

namespace crossdl::dlibx {
namespace {

// A basic block keeping the shape: relu(bn2(conv2(relu(bn1(conv1(x))))) + x). tag1 marks the
// block input, add_prev1 adds it back.
template <template <typename> class BN, long N, typename Sub>
using block = dlib::relu<
    dlib::add_prev1<BN<conv<N, 3, 1, 1, dlib::relu<BN<conv<N, 3, 1, 1, dlib::tag1<Sub>>>>>>>>;

// A block halving the map and widening the channels, with the option-B projection shortcut:
// the main path is tagged (tag2), skip1 goes back to the block input for the strided 1x1 conv +
// BatchNorm, and add_prev2 adds the main path. dlib's layer order is then the IR's: conv1, bn1,
// relu1, conv2, bn2, shortcut.conv, shortcut.bn, add, relu2.
template <template <typename> class BN, long N, typename Sub>
using block_down = dlib::relu<dlib::add_prev2<
    BN<conv<N, 1, 2, 0,
            dlib::skip1<dlib::tag2<
                BN<conv<N, 3, 1, 1, dlib::relu<BN<conv<N, 3, 2, 1, dlib::tag1<Sub>>>>>>>>>>>>;

template <template <typename> class BN, typename Sub>
using stage1 = block<BN, 16, block<BN, 16, block<BN, 16, Sub>>>;
template <template <typename> class BN, typename Sub>
using stage2 = block<BN, 32, block<BN, 32, block_down<BN, 32, Sub>>>;
template <template <typename> class BN, typename Sub>
using stage3 = block<BN, 64, block<BN, 64, block_down<BN, 64, Sub>>>;

template <template <typename> class BN>
using Resnet20 = dlib::loss_multiclass_log<dense<dlib::avg_pool_everything<
    stage3<BN, stage2<BN, stage1<BN, dlib::relu<BN<conv<16, 3, 1, 1, Input>>>>>>>>>;

using TrainNet = Resnet20<dlib::bn_con>;
using EvalNet = Resnet20<affine_con>;

}  // namespace

std::unique_ptr<Net> make_resnet(const ir::Model& m, Mode mode) {
  if (mode == Mode::Train) return std::make_unique<NetOf<TrainNet>>(m, mode);
  return std::make_unique<NetOf<EvalNet>>(m, mode);
}

std::unique_ptr<Net> read_resnet(std::istream& in, const ir::Model& m) {
  return std::make_unique<NetOf<EvalNet>>(in, m);
}

}  // namespace crossdl::dlibx
