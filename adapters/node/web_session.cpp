#include "web_session.h"

#include "crossdl/procfs.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace crossdl::web {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool speaks_protocol(const json& hello) {
  return hello.is_object() && hello.contains("protocol") && hello["protocol"].is_number_integer() &&
         hello["protocol"].get<long long>() == kWebProtocol;
}

bool flag(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
}

std::string number_text(const json& j, const char* key) {
  return j.contains(key) ? j[key].dump() : std::string("missing");
}

}  // namespace

std::string web_helper_script() {
  return node::script_path("CROSSDL_WEB_HELPER", "web-helper.mjs");
}

std::chrono::milliseconds web_timeout() {
  return node::reply_timeout(kWebTimeoutEnv);
}

std::string web_package(const std::string& runtime) {
  if (runtime == "ort-web") return "onnxruntime-web";
  if (runtime == "tflite-web") return "@tensorflow/tfjs-tflite";
  return "@tensorflow/tfjs";
}

std::string browser_executable(const std::string& platform) {
  if (platform == "chromium") return "/usr/bin/chromium";
  if (platform == "firefox") return "/usr/bin/firefox-esr";
  return "";
}

std::string web_probe(const std::string& runtime, std::string& why) {
  why.clear();
  if (node::find_node().empty()) {
    why = "no `node` on PATH (apt-get install nodejs)";
    return "";
  }
  const std::string script = web_helper_script();
  if (!fs::exists(script)) {
    why = "the helper " + script + " is missing";
    return "";
  }
  const std::string package = web_package(runtime);
  const std::string dir = node::package_dir(script, package);
  if (!fs::exists(dir)) {
    why = dir + " is missing (cd web && ONNXRUNTIME_NODE_INSTALL=skip npm ci)";
    return "";
  }
  node::HelperProcess h({runtime, "web helper", script, kWebTimeoutEnv});
  json reply;
  Status s = h.start();
  if (s.is_ok()) s = h.call({{"op", "hello"}, {"protocol", kWebProtocol}}, reply, web_timeout());
  if (!s.is_ok()) {
    why = s.message();
    return "";
  }
  if (!speaks_protocol(reply)) {
    why = "the web helper speaks protocol " + number_text(reply, "protocol") + ", crossdl " +
          std::to_string(kWebProtocol);
    return "";
  }
  if (!reply.contains("versions") || !reply["versions"].is_object() ||
      !reply["versions"].contains(package) || !reply["versions"][package].is_string()) {
    why = "the web helper's hello does not give " + package + "'s version";
    return "";
  }
  return reply["versions"][package].get<std::string>();
}

WebSession::WebSession(WebTarget target) : target_(std::move(target)) {}

WebSession::~WebSession() {
  // The helper closes the browser on EOF; its children's groups are noted just before (while
  // node is still their parent), and whatever is left of them is killed after.
  helper_.reset();
  kill_browser_groups();
}

void WebSession::kill_browser_groups() {
  for (const auto& [g, ticks] : groups_)
    if (ticks >= 0 && process_start_ticks(g) == ticks) ::kill(-g, SIGKILL);
  groups_.clear();
}

void WebSession::kill() {
  if (helper_ != nullptr) {
    last_stderr_ = helper_->stderr_tail();
    helper_->kill();
    helper_.reset();
  }
  kill_browser_groups();
}

std::string WebSession::stderr_tail() const {
  return helper_ != nullptr ? helper_->stderr_tail() : last_stderr_;
}

Status WebSession::fail_closed(Status s) {
  kill();
  return s;
}

