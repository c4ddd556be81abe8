#include "crossdl/tensor.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace crossdl {

std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F32:
      return "f32";
    case DType::I64:
      return "i64";
    case DType::U8:
      return "u8";
  }
  return "?";
}

std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32:
      return 4;
    case DType::I64:
      return 8;
    case DType::U8:
      return 1;
  }
  return 0;
}

namespace {
constexpr std::array<std::pair<Layout, std::string_view>, 14> kLayoutNames = {{
    {Layout::Any, "any"},
    {Layout::NCHW, "NCHW"},
    {Layout::NHWC, "NHWC"},
    {Layout::NTC, "NTC"},
    {Layout::NC, "NC"},
    {Layout::OIHW, "OIHW"},
    {Layout::HWIO, "HWIO"},
    {Layout::OHWI, "OHWI"},
    {Layout::OI, "OI"},
    {Layout::IO, "IO"},
    {Layout::GatesIFGO, "gates:ifgo"},
    {Layout::GatesIOFC, "gates:iofc"},
    {Layout::GatesZRH, "gates:zrh"},
    {Layout::GatesRZN, "gates:rzn"},
}};
}  // namespace

std::string_view layout_name(Layout l) {
  for (const auto& [layout, name] : kLayoutNames)
    if (layout == l) return name;
  return "?";
}

bool layout_from_name(std::string_view name, Layout& out) {
  for (const auto& [layout, n] : kLayoutNames) {
    if (n == name) {
      out = layout;
      return true;
    }
  }
  return false;
}

std::int64_t shape_numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

void tensor_dtype_mismatch(DType have, DType want) {
  std::fprintf(stderr, "crossdl: internal error: tensor holds %s, accessed as %s\n",
               std::string(dtype_name(have)).c_str(), std::string(dtype_name(want)).c_str());
  std::abort();
}

Tensor::Tensor(DType dtype, Shape shape, Layout layout)
    : dtype_(dtype), shape_(std::move(shape)), layout_(layout) {
  for (auto d : shape_)
    if (d < 0) throw std::invalid_argument("negative tensor dimension in " + shape_str(shape_));
  bytes_.assign(static_cast<std::size_t>(shape_numel(shape_)) * dtype_size(dtype_), std::byte{0});
}

Tensor Tensor::f32(Shape shape, std::vector<float> values, Layout layout) {
  Tensor t(DType::F32, std::move(shape), layout);
  if (static_cast<std::int64_t>(values.size()) != t.numel())
    throw std::invalid_argument("Tensor::f32: " + std::to_string(values.size()) +
                                " values for shape " + shape_str(t.shape()));
  std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::reshaped(Shape shape, Layout layout) const {
  if (shape_numel(shape) != numel())
    throw std::invalid_argument("reshape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.layout_ = layout;
  return t;
}

Tensor Tensor::slice_rows(std::int64_t begin, std::int64_t end) const {
  if (shape_.empty() || begin < 0 || end < begin || end > shape_[0])
    throw std::out_of_range("slice_rows [" + std::to_string(begin) + "," + std::to_string(end) +
                            ") of " + shape_str(shape_));
  Shape s = shape_;
  s[0] = end - begin;
  Tensor t(dtype_, s, layout_);
  const std::size_t row = shape_[0] ? bytes_.size() / static_cast<std::size_t>(shape_[0]) : 0;
  if (t.nbytes())
    std::memcpy(t.raw(), bytes_.data() + static_cast<std::size_t>(begin) * row, t.nbytes());
  return t;
}

bool Tensor::identical(const Tensor& o) const {
  return dtype_ == o.dtype_ && shape_ == o.shape_ && layout_ == o.layout_ && bytes_ == o.bytes_;
}

// ---- SHA-256 (FIPS 180-4) -----------------------------------------------------------------------
namespace {

constexpr std::uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t rotr(std::uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}

struct Sha256 {
  std::uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::uint8_t block[64] = {};
  std::size_t used = 0;
  std::uint64_t total = 0;

  void compress() {
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = std::uint32_t(block[4 * i]) << 24 | std::uint32_t(block[4 * i + 1]) << 16 |
             std::uint32_t(block[4 * i + 2]) << 8 | std::uint32_t(block[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; ++i) {
      std::uint32_t t1 =
          k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
      std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      k = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
  }

  void update(const std::uint8_t* p, std::size_t n) {
    total += n;
    while (n > 0) {
      std::size_t take = std::min(n, 64 - used);
      std::memcpy(block + used, p, take);
      used += take, p += take, n -= take;
      if (used == 64) compress(), used = 0;
    }
  }

  std::string hex() {
    const std::uint64_t bits = total * 8;
    const std::uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (used != 56) update(&zero, 1);
    std::uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = std::uint8_t(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (auto v : h)
      for (int s = 28; s >= 0; s -= 4) out += digits[(v >> s) & 0xf];
    return out;
  }
};

}  // namespace

std::string sha256_hex(std::span<const std::byte> bytes) {
  Sha256 s;
  s.update(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return s.hex();
}

std::string sha256_hex(std::string_view text) {
  Sha256 s;
  s.update(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  return s.hex();
}

}  // namespace crossdl
