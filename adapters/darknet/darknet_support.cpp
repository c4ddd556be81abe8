#include "darknet_support.h"

#include <unistd.h>

namespace crossdl::darknet_detail {

QuietStdio::QuietStdio() {
  std::fflush(stdout);
  std::fflush(stderr);
  sink_ = std::tmpfile();
  if (sink_ == nullptr) return;
  out_ = dup(1);
  err_ = dup(2);
  dup2(fileno(sink_), 1);
  dup2(fileno(sink_), 2);
}

QuietStdio::~QuietStdio() {
  std::fflush(stdout);
  std::fflush(stderr);
  if (out_ >= 0) dup2(out_, 1), close(out_);
  if (err_ >= 0) dup2(err_, 2), close(err_);
  if (sink_ != nullptr) std::fclose(sink_);
}

std::string package_version() {
  static const std::string version = [] {
    std::string v;
    if (std::FILE* f = popen("dpkg-query -W -f='${Version}' darknet 2>/dev/null", "r")) {
      char buf[256];
      while (std::fgets(buf, sizeof buf, f) != nullptr) v += buf;
      pclose(f);
    }
    while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
    return v.empty() ? std::string("2018-09-14 snapshot") : v;
  }();
  return version;
}

}  // namespace crossdl::darknet_detail
