// The `opencv` runtime: OpenCV DNN (4.6, the OPENCV backend on the CPU target) reading crossdl's
// ONNX file with readNetFromONNX. OpenCV's ONNX importer names each layer after its node's first
// output, and crossdl's writer names that output after the IR layer, so layer outputs map back by
// name (docs in README.md).
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

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

// A truncated or corrupt file is the user's input: say so with the file named before OpenCV's
// parser (which reports such files with an internal assertion) sees it.
Status check_onnx_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::bad_input(path + ": cannot open the ONNX artefact");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  onnx::ModelProto mp;
  if (bytes.empty() || !mp.ParseFromString(bytes))
    return Status::bad_input(input_where(path, 0,
                                         "not a valid ONNX protobuf (" +
                                             std::to_string(bytes.size()) +
                                             " bytes; truncated or corrupt?)"));
  try {
    onnx::checker::check_model(mp);
  } catch (const std::exception& e) {
    return Status::bad_input(path + ": fails the ONNX checker: " + e.what());
  }
  return Status::ok();
}

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
    if (status = check_onnx_file(a.files[0]); !status.is_ok()) return nullptr;
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

std::unique_ptr<Runtime> make_opencv_runtime() {
  return std::make_unique<OpencvOnnxRuntime>();
}

std::string probe_opencv(std::string& why) {
  why.clear();
  return CV_VERSION;
}

}  // namespace crossdl
