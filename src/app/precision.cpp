// crossdl's references for a reduced precision, and how a runtime's outputs relate to them: shared
// by `crossdl compare --precision` and the study's quantize stage.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "crossdl/compare.h"
#include "crossdl/quantize.h"
#include "crossdl/status.h"

using nlohmann::json;

namespace crossdl {

namespace {

bool tflite_format(const json& row) {
  return row.contains("artefact") && row["artefact"].value("format", "") == "tflite";
}

// fp32 layer outputs by the name of the quantized model's layer that now gives them (a folded
// convolution gives its BatchNorm's output).
std::map<std::string, const Tensor*> fp32_by_quant_layer(const PrecisionReference& ref) {
  std::map<std::string, std::string> folded_into;
  for (const auto& [bn, conv] : ref.q.folded) folded_into[bn] = conv;
  std::map<std::string, const Tensor*> out;
  for (const auto& l : ref.float_layers) {
    auto f = folded_into.find(l.layer);
    out[f == folded_into.end() ? l.layer : f->second] = &l.value;
  }
  return out;
}

Tensor dequantized(const quant::IntLayer& l) {
  Tensor t(DType::F32, l.shape);
  auto v = t.values<float>();
  const float s = l.params->scale.at(0);
  const std::int32_t zp = l.params->zero_point.at(0);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = s * static_cast<float>(l.q[i] - zp);
  return t;
}

}  // namespace

PrecisionReference precision_reference(const OnnxModel& om, const std::string& precision,
                                       const json& quant_options, const std::string& dataset,
                                       const DataOptions& data, const EvalInputs& in, bool layers) {
  const auto t0 = std::chrono::steady_clock::now();
  PrecisionReference pr;
  pr.precision = precision;
  json qo = quant_options.is_object() ? quant_options : json::object();
  qo["scheme"] = precision;
  const quant::QuantOptions opts = quant_options_from_json(qo);  // bad options: InputError
  std::vector<std::int64_t> all(static_cast<std::size_t>(in.n));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int64_t>(i);
  const Tensor x = in.batch(all);
  const std::vector<std::int64_t> first(
      all.begin(), all.begin() + std::min<std::int64_t>(in.n, RuntimeJob{}.layer_examples));
  try {
    pr.q = quantize_trained(om, dataset, data, opts);
  } catch (const InputError& e) {
    // The scheme cannot express this model: every runtime's row says so.
    pr.summary = {{"message", e.what()}};
    return pr;
  }
  if (pr.q.options.scheme == quant::Scheme::Int8Static) {
    pr.onnx_logits = quant::integer_forward(pr.q, x, quant::Arithmetic::Onnx);
    pr.tflite_logits = quant::integer_forward(pr.q, x, quant::Arithmetic::Tflite);
    if (layers) {
      const Tensor xl = in.batch(first);
      quant::integer_forward(pr.q, xl, quant::Arithmetic::Onnx, &pr.onnx_layers);
      quant::integer_forward(pr.q, xl, quant::Arithmetic::Tflite, &pr.tflite_layers);
      quant::reference_forward(om.model, om.weights, xl, &pr.float_layers);
    }
  } else {
    pr.float_logits = quant::reference_forward(pr.q.model, quant::dequantized_weights(pr.q), x);
  }
  // The references' own accuracy on these inputs, next to the runtimes'.
  auto accuracy = [&](const Tensor& logits) {
    const auto pred = argmax_rows(logits);
    const auto y = in.labels.values<std::int64_t>();
    std::int64_t ok = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) ok += pred[i] == y[i];
    return static_cast<double>(ok) / static_cast<double>(std::max<std::size_t>(1, pred.size()));
  };
  // Where quantization itself hurts: each quantized output of the integer reference against fp32.
  json layer_sqnr = json::object();
  if (!pr.onnx_layers.empty()) {
    const std::map<std::string, const Tensor*> fp32 = fp32_by_quant_layer(pr);
    for (const auto& l : pr.onnx_layers)
      if (auto f = fp32.find(l.layer);
          f != fp32.end() && f->second->numel() == static_cast<std::int64_t>(l.q.size()))
        layer_sqnr[l.layer] =
            quant::sqnr_db(*f->second, dequantized(l).reshaped(f->second->shape()));
  }
  json acc = json::object();
  if (!pr.onnx_logits.empty()) acc["onnx_integer"] = accuracy(pr.onnx_logits);
  if (!pr.tflite_logits.empty()) acc["tflite_integer"] = accuracy(pr.tflite_logits);
  if (!pr.float_logits.empty()) acc["float"] = accuracy(pr.float_logits);
  pr.summary = {
      {"quant_params_sha256", sha256_hex(std::string_view(pr.q.to_json().dump()))},
      {"accuracy", acc},
      {"layer_sqnr_db", layer_sqnr},
      {"calibration", pr.q.calibration},
      {"folded", pr.q.folded},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  return pr;
}

void compare_precision_layers(json& row, const PrecisionReference& ref,
                              const std::vector<std::pair<std::string, Tensor>>& layers) {
  const bool tfl = tflite_format(row);
  const auto& il = tfl ? ref.tflite_layers : ref.onnx_layers;
  if (layers.empty() || il.empty()) return;
  std::map<std::string, const Tensor*> got;
  for (const auto& [name, t] : layers) got[name] = &t;
  const std::map<std::string, const Tensor*> fp32 = fp32_by_quant_layer(ref);
  json lj = json::array();
  json first = nullptr;
  for (const auto& l : il) {
    auto it = got.find(l.layer);
    if (it == got.end() || it->second->numel() != static_cast<std::int64_t>(l.q.size())) continue;
    const quant::StepAgreement a = quant::step_agreement(l, *it->second);
    json e = a.to_json();
    e["layer"] = l.layer;
    if (auto f = fp32.find(l.layer); f != fp32.end() && f->second->numel() == it->second->numel())
      e["sqnr_db"] = quant::sqnr_db(*f->second, it->second->reshaped(f->second->shape()));
    lj.push_back(e);
    if (a.off_by_more > 0 && first.is_null()) first = l.layer;
  }
  row["layer_steps"] = lj;
  const bool logits_off = row.value("logits_steps", json::object()).value("off_by_more", 0LL) > 0;
  if (first.is_null() && logits_off) {
    // Every captured layer agrees, the logits do not: the capture did not measure the graph that
    // ran. Say so rather than name no layer.
    row["capture_note"] =
        "the logits leave the reference by more than one step but no captured layer does: the "
        "runtime computed the captured graphs differently from the whole one";
    first = ref.q.model.layers.back().name;
  }
  row["first_layer_off_by_more_than_one_step"] = first;
  row["within_one_step"] = row.value("within_one_step", true) && first.is_null();
}

void compare_precision(json& row, const Tensor& logits, const Tensor& fp32_logits,
                       double fp32_accuracy, const PrecisionReference& ref,
                       const std::vector<std::pair<std::string, Tensor>>& layers,
                       const Tolerance& tol) {
  const std::int64_t n = logits.dim(0);
  const double nd = static_cast<double>(std::max<std::int64_t>(1, n));
  row["accuracy_delta"] = row.value("accuracy", 0.0) - fp32_accuracy;
  if (ref.q.model.layers.empty()) {
    row["reference_message"] = ref.summary.value("message", "no crossdl reference");
    return;
  }
  row["fp32_diff"] = diff_outputs(fp32_logits, logits, tol).to_json();
  row["disagreement"] = top1_disagreements(fp32_logits, logits);
  row["disagreement_rate"] = row["disagreement"].get<double>() / nd;
  if (ref.q.options.scheme == quant::Scheme::Int8Static) {
    const bool tfl = tflite_format(row);
    const Tensor& rl = tfl ? ref.tflite_logits : ref.onnx_logits;
    row["reference"] = std::string("crossdl integer reference (") +
                       std::string(quant::arithmetic_name(tfl ? quant::Arithmetic::Tflite
                                                              : quant::Arithmetic::Onnx)) +
                       " arithmetic)";
    row["reference_disagreement"] = top1_disagreements(rl, logits);
    row["reference_diff"] = diff_outputs(rl, logits, tol).to_json();
    // The logits are a quantized output too: count them in steps.
    const std::string last = ref.q.model.layers.back().name;
    quant::IntLayer lq;
    lq.layer = last;
    lq.shape = rl.shape();
    lq.params = &ref.q.output_params(last);
    const float s = lq.params->scale.at(0);
    const std::int32_t zp = lq.params->zero_point.at(0);
    for (float v : rl.values<float>())
      lq.q.push_back(static_cast<std::int8_t>(std::lrint(v / s) + zp));
    const quant::StepAgreement sa = quant::step_agreement(lq, logits);
    row["logits_steps"] = sa.to_json();
    bool within = sa.off_by_more == 0;
    row["within_one_step"] = within;
    if (!layers.empty()) compare_precision_layers(row, ref, layers);
    return;
  } else {
    row["reference"] = "crossdl fp32 forward pass on the " +
                       std::string(quant::scheme_name(ref.q.options.scheme)) + " weights";
    row["reference_disagreement"] = top1_disagreements(ref.float_logits, logits);
    const OutputDiff d = diff_outputs(ref.float_logits, logits, tol);
    row["reference_diff"] = d.to_json();
    row["within_tolerance"] = d.within();
  }
}

}  // namespace crossdl
