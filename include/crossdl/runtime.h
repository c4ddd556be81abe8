// Deployment runtimes. A runtime runs the *same weights* after a migration: crossdl exports the
// model description and weight set into the runtime's own format (an "artefact": ONNX, TFLite,
// Darknet cfg+weights, a dlib network, TorchScript...), the runtime loads that artefact, and
// crossdl compares its outputs with a reference. Frameworks (torch, dlib, darknet) are runtimes
// too, loading their own exported files.
//
// Like adapters, runtimes never throw across this interface: a library exception becomes a failed
// Status with the library's message; "cannot run this model" is a Capability (a skip with reason).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "crossdl/adapter.h"
#include "crossdl/ir.h"
#include "crossdl/status.h"

namespace crossdl {

// What an exporter wrote.
struct Artefact {
  std::string format;  // "onnx" | "tflite" | "darknet" | "dlib" | "torchscript" | "tfjs"
  std::string dir;     // where it lives
  std::vector<std::string> files;  // every file written, full paths
  std::uint64_t bytes = 0;         // total size on disk
  // The layout conversions the exporter made ("conv OIHW->OHWI; dense inputs CHW->HWC"), recorded
  // with every result so a divergence can be traced to a conversion.
  std::string conversions;
};

namespace quant {
struct QuantModel;
struct QuantOptions;
}  // namespace quant

struct ExportOptions {
  int onnx_opset = 13;  // 13 or 17
  // A reduced-precision export: the runtime writes this quantized model (its BatchNorm-folded
  // description and weights, with crossdl's scales and zero points) in its own format, instead
  // of the fp32 (m, w) handed to export_model. Null for fp32. Only runtimes whose
  // supports_precision says yes see it.
  const quant::QuantModel* quant = nullptr;
  // Also expose every layer's output (extra graph outputs in ONNX/TFLite, extra output slots in
  // Arm NN), so that Runner::layer_outputs can work. Off for timing runs: extra outputs can
  // change what a runtime fuses.
  bool layer_outputs = false;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual FrameworkInfo info() const = 0;  // name as in the CLI, library, version, device
  virtual Capability supports(const ir::Model& m) const = 0;
  // Whether this runtime can run crossdl's quantization under these options, in its own format
  // (asked before anything is calibrated). The default says no, naming the runtime: a runtime
  // must never be handed a quantized model it would quietly export in fp32.
  virtual Capability supports_precision(const quant::QuantOptions& q) const;
  // Writes (m, w) in this runtime's format into `dir` (created if missing; files in it that the
  // exporter names are replaced). `out.bytes` sums the files written.
  virtual Status export_model(const ir::Model& m, const WeightSet& w, const std::string& dir,
                              const ExportOptions& opt, Artefact& out) = 0;
  // Loads what export_model wrote; the heavy work (parsing, optimising) happens here, so that
  // load time and inference latency are measured apart. `m` is the description the artefact was
  // written from: it names the layers and gives the input shape.
  virtual std::unique_ptr<Runner> load(const Artefact& a, const ir::Model& m, const RunOptions& opt,
                                       Status& status) = 0;
};

// ---- helpers for exporters (src/core/artefact.cpp) ------------------------------------------
// Creates the export folder (and its parents); InputError naming it when that fails.
void export_dir_create(const std::string& dir);
// The artefact record of files an exporter wrote: `bytes` is their total size on disk.
Artefact artefact_of(std::string format, std::string dir, std::vector<std::string> files,
                     std::string conversions);
// For runtimes that read crossdl's ONNX file: writes <dir>/<model name>.onnx (every layer output
// as a graph output when `layer_outputs`; in reduced precision when `quant`, whose model and
// weights m and w then are) and returns its record. Throws InputError.
Artefact onnx_artefact(const ir::Model& m, const WeightSet& w, const std::string& dir, int opset,
                       bool layer_outputs, const quant::QuantModel* quant = nullptr);

// For runtimes that load crossdl's ONNX file: which quantized models onnx_artefact writes
// (int8-static as QDQ, fp16/bf16 weights with a Cast), the runtime named in the reason.
Capability onnx_supports_precision(const std::string& runtime, const quant::QuantOptions& q);

// For runtimes that load an ONNX file: a truncated or corrupt file is the user's input, so it is
// checked (protobuf parse, then the ONNX checker) before the library sees it, and the Status is
// bad_input naming the file.
Status onnx_check_file(const std::string& path);

// Every runtime built into this crossdl, by CLI name ("torch", "opencv", "ort"...).
std::vector<std::string> runtime_names();
// Throws InputError naming the runtime and listing the built-in ones; an unbuilt known runtime
// gets its install hint.
std::unique_ptr<Runtime> make_runtime(const std::string& name);

}  // namespace crossdl
