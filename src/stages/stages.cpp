// The list of built-in stage kinds: a new kind is its own file in src/stages/ and one line here.
#include "stages.h"

namespace crossdl {

void register_builtin_stages() {
  register_stage(train_stage());
  register_stage(migrate_stage());
  register_stage(quantize_stage());
}

}  // namespace crossdl
