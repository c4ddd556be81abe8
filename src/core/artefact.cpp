// What every exporter does around writing its files: make the folder, record what was written.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "crossdl/onnx_io.h"
#include "crossdl/quant.h"
#include "crossdl/runtime.h"

namespace crossdl {

void export_dir_create(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError(dir + ": cannot create the export folder: " + ec.message());
}

Artefact artefact_of(std::string format, std::string dir, std::vector<std::string> files,
                     std::string conversions) {
  Artefact a;
  a.format = std::move(format);
  a.dir = std::move(dir);
  for (const auto& f : files) a.bytes += std::filesystem::file_size(f);
  a.files = std::move(files);
  a.conversions = std::move(conversions);
  return a;
}

Artefact onnx_artefact(const ir::Model& m, const WeightSet& w, const std::string& dir, int opset,
                       bool layer_outputs, const quant::QuantModel* quant) {
  export_dir_create(dir);
  const std::string path = (std::filesystem::path(dir) / (m.name + ".onnx")).string();
  OnnxWriteOptions o;
  o.opset = opset;
  o.layer_outputs = layer_outputs;
  o.quant = quant;
  onnx_write(path, m, w, o);
  return artefact_of("onnx", dir, {path},
                     layer_outputs ? "every layer output is a graph output" : "");
}

Status onnx_check_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::bad_input(path + ": cannot open the ONNX artefact");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  onnx::ModelProto mp;
  if (bytes.empty() || !mp.ParseFromString(bytes))
    return Status::bad_input(input_where(path, 0,
                                         "not a valid ONNX protobuf (" +
                                             std::to_string(bytes.size()) +
                                             " bytes; truncated or corrupt?)"));
  try {
    onnx::checker::check_model(mp);
  } catch (const std::exception& e) {
    return Status::bad_input(path + ": fails the ONNX checker: " + e.what());
  }
  return Status::ok();
}

}  // namespace crossdl

namespace crossdl {

Capability onnx_supports_precision(const std::string& runtime, const quant::QuantOptions& q) {
  switch (q.scheme) {
    case quant::Scheme::Int8Static:
    case quant::Scheme::FP16:
    case quant::Scheme::BF16:
      return Capability::yes();
    case quant::Scheme::Int8Dynamic:
      return Capability::no(runtime +
                            ": crossdl does not write ONNX's dynamic form yet "
                            "(DynamicQuantizeLinear + ConvInteger/MatMulInteger)");
    case quant::Scheme::W8:
    case quant::Scheme::W16:
      return Capability::no(runtime + ": affine uint8/uint16 weight-only storage is TF.js' format");
  }
  return Capability::no(runtime + ": unknown scheme");
}

Capability Runtime::supports_precision(const quant::QuantOptions&) const {
  return Capability::no(info().name +
                        ": crossdl writes no reduced-precision artefact for this runtime yet");
}

}  // namespace crossdl
