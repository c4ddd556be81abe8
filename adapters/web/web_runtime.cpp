// The web runtimes (docs/web-protocol.md): TensorFlow.js (`tfjs`), ONNX Runtime Web (`ort-web`)
// and TFLite's wasm runner (`tflite-web`), each on a backend and a platform
// (`tfjs:wasm@chromium`), run by web/web-helper.mjs in Node or in a headless browser through one
// web::WebSession per Runner. The artefacts are crossdl's own: the TF.js layers model
// (crossdl/tfjs_io.h), the ONNX file (onnx_artefact) and the TFLite flatbuffer
// (crossdl/tflite_io.h). Inputs are converted here to the artefact's layout (NHWC for TF.js and
// TFLite, NCHW as it is for ONNX) and every output back to the IR layout, with the same conversions
// the tfjs, tflite and ort runtimes use, so the helper never sees the IR.
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/onnx_io.h"
#include "crossdl/quant.h"
#include "crossdl/runtime.h"
#include "crossdl/tfjs_io.h"
#include "web_session.h"
#include "web_target.h"
#ifdef CROSSDL_WEB_TFLITE
#include "crossdl/tflite_io.h"
#endif

namespace crossdl {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using web::WebSession;
using web::WebStart;
using web::WebTarget;

enum class Kind { Tfjs, Onnx, Tflite };

Kind kind_of(const std::string& runtime) {
  if (runtime == "ort-web") return Kind::Onnx;
  if (runtime == "tflite-web") return Kind::Tflite;
  return Kind::Tfjs;
}

const char* library_name(Kind k) {
  switch (k) {
    case Kind::Onnx:
      return "ONNX Runtime Web";
    case Kind::Tflite:
      return "TFLite (@tensorflow/tfjs-tflite)";
    case Kind::Tfjs:
      break;
  }
  return "TensorFlow.js";
}

std::string platform_title(const std::string& p) {
  if (p == "chromium") return "Chromium";
  if (p == "firefox") return "Firefox";
  return "Node";
}

// What the runner needs to map the artefact's outputs back to IR layers.
struct OutputMap {
  std::vector<std::string> exposed;            // IR layers the artefact outputs, in IR order
  std::map<std::string, std::string> name_of;  // IR layer -> the artefact's output name
#ifdef CROSSDL_WEB_TFLITE
  std::map<std::string, TfliteOutputLayout> tflite;  // IR layer -> its TFLite output layout
#endif
};

class WebRunner : public Runner {
 public:
  WebRunner(const ir::Model& m, Kind k, std::unique_ptr<WebSession> s, OutputMap outs,
            double model_load_ms)
      : m_(m),
        kind_(k),
        session_(std::move(s)),
        outs_(std::move(outs)),
        model_load_ms_(model_load_ms) {
    const std::vector<Shape> shapes = ir::infer_shapes(m_);
    for (std::size_t i = 0; i < m_.layers.size(); ++i) sample_[m_.layers[i].name] = shapes[i];
  }

  Status infer(const Tensor& x, Tensor& logits) override {
    std::vector<LayerOutput> outs;
    if (Status s = run(x, {m_.layers.back().name}, outs); !s.is_ok()) return s;
    logits = std::move(outs.back().value);
    const Shape want = {x.dim(0), m_.num_classes};
    if (logits.shape() != want)
      return Status::failed(name() + ": logits have shape " + shape_str(logits.shape()) +
                            ", expected " + shape_str(want));
    logits.set_layout(Layout::NC);
    return Status::ok();
  }

  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    if (outs_.exposed.size() < 2 && m_.layers.size() > 1)
      return Status::unsupported(name() +
                                 ": the artefact exposes only the logits (export it with "
                                 "ExportOptions.layer_outputs)");
    return run(x, outs_.exposed, out);
  }

