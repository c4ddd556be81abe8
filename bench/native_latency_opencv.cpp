// The direct OpenCV DNN side of the runtime latency benchmark: the file crossdl wrote, read with
// readNetFromONNX (the `opencv` runtime) or readNetFromDarknet (`opencv-darknet`), the default
// OPENCV backend on the CPU target, one thread; per call the user's NCHW buffer is wrapped in a
// 4-d Mat (OpenCV's blob layout is NCHW), setInput, forward() of the logits layer and the logits
// copied out.
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include <cstring>
#include <stdexcept>

#include "runtime_latency.h"

namespace crossdl::bench {
namespace {

class OpencvDirect : public DirectRunner {
 public:
  OpencvDirect(const Artefact& a, const ir::Model& m) {
    cv::setNumThreads(1);
    if (a.format == "darknet") {
      net_ = cv::dnn::readNetFromDarknet(artefact_file(a, ".cfg"), artefact_file(a, ".weights"));
      reader_ = "readNetFromDarknet";
    } else {
      net_ = cv::dnn::readNetFromONNX(artefact_file(a, ".onnx"));
      reader_ = "readNetFromONNX";
    }
    net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    // Darknet files end in [softmax] (Darknet's loss layer): the logits are the layer under it.
    const std::vector<cv::String> names = net_.getLayerNames();
    if (names.size() >= 2 && net_.getLayer(net_.getLayerId(names.back()))->type == "Softmax")
      output_ = names[names.size() - 2];
    dims_ = {1};
    for (std::int64_t d : m.input_shape) dims_.push_back(static_cast<int>(d));
    classes_ = static_cast<std::size_t>(m.num_classes);
  }
  void infer(const float* x, std::vector<float>& logits) override {
    const cv::Mat blob(static_cast<int>(dims_.size()), dims_.data(), CV_32F, const_cast<float*>(x));
    net_.setInput(blob);
    const cv::Mat out = net_.forward(output_);
    if (out.type() != CV_32F || out.total() != classes_ || !out.isContinuous())
      throw std::runtime_error("OpenCV returned an output that is not the logits");
    logits.resize(classes_);
    std::memcpy(logits.data(), out.ptr<float>(), classes_ * sizeof(float));
  }
  std::string api() const override {
    return "cv::dnn::" + reader_ +
           "; setNumThreads(1); Mat over the input; setInput; forward(logits layer)";
  }

 private:
  cv::dnn::Net net_;
  std::string reader_;
  cv::String output_;  // empty: the net's last layer
  std::vector<int> dims_;
  std::size_t classes_ = 0;
};

}  // namespace

std::unique_ptr<DirectRunner> direct_opencv(const Artefact& a, const ir::Model& m) {
  return std::make_unique<OpencvDirect>(a, m);
}

}  // namespace crossdl::bench
