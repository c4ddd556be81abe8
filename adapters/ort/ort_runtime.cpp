// The `ort` runtime: ONNX Runtime (onnxruntime-node 1.30, CPU execution provider) driven through
// one long-lived Node helper per Runner (web/ort-helper.mjs, docs/ort-protocol.md). The artefact
// is crossdl's own ONNX file; the helper never sees the IR.

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/onnx_io.h"
#include "crossdl/quant.h"
#include "crossdl/runtime.h"
#include "ort_helper_process.h"

namespace crossdl {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kLibrary = "ONNX Runtime (onnxruntime-node)";
// Recorded with every result through FrameworkInfo::device: it decides which fusions ORT makes.
constexpr const char* kOptimization = "all";

std::string probe_version(std::string& why) {
  why.clear();
  if (ort::find_node().empty()) {
    why = "no `node` on PATH (apt-get install nodejs)";
    return "";
  }
  if (!fs::exists(ort::helper_script())) {
    why = "the helper " + ort::helper_script() + " is missing";
    return "";
  }
  if (!fs::exists(ort::ort_package_dir())) {
    why = ort::ort_package_dir() + " is missing (cd web && ONNXRUNTIME_NODE_INSTALL=skip npm ci)";
    return "";
  }
  ort::HelperProcess h;
  if (Status s = h.start(); !s.is_ok()) {
    why = s.message();
    return "";
  }
  json reply;
  if (Status s = h.call({{"op", "hello"}, {"protocol", ort::kProtocolVersion}}, reply,
                        std::chrono::milliseconds(30000));
      !s.is_ok()) {
    why = s.message();
    return "";
  }
  if (!reply.contains("protocol") || reply["protocol"] != ort::kProtocolVersion) {
    why = "the helper speaks protocol " +
          (reply.contains("protocol") ? reply["protocol"].dump() : "?") + ", crossdl " +
          std::to_string(ort::kProtocolVersion);
    return "";
  }
  if (!reply.contains("ort_version") || !reply["ort_version"].is_string() ||
      reply["ort_version"].get<std::string>().empty()) {
    why = "the helper did not report onnxruntime-node's version";
    return "";
  }
  return reply["ort_version"].get<std::string>();
}

Tensor tensor_from_reply(const json& spec, const std::string& name, Status& st) {
  auto bad = [&](const std::string& why) {
    st = Status::failed("ort helper: output '" + name + "': " + why);
    return Tensor();
  };
  if (!spec.is_object() || !spec.contains("dtype") || !spec.contains("shape") ||
      !spec.contains("data"))
    return bad("expected {dtype, shape, data}");
  if (spec["dtype"] != "f32") return bad("dtype " + spec["dtype"].dump() + ", expected \"f32\"");
  Shape shape;
  if (!spec["shape"].is_array()) return bad("shape is not an array");
  for (const json& d : spec["shape"]) {
    if (!d.is_number_integer() || d.get<long long>() < 0)
      return bad("bad shape " + spec["shape"].dump());
    shape.push_back(d.get<std::int64_t>());
  }
  if (!spec["data"].is_string()) return bad("data is not a string");
  std::vector<unsigned char> raw;
  std::string why;
  if (!ort::base64_decode(spec["data"].get_ref<const std::string&>(), raw, why)) return bad(why);
  Tensor t(DType::F32, shape);
  if (raw.size() != t.nbytes())
    return bad(std::to_string(raw.size()) + " bytes for shape " + shape_str(shape) + ", expected " +
               std::to_string(t.nbytes()));
  std::memcpy(t.raw(), raw.data(), raw.size());
  st = Status::ok();
  return t;
}

// ONNX's [T,N,F] (the recurrent layers' order) back to the IR's [N,T,F].
class OrtRunner : public Runner {
 public:
  OrtRunner(const ir::Model& m, std::unique_ptr<ort::HelperProcess> h,
            std::vector<std::string> exposed)
      : m_(m), helper_(std::move(h)), exposed_(std::move(exposed)), shapes_(ir::infer_shapes(m)) {}

