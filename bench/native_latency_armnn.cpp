// The direct Arm NN side of the runtime latency benchmark: the .tflite file crossdl wrote, parsed
// with armnnTfLiteParser, optimised for CpuRef (the only backend on x86), loaded into an
// IRuntime. The input and output tensors are bound once to the user's buffers; per call the NCHW
// sample is transposed into the NHWC input buffer and EnqueueWorkload runs.
#include <armnn/ArmNN.hpp>
#include <armnn/Logging.hpp>
#include <armnnTfLiteParser/ITfLiteParser.hpp>

#include <stdexcept>
#include <string>

#include "runtime_latency.h"

namespace crossdl::bench {
namespace {

class ArmnnDirect : public DirectRunner {
 public:
  ArmnnDirect(const Artefact& a, const ir::Model& m) {
    if (m.input_shape.size() != 3) throw std::runtime_error("armnn direct: image models only");
    c_ = m.input_shape[0];
    hw_ = m.input_shape[1] * m.input_shape[2];
    auto parser = armnnTfLiteParser::ITfLiteParser::Create();
    armnn::INetworkPtr net =
        parser->CreateNetworkFromBinaryFile(artefact_file(a, ".tflite").c_str());
    const auto in_names = parser->GetSubgraphInputTensorNames(0);
    const auto out_names = parser->GetSubgraphOutputTensorNames(0);
    const armnn::BindingPointInfo in = parser->GetNetworkInputBindingInfo(0, in_names.at(0));
    const armnn::BindingPointInfo out = parser->GetNetworkOutputBindingInfo(0, out_names.back());
    runtime_ = armnn::IRuntime::Create(armnn::IRuntime::CreationOptions());
    armnn::IOptimizedNetworkPtr opt =
        armnn::Optimize(*net, {armnn::Compute::CpuRef}, runtime_->GetDeviceSpec());
    std::string err;
    if (runtime_->LoadNetwork(id_, std::move(opt), err) != armnn::Status::Success)
      throw std::runtime_error("LoadNetwork: " + err);
    input_.resize(in.second.GetNumElements());
    output_.resize(out.second.GetNumElements());
    inputs_ = {{in.first, armnn::ConstTensor(in.second, input_.data())}};
    outputs_ = {{out.first, armnn::Tensor(out.second, output_.data())}};
  }
  ~ArmnnDirect() override { runtime_->UnloadNetwork(id_); }
  ArmnnDirect(const ArmnnDirect&) = delete;
  ArmnnDirect& operator=(const ArmnnDirect&) = delete;

  void infer(const float* x, std::vector<float>& logits) override {
    for (std::int64_t c = 0; c < c_; ++c)
      for (std::int64_t i = 0; i < hw_; ++i)
        input_[static_cast<std::size_t>(i * c_ + c)] = x[c * hw_ + i];
    if (runtime_->EnqueueWorkload(id_, inputs_, outputs_) != armnn::Status::Success)
      throw std::runtime_error("EnqueueWorkload failed");
    logits.assign(output_.begin(), output_.end());
  }
  std::string api() const override {
    return "ITfLiteParser::CreateNetworkFromBinaryFile; Optimize(CpuRef); LoadNetwork; tensors "
           "bound once; NCHW->NHWC; EnqueueWorkload";
  }

 private:
  std::int64_t c_ = 0, hw_ = 0;
  armnn::IRuntimePtr runtime_{nullptr, [](armnn::IRuntime*) {}};
  armnn::NetworkId id_ = 0;
  std::vector<float> input_, output_;
  armnn::InputTensors inputs_;
  armnn::OutputTensors outputs_;
};

}  // namespace

std::unique_ptr<DirectRunner> direct_armnn(const Artefact& a, const ir::Model& m) {
  return std::make_unique<ArmnnDirect>(a, m);
}

}  // namespace crossdl::bench
