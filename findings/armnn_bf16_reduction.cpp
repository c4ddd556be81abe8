// Arm NN 20.08 (Debian): Optimize() with OptimizerOptions::m_ReduceFp32ToBf16 on the CpuRef backend
// aborts the process on a network holding one FullyConnected layer with a bias.
#include <armnn/ArmNN.hpp>
#include <cstdio>
#include <cstdlib>
#include <vector>
int main() {
  using namespace armnn;
  INetworkPtr net = INetwork::Create();
  const std::vector<float> w(4 * 3, 0.5f), b(3, 0.1f);
  FullyConnectedDescriptor d;
  d.m_BiasEnabled = true;
  d.m_TransposeWeightMatrix = true;  // weights [out, in]
  ConstTensor weights(TensorInfo({3, 4}, DataType::Float32), w.data());  // [out, in]
  ConstTensor bias(TensorInfo({3}, DataType::Float32), b.data());
  IConnectableLayer* in = net->AddInputLayer(0);
  IConnectableLayer* fc = net->AddFullyConnectedLayer(d, weights, Optional<ConstTensor>(bias), "fc");
  IConnectableLayer* out = net->AddOutputLayer(0);
  in->GetOutputSlot(0).Connect(fc->GetInputSlot(0));
  fc->GetOutputSlot(0).Connect(out->GetInputSlot(0));
  in->GetOutputSlot(0).SetTensorInfo(TensorInfo({1, 4}, DataType::Float32));
  fc->GetOutputSlot(0).SetTensorInfo(TensorInfo({1, 3}, DataType::Float32));
  IRuntimePtr rt = IRuntime::Create(IRuntime::CreationOptions());
  OptimizerOptions oo;
  oo.m_ReduceFp32ToBf16 = std::getenv("BF16") != nullptr;
  IOptimizedNetworkPtr opt = Optimize(*net, {Compute::CpuRef}, rt->GetDeviceSpec(), oo);
  std::printf("Optimize returned %s (bf16 reduction %s)\n", opt ? "a network" : "null",
              oo.m_ReduceFp32ToBf16 ? "on" : "off");
  return 0;
}
