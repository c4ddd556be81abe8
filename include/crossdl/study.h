// Studies: what to run (a YAML file or a built-in preset), the planner that expands it into cells,
// and the runner that executes every cell in its own child process and records it in the store.
//
// The format is documented in docs/study-format.md. A study holds stages; a stage is the cartesian
// product of its axes; every combination is a cell. Parameters (defaults merged with the stage's
// params) travel with each cell as JSON and are validated by the cell itself, not here.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace crossdl {

struct StudyAxis {
  std::string name;
  std::vector<nlohmann::json> values;  // scalars: string, number or bool
};

struct StudyStage {
  std::string kind;                                  // a registered stage name: "train", ...
  std::vector<StudyAxis> axes;                       // in the order written
  nlohmann::json params = nlohmann::json::object();  // this stage's overrides of the defaults
  std::optional<double> timeout_s;                   // overrides the study's
  std::string where;  // "FILE:LINE:COL" of the stage, for the planner's messages
};

struct Study {
  std::string name;
  std::string source;  // "preset:quick" or the file's path (recorded in the store)
  std::string description;
  double timeout_s = 900;  // per cell
  nlohmann::json defaults = nlohmann::json::object();
  std::vector<StudyStage> stages;
};

// One unit of work: one combination of one stage's axes.
struct CellSpec {
  std::string id;  // first 16 hex of SHA-256 of the canonical {stage, axes, params}
  int seq = 0;     // position in the plan (0-based)
  std::string stage;
  std::vector<std::pair<std::string, nlohmann::json>> axes;  // in the stage's order
  nlohmann::json params = nlohmann::json::object();  // defaults + stage params, minus axis names
  double timeout_s = 900;
  // The cells whose results this cell reads, as (role, cell id): resolved by the planner from the
  // stage kind's depends_on ("model" -> the train cell of a migrate cell).
  std::vector<std::pair<std::string, std::string>> inputs;

  // An axis value, else a parameter, else null: the cell's view of its configuration.
  nlohmann::json value(const std::string& key) const;
  // Axes and params merged into one object (axes win).
  nlohmann::json config() const;
  // "train lenet5 fashion-mnist torch seed=2": string axes bare, the others as name=value.
  std::string label() const;
  // The spec file's content; axes keep their order.
  nlohmann::ordered_json to_json() const;
};

// The stage registry (names, required axes, how each kind runs and reports) is crossdl/stage.h.

// ---- loading ----------------------------------------------------------------------------------
// Errors throw InputError "SOURCE:LINE:COL: what".
Study study_parse(const std::string& yaml_text, const std::string& source);
Study study_load(const std::string& path);
// "quick" (the default) or "paper"; InputError listing the presets for another name.
Study study_preset(const std::string& name);
std::vector<std::string> study_preset_names();
std::string study_preset_yaml(const std::string& name);  // the embedded text

// ---- planning ---------------------------------------------------------------------------------
// Stage order, then each stage's axes product in the order written (the first axis varies
// slowest). InputError when two cells would be identical or a required axis is missing.
std::vector<CellSpec> study_plan(const Study& study);
std::string cell_id(const std::string& stage,
                    const std::vector<std::pair<std::string, nlohmann::json>>& axes,
                    const nlohmann::json& params);

void cell_spec_write(const std::string& spec_file, const CellSpec& spec);
// InputError naming the file when it is missing or malformed.
CellSpec cell_spec_read(const std::string& spec_file);

// ---- the child side ---------------------------------------------------------------------------
// Writes one JSON line to stdout and flushes it; the parent reads stdout as a stream of events:
//   {"event":"progress","epoch":1,"epochs":3,"batch":120,"batches":938,"loss":0.53,...}
//   {"event":"epoch","epoch":1,"train_loss":0.61,"test_accuracy":0.84,"seconds":9.8,...}
//   {"event":"result","status":"ok"|"failed"|"skipped","message":"...","metrics":{},...}
// Thread-safe. Anything else the cell prints to stdout is kept as log text, not parsed.
void emit_event(const nlohmann::json& event);

// ---- the executor -----------------------------------------------------------------------------
struct EpochRecord {
  std::string cell_id;
  int epoch = 0;
  double train_loss = 0, test_accuracy = 0, seconds = 0, peak_rss_mb = 0, samples_per_s = 0;
};

// What happened to one cell. status: ok | failed | skipped | crashed | timeout, or "interrupted"
// when the parent was asked to stop (never stored: the cell runs again on resume).
struct CellOutcome {
  std::string status;
  std::string message;
  std::optional<int> signal;  // crashed: the signal that killed the child
  std::string signal_name;    // "SIGSEGV"
  std::optional<int> exit_code;
  double elapsed_s = 0;
  double child_peak_rss_mb = 0;  // wait4() ru_maxrss of the child
  nlohmann::json metrics = nlohmann::json::object();
  nlohmann::json provenance = nlohmann::json::object();
  // Per-example results (e.g. test_predictions, test_labels): large, so stored apart from metrics.
  nlohmann::json outputs = nlohmann::json::object();
  std::vector<EpochRecord> epochs;
  std::string stderr_tail;              // last ~4 KB of stderr and non-JSON stdout
  std::string started_at, finished_at;  // UTC ISO 8601
};

struct CellObserver {
  std::function<void(const nlohmann::json&)> on_event;  // progress and epoch events, as received
  std::function<void()> on_tick;                        // a few times a second while running
};

// Runs argv (argv[0] a path, no PATH search) as a child in its own process group, reading events
// until it exits or timeout_s passes (then the whole group is killed). When log_file is not empty,
// stderr and non-JSON stdout are also written there in full. Never throws for the child's faults.
CellOutcome cell_execute(const std::string& cell_id, const std::vector<std::string>& argv,
                         double timeout_s, const CellObserver& observer,
                         const std::string& log_file = "");

// The command for one cell; the default is self_command_prefix + {"__cell", "--spec", SPEC,
// "--out", CELL_DIR}. Tests substitute /bin/sh scripts.
using CellCommand = std::function<std::vector<std::string>(
    const CellSpec&, const std::string& spec_file, const std::string& cell_dir)>;

struct StudyRunOptions {
  std::string out_dir;
  bool resume = false;  // continue a study already in out_dir (finished cells are not rerun)
  bool json = false;    // quiet stderr unless it is a TTY; the caller prints *summary
  std::vector<std::string> self_command_prefix;  // e.g. {"/proc/self/exe"}
  CellCommand command;                           // when set, replaces the default command
  bool write_report = true;
};

// Runs every planned cell not yet in the store. Returns 0 when every cell is ok or skipped, 1 when
// any failed, crashed or timed out, 130/143 after SIGINT/SIGTERM (the running cell is killed and
// left out of the store). InputError for bad usage (out_dir already holds a study and !resume).
// summary (if given) gets {"study","out_dir","cells","ran","skipped_done","by_status",
// "wall_s","findings":[{id,label,status,message}],"report"}.
int study_run(const Study& study, const StudyRunOptions& options, nlohmann::json* summary);

// Runs one cell of the study in options.out_dir again (its spec comes from the store) and replaces
// its row; for `crossdl study cell DIR --id ID`. Returns 0 if it ended ok or skipped, else 1;
// InputError when there is no study or no such cell.
int study_run_cell(const std::string& id, const StudyRunOptions& options, nlohmann::json* summary);

}  // namespace crossdl
