// Expands a study into cells, and the cell spec file the child reads.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "crossdl/study.h"
#include "crossdl/tensor.h"
#include "study_internal.h"

namespace crossdl {

nlohmann::json CellSpec::value(const std::string& key) const {
  for (const auto& [name, v] : axes)
    if (name == key) return v;
  auto it = params.find(key);
  return it == params.end() ? nlohmann::json() : *it;
}

nlohmann::json CellSpec::config() const {
  nlohmann::json c = params.is_object() ? params : nlohmann::json::object();
  for (const auto& [name, v] : axes) c[name] = v;
  return c;
}

std::string CellSpec::label() const {
  std::string s = stage;
  for (const auto& [name, v] : axes)
    s.append(" ").append(v.is_string() ? v.get<std::string>() : name + "=" + v.dump());
  return s;
}

nlohmann::ordered_json CellSpec::to_json() const {
  nlohmann::ordered_json j;
  j["id"] = id;
  j["seq"] = seq;
  j["stage"] = stage;
  nlohmann::ordered_json ax = nlohmann::ordered_json::object();
  for (const auto& [name, v] : axes) ax[name] = nlohmann::ordered_json::parse(v.dump());
  j["axes"] = ax;
  j["params"] = nlohmann::ordered_json::parse(params.dump());
  j["timeout_s"] = timeout_s;
  nlohmann::ordered_json in = nlohmann::ordered_json::object();
  for (const auto& [role, id] : inputs) in[role] = id;
  j["inputs"] = in;
  return j;
}

std::string cell_id(const std::string& stage,
                    const std::vector<std::pair<std::string, nlohmann::json>>& axes,
                    const nlohmann::json& params) {
  // nlohmann::json keeps object keys sorted, so dump() is canonical: the id does not depend on
  // the order axes or parameters were written in, only on what the cell computes.
  nlohmann::json ax = nlohmann::json::object();
  for (const auto& [name, v] : axes) ax[name] = v;
  nlohmann::json c = {{"stage", stage}, {"axes", ax}, {"params", params}};
  return sha256_hex(std::string_view(c.dump())).substr(0, 16);
}

std::vector<CellSpec> study_plan(const Study& study) {
  // Cells run in the order written: stage by stage, the first axis varying slowest. A later
  // ordering could group cells by (framework, model) to minimise model reloads, but each cell is
  // its own process today, so nothing would be saved yet.
  std::vector<CellSpec> cells;
  std::vector<const StudyStage*> stage_of;        // per cell, for the messages
  std::map<std::string, std::string> first_seen;  // id -> label, to report duplicates
  for (const auto& st : study.stages) {
    nlohmann::json params = study.defaults.is_object() ? study.defaults : nlohmann::json::object();
    for (const auto& [k, v] : st.params.items()) params[k] = v;
    // An axis overrides a parameter of the same name; keep one source of truth per key.
    for (const auto& ax : st.axes) params.erase(ax.name);
    for (const auto& req : stage_required_axes(st.kind)) {
      bool found = params.contains(req);
      for (const auto& ax : st.axes) found = found || ax.name == req;
      if (!found)
        throw InputError(st.where + ": stage '" + st.kind + "' needs '" + req +
                         "' (as an axis or a parameter)");
    }
    if (st.axes.empty()) throw InputError(st.where + ": the stage has no axes");
    std::vector<std::size_t> idx(st.axes.size(), 0);
    for (;;) {
      CellSpec c;
      c.stage = st.kind;
      for (std::size_t a = 0; a < st.axes.size(); ++a)
        c.axes.emplace_back(st.axes[a].name, st.axes[a].values[idx[a]]);
      c.params = params;
      c.timeout_s = st.timeout_s.value_or(study.timeout_s);
      c.id = cell_id(c.stage, c.axes, c.params);
      c.seq = static_cast<int>(cells.size());
      auto [it, fresh] = first_seen.emplace(c.id, c.label());
      if (!fresh) throw InputError(st.where + ": cell '" + c.label() + "' is planned twice");
      cells.push_back(std::move(c));
      stage_of.push_back(&st);
      // Odometer increment, last axis fastest.
      std::size_t a = st.axes.size();
      while (a > 0) {
        --a;
        if (++idx[a] < st.axes[a].values.size()) break;
        idx[a] = 0;
        if (a == 0) goto stage_done;
      }
    }
  stage_done:;
  }
  // Dependencies: each cell names the cells it reads. One the study does not plan is a planning
  // error; so is one planned after it, since cells run in plan order.
  std::map<std::string, std::size_t> seq_of;
  for (const auto& c : cells) seq_of[c.id] = static_cast<std::size_t>(c.seq);
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const StageKind* kind = find_stage(cells[i].stage);
    if (kind == nullptr || !kind->depends_on) continue;
    try {
      cells[i].inputs = kind->depends_on(cells[i], cells);
    } catch (const InputError& e) {
      throw InputError(stage_of[i]->where + ": " + e.what());
    }
    for (const auto& [role, id] : cells[i].inputs) {
      auto it = seq_of.find(id);
      if (it == seq_of.end())
        throw InputError(stage_of[i]->where + ": cell '" + cells[i].label() + "' depends on '" +
                         id + "', which the study does not plan");
      if (it->second >= i)
        throw InputError(stage_of[i]->where + ": cell '" + cells[i].label() + "' depends on '" +
                         cells[it->second].label() + "', which is planned after it");
    }
  }
  return cells;
}

void cell_spec_write(const std::string& spec_file, const CellSpec& spec) {
  std::filesystem::create_directories(std::filesystem::path(spec_file).parent_path());
  std::string tmp = spec_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << spec.to_json().dump(2) << "\n";
    if (!out) throw InputError(spec_file + ": cannot write the cell spec");
  }
  // Rename so that a study killed mid-write never leaves a truncated spec behind.
  std::filesystem::rename(tmp, spec_file);
}

CellSpec cell_spec_read(const std::string& spec_file) {
  std::ifstream in(spec_file, std::ios::binary);
  if (!in) throw InputError(spec_file + ": cannot open the cell spec");
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    // ordered_json keeps the axes in the order the planner wrote them.
    auto oj = nlohmann::ordered_json::parse(ss.str());
    CellSpec c;
    c.id = oj.at("id").get<std::string>();
    c.seq = oj.value("seq", 0);
    c.stage = oj.at("stage").get<std::string>();
    c.params = nlohmann::json::parse(oj.value("params", nlohmann::ordered_json::object()).dump());
    c.timeout_s = oj.value("timeout_s", 900.0);
    const auto& ax = oj.at("axes");
    if (!ax.is_object()) throw InputError(spec_file + ": 'axes' must be an object");
    for (const auto& [k, v] : ax.items()) c.axes.emplace_back(k, nlohmann::json::parse(v.dump()));
    if (oj.contains("inputs")) {
      const auto& in = oj.at("inputs");
      if (!in.is_object()) throw InputError(spec_file + ": 'inputs' must be an object");
      for (const auto& [role, id] : in.items()) c.inputs.emplace_back(role, id.get<std::string>());
    }
    if (!c.params.is_object()) throw InputError(spec_file + ": 'params' must be an object");
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(spec_file + ": not a cell spec: " + e.what());
  }
}

}  // namespace crossdl
