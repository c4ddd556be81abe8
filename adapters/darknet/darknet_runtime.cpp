// The darknet runtime: exports a model as Darknet's own .cfg and .weights files (darknet_write, in
// the core) and loads them with Darknet's own loader (parse_network_cfg + load_weights), so that
// a model trained in any framework is run by Darknet from files, as a Darknet user would.
//
// Darknet's loader trusts its files: it exit()s with status 0 when one cannot be opened, reads a
// truncated .weights without noticing (the rest of the layers keep their random initialisation)
// and keeps an empty layer for an unknown section type. Those are checked here first, so that a bad
// artefact is a bad-input Status rather than a silent wrong answer (see README.md, findings/).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "crossdl/adapter_guard.h"
#include "crossdl/darknet_io.h"
#include "crossdl/quant.h"
#include "crossdl/runtime.h"
#include "darknet_support.h"

namespace crossdl {
namespace {

using namespace darknet_detail;

// The [net] batch the exported cfg is written with. Darknet sizes its buffers for it at parse
// time; larger inputs are run in chunks, the last one with set_batch_network (shrinking only).
constexpr std::int64_t kExportBatch = 64;

template <class Fn>
Status guarded(const char* what, Fn&& fn) {
  return guarded_call(what, "darknet", std::forward<Fn>(fn));
}

std::uint64_t file_size_of(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  if (ec) throw InputError(path + ": cannot be read: " + ec.message());
  return n;
}

// Darknet's section names (parser.c string_to_layer_type); for anything else it keeps an empty
// layer and goes on.
bool known_section(const std::string& s) {
  static const std::set<std::string> known = {"net",           "network",
                                              "shortcut",      "crop",
                                              "cost",          "detection",
                                              "region",        "yolo",
                                              "iseg",          "local",
                                              "conv",          "convolutional",
                                              "deconv",        "deconvolutional",
                                              "activation",    "logistic",
                                              "l2norm",        "crnn",
                                              "gru",           "lstm",
                                              "rnn",           "conn",
                                              "connected",     "max",
                                              "maxpool",       "reorg",
                                              "avg",           "avgpool",
                                              "dropout",       "lrn",
                                              "normalization", "batchnorm",
                                              "soft",          "softmax",
                                              "route",         "upsample"};
  return known.count(s) != 0;
}

// What Darknet's parser would exit on or silently misread: a first section that is not [net],
// an unknown section, a line that is neither a section nor key=value.
void precheck_cfg(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot be opened");
  std::string line;
  int number = 0;
  bool first = true;
  while (std::getline(in, line)) {
    ++number;
    line.erase(std::remove_if(line.begin(), line.end(),
                              [](char c) { return c == ' ' || c == '\t' || c == '\r'; }),
               line.end());
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    const std::string where = path + ": line " + std::to_string(number) + ": ";
    if (line[0] == '[') {
      if (line.back() != ']') throw InputError(where + "unterminated section header " + line);
      const std::string name = line.substr(1, line.size() - 2);
      if (first && name != "net" && name != "network")
        throw InputError(where + "the first section must be [net], not " + line);
      if (!known_section(name)) throw InputError(where + "darknet has no section " + line);
      first = false;
    } else if (first || line.find('=') == std::string::npos) {
      throw InputError(where + "expected a [section] or key=value, found '" + line + "'");
    }
  }
  if (first) throw InputError(path + ": no [net] section (empty or not a darknet cfg)");
}

int expected_type(DarknetLayer::Kind k) {
  switch (k) {
    case DarknetLayer::Conv:
      return CONVOLUTIONAL;
    case DarknetLayer::Connected:
      return CONNECTED;
    case DarknetLayer::Maxpool:
      return MAXPOOL;
    case DarknetLayer::Avgpool:
      return AVGPOOL;
    case DarknetLayer::Shortcut:
      return SHORTCUT;
    case DarknetLayer::Route:
      return ROUTE;
    case DarknetLayer::Activation:
      return ACTIVE;
    case DarknetLayer::Softmax:
      return SOFTMAX;
  }
  return BLANK;
}

std::string type_name(int type) {
  switch (type) {
    case CONVOLUTIONAL:
      return "[convolutional]";
    case CONNECTED:
      return "[connected]";
    case MAXPOOL:
      return "[maxpool]";
    case AVGPOOL:
      return "[avgpool]";
    case SHORTCUT:
      return "[shortcut]";
    case ROUTE:
      return "[route]";
    case ACTIVE:
      return "[activation]";
    case SOFTMAX:
      return "[softmax]";
    default:
      return "darknet type " + std::to_string(type);
  }
}

// Checks that the parsed network is the one planned from `m` (the cfg could be another model's).
void check_structure(const network* net, const DarknetPlan& p, const ir::Model& m,
                     const std::string& cfg) {
  const std::string head = cfg + ": does not describe " + m.name + ": ";
  if (net->n != static_cast<int>(p.layers.size()))
    throw InputError(head + std::to_string(net->n) + " layers, the model needs " +
                     std::to_string(p.layers.size()));
  if (net->inputs != p.c * p.h * p.w)
    throw InputError(head + "input of " + std::to_string(net->inputs) + " values, the model's is " +
                     shape_str(m.input_shape));
  for (std::size_t i = 0; i < p.layers.size(); ++i) {
    const layer& l = net->layers[i];
    const DarknetLayer& u = p.layers[i];
    if (l.type != expected_type(u.kind))
      throw InputError(head + "layer " + std::to_string(i) + " is a " + type_name(l.type) +
                       " layer, the model needs a " + type_name(expected_type(u.kind)) + " layer");
  }
  if (net->layers[p.logits].outputs != p.classes)
    throw InputError(head + "the last [connected] has " +
                     std::to_string(net->layers[p.logits].outputs) + " outputs, the model " +
                     std::to_string(p.classes) + " classes");
}

// The .weights size Darknet's load_weights reads for `net`, given the file's version header.
std::uint64_t weights_bytes(const network* net, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::int32_t head[3] = {0, 0, 0};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  if (!in) throw InputError(input_where(path, 0, "shorter than the 12-byte version header"));
  const std::int32_t major = head[0], minor = head[1];
  std::uint64_t floats = 0;
  for (int i = 0; i < net->n; ++i) {
    const layer& l = net->layers[i];
    if (l.dontload) continue;
    if (l.type == CONVOLUTIONAL) {
      const std::uint64_t n = static_cast<std::uint64_t>(l.n);
      const std::uint64_t k = n * static_cast<std::uint64_t>(l.c) * l.size * l.size;
      floats += n + (l.batch_normalize && !l.dontloadscales ? 3 * n : 0) + k;
    } else if (l.type == CONNECTED) {
      const std::uint64_t o = static_cast<std::uint64_t>(l.outputs);
      floats += o + o * static_cast<std::uint64_t>(l.inputs) +
                (l.batch_normalize && !l.dontloadscales ? 3 * o : 0);
    }
  }
  const bool long_seen = major * 10 + minor >= 2 && major < 1000 && minor < 1000;
  return 12 + (long_seen ? sizeof(std::size_t) : sizeof(int)) + floats * sizeof(float);
}

Tensor layer_output(const layer& l, std::int64_t n) {
  Shape shape = l.type == CONNECTED ? Shape{n, l.outputs} : Shape{n, l.out_c, l.out_h, l.out_w};
  Tensor t(DType::F32, shape, l.type == CONNECTED ? Layout::NC : Layout::NCHW);
  std::memcpy(t.raw(), l.output, t.nbytes());
  return t;
}

class DarknetFileRunner : public Runner {
 public:
  DarknetFileRunner(NetPtr net, DarknetPlan plan, const ir::Model& m)
      : net_(std::move(net)), plan_(std::move(plan)), model_(m), full_batch_(net_->batch) {}

