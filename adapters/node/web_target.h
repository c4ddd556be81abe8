// The web runtimes' names (docs/web-protocol.md, "Naming"): `<runtime>[:<backend>][@<platform>]`,
// e.g. `tfjs:wasm@chromium`. Parsing applies the documented defaults and refuses an unknown
// backend or platform as the user's input; whether a valid combination can run here is a
// separate question (web_target_unsupported), answered with a reason for a skip.
#pragma once

#include <string>
#include <vector>

namespace crossdl::web {

struct WebTarget {
  std::string runtime;       // "tfjs" | "ort-web" | "tflite-web" | "tfjs-train"
  std::string backend;       // "cpu" | "wasm" | "webgl" | "webgpu"
  std::string platform;      // "chromium" | "firefox" | "node"
  std::string name() const;  // "tfjs:wasm@chromium" (always the full form)
  bool browser() const { return platform != "node"; }
  bool operator==(const WebTarget&) const = default;
};

// The runtimes of the table, and each one's backends, in the documented order.
const std::vector<std::string>& web_runtimes();
// Empty for a name that is not a web runtime.
const std::vector<std::string>& web_backends(const std::string& runtime);
const std::vector<std::string>& web_platforms();           // chromium, firefox, node
std::string default_backend(const std::string& runtime);   // cpu (tfjs, tfjs-train), else wasm
std::string default_platform(const std::string& runtime);  // node (tfjs), else chromium

// `runtime` is the base name, `variant` the rest ("", ":wasm", "@firefox", ":wasm@chromium"), as
// split_backend_name gives them. Throws InputError naming the whole name and listing the valid
// backends or platforms.
WebTarget parse_web_target(const std::string& runtime, const std::string& variant);

// Why a valid name cannot run on its platform whatever the machine (a browser-only library or a
// browser-only backend in Node), or "" when it may: what the browser itself lacks (WebGPU in
// Firefox) the helper says at `start`.
std::string web_target_unsupported(const WebTarget& t);

}  // namespace crossdl::web
