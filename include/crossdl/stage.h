// Stage kinds: one registry entry per kind of study cell ("train", "migrate", "quantize", ...).
// An entry says what a cell of that kind needs, which cells it reads, how it is validated before
// anything runs, how it runs in its child process, and which report section shows it. The
// planner, `study cell`, validation and the report iterate the registry; nothing else asks for a
// stage by name.
//
// The registry lives in the core so that the planner and the report can use it; the entries that
// run adapters are registered by the app (src/stages/, one file per stage) before anything is
// parsed. A core-only binary knows the built-in names and required axes, enough to parse and
// plan the presets.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/report.h"
#include "crossdl/store.h"
#include "crossdl/study.h"

namespace crossdl {

// What a cell runs with in its child process: its spec, its own folder, and the folder of every
// cell it depends on (the planner resolved them; a cell never searches the store for its inputs).
struct StageContext {
  const CellSpec& spec;
  std::string cell_dir;                                     // STUDY/cells/<id>
  std::vector<std::pair<std::string, std::string>> inputs;  // role -> that cell's folder
  // The folder of the input with this role; InputError when the cell has none.
  const std::string& input(const std::string& role) const;
};

// What a cell's run returns. status: ok | failed | skipped; metrics go into the store's row;
// outputs (per-example results) are stored apart; libraries ({"LibTorch": "1.13.1"}) join the
// row's provenance.
struct StageResult {
  std::string status = "ok";
  std::string message;
  nlohmann::json metrics = nlohmann::json::object();
  nlohmann::json outputs = nlohmann::json::object();
  nlohmann::json libraries = nlohmann::json::object();
};

// The cells of one kind as the report sees them, read from the store only.
struct StageReportInput {
  const std::vector<CellRecord>& cells;  // this kind's cells, by seq
  const std::vector<CellRecord>& all;    // every cell of the study (a section may look up sources)
  const Store& store;
  const std::string& dir;  // the study folder
  const ReportPrinter& md;
};

struct StageKind {
  std::string name;
  std::vector<std::string> required_axes;  // each given as an axis or a parameter
  // The cells of the plan this cell reads, as (role, cell id); InputError when one it needs is
  // not planned (a planning error: the study stops with exit 2 before anything runs). Optional.
  std::function<std::vector<std::pair<std::string, std::string>>(const CellSpec&,
                                                                 const std::vector<CellSpec>&)>
      depends_on;
  // Checks the cell's configuration; InputError naming the bad key. Optional.
  std::function<void(const CellSpec&)> validate;
  // Runs the cell (in its child process). Throws InputError for bad input. Required to run.
  std::function<StageResult(const StageContext&)> run;
  // The stage's section of report.md ("" for none). Optional: without it the cells are listed in
  // a generic table.
  std::function<std::string(const StageReportInput&)> report;
};

// Adds or replaces the entry of that name (later registrations win; order of first registration
// is kept, and is the order of the report's sections).
void register_stage(StageKind kind);
// Only a name and required axes (tests, core-only binaries).
void register_stage(std::string name, std::vector<std::string> required_axes);
// Null when unknown.
const StageKind* find_stage(const std::string& name);
std::vector<std::string> registered_stages();

// Registers every built-in stage kind with its full entry (crossdl_app, src/stages/stages.cpp).
void register_builtin_stages();

// The train cell whose model a cell of another stage takes: the cell of stage `source_stage` in
// `plan` whose every configuration key, except `ignore`d ones, has the same value in `spec`
// (replicate 0 preferred). InputError naming the cell when there is none.
std::string find_source_cell(const CellSpec& spec, const std::vector<CellSpec>& plan,
                             const std::string& source_stage,
                             const std::vector<std::string>& ignore);

}  // namespace crossdl