  Status infer(const Tensor& x, Tensor& logits) override {
    return guarded("infer", [&] {
      const std::int64_t n = check(x);
      Tensor out(DType::F32, {n, plan_.classes}, Layout::NC);
      auto ov = out.values<float>();
      run(x, [&](std::int64_t begin, std::int64_t count) {
        std::memcpy(ov.data() + begin * plan_.classes, net_->layers[plan_.logits].output,
                    static_cast<std::size_t>(count * plan_.classes) * sizeof(float));
      });
      logits = std::move(out);
    });
  }

  // Every darknet layer's output under the IR layer it produces, plus each IR Flatten (free in
  // Darknet: the same [c][h][w] buffer) as the [N,F] view of its input.
  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    return guarded("layer_outputs", [&] {
      const std::int64_t n = check(x);
      std::vector<Tensor> parts(plan_.layers.size());
      run(x, [&](std::int64_t begin, std::int64_t count) {
        for (std::size_t i = 0; i < plan_.layers.size(); ++i) {
          if (plan_.layers[i].ir_name.empty()) continue;
          const Tensor chunk = layer_output(net_->layers[i], count);
          if (parts[i].empty()) {
            Shape s = chunk.shape();
            s[0] = n;
            parts[i] = Tensor(DType::F32, s, chunk.layout());
          }
          const std::size_t row = chunk.nbytes() / static_cast<std::size_t>(count);
          std::memcpy(parts[i].raw() + static_cast<std::size_t>(begin) * row, chunk.raw(),
                      chunk.nbytes());
        }
      });
      std::vector<LayerOutput> result;
      for (std::size_t i = 0; i < plan_.layers.size(); ++i) {
        if (plan_.layers[i].ir_name.empty()) continue;
        result.push_back({plan_.layers[i].ir_name, std::move(parts[i])});
        // Flattens reading this output (or a flatten of it) follow it in the IR's order.
        for (std::size_t k = 0; k < model_.layers.size(); ++k) {
          const ir::Layer& l = model_.layers[k];
          if (l.op != ir::Op::Flatten ||
              ir::resolved_inputs(model_, k).at(0) != result.back().layer)
            continue;
          const Tensor& src = result.back().value;
          result.push_back({l.name, src.reshaped({n, src.numel() / n}, Layout::NC)});
        }
      }
      out = std::move(result);
    });
  }

