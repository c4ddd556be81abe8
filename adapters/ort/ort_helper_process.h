// The Node child that hosts onnxruntime-node (web/ort-helper.mjs) and the JSON-lines exchange
// with it (docs/ort-protocol.md). Kept apart from the runtime so that the process handling (pipes,
// timeouts, no zombies) can be reasoned about on its own.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/status.h"

namespace crossdl::ort {

inline constexpr int kProtocolVersion = 1;

// Where the helper script is: $CROSSDL_ORT_HELPER, else <source dir>/web/ort-helper.mjs.
std::string helper_script();
// The onnxruntime-node package the helper loads: <dir of the script>/node_modules/onnxruntime-node.
std::string ort_package_dir();
// Full path of `node` on PATH, or "" when there is none.
std::string find_node();
// How long to wait for one reply: $CROSSDL_ORT_TIMEOUT_MS, else 120 s (ResNet-20 on a busy 2-core
// machine loads in well under that; a hung helper must not hang a study cell forever).
std::chrono::milliseconds reply_timeout();

std::string base64_encode(const void* data, std::size_t n);
// False (with `why`) on a character outside the alphabet or a bad length.
bool base64_decode(const std::string& text, std::vector<unsigned char>& out, std::string& why);

// One helper process. Requests are answered in order; every failure (the helper died, timed
// out, replied with something that is not the answer to the request) kills it and leaves it
// unusable, so that a half-read reply can never be taken for the next one.
class HelperProcess {
 public:
  HelperProcess() = default;
  HelperProcess(const HelperProcess&) = delete;
  HelperProcess& operator=(const HelperProcess&) = delete;
  // Closes the helper's stdin (it exits on EOF), waits briefly, then kills it; always reaps it.
  ~HelperProcess();

  // Spawns `node <script>`; a failed Status says what was missing.
  Status start();
  bool alive() const { return pid_ > 0; }
  // Sends `request` (an "id" is added) and waits up to `timeout` for its reply. An {"ok":false}
  // reply is a failed Status with the helper's error; `reply` holds the whole object either way.
  Status call(nlohmann::json request, nlohmann::json& reply, std::chrono::milliseconds timeout);
  // The last lines the helper wrote to stderr (for error messages).
  std::string stderr_tail() const;

 private:
  pid_t pid_ = -1;
  int in_ = -1;   // our end of the helper's stdin
  int out_ = -1;  // our end of its stdout
  int err_ = -1;  // our end of its stderr
  long long next_id_ = 1;
  std::string out_buf_;
  std::string err_buf_;

  Status write_all(const std::string& bytes, std::chrono::steady_clock::time_point deadline);
  Status read_line(std::string& line, std::chrono::steady_clock::time_point deadline);
  void drain_stderr();
  Status fail(const std::string& what);  // kills the helper and returns failed(what + stderr)
  void stop(bool gracefully);
};

}  // namespace crossdl::ort
