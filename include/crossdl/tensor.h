// A small owned tensor: dtype, shape, layout and a contiguous row-major buffer.
// It is the currency between loaders, the weight set, adapters and comparators; adapters copy in
// and out of their framework's own tensors at the boundary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace crossdl {

enum class DType : std::uint8_t { F32, I64, U8 };

// The meaning of the axes. Activations use NCHW / NHWC / NTC (batch, time, features) / NC; weights
// use OIHW / HWIO / OHWI / OI (out, in) / IO. GatesIFGO and GatesIOFC mark recurrent weights
// stacked along axis 0 in that gate order (PyTorch and ONNX respectively). Any: no declared
// meaning.
enum class Layout : std::uint8_t {
  Any,
  NCHW,
  NHWC,
  NTC,
  NC,
  OIHW,
  HWIO,
  OHWI,
  OI,
  IO,
  GatesIFGO,
  GatesIOFC,
  GatesZRH,  // GRU, ONNX order (update, reset, hidden)
  GatesRZN,  // GRU, PyTorch order (reset, update, new)
};

std::string_view dtype_name(DType d);
std::size_t dtype_size(DType d);
std::string_view layout_name(Layout l);
// Returns false for an unknown name.
bool layout_from_name(std::string_view name, Layout& out);

using Shape = std::vector<std::int64_t>;
std::int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2,3,4]"

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape, Layout layout = Layout::Any);  // zero-filled

  static Tensor f32(Shape shape, std::vector<float> values, Layout layout = Layout::Any);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  Layout layout() const { return layout_; }
  void set_layout(Layout l) { layout_ = l; }
  std::int64_t numel() const { return shape_numel(shape_); }
  std::int64_t dim(std::size_t i) const { return shape_.at(i); }
  std::size_t rank() const { return shape_.size(); }
  std::size_t nbytes() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

  std::byte* raw() { return bytes_.data(); }
  const std::byte* raw() const { return bytes_.data(); }

  // Typed views; check the dtype (a mismatch is a programming error and aborts).
  template <class T>
  std::span<T> values();
  template <class T>
  std::span<const T> values() const;

  // Same buffer, new shape of the same element count.
  Tensor reshaped(Shape shape, Layout layout = Layout::Any) const;
  // Rows [begin, end) along axis 0.
  Tensor slice_rows(std::int64_t begin, std::int64_t end) const;

  // Bit-exact equality of dtype, shape, layout and bytes.
  bool identical(const Tensor& other) const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  Layout layout_ = Layout::Any;
  std::vector<std::byte> bytes_;
};

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<std::int64_t>() {
  return DType::I64;
}
template <>
constexpr DType dtype_of<std::uint8_t>() {
  return DType::U8;
}

[[noreturn]] void tensor_dtype_mismatch(DType have, DType want);

template <class T>
std::span<T> Tensor::values() {
  if (dtype_ != dtype_of<T>()) tensor_dtype_mismatch(dtype_, dtype_of<T>());
  return {reinterpret_cast<T*>(bytes_.data()), bytes_.size() / sizeof(T)};
}
template <class T>
std::span<const T> Tensor::values() const {
  if (dtype_ != dtype_of<T>()) tensor_dtype_mismatch(dtype_, dtype_of<T>());
  return {reinterpret_cast<const T*>(bytes_.data()), bytes_.size() / sizeof(T)};
}

// Lower-case hex SHA-256 of a byte range (used for weight fingerprints and cell ids).
std::string sha256_hex(std::span<const std::byte> bytes);
std::string sha256_hex(std::string_view text);

}  // namespace crossdl
