// LeNet-1 and LeNet-5 (LeCun et al. 1998), with ReLU and max pooling as the study's frameworks
// implement them, rather than the original scaled tanh and trainable subsampling.
#include "builders.h"

namespace crossdl::zoo::detail {

ir::Model build_lenet1(const InputSpec& in) {
  require_image("lenet1", in);
  Builder b("lenet1", in);
  b.conv("conv1", 4, 5, 1, 0);
  b.simple("relu1", ir::Op::ReLU);
  b.max_pool("pool1", 2, 2);
  b.conv("conv2", 12, 5, 1, 0);
  b.simple("relu2", ir::Op::ReLU);
  b.max_pool("pool2", 2, 2);
  b.simple("flatten", ir::Op::Flatten);
  b.dense("fc1", in.num_classes);
  return b.finish();
}

ir::Model build_lenet5(const InputSpec& in) {
  require_image("lenet5", in);
  Builder b("lenet5", in);
  // 28x28 inputs are padded to the 32x32 the architecture was designed for.
  b.conv("conv1", 6, 5, 1, in.sample_shape[1] == 28 ? 2 : 0);
  b.simple("relu1", ir::Op::ReLU);
  b.max_pool("pool1", 2, 2);
  b.conv("conv2", 16, 5, 1, 0);
  b.simple("relu2", ir::Op::ReLU);
  b.max_pool("pool2", 2, 2);
  b.simple("flatten", ir::Op::Flatten);
  b.dense("fc1", 120);
  b.simple("relu3", ir::Op::ReLU);
  b.dense("fc2", 84);
  b.simple("relu4", ir::Op::ReLU);
  b.dense("fc3", in.num_classes);
  return b.finish();
}

}  // namespace crossdl::zoo::detail
