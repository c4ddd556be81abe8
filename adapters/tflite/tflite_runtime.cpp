// The tflite runtime: runs the .tflite files crossdl's own writer produces (crossdl/tflite_io.h)
// with TensorFlow Lite's C API.
//
// Batches: the input tensor is resized to the batch (TfLiteInterpreterResizeInputTensor) and the
// tensors re-allocated when the batch size changes, rather than looping over samples: one Invoke
// per batch is how TFLite is deployed for throughput, and every op the writer emits takes any
// batch (the RESHAPE before a Dense uses -1 for it).
#include <tensorflow/lite/c/c_api.h>

#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/quant.h"
#include "crossdl/runtime.h"
#include "crossdl/tflite_io.h"

namespace crossdl {
namespace {

// TFLite reports errors through this callback; the last message is kept for the Status.
struct ErrorLog {
  std::string last;
  static void report(void* self, const char* format, va_list args) {
    char buf[1024];
    std::vsnprintf(buf, sizeof buf, format, args);
    static_cast<ErrorLog*>(self)->last = buf;
  }
};

std::string tflite_file_of(const Artefact& a) {
  for (const auto& f : a.files)
    if (std::filesystem::path(f).extension() == ".tflite") return f;
  throw InputError("artefact in " + a.dir + ": no .tflite file among its files");
}

class TfliteRunner : public Runner {
 public:
  TfliteRunner(const ir::Model& m, const std::string& path, const RunOptions& o) : model_(m) {
    // TFLite's own verifier reports only to stderr; crossdl's names the file in the Status.
    tflite_verify_file(path);
    tfl_model_ = TfLiteModelCreateFromFile(path.c_str());
    if (tfl_model_ == nullptr)
      throw InputError(path +
                       ": TFLite rejected the file (its flatbuffer verifier or model checks "
                       "failed; TFLite's own message is on stderr)");
    options_ = TfLiteInterpreterOptionsCreate();
    TfLiteInterpreterOptionsSetNumThreads(options_, o.threads);
    TfLiteInterpreterOptionsSetErrorReporter(options_, &ErrorLog::report, &log_);
    interp_ = TfLiteInterpreterCreate(tfl_model_, options_);
    if (interp_ == nullptr) throw std::runtime_error("interpreter creation failed: " + log_.last);
    if (TfLiteInterpreterGetInputTensorCount(interp_) != 1)
      throw InputError(path + ": expected one input tensor");
    const TfLiteTensor* in = TfLiteInterpreterGetInputTensor(interp_, 0);
    const TfLiteType want = m.input_dtype == DType::I64 ? kTfLiteInt64 : kTfLiteFloat32;
    const int rank = static_cast<int>(m.input_shape.size()) + 1;
    if (TfLiteTensorType(in) != want || TfLiteTensorNumDims(in) != rank)
      throw InputError(path + ": its input is not the " + std::string(dtype_name(m.input_dtype)) +
                       " rank-" + std::to_string(rank) + " tensor model " + m.name + " takes");
    for (int i = 0; i < rank; ++i) dims_.push_back(TfLiteTensorDim(in, i));
    check(TfLiteInterpreterAllocateTensors(interp_), "allocate tensors");
    const int outs = TfLiteInterpreterGetOutputTensorCount(interp_);
    for (int i = 0; i < outs; ++i) {
      const std::string name = TfLiteTensorName(TfLiteInterpreterGetOutputTensor(interp_, i));
      if (m.find(name) == nullptr)
        throw InputError(path + ": output " + name + " is not a layer of model " + m.name);
      outputs_.push_back(tflite_output_layout(model_, name));
    }
    if (outputs_.empty() || outputs_.back().layer != m.layers.back().name)
      throw InputError(path + ": its last output is not the logits layer " + m.layers.back().name);
  }
  ~TfliteRunner() override {
    if (interp_ != nullptr) TfLiteInterpreterDelete(interp_);
    if (options_ != nullptr) TfLiteInterpreterOptionsDelete(options_);
    if (tfl_model_ != nullptr) TfLiteModelDelete(tfl_model_);
  }
  TfliteRunner(const TfliteRunner&) = delete;
  TfliteRunner& operator=(const TfliteRunner&) = delete;

  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded_call("infer", "TFLite", [&] {
      run(x);
      const int last = static_cast<int>(outputs_.size()) - 1;
      logits = fetch(last, x.dim(0));
    });
  }

  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    if (outputs_.size() < 2 && model_.layers.size() > 1)
      return Status::unsupported(
          "tflite: this artefact exposes only the logits; export it with "
          "ExportOptions.layer_outputs");
    return guarded_call("layer_outputs", "TFLite", [&] {
      run(x);
      out.clear();
      for (std::size_t i = 0; i < outputs_.size(); ++i)
        out.push_back({outputs_[i].layer, fetch(static_cast<int>(i), x.dim(0))});
    });
  }

