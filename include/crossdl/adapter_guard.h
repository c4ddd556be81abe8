// How adapters keep library exceptions from crossing the adapter interface (adapter.h).
#pragma once

#include <exception>
#include <string>
#include <utility>

#include "crossdl/status.h"

namespace crossdl {

// Runs fn(). An InputError becomes a bad-input Status; any other exception a failed Status that
// says what was being done and which library complained: "train step: dlib: <its message>".
template <class Fn>
Status guarded_call(const char* what, const char* library, Fn&& fn) {
  try {
    fn();
    return Status::ok();
  } catch (const InputError& e) {
    return Status::bad_input(e.what());
  } catch (const std::exception& e) {
    return Status::failed(std::string(what) + ": " + library + ": " + e.what());
  }
}

}  // namespace crossdl
