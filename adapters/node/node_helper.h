// A long-lived Node child that hosts a JavaScript runtime (onnxruntime-node for `ort`,
// @tensorflow/tfjs for `tfjs`) and the JSON-lines exchange with it (docs/ort-protocol.md). Shared
// by the runtimes that have no C/C++ API here; the process handling (pipes, timeouts, no zombies)
// is kept apart from them so that it can be reasoned about on its own.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/status.h"

namespace crossdl::node {

// What a runtime's helper is and how its messages are worded.
struct HelperSpec {
  std::string label;    // the runtime ("ort"): "<label>: ..." and "<label> helper: ..." messages
  std::string library;  // "onnxruntime-node": prefixes the helper's own {"ok":false} errors
  std::string script;   // full path of the helper script
  std::string timeout_env;  // the variable that sets the reply timeout, quoted on a timeout
};

// $<env_var> when set, else <source dir>/web/<file_name>.
std::string script_path(const char* env_var, const std::string& file_name);
// The npm package the script loads: <dir of the script>/node_modules/<package>.
std::string package_dir(const std::string& script, const std::string& package);
// Full path of `node` on PATH, or "" when there is none.
std::string find_node();
// How long to wait for one reply: $<env_var> in milliseconds, else 120 s (ResNet-20 on a busy
// 2-core machine loads in well under that; a hung helper must not hang a study cell forever).
std::chrono::milliseconds reply_timeout(const char* env_var);

// Child process groups that must not outlive a crossdl child killed from outside (a compare or
// study timeout kills only its own group, and the helper and a browser run in groups of their
// own): when $CROSSDL_CHILD_GROUPS_FILE names a file, "<pgid> <leader start time> <kind>" is
// appended to it as one line (the start time in clock ticks, field 22 of /proc/<pid>/stat, -1
// when unknown; kind "helper" or "browser"), and whoever set the variable kills the groups listed
// there once the child has ended (a helper first gets a few seconds to close its browser).
void record_child_group(pid_t pgid, const char* kind);

std::string base64_encode(const void* data, std::size_t n);
// False (with `why`) on a character outside the alphabet or a bad length.
bool base64_decode(const std::string& text, std::vector<unsigned char>& out, std::string& why);

// One helper process. Requests are answered in order; every failure (the helper died, timed
// out, replied with something that is not the answer to the request) kills it and leaves it
// unusable, so that a half-read reply can never be taken for the next one.
class HelperProcess {
 public:
  explicit HelperProcess(HelperSpec spec);
  HelperProcess(const HelperProcess&) = delete;
  HelperProcess& operator=(const HelperProcess&) = delete;
  // Closes the helper's stdin (it exits on EOF), waits briefly, then kills its process group;
  // always reaps it.
  ~HelperProcess();

  // Spawns `node <script>` in a process group of its own (recorded with record_child_group),
  // which gets SIGTERM if the thread that started it ends (PR_SET_PDEATHSIG: start helpers from
  // a thread that lives as long as they should, crossdl's main thread); a failed Status says
  // what was missing.
  Status start();
  bool alive() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }  // also the process group id; -1 when not running
  // Kills the helper's whole process group at once and reaps the helper.
  void kill() { stop(false); }
  // Called with the helper's pid whenever it is about to be stopped (a failure, kill(), the
  // destructor), while it still runs: what it started outside its group (a detached browser) can
  // still be found among its children then.
  void on_before_stop(std::function<void(pid_t)> f) { before_stop_ = std::move(f); }
  // Sends `request` (an "id" is added) and waits up to `timeout` for its reply. An {"ok":false}
  // reply is a failed Status with the helper's error; `reply` holds the whole object either way.
  Status call(nlohmann::json request, nlohmann::json& reply, std::chrono::milliseconds timeout);
  // The last lines the helper wrote to stderr (for error messages).
  std::string stderr_tail() const;

 private:
  HelperSpec spec_;
  std::chrono::milliseconds timeout_{0};  // of the call in progress, for its timeout message
  pid_t pid_ = -1;
  int in_ = -1;   // our end of the helper's stdin
  int out_ = -1;  // our end of its stdout
  int err_ = -1;  // our end of its stderr
  long long next_id_ = 1;
  std::string out_buf_;
  std::string err_buf_;
  std::function<void(pid_t)> before_stop_;

  Status write_all(const std::string& bytes, std::chrono::steady_clock::time_point deadline);
  Status read_line(std::string& line, std::chrono::steady_clock::time_point deadline);
  void drain_stderr();
  Status fail(const std::string& what);  // kills the helper and returns failed(what + stderr)
  void stop(bool gracefully);
};

}  // namespace crossdl::node
