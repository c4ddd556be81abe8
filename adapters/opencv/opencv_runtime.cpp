// The `opencv` runtime: OpenCV DNN (4.6, the OPENCV backend on the CPU target) reading crossdl's
// ONNX file with readNetFromONNX. OpenCV's ONNX importer names each layer after its node's first
// output, and crossdl's writer names that output after the IR layer, so layer outputs map back by
// name (docs in README.md).

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/onnx_io.h"
#include "crossdl/runtime.h"
#include "opencv_common.h"

namespace crossdl {

namespace {

namespace fs = std::filesystem;

class OpencvOnnxRuntime : public Runtime {
 public:
  FrameworkInfo info() const override {
    return {"opencv", "OpenCV DNN", CV_VERSION, "cpu (DNN_BACKEND_OPENCV, DNN_TARGET_CPU)"};
  }

  Capability supports(const ir::Model& m) const override {
    try {
      ir::validate(m);
    } catch (const InputError& e) {
      return Capability::no(e.what());
    }
    return opencv_detail::onnx_capability(m);
  }

  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions& opt, Artefact& out) override {
    if (Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    // OpenCV can return any layer's output by name; extra graph outputs are not needed (and
    // would only add unconnected outputs to its graph).
    Status s = guarded_call("export", "onnx", [&] {
      out = onnx_artefact(m, w, dir, opt.onnx_opset, false);
    });
    if (!s.is_ok()) return s;
    out.conversions = "none (ONNX initializers keep PyTorch's layouts)";
    return Status::ok();
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    if (a.format != "onnx" || a.files.size() != 1) {
      status = Status::bad_input("opencv: needs one ONNX file, got format '" + a.format +
                                 "' with " + std::to_string(a.files.size()) + " file(s)");
      return nullptr;
    }
    if (opt.threads < 1) {
      status =
          Status::bad_input("opencv: threads must be >= 1, got " + std::to_string(opt.threads));
      return nullptr;
    }
    if (status = onnx_check_file(a.files[0]); !status.is_ok()) return nullptr;
    cv::dnn::Net net;
    status = opencv_detail::guarded("load " + a.files[0], [&] {
      cv::setNumThreads(opt.threads);
      net = cv::dnn::readNetFromONNX(a.files[0]);
    });
    if (!status.is_ok()) return nullptr;
    return opencv_detail::make_runner(m, std::move(net), opt, opencv_detail::onnx_layer_map(m),
                                      status);
  }
};

}  // namespace

std::unique_ptr<Runtime> make_opencv_runtime(const std::string& variant) {
  require_no_variant("opencv", variant);
  return std::make_unique<OpencvOnnxRuntime>();
}

std::string probe_opencv(std::string& why) {
  why.clear();
  return CV_VERSION;
}

}  // namespace crossdl
