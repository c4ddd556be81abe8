// Process facts read from /proc, for the code that cleans up after helpers and browsers (the Node
// helper client, compare's reaper). Linux only, like the rest of crossdl's process handling.
#pragma once

#include <vector>

namespace crossdl {

// Field 22 of /proc/<pid>/stat (the start time in clock ticks), or -1 when there is no such
// process. A process group id together with its leader's start time names one group, even after
// the id is reused.
long long process_start_ticks(long long pid);

// The process groups of `parent`'s children other than `parent`'s own group (a browser a Node
// helper launched detached, say). Empty for parent <= 1.
std::vector<long long> child_process_groups(long long parent);

}  // namespace crossdl