  // One `time` request: the page times each sample itself (performance.now()), values read back.
  Status timed_runs(const Tensor& xs, std::int64_t warmup, std::vector<double>& ms) override {
    ms.clear();
    if (xs.rank() == 0 || xs.dim(0) == 0) return Status::ok();
    json input;
    if (Status s = encode_input(xs, input); !s.is_ok()) return s;
    json reply;
    if (Status s = session_->call({{"op", "time"}, {"input", std::move(input)}, {"warmup", warmup}},
                                  reply);
        !s.is_ok())
      return s;
    if (!reply.contains("ms") || !reply["ms"].is_array() ||
        reply["ms"].size() != static_cast<std::size_t>(xs.dim(0)))
      return Status::failed(name() + ": the time reply should hold " + std::to_string(xs.dim(0)) +
                            " times in \"ms\", got " +
                            (reply.contains("ms") ? reply["ms"].dump().substr(0, 120) : "none"));
    for (const json& v : reply["ms"]) {
      if (!v.is_number() || v.get<double>() < 0)
        return Status::failed(name() + ": the time reply holds " + v.dump() + ", not a time");
      ms.push_back(v.get<double>());
    }
    return Status::ok();
  }

  RunnerFacts facts() override {
    RunnerFacts f;
    const WebStart& st = session_->started();
    const WebTarget& t = session_->target();
    f.text = {{"platform", t.platform},
              {"browser", st.browser},
              {"backend", st.backend},
              {"device", st.device},
              {"cross_origin_isolated", st.cross_origin_isolated ? "true" : "false"}};
    f.numbers = {{"timer_resolution_ms", st.timer_resolution_ms},
                 {"start_ms", st.ms},
                 {"model_load_ms", model_load_ms_},
                 {"threads", static_cast<double>(st.threads)}};
    web::WebMemory mem;
    if (Status s = session_->memory(mem); s.is_ok()) {
      f.numbers.push_back({"pss_mb", mem.pss_mb});
      f.numbers.push_back({"peak_pss_mb", mem.peak_pss_mb});
      f.numbers.push_back({"processes", static_cast<double>(mem.processes)});
      f.numbers.push_back({"js_heap_mb", mem.js_heap_mb >= 0
                                             ? mem.js_heap_mb
                                             : std::numeric_limits<double>::quiet_NaN()});
      if (!mem.js_heap_source.empty()) f.text.push_back({"js_heap_source", mem.js_heap_source});
    } else {
      f.text.push_back({"memory_error", s.message()});
    }
    return f;
  }

 private:
  const ir::Model m_;
  Kind kind_;
  std::unique_ptr<WebSession> session_;
  OutputMap outs_;
  double model_load_ms_;                 // the load reply's in-page time
  std::map<std::string, Shape> sample_;  // IR layer -> its output shape without the batch

  std::string name() const { return session_->target().name(); }

  // x (a batch from make_batch) in the artefact's input layout, as a protocol tensor.
  Status encode_input(const Tensor& x, json& out) {
    Tensor in;
    Status s = guarded_call("input", name().c_str(), [&] {
      switch (kind_) {
        case Kind::Tfjs:
          in = tfjs_input(m_, x);
          break;
#ifdef CROSSDL_WEB_TFLITE
        case Kind::Tflite:
          in = tflite_input(m_, x);
          break;
#else
        case Kind::Tflite: throw std::runtime_error("built without the TFLite writer");
#endif
        case Kind::Onnx: {
          if (x.dtype() != m_.input_dtype)
            throw InputError(name() + ": input is " + std::string(dtype_name(x.dtype())) +
                             ", model " + m_.name + " takes " +
                             std::string(dtype_name(m_.input_dtype)));
          const Shape& want = m_.input_shape;
          if (x.rank() != want.size() + 1 || x.dim(0) < 1 ||
              !std::equal(want.begin(), want.end(), x.shape().begin() + 1))
            throw InputError(name() + ": input shape " + shape_str(x.shape()) + ", model " +
                             m_.name + " takes [B," + shape_str(want).substr(1));
          in = x;
          break;
        }
      }
    });
    if (!s.is_ok()) return s;
    std::vector<std::int64_t> shape(in.shape().begin(), in.shape().end());
    out =
        web::encode_tensor(in.dtype() == DType::I64 ? "i64" : "f32", shape, in.raw(), in.nbytes());
    return Status::ok();
  }

