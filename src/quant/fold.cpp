// Folding BatchNorm (evaluation mode) into the convolution before it, as every int8 toolchain
// does before quantizing: w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma /
// sqrt(var + eps) + beta, computed in double and rounded once to float.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "crossdl/quant.h"
#include "crossdl/status.h"
#include "quant_internal.h"

namespace crossdl::quant {

void detail::fold_batchnorm_impl(const ir::Model& m, const WeightSet& w, ir::Model& out_model,
                                 WeightSet& out_weights, std::map<std::string, std::string>& folded,
                                 bool strict) {
  ir::validate(m);
  w.check_against(m);
  const std::map<std::string, int> readers = consumer_counts(m);
  folded.clear();
  std::map<std::string, Tensor> new_weights;  // conv name -> folded weight / bias
  std::map<std::string, Tensor> new_bias;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& bn = m.layers[i];
    if (bn.op != ir::Op::BatchNorm2d) continue;
    const std::string src = ir::resolved_inputs(m, i)[0];
    const ir::Layer* conv = src == "input" ? nullptr : m.find(src);
    std::string why;
    if (conv == nullptr || conv->op != ir::Op::Conv2d)
      why = "its input '" + src + "' is not a Conv2d";
    else if (readers.at(src) != 1)
      why = "its convolution '" + src + "' is also read by another layer";
    if (!why.empty()) {
      if (strict)
        throw InputError("fold_batchnorm: layer " + bn.name +
                         " (BatchNorm2d) cannot be folded: " + why);
      continue;
    }
    const Tensor& wt = w.at(conv->name + ".weight");
    const auto gamma = w.at(bn.name + ".weight").values<float>();
    const auto beta = w.at(bn.name + ".bias").values<float>();
    const auto mean = w.at(bn.name + ".running_mean").values<float>();
    const auto var = w.at(bn.name + ".running_var").values<float>();
    const std::int64_t oc = wt.dim(0), per = wt.numel() / oc;
    Tensor nw(DType::F32, wt.shape(), wt.layout());
    Tensor nb(DType::F32, {oc});
    const auto src_w = wt.values<float>();
    auto dw = nw.values<float>();
    auto db = nb.values<float>();
    for (std::int64_t c = 0; c < oc; ++c) {
      const double k = static_cast<double>(gamma[c]) /
                       std::sqrt(static_cast<double>(var[c]) + static_cast<double>(bn.eps));
      for (std::int64_t j = 0; j < per; ++j)
        dw[c * per + j] = static_cast<float>(static_cast<double>(src_w[c * per + j]) * k);
      const double b = conv->bias ? w.at(conv->name + ".bias").values<float>()[c] : 0.0;
      db[c] = static_cast<float>((b - mean[c]) * k + beta[c]);
    }
    new_weights[conv->name] = std::move(nw);
    new_bias[conv->name] = std::move(nb);
    folded[bn.name] = conv->name;
  }

  // Rebuild the layer list with every reader of a folded BatchNorm reading its convolution, in
  // the canonical form (an input that is just the previous layer is left empty).
  ir::Model out = m;
  out.layers.clear();
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const ir::Layer& l = m.layers[i];
    if (folded.count(l.name) != 0) continue;
    ir::Layer nl = l;
    nl.inputs.clear();
    for (std::string in : ir::resolved_inputs(m, i)) {
      auto f = folded.find(in);
      nl.inputs.push_back(f != folded.end() ? f->second : in);
    }
    const std::string prev = out.layers.empty() ? "input" : out.layers.back().name;
    if (nl.inputs.size() == 1 && nl.inputs[0] == prev) nl.inputs.clear();
    if (new_bias.count(l.name) != 0) nl.bias = true;
    out.layers.push_back(std::move(nl));
  }
  ir::validate(out);

  WeightSet ow;
  for (const ir::WeightSpec& s : ir::weight_specs(out)) {
    auto fw = new_weights.find(s.layer);
    if (fw != new_weights.end() && s.param == "weight")
      ow.set(s.name, fw->second);
    else if (fw != new_weights.end() && s.param == "bias")
      ow.set(s.name, new_bias.at(s.layer));
    else
      ow.set(s.name, w.at(s.name));
  }
  out_model = std::move(out);
  out_weights = std::move(ow);
}

void fold_batchnorm(const ir::Model& m, const WeightSet& w, ir::Model& out_model,
                    WeightSet& out_weights, std::map<std::string, std::string>& folded) {
  detail::fold_batchnorm_impl(m, w, out_model, out_weights, folded, true);
}

}  // namespace crossdl::quant
