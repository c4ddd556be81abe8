// The study's "migrate" stage (src/app/migrate.cpp): run a model trained by a train cell of the
// same study in another runtime and compare with the training framework's own outputs.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace crossdl {

// InputError naming the parameter when a migrate cell's configuration is malformed.
void migrate_validate(const nlohmann::json& cfg);
// Runs the cell whose folder is STUDY/cells/<id>; returns the result object with "status"
// (ok | failed | skipped), "message" and the metrics. InputError for bad input.
nlohmann::json migrate_run(const nlohmann::json& cfg, const std::string& cell_dir);

}  // namespace crossdl
