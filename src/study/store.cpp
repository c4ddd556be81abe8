// The SQLite study store (see crossdl/store.h for what it promises).
#include "crossdl/store.h"

#include <sqlite3.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "crossdl/status.h"

namespace crossdl {
namespace {

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
  id TEXT PRIMARY KEY, seq INTEGER NOT NULL, stage TEXT NOT NULL,
  axes_json TEXT NOT NULL, params_json TEXT NOT NULL, timeout_s REAL,
  status TEXT NOT NULL, message TEXT, signal INTEGER, signal_name TEXT, exit_code INTEGER,
  elapsed_s REAL, child_peak_rss_mb REAL, metrics_json TEXT, provenance_json TEXT,
  stderr_tail TEXT, started_at TEXT, finished_at TEXT);
CREATE TABLE IF NOT EXISTS epochs (
  cell_id TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, test_accuracy REAL,
  seconds REAL, peak_rss_mb REAL, samples_per_s REAL, PRIMARY KEY (cell_id, epoch));
CREATE TABLE IF NOT EXISTS outputs (
  cell_id TEXT NOT NULL, name TEXT NOT NULL, value_json TEXT NOT NULL,
  PRIMARY KEY (cell_id, name));
CREATE TABLE IF NOT EXISTS inputs (
  cell_id TEXT NOT NULL, role TEXT NOT NULL, input_id TEXT NOT NULL,
  PRIMARY KEY (cell_id, role));
)";

constexpr const char* kCellColumns =
    "id, seq, stage, axes_json, params_json, timeout_s, status, message, signal, signal_name, "
    "exit_code, elapsed_s, child_peak_rss_mb, metrics_json, provenance_json, stderr_tail, "
    "started_at, finished_at";

// A prepared statement that finalises itself; errors carry the store's path.
class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& path, const std::string& sql) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s_, nullptr) != SQLITE_OK) fail("prepare");
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& text(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& real(int i, double v) {
    if (std::isnan(v))
      sqlite3_bind_null(s_, i);
    else
      sqlite3_bind_double(s_, i, v);
    return *this;
  }
  Stmt& integer(int i, std::optional<int> v) {
    if (v)
      sqlite3_bind_int64(s_, i, *v);
    else
      sqlite3_bind_null(s_, i);
    return *this;
  }
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("step");
  }
  std::string col_text(int i) const {
    const unsigned char* t = sqlite3_column_text(s_, i);
    return t == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(t));
  }
  double col_real(int i) const {
    return sqlite3_column_type(s_, i) == SQLITE_NULL ? std::nan("") : sqlite3_column_double(s_, i);
  }
  std::optional<int> col_int(int i) const {
    if (sqlite3_column_type(s_, i) == SQLITE_NULL) return std::nullopt;
    return static_cast<int>(sqlite3_column_int64(s_, i));
  }

 private:
  [[noreturn]] void fail(const char* what) const {
    throw std::runtime_error(path_ + ": SQLite " + what + ": " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* s_ = nullptr;
};

nlohmann::json parse_or(const std::string& text, nlohmann::json fallback) {
  if (text.empty()) return fallback;
  auto j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? fallback : j;
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

CellRecord read_cell(const Stmt& s) {
  CellRecord c;
  c.id = s.col_text(0);
  c.seq = s.col_int(1).value_or(0);
  c.stage = s.col_text(2);
  auto ax = nlohmann::ordered_json::parse(s.col_text(3), nullptr, false);
  c.axes = ax.is_object() ? ax : nlohmann::ordered_json::object();
  c.params = parse_or(s.col_text(4), nlohmann::json::object());
  c.timeout_s = s.col_real(5);
  c.status = s.col_text(6);
  c.message = s.col_text(7);
  c.signal = s.col_int(8);
  c.signal_name = s.col_text(9);
  c.exit_code = s.col_int(10);
  c.elapsed_s = s.col_real(11);
  c.child_peak_rss_mb = s.col_real(12);
  c.metrics = parse_or(s.col_text(13), nlohmann::json::object());
  c.provenance = parse_or(s.col_text(14), nlohmann::json::object());
  c.stderr_tail = s.col_text(15);
  c.started_at = s.col_text(16);
  c.finished_at = s.col_text(17);
  return c;
}

EpochRecord read_epoch(const Stmt& s) {
  EpochRecord e;
  e.cell_id = s.col_text(0);
  e.epoch = s.col_int(1).value_or(0);
  e.train_loss = s.col_real(2);
  e.test_accuracy = s.col_real(3);
  e.seconds = s.col_real(4);
  e.peak_rss_mb = s.col_real(5);
  e.samples_per_s = s.col_real(6);
  return e;
}

}  // namespace

CellSpec CellRecord::spec() const {
  CellSpec s;
  s.id = id;
  s.seq = seq;
  s.stage = stage;
  for (const auto& [k, v] : axes.items()) s.axes.emplace_back(k, nlohmann::json::parse(v.dump()));
  s.params = params;
  s.timeout_s = std::isnan(timeout_s) || timeout_s <= 0 ? 900 : timeout_s;
  s.inputs = inputs;
  return s;
}

CellRecord cell_record(const CellSpec& spec, const CellOutcome& o) {
  CellRecord c;
  c.id = spec.id;
  c.seq = spec.seq;
  c.stage = spec.stage;
  c.axes = spec.to_json()["axes"];
  c.params = spec.params;
  c.timeout_s = spec.timeout_s;
  c.inputs = spec.inputs;
  c.status = o.status;
  c.message = o.message;
  c.signal = o.signal;
  c.signal_name = o.signal_name;
  c.exit_code = o.exit_code;
  c.elapsed_s = o.elapsed_s;
  c.child_peak_rss_mb = o.child_peak_rss_mb;
  c.metrics = o.metrics;
  c.provenance = o.provenance;
  c.outputs = o.outputs;
  c.stderr_tail = o.stderr_tail;
  c.started_at = o.started_at;
  c.finished_at = o.finished_at;
  c.epochs = o.epochs;
  for (auto& e : c.epochs) e.cell_id = spec.id;
  return c;
}

std::string Store::path_in(const std::string& dir) {
  return (std::filesystem::path(dir) / "study.sqlite").string();
}

bool Store::exists_in(const std::string& dir) {
  return std::filesystem::exists(path_in(dir));
}

Store::Store(const std::string& dir, bool create) : path_(path_in(dir)) {
  if (!create && !std::filesystem::exists(path_))
    throw InputError(path_ + ": no study store here (run `crossdl study run --out " + dir +
                     "` first)");
  if (create) std::filesystem::create_directories(dir);
  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
  if (sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw InputError(path_ + ": cannot open the study store: " + why);
  }
  sqlite3_busy_timeout(db_, 10000);
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    if (create) {
      exec(kSchema);
      if (!meta("schema_version")) set_meta("schema_version", "1");
    } else if (!meta("schema_version")) {
      throw InputError(path_ + ": not a crossdl study store");
    } else {
      // A store written before cells had inputs gains the (empty) table.
      exec(kSchema);
    }
  } catch (const std::runtime_error& e) {
    sqlite3_close(db_);
    db_ = nullptr;
    if (dynamic_cast<const InputError*>(&e) != nullptr) throw;
    throw InputError(path_ + ": not a crossdl study store (" + e.what() + ")");
  }
}

