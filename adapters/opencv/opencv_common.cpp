#include "opencv_common.h"

#include <opencv2/core.hpp>

#include <cstring>

namespace crossdl::opencv_detail {

namespace {

Layout activation_layout(std::size_t rank) {
  return rank == 4 ? Layout::NCHW : rank == 3 ? Layout::NTC : rank == 2 ? Layout::NC : Layout::Any;
}

std::string mat_shape(const cv::Mat& m) {
  std::string s = "[";
  for (int i = 0; i < m.dims; ++i) {
    if (i > 0) s += ',';
    s += std::to_string(m.size[i]);
  }
  return s + "]";
}

class OpencvRunner : public Runner {
 public:
  OpencvRunner(const ir::Model& m, cv::dnn::Net net, const RunOptions& opt,
               std::vector<LayerSource> layers)
      : m_(m),
        net_(std::move(net)),
        threads_(opt.threads),
        layers_(std::move(layers)),
        shapes_(ir::infer_shapes(m)) {
    net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  }

  Status infer(const Tensor& x, Tensor& logits) override {
    if (Status s = check_input(x); !s.is_ok()) return s;
    const LayerSource& last = layers_.back();
    std::vector<cv::Mat> outs;
    Status st = guarded("infer", [&] {
      set_input(x);
      // Only the logits are asked for, so OpenCV fuses what it would fuse in deployment.
      std::vector<cv::String> names = {last.cv};
      net_.forward(outs, names);
    });
    if (!st.is_ok()) return st;
    return convert(outs.at(0), last, m_.layers.size() - 1, x.dim(0), logits);
  }

  Status layer_outputs(const Tensor& x, std::vector<LayerOutput>& out) override {
    if (Status s = check_input(x); !s.is_ok()) return s;
    std::vector<cv::String> names;
    std::vector<std::size_t> index;  // IR layer index of each name
    for (const LayerSource& l : layers_) {
      names.push_back(l.cv);
      index.push_back(ir_index(l.ir));
    }
    std::vector<cv::Mat> outs;
    Status st = guarded("layer outputs", [&] {
      set_input(x);
      net_.forward(outs, names);
    });
    if (!st.is_ok()) return st;
    out.clear();
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      Tensor t;
      if (Status s = convert(outs.at(i), layers_[i], index[i], x.dim(0), t); !s.is_ok()) return s;
      out.push_back({layers_[i].ir, std::move(t)});
    }
    return Status::ok();
  }

 private:
  const ir::Model m_;
  cv::dnn::Net net_;
  int threads_;
  std::vector<LayerSource> layers_;
  std::vector<Shape> shapes_;

  std::size_t ir_index(const std::string& name) const {
    for (std::size_t i = 0; i < m_.layers.size(); ++i)
      if (m_.layers[i].name == name) return i;
    return m_.layers.size() - 1;
  }

  Status check_input(const Tensor& x) const {
    if (x.dtype() != DType::F32)
      return Status::bad_input("opencv: input is " + std::string(dtype_name(x.dtype())) +
                               "; OpenCV DNN takes f32 images");
    const Shape& want = m_.input_shape;
    if (x.rank() != want.size() + 1 || x.dim(0) < 1 ||
        !std::equal(want.begin(), want.end(), x.shape().begin() + 1))
      return Status::bad_input("opencv: input shape " + shape_str(x.shape()) + ", model " +
                               m_.name + " takes [B," + shape_str(want).substr(1));
    return Status::ok();
  }

  void set_input(const Tensor& x) {
    // OpenCV keeps one global pool: another runner may have changed it since load. Setting it
    // costs ~1.2 us even when unchanged (bench/README.md), reading it nothing.
    if (cv::getNumThreads() != threads_) cv::setNumThreads(threads_);
    std::vector<int> dims(x.shape().begin(), x.shape().end());
    cv::Mat blob(static_cast<int>(dims.size()), dims.data(), CV_32F);
    std::memcpy(blob.data, x.raw(), x.nbytes());
    net_.setInput(blob);
  }

