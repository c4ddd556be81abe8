// What the darknet framework and the darknet runtime share: quieting Darknet's console output,
// owning a network, and the library's version. Internal to adapters/darknet.
#pragma once

extern "C" {
#include <darknet.h>
}

#include <cstdio>
#include <memory>
#include <string>

namespace crossdl::darknet_detail {

// Darknet prints its layer table while parsing, to stderr, and some messages to stdout: stdout
// carries the study's JSON lines, so both go to a scratch file for the duration.
class QuietStdio {
 public:
  QuietStdio();
  ~QuietStdio();
  QuietStdio(const QuietStdio&) = delete;
  QuietStdio& operator=(const QuietStdio&) = delete;

 private:
  std::FILE* sink_ = nullptr;
  int out_ = -1, err_ = -1;
};

struct NetDeleter {
  void operator()(network* n) const {
    if (n != nullptr) free_network(n);
  }
};
using NetPtr = std::unique_ptr<network, NetDeleter>;

// The Debian package's version ("0.0.0+git20180914..."), or the snapshot date when dpkg cannot say.
std::string package_version();

}  // namespace crossdl::darknet_detail
