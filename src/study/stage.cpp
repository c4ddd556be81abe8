// The stage registry (crossdl/stage.h).
#include <algorithm>
#include <deque>
#include <mutex>

#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "study_internal.h"

namespace crossdl {
namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
// Entries are never removed, and a replacement assigns in place, so pointers handed out by
// find_stage stay valid (a deque does not move its elements when it grows).
std::deque<StageKind>& registry() {
  // The built-in names, axes and report sections, so that the presets parse and plan and a
  // store is reported in a core-only binary (tests, `report`); the app registers the full
  // entries (src/stages/), which run the cells.
  static std::deque<StageKind> r{
      {"train", {"model", "dataset", "framework"}, {}, {}, {}, report_training_section},
      {"migrate",
       {"model", "dataset", "framework", "runtime"},
       {},
       {},
       {},
       report_migration_section},
      {"quantize",
       {"model", "dataset", "framework", "scheme", "runtime"},
       {},
       {},
       {},
       report_quantization_section},
  };
  return r;
}

}  // namespace

const std::string& StageContext::input(const std::string& role) const {
  for (const auto& [r, dir] : inputs)
    if (r == role) return dir;
  throw InputError("cell " + spec.id + " (" + spec.label() + ") has no input '" + role + "'");
}

void register_stage(StageKind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (auto& k : registry())
    if (k.name == kind.name) {
      k = std::move(kind);
      return;
    }
  registry().push_back(std::move(kind));
}

void register_stage(std::string name, std::vector<std::string> required_axes) {
  StageKind k;
  k.name = std::move(name);
  k.required_axes = std::move(required_axes);
  register_stage(std::move(k));
}

const StageKind* find_stage(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (const auto& k : registry())
    if (k.name == name) return &k;
  return nullptr;
}

std::vector<std::string> registered_stages() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> out;
  for (const auto& k : registry()) out.push_back(k.name);
  return out;
}

std::vector<std::string> stage_required_axes(const std::string& name) {
  const StageKind* k = find_stage(name);
  return k == nullptr ? std::vector<std::string>{} : k->required_axes;
}

std::string find_source_cell(const CellSpec& spec, const std::vector<CellSpec>& plan,
                             const std::string& source_stage,
                             const std::vector<std::string>& ignore) {
  const nlohmann::json cfg = spec.config();
  const CellSpec* best = nullptr;
  for (const CellSpec& c : plan) {
    if (c.stage != source_stage) continue;
    const nlohmann::json tc = c.config();
    bool match = true;
    for (const auto& [k, v] : tc.items()) {
      if (std::find(ignore.begin(), ignore.end(), k) != ignore.end()) continue;
      if (!cfg.contains(k) || cfg[k] != v) {
        match = false;
        break;
      }
    }
    if (!match) continue;
    if (best == nullptr ||
        (tc.value("replicate", 0) == 0 && best->config().value("replicate", 0) != 0))
      best = &c;
  }
  if (best == nullptr)
    throw InputError("cell '" + spec.label() + "' needs a " + source_stage + " cell of " +
                     cfg.value("model", std::string("?")) + " on " +
                     cfg.value("dataset", std::string("?")) + " in " +
                     cfg.value("framework", std::string("?")) +
                     " with the same parameters, and the study plans none");
  return best->id;
}

}  // namespace crossdl
