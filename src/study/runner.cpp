// study_run: plan, skip what the store already holds, run the rest one child process at a time,
// record each finished cell in one transaction, then write the report.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "crossdl/provenance.h"
#include "crossdl/report.h"
#include "crossdl/status.h"
#include "crossdl/store.h"
#include "crossdl/study.h"
#include "study_internal.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;

void on_stop_signal(int sig) {
  g_study_stop_signal = sig;
}

// Installs SIGINT/SIGTERM handlers for the lifetime of a run and restores the caller's after.
class StopSignals {
 public:
  StopSignals() {
    g_study_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: poll() must return so the child is killed promptly
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

bool is_finding(const std::string& status) {
  return status == "failed" || status == "crashed" || status == "timeout";
}

nlohmann::ordered_json study_json(const Study& s) {
  nlohmann::ordered_json j;
  j["name"] = s.name;
  j["source"] = s.source;
  j["timeout_s"] = s.timeout_s;
  j["defaults"] = nlohmann::ordered_json::parse(s.defaults.dump());
  j["stages"] = nlohmann::ordered_json::array();
  for (const auto& st : s.stages) {
    nlohmann::ordered_json js;
    js["stage"] = st.kind;
    nlohmann::ordered_json ax = nlohmann::ordered_json::object();
    for (const auto& a : st.axes)
      ax[a.name] = nlohmann::ordered_json::parse(nlohmann::json(a.values).dump());
    js["axes"] = ax;
    js["params"] = nlohmann::ordered_json::parse(st.params.dump());
    if (st.timeout_s) js["timeout_s"] = *st.timeout_s;
    j["stages"].push_back(js);
  }
  return j;
}

std::vector<std::string> stored_plan(const Store& store) {
  auto text = store.meta("planned_cells");
  if (!text) return {};
  auto j = nlohmann::json::parse(*text, nullptr, false);
  std::vector<std::string> out;
  if (j.is_array())
    for (const auto& x : j)
      if (x.is_string()) out.push_back(x.get<std::string>());
  return out;
}

std::string reproduce_command(const std::string& dir, const std::string& id) {
  return "crossdl study cell " + dir + " --id " + id;
}

// A cell whose input did not end ok has nothing to work on: it is recorded as a skip naming that
// input, without starting a process. Empty when every input is there.
std::string missing_input(const Store& store, const CellSpec& spec) {
  for (const auto& [role, id] : spec.inputs) {
    const std::optional<CellRecord> in = store.find_cell(id);
    if (!in) return "its " + role + " cell " + id + " has not run";
    if (in->status != "ok")
      return "its " + role + " cell " + id + " (" + in->spec().label() + ") ended '" + in->status +
             "'" + (in->message.empty() ? "" : ": " + in->message.substr(0, 300));
  }
  return "";
}

// Every stored cell that reads `id`, directly or through another, in store order.
std::vector<std::string> dependants_of(const Store& store, const std::string& id) {
  const std::vector<CellRecord> cells = store.cells();
  std::set<std::string> hit = {id};
  std::vector<std::string> out;
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& c : cells) {
      if (hit.count(c.id)) continue;
      for (const auto& [role, in] : c.inputs)
        if (hit.count(in)) {
          hit.insert(c.id);
          out.push_back(c.id);
          grew = true;
          break;
        }
    }
  }
  return out;
}

