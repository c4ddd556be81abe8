// The `opencv-darknet` runtime: OpenCV DNN reading the Darknet cfg + weights that crossdl writes
// itself (darknet_write, no libdarknet), so that OpenCV's Darknet importer is compared with its
// ONNX importer and with Darknet on the same weights.
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/darknet_io.h"
#include "crossdl/runtime.h"
#include "opencv_common.h"

namespace crossdl {

namespace {

namespace fs = std::filesystem;

// Darknet's .weights: int32 major, minor, revision, then `seen` (8 bytes from version 0.2 on, 4
// before), then the floats. OpenCV reads it without checking its length, so a truncated file
// would load silently with garbage or zeros: check the length against the model first.
Status check_weights_file(const std::string& path, const ir::Model& m) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return Status::bad_input(path + ": cannot open the Darknet weights");
  const auto size = static_cast<std::int64_t>(in.tellg());
  in.seekg(0);
  std::int32_t ver[3] = {0, 0, 0};
  if (size < 16 || !in.read(reinterpret_cast<char*>(ver), sizeof ver))
    return Status::bad_input(input_where(
        path, 0, "too short for a Darknet weights header (" + std::to_string(size) + " bytes)"));
  const std::int64_t header = (ver[0] * 10 + ver[1] >= 2) ? 20 : 16;
  const std::int64_t want = header + 4 * darknet_weights_floats(m);
  if (size != want)
    return Status::bad_input(input_where(path, std::min(size, want),
                                         "Darknet weights for model " + m.name + " (expected " +
                                             std::to_string(want) + " bytes, found " +
                                             std::to_string(size) + ")"));
  return Status::ok();
}

// Darknet section i -> the OpenCV layer that ends it. OpenCV 4.6's Darknet importer names the
// layers it makes for section i "<kind>_<i>" (conv_3, bn_3), except that the activation folded
// into a section is created after its section counter has moved on: [convolutional] 0 with
// activation=relu gives conv_0, bn_0, relu_1. So an activation layer numbered n+1 belongs to
// section n unless section n+1 is itself a standalone [activation].
std::map<int, std::string> section_outputs(const cv::dnn::Net& net, const DarknetPlan& plan) {
  static const std::vector<std::string> kActivations = {"ReLU",  "TanH", "Sigmoid", "ReLU6",
                                                        "Swish", "Mish", "ELU"};
  std::map<int, std::string> out;
  for (const cv::String& name : net.getLayerNames()) {
    const std::size_t us = name.rfind('_');
    if (us == std::string::npos || us + 1 >= name.size()) continue;
    const std::string num = name.substr(us + 1);
    if (!std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    int section = std::stoi(num);
    const std::string type = net.getLayer(name)->type;
    const bool activation =
        std::find(kActivations.begin(), kActivations.end(), type) != kActivations.end();
    const bool standalone =
        section >= 0 && section < static_cast<int>(plan.layers.size()) &&
        plan.layers[static_cast<std::size_t>(section)].kind == DarknetLayer::Activation;
    if (activation && !standalone && section > 0) --section;
    out[section] = name;  // getLayerNames lists layers in creation order
  }
  return out;
}

std::vector<opencv_detail::LayerSource> darknet_layer_map(const ir::Model& m,
                                                          const DarknetPlan& plan,
                                                          const cv::dnn::Net& net) {
  const std::map<int, std::string> sections = section_outputs(net, plan);
  std::map<std::string, std::string> cv_of;  // IR layer -> OpenCV layer
  for (std::size_t i = 0; i < plan.layers.size(); ++i) {
    const std::string& ir = plan.layers[i].ir_name;
    auto it = sections.find(static_cast<int>(i));
    if (!ir.empty() && it != sections.end()) cv_of[ir] = it->second;
  }
  std::vector<opencv_detail::LayerSource> out;
  for (std::size_t k = 0; k < m.layers.size(); ++k) {
    const ir::Layer& l = m.layers[k];
    // A Flatten has no Darknet layer: its output is its input's, viewed as [N,F].
    if (l.op == ir::Op::Flatten && !cv_of.count(l.name)) {
      const std::string in = ir::resolved_inputs(m, k).at(0);
      if (cv_of.count(in)) cv_of[l.name] = cv_of[in];
    }
    if (cv_of.count(l.name)) out.push_back({l.name, cv_of[l.name], false});
  }
  return out;
}

class OpencvDarknetRuntime : public Runtime {
 public:
  FrameworkInfo info() const override {
    return {"opencv-darknet", "OpenCV DNN (Darknet importer)", CV_VERSION,
            "cpu (DNN_BACKEND_OPENCV, DNN_TARGET_CPU)"};
  }

  Capability supports(const ir::Model& m) const override {
    try {
      ir::validate(m);
    } catch (const InputError& e) {
      return Capability::no(e.what());
    }
    return darknet_expressible(m);
  }

  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions&, Artefact& out) override {
    if (Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    DarknetFiles files;
    Status s = opencv_detail::guarded("export", [&] {
      export_dir_create(dir);
      files = darknet_write(m, w, dir, 1);
      out = artefact_of("darknet", dir, {files.cfg, files.weights}, files.conversions);
    });
    return s;
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    if (a.format != "darknet" || a.files.size() != 2) {
      status =
          Status::bad_input("opencv-darknet: needs a .cfg and a .weights file, got format '" +
                            a.format + "' with " + std::to_string(a.files.size()) + " file(s)");
      return nullptr;
    }
    if (opt.threads < 1) {
      status = Status::bad_input("opencv-darknet: threads must be >= 1, got " +
                                 std::to_string(opt.threads));
      return nullptr;
    }
    if (!fs::exists(a.files[0])) {
      status = Status::bad_input(a.files[0] + ": cannot open the Darknet cfg");
      return nullptr;
    }
    if (status = check_weights_file(a.files[1], m); !status.is_ok()) return nullptr;
    DarknetPlan plan;
    if (Capability c = darknet_plan(m, plan); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    cv::dnn::Net net;
    status = opencv_detail::guarded("load " + a.files[0], [&] {
      cv::setNumThreads(opt.threads);
      net = cv::dnn::readNetFromDarknet(a.files[0], a.files[1]);
    });
    if (!status.is_ok()) return nullptr;
    auto layers = darknet_layer_map(m, plan, net);
    return opencv_detail::make_runner(m, std::move(net), opt, std::move(layers), status);
  }
};

}  // namespace

std::unique_ptr<Runtime> make_opencv_darknet_runtime(const std::string& variant) {
  require_no_variant("opencv-darknet", variant);
  return std::make_unique<OpencvDarknetRuntime>();
}

std::string probe_opencv_darknet(std::string& why) {
  why.clear();
  return CV_VERSION;
}

}  // namespace crossdl
