// The direct TensorFlow Lite side of the runtime latency benchmark: the .tflite file crossdl wrote,
// run with the TFLite C API (TfLiteModelCreateFromFile, an interpreter with one thread,
// AllocateTensors once). Per call the user's NCHW sample is transposed into the input tensor's
// NHWC buffer (the file's layout), Invoke runs, and the logits are copied out.
#include <tensorflow/lite/c/c_api.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#include "crossdl/tflite_io.h"
#include "runtime_latency.h"

namespace crossdl::bench {
namespace {

class TfliteDirect : public DirectRunner {
 public:
  TfliteDirect(const Artefact& a, const ir::Model& m) {
    if (m.input_shape.size() != 3) throw std::runtime_error("tflite direct: image models only");
    c_ = m.input_shape[0];
    h_ = m.input_shape[1];
    w_ = m.input_shape[2];
    const std::string path = artefact_file(a, ".tflite");
    model_.reset(TfLiteModelCreateFromFile(path.c_str()));
    if (!model_) throw std::runtime_error("TfLiteModelCreateFromFile failed on " + path);
    options_.reset(TfLiteInterpreterOptionsCreate());
    TfLiteInterpreterOptionsSetNumThreads(options_.get(), 1);
    interp_.reset(TfLiteInterpreterCreate(model_.get(), options_.get()));
    if (!interp_) throw std::runtime_error("TfLiteInterpreterCreate failed");
    if (TfLiteInterpreterAllocateTensors(interp_.get()) != kTfLiteOk)
      throw std::runtime_error("TfLiteInterpreterAllocateTensors failed");
    input_ = TfLiteInterpreterGetInputTensor(interp_.get(), 0);
    output_ = TfLiteInterpreterGetOutputTensor(
        interp_.get(), TfLiteInterpreterGetOutputTensorCount(interp_.get()) - 1);
    if (TfLiteTensorByteSize(input_) != static_cast<std::size_t>(c_ * h_ * w_) * sizeof(float))
      throw std::runtime_error("tflite direct: the input tensor is not one sample");
    classes_ = TfLiteTensorByteSize(output_) / sizeof(float);
  }
  void infer(const float* x, std::vector<float>& logits) override {
    auto* dst = static_cast<float*>(TfLiteTensorData(input_));
    for (std::int64_t c = 0; c < c_; ++c)
      for (std::int64_t i = 0; i < h_ * w_; ++i) dst[i * c_ + c] = x[c * h_ * w_ + i];
    if (TfLiteInterpreterInvoke(interp_.get()) != kTfLiteOk)
      throw std::runtime_error("TfLiteInterpreterInvoke failed");
    logits.resize(classes_);
    if (TfLiteTensorCopyToBuffer(output_, logits.data(), classes_ * sizeof(float)) != kTfLiteOk)
      throw std::runtime_error("TfLiteTensorCopyToBuffer failed");
  }
  // crossdl's TFLite runner does per call: tflite_input (NCHW->NHWC into a new Tensor), copy in,
  // Invoke, tflite_output_to_ir (the logits back to the IR layout).
  std::vector<std::pair<std::string, double>> breakdown(const ir::Model& m,
                                                        const float* x) override {
    Shape shape{1};
    shape.insert(shape.end(), m.input_shape.begin(), m.input_shape.end());
    Tensor t(DType::F32, shape, Layout::NCHW);
    std::copy(x, x + t.numel(), t.values<float>().begin());
    std::vector<float> out(classes_);
    TfLiteTensorCopyToBuffer(output_, out.data(), classes_ * sizeof(float));
    const TfliteOutputLayout logits = tflite_output_layout(m, m.layers.back().name);
    const auto invoke = [&] { TfLiteInterpreterInvoke(interp_.get()); };
    const double one = median_cpu_us(invoke, 5);
    const int n = std::clamp(static_cast<int>(3e5 / std::max(one, 1.0)), 10, 2000);
    return {
        {"TfLiteInterpreterInvoke alone", median_cpu_us(invoke, n)},
        {"crossdl tflite_input (NCHW->NHWC into a new Tensor)",
         median_cpu_us([&] { (void)tflite_input(m, t); }, 2000)},
        {"crossdl tflite_output_to_ir of the logits (layout worked out at load)",
         median_cpu_us([&] { (void)tflite_output_to_ir(logits, out.data(), classes_, 1); },
                       2000)},
        {"Invoke followed by tflite_output_to_ir", median_cpu_us(
                                                       [&] {
                                                         invoke();
                                                         (void)tflite_output_to_ir(
                                                             logits, out.data(), classes_, 1);
                                                       },
                                                       n)},
    };
  }
  std::string api() const override {
    return "TfLiteModelCreateFromFile; interpreter, 1 thread; NCHW->NHWC into the input tensor; "
           "Invoke; TfLiteTensorCopyToBuffer";
  }

 private:
  std::int64_t c_ = 0, h_ = 0, w_ = 0;
  std::size_t classes_ = 0;
  // Declared in creation order, so destroyed interpreter first.
  std::unique_ptr<TfLiteModel, decltype(&TfLiteModelDelete)> model_{nullptr, &TfLiteModelDelete};
  std::unique_ptr<TfLiteInterpreterOptions, decltype(&TfLiteInterpreterOptionsDelete)> options_{
      nullptr, &TfLiteInterpreterOptionsDelete};
  std::unique_ptr<TfLiteInterpreter, decltype(&TfLiteInterpreterDelete)> interp_{
      nullptr, &TfLiteInterpreterDelete};
  TfLiteTensor* input_ = nullptr;
  const TfLiteTensor* output_ = nullptr;
};

}  // namespace

std::unique_ptr<DirectRunner> direct_tflite(const Artefact& a, const ir::Model& m) {
  return std::make_unique<TfliteDirect>(a, m);
}

}  // namespace crossdl::bench
