// One session with web/web-helper.mjs (docs/web-protocol.md): a Node child that hosts TF.js,
// ONNX Runtime Web or TFLite either in Node itself or in a headless browser it launches. The
// session says hello, starts the runtime on its platform and keeps what `start` reported (the
// browser, the backend really in use, the device it runs on, the timer resolution). Whatever
// goes wrong, and when the session ends, the helper's process group and the browser's (puppeteer
// launches the browser detached, in a group of its own) are killed: no browser is left behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "crossdl/status.h"
#include "node_helper.h"
#include "web_target.h"

namespace crossdl::web {

constexpr int kWebProtocol = 1;
constexpr const char* kWebTimeoutEnv = "CROSSDL_WEB_TIMEOUT_MS";

// $CROSSDL_WEB_HELPER, else <source dir>/web/web-helper.mjs.
std::string web_helper_script();
// $CROSSDL_WEB_TIMEOUT_MS, else 120 s: the limit on every reply (browser launch included).
std::chrono::milliseconds web_timeout();
// The npm package a runtime's library comes from ("@tensorflow/tfjs", "onnxruntime-web",
// "@tensorflow/tfjs-tflite").
std::string web_package(const std::string& runtime);
// The browser executable of a platform ("/usr/bin/chromium", "/usr/bin/firefox-esr"), "" for node.
std::string browser_executable(const std::string& platform);

// What the library is and whether it can run here, without starting a browser: node, the helper
// script and the npm package are checked, then the helper's hello gives the version of
// web_package(runtime). Empty with `why` when something is missing.
std::string web_probe(const std::string& runtime, std::string& why);

// The `start` reply, typed.
struct WebStart {
  std::string browser;  // "Chromium 156.0.8078.108", "Node v20.20.2"
  std::string backend;  // what the library reports as active
  std::string device;   // "wasm simd, 1 thread", "WebGL2 on SwiftShader (software)"...
  bool cross_origin_isolated = false;
  double timer_resolution_ms = 0;
  pid_t browser_pid = -1;  // -1 for node
  int threads = 1;
  double ms = 0;  // browser launch + page + library init
};

// The `memory` reply.
struct WebMemory {
  double pss_mb = 0;       // PSS summed over the browser's process tree (Node's own for node)
  double peak_pss_mb = 0;  // the largest such sum since start
  int processes = 0;
  double js_heap_mb = -1;  // -1 where the browser reports none
  std::string js_heap_source;
};

class WebSession {
 public:
  explicit WebSession(WebTarget target);
  WebSession(const WebSession&) = delete;
  WebSession& operator=(const WebSession&) = delete;
  // Closes the helper (EOF: it closes the browser), then kills both process groups.
  ~WebSession();

  // hello + start for the artefact folder (absolute or not). Unsupported (with the reason) for a
  // combination that cannot run here, failed for anything else; the session is closed then.
  Status open(const std::string& artefact_dir, int threads);
  bool is_open() const { return helper_ != nullptr && helper_->alive(); }

  // One request (an "id" is added). An {"ok":false,"unsupported":true} reply is
  // Status::unsupported with the helper's message and leaves the session open; any other failure
  // (an error reply, a timeout, a dead helper, a malformed reply) closes the session.
  Status call(nlohmann::json request, nlohmann::json& reply);
  Status memory(WebMemory& out);

  const WebTarget& target() const { return target_; }
  const WebStart& started() const { return start_; }
  const nlohmann::json& hello_reply() const { return hello_; }
  const nlohmann::json& start_reply() const { return start_reply_; }
  // The helper's stderr tail, for error messages.
  std::string stderr_tail() const;

  // Kills the helper's and the browser's process groups now; the session is unusable after.
  void kill();

 private:
  WebTarget target_;
  std::unique_ptr<node::HelperProcess> helper_;
  nlohmann::json hello_;
  nlohmann::json start_reply_;
  WebStart start_;
  std::string last_stderr_;
  // Process groups to kill when the session ends: the browser's and those of the helper's
  // children seen before it was stopped, each with its leader's start time (a group is killed only
  // while that same leader runs: a gone leader's id may lead someone else's group by then).
  std::map<pid_t, long long> groups_;

  Status fail_closed(Status s);  // closes the session and returns s
  void kill_browser_groups();    // the start reply's browser_pid and child_groups_
};

// Reads a base64 f32 tensor spec ({"dtype":"f32","shape":[...],"data":"..."}) of a reply;
// `what` names it in the failed Status.
Status decode_f32(const nlohmann::json& spec, const std::string& what, std::vector<float>& values,
                  std::vector<std::int64_t>& shape);
// {"dtype":"f32"|"i64","shape":[...],"data":"<base64>"} for a buffer of that dtype.
nlohmann::json encode_tensor(const char* dtype, const std::vector<std::int64_t>& shape,
                             const void* data, std::size_t bytes);

}  // namespace crossdl::web
