// The `tfjs` runtime: TensorFlow.js 4.22 (@tensorflow/tfjs, pure-JavaScript cpu backend) running
// the layers model crossdl writes (crossdl/tfjs_io.h), inside one long-lived Node helper per Runner
// (web/tfjs-helper.mjs, docs/ort-protocol.md section "tfjs"). The helper never sees the IR: crossdl
// transposes inputs to NHWC and converts every output back to the IR layout.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/runtime.h"
#include "crossdl/tfjs_io.h"
#include "node_helper.h"

namespace crossdl {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kLibrary = "TensorFlow.js (@tensorflow/tfjs in Node)";
// TF.js' cpu backend is plain JavaScript on Node's main thread: one thread, whatever is asked.
constexpr const char* kDevice = "cpu (tfjs cpu backend, single-threaded JavaScript)";
constexpr int kProtocolVersion = 1;
constexpr const char* kTimeoutEnv = "CROSSDL_TFJS_TIMEOUT_MS";

std::string helper_script() {
  return node::script_path("CROSSDL_TFJS_HELPER", "tfjs-helper.mjs");
}

node::HelperSpec helper_spec() {
  return {"tfjs", "@tensorflow/tfjs", helper_script(), kTimeoutEnv};
}

std::chrono::milliseconds timeout() {
  return node::reply_timeout(kTimeoutEnv);
}

// Starts a helper and checks that it speaks our protocol; `reply` is its hello.
Status start_helper(node::HelperProcess& h, json& reply) {
  if (Status s = h.start(); !s.is_ok()) return s;
  if (Status s = h.call({{"op", "hello"}, {"protocol", kProtocolVersion}}, reply, timeout());
      !s.is_ok())
    return s;
  if (reply.value("protocol", -1) != kProtocolVersion)
    return Status::failed("tfjs: the helper speaks protocol " +
                          (reply.contains("protocol") ? reply["protocol"].dump() : "?") +
                          ", crossdl " + std::to_string(kProtocolVersion));
  if (!reply.contains("tfjs_version") || !reply["tfjs_version"].is_string() ||
      reply["tfjs_version"].get<std::string>().empty())
    return Status::failed("tfjs: the helper did not report @tensorflow/tfjs' version");
  return Status::ok();
}

std::string probe_version(std::string& why) {
  why.clear();
  if (node::find_node().empty()) {
    why = "no `node` on PATH (apt-get install nodejs)";
    return "";
  }
  const std::string script = helper_script();
  if (!fs::exists(script)) {
    why = "the helper " + script + " is missing";
    return "";
  }
  const std::string pkg = node::package_dir(script, "@tensorflow/tfjs");
  if (!fs::exists(pkg)) {
    why = pkg + " is missing (cd web && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts)";
    return "";
  }
  node::HelperProcess h(helper_spec());
  json reply;
  if (Status s = start_helper(h, reply); !s.is_ok()) {
    why = s.message();
    return "";
  }
  return reply["tfjs_version"].get<std::string>();
}

class TfjsRunner : public Runner {
 public:
  TfjsRunner(const ir::Model& m, std::unique_ptr<node::HelperProcess> h,
             std::map<std::string, std::string> keras_of, std::vector<std::string> exposed)
      : m_(m),
        helper_(std::move(h)),
        keras_of_(std::move(keras_of)),
        exposed_(std::move(exposed)) {}

  Status infer(const Tensor& x, Tensor& logits) override {
    std::vector<LayerOutput> outs;
    if (Status s = run(x, {m_.layers.back().name}, outs); !s.is_ok()) return s;
    logits = std::move(outs.back().value);
    const Shape want = {x.dim(0), m_.num_classes};
    if (logits.shape() != want)
      return Status::failed("tfjs: logits have shape " + shape_str(logits.shape()) + ", expected " +
                            shape_str(want));
    logits.set_layout(Layout::NC);
    return Status::ok();
  }

  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    if (exposed_.size() < m_.layers.size())
      return Status::unsupported(
          "tfjs: the model exposes only its logits (export it with ExportOptions.layer_outputs)");
    return run(x, exposed_, out);
  }

 private:
  const ir::Model m_;
  std::unique_ptr<node::HelperProcess> helper_;
  std::map<std::string, std::string> keras_of_;  // IR layer -> Keras layer name
  std::vector<std::string> exposed_;             // IR layers that are model outputs, in IR order

