#include "crossdl/status.h"

namespace crossdl {

std::string input_where(const std::string& path, long long offset, const std::string& what) {
  if (offset < 0) return path + ": " + what;
  return path + ": at byte " + std::to_string(offset) + ": " + what;
}

}  // namespace crossdl