  // An OpenCV blob back to the IR's layout for IR layer `k`.
  Status convert(const cv::Mat& mat, const LayerSource& l, std::size_t k, std::int64_t batch,
                 Tensor& out) const {
    Shape want = {batch};
    want.insert(want.end(), shapes_[k].begin(), shapes_[k].end());
    if (mat.type() != CV_32F || !mat.isContinuous())
      return Status::failed("opencv: layer " + l.cv + " gave a non-float or non-contiguous blob");
    if (static_cast<std::int64_t>(mat.total()) != shape_numel(want))
      return Status::failed("opencv: layer " + l.cv + " (IR " + l.ir + ") gave shape " +
                            mat_shape(mat) + ", the IR says " + shape_str(want));
    out = Tensor(DType::F32, want, activation_layout(want.size()));
    const auto* src = reinterpret_cast<const float*>(mat.data);
    auto dst = out.values<float>();
    if (!l.time_major) {
      std::memcpy(dst.data(), src, out.nbytes());
      return Status::ok();
    }
    const std::int64_t T = want[1], F = want[2];
    for (std::int64_t s = 0; s < T; ++s)
      for (std::int64_t n = 0; n < batch; ++n)
        std::memcpy(&dst[static_cast<std::size_t>((n * T + s) * F)], src + (s * batch + n) * F,
                    static_cast<std::size_t>(F) * sizeof(float));
    return Status::ok();
  }
};

}  // namespace

Capability onnx_capability(const ir::Model& m) {
  if (m.input_dtype != DType::F32)
    return Capability::no("opencv: model " + m.name + " takes " +
                          std::string(dtype_name(m.input_dtype)) +
                          " tokens; OpenCV DNN's inputs are float blobs (no int64 Gather input)");
  // Both refusals are OpenCV 4.6 importer limits measured on crossdl's (checker-valid) files:
  // loading them fails with the assertion quoted.
  for (const ir::Layer& l : m.layers) {
    if (l.op == ir::Op::LSTM)
      return Capability::no(
          "layer " + l.name +
          " (LSTM): OpenCV 4.6's ONNX importer rejects the opset-13 Squeeze that takes the last "
          "state (axes as an input): parseSqueeze asserts node_proto.input_size() == 1");
    if (l.op == ir::Op::GRU)
      return Capability::no(
          "layer " + l.name +
          " (GRU): OpenCV 4.6's ONNX importer requires all 6 GRU inputs: parseGRU "
          "asserts node_proto.input_size() == 6 (sequence_lens and initial_h are "
          "optional in ONNX and crossdl leaves them out)");
  }
  return Capability::yes();
}

std::vector<LayerSource> onnx_layer_map(const ir::Model& m) {
  // OpenCV 4.6 names a layer "onnx_node!<node name>"; crossdl's writer names each IR layer's main
  // node like the layer, except that a recurrent layer's IR output comes from its Squeeze helper.
  std::vector<LayerSource> out;
  for (const ir::Layer& l : m.layers) {
    const bool recurrent = l.op == ir::Op::LSTM || l.op == ir::Op::GRU;
    out.push_back({l.name, "onnx_node!" + l.name + (recurrent ? "/squeeze" : ""),
                   l.op == ir::Op::ImageToSequence});
  }
  return out;
}

std::unique_ptr<Runner> make_runner(const ir::Model& m, cv::dnn::Net net, const RunOptions& opt,
                                    std::vector<LayerSource> layers, Status& status) {
  std::unique_ptr<Runner> r;
  status = guarded("load", [&] {
    if (net.empty()) throw std::runtime_error("the net is empty after reading");
    std::vector<LayerSource> present;
    for (LayerSource& l : layers)
      if (net.getLayerId(l.cv) >= 0) present.push_back(std::move(l));
    if (present.empty() || present.back().ir != m.layers.back().name) {
      std::string names;
      for (const cv::String& n : net.getLayerNames()) names += (names.empty() ? "" : " ") + n;
      throw std::runtime_error("no layer of the net gives the logits (IR layer " +
                               m.layers.back().name + "; the net's layers: " + names + ")");
    }
    r = std::make_unique<OpencvRunner>(m, std::move(net), opt, std::move(present));
  });
  return r;
}

}  // namespace crossdl::opencv_detail
