// The armnn runtime: Arm NN 20.08 on its CpuRef backend (the only one built for x86), reading the
// .tflite files crossdl's own writer produces (crossdl/tflite_io.h) with armnnTfLiteParser.
//
// The file's input is [1,H,W,C] and the parser offers no way to change it, so a batch runs one
// sample per EnqueueWorkload. CpuRef is single-threaded: RunOptions.threads other than 1 is
// unsupported rather than silently ignored. Arm NN logs to stdout by default, where crossdl's
// child processes speak JSON: its log goes to stderr instead, warnings and worse only.
#include <armnn/ArmNN.hpp>
#include <armnn/Logging.hpp>
#include <armnn/Utils.hpp>
#include <armnn/Version.hpp>
#include <armnnTfLiteParser/ITfLiteParser.hpp>

#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/quant.h"
#include "crossdl/runtime.h"
#include "crossdl/tflite_io.h"

namespace crossdl {
namespace {

// "20.08" is the Arm NN release Debian packages; the library's own version macro is its ABI
// version (22.0.0).
constexpr const char* kRelease = "20.08";

class StderrSink : public armnn::LogSink {
 public:
  void Consume(const std::string& s) override { std::cerr << "armnn: " << s << '\n'; }
};

void route_logging_to_stderr() {
  static std::once_flag once;
  std::call_once(once, [] {
    armnn::ConfigureLogging(false, false, armnn::LogSeverity::Warning);
    auto sink = std::make_shared<StderrSink>();
    armnn::SimpleLogger<armnn::LogSeverity::Warning>::Get().AddSink(sink);
    armnn::SimpleLogger<armnn::LogSeverity::Error>::Get().AddSink(sink);
    armnn::SimpleLogger<armnn::LogSeverity::Fatal>::Get().AddSink(sink);
  });
}

std::string tflite_file_of(const Artefact& a) {
  for (const auto& f : a.files)
    if (std::filesystem::path(f).extension() == ".tflite") return f;
  throw InputError("artefact in " + a.dir + ": no .tflite file among its files");
}

class ArmnnRunner : public Runner {
 public:
  ArmnnRunner(const ir::Model& m, const std::string& path) : model_(m) {
    // A damaged file is bad input, named; what the parser refuses after that (an operator it
    // does not know) is Arm NN's limit, a failure with its message.
    tflite_verify_file(path);
    auto parser = armnnTfLiteParser::ITfLiteParser::Create();
    armnn::INetworkPtr net = parser->CreateNetworkFromBinaryFile(path.c_str());
    const auto in_names = parser->GetSubgraphInputTensorNames(0);
    if (in_names.size() != 1) throw InputError(path + ": expected one input tensor");
    input_ = parser->GetNetworkInputBindingInfo(0, in_names[0]);
    for (const auto& name : parser->GetSubgraphOutputTensorNames(0)) {
      if (m.find(name) == nullptr)
        throw InputError(path + ": output " + name + " is not a layer of model " + m.name);
      outputs_.push_back(
          {name, parser->GetNetworkOutputBindingInfo(0, name), tflite_output_layout(m, name)});
    }
    if (outputs_.empty() || outputs_.back().layer != m.layers.back().name)
      throw InputError(path + ": its last output is not the logits layer " + m.layers.back().name);
    if (input_.second.GetNumElements() != shape_numel(m.input_shape) ||
        input_.second.GetShape()[0] != 1)
      throw InputError(path + ": its input does not hold one sample of model " + m.name);

    runtime_ = armnn::IRuntime::Create(armnn::IRuntime::CreationOptions());
    std::vector<std::string> messages;
    armnn::OptimizerOptions oo;  // fp32 throughout: no reduction to fp16/bf16
    armnn::IOptimizedNetworkPtr opt =
        armnn::Optimize(*net, {armnn::Compute::CpuRef}, runtime_->GetDeviceSpec(), oo,
                        armnn::Optional<std::vector<std::string>&>(messages));
    if (!opt) {
      std::string all;
      for (const auto& msg : messages) all += (all.empty() ? "" : "; ") + msg;
      throw std::runtime_error("Optimize for CpuRef failed: " + all);
    }
    std::string err;
    if (runtime_->LoadNetwork(id_, std::move(opt), err) != armnn::Status::Success)
      throw std::runtime_error("LoadNetwork: " + err);
    loaded_ = true;
  }
  ~ArmnnRunner() override {
    if (loaded_) runtime_->UnloadNetwork(id_);
  }
  ArmnnRunner(const ArmnnRunner&) = delete;
  ArmnnRunner& operator=(const ArmnnRunner&) = delete;

  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded_call("infer", "Arm NN", [&] {
      std::vector<std::vector<float>> per_output;
      run(x, per_output);
      logits = to_ir(outputs_.size() - 1, per_output.back(), x.dim(0));
    });
  }

  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    if (outputs_.size() < 2 && model_.layers.size() > 1)
      return Status::unsupported(
          "armnn: this artefact exposes only the logits; export it with "
          "ExportOptions.layer_outputs");
    return guarded_call("layer_outputs", "Arm NN", [&] {
      std::vector<std::vector<float>> per_output;
      run(x, per_output);
      out.clear();
      for (std::size_t i = 0; i < outputs_.size(); ++i)
        out.push_back({outputs_[i].layer, to_ir(i, per_output[i], x.dim(0))});
    });
  }

