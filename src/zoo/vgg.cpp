// VGG-16 for small images (Simonyan & Zisserman 2015, configuration D) in the common CIFAR form:
// BatchNorm after every conv and a small classifier (512 -> 512 -> classes).
//
// The fifth max pool is replaced by a global average pool: on 32x32 inputs both reduce the 2x2
// map to 1x1 (by average rather than max), and on 28x28 inputs four pools already leave a 1x1 map
// that a fifth 2x2 pool could not take, so the same net also runs on Fashion-MNIST unchanged.
#include <string>

#include "builders.h"

namespace crossdl::zoo::detail {

ir::Model build_vgg16(const InputSpec& in) {
  require_image("vgg16", in);
  Builder b("vgg16", in);
  const std::int64_t widths[5] = {64, 128, 256, 512, 512};
  const int convs[5] = {2, 2, 3, 3, 3};
  for (int s = 0; s < 5; ++s) {
    for (int c = 0; c < convs[s]; ++c) {
      const std::string id = std::to_string(s + 1) + "_" + std::to_string(c + 1);
      b.conv("conv" + id, widths[s], 3, 1, 1);
      b.simple("bn" + id, ir::Op::BatchNorm2d);
      b.simple("relu" + id, ir::Op::ReLU);
    }
    if (s < 4) b.max_pool("pool" + std::to_string(s + 1), 2, 2);
  }
  b.simple("pool5", ir::Op::GlobalAvgPool);
  b.simple("flatten", ir::Op::Flatten);
  b.dense("fc1", 512);
  b.simple("relu_fc1", ir::Op::ReLU);
  b.dense("fc2", in.num_classes);
  return b.finish();
}

}  // namespace crossdl::zoo::detail