// Runs one cell and records it unless the run was interrupted. Returns the outcome.
CellOutcome run_one(Store& store, const CellSpec& spec, const StudyRunOptions& opt,
                    StudyProgress& progress) {
  fs::path cell_dir = fs::path(opt.out_dir) / "cells" / spec.id;
  if (const std::string why = missing_input(store, spec); !why.empty()) {
    progress.cell_started(spec);
    CellOutcome o;
    o.status = "skipped";
    o.message = why;
    o.started_at = o.finished_at = utc_now_iso8601();
    o.provenance = machine_provenance();
    store.write_cell(cell_record(spec, o));
    progress.cell_finished(spec, o);
    return o;
  }
  fs::create_directories(cell_dir);
  std::string spec_file = (cell_dir / "spec.json").string();
  cell_spec_write(spec_file, spec);
  std::vector<std::string> argv;
  if (opt.command) {
    argv = opt.command(spec, spec_file, cell_dir.string());
  } else {
    argv = opt.self_command_prefix;
    for (const char* a : {"__cell", "--spec"}) argv.emplace_back(a);
    argv.push_back(spec_file);
    argv.emplace_back("--out");
    argv.push_back(cell_dir.string());
  }
  progress.cell_started(spec);
  CellObserver obs;
  obs.on_event = [&](const nlohmann::json& ev) { progress.event(ev); };
  obs.on_tick = [&] { progress.tick(); };
  CellOutcome o =
      cell_execute(spec.id, argv, spec.timeout_s, obs, (cell_dir / "output.log").string());
  if (o.status == "interrupted") return o;
  // Every row carries provenance, even for a cell that died before it could report its own.
  nlohmann::json prov = machine_provenance();
  for (const auto& [k, v] : o.provenance.items()) prov[k] = v;
  o.provenance = prov;
  store.write_cell(cell_record(spec, o));
  progress.cell_finished(spec, o);
  return o;
}

void check_options(const StudyRunOptions& opt) {
  if (opt.out_dir.empty()) throw InputError("study run: --out DIR is required");
  if (!opt.command && opt.self_command_prefix.empty())
    throw InputError("study run: no command to run cells with (self_command_prefix is empty)");
}

void fill_summary(nlohmann::json* summary, Store& store, const std::vector<std::string>& ids,
                  const StudyRunOptions& opt) {
  if (summary == nullptr) return;
  std::set<std::string> want(ids.begin(), ids.end());
  nlohmann::json by_status = nlohmann::json::object();
  nlohmann::json findings = nlohmann::json::array();
  for (const auto& c : store.cells()) {
    if (!want.count(c.id)) continue;
    by_status[c.status] = by_status.value(c.status, 0) + 1;
    if (is_finding(c.status))
      findings.push_back({{"id", c.id},
                          {"label", c.spec().label()},
                          {"status", c.status},
                          {"message", c.message},
                          {"reproduce", reproduce_command(opt.out_dir, c.id)}});
  }
  (*summary)["by_status"] = by_status;
  (*summary)["findings"] = findings;
}

void write_report_into(nlohmann::json* summary, const StudyRunOptions& opt) {
  if (!opt.write_report) return;
  try {
    report_write(opt.out_dir);
    if (summary != nullptr) (*summary)["report"] = (fs::path(opt.out_dir) / "report.md").string();
  } catch (const std::exception& e) {
    // The cells are safely stored; a report problem must not hide that. `crossdl report` retries.
    if (summary != nullptr) (*summary)["report_error"] = e.what();
  }
}

}  // namespace

