// NumPy .npy files (version 1.0, little-endian, C order): per-example logits and predictions are
// saved in a format every analysis tool reads.
#pragma once

#include <string>

#include "crossdl/tensor.h"

namespace crossdl {

// Writes atomically (temporary name, then rename). Throws InputError when it cannot write.
void npy_write(const std::string& path, const Tensor& t);
// Reads f32 (<f4), i64 (<i8) or u8 (|u1) arrays; InputError naming the file on anything else.
Tensor npy_read(const std::string& path);

}  // namespace crossdl
