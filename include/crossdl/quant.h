// crossdl's own post-training quantization, computed once from a weight set and a calibration set
// and handed, as data, to every format writer (ONNX QDQ, TFLite, TF.js, ...). The writers never
// re-derive a scale: the same scales and zero points reach every runtime, so that runtimes differ
// only in how they compute.
//
// It also holds crossdl's two references for a quantized model:
//   - reference_forward: the fp32 forward pass of an IR model, computed by crossdl itself (used
//     for calibration and for per-layer SQNR against fp32);
//   - integer_forward: the exact integer arithmetic of the ONNX or the TFLite quantization specs
//     on the same scales and zero points (int32 accumulation, requantization with the spec's
//     rounding, saturation), so that a runtime's departure is counted in quantization steps.
//
// Conventions: real = scale * (q - zero_point). Weights are symmetric int8 in [-127, 127] with
// zero point 0 (per tensor, or per output channel: axis 0 of OIHW / OI); activations are
// asymmetric int8 per tensor; a bias is int32 with scale = input scale x weight scale and zero
// point 0. BatchNorm is folded into the convolution before it first.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/ir.h"
#include "crossdl/tensor.h"

namespace crossdl::quant {

enum class Scheme : std::uint8_t {
  FP16,         // weights (and activations where the runtime computes in it) in IEEE half
  BF16,         // the same in bfloat16
  Int8Dynamic,  // int8 per-channel weights; activations quantized at run time (per tensor)
  Int8Static,   // int8 weights, int8 activations from calibration, int32 bias
  W8,           // weight-only affine uint8 (TF.js converter's quantize_uint8)
  W16,          // weight-only affine uint16 (TF.js converter's quantize_uint16)
};
std::string_view scheme_name(Scheme s);  // "fp16" "bf16" "int8-dynamic" "int8-static" "w8" "w16"
bool scheme_from_name(std::string_view name, Scheme& out);  // false when unknown
std::vector<std::string> scheme_names();

enum class Calibration : std::uint8_t { MinMax, Percentile, Entropy };
std::string_view calibration_name(Calibration c);  // "minmax" "percentile" "entropy"
bool calibration_from_name(std::string_view name, Calibration& out);

struct QuantOptions {
  Scheme scheme = Scheme::Int8Static;
  bool per_channel = true;  // weights: one scale per output channel (else one per tensor)
  Calibration calibrate = Calibration::MinMax;
  double percentile = 99.99;  // Percentile: the |x| percentile kept, in percent
  int histogram_bins = 2048;  // Percentile and Entropy histograms
  std::int64_t calibration_size = 512;
  std::uint64_t calibration_seed = 1;
};

// Affine parameters of one tensor. Per tensor: one scale and one zero point, axis -1. Per
// channel: one of each per slice along `axis` (in the IR's layout).
struct QParams {
  std::string dtype;  // "int8", "uint8", "int32", "uint16"
  std::vector<float> scale;
  std::vector<std::int32_t> zero_point;
  int axis = -1;
  float rmin = 0, rmax = 0;   // the range the parameters were computed from (per tensor)
  std::int32_t qmin() const;  // -128 / 0 / INT32_MIN / 0
  std::int32_t qmax() const;
  nlohmann::json to_json() const;
};

// How a layer of the quantized (BatchNorm-folded) model is computed in int8.
struct QuantLayer {
  std::string layer;  // IR layer name in QuantModel::model
  // The layer whose output is this layer's quantized output: a Conv/Dense/Add directly followed
  // by a ReLU that nothing else reads has its ReLU fused (its output is the ReLU's, clamped at the
  // output zero point, as ONNX Runtime's QLinearConv+Relu fusion and TFLite's fused activation
  // compute). Empty for that ReLU itself (it is computed by the layer before).
  std::string output;
  bool fused_relu = false;
};

struct QuantModel {
  QuantOptions options;
  ir::Model model;    // BatchNorm folded into the preceding convolution (which gains a bias)
  WeightSet weights;  // float weights of `model`
  // IR layers of the original model that no longer exist after folding, and the layer of
  // `model` whose output equals theirs ("stage1.block0.bn1" -> "stage1.block0.conv1").
  std::map<std::string, std::string> folded;
  std::vector<QuantLayer> layers;  // in the order of model.layers

  // Int8Static: activation parameters, keyed by "input" and by each layer name that is a
  // quantized output (QuantLayer::output). MaxPool, AvgPool, GlobalAvgPool and Flatten keep
  // their input's parameters (TFLite requires it for pools; the same values go to ONNX).
  std::map<std::string, QParams> activations;
  // Int8Static / Int8Dynamic: "<layer>.weight" -> parameters and int8 values (row-major, IR
  // layout); Int8Static: "<layer>.bias" -> int32 values (scale = input scale x weight scale).
  std::map<std::string, QParams> weight_params;
  std::map<std::string, std::vector<std::int8_t>> weight_q;
  std::map<std::string, QParams> bias_params;
  std::map<std::string, std::vector<std::int32_t>> bias_q;
  // W8 / W16: "<layer>.<param>" -> the affine parameters the TF.js converter stores
  // (min, scale; dtype uint8 / uint16) and the quantized values.
  std::map<std::string, QParams> weight_only_params;
  std::map<std::string, std::vector<std::uint16_t>> weight_only_q;

  // What the calibration was: method, size, seed, the SHA-256 of the indices drawn, and per
  // tensor the observed min/max and the range kept.
  nlohmann::json calibration = nlohmann::json::object();

