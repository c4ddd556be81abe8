// The built-in stage kinds, one file each in src/stages/, registered by stages.cpp.
#pragma once

#include "crossdl/stage.h"

namespace crossdl {

StageKind train_stage();
StageKind migrate_stage();
StageKind quantize_stage();

}  // namespace crossdl
