#include "node_helper.h"

#include "crossdl/procfs.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#ifndef CROSSDL_SOURCE_DIR
#define CROSSDL_SOURCE_DIR "."
#endif

extern char** environ;

namespace crossdl::node {

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1000 * 60 * 60));
}

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

// Writing to a helper that has died raises SIGPIPE, which would kill crossdl: block it on this
// thread for the write and swallow the one it left pending, without touching the process-wide
// disposition that the rest of crossdl (and its libraries) may rely on.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&before_);
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~SigpipeBlock() {
    if (!sigismember(&before_, SIGPIPE)) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE)) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        const timespec zero{0, 0};
        sigtimedwait(&set, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t old_;
  sigset_t before_;
};

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

void record_child_group(pid_t pgid, const char* kind) {
  const char* file = std::getenv("CROSSDL_CHILD_GROUPS_FILE");
  if (file == nullptr || *file == '\0' || pgid <= 1) return;
  // One short append per line: O_APPEND keeps lines whole when several writers share the file.
  const int fd = ::open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  // The leader's start time lets the reader tell the group from a later one with the same id.
  const std::string line =
      std::to_string(pgid) + " " + std::to_string(process_start_ticks(pgid)) + " " + kind + "\n";
  (void)!::write(fd, line.data(), line.size());
  ::close(fd);
}

std::string script_path(const char* env_var, const std::string& file_name) {
  if (const char* e = std::getenv(env_var); e != nullptr && *e != '\0') return e;
  return std::string(CROSSDL_SOURCE_DIR) + "/web/" + file_name;
}

std::string package_dir(const std::string& script, const std::string& package) {
  return (std::filesystem::path(script).parent_path() / "node_modules" / package).string();
}

std::string find_node() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  std::string p = path;
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    const std::string dir = end > start ? p.substr(start, end - start) : ".";
    const std::string cand = dir + "/node";
    if (::access(cand.c_str(), X_OK) == 0 && !std::filesystem::is_directory(cand)) return cand;
    start = end + 1;
  }
  return "";
}

std::chrono::milliseconds reply_timeout(const char* env_var) {
  if (const char* e = std::getenv(env_var); e != nullptr && *e != '\0') {
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    if (end != e && *end == '\0' && v > 0) return std::chrono::milliseconds(v);
  }
  return std::chrono::milliseconds(120000);
}

std::string base64_encode(const void* data, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < n; i += 3) {
    const unsigned v = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < n) {
    unsigned v = b[i] << 16;
    if (i + 1 < n) v |= b[i + 1] << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

bool base64_decode(const std::string& text, std::vector<unsigned char>& out, std::string& why) {
  static const std::array<int, 256> rev = [] {
    std::array<int, 256> r{};
    r.fill(-1);
    for (int i = 0; i < 64; ++i) r[static_cast<unsigned char>(kAlphabet[i])] = i;
    return r;
  }();
  if (text.size() % 4 != 0) {
    why = "base64 length " + std::to_string(text.size()) + " is not a multiple of 4";
    return false;
  }
  out.clear();
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const unsigned char c = static_cast<unsigned char>(text[i + k]);
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0 || rev[c] < 0) {
        why = "bad base64 character at offset " + std::to_string(i + k);
        return false;
      }
      v[k] = rev[c];
    }
    const unsigned w = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out.push_back(static_cast<unsigned char>(w >> 16));
    if (pad < 2) out.push_back(static_cast<unsigned char>((w >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<unsigned char>(w & 0xff));
  }
  return true;
}

HelperProcess::HelperProcess(HelperSpec spec) : spec_(std::move(spec)) {}

HelperProcess::~HelperProcess() {
  stop(true);
}

