// TensorFlow Lite flatbuffer files written from the model description and weight set, without the
// TFLite library (the `tflite` and `armnn` runtimes both read them).
//
// The graph is NHWC: its input is [1,H,W,C] (a runtime that runs batches resizes axis 0), so a
// runner transposes crossdl's NCHW batches at the boundary (nchw_to_nhwc). Convolution weights are
// OHWI, dense weights [out,in], and a Dense that reads a flattened feature map has its input
// columns permuted from CHW to HWC order, because the file's Flatten (a RESHAPE of NHWC) lists
// features in HWC order.
//
// Each tensor that holds an IR layer's output is named after that layer, so graph outputs map back
// to the IR by name. Without layer_outputs the writer folds BatchNorm2d into the preceding Conv2d's
// weights and fuses a ReLU into the preceding Conv2d, Dense or Add (the fused tensor is named after
// the last IR layer it covers, the ReLU). With layer_outputs nothing is folded or fused:
// BatchNorm2d becomes MUL+ADD with per-channel constants, ReLU its own RELU op, and every IR
// layer's output is a graph output (the logits are the last).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "crossdl/ir.h"
#include "crossdl/status.h"
#include "crossdl/tensor.h"

namespace crossdl {

namespace quant {
struct QuantModel;
struct QuantOptions;
}  // namespace quant

struct TfliteWriteOptions {
  bool layer_outputs = false;
  // Reduced precision with crossdl's parameters; m and w are then the quantized model's
  // (QuantModel::model, ::weights). int8-static: a full-integer graph (int8 activations with the
  // model's scales and zero points, per-axis int8 weights, int32 biases, ReLUs fused as the
  // quantized model fuses them) with a float input (QUANTIZE) and float outputs (DEQUANTIZE); with
  // layer_outputs every quantized output is dequantized into a graph output named after its
  // layer. fp16: every float weight stored in half precision with a DEQUANTIZE, as TensorFlow's
  // converter writes float16 models.
  const quant::QuantModel* quant = nullptr;
};

struct TfliteFile {
  std::string path;
  std::uint64_t bytes = 0;
  // IR layer names of the graph outputs, in output order; the last one is the logits layer.
  std::vector<std::string> outputs;
  // Subgraph tensor index -> the IR layer whose output it holds (fused layers: the last covered).
  std::map<int, std::string> tensor_layer;
  std::string conversions;  // what was converted, folded or fused, for the record
};

// Whether the writer can express the model, and why not (naming the layer).
Capability tflite_expressible(const ir::Model& m);
// Whether it writes this quantized model (int8-static and fp16; the runtime named in the reason).
Capability tflite_supports_precision(const std::string& runtime, const quant::QuantOptions& q);

// Checks that `path` is a well-formed TFLite flatbuffer as far as crossdl's schema subset goes
// (identifier TFL3, every offset inside the file), so that a runtime can tell a damaged file
// (InputError naming the path and the problem) from a library failure.
void tflite_verify_file(const std::string& path);

// Writes the model to `path` (replacing it). Throws InputError when the model cannot be expressed
// (the message names the layer), a weight is missing or misshapen, or the file cannot be written.
TfliteFile tflite_write(const std::string& path, const ir::Model& m, const WeightSet& w,
                        const TfliteWriteOptions& opt = {});

// An NCHW F32 batch [N,C,H,W] as the file's NHWC input [N,H,W,C].
Tensor nchw_to_nhwc(const Tensor& x);
// A batch from make_batch() as the file's input for model m: images transposed to NHWC, int64
// token batches [N,T] as they are. Throws InputError (naming the shapes) when x does not fit m.
Tensor tflite_input(const ir::Model& m, const Tensor& x);

// How one graph output of a file tflite_write wrote maps back to the IR layout of `layer`'s
// output ([N,C,H,W] for feature maps, [N,F] in CHW feature order after Flatten or Dense). Worked
// out once per output when a runner is built: deriving it walks the whole model, which costs more
// than a LeNet inference.
struct TfliteOutputLayout {
  std::string layer;
  Shape sample;  // the IR output shape without the batch axis
  enum Kind { Plain, Nhwc, FlatHwc } kind = Plain;
  std::int64_t c = 0, h = 0, w = 0;  // Nhwc / FlatHwc: the feature map's IR [C,H,W]
};
// Throws InputError when m has no such layer or cannot be written as TFLite.
TfliteOutputLayout tflite_output_layout(const ir::Model& m, const std::string& layer);

// One graph output as a runtime returns it (`values`: N samples in the file's layout), in the IR
// layout. Throws InputError when the element count does not fit the layer's output shape.
Tensor tflite_output_to_ir(const TfliteOutputLayout& o, const float* values, std::size_t count,
                           std::int64_t batch);

}  // namespace crossdl
