// The model zoo: builders of framework-neutral descriptions.
#pragma once

#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/ir.h"

namespace crossdl::zoo {

// What a builder needs to know about the data it will see.
struct InputSpec {
  Shape sample_shape;  // {C,H,W} images or {T} tokens
  DType dtype = DType::F32;
  std::int64_t num_classes = 10;
  std::int64_t vocab_size = 0;  // text only
};
InputSpec input_spec(const Dataset& ds);

// lenet1, lenet5, resnet20, vgg16, lstm, gru
std::vector<std::string> model_names();
// Throws InputError for an unknown name or an input the model cannot take.
ir::Model build(const std::string& name, const InputSpec& in);

}  // namespace crossdl::zoo
