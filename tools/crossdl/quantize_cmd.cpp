// `crossdl quantize`: crossdl's post-training quantization of a trained model, written as the
// ONNX interchange of the quantized model plus every parameter (src/app/quantize_run.cpp).
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "crossdl/quantize.h"

using nlohmann::json;

namespace crossdl {

json QuantArgs::to_json() const {
  return {{"per_channel", !per_tensor},
          {"calibrate", calibrate},
          {"calibration", calibration},
          {"calibration_seed", calibration_seed},
          {"percentile", percentile}};
}

void add_quant_options(CLI::App& app, QuantArgs& q) {
  app.add_flag("--per-tensor", q.per_tensor,
               "One weight scale per tensor (the default is one per output channel)");
  app.add_flag_callback(
      "--per-channel", [&q] { q.per_tensor = false; },
      "One weight scale per output channel (the default)");
  app.add_option("--calibrate", q.calibrate, "Activation ranges: minmax, percentile or entropy")
      ->capture_default_str()
      ->check(CLI::IsMember({"minmax", "percentile", "entropy"}));
  app.add_option("--calibration", q.calibration,
                 "Calibration examples, drawn from the training split (seeded)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--calibration-seed", q.calibration_seed)->capture_default_str();
  app.add_option("--percentile", q.percentile, "Percentile kept by --calibrate percentile (%)")
      ->capture_default_str();
}

void add_quantize_command(CLI::App& app, CommandSet& set) {
  static struct {
    std::string model, dataset = "fashion-mnist", scheme = "int8-static", out, data_root;
    QuantArgs quant;
    bool as_json = false, save_calibration = false;
  } a;
  auto* q = app.add_subcommand(
      "quantize", "Quantize a trained model (crossdl's own post-training quantization)");
  q->add_option("--model", a.model, "An .onnx file, or a folder with model.onnx")->required();
  q->add_option("--scheme", a.scheme, "fp16, bf16, int8-static, int8-dynamic, w8 or w16")
      ->capture_default_str();
  q->add_option("--dataset", a.dataset, "The dataset the calibration set is drawn from")
      ->capture_default_str();
  q->add_option("--data-root", a.data_root, "Dataset folder (default: where setup installs it)");
  add_quant_options(*q, a.quant);
  q->add_option("--out", a.out, "Folder for model.qdq.onnx and quant_params.json")->required();
  q->add_flag("--save-calibration", a.save_calibration,
              "Also write the calibration inputs and their training-split indices (.npy)");
  q->add_flag("--json", a.as_json, "Machine-readable output");
  set.quantize.app = q;
  set.quantize.run = [] {
    json o = a.quant.to_json();
    o["scheme"] = a.scheme;
    DataOptions d;
    d.root = a.data_root;
    const json r = quantize_write(a.model, a.dataset, d, quant_options_from_json(o), a.out,
                                  a.save_calibration);
    if (a.as_json) {
      std::cout << r.dump(2) << "\n";
    } else {
      std::printf("%s: %s of %s, calibrated on %lld training examples (%s) in %.1f s\n",
                  r.value("onnx", "").c_str(), a.scheme.c_str(), r.value("model", "").c_str(),
                  static_cast<long long>(a.quant.calibration), a.quant.calibrate.c_str(),
                  r.value("seconds", 0.0));
      std::printf("parameters: %s\n", r.value("params", "").c_str());
    }
    return 0;
  };
}

}  // namespace crossdl