Store::~Store() {
  sqlite3_close(db_);
}

void Store::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err != nullptr ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error(path_ + ": SQLite: " + why);
  }
}

void Store::set_meta(const std::string& key, const std::string& value) {
  Stmt s(db_, path_, "INSERT OR REPLACE INTO study (key, value) VALUES (?, ?)");
  s.text(1, key).text(2, value).step();
}

std::optional<std::string> Store::meta(const std::string& key) const {
  Stmt s(db_, path_, "SELECT value FROM study WHERE key = ?");
  s.text(1, key);
  if (!s.step()) return std::nullopt;
  return s.col_text(0);
}

std::map<std::string, std::string> Store::meta_all() const {
  std::map<std::string, std::string> out;
  Stmt s(db_, path_, "SELECT key, value FROM study");
  while (s.step()) out[s.col_text(0)] = s.col_text(1);
  return out;
}

void Store::write_cell(const CellRecord& c) {
  exec("BEGIN IMMEDIATE");
  try {
    Stmt s(db_, path_,
           std::string("INSERT OR REPLACE INTO cells (") + kCellColumns +
               ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    s.text(1, c.id)
        .integer(2, c.seq)
        .text(3, c.stage)
        .text(4, c.axes.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace))
        .text(5, dump(c.params))
        .real(6, c.timeout_s)
        .text(7, c.status)
        .text(8, c.message)
        .integer(9, c.signal)
        .text(10, c.signal_name)
        .integer(11, c.exit_code)
        .real(12, c.elapsed_s)
        .real(13, c.child_peak_rss_mb)
        .text(14, dump(c.metrics))
        .text(15, dump(c.provenance))
        .text(16, c.stderr_tail)
        .text(17, c.started_at)
        .text(18, c.finished_at);
    s.step();
    Stmt del(db_, path_, "DELETE FROM epochs WHERE cell_id = ?");
    del.text(1, c.id).step();
    for (const auto& e : c.epochs) {
      Stmt ins(db_, path_,
               "INSERT OR REPLACE INTO epochs (cell_id, epoch, train_loss, test_accuracy, "
               "seconds, peak_rss_mb, samples_per_s) VALUES (?,?,?,?,?,?,?)");
      ins.text(1, c.id)
          .integer(2, e.epoch)
          .real(3, e.train_loss)
          .real(4, e.test_accuracy)
          .real(5, e.seconds)
          .real(6, e.peak_rss_mb)
          .real(7, e.samples_per_s)
          .step();
    }
    Stmt del_in(db_, path_, "DELETE FROM inputs WHERE cell_id = ?");
    del_in.text(1, c.id).step();
    for (const auto& [role, id] : c.inputs) {
      Stmt ins(db_, path_, "INSERT INTO inputs (cell_id, role, input_id) VALUES (?,?,?)");
      ins.text(1, c.id).text(2, role).text(3, id).step();
    }
    Stmt del_out(db_, path_, "DELETE FROM outputs WHERE cell_id = ?");
    del_out.text(1, c.id).step();
    for (const auto& [name, value] : c.outputs.items()) {
      Stmt ins(db_, path_, "INSERT INTO outputs (cell_id, name, value_json) VALUES (?,?,?)");
      ins.text(1, c.id).text(2, name).text(3, dump(value)).step();
    }
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::set<std::string> Store::done_ids() const {
  std::set<std::string> out;
  Stmt s(db_, path_, "SELECT id FROM cells");
  while (s.step()) out.insert(s.col_text(0));
  return out;
}

std::vector<EpochRecord> Store::epochs_where(const std::string& cell_id) const {
  std::vector<EpochRecord> out;
  const char* cols =
      "e.cell_id, e.epoch, e.train_loss, e.test_accuracy, e.seconds, "
      "e.peak_rss_mb, e.samples_per_s";
  std::string sql = std::string("SELECT ") + cols +
                    " FROM epochs e LEFT JOIN cells c ON c.id = e.cell_id" +
                    (cell_id.empty() ? "" : " WHERE e.cell_id = ?") + " ORDER BY c.seq, e.epoch";
  Stmt s(db_, path_, sql);
  if (!cell_id.empty()) s.text(1, cell_id);
  while (s.step()) out.push_back(read_epoch(s));
  return out;
}

std::vector<EpochRecord> Store::epochs() const {
  return epochs_where("");
}

std::vector<CellRecord> Store::cells() const {
  std::vector<CellRecord> out;
  Stmt s(db_, path_, std::string("SELECT ") + kCellColumns + " FROM cells ORDER BY seq, id");
  while (s.step()) out.push_back(read_cell(s));
  std::vector<EpochRecord> all = epochs();
  std::map<std::string, std::size_t> at;
  for (std::size_t i = 0; i < out.size(); ++i) at[out[i].id] = i;
  for (auto& e : all) {
    auto it = at.find(e.cell_id);
    if (it != at.end()) out[it->second].epochs.push_back(e);
  }
  Stmt in(db_, path_, "SELECT cell_id, role, input_id FROM inputs ORDER BY cell_id, role");
  while (in.step()) {
    auto it = at.find(in.col_text(0));
    if (it != at.end()) out[it->second].inputs.emplace_back(in.col_text(1), in.col_text(2));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> Store::inputs_of(const std::string& id) const {
  std::vector<std::pair<std::string, std::string>> out;
  Stmt s(db_, path_, "SELECT role, input_id FROM inputs WHERE cell_id = ? ORDER BY role");
  s.text(1, id);
  while (s.step()) out.emplace_back(s.col_text(0), s.col_text(1));
  return out;
}

void Store::erase_cells(const std::vector<std::string>& ids) {
  exec("BEGIN IMMEDIATE");
  try {
    for (const char* table : {"cells WHERE id", "epochs WHERE cell_id", "outputs WHERE cell_id",
                              "inputs WHERE cell_id"})
      for (const auto& id : ids) {
        Stmt del(db_, path_, std::string("DELETE FROM ") + table + " = ?");
        del.text(1, id).step();
      }
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::optional<CellRecord> Store::find_cell(const std::string& id) const {
  Stmt s(db_, path_, std::string("SELECT ") + kCellColumns + " FROM cells WHERE id = ?");
  s.text(1, id);
  if (!s.step()) return std::nullopt;
  CellRecord c = read_cell(s);
  c.epochs = epochs_where(id);
  c.inputs = inputs_of(id);
  return c;
}

nlohmann::json Store::outputs(const std::string& cell_id) const {
  nlohmann::json out = nlohmann::json::object();
  Stmt s(db_, path_, "SELECT name, value_json FROM outputs WHERE cell_id = ? ORDER BY name");
  s.text(1, cell_id);
  while (s.step()) out[s.col_text(0)] = parse_or(s.col_text(1), nlohmann::json());
  return out;
}

std::optional<CellSpec> store_find_cell(const std::string& dir, const std::string& id) {
  Store store(dir, false);
  if (auto c = store.find_cell(id)) return c->spec();
  // A planned cell that never finished has no row, but its spec may have been written.
  auto spec_file = std::filesystem::path(dir) / "cells" / id / "spec.json";
  if (std::filesystem::exists(spec_file)) return cell_spec_read(spec_file.string());
  return std::nullopt;
}

}  // namespace crossdl
