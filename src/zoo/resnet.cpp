// ResNet-20 for 32x32 images (He et al. 2016, section 4.2): a 3x3 stem, three stages of three basic
// blocks with 16, 32 and 64 channels, global average pooling and one dense layer.
//
// Where the channel count doubles, the paper's CIFAR net uses a parameter-free shortcut (option A:
// strided identity plus zero-padded channels). Here it is a projection, a strided 1x1 conv plus
// BatchNorm (option B), because every framework in the study can express that directly. It adds
// 2,752 trainable parameters (16*32 + 32*64 conv weights and the two BatchNorms' scale and shift):
// 272,474 instead of option A's 269,722 on 3-channel inputs.
#include <string>

#include "builders.h"

namespace crossdl::zoo::detail {

namespace {

void basic_block(Builder& b, const std::string& p, std::int64_t channels, std::int64_t stride,
                 bool project) {
  const std::string block_in = b.last();
  b.conv(p + ".conv1", channels, 3, stride, 1, false);
  b.simple(p + ".bn1", ir::Op::BatchNorm2d);
  b.simple(p + ".relu1", ir::Op::ReLU);
  b.conv(p + ".conv2", channels, 3, 1, 1, false);
  const std::string main = b.simple(p + ".bn2", ir::Op::BatchNorm2d).name;
  std::string shortcut = block_in;
  if (project) {
    b.conv(p + ".shortcut.conv", channels, 1, stride, 0, false).inputs = {block_in};
    shortcut = b.simple(p + ".shortcut.bn", ir::Op::BatchNorm2d).name;
  }
  ir::Layer add;
  add.name = p + ".add";
  add.op = ir::Op::Add;
  add.inputs = {main, shortcut};
  b.add(std::move(add));
  b.simple(p + ".relu2", ir::Op::ReLU);
}

}  // namespace

ir::Model build_resnet20(const InputSpec& in) {
  require_image("resnet20", in);
  Builder b("resnet20", in);
  b.conv("conv1", 16, 3, 1, 1, false);
  b.simple("bn1", ir::Op::BatchNorm2d);
  b.simple("relu1", ir::Op::ReLU);
  const std::int64_t widths[3] = {16, 32, 64};
  for (int s = 0; s < 3; ++s)
    for (int k = 0; k < 3; ++k) {
      const bool down = s > 0 && k == 0;
      basic_block(b, "stage" + std::to_string(s + 1) + ".block" + std::to_string(k), widths[s],
                  down ? 2 : 1, down);
    }
  b.simple("pool", ir::Op::GlobalAvgPool);
  b.simple("flatten", ir::Op::Flatten);
  b.dense("fc", in.num_classes);
  return b.finish();
}

}  // namespace crossdl::zoo::detail
