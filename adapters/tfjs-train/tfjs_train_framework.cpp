// The `tfjs-train` framework: TensorFlow.js trains the IR model inside a headless browser (or Node)
// through web/web-helper.mjs and web/harness/train.mjs (docs/web-protocol.md, ops train_*). The
// initial weights go over as the layers model tfjs_write writes; every minibatch and learning rate
// comes from crossdl's core, as for every framework; the weights come back through
// tfjs_weights_to_ir. Name: tfjs-train[:cpu|:webgl|:wasm|:webgpu][@chromium|@firefox|@node],
// default tfjs-train:cpu@chromium.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/adapter.h"
#include "crossdl/adapter_guard.h"
#include "crossdl/tfjs_io.h"
#include "web_session.h"
#include "web_target.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kRuntime = "tfjs-train";
constexpr std::int64_t kInferChunk = 250;

// A temporary artefact folder, removed with everything in it when the owner goes.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "crossdl-tfjs-train-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("cannot create a temporary folder under " +
                               fs::temp_directory_path().string());
    path_ = tmpl;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One helper session (browser included) with the folder it serves as /artefact/. Each model
// loaded into it gets a subfolder of its own.
struct Session {
  TempDir dir;
  web::WebSession web;
  int loads = 0;
  explicit Session(const web::WebTarget& t) : web(t) {}
};

Status open_session(const web::WebTarget& t, int threads, std::unique_ptr<Session>& out) {
  try {
    out = std::make_unique<Session>(t);
  } catch (const std::exception& e) {
    return Status::failed(std::string(kRuntime) + ": " + e.what());
  }
  Status s = out->web.open(out->dir.path(), threads);
  if (!s.is_ok()) out.reset();
  return s;
}

json tensor_json(const Tensor& t) {
  const char* dtype = t.dtype() == DType::F32 ? "f32" : t.dtype() == DType::I64 ? "i64" : "i32";
  return web::encode_tensor(dtype, t.shape(), t.raw(), t.nbytes());
}

std::string name_of(const web::WebTarget& t) {
  return t.name();
}

// The model in one session: writes the weights as a layers model, train_load's it with the
// optimiser's settings, then steps, infers and reads the weights back.
class TfjsTrainModel {
 public:
  TfjsTrainModel(const ir::Model& m, std::unique_ptr<Session> s) : m_(m), s_(std::move(s)) {}

  Status load(const WeightSet& w, const TrainConfig& cfg) {
    const std::string sub = "model" + std::to_string(++s_->loads);
    Status st = guarded_call("writing the initial weights", kRuntime,
                             [&] { tfjs_write((fs::path(s_->dir.path()) / sub).string(), m_, w); });
    if (!st.is_ok()) return st;
    json reply;
    st = call({{"op", "train_load"},
               {"file", sub + "/model.json"},
               {"optimizer", cfg.optimizer},
               {"momentum", cfg.momentum},
               {"weight_decay", cfg.weight_decay},
               {"beta1", cfg.beta1},
               {"beta2", cfg.beta2},
               {"adam_eps", cfg.adam_eps}},
              reply);
    if (!st.is_ok()) return st;
    if (!reply.contains("trainable") || !reply["trainable"].is_array())
      return Status::failed(name_of(s_->web.target()) + ": train_load reply lacks 'trainable'");
    return Status::ok();
  }

  Status step(const Tensor& x, const Tensor& labels, double lr, double& loss) {
    Tensor in;
    if (Status s = input(x, in); !s.is_ok()) return s;
    if (labels.dtype() != DType::I64 || labels.rank() != 1 || labels.dim(0) != x.dim(0))
      return Status::bad_input(
          name_of(s_->web.target()) + ": labels must be int64 [" + std::to_string(x.dim(0)) +
          "], got " + std::string(dtype_name(labels.dtype())) + " " + shape_str(labels.shape()));
    json reply;
    if (Status s = call({{"op", "train_step"},
                         {"x", tensor_json(in)},
                         {"labels", tensor_json(labels)},
                         {"lr", lr}},
                        reply);
        !s.is_ok())
      return s;
    if (!reply.contains("loss") || !reply["loss"].is_number())
      return Status::failed(name_of(s_->web.target()) + ": train_step reply has no numeric loss");
    loss = reply["loss"].get<double>();
    step_ms_ += reply.value("ms", 0.0);
    ++steps_;
    return Status::ok();
  }

