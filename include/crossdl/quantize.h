// Quantizing a trained model (crossdl_app): the calibration set drawn from the training split,
// crossdl's quantization of it (crossdl/quant.h), and the files `crossdl quantize` writes.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "crossdl/compare.h"
#include "crossdl/dataset.h"
#include "crossdl/onnx_io.h"
#include "crossdl/quant.h"

namespace crossdl {

// The options as JSON ({"scheme","per_channel","calibrate","calibration","calibration_seed",
// "percentile"}) and back; InputError naming a bad key or value.
nlohmann::json quant_options_to_json(const quant::QuantOptions& o);
quant::QuantOptions quant_options_from_json(const nlohmann::json& j);

// Quantizes the model with a calibration set of options.calibration_size examples of the
// dataset's *training* split (never the test split), drawn by a seeded permutation
// (epoch_order(n, calibration_seed, 0)); the indices' SHA-256, the split and its size are
// recorded in the result's calibration JSON. `data.root` locates the dataset. Throws InputError.
// `calibration_out` (when not null) gets the calibration inputs, as the model saw them.
quant::QuantModel quantize_trained(const OnnxModel& om, const std::string& dataset,
                                   const DataOptions& data, const quant::QuantOptions& options,
                                   Tensor* calibration_out = nullptr);

// `crossdl quantize`: writes OUT/model.qdq.onnx (the ONNX interchange of the quantized model:
// QDQ for int8-static, fp16/bf16 weights with Cast otherwise; it passes the ONNX checker) and
// OUT/quant_params.json (every scale and zero point, the calibration, the options); with
// save_calibration also OUT/calibration_inputs.npy and calibration_indices.npy (the training
// examples it calibrated on, for another tool to calibrate on the same images). Returns a
// summary. Throws InputError.
nlohmann::json quantize_write(const std::string& model_path, const std::string& dataset,
                              const DataOptions& data, const quant::QuantOptions& options,
                              const std::string& out_dir, bool save_calibration = false);

// crossdl's own reference for one precision on a set of inputs: for int8-static the exact integer
// arithmetic of both specs (ONNX's and TFLite's requantization), for the float schemes the fp32
// forward pass on the rounded weights. With `layers`, also every quantized layer (and the fp32
// original's layers) on the first RuntimeJob::layer_examples inputs.
struct PrecisionReference {
  std::string precision;
  quant::QuantModel q;  // empty model when the scheme cannot express it (summary says why)
  Tensor onnx_logits, tflite_logits;                        // int8-static
  std::vector<quant::IntLayer> onnx_layers, tflite_layers;  // int8-static, with `layers`
  Tensor float_logits;                                      // fp16, bf16, ...
  std::vector<quant::NamedTensor> float_layers;             // fp32 layers of the original model
  // {quant_params_sha256, accuracy, layer_sqnr_db (the reference's own quantized outputs against
  // fp32, with `layers`), calibration, folded, seconds}, or {message} when it cannot be built.
  nlohmann::json summary = nlohmann::json::object();
};
PrecisionReference precision_reference(const OnnxModel& om, const std::string& precision,
                                       const nlohmann::json& quant_options,
                                       const std::string& dataset, const DataOptions& data,
                                       const EvalInputs& in, bool layers);

// A quantized runtime's row, against fp32 (accuracy_delta, fp32_diff, disagreement: what the
// quantization costs) and against crossdl's reference (reference_disagreement, reference_diff;
// int8: logits_steps, layer_steps with SQNR against fp32, first_layer_off_by_more_than_one_step,
// within_one_step; float schemes: within_tolerance): what the runtime gets wrong. `layers` are
// the runtime's captured outputs (may be empty). The row's artefact format picks the TFLite or
// the ONNX arithmetic.
void compare_precision(nlohmann::json& row, const Tensor& logits, const Tensor& fp32_logits,
                       double fp32_accuracy, const PrecisionReference& ref,
                       const std::vector<std::pair<std::string, Tensor>>& layers,
                       const Tolerance& tol);
// The layer part of compare_precision, on layers captured in a separate run on the reference's
// first layer examples (int8: layer_steps with SQNR against fp32, the first layer off by more
// than one step; within_one_step updated).
void compare_precision_layers(nlohmann::json& row, const PrecisionReference& ref,
                              const std::vector<std::pair<std::string, Tensor>>& layers);

}  // namespace crossdl
