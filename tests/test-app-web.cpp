// The web runtimes (docs/web-protocol.md): names with a variant (`tfjs:wasm@chromium`) in the
// registry and the CLI, the web target table, and the web helper session (hello + start, errors,
// unsupported replies, and that no browser process outlives a session), the session against a
// scripted stand-in helper so that it is tested apart from the real one.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "app_support.h"
#include "crossdl/adapter.h"
#include "crossdl/onnx_io.h"
#include "crossdl/runtime.h"
#include "crossdl/zoo.h"
#include "support.h"

#if __has_include("web_session.h")
#include "web_session.h"
#include "web_target.h"
#define CROSSDL_HAVE_WEB_SESSION 1
#endif

using namespace crossdl;
namespace fs = std::filesystem;

namespace {

std::string lenet1_file(const std::string& dir) {
  const ir::Model m = zoo::build("lenet1", {{1, 28, 28}, DType::F32, 10, 0});
  const std::string path = dir + "/lenet1.onnx";
  onnx_write(path, m, init_weights(m, 3));
  return path;
}

TEST(WebNames, SplitBaseAndVariant) {
  EXPECT_EQ(split_backend_name("torch").base, "torch");
  EXPECT_EQ(split_backend_name("torch").variant, "");
  EXPECT_EQ(split_backend_name("tfjs:wasm@chromium").base, "tfjs");
  EXPECT_EQ(split_backend_name("tfjs:wasm@chromium").variant, ":wasm@chromium");
  EXPECT_EQ(split_backend_name("tfjs-train@firefox").base, "tfjs-train");
  EXPECT_EQ(split_backend_name("tfjs-train@firefox").variant, "@firefox");
  EXPECT_EQ(split_backend_name("opencv-darknet").base, "opencv-darknet");
}

TEST(WebNames, RegistryKnowsTheWebFamilies) {
  for (const char* n : {"tfjs", "ort-web", "tflite-web", "tfjs-train"}) {
    const BackendEntry* e = find_backend(n);
    ASSERT_NE(e, nullptr) << n;
    EXPECT_FALSE(e->variants.empty()) << n;
  }
  EXPECT_EQ(find_backend("tfjs-train")->kind, "framework");
  EXPECT_EQ(find_backend("ort-web")->kind, "runtime");
  ASSERT_NE(find_backend("tfjs:wasm@chromium"), nullptr);
  EXPECT_EQ(find_backend("tfjs:wasm@chromium")->name, "tfjs");
  EXPECT_EQ(find_backend("ort-web@firefox")->name, "ort-web");
  EXPECT_EQ(find_backend("nosuch:wasm@chromium"), nullptr);
}

TEST(WebNames, AdaptersWithoutVariantsRefuseOne) {
  std::string why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  const std::string rt = test::input_error_of([] { (void)make_runtime("torch:cpu"); });
  EXPECT_NE(rt.find("torch: no variants (got ':cpu')"), std::string::npos) << rt;
  const std::string fw = test::input_error_of([] { (void)make_framework("torch@chromium"); });
  EXPECT_NE(fw.find("torch: no variants (got '@chromium')"), std::string::npos) << fw;
  EXPECT_NO_THROW((void)make_runtime("torch"));
  const std::string unknown = test::input_error_of([] { (void)make_runtime("pytorch:cpu"); });
  EXPECT_NE(unknown.find("unknown runtime 'pytorch:cpu'"), std::string::npos) << unknown;
}

TEST(WebNames, CliRefusesABadVariantWithExit2) {
  std::string why;
  if (!test::runtime_built("torch", &why)) GTEST_SKIP() << why;
  const std::string dir = test::scratch_dir("web-badname");
  const std::string err = dir + "/err.txt";
  // A valid model: the runtime name is then what is refused, before any runtime runs.
  const std::string model_arg = lenet1_file(dir);
  for (const std::string name :
       {"torch:gpu", "tfjs:cuda@chromium", "ort-web:wasm@safari", "tflite-web:webgl@chromium"}) {
    SCOPED_TRACE(name);
    const auto run =
        test::run_cli("compare --model " + model_arg + " --limit 8 --runtimes torch," + name, err);
    EXPECT_EQ(run.rc, 2);
    std::ifstream f(err);
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    // The message names what is wrong: the whole name or, for an adapter without variants, the
    // variant it got.
    EXPECT_NE(text.find(split_backend_name(name).variant), std::string::npos) << text;
  }
}

#ifdef CROSSDL_HAVE_WEB_SESSION

TEST(WebTarget, DefaultsAndFullNames) {
  using web::parse_web_target;
  EXPECT_EQ(parse_web_target("tfjs", "").name(), "tfjs:cpu@node");
  EXPECT_EQ(parse_web_target("tfjs", "@firefox").name(), "tfjs:cpu@firefox");
  EXPECT_EQ(parse_web_target("tfjs", ":wasm").name(), "tfjs:wasm@node");
  EXPECT_EQ(parse_web_target("tfjs", ":webgl@chromium").name(), "tfjs:webgl@chromium");
  EXPECT_EQ(parse_web_target("ort-web", "").name(), "ort-web:wasm@chromium");
  EXPECT_EQ(parse_web_target("ort-web", "@node").name(), "ort-web:wasm@node");
  EXPECT_EQ(parse_web_target("tflite-web", "").name(), "tflite-web:wasm@chromium");
  EXPECT_EQ(parse_web_target("tfjs-train", "").name(), "tfjs-train:cpu@chromium");
  EXPECT_EQ(parse_web_target("tfjs-train", "@chromium").name(), "tfjs-train:cpu@chromium");
  const web::WebTarget t = parse_web_target("ort-web", ":webgpu@firefox");
  EXPECT_EQ(t.runtime, "ort-web");
  EXPECT_EQ(t.backend, "webgpu");
  EXPECT_EQ(t.platform, "firefox");
  EXPECT_TRUE(t.browser());
}

TEST(WebTarget, BadNamesListTheValidOnes) {
  using web::parse_web_target;
  auto err = [](const std::string& rt, const std::string& v) {
    return test::input_error_of([&] { (void)parse_web_target(rt, v); });
  };
  std::string e = err("tfjs", ":cuda@chromium");
  EXPECT_NE(e.find("tfjs:cuda@chromium"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown backend 'cuda'"), std::string::npos) << e;
  EXPECT_NE(e.find("cpu, wasm, webgl, webgpu"), std::string::npos) << e;
  e = err("tflite-web", ":webgl");
  EXPECT_NE(e.find("tflite-web backends: wasm"), std::string::npos) << e;
  e = err("ort-web", "@safari");
  EXPECT_NE(e.find("unknown platform 'safari'"), std::string::npos) << e;
  EXPECT_NE(e.find("chromium, firefox, node"), std::string::npos) << e;
  EXPECT_NE(err("ort-web", ":").find("unknown backend ''"), std::string::npos);
  EXPECT_NE(err("ort-web", "@").find("unknown platform ''"), std::string::npos);
  EXPECT_NE(err("ort-web", ":wasm@chromium@firefox").find("unknown platform"), std::string::npos);
  EXPECT_NE(err("opencv", "").find("not a web runtime"), std::string::npos);
}

TEST(WebTarget, NodeCombinationsTheLibrariesCannotRun) {
  using web::parse_web_target;
  using web::web_target_unsupported;
  EXPECT_EQ(web_target_unsupported(parse_web_target("tfjs", "")), "");
  EXPECT_EQ(web_target_unsupported(parse_web_target("tfjs", ":wasm@node")), "");
  EXPECT_EQ(web_target_unsupported(parse_web_target("ort-web", "@node")), "");
  EXPECT_EQ(web_target_unsupported(parse_web_target("tfjs", ":webgpu@firefox")), "");
  EXPECT_NE(
      web_target_unsupported(parse_web_target("tflite-web", "@node")).find("only in a browser"),
      std::string::npos);
  EXPECT_NE(web_target_unsupported(parse_web_target("tfjs", ":webgl@node")).find("no WebGL"),
            std::string::npos);
  EXPECT_NE(web_target_unsupported(parse_web_target("ort-web", ":webgpu@node")).find("no WebGPU"),
            std::string::npos);
}

// ---- the session, against a scripted stand-in for web/web-helper.mjs --------------------------

// Whether a process exists (a zombie counts as gone: it runs nothing).
bool process_running(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return false;
  const std::size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

bool gone_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (!process_running(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !process_running(pid);
}

// A helper that answers like web-helper.mjs and, for a browser platform, starts a detached
// `sleep` as its "browser" (in a group of its own, as puppeteer does) and reports its pid.
// $FAKE_MODE picks a misbehaviour: "hang-run" never answers `run`, "hang-load" never answers
// `load`; "unsupported-start" refuses `start`; "ignore-eof" keeps running when stdin closes.
constexpr const char* kFakeHelper = R"JS(
import { createInterface } from 'node:readline';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
const mode = process.env.FAKE_MODE || '';
if (process.env.FAKE_PIDFILE) writeFileSync(process.env.FAKE_PIDFILE + '.helper', String(process.pid));
let browser = null;
const send = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const req = JSON.parse(line);
  const id = req.id;
  if (req.op === 'hello')
    return send({ id, ok: true, protocol: 1, node_version: process.version,
                  versions: { '@tensorflow/tfjs': '4.22.0', 'onnxruntime-web': '1.30.0' } });
  if (req.op === 'start') {
    if (mode === 'unsupported-start')
      return send({ id, ok: false, unsupported: true, error: 'no WebGPU in this browser' });
    let pid = null;
    if (req.platform !== 'node') {
      browser = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
      pid = browser.pid;
      if (process.env.FAKE_PIDFILE) writeFileSync(process.env.FAKE_PIDFILE, String(pid));
    }
    return send({ id, ok: true, browser: 'Fakium 1.0', backend: req.backend,
                  device: 'cpu (fake)', cross_origin_isolated: true, timer_resolution_ms: 0.005,
                  threads: req.threads, ms: 1.5, browser_pid: pid });
  }
  if (req.op === 'memory')
    return send({ id, ok: true, pss_mb: 120.5, peak_pss_mb: 130.25, processes: 4,
                  js_heap_mb: null, js_heap_source: null });
  if (req.op === 'layers')
    return send({ id, ok: false, unsupported: true, error: 'this artefact exposes no layers' });
  if (req.op === 'load') {
    if (mode === 'hang-load') return;
    return send({ id, ok: false, error: 'load: this stand-in runs no model' });
  }
  if (req.op === 'run') {
    if (mode === 'hang-run') return;
    return send({ id, ok: false, error: 'run: the page threw' });
  }
  send({ id, ok: false, error: `unknown op ${req.op}` });
});
rl.on('close', () => {
  if (mode === 'ignore-eof') { setInterval(() => {}, 1000); return; }
  if (browser) browser.kill('SIGKILL');
  process.exit(0);
});
)JS";

class WebSessionFake : public ::testing::Test {
 protected:
  void SetUp() override {
    if (node::find_node().empty()) GTEST_SKIP() << "no `node` on PATH";
    dir_ = test::scratch_dir("web-session-fake");
    script_ = dir_ + "/fake-helper.mjs";
    test::write_text(script_, kFakeHelper);
    pidfile_ = dir_ + "/browser.pid";
    fs::remove(pidfile_);
    setenv("CROSSDL_WEB_HELPER", script_.c_str(), 1);
    setenv("FAKE_PIDFILE", pidfile_.c_str(), 1);
    unsetenv("FAKE_MODE");
  }
  void TearDown() override {
    unsetenv("CROSSDL_WEB_HELPER");
    unsetenv("FAKE_PIDFILE");
    unsetenv("FAKE_MODE");
    unsetenv("CROSSDL_WEB_TIMEOUT_MS");
    if (browser_pid() > 0) ::kill(-browser_pid(), SIGKILL);  // never leave one behind
  }
  pid_t browser_pid() const {
    std::ifstream f(pidfile_);
    long long p = -1;
    return (f >> p) ? static_cast<pid_t>(p) : -1;
  }
  std::string dir_, script_, pidfile_;
};

TEST_F(WebSessionFake, StartReplyIsKeptAndTheBrowserDiesWithTheSession) {
  pid_t browser = -1;
  {
    web::WebSession s(web::parse_web_target("tfjs", ":wasm@chromium"));
    if (!fs::exists(web::browser_executable("chromium")))
      GTEST_SKIP() << "no " << web::browser_executable("chromium");
    const Status st = s.open(dir_, 1);
    ASSERT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(s.started().browser, "Fakium 1.0");
    EXPECT_EQ(s.started().backend, "wasm");
    EXPECT_EQ(s.started().device, "cpu (fake)");
    EXPECT_TRUE(s.started().cross_origin_isolated);
    EXPECT_DOUBLE_EQ(s.started().timer_resolution_ms, 0.005);
    browser = s.started().browser_pid;
    EXPECT_EQ(browser, browser_pid());
    EXPECT_TRUE(process_running(browser));
    EXPECT_EQ(s.hello_reply()["versions"]["@tensorflow/tfjs"], "4.22.0");
    web::WebMemory m;
    ASSERT_TRUE(s.memory(m).is_ok());
    EXPECT_DOUBLE_EQ(m.pss_mb, 120.5);
    EXPECT_DOUBLE_EQ(m.peak_pss_mb, 130.25);
    EXPECT_EQ(m.processes, 4);
    EXPECT_LT(m.js_heap_mb, 0);  // null: none reported
    // An unsupported reply is a skip and leaves the session open.
    nlohmann::json reply;
    const Status un = s.call({{"op", "layers"}}, reply);
    EXPECT_EQ(un.code(), Status::Code::Unsupported);
    EXPECT_NE(un.message().find("exposes no layers"), std::string::npos) << un.message();
    EXPECT_TRUE(s.is_open());
  }
  EXPECT_TRUE(gone_within(browser, std::chrono::seconds(5)));
}

TEST_F(WebSessionFake, AnErrorReplyClosesTheSessionAndKillsTheBrowser) {
  if (!fs::exists(web::browser_executable("firefox")))
    GTEST_SKIP() << "no " << web::browser_executable("firefox");
  setenv("FAKE_MODE", "ignore-eof", 1);  // only the group kill can end this one
  web::WebSession s(web::parse_web_target("ort-web", "@firefox"));
  ASSERT_TRUE(s.open(dir_, 1).is_ok());
  const pid_t browser = s.started().browser_pid;
  nlohmann::json reply;
  const Status st = s.call({{"op", "run"}}, reply);
  EXPECT_EQ(st.code(), Status::Code::Failed);
  EXPECT_NE(st.message().find("the page threw"), std::string::npos) << st.message();
  EXPECT_FALSE(s.is_open());
  EXPECT_TRUE(gone_within(browser, std::chrono::seconds(5)));
  const Status again = s.call({{"op", "memory"}}, reply);
  EXPECT_EQ(again.code(), Status::Code::Failed);
}

TEST_F(WebSessionFake, ATimeoutKillsHelperAndBrowser) {
  if (!fs::exists(web::browser_executable("chromium")))
    GTEST_SKIP() << "no " << web::browser_executable("chromium");
  setenv("FAKE_MODE", "hang-run", 1);
  web::WebSession s(web::parse_web_target("tfjs", "@chromium"));
  ASSERT_TRUE(s.open(dir_, 1).is_ok());
  const pid_t browser = s.started().browser_pid;
  setenv("CROSSDL_WEB_TIMEOUT_MS", "300", 1);
  nlohmann::json reply;
  const Status st = s.call({{"op", "run"}}, reply);
  EXPECT_EQ(st.code(), Status::Code::Failed);
  EXPECT_NE(st.message().find("no reply within 300 ms"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("CROSSDL_WEB_TIMEOUT_MS"), std::string::npos) << st.message();
  EXPECT_TRUE(gone_within(browser, std::chrono::seconds(5)));
}

TEST_F(WebSessionFake, UnsupportedStartAndStaticCombinationsAreSkips) {
  setenv("FAKE_MODE", "unsupported-start", 1);
  web::WebSession s(web::parse_web_target("tfjs", ":wasm@node"));
  const Status st = s.open(dir_, 1);
  EXPECT_EQ(st.code(), Status::Code::Unsupported);
  EXPECT_NE(st.message().find("no WebGPU in this browser"), std::string::npos) << st.message();
  web::WebSession t(web::parse_web_target("tflite-web", "@node"));
  const Status su = t.open(dir_, 1);
  EXPECT_EQ(su.code(), Status::Code::Unsupported);
  EXPECT_NE(su.message().find("only in a browser"), std::string::npos) << su.message();
}

TEST_F(WebSessionFake, AMissingHelperIsAFailureNamingIt) {
  setenv("CROSSDL_WEB_HELPER", (dir_ + "/missing.mjs").c_str(), 1);
  web::WebSession s(web::parse_web_target("ort-web", "@node"));
  const Status st = s.open(dir_, 1);
  EXPECT_EQ(st.code(), Status::Code::Failed);
  EXPECT_NE(st.message().find("missing.mjs"), std::string::npos) << st.message();
  std::string why;
  EXPECT_EQ(web::web_probe("ort-web", why), "");
  EXPECT_NE(why.find("missing.mjs"), std::string::npos) << why;
}

// A compare that must kill its runtime child (here: a helper that never answers `load`) also
// kills the helper's and the browser's process groups, which the child's own group kill misses.
TEST_F(WebSessionFake, ACompareTimeoutLeavesNoHelperOrBrowser) {
  std::string why;
  if (!test::runtime_built("torch", &why) || !test::runtime_built("tfjs", &why))
    GTEST_SKIP() << why;
  if (!fs::exists(web::browser_executable("chromium")))
    GTEST_SKIP() << "no " << web::browser_executable("chromium");
  setenv("FAKE_MODE", "hang-load", 1);
  unsetenv("CROSSDL_WEB_TIMEOUT_MS");
  const std::string model = lenet1_file(dir_);
  const auto run = test::run_cli("compare --model " + model +
                                 " --runtimes torch,tfjs:cpu@chromium --limit 8 --latency-runs 2 "
                                 "--timeout 4 --json");
  unsetenv("FAKE_MODE");
  const nlohmann::json doc = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << run.out;
  ASSERT_EQ(doc["runtimes"].size(), 2u);
  EXPECT_EQ(doc["runtimes"][1]["status"], "timeout") << doc["runtimes"][1].dump();
  const pid_t browser = browser_pid();
  std::ifstream hf(pidfile_ + ".helper");
  long long helper = -1;
  ASSERT_TRUE(hf >> helper) << "the stand-in helper never started";
  ASSERT_GT(browser, 0) << "the stand-in browser never started";
  EXPECT_TRUE(gone_within(browser, std::chrono::seconds(5)));
  EXPECT_TRUE(gone_within(static_cast<pid_t>(helper), std::chrono::seconds(5)));
}

// ---- the real helper, in real browsers ---------------------------------------------------------

// Processes whose command line mentions `marker` (the helper puts the browser's profile under
// $TMPDIR, so a per-test TMPDIR marks every browser process the test started).
std::vector<pid_t> processes_mentioning(const std::string& marker) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (cmd.find(marker) != std::string::npos && process_running(pid)) out.push_back(pid);
  }
  return out;
}

// "pid (comm) pgid ppid" of each, for a failure message.
std::string describe(const std::vector<pid_t>& pids) {
  std::string out;
  for (pid_t p : pids) {
    std::ifstream f("/proc/" + std::to_string(p) + "/stat");
    std::string stat;
    std::getline(f, stat);
    out += "\n  " + stat.substr(0, 80);
  }
  return out;
}

bool none_mentioning_within(const std::string& marker, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!processes_mentioning(marker).empty()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// Why the real web helper cannot run here, or "".
std::string real_helper_missing(const std::vector<std::string>& platforms) {
  std::string why;
  if (!test::runtime_built("torch", &why) || !test::runtime_built("ort-web", &why)) return why;
  if (web::web_probe("ort-web", why).empty()) return why;
  for (const std::string& p : platforms)
    if (!fs::exists(web::browser_executable(p))) return "no " + web::browser_executable(p);
  return "";
}

// A fresh short TMPDIR for the scope (the helper's browser profiles go there; Chromium's
// singleton socket path under it must stay within the 108 bytes of a Unix socket name), removed
// afterwards.
class ScopedTmpdir {
 public:
  ScopedTmpdir() {
    std::string tmpl = "/tmp/crossdl-webtest-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ScopedTmpdir() {
    end();
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  void begin() {
    if (const char* t = std::getenv("TMPDIR")) old_ = t;
    setenv("TMPDIR", path_.c_str(), 1);
    set_ = true;
  }
  void end() {
    if (!set_) return;
    if (old_.empty())
      unsetenv("TMPDIR");
    else
      setenv("TMPDIR", old_.c_str(), 1);
    set_ = false;
  }

 private:
  std::string path_, old_;
  bool set_ = false;
};

// LeNet-5 (crossdl's seed-5 weights) on 100 Fashion-MNIST test images in every browser and
// platform family against torch, plus one combination of each kind that cannot run. Measured
// here (2 busy cores): max |logit - torch| 3.8e-6 (tfjs, ort-web) / 4.3e-6 (tfjs wasm, tflite),
// no disagreement; the whole compare ~35 s, most of it browser launches.
TEST(WebCompare, Lenet5InBrowsersAndNodeAgreesWithTorch) {
  if (const std::string why = real_helper_missing({"chromium", "firefox"}); !why.empty())
    GTEST_SKIP() << why;
  const std::string dir = test::scratch_dir("web-compare");
  const ir::Model m = zoo::build("lenet5", {{1, 28, 28}, DType::F32, 10, 0});
  const std::string model = dir + "/lenet5.onnx";
  onnx_write(model, m, init_weights(m, 5));
  const std::vector<std::string> ran = {"tfjs:cpu@chromium", "tfjs:wasm@firefox",
                                        "ort-web:wasm@chromium", "tflite-web:wasm@chromium",
                                        "ort-web:wasm@node"};
  const std::vector<std::pair<std::string, std::string>> skipped = {
      {"tfjs:webgpu@firefox", "WebGPU"}, {"tflite-web:wasm@node", "only in a browser"}};
  std::string list = "torch";
  for (const auto& r : ran) list += "," + r;
  for (const auto& [r, _] : skipped) list += "," + r;
  ScopedTmpdir tmpdir;
  const std::string tmp = tmpdir.path();
  ASSERT_FALSE(tmp.empty());
  tmpdir.begin();
  const test::CliRun run =
      test::run_cli("compare --model " + model + " --runtimes " + list +
                        " --limit 100 --latency-runs 10 --json --out " + dir + "/work",
                    dir + "/stderr.txt");
  tmpdir.end();
  EXPECT_TRUE(none_mentioning_within(tmp, std::chrono::seconds(5)))
      << "a browser outlived the compare";
  const nlohmann::json doc = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << run.out;
  EXPECT_EQ(run.rc, 0);
  ASSERT_EQ(doc["runtimes"].size(), 1 + ran.size() + skipped.size());
  EXPECT_EQ(doc["test_size"], 100);
  std::map<std::string, nlohmann::json> rows;
  for (const auto& r : doc["runtimes"]) rows[r["runtime"].get<std::string>()] = r;
  for (const std::string& name : ran) {
    SCOPED_TRACE(name);
    const nlohmann::json& r = rows[name];
    ASSERT_EQ(r.value("status", ""), "ok") << r.dump();
    EXPECT_LT(r["logits_diff"]["max_abs"].get<double>(), 1e-4);
    EXPECT_TRUE(r["logits_diff"]["within"].get<bool>());
    EXPECT_EQ(r["disagreement"], 0);
    EXPECT_GT(r["first_infer_ms"].get<double>(), 0.0);
    EXPECT_EQ(r["latency_ms"]["runs"], 10);
    EXPECT_GT(r["latency_ms"]["p50"].get<double>(), 0.0);
    const nlohmann::json& f = r["facts"];
    EXPECT_GT(f["pss_mb"].get<double>(), 10.0) << f.dump();
    EXPECT_GE(f["peak_pss_mb"].get<double>(), f["pss_mb"].get<double>()) << f.dump();
    EXPECT_FALSE(f["device"].get<std::string>().empty());
    // The model's in-page load is part of the runtime's load, which also launched the browser.
    ASSERT_TRUE(f["model_load_ms"].is_number()) << f.dump();
    EXPECT_GT(f["model_load_ms"].get<double>(), 0.0);
    EXPECT_LT(f["model_load_ms"].get<double>(), r["load_ms"].get<double>());
    EXPECT_EQ(r["device"], f["device"]);
    const std::string platform =
        split_backend_name(name).variant.substr(split_backend_name(name).variant.find('@') + 1);
    EXPECT_EQ(f["platform"], platform);
    const std::string browser = f["browser"];
    EXPECT_EQ(browser.rfind(platform == "chromium"  ? "Chromium"
                            : platform == "firefox" ? "Firefox"
                                                    : "Node",
                            0),
              0u)
        << browser;
    if (platform == "chromium") {
      EXPECT_TRUE(f["js_heap_mb"].is_number()) << f.dump();
      EXPECT_EQ(f["cross_origin_isolated"], "true");
    }
    EXPECT_NE(r["library"].get<std::string>().find(" in " + browser), std::string::npos)
        << r["library"];
  }
  for (const auto& [name, says] : skipped) {
    SCOPED_TRACE(name);
    const nlohmann::json& r = rows[name];
    EXPECT_EQ(r.value("status", ""), "skipped") << r.dump();
    EXPECT_NE(r.value("message", "").find(says), std::string::npos) << r.dump();
  }
}

// A damaged artefact is bad input naming the file, found before any helper or browser starts.
TEST(WebRuntime, CorruptArtefactsAreBadInput) {
  std::string why;
  for (const char* name : {"tfjs", "ort-web", "tflite-web"})
    if (!test::runtime_built(name, &why)) GTEST_SKIP() << why;
  const ir::Model m = zoo::build("lenet1", {{1, 28, 28}, DType::F32, 10, 0});
  const WeightSet w = init_weights(m, 2);
  for (const char* name : {"tfjs:wasm@node", "ort-web:wasm@chromium", "tflite-web:wasm@firefox"}) {
    SCOPED_TRACE(name);
    auto rt = make_runtime(name);
    const std::string dir =
        test::scratch_dir(std::string("corrupt-") + split_backend_name(name).base);
    Artefact a;
    ASSERT_TRUE(rt->export_model(m, w, dir, {}, a).is_ok());
    // Cut the model file (model.json, .onnx or .tflite) in half.
    std::string file;
    for (const std::string& f : a.files)
      if (fs::path(f).extension() != ".bin") file = f;
    ASSERT_FALSE(file.empty());
    const std::vector<std::byte> bytes = test::read_bytes(file);
    test::write_bytes(
        file, {bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(bytes.size() / 2)});
    Status st;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(rt->load(a, m, RunOptions{}, st), nullptr);
    EXPECT_EQ(st.code(), Status::Code::BadInput) << st.message();
    EXPECT_NE(st.message().find(file), std::string::npos) << st.message();
    // No browser was started for it.
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  }
}

// A reply that does not come in time kills the helper and its browser; nothing of either is
// left. Two moments: during `start` (the browser being launched, its pid not yet reported: found
// among the helper's children) and during `run` (the browser up, its pid known).
TEST(WebRuntime, ATimeoutLeavesNoBrowserProcess) {
  if (const std::string why = real_helper_missing({"chromium"}); !why.empty()) GTEST_SKIP() << why;
  const ir::Model m = zoo::build("lenet5", {{1, 28, 28}, DType::F32, 10, 0});
  const std::string dir = test::scratch_dir("web-timeout");
  auto rt = make_runtime("ort-web:wasm@chromium");
  Artefact a;
  ASSERT_TRUE(rt->export_model(m, init_weights(m, 2), dir + "/artefact", {}, a).is_ok());
  ScopedTmpdir tmpdir;
  const std::string tmp = tmpdir.path();
  ASSERT_FALSE(tmp.empty());
  tmpdir.begin();
  // During start: 700 ms is less than a Chromium launch + page + library here (2.5 s measured);
  // on a machine fast enough to start in time, the load succeeds and the runner is dropped.
  Status st;
  setenv("CROSSDL_WEB_TIMEOUT_MS", "700", 1);
  auto early = rt->load(a, m, RunOptions{}, st);
  unsetenv("CROSSDL_WEB_TIMEOUT_MS");
  if (!st.is_ok())
    EXPECT_NE(st.message().find("no reply within 700 ms"), std::string::npos) << st.message();
  else
    std::printf("[ web ] Chromium started within 700 ms: the start timeout was not exercised\n");
  early.reset();
  EXPECT_TRUE(none_mentioning_within(tmp, std::chrono::seconds(5)))
      << "after a start timeout, browser processes left: " << describe(processes_mentioning(tmp));
  // During run: the browser is up; 1 ms is less than any round trip through the page.
  auto r = rt->load(a, m, RunOptions{}, st);
  ASSERT_TRUE(r) << st.message();
  ASSERT_FALSE(processes_mentioning(tmp).empty()) << "the browser runs under the marked TMPDIR";
  const Dataset ds = test::fashion_subset(0, 1);
  const Tensor x = make_batch(ds, ds.test, test::first_n(1));  // small: the pipe takes it at once
  Tensor logits;
  setenv("CROSSDL_WEB_TIMEOUT_MS", "1", 1);
  st = r->infer(x, logits);
  unsetenv("CROSSDL_WEB_TIMEOUT_MS");
  tmpdir.end();
  EXPECT_EQ(st.code(), Status::Code::Failed) << st.message();
  EXPECT_NE(st.message().find("no reply within 1 ms"), std::string::npos) << st.message();
  // Killed at the timeout, not when the runner goes.
  EXPECT_TRUE(none_mentioning_within(tmp, std::chrono::seconds(5)))
      << "after a run timeout, browser processes left: " << describe(processes_mentioning(tmp));
}

#endif  // CROSSDL_HAVE_WEB_SESSION

}  // namespace
