// What the ONNX and Darknet paths of the OpenCV DNN runtime share: the runner (an OpenCV Net on
// the CPU target) and the mapping of OpenCV layer names back to IR layers.
#pragma once

#include <opencv2/dnn.hpp>

#include <memory>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/adapter_guard.h"
#include "crossdl/ir.h"

namespace crossdl::opencv_detail {

// Where one IR layer's output is in the OpenCV net.
struct LayerSource {
  std::string ir;           // IR layer name
  std::string cv;           // OpenCV layer whose output 0 it is
  bool time_major = false;  // the tensor is [T,N,F] (ONNX's recurrent order), the IR's [N,T,F]
};

// Runs fn(); a cv::Exception (its message is OpenCV's full "error: (-215:Assertion failed) ..."
// text) or any other exception becomes a failed Status "<what>: OpenCV: <message>".
template <class Fn>
Status guarded(const std::string& what, Fn&& fn) {
  return guarded_call(what.c_str(), "OpenCV", std::forward<Fn>(fn));
}

// What OpenCV 4.6's ONNX importer cannot take from crossdl's writer (names the layer).
Capability onnx_capability(const ir::Model& m);
// IR layer -> OpenCV layer for a net read from crossdl's ONNX file.
std::vector<LayerSource> onnx_layer_map(const ir::Model& m);

// Wraps `net` (already read) as a Runner on the CPU target with opt.threads threads. `layers`
// lists the IR layers the net can show, the last one being the logits.
std::unique_ptr<Runner> make_runner(const ir::Model& m, cv::dnn::Net net, const RunOptions& opt,
                                    std::vector<LayerSource> layers, Status& status);

}  // namespace crossdl::opencv_detail
