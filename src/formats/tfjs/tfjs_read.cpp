// TF.js weights back into the IR weight set: the inverse of the layouts tfjs_write gives them (see
// crossdl/tfjs_io.h). The HWC -> CHW row order of a Dense after a flatten is taken from
// tfjs_output_to_ir, the writer's own mapping of that flattened output, so the two cannot drift.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crossdl/tfjs_io.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool little_endian() {
  const std::uint32_t one = 1;
  unsigned char b = 0;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

// The TF.js tensor `name` with exactly `shape`, else an InputError naming both.
const Tensor& expect(const TfjsWeights& w, const std::string& name, const Shape& shape,
                     const std::string& layer) {
  auto it = w.find(name);
  if (it == w.end())
    throw InputError("TF.js weights: '" + name + "' (for IR layer " + layer + ") is missing");
  if (it->second.dtype() != DType::F32)
    throw InputError("TF.js weights: '" + name + "' is " +
                     std::string(dtype_name(it->second.dtype())) + ", expected float32");
  if (it->second.shape() != shape)
    throw InputError("TF.js weights: '" + name + "' has shape " + shape_str(it->second.shape()) +
                     ", IR layer " + layer + " needs " + shape_str(shape));
  return it->second;
}

// [rows, cols] values -> [cols, rows]
void transpose_into(std::span<const float> src, std::int64_t rows, std::int64_t cols,
                    std::span<float> dst) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      dst[static_cast<std::size_t>(c * rows + r)] = src[static_cast<std::size_t>(r * cols + c)];
}

}  // namespace

TfjsWeights tfjs_read_weights(const std::string& model_json) {
  tfjs_verify_files(model_json);
  std::ifstream in(model_json, std::ios::binary);
  const json j = json::parse(in);
  const fs::path dir = fs::path(model_json).parent_path();
  TfjsWeights out;
  for (const json& group : j["weightsManifest"]) {
    std::vector<char> bytes;
    for (const json& p : group["paths"]) {
      const fs::path file = dir / p.get<std::string>();
      std::ifstream f(file, std::ios::binary);
      if (!f) throw InputError(file.string() + ": cannot open the TF.js weights file");
      bytes.insert(bytes.end(), std::istreambuf_iterator<char>(f),
                   std::istreambuf_iterator<char>());
    }
    std::size_t at = 0;
    for (const json& spec : group["weights"]) {
      Shape shape;
      for (const json& d : spec["shape"]) shape.push_back(d.get<std::int64_t>());
      Tensor t(DType::F32, shape);
      // tfjs_verify_files checked that the files hold exactly the listed tensors.
      std::memcpy(t.raw(), bytes.data() + at, t.nbytes());
      at += t.nbytes();
      if (!little_endian())
        for (float& v : t.values<float>()) {
          unsigned char b[4];
          std::memcpy(b, &v, 4);
          std::swap(b[0], b[3]);
          std::swap(b[1], b[2]);
          std::memcpy(&v, b, 4);
        }
      const std::string name = spec["name"].get<std::string>();
      if (!out.emplace(name, std::move(t)).second)
        throw InputError(model_json + ": weight '" + name + "' is listed twice");
    }
  }
  return out;
}

WeightSet tfjs_weights_to_ir(const ir::Model& m, const TfjsWeights& w) {
  ir::validate(m);
  const std::map<std::string, std::string> keras = tfjs_layer_names(m);
  WeightSet out;
  for (const ir::WeightSpec& s : ir::weight_specs(m)) {
    const ir::Layer& l = *m.find(s.layer);
    const std::string k = keras.at(l.name);
    Tensor t(DType::F32, s.shape, s.layout);
    auto dst = t.values<float>();
    auto copy = [&](const char* param) {
      const auto src = expect(w, k + "/" + param, s.shape, l.name).values<float>();
      std::copy(src.begin(), src.end(), dst.begin());
    };
    switch (l.op) {
      case ir::Op::Conv2d:
        if (s.param == "weight") {
          const std::int64_t O = s.shape[0], I = s.shape[1], kh = s.shape[2], kw = s.shape[3];
          const auto src = expect(w, k + "/kernel", {kh, kw, I, O}, l.name).values<float>();
          for (std::int64_t o = 0; o < O; ++o)
            for (std::int64_t ci = 0; ci < I; ++ci)
              for (std::int64_t y = 0; y < kh; ++y)
                for (std::int64_t x = 0; x < kw; ++x)
                  dst[static_cast<std::size_t>(((o * I + ci) * kh + y) * kw + x)] =
                      src[static_cast<std::size_t>(((y * kw + x) * I + ci) * O + o)];
        } else {
          copy("bias");
        }
        break;
      case ir::Op::Dense:
        if (s.param == "weight") {
          const std::int64_t out_n = s.shape[0], in_n = s.shape[1];
          const auto src = expect(w, k + "/kernel", {in_n, out_n}, l.name).values<float>();
          // Which Keras input feature each IR input feature is: the writer's own mapping of the
          // layer that feeds this one (the identity unless it is a flattened NHWC map).
          std::vector<float> index(static_cast<std::size_t>(in_n));
          std::iota(index.begin(), index.end(), 0.0f);
          const std::size_t at = static_cast<std::size_t>(m.find(l.name) - m.layers.data());
          const std::string feed = ir::resolved_inputs(m, at)[0];
          std::vector<std::int64_t> row(static_cast<std::size_t>(in_n));
          if (feed != "input" && in_n < (std::int64_t{1} << 24)) {
            const Tensor mapped = tfjs_output_to_ir(m, feed, index.data(), index.size(), 1);
            const auto v = mapped.values<float>();
            for (std::size_t j = 0; j < row.size(); ++j) row[j] = static_cast<std::int64_t>(v[j]);
          } else {
            std::iota(row.begin(), row.end(), std::int64_t{0});
          }
          for (std::int64_t o = 0; o < out_n; ++o)
            for (std::int64_t j = 0; j < in_n; ++j)
              dst[static_cast<std::size_t>(o * in_n + j)] =
                  src[static_cast<std::size_t>(row[static_cast<std::size_t>(j)] * out_n + o)];
        } else {
          copy("bias");
        }
        break;
      case ir::Op::BatchNorm2d: {
        const char* param = s.param == "weight"         ? "gamma"
                            : s.param == "bias"         ? "beta"
                            : s.param == "running_mean" ? "moving_mean"
                                                        : "moving_variance";
        copy(param);
        break;
      }
      case ir::Op::Embedding:
        copy("embeddings");
        break;
      case ir::Op::LSTM: {
        const std::int64_t gates = s.shape[0];
        if (s.param == "weight_ih" || s.param == "weight_hh") {
          const std::int64_t cols = s.shape[1];
          const char* param = s.param == "weight_ih" ? "kernel" : "recurrent_kernel";
          const auto src = expect(w, k + "/" + param, {cols, gates}, l.name).values<float>();
          transpose_into(src, cols, gates, dst);
        } else if (s.param == "bias_ih") {
          copy("bias");
        }  // bias_hh: TF.js' one bias is already in bias_ih; zero here computes the same.
        break;
      }
      case ir::Op::GRU:
        throw InputError("layer " + l.name +
                         " (GRU): TF.js cannot hold PyTorch's GRU (tfjs_expressible says why)");
      default:
        throw InputError("layer " + l.name + ": has weights the TF.js reader does not know");
    }
    out.set(s.name, std::move(t));
  }
  return out;
}

}  // namespace crossdl