Status WebSession::open(const std::string& artefact_dir, int threads) {
  if (const std::string why = web_target_unsupported(target_); !why.empty())
    return Status::unsupported(why);
  if (target_.browser()) {
    const std::string exe = browser_executable(target_.platform);
    if (!fs::exists(exe))
      return Status::unsupported(target_.name() + ": no " + exe + " (apt-get install " +
                                 (target_.platform == "firefox" ? "firefox-esr" : "chromium") +
                                 ")");
  }
  helper_ = std::make_unique<node::HelperProcess>(
      node::HelperSpec{target_.name(), target_.name(), web_helper_script(), kWebTimeoutEnv});
  // A failed call stops the helper inside HelperProcess: the browser, node's child in a group of
  // its own, must be found before that.
  helper_->on_before_stop([this](pid_t helper) {
    for (long long g : child_process_groups(helper))
      groups_.emplace(static_cast<pid_t>(g), process_start_ticks(g));
  });
  if (Status s = helper_->start(); !s.is_ok()) return fail_closed(s);
  if (Status s = call({{"op", "hello"}, {"protocol", kWebProtocol}}, hello_); !s.is_ok())
    return fail_closed(s);
  if (!speaks_protocol(hello_))
    return fail_closed(Status::failed(target_.name() + ": the web helper speaks protocol " +
                                      number_text(hello_, "protocol") + ", crossdl " +
                                      std::to_string(kWebProtocol)));
  json req = {{"op", "start"},
              {"runtime", target_.runtime},
              {"backend", target_.backend},
              {"platform", target_.platform},
              {"artefact_dir", fs::absolute(artefact_dir).string()},
              {"threads", threads}};
  if (Status s = call(std::move(req), start_reply_); !s.is_ok()) return fail_closed(s);
  const json& r = start_reply_;
  // The browser's group first: whatever else is wrong with the reply, it must be killable.
  if (r.contains("browser_pid") && r["browser_pid"].is_number_integer()) {
    start_.browser_pid = static_cast<pid_t>(r["browser_pid"].get<long long>());
    if (start_.browser_pid > 1) {
      node::record_child_group(start_.browser_pid, "browser");
      groups_.emplace(start_.browser_pid, process_start_ticks(start_.browser_pid));
    }
  }
  if (target_.browser() && start_.browser_pid <= 1)
    return fail_closed(
        Status::failed(target_.name() + ": the web helper's start reply has no browser_pid"));
  for (const char* k : {"browser", "backend", "device"})
    if (!r.contains(k) || !r[k].is_string())
      return fail_closed(
          Status::failed(target_.name() + ": the web helper's start reply has no '" + k + "'"));
  start_.browser = r["browser"].get<std::string>();
  start_.backend = r["backend"].get<std::string>();
  start_.device = r["device"].get<std::string>();
  start_.cross_origin_isolated = r.contains("cross_origin_isolated") &&
                                 r["cross_origin_isolated"].is_boolean() &&
                                 r["cross_origin_isolated"].get<bool>();
  if (r.contains("timer_resolution_ms") && r["timer_resolution_ms"].is_number())
    start_.timer_resolution_ms = r["timer_resolution_ms"].get<double>();
  if (r.contains("threads") && r["threads"].is_number_integer())
    start_.threads = r["threads"].get<int>();
  else
    start_.threads = threads;
  if (r.contains("ms") && r["ms"].is_number()) start_.ms = r["ms"].get<double>();
  return Status::ok();
}

Status WebSession::call(json request, json& reply) {
  if (helper_ == nullptr || !helper_->alive())
    return Status::failed(target_.name() +
                          ": the web helper is not running (an earlier call "
                          "failed)" +
                          (last_stderr_.empty() ? "" : " (helper stderr: " + last_stderr_ + ")"));
  reply = json();
  Status s = helper_->call(std::move(request), reply, web_timeout());
  if (s.is_ok()) return s;
  if (helper_->alive() && flag(reply, "unsupported"))
    return Status::unsupported(reply.contains("error") && reply["error"].is_string()
                                   ? target_.name() + ": " + reply["error"].get<std::string>()
                                   : target_.name() + ": not supported here");
  return fail_closed(s);
}

Status WebSession::memory(WebMemory& out) {
  json reply;
  if (Status s = call({{"op", "memory"}}, reply); !s.is_ok()) return s;
  out = {};
  for (auto [key, dst] : {std::pair<const char*, double*>{"pss_mb", &out.pss_mb},
                          {"peak_pss_mb", &out.peak_pss_mb}}) {
    if (!reply.contains(key) || !reply[key].is_number())
      return Status::failed(target_.name() + ": memory reply has no number '" + key + "'");
    *dst = reply[key].get<double>();
  }
  if (reply.contains("processes") && reply["processes"].is_number_integer())
    out.processes = reply["processes"].get<int>();
  if (reply.contains("js_heap_mb") && reply["js_heap_mb"].is_number())
    out.js_heap_mb = reply["js_heap_mb"].get<double>();
  if (reply.contains("js_heap_source") && reply["js_heap_source"].is_string())
    out.js_heap_source = reply["js_heap_source"].get<std::string>();
  return Status::ok();
}

Status decode_f32(const json& spec, const std::string& what, std::vector<float>& values,
                  std::vector<std::int64_t>& shape) {
  if (!spec.is_object() || !spec.contains("dtype") || spec["dtype"] != "f32" ||
      !spec.contains("data") || !spec["data"].is_string() || !spec.contains("shape") ||
      !spec["shape"].is_array())
    return Status::failed(what + " is not an f32 tensor {dtype, shape, data}");
  shape.clear();
  std::int64_t count = 1;
  for (const json& d : spec["shape"]) {
    if (!d.is_number_integer() || d.get<std::int64_t>() < 0)
      return Status::failed(what + ": bad shape " + spec["shape"].dump());
    shape.push_back(d.get<std::int64_t>());
    count *= shape.back();
  }
  std::vector<unsigned char> raw;
  std::string why;
  if (!node::base64_decode(spec["data"].get_ref<const std::string&>(), raw, why))
    return Status::failed(what + ": " + why);
  if (raw.size() != static_cast<std::size_t>(count) * sizeof(float))
    return Status::failed(what + ": " + std::to_string(raw.size()) + " bytes for shape " +
                          spec["shape"].dump() + ", expected " +
                          std::to_string(count * static_cast<std::int64_t>(sizeof(float))));
  values.resize(static_cast<std::size_t>(count));
  if (!raw.empty()) std::memcpy(values.data(), raw.data(), raw.size());
  return Status::ok();
}

json encode_tensor(const char* dtype, const std::vector<std::int64_t>& shape, const void* data,
                   std::size_t bytes) {
  return {{"dtype", dtype}, {"shape", shape}, {"data", node::base64_encode(data, bytes)}};
}

}  // namespace crossdl::web
