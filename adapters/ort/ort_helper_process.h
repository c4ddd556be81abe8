// The ort runtime's Node helper (web/ort-helper.mjs): the shared helper client
// (adapters/node/node_helper.h) set up for onnxruntime-node.
#pragma once

#include <chrono>
#include <string>

#include "node_helper.h"

namespace crossdl::ort {

inline constexpr int kProtocolVersion = 1;

// Where the helper script is: $CROSSDL_ORT_HELPER, else <source dir>/web/ort-helper.mjs.
std::string helper_script();
// The onnxruntime-node package the helper loads: <dir of the script>/node_modules/onnxruntime-node.
std::string ort_package_dir();
// $CROSSDL_ORT_TIMEOUT_MS, else 120 s.
std::chrono::milliseconds reply_timeout();

using node::base64_decode;
using node::base64_encode;
using node::find_node;

// A helper process for web/ort-helper.mjs (the script is looked up when it is constructed).
class HelperProcess : public node::HelperProcess {
 public:
  HelperProcess();
};

}  // namespace crossdl::ort
