// Moving tensors between crossdl and LibTorch, shared by the torch framework and the TorchScript
// runtime. Internal to adapters/torch; include only after <torch/torch.h> or <torch/script.h>.
#pragma once

#include <cstring>
#include <stdexcept>
#include <vector>

#include "crossdl/tensor.h"

namespace crossdl::torch_detail {

// A zero-copy view of t (valid while t lives).
inline at::Tensor to_torch(const Tensor& t) {
  std::vector<std::int64_t> sizes(t.shape().begin(), t.shape().end());
  auto* data = const_cast<std::byte*>(t.raw());
  switch (t.dtype()) {
    case DType::F32:
      return at::from_blob(data, sizes, at::kFloat);
    case DType::I64:
      return at::from_blob(data, sizes, at::kLong);
    case DType::U8:
      return at::from_blob(data, sizes, at::kByte);
  }
  throw std::logic_error("to_torch: unknown dtype");
}

inline Tensor from_torch(const at::Tensor& src, Layout layout = Layout::Any) {
  at::Tensor t = src.detach().to(at::kCPU).contiguous();
  Shape shape(t.sizes().begin(), t.sizes().end());
  DType dtype = DType::F32;
  if (t.scalar_type() == at::kLong)
    dtype = DType::I64;
  else if (t.scalar_type() == at::kByte)
    dtype = DType::U8;
  else if (t.scalar_type() != at::kFloat)
    t = t.to(at::kFloat);
  Tensor out(dtype, shape, layout);
  std::memcpy(out.raw(), t.data_ptr(), out.nbytes());
  return out;
}

// The IR layout of an activation of this rank ([N,C,H,W], [N,T,F], [N,F]).
inline Layout activation_layout(std::int64_t rank) {
  return rank == 4 ? Layout::NCHW : rank == 3 ? Layout::NTC : rank == 2 ? Layout::NC : Layout::Any;
}

}  // namespace crossdl::torch_detail