  Status run(const Tensor& x, const std::vector<std::string>& layers,
             std::vector<LayerOutput>& out) {
    json input;
    if (Status s = encode_input(x, input); !s.is_ok()) return s;
    json names = json::array();
    for (const std::string& l : layers) names.push_back(outs_.name_of.at(l));
    json reply;
    if (Status s = session_->call(
            {{"op", "run"}, {"input", std::move(input)}, {"outputs", std::move(names)}}, reply);
        !s.is_ok())
      return s;
    if (!reply.contains("outputs") || !reply["outputs"].is_object())
      return Status::failed(name() + ": the run reply has no outputs object");
    out.clear();
    for (const std::string& layer : layers) {
      const std::string& n = outs_.name_of.at(layer);
      if (!reply["outputs"].contains(n))
        return Status::failed(name() + ": the run reply lacks output '" + n + "'");
      std::vector<float> values;
      std::vector<std::int64_t> shape;
      if (Status s =
              web::decode_f32(reply["outputs"][n], name() + ": output '" + n + "'", values, shape);
          !s.is_ok())
        return s;
      Tensor t;
      // A reply that does not fit the layer is the runtime's fault, not the user's input.
      Status s = guarded_call("output", name().c_str(), [&] {
        switch (kind_) {
          case Kind::Tfjs:
            t = tfjs_output_to_ir(m_, layer, values.data(), values.size(), x.dim(0));
            break;
#ifdef CROSSDL_WEB_TFLITE
          case Kind::Tflite:
            t = tflite_output_to_ir(outs_.tflite.at(layer), values.data(), values.size(), x.dim(0));
            break;
#else
          case Kind::Tflite: break;
#endif
          case Kind::Onnx:
            t = onnx_output_to_ir(*m_.find(layer), sample_.at(layer), x.dim(0), shape,
                                  values.data());
            break;
        }
      });
      if (!s.is_ok()) return Status::failed(name() + ": output of " + layer + ": " + s.message());
      out.push_back({layer, std::move(t)});
    }
    return Status::ok();
  }
};

class WebRuntime : public Runtime {
 public:
  explicit WebRuntime(WebTarget t) : t_(std::move(t)), kind_(kind_of(t_.runtime)) {}

  FrameworkInfo info() const override {
    std::call_once(version_once_, [this] {
      std::string why;
      version_ = web::web_probe(t_.runtime, why);
      if (version_.empty()) version_ = "unavailable: " + why;
    });
    std::lock_guard<std::mutex> lock(mu_);
    const bool known = version_.rfind("unavailable", 0) != 0;
    std::string library = std::string(library_name(kind_)) + (known ? " " + version_ : "") + " (" +
                          t_.backend + ") in ";
    std::string device;
    if (started_) {
      library += started_->browser;
      device = started_->device;
    } else {
      library += platform_title(t_.platform);
      device = t_.backend + " backend in " + platform_title(t_.platform) + " (not started yet)";
    }
    return {t_.name(), library, version_, device};
  }

  Capability supports(const ir::Model& m) const override {
    if (const std::string why = web::web_target_unsupported(t_); !why.empty())
      return Capability::no(why);
    Capability c;
    switch (kind_) {
      case Kind::Tfjs:
        c = tfjs_expressible(m);
        break;
      case Kind::Tflite:
#ifdef CROSSDL_WEB_TFLITE
        c = tflite_expressible(m);
        if (c.ok && m.input_dtype != DType::F32)
          c = Capability::no(
              "the page feeds the TFLite runner float32 or int32 inputs; the "
              "file crossdl writes takes int64 tokens");
#else
        c = Capability::no("this crossdl was built without the TFLite writer (flatc)");
#endif
        break;
      case Kind::Onnx:
        try {
          ir::validate(m);
        } catch (const InputError& e) {
          return Capability::no(e.what());
        }
        if (m.input_dtype != DType::F32 && m.input_dtype != DType::I64)
          c = Capability::no("input dtype " + std::string(dtype_name(m.input_dtype)) +
                             " is not exported (f32 images or i64 tokens only)");
        break;
    }
    if (!c.ok) c.why = t_.name() + ": " + c.why;
    return c;
  }

