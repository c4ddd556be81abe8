// Internal to src/quant: helpers shared by the float reference, the quantizer and the integer
// reference.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "crossdl/ir.h"
#include "crossdl/quant.h"

namespace crossdl::quant::detail {

// How many layers read each layer's output (and "input"), by name.
std::map<std::string, int> consumer_counts(const ir::Model& m);

// The shape of the tensor `name` ("input" or a layer) without the batch axis.
const Shape& shape_of(const ir::Model& m, const std::vector<Shape>& shapes,
                      const std::string& name);

// Checks x against the model input ([N, ...input_shape] of the input dtype); returns N.
std::int64_t check_batch(const ir::Model& m, const Tensor& x, const char* who);

// The histogram-based ranges behind calibrate_range, shared with the streaming calibration:
// `hist` counts |x| in `bins` equal bins over [0, max_abs].
std::pair<float, float> range_from_histogram(const std::vector<std::int64_t>& hist, float max_abs,
                                             float observed_min, float observed_max,
                                             const QuantOptions& opt);
// Adds |v| of every value to `hist` (bins over [0, max_abs]).
void add_to_histogram(std::vector<std::int64_t>& hist, float max_abs, const float* v,
                      std::size_t n);

// fold_batchnorm; `strict`: a BatchNorm that cannot be folded is an error, otherwise it stays.
void fold_batchnorm_impl(const ir::Model& m, const WeightSet& w, ir::Model& out_model,
                         WeightSet& out_weights, std::map<std::string, std::string>& folded,
                         bool strict);

// reference_forward with every layer's output handed to `on_layer` (layer index, [N, ...])
// instead of kept: calibration streams through a batch without holding all activations.
Tensor forward(const ir::Model& m, const WeightSet& w, const Tensor& x,
               const std::function<void(std::size_t, const Tensor&)>& on_layer);

}  // namespace crossdl::quant::detail