 private:
  void check(TfLiteStatus s, const char* what) {
    if (s != kTfLiteOk) throw std::runtime_error(std::string(what) + ": " + log_.last);
  }
  void run(const Tensor& x) {
    const Tensor in = tflite_input(model_, x);
    if (x.dim(0) != dims_[0]) {
      dims_[0] = static_cast<int>(x.dim(0));
      check(TfLiteInterpreterResizeInputTensor(interp_, 0, dims_.data(),
                                               static_cast<std::int32_t>(dims_.size())),
            "resize input");
      check(TfLiteInterpreterAllocateTensors(interp_), "allocate tensors");
    }
    check(TfLiteTensorCopyFromBuffer(TfLiteInterpreterGetInputTensor(interp_, 0), in.raw(),
                                     in.nbytes()),
          "copy input");
    check(TfLiteInterpreterInvoke(interp_), "invoke");
  }
  Tensor fetch(int output, std::int64_t batch) {
    const TfLiteTensor* t = TfLiteInterpreterGetOutputTensor(interp_, output);
    if (TfLiteTensorType(t) != kTfLiteFloat32)
      throw std::runtime_error("output " + outputs_[output].layer + " is not float32");
    const auto* p = static_cast<const float*>(TfLiteTensorData(t));
    return tflite_output_to_ir(outputs_[output], p, TfLiteTensorByteSize(t) / sizeof(float), batch);
  }

  ir::Model model_;
  ErrorLog log_;
  TfLiteModel* tfl_model_ = nullptr;
  TfLiteInterpreterOptions* options_ = nullptr;
  TfLiteInterpreter* interp_ = nullptr;
  std::vector<int> dims_;
  std::vector<TfliteOutputLayout> outputs_;  // IR layer and layout of each graph output
};

class TfliteRuntime : public Runtime {
 public:
  FrameworkInfo info() const override {
    return {"tflite", "TensorFlow Lite", TfLiteVersion(), "cpu"};
  }
  Capability supports(const ir::Model& m) const override { return tflite_expressible(m); }
  Capability supports_precision(const quant::QuantOptions& q) const override {
    return tflite_supports_precision("tflite", q);
  }
  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions& opt, Artefact& out) override {
    if (Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    return guarded_call("export", "crossdl TFLite writer", [&] {
      const std::string path = (std::filesystem::path(dir) / (m.name + ".tflite")).string();
      const TfliteFile f = tflite_write(path, m, w, {opt.layer_outputs, opt.quant});
      out = Artefact{"tflite", dir, {f.path}, f.bytes, f.conversions};
    });
  }
  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    std::unique_ptr<Runner> r;
    status = guarded_call("load", "TFLite", [&] {
      if (opt.threads < 1) throw InputError("tflite: threads must be at least 1");
      r = std::make_unique<TfliteRunner>(m, tflite_file_of(a), opt);
    });
    if (!status.is_ok()) r.reset();
    return r;
  }
};

}  // namespace

std::unique_ptr<Runtime> make_tflite_runtime(const std::string& variant) {
  require_no_variant("tflite", variant);
  return std::make_unique<TfliteRuntime>();
}

std::string probe_tflite(std::string& why) {
  const char* v = TfLiteVersion();
  if (v == nullptr || *v == '\0') {
    why = "libtensorflowlite_c reports no version";
    return "";
  }
  return v;
}

}  // namespace crossdl
