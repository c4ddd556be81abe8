// What the CLI's source files share: exit codes, list parsing, and the subcommands each file adds.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace crossdl {

// 0 success; 1 a failure or finding in the work itself; 2 bad usage or input.
constexpr int kExitFinding = 1;
constexpr int kExitUsage = 2;

// "a,b,,c" -> {"a","b","c"}
std::vector<std::string> split_list(const std::string& s);

// The quantization options `quantize` and `compare --precision` share.
struct QuantArgs {
  bool per_tensor = false;
  std::string calibrate = "minmax";
  std::int64_t calibration = 512;
  std::uint64_t calibration_seed = 1;
  double percentile = 99.99;
  // The options as quant_options_from_json reads them (without the scheme).
  nlohmann::json to_json() const;
};
void add_quant_options(CLI::App& app, QuantArgs& q);

// The subcommands compare_cmd.cpp adds, and how main() runs them once parsed.
struct CommandSet {
  CLI::App* compare = nullptr;
  CLI::App* runtime_job = nullptr;
  std::function<int()> run_compare, run_runtime_job;
  struct {
    CLI::App* app = nullptr;
    std::function<int()> run;
  } onnx_conformance;  // conformance_cmd.cpp
  struct {
    CLI::App* app = nullptr;
    std::function<int()> run;
  } quantize;  // quantize_cmd.cpp
};
void add_compare_commands(CLI::App& app, CommandSet& set);
void add_conformance_command(CLI::App& app, CommandSet& set);
void add_quantize_command(CLI::App& app, CommandSet& set);

}  // namespace crossdl
