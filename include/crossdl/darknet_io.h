// Darknet's own files: a .cfg and a .weights file written from the model description and weight
// set, without libdarknet (so OpenCV's Darknet importer can read them on a machine without
// Darknet). Darknet folds some IR layers into one of its own: a BatchNorm2d and an activation go
// into the preceding [convolutional], an activation into the preceding [connected].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "crossdl/ir.h"
#include "crossdl/status.h"

namespace crossdl {

struct DarknetFiles {
  std::string cfg;      // path of the .cfg written
  std::string weights;  // path of the .weights written
  // For each Darknet layer (cfg section after [net], in order), the IR layer whose output it
  // produces: the last IR layer it covers ("conv1" folded with "relu1" gives "relu1"); empty for
  // a layer that produces no IR layer's output (see DarknetLayer::ir_name). An IR Flatten has no
  // Darknet layer: its output is the [N,F] view of its input's.
  std::vector<std::string> layer_ir_names;
  std::string conversions;  // what was converted or folded, for the record
};

// One Darknet layer of a planned network and the IR layers it stands for.
struct DarknetLayer {
  enum Kind { Conv, Connected, Maxpool, Avgpool, Shortcut, Route, Activation, Softmax };
  Kind kind = Conv;
  std::string conv;   // Conv: the IR Conv2d
  std::string bn;     // Conv: the IR BatchNorm2d folded into it (empty if none)
  std::string dense;  // Connected: the IR Dense
  // The IR layer whose output this layer produces, as in DarknetFiles::layer_ir_names; empty for
  // layers that produce none of their own: a [route] repeating an earlier output, the 1x1
  // [maxpool] that subsamples before a strided 1x1 convolution, the final [softmax].
  std::string ir_name;
  // Conv with a BN folded in: the IR conv also has a bias. Darknet's batch-normalised convolution
  // has none, and none is needed: BN subtracts the mean of conv(x) + b, which cancels b in training
  // (its gradient is 0), and in evaluation conv + b - running_mean = conv - (running_mean - b). So
  // Darknet's rolling_mean is running_mean - b and the bias stays in the weight set, unchanged.
  bool conv_bias = false;
};

// The model as Darknet layers: what darknet_write writes and what the darknet adapter trains, so
// both run the same network.
struct DarknetPlan {
  std::string body;  // the cfg after its [net] section
  std::vector<DarknetLayer> layers;
  int logits = -1;  // index of the [connected] layer whose output is the logits
  bool has_bn = false;
  std::int64_t c = 0, h = 0, w = 0, classes = 0;
  std::string conversions;  // what was folded or rewritten, layer by layer
};

// The [net] section's settings. Darknet sizes every buffer for `batch` examples at parse time.
struct DarknetNetOptions {
  std::int64_t batch = 1;
  double learning_rate = 0.02, momentum = 0.9, decay = 0.0;
};

// Plans `m` for Darknet, or says which layer it cannot express and why.
Capability darknet_plan(const ir::Model& m, DarknetPlan& out);
// The whole cfg text: [net] with the options, then the plan's layers.
std::string darknet_cfg(const DarknetPlan& p, const DarknetNetOptions& net);

// Whether Darknet can express the model, and why not (naming the layer).
Capability darknet_expressible(const ir::Model& m);
// How many floats darknet_write puts in the .weights file after its header: every IR tensor
// except the conv biases cancelled by a BatchNorm (DarknetLayer::conv_bias). For a model Darknet
// cannot express (which nothing writes), every IR tensor.
std::int64_t darknet_weights_floats(const ir::Model& m);
// Writes <dir>/<model name>.cfg and .weights with the given [net] batch. Throws InputError when the
// model cannot be expressed (the message names the layer) or a file cannot be written.
DarknetFiles darknet_write(const ir::Model& m, const WeightSet& w, const std::string& dir,
                           std::int64_t batch = 1);

}  // namespace crossdl