Status HelperProcess::start() {
  const std::string node = find_node();
  if (node.empty()) return Status::failed(spec_.label + ": no `node` executable on PATH");
  const std::string& script = spec_.script;
  if (!std::filesystem::exists(script))
    return Status::failed(spec_.label + ": the helper script " + script + " is missing");

  int pin[2], pout[2], perr[2];
  if (::pipe2(pin, O_CLOEXEC) != 0) return Status::failed(spec_.label + errno_text(": pipe"));
  if (::pipe2(pout, O_CLOEXEC) != 0) {
    ::close(pin[0]);
    ::close(pin[1]);
    return Status::failed(spec_.label + errno_text(": pipe"));
  }
  if (::pipe2(perr, O_CLOEXEC) != 0) {
    for (int fd : {pin[0], pin[1], pout[0], pout[1]}) ::close(fd);
    return Status::failed(spec_.label + errno_text(": pipe"));
  }
  // fork + exec rather than posix_spawn: the child also asks for SIGTERM when crossdl dies
  // (PR_SET_PDEATHSIG), so that a crossdl child killed from outside (a study cell's timeout kills
  // only the cell's group) does not leave the helper, in its own group, running: the web helper
  // closes its browser on SIGTERM. Between fork and exec only async-signal-safe calls.
  std::string arg0 = "node", arg1 = script;
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Its own process group, so that killing the helper kills whatever it started with it.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // crossdl died before the request took effect
    ::dup2(pin[0], 0);
    ::dup2(pout[1], 1);
    ::dup2(perr[1], 2);
    // The helper must die with default SIGPIPE/SIGTERM handling whatever crossdl's own is.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    ::sigaction(SIGTERM, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(node.c_str(), argv, environ);
    ::_exit(127);
  }
  const int rc = pid < 0 ? errno : 0;
  // Also here: whichever of parent and child runs first, the group exists before any kill(-pid).
  if (pid > 0) ::setpgid(pid, pid);
  ::close(pin[0]);
  ::close(pout[1]);
  ::close(perr[1]);
  if (rc != 0) {
    for (int fd : {pin[1], pout[0], perr[0]}) ::close(fd);
    return Status::failed(spec_.label + ": cannot start " + node + ": " + std::strerror(rc));
  }
  pid_ = pid;
  record_child_group(pid, "helper");
  in_ = pin[1];
  out_ = pout[0];
  err_ = perr[0];
  for (int fd : {in_, out_, err_}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return Status::ok();
}

void HelperProcess::drain_stderr() {
  if (err_ < 0) return;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(err_, buf, sizeof buf);
    if (n > 0) {
      err_buf_.append(buf, static_cast<std::size_t>(n));
      // Only the tail is ever shown; keep memory bounded for a chatty helper.
      if (err_buf_.size() > 16384) err_buf_.erase(0, err_buf_.size() - 8192);
      continue;
    }
    if (n == 0) {
      ::close(err_);
      err_ = -1;
    }
    return;
  }
}

std::string HelperProcess::stderr_tail() const {
  std::string t = err_buf_;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  if (t.size() > 2000) t = "..." + t.substr(t.size() - 2000);
  return t;
}

Status HelperProcess::fail(const std::string& what) {
  drain_stderr();
  stop(false);
  const std::string tail = stderr_tail();
  return Status::failed(spec_.label + " helper: " + what +
                        (tail.empty() ? "" : " (helper stderr: " + tail + ")"));
}

