// Helpers shared by the tests: scratch folders and small file utilities.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <utility>

#include "crossdl/ir.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"

namespace crossdl::test {

// A zoo input spec for images [c, hw, hw] with 10 classes.
zoo::InputSpec image_spec(std::int64_t c, std::int64_t hw);
// A batch of n inputs for m from seeded N(0,1) values (F32), or uniform token ids below the
// embedding's vocabulary (I64).
Tensor random_input(const ir::Model& m, std::int64_t n, std::uint64_t seed);
// Whether Debian's /usr/bin/python3 has torch and numpy (the test oracles); *why says what is
// missing.
bool python_torch_available(std::string& why);

// A fresh, empty folder under the build tree, unique to the calling test.
std::string scratch_dir(const std::string& tag);
std::string source_path(const std::string& relative);  // path inside the source tree
std::vector<std::byte> read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::vector<std::byte>& bytes);
void write_text(const std::string& path, const std::string& text);
std::vector<std::byte> gzip_bytes(const std::vector<std::byte>& raw);

// The message of the InputError that f() throws, or "" when it throws none; error_of also fails
// the test when nothing is thrown.
template <class F>
std::string input_error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}
template <class F>
std::string error_of(F&& f) {
  std::string msg = input_error_of(std::forward<F>(f));
  if (msg.empty()) ADD_FAILURE() << "no InputError thrown";
  return msg;
}

}  // namespace crossdl::test