  Status run(const Tensor& x, const std::vector<std::string>& layers,
             std::vector<LayerOutput>& out) {
    Tensor in;
    if (Status s = guarded_call("tfjs input", "tfjs", [&] { in = tfjs_input(m_, x); }); !s.is_ok())
      return Status::bad_input("tfjs: " + s.message());
    json shape = json::array();
    for (std::int64_t d : in.shape()) shape.push_back(d);
    json names = json::array();
    for (const std::string& l : layers) names.push_back(keras_of_.at(l));
    json req = {{"op", "run"},
                {"input",
                 {{"dtype", in.dtype() == DType::I64 ? "i64" : "f32"},
                  {"shape", shape},
                  {"data", node::base64_encode(in.raw(), in.nbytes())}}},
                {"outputs", names}};
    json reply;
    if (Status s = helper_->call(std::move(req), reply, timeout()); !s.is_ok()) return s;
    if (!reply.contains("outputs") || !reply["outputs"].is_object())
      return Status::failed("tfjs helper: run reply has no outputs object");
    out.clear();
    for (const std::string& layer : layers) {
      const std::string& k = keras_of_.at(layer);
      if (!reply["outputs"].contains(k))
        return Status::failed("tfjs helper: run reply lacks output '" + k + "'");
      const json& spec = reply["outputs"][k];
      if (!spec.is_object() || spec.value("dtype", std::string()) != "f32" ||
          !spec.contains("data") || !spec["data"].is_string())
        return Status::failed("tfjs helper: output '" + k + "' is not an f32 tensor");
      std::vector<unsigned char> raw;
      std::string why;
      if (!node::base64_decode(spec["data"].get_ref<const std::string&>(), raw, why))
        return Status::failed("tfjs helper: output '" + k + "': " + why);
      if (raw.size() % sizeof(float) != 0)
        return Status::failed("tfjs helper: output '" + k + "' has " + std::to_string(raw.size()) +
                              " bytes, not whole float32 values");
      std::vector<float> values(raw.size() / sizeof(float));
      std::memcpy(values.data(), raw.data(), raw.size());
      Tensor t;
      Status s = guarded_call("tfjs output", "tfjs", [&] {
        t = tfjs_output_to_ir(m_, layer, values.data(), values.size(), x.dim(0));
      });
      // A reply that does not fit the layer is the helper's fault, not the user's input.
      if (!s.is_ok()) return Status::failed("tfjs helper: " + s.message());
      out.push_back({layer, std::move(t)});
    }
    return Status::ok();
  }
};

class TfjsRuntime : public Runtime {
 public:
  FrameworkInfo info() const override {
    std::call_once(version_once_, [this] {
      std::string why;
      version_ = probe_version(why);
      if (version_.empty()) version_ = "unavailable: " + why;
    });
    return {"tfjs", kLibrary, version_, kDevice};
  }

  Capability supports(const ir::Model& m) const override {
    Capability c = tfjs_expressible(m);
    if (!c.ok) c.why = "tfjs: " + c.why;
    return c;
  }

  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions& opt, Artefact& out) override {
    if (Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    TfjsFiles f;
    Status s = guarded_call("export", "tfjs writer", [&] {
      TfjsWriteOptions o;
      o.layer_outputs = opt.layer_outputs;
      f = tfjs_write(dir, m, w, o);
    });
    if (!s.is_ok()) return s;
    out = {};
    out.format = "tfjs";
    out.dir = dir;
    out.files = {f.model_json, f.weights_bin};
    out.bytes = f.bytes;
    out.conversions = f.conversions;
    return Status::ok();
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    if (opt.threads != 1) {
      status = Status::unsupported("tfjs: the cpu backend runs single-threaded JavaScript; " +
                                   std::to_string(opt.threads) + " threads cannot be given to it");
      return nullptr;
    }
    std::string model_json;
    for (const std::string& f : a.files)
      if (fs::path(f).filename() == "model.json") model_json = f;
    if (a.format != "tfjs" || model_json.empty()) {
      status =
          Status::bad_input("tfjs: needs a TF.js layers model (model.json), got format '" +
                            a.format + "' with " + std::to_string(a.files.size()) + " file(s)");
      return nullptr;
    }
    status = guarded_call("check", "tfjs", [&] { tfjs_verify_files(model_json); });
    if (!status.is_ok()) return nullptr;

    auto helper = std::make_unique<node::HelperProcess>(helper_spec());
    json reply;
    if (status = start_helper(*helper, reply); !status.is_ok()) return nullptr;
    status = helper->call(
        {{"op", "load"}, {"path", fs::absolute(model_json).string()}, {"threads", opt.threads}},
        reply, timeout());
    if (!status.is_ok()) {
      status = Status::failed("load " + model_json + ": " + status.message());
      return nullptr;
    }
    if (!reply.contains("outputs") || !reply["outputs"].is_array()) {
      status = Status::failed("tfjs helper: load reply has no outputs list");
      return nullptr;
    }
    const std::map<std::string, std::string> keras_of = tfjs_layer_names(m);
    std::map<std::string, std::string> ir_of;
    for (const auto& [ir_name, k] : keras_of) ir_of[k] = ir_name;
    std::map<std::string, bool> is_output;
    for (const json& n : reply["outputs"]) {
      auto it = n.is_string() ? ir_of.find(n.get<std::string>()) : ir_of.end();
      if (it == ir_of.end()) {
        status =
            Status::bad_input(model_json + ": model output " + n.dump() + " is no layer of model " +
                              m.name + " (written for another model?)");
        return nullptr;
      }
      is_output[it->second] = true;
    }
    if (!is_output.count(m.layers.back().name)) {
      status = Status::bad_input(model_json + ": the last layer " + m.layers.back().name +
                                 " (the logits) is not a model output");
      return nullptr;
    }
    std::vector<std::string> exposed;
    for (const ir::Layer& l : m.layers)
      if (is_output.count(l.name)) exposed.push_back(l.name);
    status = Status::ok();
    return std::make_unique<TfjsRunner>(m, std::move(helper), keras_of, std::move(exposed));
  }

 private:
  mutable std::once_flag version_once_;
  mutable std::string version_;
};

}  // namespace

std::unique_ptr<Runtime> make_tfjs_runtime(const std::string& variant) {
  require_no_variant("tfjs", variant);
  return std::make_unique<TfjsRuntime>();
}

std::string probe_tfjs(std::string& why) {
  return probe_version(why);
}

}  // namespace crossdl