void HelperProcess::stop(bool gracefully) {
  if (pid_ > 0 && before_stop_) before_stop_(pid_);
  if (in_ >= 0) {
    ::close(in_);  // EOF: the helper releases its session and exits
    in_ = -1;
  }
  if (pid_ > 0) {
    if (gracefully) {
      const auto until = Clock::now() + std::chrono::seconds(3);
      while (Clock::now() < until) {
        // WNOWAIT: an exited helper stays a zombie, so its pid (the group id) cannot be reused
        // before the group is killed below.
        siginfo_t info{};
        const int r = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
        if ((r == 0 && info.si_pid == pid_) || (r < 0 && errno == ECHILD)) break;
        drain_stderr();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    // The whole group: the helper and anything it started that did not leave the group.
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  drain_stderr();
  for (int* fd : {&out_, &err_})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

Status HelperProcess::write_all(const std::string& bytes, Clock::time_point deadline) {
  SigpipeBlock guard;
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(in_, bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EPIPE) return fail("exited before reading the request");
    if (n < 0 && errno != EAGAIN) return fail(errno_text("write"));
    // The pipe is full: wait until the helper reads, keeping its stderr pipe from filling too.
    pollfd fds[2] = {{in_, POLLOUT, 0}, {err_, POLLIN, 0}};
    const int left = ms_left(deadline);
    if (left == 0) return fail("did not read the request within the timeout; killed");
    if (::poll(fds, err_ >= 0 ? 2 : 1, left) < 0 && errno != EINTR) return fail(errno_text("poll"));
    if (err_ >= 0 && (fds[1].revents & (POLLIN | POLLHUP))) drain_stderr();
  }
  return Status::ok();
}

Status HelperProcess::read_line(std::string& line, Clock::time_point deadline) {
  for (;;) {
    const std::size_t nl = out_buf_.find('\n');
    if (nl != std::string::npos) {
      line = out_buf_.substr(0, nl);
      out_buf_.erase(0, nl + 1);
      return Status::ok();
    }
    pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
    const int left = ms_left(deadline);
    if (left == 0)
      return fail("no reply within " + std::to_string(timeout_.count()) + " ms; killed (" +
                  spec_.timeout_env + " sets the limit)");
    const int r = ::poll(fds, err_ >= 0 ? 2 : 1, left);
    if (r < 0 && errno != EINTR) return fail(errno_text("poll"));
    if (err_ >= 0 && (fds[1].revents & (POLLIN | POLLHUP))) drain_stderr();
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[65536];
      for (;;) {
        const ssize_t n = ::read(out_, buf, sizeof buf);
        if (n > 0) {
          out_buf_.append(buf, static_cast<std::size_t>(n));
          continue;
        }
        if (n == 0) {
          std::string how = "closed its stdout";
          // Give the exit a moment to be reapable so that the message can say how it ended.
          // WNOWAIT keeps the zombie (and so its group id) until fail() kills the group.
          for (int i = 0; i < 100; ++i) {
            siginfo_t info{};
            if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                info.si_pid == pid_) {
              if (info.si_code == CLD_EXITED)
                how = "exited with status " + std::to_string(info.si_status);
              else
                how = "was killed by signal " + std::to_string(info.si_status);
              break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          return fail(how + " before replying");
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        return fail(errno_text("read"));
      }
    }
  }
}

Status HelperProcess::call(nlohmann::json request, nlohmann::json& reply,
                           std::chrono::milliseconds timeout) {
  if (!alive())
    return Status::failed(spec_.label + " helper: not running (an earlier call failed)");
  const long long id = next_id_++;
  request["id"] = id;
  timeout_ = timeout;
  const auto deadline = Clock::now() + timeout;
  if (Status s = write_all(request.dump() + "\n", deadline); !s.is_ok()) return s;
  std::string line;
  if (Status s = read_line(line, deadline); !s.is_ok()) return s;
  try {
    reply = nlohmann::json::parse(line);
  } catch (const std::exception& e) {
    const std::string shown = line.size() > 200 ? line.substr(0, 200) + "..." : line;
    return fail(std::string("replied with something that is not JSON (") + e.what() +
                "): " + shown);
  }
  if (!reply.is_object() || !reply.contains("ok") || !reply["ok"].is_boolean())
    return fail("reply without a boolean \"ok\": " + reply.dump().substr(0, 200));
  if (!reply.contains("id") || !reply["id"].is_number_integer() ||
      reply["id"].get<long long>() != id)
    return fail("reply id " + (reply.contains("id") ? reply["id"].dump() : std::string("missing")) +
                " does not answer request " + std::to_string(id));
  if (!reply["ok"].get<bool>()) {
    const std::string err = reply.contains("error") && reply["error"].is_string()
                                ? reply["error"].get<std::string>()
                                : reply.dump();
    return Status::failed(spec_.library + ": " + err);
  }
  return Status::ok();
}

}  // namespace crossdl::node
