// Runs one cell in a child process and turns whatever happens to it into a CellOutcome.
//
// The child gets its own process group so that a timeout or an interrupt kills everything it
// started (a framework's worker processes too), and two pipes: stdout carries JSON event lines,
// stderr is free text whose tail explains a crash. The parent never blocks for long: poll() on the
// pipes with a short timeout, and the child's exit is checked on every turn.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string_view>

#include "crossdl/provenance.h"
#include "crossdl/study.h"
#include "study_internal.h"

namespace crossdl {

volatile std::sig_atomic_t g_study_stop_signal = 0;

namespace {

constexpr std::size_t kTailBytes = 4096;
constexpr std::size_t kMaxLineBytes = 16u << 20;  // a runaway line without '\n' becomes log text

class Outcome {
 public:
  Outcome(const std::string& cell_id, const CellObserver& obs, const std::string& log_file)
      : cell_id_(cell_id), obs_(obs) {
    if (!log_file.empty()) {
      std::filesystem::create_directories(std::filesystem::path(log_file).parent_path());
      log_ = std::fopen(log_file.c_str(), "wb");
    }
  }
  ~Outcome() {
    if (log_ != nullptr) std::fclose(log_);
  }
  Outcome(const Outcome&) = delete;
  Outcome& operator=(const Outcome&) = delete;

  void stdout_bytes(const char* p, std::size_t n) {
    line_.append(p, n);
    std::size_t start = 0;
    for (;;) {
      std::size_t nl = line_.find('\n', start);
      if (nl == std::string::npos) break;
      handle_line(std::string_view(line_).substr(start, nl - start));
      start = nl + 1;
    }
    line_.erase(0, start);
    if (line_.size() > kMaxLineBytes) {
      text(line_ + "\n");
      line_.clear();
    }
  }
  void stdout_eof() {
    if (!line_.empty()) handle_line(line_);
    line_.clear();
  }
  void stderr_bytes(const char* p, std::size_t n) { text(std::string(p, n)); }

  CellOutcome out;
  bool got_result = false;
  std::string result_status;

  std::string tail() const {
    std::string t = tail_.size() > kTailBytes ? tail_.substr(tail_.size() - kTailBytes) : tail_;
    return t;
  }

 private:
  void text(const std::string& s) {
    tail_ += s;
    if (tail_.size() > 2 * kTailBytes) tail_.erase(0, tail_.size() - kTailBytes);
    if (log_ != nullptr) {
      std::fwrite(s.data(), 1, s.size(), log_);
      std::fflush(log_);
    }
  }

  void handle_line(std::string_view line) {
    std::size_t b = line.find_first_not_of(" \t\r");
    if (b != std::string_view::npos && line[b] == '{') {
      nlohmann::json ev = nlohmann::json::parse(line, nullptr, false);
      if (!ev.is_discarded() && ev.is_object() && ev.contains("event") && ev["event"].is_string()) {
        event(ev);
        return;
      }
    }
    text(std::string(line) + "\n");
  }

  static double num(const nlohmann::json& ev, const char* key) {
    auto it = ev.find(key);
    return it != ev.end() && it->is_number() ? it->get<double>() : std::nan("");
  }

  void event(const nlohmann::json& ev) {
    const std::string kind = ev["event"].get<std::string>();
    if (kind == "result") {
      got_result = true;
      result_status = ev.value("status", std::string());
      out.message = ev.contains("message") && ev["message"].is_string()
                        ? ev["message"].get<std::string>()
                        : std::string();
      if (ev.contains("metrics") && ev["metrics"].is_object()) out.metrics = ev["metrics"];
      if (ev.contains("provenance") && ev["provenance"].is_object())
        out.provenance = ev["provenance"];
      if (ev.contains("outputs") && ev["outputs"].is_object()) out.outputs = ev["outputs"];
      return;
    }
    if (kind == "epoch") {
      EpochRecord e;
      e.cell_id = cell_id_;
      e.epoch =
          ev.contains("epoch") && ev["epoch"].is_number_integer() ? ev["epoch"].get<int>() : 0;
      e.train_loss = num(ev, "train_loss");
      e.test_accuracy = num(ev, "test_accuracy");
      e.seconds = num(ev, "seconds");
      e.peak_rss_mb = num(ev, "peak_rss_mb");
      e.samples_per_s = num(ev, "samples_per_s");
      // A repeated epoch number replaces the earlier one: the row's key is (cell, epoch).
      bool replaced = false;
      for (auto& old : out.epochs)
        if (old.epoch == e.epoch) {
          old = e;
          replaced = true;
        }
      if (!replaced) out.epochs.push_back(e);
    }
    if (obs_.on_event) obs_.on_event(ev);
  }

