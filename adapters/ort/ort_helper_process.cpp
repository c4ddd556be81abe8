#include "ort_helper_process.h"

namespace crossdl::ort {

std::string helper_script() {
  return node::script_path("CROSSDL_ORT_HELPER", "ort-helper.mjs");
}

std::string ort_package_dir() {
  return node::package_dir(helper_script(), "onnxruntime-node");
}

std::chrono::milliseconds reply_timeout() {
  return node::reply_timeout("CROSSDL_ORT_TIMEOUT_MS");
}

HelperProcess::HelperProcess()
    : node::HelperProcess({"ort", "onnxruntime-node", helper_script(), "CROSSDL_ORT_TIMEOUT_MS"}) {}

}  // namespace crossdl::ort
