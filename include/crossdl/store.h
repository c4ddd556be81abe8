// The study store: DIR/study.sqlite, one row per finished cell (any outcome) with its epochs,
// written in one transaction so that a study killed at any moment never holds half a cell.
// WAL journal, synchronous=NORMAL: a power cut may lose the last cell, never corrupt the file.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/study.h"

struct sqlite3;

namespace crossdl {

struct CellRecord {
  std::string id;
  int seq = 0;
  std::string stage;
  nlohmann::ordered_json axes = nlohmann::ordered_json::object();  // in the stage's order
  nlohmann::json params = nlohmann::json::object();
  double timeout_s = 0;
  std::vector<std::pair<std::string, std::string>> inputs;  // (role, cell id) it read
  std::string status, message;
  std::optional<int> signal;
  std::string signal_name;
  std::optional<int> exit_code;
  double elapsed_s = 0, child_peak_rss_mb = 0;
  nlohmann::json metrics = nlohmann::json::object();
  nlohmann::json provenance = nlohmann::json::object();
  nlohmann::json outputs = nlohmann::json::object();  // loaded by Store::outputs(), not cells()
  std::string stderr_tail;
  std::string started_at, finished_at;
  std::vector<EpochRecord> epochs;

  CellSpec spec() const;
};

CellRecord cell_record(const CellSpec& spec, const CellOutcome& outcome);

class Store {
 public:
  static std::string path_in(const std::string& dir);  // DIR/study.sqlite
  static bool exists_in(const std::string& dir);

  // create=false: InputError naming the file when it does not exist or is not a crossdl store.
  Store(const std::string& dir, bool create);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& path() const { return path_; }

  // The `study` table: name, source, created_at, crossdl_version, study_json, planned_cells...
  void set_meta(const std::string& key, const std::string& value);
  std::optional<std::string> meta(const std::string& key) const;
  std::map<std::string, std::string> meta_all() const;

  // Inserts or replaces the cell and its epochs, in one transaction.
  void write_cell(const CellRecord& cell);
  std::set<std::string> done_ids() const;
  std::vector<CellRecord> cells() const;  // by seq, with their epochs
  std::optional<CellRecord> find_cell(const std::string& id) const;
  std::vector<std::pair<std::string, std::string>> inputs_of(const std::string& id) const;
  // Removes the cells (and their epochs, outputs and inputs) in one transaction: what a re-run
  // cell invalidates, so that `--resume` runs them again.
  void erase_cells(const std::vector<std::string>& ids);
  std::vector<EpochRecord> epochs() const;
  // A cell's per-example outputs ({} when it has none), e.g. {"test_predictions": [...]}.
  nlohmann::json outputs(const std::string& cell_id) const;  // by cell seq, then epoch

 private:
  void exec(const char* sql) const;
  std::vector<EpochRecord> epochs_where(const std::string& cell_id) const;
  std::string path_;
  sqlite3* db_ = nullptr;
};

// The spec of a cell recorded in DIR's store, for `crossdl study cell DIR --id ID`.
// InputError when DIR holds no store; nullopt when the store has no such cell.
std::optional<CellSpec> store_find_cell(const std::string& dir, const std::string& id);

}  // namespace crossdl
