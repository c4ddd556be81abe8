// Shared between the study sources; not part of the public API.
#pragma once

#include <csignal>
#include <string>
#include <vector>

#include "crossdl/study.h"

namespace crossdl {

std::vector<std::string> stage_required_axes(const std::string& name);

// Set by study_run's SIGINT/SIGTERM handler; the executor kills the running cell when it is set.
extern volatile std::sig_atomic_t g_study_stop_signal;

std::string utf8_sanitize(const std::string& s);

// The progress display of a running study, on stderr (see progress.cpp for the rules).
class StudyProgress {
 public:
  StudyProgress(std::size_t total, std::size_t already_done, bool quiet_unless_tty);
  void cell_started(const CellSpec& spec);
  void event(const nlohmann::json& ev);
  void tick();
  void cell_finished(const CellSpec& spec, const CellOutcome& outcome);
  void message(const std::string& line);  // a line of its own, e.g. "resuming: 4 cells done"
  void finish();

 private:
  void draw(bool force);
  std::string status_line() const;
  bool tty_ = false, enabled_ = true;
  std::size_t total_ = 0, done_ = 0, findings_ = 0;
  double start_ = 0, cell_start_ = 0, last_plain_ = 0, last_draw_ = 0;
  std::string label_, detail_;
  bool line_shown_ = false;
};

double monotonic_s();

}  // namespace crossdl