  // In chunks of kInferChunk samples: each request then stays well inside the helper's reply
  // timeout (an evaluation batch of 1000 ResNet-20 images on the cpu backend would not).
  Status infer(const Tensor& x, Tensor& logits) {
    Tensor in;
    if (Status s = input(x, in); !s.is_ok()) return s;
    const std::int64_t n = x.dim(0);
    std::vector<float> all;
    all.reserve(static_cast<std::size_t>(n * m_.num_classes));
    for (std::int64_t begin = 0; begin < n; begin += kInferChunk) {
      const Tensor part = in.slice_rows(begin, std::min(n, begin + kInferChunk));
      json reply;
      if (Status s = call({{"op", "train_infer"}, {"x", tensor_json(part)}}, reply); !s.is_ok())
        return s;
      std::vector<float> values;
      std::vector<std::int64_t> shape;
      if (Status s =
              web::decode_f32(reply.value("logits", json()), "train_infer logits", values, shape);
          !s.is_ok())
        return s;
      all.insert(all.end(), values.begin(), values.end());
    }
    return guarded_call("reading the logits", kRuntime, [&] {
      logits = tfjs_output_to_ir(m_, m_.layers.back().name, all.data(), all.size(), n);
      logits.set_layout(Layout::NC);
    });
  }

  Status weights(WeightSet& out) {
    json reply;
    if (Status s = call({{"op", "train_weights"}}, reply); !s.is_ok()) return s;
    if (!reply.contains("weights") || !reply["weights"].is_object())
      return Status::failed(name_of(s_->web.target()) + ": train_weights reply has no weights");
    TfjsWeights tw;
    for (const auto& [name, spec] : reply["weights"].items()) {
      std::vector<float> values;
      std::vector<std::int64_t> shape;
      if (Status s = web::decode_f32(spec, "weight " + name, values, shape); !s.is_ok()) return s;
      tw.emplace(name, Tensor::f32(shape, std::move(values)));
    }
    return guarded_call("reading the weights back", kRuntime,
                        [&] { out = tfjs_weights_to_ir(m_, tw); });
  }

  double step_ms() const { return step_ms_; }
  std::int64_t steps() const { return steps_; }
  const web::WebStart& started() const { return s_->web.started(); }
  const web::WebTarget& target() const { return s_->web.target(); }
  Status memory(web::WebMemory& out) {
    if (!s_->web.is_open())
      return Status::failed(name_of(s_->web.target()) + ": the helper session is closed");
    return s_->web.memory(out);
  }

 private:
  const ir::Model m_;
  std::unique_ptr<Session> s_;
  double step_ms_ = 0;
  std::int64_t steps_ = 0;

  Status input(const Tensor& x, Tensor& in) {
    Status s = guarded_call("converting the input", kRuntime, [&] { in = tfjs_input(m_, x); });
    if (!s.is_ok()) return Status::bad_input(name_of(s_->web.target()) + ": " + s.message());
    return s;
  }

  Status call(json req, json& reply) {
    if (!s_->web.is_open())
      return Status::failed(name_of(s_->web.target()) +
                            ": the helper session was closed by an earlier failure");
    return s_->web.call(std::move(req), reply);
  }
};

// What the page ran on and, read now, the browser's (or Node's) memory: its process tree's PSS,
// the peak the helper sampled since the session started, the JS heap where it is reported.
RunnerFacts session_facts(TfjsTrainModel& m) {
  const web::WebStart& s = m.started();
  RunnerFacts f;
  f.numbers = {{"timer_resolution_ms", s.timer_resolution_ms}, {"start_ms", s.ms}};
  f.text = {{"platform", m.target().platform},
            {"browser", s.browser},
            {"backend", s.backend},
            {"device", s.device}};
  if (m.steps() > 0)
    f.numbers.push_back({"step_ms_in_page", m.step_ms() / static_cast<double>(m.steps())});
  web::WebMemory mem;
  if (Status st = m.memory(mem); st.is_ok()) {
    f.numbers.push_back({"pss_mb", mem.pss_mb});
    f.numbers.push_back({"peak_pss_mb", mem.peak_pss_mb});
    f.numbers.push_back({"processes", static_cast<double>(mem.processes)});
    if (mem.js_heap_mb >= 0) f.numbers.push_back({"js_heap_mb", mem.js_heap_mb});
  } else {
    f.text.push_back({"memory_error", st.message()});
  }
  return f;
}

class TfjsTrainTrainer : public Trainer {
 public:
  explicit TfjsTrainTrainer(std::unique_ptr<TfjsTrainModel> m) : m_(std::move(m)) {}
  Status step(const Tensor& x, const Tensor& labels, double lr, double& loss) override {
    return m_->step(x, labels, lr, loss);
  }
  Status infer(const Tensor& x, Tensor& logits) override { return m_->infer(x, logits); }
  Status export_weights(WeightSet& out) override { return m_->weights(out); }
  RunnerFacts facts() override { return session_facts(*m_); }

 private:
  std::unique_ptr<TfjsTrainModel> m_;
};

class TfjsTrainRunner : public Runner {
 public:
  explicit TfjsTrainRunner(std::unique_ptr<TfjsTrainModel> m) : m_(std::move(m)) {}
  Status infer(const Tensor& x, Tensor& logits) override { return m_->infer(x, logits); }
  RunnerFacts facts() override { return session_facts(*m_); }

