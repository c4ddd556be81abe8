// Helpers shared by the tests: scratch folders and small file utilities.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <utility>

#include "crossdl/status.h"

namespace crossdl::test {

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
