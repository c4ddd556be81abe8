// What the CLI's source files share: exit codes, list parsing, and the subcommands each file adds.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace crossdl {

// 0 success; 1 a failure or finding in the work itself; 2 bad usage or input.
constexpr int kExitFinding = 1;
constexpr int kExitUsage = 2;

// "a,b,,c" -> {"a","b","c"}
std::vector<std::string> split_list(const std::string& s);

// The subcommands compare_cmd.cpp adds, and how main() runs them once parsed.
struct CommandSet {
  CLI::App* compare = nullptr;
  CLI::App* runtime_job = nullptr;
  std::function<int()> run_compare, run_runtime_job;
  struct {
    CLI::App* app = nullptr;
    std::function<int()> run;
  } onnx_conformance;  // conformance_cmd.cpp
};
void add_compare_commands(CLI::App& app, CommandSet& set);
void add_conformance_command(CLI::App& app, CommandSet& set);

}  // namespace crossdl