 private:
  std::unique_ptr<TfjsTrainModel> m_;
};

class TfjsTrainFramework : public Framework {
 public:
  explicit TfjsTrainFramework(web::WebTarget t) : t_(std::move(t)) {}

  // The library version comes from the helper's hello; the browser and the device the backend
  // runs on from `start`, so the first call opens the session that the next trainer or runner
  // then uses (one browser launch, not two).
  FrameworkInfo info() const override {
    FrameworkInfo fi;
    fi.name = t_.name();
    fi.library = "TensorFlow.js";
    const std::string why_not = web::web_target_unsupported(t_);
    if (!why_not.empty()) {
      fi.device = t_.backend + " backend in " + t_.platform + " (cannot run: " + why_not + ")";
      return fi;
    }
    if (!spare_ && spare_failed_.empty()) {
      Status s = open_session(t_, 1, spare_);
      if (!s.is_ok()) spare_failed_ = s.message();
    }
    if (!spare_) {
      fi.device =
          t_.backend + " backend in " + t_.platform + " (did not start: " + spare_failed_ + ")";
      return fi;
    }
    const web::WebStart& st = spare_->web.started();
    const json& hello = spare_->web.hello_reply();
    if (hello.contains("versions") && hello["versions"].contains("@tensorflow/tfjs") &&
        hello["versions"]["@tensorflow/tfjs"].is_string())
      fi.version = hello["versions"]["@tensorflow/tfjs"].get<std::string>();
    fi.library = "TensorFlow.js (training in " + st.browser + ")";
    fi.device = st.backend + " backend: " + st.device;
    return fi;
  }

  Capability supports(const ir::Model& m) const override {
    if (const std::string why = web::web_target_unsupported(t_); !why.empty())
      return Capability::no(t_.name() + ": " + why);
    // TF.js 4.22's wasm backend has no Conv2DBackpropFilter kernel: it runs a convolution but
    // cannot train one (measured: "Kernel 'Conv2DBackpropFilter' not registered for backend
    // 'wasm'").
    if (t_.backend == "wasm")
      for (const ir::Layer& l : m.layers)
        if (l.op == ir::Op::Conv2d)
          return Capability::no(t_.name() + ": layer " + l.name +
                                " (Conv2d): TF.js 4.22's wasm backend has no "
                                "Conv2DBackpropFilter kernel, so it cannot train a convolution");
    // What the layers-model writer cannot express, TF.js cannot train (GRU: TF.js 4.22's GRUCell
    // refuses PyTorch's reset_after=true); tfjs_expressible names the layer.
    return tfjs_expressible(m);
  }

  std::unique_ptr<Runner> load(const ir::Model& m, const WeightSet& w, const RunOptions& opt,
                               Status& status) override {
    std::unique_ptr<TfjsTrainModel> model;
    TrainConfig cfg;  // evaluation only: no step is ever taken
    cfg.run = opt;
    status = start(m, w, cfg, model);
    if (!status.is_ok()) return nullptr;
    return std::make_unique<TfjsTrainRunner>(std::move(model));
  }

  std::unique_ptr<Trainer> trainer(const ir::Model& m, const WeightSet& init,
                                   const TrainConfig& cfg, Status& status) override {
    std::unique_ptr<TfjsTrainModel> model;
    status = start(m, init, cfg, model);
    if (!status.is_ok()) return nullptr;
    return std::make_unique<TfjsTrainTrainer>(std::move(model));
  }

 private:
  web::WebTarget t_;
  mutable std::unique_ptr<Session> spare_;  // opened by info(), taken by the next start()
  mutable std::string spare_failed_;

  Status start(const ir::Model& m, const WeightSet& w, const TrainConfig& cfg,
               std::unique_ptr<TfjsTrainModel>& out) {
    if (const Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    if (cfg.optimizer != "sgd" && cfg.optimizer != "adam")
      return Status::bad_input(t_.name() + ": optimizer '" + cfg.optimizer +
                               "' is not one of sgd, adam");
    std::unique_ptr<Session> s;
    if (spare_ && spare_->web.is_open() && cfg.run.threads == spare_->web.started().threads) {
      s = std::move(spare_);
    } else {
      spare_.reset();
      if (Status st = open_session(t_, cfg.run.threads, s); !st.is_ok()) return st;
    }
    out = std::make_unique<TfjsTrainModel>(m, std::move(s));
    Status st = out->load(w, cfg);
    if (!st.is_ok()) out.reset();
    return st;
  }
};

}  // namespace

std::unique_ptr<Framework> make_tfjs_train_framework(const std::string& variant) {
  return std::make_unique<TfjsTrainFramework>(web::parse_web_target(kRuntime, variant));
}

std::string probe_tfjs_train(std::string& why) {
  return web::web_probe(kRuntime, why);
}

}  // namespace crossdl