  Capability supports_precision(const quant::QuantOptions& q) const override {
    switch (kind_) {
      case Kind::Onnx:
        return onnx_supports_precision(t_.name(), q);
      case Kind::Tflite:
#ifdef CROSSDL_WEB_TFLITE
        return tflite_supports_precision(t_.name(), q);
#else
        return Capability::no(t_.name() + ": built without the TFLite writer");
#endif
      case Kind::Tfjs:
        break;
    }
    return Runtime::supports_precision(q);
  }

  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions& opt, Artefact& out) override {
    if (Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    switch (kind_) {
      case Kind::Tfjs:
        return guarded_call("export", "crossdl TF.js writer", [&] {
          TfjsWriteOptions o;
          o.layer_outputs = opt.layer_outputs;
          const TfjsFiles f = tfjs_write(dir, m, w, o);
          out = Artefact{"tfjs", dir, {f.model_json, f.weights_bin}, f.bytes, f.conversions};
        });
      case Kind::Onnx:
        return guarded_call("export", "onnx", [&] {
          out = onnx_artefact(m, w, dir, opt.onnx_opset, opt.layer_outputs, opt.quant);
          out.conversions =
              "none (ONNX initializers keep PyTorch's layouts; LSTM/GRU gates regrouped "
              "IFGO->IOFC / RZN->ZRN)";
          if (opt.quant != nullptr)
            out.conversions += "; " + std::string(quant::scheme_name(opt.quant->options.scheme)) +
                               " with crossdl's parameters (QDQ / Cast)";
          if (opt.layer_outputs) out.conversions += "; every layer output is a graph output";
        });
      case Kind::Tflite:
#ifdef CROSSDL_WEB_TFLITE
        return guarded_call("export", "crossdl TFLite writer", [&] {
          export_dir_create(dir);
          const std::string path = (fs::path(dir) / (m.name + ".tflite")).string();
          const TfliteFile f = tflite_write(path, m, w, {opt.layer_outputs, opt.quant});
          out = Artefact{"tflite", dir, {f.path}, f.bytes, f.conversions};
        });
#else
        break;
#endif
    }
    return Status::unsupported(t_.name() + ": built without the TFLite writer");
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    if (opt.threads < 1) {
      status = Status::bad_input(t_.name() + ": threads must be >= 1, got " +
                                 std::to_string(opt.threads));
      return nullptr;
    }
    // The artefact file, checked before any library sees it: a damaged file is the user's input.
    std::string file;
    status = guarded_call("check", t_.name().c_str(), [&] { file = check_artefact(a); });
    if (!status.is_ok()) return nullptr;

    auto session = std::make_unique<WebSession>(t_);
    if (status = session->open(a.dir, opt.threads); !status.is_ok()) return nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      started_ = session->started();
    }
    json reply;
    const std::string rel = fs::relative(fs::absolute(file), fs::absolute(a.dir)).generic_string();
    status = session->call({{"op", "load"}, {"file", rel}}, reply);
    if (!status.is_ok()) {
      status = Status(status.code() == Status::Code::Unsupported
                          ? Status::unsupported("load " + file + ": " + status.message())
                          : Status::failed("load " + file + ": " + status.message()));
      return nullptr;
    }
    if (!reply.contains("outputs") || !reply["outputs"].is_array()) {
      status = Status::failed(t_.name() + ": the load reply has no outputs list");
      return nullptr;
    }
    OutputMap outs;
    status = guarded_call("load", t_.name().c_str(), [&] { outs = map_outputs(m, file, reply); });
    if (!status.is_ok()) return nullptr;
    // The model's own load time, measured where it runs (Runtime::load's time also holds the
    // browser launch).
    const double model_load_ms =
        reply.contains("ms") && reply["ms"].is_number() ? reply["ms"].get<double>() : std::nan("");
    return std::make_unique<WebRunner>(m, kind_, std::move(session), std::move(outs),
                                       model_load_ms);
  }

 private:
  WebTarget t_;
  Kind kind_;
  mutable std::once_flag version_once_;
  mutable std::string version_;
  mutable std::mutex mu_;
  std::optional<WebStart> started_;  // the last session's start reply

  // The file to load, verified; InputError naming it and what is wrong.
  std::string check_artefact(const Artefact& a) const {
    const char* want = kind_ == Kind::Tfjs ? "tfjs" : kind_ == Kind::Onnx ? "onnx" : "tflite";
    std::string file;
    for (const std::string& f : a.files) {
      const fs::path p(f);
      if ((kind_ == Kind::Tfjs && p.filename() == "model.json") ||
          (kind_ == Kind::Onnx && p.extension() == ".onnx") ||
          (kind_ == Kind::Tflite && p.extension() == ".tflite"))
        file = f;
    }
    if (a.format != want || file.empty())
      throw InputError(t_.name() + ": needs a " + want + " artefact, got format '" + a.format +
                       "' with " + std::to_string(a.files.size()) + " file(s) in " + a.dir);
    switch (kind_) {
      case Kind::Tfjs:
        tfjs_verify_files(file);
        break;
      case Kind::Onnx:
        if (Status s = onnx_check_file(file); !s.is_ok()) throw InputError(s.message());
        break;
      case Kind::Tflite:
#ifdef CROSSDL_WEB_TFLITE
        tflite_verify_file(file);
#endif
        break;
    }
    return file;
  }

  // The load reply's output names, mapped to IR layers; InputError when the artefact was written
  // for another model (an output that is no layer, or no logits).
  OutputMap map_outputs(const ir::Model& m, const std::string& file, const json& reply) const {
    OutputMap outs;
    std::map<std::string, std::string> ir_of;  // artefact output name -> IR layer
    if (kind_ == Kind::Tfjs) {
      for (const auto& [ir_name, k] : tfjs_layer_names(m)) ir_of[k] = ir_name;
    } else {
      for (const ir::Layer& l : m.layers) ir_of[l.name] = l.name;
    }
    std::map<std::string, std::string> found;  // IR layer -> output name
    for (const json& n : reply["outputs"]) {
      if (!n.is_string()) throw InputError(file + ": output name " + n.dump() + " is not a string");
      const std::string name = n.get<std::string>();
      // ONNX: the logits are the graph output "logits" whatever the last layer is called.
      if (kind_ == Kind::Onnx && name == "logits") {
        found.emplace(m.layers.back().name, name);
        continue;
      }
      const auto it = ir_of.find(name);
      if (it == ir_of.end())
        throw InputError(file + ": model output '" + name + "' is no layer of model " + m.name +
                         " (written for another model?)");
      found[it->second] = name;
    }
    if (!found.count(m.layers.back().name))
      throw InputError(file + ": the last layer " + m.layers.back().name +
                       " (the logits) is not a model output");
    for (const ir::Layer& l : m.layers)
      if (auto it = found.find(l.name); it != found.end()) {
        outs.exposed.push_back(l.name);
        outs.name_of[l.name] = it->second;
#ifdef CROSSDL_WEB_TFLITE
        if (kind_ == Kind::Tflite) outs.tflite.emplace(l.name, tflite_output_layout(m, l.name));
#endif
      }
    return outs;
  }
};

std::unique_ptr<Runtime> make_web(const std::string& runtime, const std::string& variant) {
  return std::make_unique<WebRuntime>(web::parse_web_target(runtime, variant));
}

std::string probe_web(const std::string& runtime, std::string& why) {
  return web::web_probe(runtime, why);
}

}  // namespace

std::unique_ptr<Runtime> make_tfjs_runtime(const std::string& variant) {
  return make_web("tfjs", variant);
}
std::string probe_tfjs(std::string& why) {
  return probe_web("tfjs", why);
}

std::unique_ptr<Runtime> make_ort_web_runtime(const std::string& variant) {
  return make_web("ort-web", variant);
}
std::string probe_ort_web(std::string& why) {
  return probe_web("ort-web", why);
}

#ifdef CROSSDL_WEB_TFLITE
std::unique_ptr<Runtime> make_tflite_web_runtime(const std::string& variant) {
  return make_web("tflite-web", variant);
}
std::string probe_tflite_web(std::string& why) {
  return probe_web("tflite-web", why);
}
#endif

}  // namespace crossdl
