// IDX files (the MNIST / Fashion-MNIST format), plain or gzipped.
//
// Header: two zero bytes, a data-type byte (only 0x08, unsigned byte, is supported), the number
// of dimensions, then one big-endian uint32 per dimension; the data follows, row-major.
// Label files have magic 0x00000801 ([N]), image files 0x00000803 ([N,H,W]).
// Offsets in messages are offsets into the (decompressed) IDX data.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"

namespace crossdl {

namespace {

constexpr std::uint32_t kLabelsMagic = 0x00000801;
constexpr std::uint32_t kImagesMagic = 0x00000803;
constexpr std::int64_t kIdxClasses = 10;  // MNIST and Fashion-MNIST: labels 0..9

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::uint32_t be32(const std::byte* p) {
  return (std::uint32_t{static_cast<unsigned char>(p[0])} << 24) |
         (std::uint32_t{static_cast<unsigned char>(p[1])} << 16) |
         (std::uint32_t{static_cast<unsigned char>(p[2])} << 8) |
         std::uint32_t{static_cast<unsigned char>(p[3])};
}

struct IdxHeader {
  std::uint32_t magic = 0;
  std::vector<std::uint32_t> dims;
  std::size_t data_offset = 0;
  std::uint64_t count = 1;  // product of dims
};

// Parses and validates the header. `expected_magic` 0 accepts any unsigned-byte IDX file.
IdxHeader parse_header(const std::string& path, const std::vector<std::byte>& b,
                       std::uint32_t expected_magic) {
  if (b.size() < 4) {
    throw InputError(
        input_where(path, 0,
                    "truncated: an IDX header needs at least 4 bytes but the file has " +
                        std::to_string(b.size()) + " bytes"));
  }
  IdxHeader h;
  h.magic = be32(b.data());
  if (expected_magic != 0 && h.magic != expected_magic) {
    throw InputError(input_where(
        path, 0,
        "bad IDX magic (expected " + hex32(expected_magic) + ", found " + hex32(h.magic) + ")"));
  }
  if (b[0] != std::byte{0} || b[1] != std::byte{0}) {
    throw InputError(input_where(
        path, 0,
        "bad IDX magic (expected 0x0000TTNN, found " + hex32(h.magic) + "): not an IDX file"));
  }
  const auto type = static_cast<unsigned>(b[2]);
  if (type != 0x08) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", type);
    throw InputError(input_where(
        path, 2,
        std::string("unsupported IDX data type (expected 0x08 unsigned byte, found ") + buf + ")"));
  }
  const auto ndim = static_cast<std::size_t>(b[3]);
  if (ndim == 0) throw InputError(input_where(path, 3, "IDX file with 0 dimensions"));
  h.data_offset = 4 + 4 * ndim;
  if (b.size() < h.data_offset) {
    throw InputError(input_where(path, 0,
                                 "truncated: the IDX header of " + std::to_string(ndim) +
                                     " dimensions needs " + std::to_string(h.data_offset) +
                                     " bytes but the file has " + std::to_string(b.size()) +
                                     " bytes"));
  }
  for (std::size_t i = 0; i < ndim; ++i) {
    const std::uint32_t d = be32(b.data() + 4 + 4 * i);
    h.dims.push_back(d);
    h.count *= d;
    if (h.count > (std::uint64_t{1} << 40)) {
      throw InputError(input_where(path, static_cast<long long>(4 + 4 * i),
                                   "implausible IDX dimensions (more than 2^40 elements)"));
    }
  }
  return h;
}

std::string dims_desc(const IdxHeader& h) {
  if (h.magic == kImagesMagic && h.dims.size() == 3) {
    return std::to_string(h.dims[0]) + " images of " + std::to_string(h.dims[1]) + "x" +
           std::to_string(h.dims[2]);
  }
  if (h.magic == kLabelsMagic && h.dims.size() == 1) {
    return std::to_string(h.dims[0]) + " labels";
  }
  std::string s = "dimensions ";
  for (std::size_t i = 0; i < h.dims.size(); ++i) {
    if (i) s += "x";
    s += std::to_string(h.dims[i]);
  }
  return s;
}

void check_length(const std::string& path, const std::vector<std::byte>& b, const IdxHeader& h) {
  const std::uint64_t want = h.data_offset + h.count;
  if (b.size() < want) {
    throw InputError(input_where(path, -1,
                                 "truncated: header says " + dims_desc(h) + " (" +
                                     std::to_string(want) + " bytes) but the file has " +
                                     std::to_string(b.size()) + " bytes"));
  }
  if (b.size() > want) {
    throw InputError(input_where(path, static_cast<long long>(want),
                                 "unexpected data after the end: header says " + dims_desc(h) +
                                     " (" + std::to_string(want) + " bytes) but the file has " +
                                     std::to_string(b.size()) + " bytes"));
  }
}

}  // namespace

Tensor idx_read_tensor(const std::string& path) {
  const std::vector<std::byte> b = read_file_maybe_gz(path);
  const IdxHeader h = parse_header(path, b, 0);
  check_length(path, b, h);
  Shape shape;
  for (std::uint32_t d : h.dims) shape.push_back(static_cast<std::int64_t>(d));
  Tensor t(DType::U8, shape);
  if (h.count) std::memcpy(t.raw(), b.data() + h.data_offset, h.count);
  return t;
}

Split idx_read(const std::string& images_path, const std::string& labels_path) {
  Split s;
  std::int64_t n_images = 0;
  {
    const std::vector<std::byte> b = read_file_maybe_gz(images_path);
    const IdxHeader h = parse_header(images_path, b, kImagesMagic);
    check_length(images_path, b, h);
    n_images = h.dims[0];
    s.x = Tensor(
        DType::U8,
        {n_images, 1, static_cast<std::int64_t>(h.dims[1]), static_cast<std::int64_t>(h.dims[2])},
        Layout::NCHW);
    if (h.count) std::memcpy(s.x.raw(), b.data() + h.data_offset, h.count);
  }
  const std::vector<std::byte> b = read_file_maybe_gz(labels_path);
  const IdxHeader h = parse_header(labels_path, b, kLabelsMagic);
  check_length(labels_path, b, h);
  const std::int64_t n_labels = h.dims[0];
  if (n_labels != n_images) {
    throw InputError(input_where(labels_path, 4,
                                 "label count does not match the images (expected " +
                                     std::to_string(n_images) + " labels as in " + images_path +
                                     ", found " + std::to_string(n_labels) + ")"));
  }
  s.y = Tensor(DType::I64, {n_labels});
  auto y = s.y.values<std::int64_t>();
  const auto* p = reinterpret_cast<const unsigned char*>(b.data() + h.data_offset);
  for (std::int64_t i = 0; i < n_labels; ++i) {
    if (p[i] >= kIdxClasses) {
      throw InputError(input_where(labels_path, static_cast<long long>(h.data_offset + i),
                                   "label " + std::to_string(p[i]) + " of item " +
                                       std::to_string(i) + " out of range (expected 0.." +
                                       std::to_string(kIdxClasses - 1) + ")"));
    }
    y[i] = p[i];
  }
  return s;
}

}  // namespace crossdl
