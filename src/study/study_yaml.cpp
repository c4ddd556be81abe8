// The study file format (docs/study-format.md) and the stage registry.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "crossdl/study.h"

namespace crossdl {
namespace {

std::string where(const std::string& source, const YAML::Mark& m) {
  if (m.is_null()) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

[[noreturn]] void fail(const std::string& source, const YAML::Node& n, const std::string& what) {
  throw InputError(where(source, n.Mark()) + ": " + what);
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// Plain scalars become numbers or booleans when they read as one; quoted scalars stay strings, so
// `seed: "1"` and `seed: 1` are different cells, as the user wrote them.
nlohmann::json scalar_json(const std::string& source, const YAML::Node& n,
                           const std::string& what) {
  if (!n.IsScalar()) fail(source, n, what + " must be a scalar (a string, number or boolean)");
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL")
    fail(source, n, what + " is empty");
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  std::int64_t i = 0;
  auto [pi, ei] = std::from_chars(s.data(), s.data() + s.size(), i);
  if (ei == std::errc() && pi == s.data() + s.size()) return i;
  double d = 0;
  auto [pd, ed] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ed == std::errc() && pd == s.data() + s.size() && std::isfinite(d)) return d;
  return s;
}

std::string key_of(const std::string& source, const YAML::Node& k) {
  if (!k.IsScalar()) fail(source, k, "a key must be a scalar");
  return k.Scalar();
}

nlohmann::json params_json(const std::string& source, const YAML::Node& n,
                           const std::string& what) {
  nlohmann::json out = nlohmann::json::object();
  if (n.IsNull()) return out;
  if (!n.IsMap()) fail(source, n, what + " must be a mapping of name: value");
  for (const auto& kv : n) {
    std::string k = key_of(source, kv.first);
    if (out.contains(k)) fail(source, kv.first, what + " lists '" + k + "' twice");
    out[k] = scalar_json(source, kv.second, "parameter '" + k + "'");
  }
  return out;
}

double positive_number(const std::string& source, const YAML::Node& n, const std::string& what) {
  nlohmann::json v = scalar_json(source, n, what);
  if (!v.is_number() || v.get<double>() <= 0) fail(source, n, what + " must be a positive number");
  return v.get<double>();
}

StudyStage parse_stage(const std::string& source, const YAML::Node& n, std::size_t index) {
  if (!n.IsMap()) fail(source, n, "stage " + std::to_string(index + 1) + " must be a mapping");
  StudyStage st;
  st.where = where(source, n.Mark());
  bool have_kind = false, have_axes = false;
  std::vector<std::string> seen;
  for (const auto& kv : n) {
    std::string k = key_of(source, kv.first);
    if (std::find(seen.begin(), seen.end(), k) != seen.end())
      fail(source, kv.first, "key '" + k + "' is repeated");
    seen.push_back(k);
    if (k == "stage") {
      if (!kv.second.IsScalar()) fail(source, kv.second, "'stage' must be a stage name");
      st.kind = kv.second.Scalar();
      std::vector<std::string> known = registered_stages();
      if (std::find(known.begin(), known.end(), st.kind) == known.end())
        fail(source, kv.second, "unknown stage '" + st.kind + "' (known: " + join(known) + ")");
      have_kind = true;
    } else if (k == "axes") {
      if (!kv.second.IsMap() || kv.second.size() == 0)
        fail(source, kv.second, "'axes' must be a non-empty mapping of axis: [values]");
      for (const auto& ax : kv.second) {
        StudyAxis axis;
        axis.name = key_of(source, ax.first);
        for (const auto& prev : st.axes)
          if (prev.name == axis.name)
            fail(source, ax.first, "axis '" + axis.name + "' is repeated");
        const YAML::Node& vals = ax.second;
        if (vals.IsSequence()) {
          if (vals.size() == 0) fail(source, vals, "axis '" + axis.name + "' has no values");
          for (const auto& v : vals) {
            nlohmann::json jv = scalar_json(source, v, "a value of axis '" + axis.name + "'");
            if (std::find(axis.values.begin(), axis.values.end(), jv) != axis.values.end())
              fail(source, v, "axis '" + axis.name + "' lists " + jv.dump() + " twice");
            axis.values.push_back(std::move(jv));
          }
        } else if (vals.IsScalar()) {  // `framework: torch` for a one-value axis
          axis.values.push_back(scalar_json(source, vals, "axis '" + axis.name + "'"));
        } else {
          fail(source, vals, "axis '" + axis.name + "' must be a list of scalars");
        }
        st.axes.push_back(std::move(axis));
      }
      have_axes = true;
    } else if (k == "params") {
      st.params = params_json(source, kv.second, "'params'");
    } else if (k == "timeout_s") {
      st.timeout_s = positive_number(source, kv.second, "'timeout_s'");
    } else {
      fail(source, kv.first,
           "unknown stage key '" + k + "' (known: stage, axes, params, timeout_s)");
    }
  }
  if (!have_kind) fail(source, n, "stage " + std::to_string(index + 1) + " has no 'stage' kind");
  if (!have_axes) fail(source, n, "stage " + std::to_string(index + 1) + " has no 'axes'");
  return st;
}

}  // namespace

Study study_parse(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw InputError(where(source, e.mark) + ": " + e.msg);
  }
  if (!root.IsMap()) fail(source, root, "a study must be a mapping with 'stages'");
  Study s;
  s.source = source;
  bool have_stages = false;
  std::vector<std::string> seen;
  for (const auto& kv : root) {
    std::string k = key_of(source, kv.first);
    if (std::find(seen.begin(), seen.end(), k) != seen.end())
      fail(source, kv.first, "key '" + k + "' is repeated");
    seen.push_back(k);
    if (k == "name") {
      if (!kv.second.IsScalar() || kv.second.Scalar().empty())
        fail(source, kv.second, "'name' must be text");
      s.name = kv.second.Scalar();
    } else if (k == "description") {
      if (!kv.second.IsScalar()) fail(source, kv.second, "'description' must be text");
      s.description = kv.second.Scalar();
    } else if (k == "timeout_s") {
      s.timeout_s = positive_number(source, kv.second, "'timeout_s'");
    } else if (k == "defaults") {
      s.defaults = params_json(source, kv.second, "'defaults'");
    } else if (k == "stages") {
      if (!kv.second.IsSequence() || kv.second.size() == 0)
        fail(source, kv.second, "'stages' must be a non-empty list");
      for (std::size_t i = 0; i < kv.second.size(); ++i)
        s.stages.push_back(parse_stage(source, kv.second[i], i));
      have_stages = true;
    } else {
      fail(source, kv.first,
           "unknown key '" + k + "' (known: name, description, timeout_s, defaults, stages)");
    }
  }
  if (!have_stages) fail(source, root, "the study has no 'stages'");
  if (s.name.empty()) s.name = std::filesystem::path(source).stem().string();
  return s;
}

Study study_load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open the study file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return study_parse(ss.str(), path);
}

}  // namespace crossdl
