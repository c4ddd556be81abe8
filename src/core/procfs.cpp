#include "crossdl/procfs.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace crossdl {
namespace {

// The fields after "pid (comm)" of /proc/<pid>/stat: comm may hold spaces and parentheses, so
// they start after the last ')'. False when the process is gone.
bool stat_fields(const std::string& stat_file, std::istringstream& rest) {
  std::ifstream f(stat_file);
  std::string stat;
  if (!std::getline(f, stat)) return false;
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return false;
  rest.str(stat.substr(close + 1));
  return true;
}

}  // namespace

long long process_start_ticks(long long pid) {
  std::istringstream rest;
  if (!stat_fields("/proc/" + std::to_string(pid) + "/stat", rest)) return -1;
  std::string field;
  for (int i = 3; i <= 22; ++i)  // fields 3.. follow the name
    if (!(rest >> field)) return -1;
  return std::atoll(field.c_str());
}

std::vector<long long> child_process_groups(long long parent) {
  std::set<long long> groups;
  if (parent <= 1) return {};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::istringstream rest;
    if (!stat_fields((e.path() / "stat").string(), rest)) continue;
    char state = 0;
    long long ppid = 0, pgrp = 0;
    if ((rest >> state >> ppid >> pgrp) && ppid == parent && pgrp > 1 && pgrp != parent)
      groups.insert(pgrp);
  }
  return {groups.begin(), groups.end()};
}

}  // namespace crossdl
