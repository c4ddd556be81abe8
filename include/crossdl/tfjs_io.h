// TensorFlow.js *layers* models (model.json + weights.bin) written from the model description and
// weight set, without TensorFlow: a Keras functional `Model` topology (class_name / config /
// inbound_nodes, so that ResNet's Add has its two inputs) and one weights group of little-endian
// float32 tensors, in the order the manifest lists them.
//
// Layouts (what a divergence should be traced to):
//  - the model input is NHWC [null,H,W,C] (a runner transposes crossdl's NCHW batches, tfjs_input);
//    token ids are int32 [null,T] (TF.js has no int64 tensors);
//  - Conv2D kernels are HWIO (from OIHW), Dense kernels [in,out] (transposed), and a Dense that
//    reads a flattened feature map has its kernel rows permuted from CHW to HWC order, because
//    Keras' Flatten of an NHWC map lists features in HWC order;
//  - explicit padding: Keras knows only 'valid' and 'same'. A convolution whose symmetric padding
//    is what 'same' does uses 'same'; otherwise a ZeroPadding2D goes before a 'valid' convolution.
//    A padded pooling must be 'same'-equivalent (zero padding would change a max), else refused;
//  - BatchNormalization (axis -1): gamma, beta, moving_mean, moving_variance, the IR's epsilon,
//    Keras momentum = 1 - PyTorch momentum;
//  - GlobalAvgPool is GlobalAveragePooling2D followed by a Reshape to [1,1,C] (the IR keeps the
//    1x1 map; TF.js' Flatten refuses a rank-2 input);
//  - ImageToSequence is Permute([1,3,2]) + Reshape([H, C*W]): each row's features channel-major;
//  - LSTM: kernel [I,4H] = weight_ih^T, recurrent_kernel [H,4H] = weight_hh^T (Keras gate order
//    i,f,c,o is PyTorch's i,f,g,o), bias = bias_ih + bias_hh, recurrent_activation 'sigmoid'
//    (TF.js' default is hardSigmoid);
//  - GRU is refused: PyTorch applies the reset gate after the recurrent product (Keras
//    reset_after=true) and TF.js 4.22's GRUCell throws on reset_after=true.
//
// The Keras layer that holds an IR layer's output carries that layer's name (tfjs_layer_names);
// helper layers (padding, permute, pooling before a reshape) get derived names. Without
// layer_outputs the model's one output is the last IR layer; with it, every IR layer's output is a
// model output, in IR order (the logits are the last).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "crossdl/ir.h"
#include "crossdl/status.h"
#include "crossdl/tensor.h"

namespace crossdl {

struct TfjsWriteOptions {
  bool layer_outputs = false;
};

struct TfjsFiles {
  std::string model_json;   // <dir>/model.json
  std::string weights_bin;  // <dir>/weights.bin
  std::uint64_t bytes = 0;  // both files together
  // IR layer names of the model outputs, in output order; the last one is the logits layer.
  std::vector<std::string> outputs;
  std::string conversions;  // what was converted or inserted, for the record
};

// Whether the writer can express the model, and why not (naming the layer).
Capability tfjs_expressible(const ir::Model& m);

// The Keras layer name of each IR layer, by IR name: the IR name with characters outside
// [A-Za-z0-9_.-] replaced by '_' (made unique if that makes two equal).
std::map<std::string, std::string> tfjs_layer_names(const ir::Model& m);

// Writes <dir>/model.json and <dir>/weights.bin (created or replaced). Throws InputError when the
// model cannot be expressed (the message names the layer), a weight is missing or misshapen, or a
// file cannot be written.
TfjsFiles tfjs_write(const std::string& dir, const ir::Model& m, const WeightSet& w,
                     const TfjsWriteOptions& opt = {});

// Checks a model.json as far as loading needs: valid JSON, format "layers-model", a
// modelTopology with a config.layers list, a weightsManifest whose weight files exist next to it
// and hold exactly the bytes the listed float32 shapes need. Throws InputError naming the file
// and what is wrong, so that a damaged artefact is told apart from a TF.js failure.
void tfjs_verify_files(const std::string& model_json);

// A batch from make_batch() as the model's input: images NCHW -> NHWC; token ids [N,T] as they
// are (the runner narrows them to int32). Throws InputError (naming the shapes) when x does not
// fit m.
Tensor tfjs_input(const ir::Model& m, const Tensor& x);

// One model output as TF.js returns it (N samples in the Keras layout: NHWC maps, HWC-ordered
// flattened features, or the IR's own layout), converted to the IR layout of `layer`'s output
// ([N,C,H,W] for maps, CHW feature order after Flatten). Throws InputError when the element count
// does not fit the layer's output shape.
Tensor tfjs_output_to_ir(const ir::Model& m, const std::string& layer, const float* values,
                         std::size_t count, std::int64_t batch);

}  // namespace crossdl

// ---- reading weights back (src/formats/tfjs/tfjs_read.cpp) ----------------------------------------
namespace crossdl {

// TF.js weights by manifest name ("<Keras layer>/<param>", e.g. "conv1/kernel"), in the layouts
// tfjs_write gives them.
using TfjsWeights = std::map<std::string, Tensor>;

// Reads the float32 weights a model.json lists from its weight files (tfjs_verify_files first:
// a damaged artefact is an InputError naming the file).
TfjsWeights tfjs_read_weights(const std::string& model_json);

// The weight set of m from TF.js weights written for it: the exact inverse of tfjs_write's
// conversions (HWIO -> OIHW, Dense [in,out] -> [out,in] with the HWC -> CHW row order after a
// flatten, LSTM kernels transposed, BatchNorm gamma/beta/moving_mean/moving_variance), in the
// order and layouts of ir::weight_specs. TF.js keeps one LSTM bias (b_ih + b_hh): it comes back as
// bias_ih = that sum and bias_hh = 0, which compute the same. Names the TF.js side has beyond the
// model's are ignored. Throws InputError naming the weight that is missing, not float32 or
// misshapen, or the layer that TF.js cannot hold (GRU).
WeightSet tfjs_weights_to_ir(const ir::Model& m, const TfjsWeights& w);

}  // namespace crossdl
