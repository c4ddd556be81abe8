// Where a number came from: the machine, the build and the libraries, recorded on every cell.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace crossdl {

// crossdl version and commit, compiler, build type, hostname, OS, CPU model, logical CPUs, total
// memory, and the versions of the libraries linked into the core. Computed once per process.
nlohmann::json machine_provenance();

std::string utc_now_iso8601();  // "2024-05-01T12:34:56Z"
double peak_rss_mb();           // VmHWM of this process
double current_rss_mb();        // VmRSS of this process

}  // namespace crossdl
