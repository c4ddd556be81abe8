// dlib as a deployment runtime: the artefact is the evaluation network written by dlib's own
// serialize() (BatchNorm folded into per-channel affine_ layers, as dlib's documentation does for
// inference), read back by dlib's deserialize() into the compile-time type chosen from the IR.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/quant.h"
#include "crossdl/runtime.h"
#include "dlib_net.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using dlibx::Mode;
using dlibx::Net;

constexpr const char* kConversions =
    "conv OIHW as is (no bias term where the IR has none); dense [out,in] -> fc_ (in+1)xout with "
    "the bias in the last row; BatchNorm2d -> affine_ per channel: alpha = weight/sqrt(var+eps), "
    "beta = bias - mean*alpha; Flatten has no layer (fc_ reads k,nr,nc planes)";

class DlibRuntimeRunner : public Runner {
 public:
  DlibRuntimeRunner(std::unique_ptr<Net> net, int threads)
      : net_(std::move(net)), threads_(threads) {}
  Status infer(const Tensor& x, Tensor& logits) override {
    return dlibx::guarded("infer", [&] { logits = net_->logits(x); });
  }
  Status input_gradient(const Tensor& x, const Tensor& labels, Tensor& grad,
                        double& loss) override {
    return dlibx::guarded("input_gradient", [&] { grad = net_->input_gradient(x, labels, loss); });
  }
  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    return dlibx::guarded("layer_outputs", [&] { out = net_->layer_outputs(x); });
  }

 private:
  std::unique_ptr<Net> net_;
  // Recorded only: dlib's CPU code without CUDA runs on the calling thread (img2col + the
  // reference BLAS's sgemm), so any requested count means one thread here.
  int threads_;
};

fs::path artefact_file(const Artefact& a, const ir::Model& m) {
  for (const std::string& f : a.files)
    if (fs::path(f).extension() == ".dnn") return f;
  return fs::path(a.dir) / (m.name + ".dnn");
}

class DlibRuntime : public Runtime {
 public:
  FrameworkInfo info() const override { return {"dlib", "dlib", dlibx::version(), "cpu"}; }

  Capability supports(const ir::Model& m) const override { return dlibx::supports(m); }
  Capability supports_precision(const quant::QuantOptions&) const override {
    return Capability::no(
        "dlib: computes in fp32 only (its layers have no reduced-precision form)");
  }

  Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                      const ExportOptions&, Artefact& out) override {
    if (Capability c = supports(m); !c.ok) return Status::unsupported(c.why);
    // Every layer output stays readable in a dlib network (get_output()), so
    // ExportOptions.layer_outputs changes nothing in the file.
    return dlibx::guarded("export", [&] {
      std::unique_ptr<Net> net = dlibx::make_net(m, Mode::Eval);
      net->import_weights(w);
      export_dir_create(dir);
      const fs::path file = fs::path(dir) / (m.name + ".dnn");
      {
        std::ofstream os(file, std::ios::binary | std::ios::trunc);
        if (!os) throw InputError("dlib runtime: cannot write " + file.string());
        net->save(os);
        os.flush();
        if (!os) throw std::runtime_error("writing " + file.string() + " failed");
      }
      out = artefact_of("dlib", dir, {file.string()}, kConversions);
    });
  }

  std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                               Status& status) override {
    if (Capability c = supports(m); !c.ok) {
      status = Status::unsupported(c.why);
      return nullptr;
    }
    std::unique_ptr<Runner> r;
    status = dlibx::guarded("load", [&] {
      if (a.format != "dlib")
        throw InputError("dlib runtime: artefact format '" + a.format + "' is not 'dlib'");
      const fs::path file = artefact_file(a, m);
      std::ifstream is(file, std::ios::binary);
      if (!is) throw InputError("dlib runtime: cannot open " + file.string());
      std::unique_ptr<Net> net;
      try {
        net = dlibx::read_net(is, m);
      } catch (const dlib::serialization_error& e) {
        // A truncated or foreign file. serialization_error is not dlib's fatal_error, so catching
        // it does not arm dlib's abort-on-the-next-fatal-error.
        throw InputError("dlib runtime: " + file.string() + " is not a complete dlib " + m.name +
                         " network for " + shape_str(m.input_shape) + ": " + e.what());
      } catch (const InputError& e) {
        throw InputError(file.string() + ": " + e.what());
      }
      r = std::make_unique<DlibRuntimeRunner>(std::move(net), opt.threads);
    });
    return status.is_ok() ? std::move(r) : nullptr;
  }
};

}  // namespace

std::unique_ptr<Runtime> make_dlib_runtime(const std::string& variant) {
  require_no_variant("dlib", variant);
  return std::make_unique<DlibRuntime>();
}

}  // namespace crossdl
