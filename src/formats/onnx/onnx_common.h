// Internal to the ONNX interchange: conventions shared by the writer and the reader.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace crossdl::onnx_detail {

// ONNX stacks recurrent gate blocks in another order than PyTorch. Entry j names the PyTorch block
// that goes to ONNX position j: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h.
inline constexpr std::array<int, 4> kLstmOnnxFromTorch = {0, 3, 1, 2};
inline constexpr std::array<int, 3> kGruOnnxFromTorch = {1, 0, 2};

// Reorders the gate blocks of a [gates*block_rows, cols] matrix (or a [gates*block_rows] vector
// with cols = 1). to_onnx picks direction. A pure permutation of elements: bit-exact both ways.
inline std::vector<float> permute_gates(std::span<const float> src, std::span<const int> order,
                                        std::int64_t block_rows, std::int64_t cols, bool to_onnx) {
  std::vector<float> dst(src.size());
  const std::size_t block = static_cast<std::size_t>(block_rows * cols);
  for (std::size_t j = 0; j < order.size(); ++j) {
    const std::size_t torch_block = static_cast<std::size_t>(order[j]);
    const float* from = src.data() + (to_onnx ? torch_block : j) * block;
    float* to = dst.data() + (to_onnx ? j : torch_block) * block;
    std::copy(from, from + block, to);
  }
  return dst;
}

// The writer keeps PyTorch's BatchNorm momentum in the node's doc_string: ONNX stores 1 - m, and
// 1 - (1 - m) does not give m back bit for bit in float.
inline constexpr std::string_view kMomentumTag = "crossdl.torch_momentum=";

inline constexpr std::string_view kModelKey = "crossdl.model";
inline constexpr std::string_view kFormatKey = "crossdl.format_version";
inline constexpr std::string_view kFormatVersion = "1";

}  // namespace crossdl::onnx_detail
