// crossdl's post-training quantization of a trained model: the calibration set, and the files of
// `crossdl quantize`.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "crossdl/npy.h"
#include "crossdl/provenance.h"
#include "crossdl/quantize.h"
#include "crossdl/status.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace crossdl {

json quant_options_to_json(const quant::QuantOptions& o) {
  return {{"scheme", quant::scheme_name(o.scheme)},
          {"per_channel", o.per_channel},
          {"calibrate", quant::calibration_name(o.calibrate)},
          {"calibration", o.calibration_size},
          {"calibration_seed", o.calibration_seed},
          {"percentile", o.percentile},
          {"histogram_bins", o.histogram_bins}};
}

quant::QuantOptions quant_options_from_json(const json& j) {
  quant::QuantOptions o;
  if (!j.is_object()) throw InputError("quantization options: expected a JSON object");
  for (const auto& [k, v] : j.items()) {
    try {
      if (k == "scheme") {
        if (!quant::scheme_from_name(v.get<std::string>(), o.scheme)) {
          std::string known;
          for (const auto& n : quant::scheme_names()) known += (known.empty() ? "" : ", ") + n;
          throw InputError("unknown precision scheme '" + v.get<std::string>() +
                           "' (known: fp32, " + known + ")");
        }
      } else if (k == "per_channel") {
        o.per_channel = v.get<bool>();
      } else if (k == "calibrate") {
        if (!quant::calibration_from_name(v.get<std::string>(), o.calibrate))
          throw InputError("unknown calibration '" + v.get<std::string>() +
                           "' (known: minmax, percentile, entropy)");
      } else if (k == "calibration") {
        o.calibration_size = v.get<std::int64_t>();
      } else if (k == "calibration_seed") {
        o.calibration_seed = v.get<std::uint64_t>();
      } else if (k == "percentile") {
        o.percentile = v.get<double>();
      } else if (k == "histogram_bins") {
        o.histogram_bins = v.get<int>();
      } else {
        throw InputError("quantization options: unknown key '" + k + "'");
      }
    } catch (const json::exception& e) {
      throw InputError("quantization options: bad value for '" + k + "': " + e.what());
    }
  }
  if (o.calibration_size < 1) throw InputError("calibration: needs at least 1 example");
  if (o.percentile <= 50 || o.percentile > 100)
    throw InputError("percentile: must be in (50, 100], got " + std::to_string(o.percentile));
  if (o.histogram_bins < 128) throw InputError("histogram_bins: must be >= 128");
  return o;
}

quant::QuantModel quantize_trained(const OnnxModel& om, const std::string& dataset,
                                   const DataOptions& data, const quant::QuantOptions& options,
                                   Tensor* calibration_out) {
  DataOptions d = data;
  d.train_limit = 0;  // the calibration draws from the whole training split
  d.test_limit = 1;
  const Dataset ds = load_dataset(dataset, d);
  if (om.model.input_shape != ds.sample_shape())
    throw InputError("model input " + shape_str(om.model.input_shape) + " does not match " +
                     dataset + " samples " + shape_str(ds.sample_shape()));
  const std::int64_t n = ds.train.size();
  if (options.calibration_size > n)
    throw InputError("calibration: " + std::to_string(options.calibration_size) +
                     " examples asked, the " + dataset + " training split has " +
                     std::to_string(n));
  std::vector<std::int64_t> idx = epoch_order(n, options.calibration_seed, 0);
  idx.resize(static_cast<std::size_t>(options.calibration_size));
  const Tensor calib = make_batch(ds, ds.train, idx);
  quant::QuantModel q = quant::quantize(om.model, om.weights, calib, options);
  q.calibration["split"] = "train";
  q.calibration["dataset"] = dataset;
  q.calibration["size"] = options.calibration_size;
  q.calibration["seed"] = options.calibration_seed;
  q.calibration["indices_sha256"] = sha256_hex(std::span<const std::byte>(
      reinterpret_cast<const std::byte*>(idx.data()), idx.size() * sizeof(std::int64_t)));
  if (calibration_out != nullptr) *calibration_out = calib;
  if (calibration_out != nullptr) q.calibration["indices"] = idx;
  return q;
}

json quantize_write(const std::string& model_path, const std::string& dataset,
                    const DataOptions& data, const quant::QuantOptions& options,
                    const std::string& out_dir, bool save_calibration) {
  std::string path = model_path;
  if (fs::is_directory(path)) path = (fs::path(path) / "model.onnx").string();
  const OnnxModel om = onnx_read(path);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor calib;
  quant::QuantModel q = quantize_trained(om, dataset, data, options, &calib);
  // The indices are in the calibration files when asked for; the record keeps their hash.
  std::vector<std::int64_t> indices = q.calibration["indices"].get<std::vector<std::int64_t>>();
  q.calibration.erase("indices");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw InputError(out_dir + ": cannot create the folder: " + ec.message());
  const std::string onnx_path = (fs::path(out_dir) / "model.qdq.onnx").string();
  OnnxWriteOptions wo;
  wo.quant = &q;
  wo.metadata["crossdl.source_model"] = fs::absolute(path).string();
  wo.metadata["crossdl.source_weights_sha256"] = om.weights.sha256();
  wo.metadata["crossdl.precision"] = std::string(quant::scheme_name(options.scheme));
  onnx_write(onnx_path, q.model, q.weights, wo);
  json params = q.to_json();
  params["options"] = quant_options_to_json(options);
  params["source_model"] = fs::absolute(path).string();
  params["source_weights_sha256"] = om.weights.sha256();
  params["provenance"] = machine_provenance();
  if (save_calibration) {
    npy_write((fs::path(out_dir) / "calibration_inputs.npy").string(), calib);
    Tensor ti(DType::I64, {static_cast<std::int64_t>(indices.size())});
    std::copy(indices.begin(), indices.end(), ti.values<std::int64_t>().begin());
    npy_write((fs::path(out_dir) / "calibration_indices.npy").string(), ti);
  }
  const std::string params_path = (fs::path(out_dir) / "quant_params.json").string();
  {
    std::ofstream out(params_path + ".tmp");
    out << params.dump(2) << "\n";
    if (!out) throw InputError(params_path + ": cannot write");
  }
  fs::rename(params_path + ".tmp", params_path);
  return {{"model", fs::absolute(path).string()},
          {"scheme", quant::scheme_name(options.scheme)},
          {"onnx", onnx_path},
          {"onnx_bytes", fs::file_size(onnx_path)},
          {"params", params_path},
          {"calibration", q.calibration},
          {"seconds", seconds},
          {"folded", q.folded}};
}

}  // namespace crossdl