int study_run(const Study& study, const StudyRunOptions& opt, nlohmann::json* summary) {
  check_options(opt);
  const double t0 = monotonic_s();
  std::vector<CellSpec> plan = study_plan(study);
  std::vector<std::string> ids;
  for (const auto& c : plan) ids.push_back(c.id);

  bool had_store = Store::exists_in(opt.out_dir);
  if (had_store && !opt.resume) {
    Store old(opt.out_dir, false);
    std::size_t planned = std::max(stored_plan(old).size(), old.done_ids().size());
    throw InputError(opt.out_dir + " already holds a study (" +
                     std::to_string(old.done_ids().size()) + " of " + std::to_string(planned) +
                     " cells done); pass --resume to continue it or choose another --out");
  }
  Store store(opt.out_dir, true);
  std::vector<std::string> notes;
  if (!had_store) {
    store.set_meta("name", study.name);
    store.set_meta("source", study.source);
    store.set_meta("description", study.description);
    store.set_meta("created_at", utc_now_iso8601());
    store.set_meta("crossdl_version", machine_provenance().value("crossdl_version", ""));
    store.set_meta("crossdl_commit", machine_provenance().value("crossdl_commit", ""));
    store.set_meta("study_json", study_json(study).dump());
    store.set_meta("planned_cells", nlohmann::json(ids).dump());
  } else {
    // A resumed study may differ from the stored one: cells new to it are added to the plan,
    // cells it no longer has stay in the store (and the report) untouched.
    std::vector<std::string> old_plan = stored_plan(store);
    std::set<std::string> old_set(old_plan.begin(), old_plan.end());
    std::size_t added = 0;
    for (const auto& id : ids)
      if (!old_set.count(id)) {
        old_plan.push_back(id);
        ++added;
      }
    std::set<std::string> now_set(ids.begin(), ids.end());
    std::size_t dropped = 0;
    for (const auto& id : old_set) dropped += now_set.count(id) ? 0 : 1;
    if (added > 0)
      notes.push_back("the study changed: " + std::to_string(added) + " new cells added");
    if (dropped > 0)
      notes.push_back(std::to_string(dropped) +
                      " stored cells are not in this study; they are kept in the store");
    store.set_meta("planned_cells", nlohmann::json(old_plan).dump());
    if (added > 0) store.set_meta("study_json", study_json(study).dump());
    store.set_meta("resumed_at", utc_now_iso8601());
  }

  std::set<std::string> done = store.done_ids();
  std::size_t already = 0;
  for (const auto& id : ids) already += done.count(id);
  StudyProgress progress(plan.size(), already, opt.json);
  if (had_store)
    notes.insert(notes.begin(), "resuming " + opt.out_dir + ": " + std::to_string(already) +
                                    " of " + std::to_string(plan.size()) +
                                    " cells already done, not run again");
  for (const auto& n : notes) progress.message(n);

  int stop = 0;
  std::size_t ran = 0;
  {
    StopSignals signals;
    for (const auto& spec : plan) {
      if (done.count(spec.id)) continue;
      if (g_study_stop_signal != 0) break;
      CellOutcome o = run_one(store, spec, opt, progress);
      if (o.status == "interrupted") break;
      ++ran;
    }
    stop = g_study_stop_signal;
    g_study_stop_signal = 0;
  }
  progress.finish();
  if (stop != 0)
    progress.message("interrupted by signal " + std::to_string(stop) +
                     "; the finished cells are stored, `--resume` continues");

  if (summary != nullptr) {
    *summary = nlohmann::json::object();
    (*summary)["study"] = study.name;
    (*summary)["source"] = study.source;
    (*summary)["out_dir"] = opt.out_dir;
    (*summary)["cells"] = plan.size();
    (*summary)["ran"] = ran;
    (*summary)["skipped_done"] = already;
    (*summary)["interrupted"] = stop != 0;
    if (!notes.empty()) (*summary)["notes"] = notes;
  }
  fill_summary(summary, store, ids, opt);
  write_report_into(summary, opt);
  if (summary != nullptr) (*summary)["wall_s"] = monotonic_s() - t0;

  if (stop != 0) return 128 + stop;
  bool any_finding = false;
  for (const auto& c : store.cells())
    if (std::find(ids.begin(), ids.end(), c.id) != ids.end() && is_finding(c.status))
      any_finding = true;
  return any_finding ? 1 : 0;
}

int study_run_cell(const std::string& id, const StudyRunOptions& opt, nlohmann::json* summary) {
  check_options(opt);
  const double t0 = monotonic_s();
  std::optional<CellSpec> spec = store_find_cell(opt.out_dir, id);
  if (!spec) throw InputError(Store::path_in(opt.out_dir) + ": no cell with id '" + id + "'");
  Store store(opt.out_dir, false);
  StudyProgress progress(1, 0, opt.json);
  int stop = 0;
  CellOutcome o;
  {
    StopSignals signals;
    o = run_one(store, *spec, opt, progress);
    stop = g_study_stop_signal;
    g_study_stop_signal = 0;
  }
  progress.finish();
  // What used this cell's old result is stale now: removed from the store, so that `study run
  // --resume` runs it again with the new one.
  std::vector<std::string> stale;
  if (o.status != "interrupted") {
    stale = dependants_of(store, id);
    if (!stale.empty()) store.erase_cells(stale);
  }
  if (summary != nullptr) {
    *summary = {{"out_dir", opt.out_dir},       {"id", id},
                {"label", spec->label()},       {"status", o.status},
                {"message", o.message},         {"elapsed_s", o.elapsed_s},
                {"stderr_tail", o.stderr_tail}, {"invalidated", stale}};
  }
  write_report_into(summary, opt);
  if (summary != nullptr) (*summary)["wall_s"] = monotonic_s() - t0;
  if (stop != 0) return 128 + stop;
  return o.status == "ok" || o.status == "skipped" ? 0 : 1;
}

}  // namespace crossdl
