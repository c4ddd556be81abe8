// Graph outputs of crossdl's ONNX files (written with layer_outputs) back to the IR's layouts,
// for every runtime that runs those files (ort, ort-web).
#include <cstring>

#include "crossdl/onnx_io.h"
#include "crossdl/status.h"

namespace crossdl {

Tensor onnx_output_to_ir(const ir::Layer& l, const Shape& sample, std::int64_t batch,
                         const Shape& shape, const float* values) {
  Shape want = {batch};
  want.insert(want.end(), sample.begin(), sample.end());
  const Layout layout = want.size() == 4   ? Layout::NCHW
                        : want.size() == 3 ? Layout::NTC
                        : want.size() == 2 ? Layout::NC
                                           : Layout::Any;
  Tensor out(DType::F32, want, layout);
  auto dst = out.values<float>();
  // The writer leaves an ImageToSequence output time-major, [T,N,F] (onnx_write).
  if (l.op == ir::Op::ImageToSequence && want.size() == 3 &&
      shape == Shape{want[1], want[0], want[2]}) {
    const std::int64_t T = want[1], N = want[0], F = want[2];
    for (std::int64_t s = 0; s < T; ++s)
      for (std::int64_t n = 0; n < N; ++n)
        std::memcpy(&dst[static_cast<std::size_t>((n * T + s) * F)],
                    values + static_cast<std::size_t>((s * N + n) * F),
                    static_cast<std::size_t>(F) * sizeof(float));
    return out;
  }
  if (shape != want)
    throw InputError("output of layer " + l.name + " has shape " + shape_str(shape) +
                     ", the IR says " + shape_str(want));
  if (!dst.empty()) std::memcpy(dst.data(), values, dst.size() * sizeof(float));
  return out;
}

}  // namespace crossdl