 private:
  struct Output {
    std::string layer;
    armnn::BindingPointInfo binding;
    TfliteOutputLayout layout;  // worked out once, not per call
  };

  // Runs every sample of x; per_output[k] collects graph output k's values. Arm NN's
  // EnqueueWorkload wants a buffer for every output of the network, so all are fetched.
  void run(const Tensor& x, std::vector<std::vector<float>>& per_output) {
    const Tensor nhwc = tflite_input(model_, x);
    const std::int64_t n = x.dim(0);
    const std::size_t per_sample =
        static_cast<std::size_t>(shape_numel(model_.input_shape)) * dtype_size(x.dtype());
    const std::size_t count = outputs_.size();
    per_output.assign(count, {});
    std::vector<std::vector<float>> buf(count);
    for (std::size_t k = 0; k < count; ++k)
      buf[k].resize(outputs_[k].binding.second.GetNumElements());
    const std::byte* src = nhwc.raw();
    for (std::int64_t i = 0; i < n; ++i) {
      armnn::InputTensors in{
          {input_.first, armnn::ConstTensor(input_.second, src + i * per_sample)}};
      armnn::OutputTensors out;
      for (std::size_t k = 0; k < count; ++k)
        out.push_back(
            {outputs_[k].binding.first, armnn::Tensor(outputs_[k].binding.second, buf[k].data())});
      if (runtime_->EnqueueWorkload(id_, in, out) != armnn::Status::Success)
        throw std::runtime_error("EnqueueWorkload failed on sample " + std::to_string(i));
      for (std::size_t k = 0; k < count; ++k)
        per_output[k].insert(per_output[k].end(), buf[k].begin(), buf[k].end());
    }
  }
  Tensor to_ir(std::size_t output, const std::vector<float>& v, std::int64_t batch) {
    return tflite_output_to_ir(outputs_[output].layout, v.data(), v.size(), batch);
  }

  ir::Model model_;
  armnn::BindingPointInfo input_;
  std::vector<Output> outputs_;
  armnn::IRuntimePtr runtime_{nullptr, [](armnn::IRuntime*) {}};
  armnn::NetworkId id_ = 0;
  bool loaded_ = false;
};

class ArmnnRuntime : public Runtime {
 public:
  ArmnnRuntime() { route_logging_to_stderr(); }
  FrameworkInfo info() const override {
    return {"armnn", "Arm NN (CpuRef)", std::string(kRelease) + " (libarmnn " ARMNN_VERSION ")",
            "cpu"};
  }
  Capability supports(const ir::Model& m) const override {
    // Arm NN 20.08's TfLite parser has no GATHER: measured, it refuses the file with "Operator
    // not supported ... GATHER".
    for (const ir::Layer& l : m.layers)
      if (l.op == ir::Op::Embedding)
        return Capability::no("layer " + l.name +
                              " (Embedding): Arm NN 20.08's TfLite parser has no GATHER operator, "
                              "which the TFLite file uses for it");
    return tflite_expressible(m);
  }
  Capability supports_precision(const quant::QuantOptions& q) const override {
    return tflite_supports_precision("armnn", q);
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
    if (opt.threads != 1) {
      status = Status::unsupported("armnn: the CpuRef backend runs on one thread; asked for " +
                                   std::to_string(opt.threads));
      return nullptr;
    }
    std::unique_ptr<Runner> r;
    status = guarded_call("load", "Arm NN",
                          [&] { r = std::make_unique<ArmnnRunner>(m, tflite_file_of(a)); });
    if (!status.is_ok()) r.reset();
    return r;
  }
};

}  // namespace

std::unique_ptr<Runtime> make_armnn_runtime(const std::string& variant) {
  require_no_variant("armnn", variant);
  return std::make_unique<ArmnnRuntime>();
}

std::string probe_armnn(std::string& why) {
  route_logging_to_stderr();
  try {
    // The CpuRef backend is a separate package, loaded when a runtime is created.
    auto rt = armnn::IRuntime::Create(armnn::IRuntime::CreationOptions());
    const auto& ids = rt->GetDeviceSpec().GetSupportedBackends();
    if (ids.count(armnn::BackendId("CpuRef")) == 0) {
      why = "Arm NN has no CpuRef backend (apt-get install libarmnn-cpuref-backend22)";
      return "";
    }
  } catch (const std::exception& e) {
    why = std::string("Arm NN runtime creation failed: ") + e.what();
    return "";
  }
  return std::string(kRelease) + " (libarmnn " ARMNN_VERSION ")";
}

}  // namespace crossdl
