#include "crossdl/npy.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "crossdl/status.h"

namespace crossdl {
namespace {

const char* descr(DType d) {
  switch (d) {
    case DType::F32:
      return "<f4";
    case DType::I64:
      return "<i8";
    case DType::U8:
      return "|u1";
  }
  return "";
}

}  // namespace

void npy_write(const std::string& path, const Tensor& t) {
  std::string shape = "(";
  for (auto d : t.shape()) shape += std::to_string(d) + ",";
  if (t.rank() > 1) shape.pop_back();
  shape += ")";
  std::string header = std::string("{'descr': '") + descr(t.dtype()) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
    out.write(magic, 8);
    const auto len = static_cast<std::uint16_t>(header.size());
    const char len_le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    out.write(len_le, 2);
    out << header;
    out.write(reinterpret_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
    if (!out) throw InputError(input_where(path, -1, "cannot write"));
  }
  std::filesystem::rename(tmp, path);
}

Tensor npy_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(input_where(path, -1, "cannot open"));
  char head[10];
  if (!in.read(head, 10) || std::string(head + 1, 5) != "NUMPY" || head[0] != '\x93')
    throw InputError(input_where(path, 0, "not a .npy file (bad magic)"));
  if (head[6] != 1) throw InputError(input_where(path, 6, "only .npy version 1.0 is read"));
  const std::size_t len = std::uint8_t(head[8]) | (std::size_t(std::uint8_t(head[9])) << 8);
  std::string header(len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(len)))
    throw InputError(input_where(path, 10, "truncated header"));
  DType dtype;
  if (header.find("'<f4'") != std::string::npos)
    dtype = DType::F32;
  else if (header.find("'<i8'") != std::string::npos)
    dtype = DType::I64;
  else if (header.find("'|u1'") != std::string::npos)
    dtype = DType::U8;
  else
    throw InputError(input_where(path, 10, "unsupported dtype in header " + header));
  if (header.find("'fortran_order': False") == std::string::npos)
    throw InputError(input_where(path, 10, "Fortran-ordered arrays are not read"));
  const auto open = header.find('('), close = header.find(')');
  if (open == std::string::npos || close == std::string::npos)
    throw InputError(input_where(path, 10, "no shape in header"));
  Shape shape;
  std::string dims = header.substr(open + 1, close - open - 1);
  std::size_t pos = 0;
  while (pos < dims.size()) {
    auto comma = dims.find(',', pos);
    std::string d = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (d.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(d));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  Tensor t(dtype, shape);
  if (!in.read(reinterpret_cast<char*>(t.raw()), static_cast<std::streamsize>(t.nbytes())))
    throw InputError(input_where(path, static_cast<long long>(10 + len),
                                 "truncated data: expected " + std::to_string(t.nbytes()) +
                                     " bytes for shape " + shape_str(shape)));
  return t;
}

}  // namespace crossdl
