#include "support.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace crossdl::test {

std::string scratch_dir(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = tag;
  if (info != nullptr) name = std::string(info->test_suite_name()) + "." + info->name() + "." + tag;
  for (char& c : name)
    if (c == '/') c = '_';
  fs::path dir = fs::path(CROSSDL_TEST_TMP) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string source_path(const std::string& relative) {
  return (fs::path(CROSSDL_SOURCE_DIR) / relative).string();
}

std::vector<std::byte> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  in.seekg(0, std::ios::end);
  std::vector<std::byte> out(static_cast<std::size_t>(in.tellg()));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
  return out;
}

void write_bytes(const std::string& path, const std::vector<std::byte>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::vector<std::byte> gzip_bytes(const std::vector<std::byte>& raw) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("deflateInit2 failed");
  std::vector<std::byte> out(deflateBound(&zs, raw.size()) + 32);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw std::runtime_error("deflate failed");
  out.resize(zs.total_out);
  return out;
}

zoo::InputSpec image_spec(std::int64_t c, std::int64_t hw) {
  zoo::InputSpec in;
  in.sample_shape = {c, hw, hw};
  in.num_classes = 10;
  return in;
}

Tensor random_input(const ir::Model& m, std::int64_t n, std::uint64_t seed) {
  Shape s = {n};
  s.insert(s.end(), m.input_shape.begin(), m.input_shape.end());
  Rng rng(seed);
  if (m.input_dtype == DType::I64) {
    Tensor t(DType::I64, s);
    const std::int64_t vocab = m.layers.at(0).vocab;
    for (std::int64_t& v : t.values<std::int64_t>())
      v = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(vocab)));
    return t;
  }
  Tensor t(DType::F32, s);
  for (float& v : t.values<float>()) v = static_cast<float>(rng.normal());
  return t;
}

bool python_torch_available(std::string& why) {
  if (!std::filesystem::exists("/usr/bin/python3")) {
    why = "no /usr/bin/python3 (apt-get install python3-torch)";
    return false;
  }
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
    why = "/usr/bin/python3 lacks torch (apt-get install python3-torch)";
    return false;
  }
  return true;
}

}  // namespace crossdl::test
