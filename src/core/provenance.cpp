#include "crossdl/provenance.h"

#include <sqlite3.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <google/protobuf/stubs/common.h>
#include <onnx/common/version.h>
#include <array>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>

#ifndef CROSSDL_VERSION
#define CROSSDL_VERSION "unknown"
#endif
#if __has_include("crossdl_commit.h")
#include "crossdl_commit.h"  // generated at build time by cmake/commit_stamp.cmake
#endif
#ifndef CROSSDL_GIT_COMMIT
#define CROSSDL_GIT_COMMIT "unknown"
#endif

namespace crossdl {
namespace {

// "Key: value" lines of a /proc file; the first line whose key matches.
std::string proc_field(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    while (!k.empty() && (k.back() == ' ' || k.back() == '\t')) k.pop_back();
    if (k != key) continue;
    std::string v = line.substr(colon + 1);
    auto b = v.find_first_not_of(" \t");
    return b == std::string::npos ? "" : v.substr(b);
  }
  return "";
}

double proc_kb_as_mb(const char* key) {
  std::string v = proc_field("/proc/self/status", key);  // "123456 kB"
  if (v.empty()) return 0;
  return std::strtod(v.c_str(), nullptr) / 1024.0;
}

// yaml-cpp has no version macro; asking dpkg beats hardcoding a number that goes stale. Runs once.
std::string dpkg_version(const std::string& package) {
  std::string cmd = "dpkg-query -W -f='${Version}' " + package + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "unknown";
  std::array<char, 256> buf{};
  std::string out;
  while (std::fgets(buf.data(), buf.size(), p) != nullptr) out += buf.data();
  int rc = pclose(p);
  if (rc != 0 || out.empty()) return "unknown";
  return out;
}

std::string protobuf_version() {
  int v = GOOGLE_PROTOBUF_VERSION;  // MAJOR*1000000 + MINOR*1000 + PATCH
  return std::to_string(v / 1000000) + "." + std::to_string(v / 1000 % 1000) + "." +
         std::to_string(v % 1000);
}

std::string build_type() {
  std::string s;
#ifdef __OPTIMIZE__
  s = "optimized";
#else
  s = "unoptimized";
#endif
#ifdef NDEBUG
  s += ", NDEBUG";
#else
  s += ", assertions on";
#endif
#if defined(__SANITIZE_ADDRESS__)
  s += ", ASan";
#endif
  return s;
}

nlohmann::json compute() {
  nlohmann::json j;
  j["crossdl_version"] = CROSSDL_VERSION;
  j["crossdl_commit"] = CROSSDL_GIT_COMMIT;
#if defined(__clang__)
  j["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  j["compiler"] = std::string("gcc ") + __VERSION__;
#else
  j["compiler"] = "unknown";
#endif
  j["build_type"] = build_type();
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) == 0) j["hostname"] = host.data();
  struct utsname u {};
  if (uname(&u) == 0) j["os"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
  std::string cpu = proc_field("/proc/cpuinfo", "model name");
  j["cpu"] = cpu.empty() ? "unknown" : cpu;
  j["logical_cpus"] = static_cast<long>(sysconf(_SC_NPROCESSORS_ONLN));
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  j["memory_mb"] =
      pages > 0 && page > 0 ? static_cast<double>(pages) * page / (1024.0 * 1024.0) : 0;
  j["libraries"] = {
      {"onnx", ONNX_NAMESPACE::LAST_RELEASE_VERSION},
      {"protobuf", protobuf_version()},
      {"sqlite", sqlite3_libversion()},
      {"nlohmann_json", std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
                            std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
                            std::to_string(NLOHMANN_JSON_VERSION_PATCH)},
      {"yaml-cpp", dpkg_version("libyaml-cpp-dev")},
  };
  return j;
}

}  // namespace

nlohmann::json machine_provenance() {
  static const nlohmann::json cached = compute();
  return cached;
}

std::string utc_now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::array<char, 32> buf{};
  std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf.data();
}

double peak_rss_mb() {
  return proc_kb_as_mb("VmHWM");
}
double current_rss_mb() {
  return proc_kb_as_mb("VmRSS");
}

}  // namespace crossdl
