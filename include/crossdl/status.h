// Errors and outcomes.
//  - InputError: the user's input is bad (file, flag, model). The CLI prints it and exits 2.
//  - Status: what an adapter call returns; adapters never throw across their interface.
//  - Capability: whether an adapter can do a thing, and why not ("no LSTM layer in dlib").
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace crossdl {

class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& what) : std::runtime_error(what) {}
};

// Builds "PATH: at byte OFFSET: WHAT (expected E, found F)" style messages consistently.
std::string input_where(const std::string& path, long long offset, const std::string& what);

class Status {
 public:
  enum class Code { Ok, Failed, Unsupported, BadInput };
  Status() = default;
  static Status ok() { return {}; }
  static Status failed(std::string msg) { return {Code::Failed, std::move(msg)}; }
  static Status unsupported(std::string msg) { return {Code::Unsupported, std::move(msg)}; }
  static Status bad_input(std::string msg) { return {Code::BadInput, std::move(msg)}; }

  bool is_ok() const { return code_ == Code::Ok; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The same status with "what: " before its message (context for a caller's caller).
  Status prefixed(const std::string& what) const {
    return is_ok() ? *this : Status(code_, what + ": " + message_);
  }

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::Ok;
  std::string message_;
};

struct Capability {
  bool ok = true;
  std::string why;  // empty when ok
  static Capability yes() { return {}; }
  static Capability no(std::string why) { return {false, std::move(why)}; }
};

}  // namespace crossdl