  // The parameters of layer `name`'s quantized output ("input" for the model input), following
  // QuantLayer::output and the pass-through layers. Throws InputError when there are none.
  const QParams& output_params(const std::string& name) const;
  const QuantLayer* find(const std::string& layer) const;
  nlohmann::json to_json() const;  // every parameter, for quant_params.json
};

// Whether layer `name` of q.model has a quantized output tensor of its own in int8-static: a
// layer whose output is a quantization point (QuantModel::activations: a Conv/Dense/Add, or the
// ReLU fused after one), or a layer that passes its input's parameters through (MaxPool2d,
// AvgPool2d, GlobalAvgPool, Flatten). The writers put the int8 tensors exactly there.
bool quant_output(const QuantModel& q, const ir::Model& m, const std::string& name);

// The quantized model cut after `layer` (a quant_output of q.model), whose output becomes the
// model's logits through a Flatten that passes the layer's parameters on ("capture/flatten";
// num_classes is the layer's element count), with the weights of the layers it keeps. A runtime
// fuses such a prefix as it fuses the whole graph, so its output is the layer's output in the
// runtime's real computation; exposing every layer as an extra output of one graph can change
// what a runtime fuses (ONNX Runtime does). Throws InputError for a layer that is not a
// quantized output.
QuantModel quant_prefix(const QuantModel& q, const std::string& layer);

// ---- the float reference ---------------------------------------------------------------------
// What a layer produced on a batch: the IR layer name and its output in the IR's layout.
struct NamedTensor {
  std::string layer;
  Tensor value;
};
// The fp32 forward pass (evaluation mode) of `m` on x [N, ...], computed by crossdl itself: every
// image op and the recurrent ones. Returns the logits; `layers` (when not null) gets every
// layer's output in layer order. Throws InputError for a shape mismatch or an op it lacks.
Tensor reference_forward(const ir::Model& m, const WeightSet& w, const Tensor& x,
                         std::vector<NamedTensor>* layers = nullptr);

// ---- building a quantized model --------------------------------------------------------------
// Folds every BatchNorm2d that directly follows a Conv2d read by nothing else:
// w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta.
// `folded` gets bn -> conv. Throws InputError for a BatchNorm it cannot fold.
void fold_batchnorm(const ir::Model& m, const WeightSet& w, ir::Model& out_model,
                    WeightSet& out_weights, std::map<std::string, std::string>& folded);

// Quantizes (m, w). `calibration` is a batch of calibration inputs [N, ...] drawn from the
// training split (the caller draws them and records where from); unused by schemes without
// activation parameters. Deterministic: the same inputs give bit-identical parameters.
// Throws InputError naming the layer for a model the scheme cannot express (e.g. an LSTM under
// int8-static).
QuantModel quantize(const ir::Model& m, const WeightSet& w, const Tensor& calibration,
                    const QuantOptions& opt);

// The range kept for one tensor's observed values under a calibration method (symmetric
// methods return [-t, t]); exposed for tests. `values` are all observations of the tensor.
std::pair<float, float> calibrate_range(const std::vector<float>& values, const QuantOptions& opt);

// Asymmetric int8 parameters for [rmin, rmax] (the range is first widened to include 0, so that
// 0.0 is exact; a zero range gives scale 1).
QParams affine_int8(float rmin, float rmax);

// Round-to-nearest-even conversions through half and bfloat16, as float (for fp16/bf16 weights and
// the fp16 reference).
float round_to_fp16(float x);
float round_to_bf16(float x);
std::uint16_t fp16_bits(float x);
std::uint16_t bf16_bits(float x);

// The float weight set a weight-only or reduced-precision scheme gives after dequantization
// (what a runtime that dequantizes at load computes with): for int8-static/dynamic, the
// dequantized int8 weights and the float bias.
WeightSet dequantized_weights(const QuantModel& q);

// ---- the integer reference -------------------------------------------------------------------
// Which spec's requantization to follow.
enum class Arithmetic : std::uint8_t {
  // ONNX QLinearConv / QLinearMatMul / QuantizeLinear (what ONNX Runtime's CPU kernels compute):
  // the int32 accumulator times the float multiplier (in_scale * w_scale / out_scale) in float,
  // rounded half to even, plus the zero point, saturated.
  Onnx,
  // TFLite's reference kernels: the multiplier as a Q31 fixed-point number and a shift
  // (QuantizeMultiplier), applied with SaturatingRoundingDoublingHighMul and
  // RoundingDivideByPOT; pools and Add as in TFLite's integer kernels.
  Tflite,
};
std::string_view arithmetic_name(Arithmetic a);

// One layer's quantized output on a batch: the int8 values, the parameters, and the shape in
// the IR's layout with the batch axis first (row-major).
struct IntLayer {
  std::string layer;
  Shape shape;
  std::vector<std::int8_t> q;
  const QParams* params = nullptr;
};

// Runs the Int8Static model on x: quantizes the input with the input parameters, then each layer
// in integer arithmetic. Returns the dequantized logits; `layers` (when not null) gets each
// quantized output (QuantLayer::output), in layer order.
Tensor integer_forward(const QuantModel& q, const Tensor& x, Arithmetic a,
                       std::vector<IntLayer>* layers = nullptr);

// ---- comparing with it -----------------------------------------------------------------------
// How far a runtime's (dequantized) layer output is from the integer reference, in steps of the
// layer's output scale: |round(got / scale) + zp - ref_q|.
struct StepAgreement {
  std::int64_t count = 0, equal = 0, off_by_one = 0, off_by_more = 0;
  std::int64_t max_steps = 0;
  nlohmann::json to_json() const;
};
StepAgreement step_agreement(const IntLayer& ref, const Tensor& got);

// Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - got)^2); +inf when
// equal.
double sqnr_db(const Tensor& ref, const Tensor& got);

}  // namespace crossdl::quant
