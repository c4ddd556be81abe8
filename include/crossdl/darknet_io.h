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
  // produces: the last IR layer it covers ("conv1" folded with "relu1" gives "relu1").
  std::vector<std::string> layer_ir_names;
  std::string conversions;  // what was converted or folded, for the record
};

// Whether Darknet can express the model, and why not (naming the layer).
Capability darknet_expressible(const ir::Model& m);
// Writes <dir>/<model name>.cfg and .weights with the given [net] batch. Throws InputError when the
// model cannot be expressed (the message names the layer) or a file cannot be written.
DarknetFiles darknet_write(const ir::Model& m, const WeightSet& w, const std::string& dir,
                           std::int64_t batch = 1);

}  // namespace crossdl
