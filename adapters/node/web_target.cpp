#include "web_target.h"

#include <algorithm>
#include <map>

#include "crossdl/status.h"

namespace crossdl::web {

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

std::string WebTarget::name() const {
  return runtime + ":" + backend + "@" + platform;
}

const std::vector<std::string>& web_runtimes() {
  static const std::vector<std::string> v = {"tfjs", "ort-web", "tflite-web", "tfjs-train"};
  return v;
}

const std::vector<std::string>& web_backends(const std::string& runtime) {
  static const std::map<std::string, std::vector<std::string>> table = {
      {"tfjs", {"cpu", "wasm", "webgl", "webgpu"}},
      {"tfjs-train", {"cpu", "wasm", "webgl", "webgpu"}},
      {"ort-web", {"wasm", "webgl", "webgpu"}},
      {"tflite-web", {"wasm"}},
  };
  static const std::vector<std::string> none;
  const auto it = table.find(runtime);
  return it == table.end() ? none : it->second;
}

const std::vector<std::string>& web_platforms() {
  static const std::vector<std::string> v = {"chromium", "firefox", "node"};
  return v;
}

std::string default_backend(const std::string& runtime) {
  return runtime == "tfjs" || runtime == "tfjs-train" ? "cpu" : "wasm";
}

std::string default_platform(const std::string& runtime) {
  return runtime == "tfjs" ? "node" : "chromium";
}

WebTarget parse_web_target(const std::string& runtime, const std::string& variant) {
  const std::string whole = runtime + variant;
  if (!contains(web_runtimes(), runtime))
    throw InputError("'" + whole + "': '" + runtime +
                     "' is not a web runtime (web runtimes: " + joined(web_runtimes()) + ")");
  WebTarget t{runtime, default_backend(runtime), default_platform(runtime)};
  std::string backend_text, platform_text;
  bool has_backend = false, has_platform = false;
  std::string rest = variant;
  if (!rest.empty() && rest[0] == ':') {
    const std::size_t at = rest.find('@');
    backend_text = rest.substr(1, at == std::string::npos ? std::string::npos : at - 1);
    has_backend = true;
    rest = at == std::string::npos ? "" : rest.substr(at);
  }
  if (!rest.empty() && rest[0] == '@') {
    platform_text = rest.substr(1);
    has_platform = true;
    rest.clear();
  }
  const std::string form = " (the form is " + runtime + "[:<backend>][@<platform>])";
  if (!rest.empty())
    throw InputError("'" + whole + "': cannot read '" + variant + "' as :<backend>@<platform>" +
                     form);
  if (has_backend) {
    if (!contains(web_backends(runtime), backend_text))
      throw InputError("'" + whole + "': unknown backend '" + backend_text + "' (" + runtime +
                       " backends: " + joined(web_backends(runtime)) + ")");
    t.backend = backend_text;
  }
  if (has_platform) {
    if (!contains(web_platforms(), platform_text))
      throw InputError("'" + whole + "': unknown platform '" + platform_text +
                       "' (platforms: " + joined(web_platforms()) + ")");
    t.platform = platform_text;
  }
  return t;
}

std::string web_target_unsupported(const WebTarget& t) {
  if (t.platform != "node") return "";
  if (t.runtime == "tflite-web")
    return t.name() +
           ": @tensorflow/tfjs-tflite runs only in a browser (its wasm loader needs a "
           "page); use @chromium or @firefox";
  if (t.backend == "webgl" || t.backend == "webgpu")
    return t.name() + ": Node has no " + std::string(t.backend == "webgl" ? "WebGL" : "WebGPU") +
           "; use @chromium" + (t.backend == "webgl" ? " or @firefox" : "");
  return "";
}

}  // namespace crossdl::web