  Status infer(const Tensor& x, Tensor& logits) override {
    std::map<std::string, Tensor> outs;
    if (Status s = run(x, {"logits"}, outs); !s.is_ok()) return s;
    logits = std::move(outs.at("logits"));
    const Shape want = {x.dim(0), m_.num_classes};
    if (logits.shape() != want)
      return Status::failed("ort: logits have shape " + shape_str(logits.shape()) + ", expected " +
                            shape_str(want));
    logits.set_layout(Layout::NC);
    return Status::ok();
  }

  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    if (exposed_.empty())
      return Status::unsupported(
          "ort: the artefact exposes no layer outputs (export it with "
          "ExportOptions.layer_outputs)");
    std::map<std::string, Tensor> outs;
    if (Status s = run(x, exposed_, outs); !s.is_ok()) return s;
    out.clear();
    for (std::size_t i = 0; i < m_.layers.size(); ++i) {
      const ir::Layer& l = m_.layers[i];
      const std::string onnx_name = l.name;
      auto it = outs.find(onnx_name);
      if (it == outs.end()) continue;
      const Tensor& t = it->second;
      Tensor v;
      try {
        v = onnx_output_to_ir(l, shapes_[i], x.dim(0), t.shape(), t.values<float>().data());
      } catch (const InputError& e) {
        return Status::failed(std::string("ort: ") + e.what());
      }
      out.push_back({l.name, std::move(v)});
    }
    return Status::ok();
  }

 private:
  const ir::Model m_;
  std::unique_ptr<ort::HelperProcess> helper_;
  std::vector<std::string> exposed_;  // IR layer names the artefact has as graph outputs
  std::vector<Shape> shapes_;

  Status check_input(const Tensor& x) const {
    if (x.dtype() != m_.input_dtype)
      return Status::bad_input("ort: input is " + std::string(dtype_name(x.dtype())) + ", model " +
                               m_.name + " takes " + std::string(dtype_name(m_.input_dtype)));
    Shape want = m_.input_shape;
    if (x.rank() != want.size() + 1 || x.dim(0) < 1 ||
        !std::equal(want.begin(), want.end(), x.shape().begin() + 1))
      return Status::bad_input("ort: input shape " + shape_str(x.shape()) + ", model " + m_.name +
                               " takes [B," + shape_str(want).substr(1));
    return Status::ok();
  }

  Status run(const Tensor& x, const std::vector<std::string>& names,
             std::map<std::string, Tensor>& outs) {
    if (Status s = check_input(x); !s.is_ok()) return s;
    json shape = json::array();
    for (std::int64_t d : x.shape()) shape.push_back(d);
    json req = {{"op", "run"},
                {"input",
                 {{"dtype", x.dtype() == DType::I64 ? "i64" : "f32"},
                  {"shape", shape},
                  {"data", ort::base64_encode(x.raw(), x.nbytes())}}},
                {"outputs", names}};
    json reply;
    if (Status s = helper_->call(std::move(req), reply, ort::reply_timeout()); !s.is_ok()) return s;
    if (!reply.contains("outputs") || !reply["outputs"].is_object())
      return Status::failed("ort helper: run reply has no outputs object");
    for (const std::string& n : names) {
      if (!reply["outputs"].contains(n))
        return Status::failed("ort helper: run reply lacks output '" + n + "'");
      Status st;
      Tensor t = tensor_from_reply(reply["outputs"][n], n, st);
      if (!st.is_ok()) return st;
      outs[n] = std::move(t);
    }
    return Status::ok();
  }
};

class OrtRuntime : public Runtime {
 public:
  FrameworkInfo info() const override {
    std::call_once(version_once_, [this] {
      std::string why;
      version_ = probe_version(why);
      if (version_.empty()) version_ = "unavailable: " + why;
    });
    return {
        "ort", kLibrary, version_,
        std::string("cpu (CPU execution provider, graphOptimizationLevel ") + kOptimization + ")"};
  }

