// The interchange file: a model description plus its weight set, saved as a real ONNX model
// (standard operators, weights as initializers named like the weight set) that passes the ONNX
// checker. Reading it back gives the identical description and bit-identical weights.
#pragma once

#include <map>
#include <string>

#include "crossdl/ir.h"

namespace crossdl {

namespace quant {
struct QuantModel;
}

struct OnnxWriteOptions {
  int opset = 13;                               // 13 or 17
  std::map<std::string, std::string> metadata;  // provenance, stored as metadata_props
  // Also make every IR layer's output a graph output (named like the layer, after "logits"), so
  // that a runtime can return them all from one run. The tensors are the graph's own: an
  // ImageToSequence output is time-major [T,N,F] there (the reader of such outputs transposes it
  // back to the IR's [N,T,F]). onnx_read accepts only the logits output, so such a file is for
  // runtimes, not for the interchange.
  bool layer_outputs = false;
  // Reduced precision, with crossdl's parameters (crossdl/quant.h): m and w must be the quantized
  // model's (QuantModel::model, ::weights). int8-static is written in QDQ form: int8 weights
  // (per channel along the output axis) and int32 biases through DequantizeLinear, and every
  // quantized activation through QuantizeLinear + DequantizeLinear; fp16/bf16 store the weights
  // in that type with a Cast to float. With layer_outputs, only quantized activations are exposed.
  // Such a file is for runtimes; onnx_read reads the fp32 interchange only.
  const quant::QuantModel* quant = nullptr;
};

// One graph output of a file written with layer_outputs, as a runtime returned it (`shape`,
// row-major `values`), in the IR's layout of layer `l`'s output: an ImageToSequence output comes
// back from time-major [T,N,F] to [N,T,F]; the others are already the IR's. `sample` is the
// layer's output shape without the batch (ir::infer_shapes). Throws InputError naming the layer
// when the shape does not fit.
Tensor onnx_output_to_ir(const ir::Layer& l, const Shape& sample, std::int64_t batch,
                         const Shape& shape, const float* values);

// Throws InputError when the model cannot be expressed; never writes a partial file (writes to a
// temporary name and renames).
void onnx_write(const std::string& path, const ir::Model& m, const WeightSet& w,
                const OnnxWriteOptions& opt = {});

struct OnnxModel {
  ir::Model model;
  WeightSet weights;
  std::map<std::string, std::string> metadata;
  int opset = 0;
};
// Throws InputError naming the file (and the node, for an unsupported operator).
OnnxModel onnx_read(const std::string& path);

}  // namespace crossdl
