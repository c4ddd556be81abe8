// Progress of a running study on stderr. On a terminal: one line redrawn in place. Elsewhere (CI
// logs, pipes): a line per finished cell and at most one progress line every 10 s, because a log
// full of carriage returns is unreadable. --json keeps stderr quiet unless it is a terminal.
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "study_internal.h"

namespace crossdl {

double monotonic_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

namespace {

std::string clock_str(double s) {
  long t = static_cast<long>(s);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

bool is_finding(const std::string& status) {
  return status == "failed" || status == "crashed" || status == "timeout";
}

std::string num_field(const nlohmann::json& ev, const char* key, const char* fmt) {
  auto it = ev.find(key);
  if (it == ev.end() || !it->is_number()) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, it->get<double>());
  return buf;
}

}  // namespace

StudyProgress::StudyProgress(std::size_t total, std::size_t already_done, bool quiet_unless_tty)
    : tty_(isatty(STDERR_FILENO) != 0), total_(total), done_(already_done) {
  enabled_ = tty_ || !quiet_unless_tty;
  start_ = monotonic_s();
  last_plain_ = start_;
}

std::string StudyProgress::status_line() const {
  std::string s = "[cells " + std::to_string(done_) + "/" + std::to_string(total_);
  if (findings_ > 0) s += ", " + std::to_string(findings_) + " failed";
  s += "]";
  if (!label_.empty()) s += " " + label_;
  if (!detail_.empty()) s += " | " + detail_;
  s += " | " + clock_str(monotonic_s() - start_);
  return s;
}

void StudyProgress::draw(bool force) {
  if (!enabled_) return;
  double now = monotonic_s();
  if (tty_) {
    if (!force && now - last_draw_ < 0.1) return;
    last_draw_ = now;
    std::string line = status_line();
    // A line wider than the terminal wraps, and "\r" would then redraw only its last part.
    winsize ws{};
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10 && line.size() >= ws.ws_col)
      line = line.substr(0, ws.ws_col - 1);
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
    line_shown_ = true;
  } else {
    if (!force && now - last_plain_ < 10.0) return;
    last_plain_ = now;
    std::fprintf(stderr, "%s\n", status_line().c_str());
    std::fflush(stderr);
  }
}

void StudyProgress::cell_started(const CellSpec& spec) {
  label_ = spec.label();
  detail_.clear();
  cell_start_ = monotonic_s();
  if (tty_) draw(true);
}

void StudyProgress::event(const nlohmann::json& ev) {
  std::string kind = ev.value("event", std::string());
  std::string d;
  auto pair = [&](const char* a, const char* b, const char* word) {
    std::string x = num_field(ev, a, "%.0f"), y = num_field(ev, b, "%.0f");
    if (x.empty()) return;
    d.append(d.empty() ? "" : " ").append(word).append(" ").append(x);
    if (!y.empty()) d.append("/").append(y);
  };
  if (kind == "progress") {
    pair("epoch", "epochs", "epoch");
    pair("batch", "batches", "batch");
    std::string loss = num_field(ev, "loss", "%.3f");
    if (!loss.empty()) d += " loss " + loss;
    std::string sps = num_field(ev, "samples_per_s", "%.0f");
    if (!sps.empty()) d += " " + sps + " samples/s";
  } else if (kind == "epoch") {
    pair("epoch", "epochs", "epoch");
    d += " done";
    std::string acc = num_field(ev, "test_accuracy", "%.4f");
    if (!acc.empty()) d += " test accuracy " + acc;
  } else {
    return;
  }
  detail_ = d;
  draw(false);
}

void StudyProgress::tick() {
  draw(false);
}

void StudyProgress::cell_finished(const CellSpec& spec, const CellOutcome& o) {
  ++done_;
  if (is_finding(o.status)) ++findings_;
  detail_.clear();
  if (!enabled_) return;
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f s", o.elapsed_s);
  std::string line = "[";
  line.append(std::to_string(done_)).append("/").append(std::to_string(total_)).append("] ");
  line.append(o.status).append(" ").append(spec.label()).append(" (").append(secs).append(")");
  if (o.status != "ok" && !o.message.empty()) {
    std::string m = o.message.substr(0, 200);
    if (auto nl = m.find('\n'); nl != std::string::npos) m = m.substr(0, nl);
    line += ": " + m;
  }
  if (tty_) {
    // Keep the failures on screen; the ok cells are summarised by the counter.
    if (o.status != "ok") std::fprintf(stderr, "\r\033[K%s\n", line.c_str());
    label_.clear();
    draw(true);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
    last_plain_ = monotonic_s();
  }
}

void StudyProgress::message(const std::string& line) {
  if (!enabled_) return;
  if (tty_ && line_shown_)
    std::fprintf(stderr, "\r\033[K%s\n", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  if (tty_ && line_shown_) draw(true);
}

void StudyProgress::finish() {
  if (!enabled_) return;
  if (tty_ && line_shown_) {
    label_.clear();
    detail_.clear();
    std::fprintf(stderr, "\r\033[K%s\n", status_line().c_str());
    std::fflush(stderr);
  }
}

}  // namespace crossdl