 private:
  std::int64_t check(const Tensor& x) const {
    if (x.dtype() != DType::F32 || x.rank() != 4 || x.dim(1) != plan_.c || x.dim(2) != plan_.h ||
        x.dim(3) != plan_.w)
      throw InputError("darknet runtime: expected an f32 batch [N," + std::to_string(plan_.c) +
                       "," + std::to_string(plan_.h) + "," + std::to_string(plan_.w) + "], got " +
                       shape_str(x.shape()));
    if (x.dim(0) < 1) throw InputError("darknet runtime: empty batch");
    return x.dim(0);
  }

  // Runs x through the network in chunks of the cfg's batch; `take(begin, count)` reads the
  // layers' outputs after each chunk.
  template <class Take>
  void run(const Tensor& x, Take&& take) {
    const std::int64_t n = x.dim(0);
    const std::size_t per = static_cast<std::size_t>(net_->inputs);
    const auto xv = x.values<float>();
    net_->train = 0;
    for (std::int64_t begin = 0; begin < n; begin += full_batch_) {
      const std::int64_t count = std::min<std::int64_t>(full_batch_, n - begin);
      if (count != net_->batch) set_batch_network(net_.get(), static_cast<int>(count));
      std::memcpy(net_->input, xv.data() + static_cast<std::size_t>(begin) * per,
                  static_cast<std::size_t>(count) * per * sizeof(float));
      forward_network(net_.get());
      take(begin, count);
    }
    if (net_->batch != full_batch_) set_batch_network(net_.get(), static_cast<int>(full_batch_));
  }

  NetPtr net_;
  DarknetPlan plan_;
  ir::Model model_;
  std::int64_t full_batch_;
};

class DarknetRuntime : public Runtime {
 public:
  FrameworkInfo info() const override { return {"darknet", "Darknet", package_version(), "cpu"}; }
  Capability supports(const ir::Model& m) const override { return darknet_expressible(m); }
  Capability supports_precision(const quant::QuantOptions&) const override {
    return Capability::no(
        "darknet: this 2018 snapshot computes in fp32 only (no quantized layers, no half "
        "weights in its file format)");
  }

  // Darknet keeps every layer's output in its layer struct: nothing extra to export for
  // layer_outputs.
  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions&, Artefact& out) override {
    if (Capability c = darknet_expressible(m); !c.ok)
      return Status::unsupported("darknet cannot express " + m.name + ": " + c.why);
    return guarded("export", [&] {
      const DarknetFiles f = darknet_write(m, w, dir, kExportBatch);
      Artefact a;
      a.format = "darknet";
      a.dir = dir;
      a.files = {f.cfg, f.weights};
      a.bytes = file_size_of(f.cfg) + file_size_of(f.weights);
      a.conversions = f.conversions;
      out = std::move(a);
    });
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    DarknetPlan plan;
    if (Capability c = darknet_plan(m, plan); !c.ok) {
      status = Status::unsupported("darknet cannot express " + m.name + ": " + c.why);
      return nullptr;
    }
    if (opt.threads != 1) {
      status = Status::unsupported(
          "darknet is single-threaded (its own gemm, no OpenMP in "
          "Debian's build); asked for " +
          std::to_string(opt.threads) + " threads");
      return nullptr;
    }
    std::unique_ptr<Runner> r;
    status = guarded("load", [&] {
      if (a.format != "darknet")
        throw InputError("darknet runtime: artefact format '" + a.format + "' is not darknet");
      std::string cfg, weights;
      for (const auto& f : a.files) {
        if (f.ends_with(".cfg")) cfg = f;
        if (f.ends_with(".weights")) weights = f;
      }
      if (cfg.empty() || weights.empty())
        throw InputError("darknet artefact in " + a.dir + ": needs a .cfg and a .weights file");
      // Darknet exit(0)s on a file it cannot open: both are checked first.
      for (const std::string& f : {cfg, weights})
        if (!std::ifstream(f, std::ios::binary)) throw InputError(f + ": cannot be opened");
      precheck_cfg(cfg);
      network* raw = nullptr;
      {
        QuietStdio quiet;
        raw = parse_network_cfg(cfg.data());
      }
      if (raw == nullptr) throw std::runtime_error("parse_network_cfg returned no network");
      NetPtr net(raw);
      check_structure(net.get(), plan, m, cfg);
      const std::uint64_t want = weights_bytes(net.get(), weights);
      const std::uint64_t have = file_size_of(weights);
      if (have != want)
        throw InputError(weights + ": " + std::to_string(have) + " bytes, the network in " + cfg +
                         " needs " + std::to_string(want) +
                         (have < want ? " (truncated)" : " (extra data after the last layer)"));
      {
        QuietStdio quiet;
        load_weights(net.get(), weights.data());
      }
      r = std::make_unique<DarknetFileRunner>(std::move(net), std::move(plan), m);
    });
    return status.is_ok() ? std::move(r) : nullptr;
  }
};

}  // namespace

std::unique_ptr<Runtime> make_darknet_runtime(const std::string& variant) {
  require_no_variant("darknet", variant);
  return std::make_unique<DarknetRuntime>();
}

}  // namespace crossdl