  std::string cell_id_;
  const CellObserver& obs_;
  std::string line_, tail_;
  std::FILE* log_ = nullptr;
};

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Reads what is there; returns false at EOF or on a hard error.
bool drain(int fd, Outcome& o, bool is_stdout) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      if (is_stdout)
        o.stdout_bytes(buf, static_cast<std::size_t>(n));
      else
        o.stderr_bytes(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string fmt_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", s);
  return buf;
}

}  // namespace

// Replaces bytes that are not valid UTF-8 with '?', so that a child's binary noise never makes a
// JSON dump throw later.
std::string utf8_sanitize(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80         ? 1
                      : (c >> 5) == 6  ? 2
                      : (c >> 4) == 14 ? 3
                      : (c >> 3) == 30 ? 4
                                       : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k)
      ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

void emit_event(const nlohmann::json& event) {
  static std::mutex m;
  std::string line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::lock_guard<std::mutex> lock(m);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

CellOutcome cell_execute(const std::string& cell_id, const std::vector<std::string>& argv,
                         double timeout_s, const CellObserver& observer,
                         const std::string& log_file) {
  Outcome o(cell_id, observer, log_file);
  o.out.started_at = utc_now_iso8601();
  const double start = now_s();
  auto finish = [&](CellOutcome& r) {
    r.elapsed_s = now_s() - start;
    r.finished_at = utc_now_iso8601();
    r.message = utf8_sanitize(r.message);
    r.stderr_tail = utf8_sanitize(o.tail());
    return r;
  };
  if (argv.empty() || argv[0].empty()) {
    o.out.status = "failed";
    o.out.message = "no command to run the cell";
    return finish(o.out);
  }

  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::string exec_fail = "crossdl: cannot execute " + argv[0] + ": ";

  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    o.out.status = "failed";
    o.out.message = std::string("pipe: ") + std::strerror(errno);
    return finish(o.out);
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    o.out.status = "failed";
    o.out.message = std::string("pipe: ") + std::strerror(errno);
    close(out_pipe[0]);
    close(out_pipe[1]);
    return finish(o.out);
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    setpgid(0, 0);
    // A runner killed with SIGKILL cannot kill its cell; the kernel does it for us, so that a
    // resumed study never races an orphan writing into the same cell folder.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP, SIGQUIT}) sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    execv(cargv[0], cargv.data());
    int e = errno;
    ssize_t ignored = write(2, exec_fail.data(), exec_fail.size());
    const char* why = strerror(e);
    ignored = write(2, why, std::strlen(why));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(127);
  }
  if (devnull >= 0) close(devnull);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (pid < 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    o.out.status = "failed";
    o.out.message = std::string("fork: ") + std::strerror(errno);
    return finish(o.out);
  }
  // Also here: whichever of parent and child runs first, the group exists before any kill(-pid).
  setpgid(pid, pid);
  fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
  fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);

  const double deadline = start + timeout_s;
  bool out_open = true, err_open = true, exited = false, timed_out = false;
  int stop_signal = 0;
  double drain_until = 0;
  for (;;) {
    if (g_study_stop_signal != 0 && !exited) {
      stop_signal = g_study_stop_signal;
      kill(-pid, SIGKILL);
      break;
    }
    double now = now_s();
    if (!exited && now >= deadline) {
      timed_out = true;
      kill(-pid, SIGKILL);
      break;
    }
    if (!exited) {
      // WNOWAIT keeps the child a zombie, so its pid still names the group while we kill what
      // it left behind (background processes holding the pipes open).
      siginfo_t info{};
      if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid) {
        exited = true;
        kill(-pid, SIGKILL);
        drain_until = now + 2.0;
      }
    }
    if (exited && ((!out_open && !err_open) || now >= drain_until)) break;

    pollfd fds[2];
    nfds_t nfds = 0;
    if (out_open) fds[nfds++] = {out_pipe[0], POLLIN, 0};
    if (err_open) fds[nfds++] = {err_pipe[0], POLLIN, 0};
    double limit = exited ? drain_until : deadline;
    int wait_ms = static_cast<int>(std::ceil(std::min(0.2, std::max(0.0, limit - now)) * 1000));
    int pr = poll(nfds > 0 ? fds : nullptr, nfds, wait_ms);
    if (pr > 0) {
      for (nfds_t i = 0; i < nfds; ++i) {
        if (fds[i].revents == 0) continue;
        bool is_out = fds[i].fd == out_pipe[0];
        bool open = drain(fds[i].fd, o, is_out);
        if (!open) {
          if (is_out) {
            out_open = false;
            o.stdout_eof();
          } else {
            err_open = false;
          }
        }
      }
    }
    if (observer.on_tick) observer.on_tick();
  }

  struct rusage ru {};
  int wstatus = 0;
  while (wait4(pid, &wstatus, 0, &ru) < 0 && errno == EINTR) {
  }
  // Whatever is still buffered in the pipes (the writers are dead now).
  if (out_open) drain(out_pipe[0], o, true);
  o.stdout_eof();
  if (err_open) drain(err_pipe[0], o, false);
  close(out_pipe[0]);
  close(err_pipe[0]);

  CellOutcome& r = o.out;
  r.child_peak_rss_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;
  const double elapsed = now_s() - start;
  if (stop_signal != 0) {
    r.status = "interrupted";
    r.message =
        "interrupted by " + signal_name(stop_signal) + " after " + fmt_seconds(elapsed) + " s";
  } else if (timed_out) {
    r.status = "timeout";
    r.message = "timed out after " + fmt_seconds(elapsed) + " s (timeout_s " +
                fmt_seconds(timeout_s) + "); its process group was killed";
  } else if (WIFSIGNALED(wstatus)) {
    r.status = "crashed";
    r.signal = WTERMSIG(wstatus);
    r.signal_name = signal_name(*r.signal);
    std::string after = o.got_result ? " after reporting '" + o.result_status + "'" : "";
    r.message = "killed by signal " + std::to_string(*r.signal) + " (" + r.signal_name + ")" +
                after + (r.message.empty() ? "" : ": " + r.message);
  } else {
    r.exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    if (!o.got_result) {
      r.status = "failed";
      r.message = "exited with code " + std::to_string(*r.exit_code) + " without a result";
    } else if (o.result_status != "ok" && o.result_status != "failed" &&
               o.result_status != "skipped") {
      r.status = "failed";
      r.message = "reported an unknown status '" + o.result_status + "': " + r.message;
    } else if (o.result_status == "ok" && *r.exit_code != 0) {
      r.status = "failed";
      r.message = "exited with code " + std::to_string(*r.exit_code) + " after reporting ok" +
                  (r.message.empty() ? "" : ": " + r.message);
    } else {
      r.status = o.result_status;
    }
  }
  return finish(r);
}

}  // namespace crossdl