  Capability supports(const ir::Model& m) const override {
    try {
      ir::validate(m);
    } catch (const InputError& e) {
      return Capability::no(e.what());
    }
    if (m.input_dtype != DType::F32 && m.input_dtype != DType::I64)
      return Capability::no("ort: input dtype " + std::string(dtype_name(m.input_dtype)) +
                            " is not exported (f32 images or i64 tokens only)");
    // Every IR op has a standard ONNX operator that the CPU execution provider implements.
    return Capability::yes();
  }

  Capability supports_precision(const quant::QuantOptions& q) const override {
    return onnx_supports_precision("ort", q);
  }

  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions& opt, Artefact& out) override {
    if (Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    Status s = guarded_call("export", "onnx", [&] {
      out = onnx_artefact(m, w, dir, opt.onnx_opset, opt.layer_outputs, opt.quant);
    });
    if (!s.is_ok()) return s;
    out.conversions =
        "none (ONNX initializers keep PyTorch's layouts; LSTM/GRU gates regrouped "
        "IFGO->IOFC / RZN->ZRN)";
    if (opt.quant != nullptr) {
      const quant::Scheme sc = opt.quant->options.scheme;
      out.conversions += sc == quant::Scheme::Int8Static
                             ? "; int8 QDQ (ONNX Runtime fuses QDQ groups into its integer kernels)"
                             : "; weights stored in " + std::string(quant::scheme_name(sc)) +
                                   " and Cast to float: ONNX Runtime computes in fp32";
    }
    if (opt.layer_outputs) out.conversions += "; every layer output is a graph output";
    return Status::ok();
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    if (a.format != "onnx" || a.files.size() != 1) {
      status = Status::bad_input("ort: needs one ONNX file, got format '" + a.format + "' with " +
                                 std::to_string(a.files.size()) + " file(s)");
      return nullptr;
    }
    if (opt.threads < 1) {
      status = Status::bad_input("ort: threads must be >= 1, got " + std::to_string(opt.threads));
      return nullptr;
    }
    const std::string& path = a.files[0];
    if (status = onnx_check_file(path); !status.is_ok()) return nullptr;

    auto helper = std::make_unique<ort::HelperProcess>();
    if (status = helper->start(); !status.is_ok()) return nullptr;
    json reply;
    status = helper->call({{"op", "hello"}, {"protocol", ort::kProtocolVersion}}, reply,
                          ort::reply_timeout());
    if (!status.is_ok()) return nullptr;
    if (reply.value("protocol", -1) != ort::kProtocolVersion) {
      status = Status::failed("ort: the helper speaks protocol " +
                              reply.value("protocol", json()).dump() + ", crossdl " +
                              std::to_string(ort::kProtocolVersion));
      return nullptr;
    }
    status = helper->call({{"op", "load"},
                           {"path", fs::absolute(path).string()},
                           {"threads", opt.threads},
                           {"graph_optimization_level", kOptimization}},
                          reply, ort::reply_timeout());
    if (!status.is_ok()) {
      status = Status::failed("load " + path + ": " + status.message());
      return nullptr;
    }
    if (!reply.contains("outputs") || !reply["outputs"].is_array()) {
      status = Status::failed("ort helper: load reply has no outputs list");
      return nullptr;
    }
    std::vector<std::string> exposed;
    for (const json& n : reply["outputs"])
      if (n.is_string() && m.find(n.get<std::string>()) != nullptr) exposed.push_back(n);
    // A last layer named "logits" is a graph output in every artefact; alone it is no layer view.
    if (exposed.size() == 1 && exposed[0] == "logits") exposed.clear();
    status = Status::ok();
    return std::make_unique<OrtRunner>(m, std::move(helper), std::move(exposed));
  }

 private:
  mutable std::once_flag version_once_;
  mutable std::string version_;
};

}  // namespace

std::unique_ptr<Runtime> make_ort_runtime(const std::string& variant) {
  require_no_variant("ort", variant);
  return std::make_unique<OrtRuntime>();
}

std::string probe_ort(std::string& why) {
  return probe_version(why);
}

}  // namespace crossdl
