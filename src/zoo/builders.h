// Internal to the zoo: one builder per architecture, and helpers to assemble layers.
#pragma once

#include <string>

#include "crossdl/ir.h"
#include "crossdl/zoo.h"

namespace crossdl::zoo::detail {

// Appends layers in order. Inputs given explicitly that are just the previous layer are stored as
// empty, the canonical form the ONNX reader also produces, so that models compare equal.
class Builder {
 public:
  Builder(std::string name, const InputSpec& in);
  ir::Layer& add(ir::Layer l);
  // Name of the most recent layer ("input" before the first).
  const std::string& last() const { return last_; }

  ir::Layer& conv(const std::string& name, std::int64_t out, std::int64_t k, std::int64_t stride,
                  std::int64_t pad, bool bias = true);
  ir::Layer& dense(const std::string& name, std::int64_t out);
  ir::Layer& simple(const std::string& name, ir::Op op);  // activations, Flatten, GAP, BN...
  ir::Layer& max_pool(const std::string& name, std::int64_t k, std::int64_t stride);

  ir::Model finish();

 private:
  ir::Model m_;
  std::string last_ = "input";
};

// Throws InputError unless the input is an image [C,H,W] of floats.
void require_image(const std::string& model, const InputSpec& in);

ir::Model build_lenet1(const InputSpec& in);
ir::Model build_lenet5(const InputSpec& in);
ir::Model build_resnet20(const InputSpec& in);
ir::Model build_vgg16(const InputSpec& in);
ir::Model build_recurrent(const std::string& name, ir::Op cell, const InputSpec& in);

}  // namespace crossdl::zoo::detail
